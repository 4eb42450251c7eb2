"""FdHasher and hash_stream: the BLAKE3 of a file and its first bytes (entries.head), on every read path.

A file is read into one buffer when it is small, mapped when it is large, read on
when it grew after its size was taken, and streamed from a tar member. Every path
must give the digest of all the bytes and the same first bytes (the file's magic).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from blake3 import blake3

from forensics.capture.hash import HEAD_SIZE, SMALL_FILE_LIMIT, FdHasher, hash_stream

CASES = {
    "empty": b"",
    "shorter than the head": b"#!/bin/sh\n",
    "elf": b"\x7fELF\x02\x01\x01" + bytes(9) + bytes(range(256)) * 10,
    "one buffer": os.urandom(SMALL_FILE_LIMIT),
    "mapped": b"MZ" + os.urandom(SMALL_FILE_LIMIT + 12345),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("hint", ["exact", "zero", "smaller"])
def test_digest_and_first_bytes_on_every_read_path(tmp_path: Path, name: str, hint: str) -> None:
    """*hint* is the size lstat gave: right, 0 (the file grew from empty) or too small (it grew)."""
    data = CASES[name]
    path = tmp_path / "f"
    path.write_bytes(data)
    size = {"exact": len(data), "zero": 0, "smaller": max(len(data) // 2, 1)}[hint]
    hasher = FdHasher()
    fd = os.open(path, os.O_RDONLY)
    try:
        digest, head = hasher.hash_fd(fd, size)
    finally:
        os.close(fd)
    assert digest == blake3(data).hexdigest()
    assert head == data[:HEAD_SIZE]
    assert hasher.bytes_read == len(data)


class _Trickle(io.RawIOBase):
    """A stream that gives at most 5 bytes a read, as a pipe or a decompressor may."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)

    def read(self, size: int = -1) -> bytes:
        chunk, self.data = bytes(self.data[:5]), self.data[5:]
        return chunk


@pytest.mark.parametrize("name", ["empty", "shorter than the head", "elf"])
def test_a_stream_gives_the_same_digest_and_first_bytes(name: str) -> None:
    data = CASES[name]
    for stream in (io.BytesIO(data), _Trickle(data)):
        digest, count, head = hash_stream(stream)  # type: ignore[arg-type]
        assert (digest, count, head) == (blake3(data).hexdigest(), len(data), data[:HEAD_SIZE])
