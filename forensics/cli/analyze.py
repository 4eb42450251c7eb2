"""Analysis commands (filled by the analyzer)."""
