"""A data root on a mounted filesystem, read without changing one byte or timestamp.

Directories are opened with ``O_NOATIME`` and listed through their descriptor
(``os.scandir(fd)``), entries are examined with ``lstat``-style calls relative
to that descriptor, and only regular files are ever opened, with
``O_NOFOLLOW | O_NONBLOCK | O_NOATIME``, after which ``fstat`` confirms the
descriptor is still the regular file that was listed.
"""

from __future__ import annotations

import errno as errno_mod
import os
import stat
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from threading import local

from forensics.capture.hash import SMALL_FILE_LIMIT, FdHasher
from forensics.capture.sources import (
    READ_LIMIT,
    Action,
    Classifier,
    Item,
    Layout,
    Noted,
    Progress,
    Visit,
)
from forensics.errors import NotADataRootError, SourceError
from forensics.model import CaptureError, Entry, Kind, MetadataFile

_O_NOATIME = getattr(os, "O_NOATIME", 0)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_KIND = {
    stat.S_IFREG: Kind.FILE,
    stat.S_IFDIR: Kind.DIR,
    stat.S_IFLNK: Kind.SYMLINK,
    stat.S_IFCHR: Kind.CHAR,
    stat.S_IFBLK: Kind.BLOCK,
    stat.S_IFIFO: Kind.FIFO,
    stat.S_IFSOCK: Kind.SOCKET,
}
# Files at least this large are hashed on the worker threads; smaller ones
# cost less to hash inline than to hand over.
_OFFLOAD_SIZE = 64 << 10
_BATCH_BYTES = 8 << 20


def open_noatime(name: str | bytes, flags: int, dir_fd: int | None) -> int:
    """``open`` with O_NOATIME where the kernel allows it (owner or CAP_FOWNER)."""
    if _O_NOATIME:
        try:
            return os.open(name, flags | _O_NOATIME, dir_fd=dir_fd)
        except PermissionError:
            pass
    return os.open(name, flags, dir_fd=dir_fd)


class DirSource:
    """A data root directory (a live host, or a mounted evidence image)."""

    kind = "directory"
    capabilities = frozenset(
        {"inode", "nlink", "atime_ns", "ctime_ns", "mtime_ns", "size", "xattrs", "rdev", "blake3"}
    )

    def __init__(self, location: str, threads: int | None = None) -> None:
        self.location = location
        self.root = os.fsencode(os.path.abspath(location))
        self.threads = threads if threads is not None else min(2, os.cpu_count() or 1)
        self.bytes_read = 0
        self.layout: Layout | None = None
        self.data_root = self.location

    def _detect(self, layouts: Sequence[Layout]) -> Layout:
        if not os.path.isdir(self.root):
            raise SourceError(f"source {self.location} is not a readable directory.")

        def exists(rel: bytes) -> bool:
            return os.path.lexists(self.root + b"/" + rel)

        reasons = []
        for layout in layouts:
            reason = layout.detect(exists)
            if reason is None:
                return layout
            reasons.append(f"{layout.name}: {reason}")
        try:
            empty = not os.listdir(self.root)
        except OSError as exc:
            raise SourceError(f"cannot list source {self.location}: {exc.strerror}.") from None
        if empty:
            raise NotADataRootError(f"{self.location} is an empty directory, not a container data root.")
        raise NotADataRootError(f"{self.location} is not a container data root ({'; '.join(reasons)}).")

    def items(self, layouts: Sequence[Layout], progress: Progress | None = None) -> Iterator[Item]:
        self.layout = self._detect(layouts)
        walker = _Walker(self.root, self.layout.classify, progress, self.threads)
        try:
            yield from walker.run()
        finally:
            self.bytes_read = walker.bytes_read


