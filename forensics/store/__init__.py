"""The snapshot file: schema as data, a batched writer, a read-only reader."""
