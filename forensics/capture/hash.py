"""Streaming BLAKE3 of file content (the only place that imports blake3), and the reuse key."""

from __future__ import annotations

import mmap
import os
from typing import BinaryIO

from blake3 import blake3

# Files up to this size are read into one reused buffer with a single read();
# larger ones are mapped, which lets BLAKE3 hash them without copying.
SMALL_FILE_LIMIT = 1 << 20
EMPTY_BLAKE3 = blake3(b"").hexdigest()


# Files up to this size are read into a bytes object of their own; above it, into the reused buffer
# (a fresh megabyte per file is what makes the naive reference slow).
TINY_FILE_LIMIT = 64 << 10

# How many of a file's first bytes are kept (entries.head): enough for the magic of ELF, #!, PE,
# Mach-O and the like, and for an ELF header's class, byte order, version and OS ABI.
HEAD_SIZE = 16

# Files at least this large are hashed on several threads.
MULTITHREAD_LIMIT = 64 << 20


class FdHasher:
    """Hashes regular files from open descriptors, reusing one buffer per instance.

    One instance per thread: the buffer is not shared. Large files are hashed
    on a thread pool of the hasher's own, never on blake3's global pool
    (``blake3.AUTO``), which a forked collecting process could inherit without
    its threads.
    """

    __slots__ = ("_buffer", "_threads", "_view", "bytes_read")

    def __init__(self, max_threads: int | None = None) -> None:
        self._buffer = bytearray(SMALL_FILE_LIMIT + 1)
        self._view = memoryview(self._buffer)
        self._threads = max_threads if max_threads is not None else (os.cpu_count() or 1)
        self.bytes_read = 0

    def hash_fd(self, fd: int, size_hint: int) -> tuple[str, bytes]:
        """BLAKE3-256 hex of everything readable from *fd* (hint: the lstat size), and its first bytes.

        The first bytes are the file's magic (``HEAD_SIZE`` of them, fewer for a shorter file):
        what tells an ELF binary or a ``#!`` script, kept since they are read anyway.
        """
        view = self._view
        if size_hint == 0:
            # A file may grow between lstat and read; one read tells.
            count = os.readv(fd, [view[:1]])
            if count == 0:
                return EMPTY_BLAKE3, b""
            head = bytes(view[:count])
            return self._hash_stream(fd, blake3(view[:count]), count, head)
        if size_hint <= TINY_FILE_LIMIT:
            # Most files of an image: a fresh bytes object is cheaper than slicing the buffer.
            data = os.read(fd, size_hint + 1)
            count = len(data)
            if count <= size_hint:
                self.bytes_read += count
                return blake3(data).hexdigest(), data[:HEAD_SIZE]
            return self._hash_stream(fd, blake3(data), count, data[:HEAD_SIZE])
        if size_hint <= SMALL_FILE_LIMIT:
            count = os.readv(fd, [view])
            hasher = blake3(view[:count])
            head = bytes(view[: count if count < HEAD_SIZE else HEAD_SIZE])
            if count <= size_hint:
                self.bytes_read += count
                return hasher.hexdigest(), head
            return self._hash_stream(fd, hasher, count, head)
        try:
            with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mapped:
                if size_hint >= MULTITHREAD_LIMIT and self._threads > 1:
                    hasher = blake3(max_threads=self._threads)
                else:
                    hasher = blake3()
                hasher.update(mapped)
                head = mapped[:HEAD_SIZE]
                self.bytes_read += len(mapped)
                # Anything appended after the map was made is read on.
                os.lseek(fd, len(mapped), os.SEEK_SET)
                return self._hash_stream(fd, hasher, 0, head)
        except (ValueError, OSError):
            os.lseek(fd, 0, os.SEEK_SET)
            return self._hash_stream(fd, blake3(), 0, None)

    def _hash_stream(self, fd: int, hasher: blake3, already: int, head: bytes | None) -> tuple[str, bytes]:
        self.bytes_read += already
        view = self._view
        while True:
            count = os.readv(fd, [view])
            if not count:
                return hasher.hexdigest(), head if head is not None else b""
            if head is None:
                head = bytes(view[: count if count < HEAD_SIZE else HEAD_SIZE])
            elif len(head) < HEAD_SIZE:
                head = (head + bytes(view[:count]))[:HEAD_SIZE]
            hasher.update(view[:count])
            self.bytes_read += count


def reuse_key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What must be unchanged for ``collect --reuse`` to take a file's hash from a baseline.

    ``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)``, besides the layer and
    the path. The ctime is the guard: every write and every metadata change sets
    it to the current time, and unlike the mtime no system call sets it back,
    so a same-size edit with its mtime restored (``touch -d``) is still re-read.
    Inode numbers are unique only within one filesystem, hence the device.
    """
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def hash_stream(stream: BinaryIO) -> tuple[str, int, bytes]:
    """BLAKE3 of a file object read to its end (tar members); returns (hex, bytes, first bytes)."""
    hasher = blake3()
    total = 0
    head = b""
    while chunk := stream.read(SMALL_FILE_LIMIT):
        hasher.update(chunk)
        if len(head) < HEAD_SIZE:
            head = (head + chunk[:HEAD_SIZE])[:HEAD_SIZE]
        total += len(chunk)
    return hasher.hexdigest(), total, head


def link_group_of(dev: int, inode: int) -> int:
    """The link group of an inode with several names: the same for each of its names, from any process.

    56 bits of BLAKE3 over the device and inode numbers, so that the processes
    walking different layers agree without talking to each other (two inodes
    collide with odds of about n²/2⁵⁷: 1 in 10⁷ for 10⁵ hardlinked inodes).
    """
    return int.from_bytes(blake3(b"%d:%d" % (dev, inode)).digest(7), "big")


def new_hasher() -> blake3:
    """A fresh BLAKE3 hasher, for the digests the store computes (it does not import blake3)."""
    return blake3()


def hash_file_path(path: str | bytes) -> str:
    """BLAKE3 of a file we wrote ourselves (the snapshot), never of evidence.

    Read in chunks into one buffer: mapping the whole file (``update_mmap``)
    would add the snapshot's size to the collector's peak resident memory.
    """
    hasher = blake3()
    buffer = bytearray(SMALL_FILE_LIMIT)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            hasher.update(view[:count])
    return hasher.hexdigest()