class _Walker:
    def __init__(self, root: bytes, classify: Classifier, progress: Progress | None, threads: int) -> None:
        self.root = root
        self.classify = classify
        self.progress = progress
        self.entries = 0
        self.hashed_bytes = 0
        self.hasher = FdHasher()
        self.threads = threads
        self.pool: ThreadPoolExecutor | None = None
        self._tls = local()
        # (dev, ino) -> link group id, and the hash (or a pending future) of that inode
        self.link_groups: dict[tuple[int, int], int] = {}
        self.link_hashes: dict[
            tuple[int, int], str | Future[tuple[str | None, int, CaptureError | None]]
        ] = {}
        self.next_group = 1

    @property
    def bytes_read(self) -> int:
        return self.hashed_bytes

    def run(self) -> Iterator[Item]:
        try:
            fd = open_noatime(self.root, _DIR_FLAGS, None)
        except OSError as exc:
            yield CaptureError(b"", "open", exc.strerror or str(exc), exc.errno)
            return
        if self.threads > 1:
            self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="o2f-hash")
        pending: list[tuple[Entry, Future[tuple[str | None, int, CaptureError | None]]]] = []
        pending_bytes = 0
        try:
            st = os.fstat(fd)
            for item in self._walk_dir(fd, b"", st):
                if isinstance(item, tuple):
                    pending.append(item)
                    pending_bytes += item[0].size or 0
                    if pending_bytes >= _BATCH_BYTES or len(pending) >= 256:
                        yield from self._drain(pending)
                        pending_bytes = 0
                    continue
                yield item
            yield from self._drain(pending)
        finally:
            os.close(fd)
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)

    def _drain(
        self, pending: list[tuple[Entry, Future[tuple[str | None, int, CaptureError | None]]]]
    ) -> Iterator[Item]:
        from dataclasses import replace

        for entry, future in pending:
            digest, count, error = future.result()
            self.hashed_bytes += count
            if error is not None:
                yield error
            yield replace(entry, blake3=digest)
        pending.clear()
        if self.progress is not None:
            self.progress(self.entries, self.hashed_bytes)

    # -- the walk ---------------------------------------------------------------

    def _walk_dir(self, dir_fd: int, rel: bytes, dir_stat: os.stat_result) -> Iterator[object]:
        try:
            names = sorted(os.fsencode(e.name) for e in os.scandir(dir_fd))
        except OSError as exc:
            yield CaptureError(rel, "list", exc.strerror or str(exc), exc.errno)
            return
        for name in names:
            child = rel + b"/" + name if rel else name
            yield from self._visit(dir_fd, name, child)

    def _visit(self, dir_fd: int, name: bytes, rel: bytes) -> Iterator[object]:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError as exc:
            yield CaptureError(rel, "lstat", _vanished(exc), exc.errno)
            return
        kind = _KIND.get(stat.S_IFMT(st.st_mode))
        if kind is None:
            yield CaptureError(rel, "lstat", f"unknown file type {stat.S_IFMT(st.st_mode):o}")
            return
        visit = self.classify(rel, kind)
        action = visit.action
        if action is Action.SKIP:
            return
        if action is Action.NOTE:
            yield Noted(rel, kind)
            return
        if action is Action.READ:
            yield self._read_metadata(dir_fd, name, rel, st, kind)
            return
        if kind is Kind.DIR:
            yield from self._enter_dir(dir_fd, name, rel, st, visit)
            return
        if action is Action.ENTRY:
            yield from self._entry(dir_fd, name, rel, st, kind, visit)

    def _enter_dir(
        self, dir_fd: int, name: bytes, rel: bytes, st: os.stat_result, visit: Visit
    ) -> Iterator[object]:
        try:
            fd = open_noatime(name, _DIR_FLAGS, dir_fd)
        except OSError as exc:
            if visit.action is Action.ENTRY:
                xattrs, error = self._xattrs_by_path(rel)
                yield self._make_entry(rel, st, Kind.DIR, visit, xattrs=xattrs)
            yield CaptureError(rel, "open", _vanished(exc), exc.errno, visit.layer_id or None)
            return
        try:
            if visit.action is Action.ENTRY:
                xattrs, error = _xattrs_of_fd(fd, rel)
                if error:
                    yield error
                yield self._make_entry(rel, st, Kind.DIR, visit, xattrs=xattrs)
            yield from self._walk_dir(fd, rel, st)
        finally:
            os.close(fd)

    def _entry(
        self, dir_fd: int, name: bytes, rel: bytes, st: os.stat_result, kind: Kind, visit: Visit
    ) -> Iterator[object]:
        target = None
        if kind is Kind.SYMLINK:
            try:
                target = os.readlink(name, dir_fd=dir_fd)
            except OSError as exc:
                yield CaptureError(rel, "readlink", _vanished(exc), exc.errno, visit.layer_id)
        if kind is not Kind.FILE:
            xattrs, error = self._xattrs_by_path(rel)
            if error:
                yield error
            yield self._make_entry(rel, st, kind, visit, xattrs=xattrs, target=target)
            return
        key = (st.st_dev, st.st_ino)
        group = None
        if st.st_nlink > 1:
            group = self.link_groups.get(key)
            if group is None:
                group = self.link_groups[key] = self.next_group
                self.next_group += 1
            known = self.link_hashes.get(key)
            if known is not None:
                xattrs, error = self._xattrs_by_path(rel)
                if error:
                    yield error
                entry = self._make_entry(rel, st, kind, visit, xattrs=xattrs, group=group)
                if isinstance(known, str):
                    yield _with_hash(entry, known)
                else:
                    yield (entry, _SharedResult(known))
                return
        try:
            fd = open_noatime(name, _FILE_FLAGS, dir_fd)
        except OSError as exc:
            xattrs, _ = self._xattrs_by_path(rel)
            yield CaptureError(rel, "open", _vanished(exc), exc.errno, visit.layer_id)
            yield self._make_entry(rel, st, kind, visit, xattrs=xattrs, group=group)
            return
        closed = False
        try:
            fst = os.fstat(fd)
            if not stat.S_ISREG(fst.st_mode) or fst.st_ino != st.st_ino or fst.st_dev != st.st_dev:
                yield CaptureError(
                    rel, "open", "replaced by another file during collection", None, visit.layer_id
                )
                yield self._make_entry(rel, st, kind, visit, group=group)
                return
            xattrs, error = _xattrs_of_fd(fd, rel)
            if error:
                yield error
            entry = self._make_entry(rel, st, kind, visit, xattrs=xattrs, group=group)
            if self.pool is not None and st.st_size >= _OFFLOAD_SIZE:
                future = self.pool.submit(self._hash_on_thread, fd, st.st_size, rel, visit.layer_id)
                closed = True  # the worker closes it
                if group is not None:
                    self.link_hashes[key] = future
                yield (entry, future)
                return
            try:
                digest = self.hasher.hash_fd(fd, st.st_size)
            except OSError as exc:
                yield CaptureError(rel, "read", exc.strerror or str(exc), exc.errno, visit.layer_id)
                yield entry
                return
            if group is not None:
                self.link_hashes[key] = digest
            self.hashed_bytes += self.hasher.bytes_read
            self.hasher.bytes_read = 0
            yield _with_hash(entry, digest)
        finally:
            if not closed:
                os.close(fd)

    def _hash_on_thread(
        self, fd: int, size: int, rel: bytes, layer_id: str
    ) -> tuple[str | None, int, CaptureError | None]:
        hasher = getattr(self._tls, "hasher", None)
        if hasher is None:
            hasher = self._tls.hasher = FdHasher()
        try:
            digest = hasher.hash_fd(fd, size)
            count, hasher.bytes_read = hasher.bytes_read, 0
            return digest, count, None
        except OSError as exc:
            return None, 0, CaptureError(rel, "read", exc.strerror or str(exc), exc.errno, layer_id)
        finally:
            os.close(fd)

    def _make_entry(
        self,
        rel: bytes,
        st: os.stat_result,
        kind: Kind,
        visit: Visit,
        *,
        xattrs: tuple[tuple[str, bytes], ...] = (),
        target: bytes | None = None,
        group: int | None = None,
    ) -> Entry:
        self.entries += 1
        if self.progress is not None and not self.entries & 1023:
            self.progress(self.entries, self.hashed_bytes)
        device = kind is Kind.CHAR or kind is Kind.BLOCK
        return Entry(
            layer_id=visit.layer_id,
            path=visit.inner_path,
            kind=kind,
            mode=st.st_mode & 0o7777,
            uid=st.st_uid,
            gid=st.st_gid,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            atime_ns=st.st_atime_ns,
            ctime_ns=st.st_ctime_ns,
            inode=st.st_ino,
            nlink=st.st_nlink,
            rdev_major=os.major(st.st_rdev) if device else None,
            rdev_minor=os.minor(st.st_rdev) if device else None,
            target=target,
            xattrs=xattrs,
            link_group=group,
        )

    def _xattrs_by_path(self, rel: bytes) -> tuple[tuple[tuple[str, bytes], ...], CaptureError | None]:
        """llistxattr/lgetxattr by full path: for entries that must not be opened."""
        full = self.root + b"/" + rel
        try:
            names = os.listxattr(full, follow_symlinks=False)
            if not names:
                return (), None
            return tuple(sorted((n, os.getxattr(full, n, follow_symlinks=False)) for n in names)), None
        except OSError as exc:
            if exc.errno in (errno_mod.ENOTSUP, errno_mod.EOPNOTSUPP):
                return (), None
            return (), CaptureError(rel, "xattr", exc.strerror or str(exc), exc.errno)

    def _read_metadata(self, dir_fd: int, name: bytes, rel: bytes, st: os.stat_result, kind: Kind) -> Item:
        if kind is Kind.SYMLINK:
            try:
                return Noted(rel, kind, os.readlink(name, dir_fd=dir_fd))
            except OSError as exc:
                return CaptureError(rel, "readlink", _vanished(exc), exc.errno)
        if kind is not Kind.FILE:
            return Noted(rel, kind)
        if st.st_size > READ_LIMIT:
            return CaptureError(rel, "read", f"metadata file larger than {READ_LIMIT} bytes, not kept")
        try:
            fd = open_noatime(name, _FILE_FLAGS, dir_fd)
        except OSError as exc:
            return CaptureError(rel, "open", _vanished(exc), exc.errno)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return CaptureError(rel, "open", "replaced by a non-file during collection")
            chunks = []
            while chunk := os.read(fd, max(st.st_size + 1, SMALL_FILE_LIMIT)):
                chunks.append(chunk)
                if sum(map(len, chunks)) > READ_LIMIT:
                    return CaptureError(
                        rel, "read", f"metadata file larger than {READ_LIMIT} bytes, not kept"
                    )
            return MetadataFile(rel, b"".join(chunks))
        except OSError as exc:
            return CaptureError(rel, "read", exc.strerror or str(exc), exc.errno)
        finally:
            os.close(fd)


class _SharedResult:
    """Lets a second name of a hardlinked file wait on the first name's hash."""

    def __init__(self, future: Future[tuple[str | None, int, CaptureError | None]]) -> None:
        self._future = future

    def result(self) -> tuple[str | None, int, CaptureError | None]:
        digest, _count, _error = self._future.result()
        return digest, 0, None


def _with_hash(entry: Entry, digest: str | None) -> Entry:
    from dataclasses import replace

    return replace(entry, blake3=digest)


def _xattrs_of_fd(fd: int, rel: bytes) -> tuple[tuple[tuple[str, bytes], ...], CaptureError | None]:
    try:
        names = os.listxattr(fd)
        if not names:
            return (), None
        return tuple(sorted((n, os.getxattr(fd, n)) for n in names)), None
    except OSError as exc:
        if exc.errno in (errno_mod.ENOTSUP, errno_mod.EOPNOTSUPP):
            return (), None
        return (), CaptureError(rel, "xattr", exc.strerror or str(exc), exc.errno)


def _vanished(exc: OSError) -> str:
    if exc.errno == errno_mod.ENOENT:
        return "vanished during collection"
    return exc.strerror or str(exc)
