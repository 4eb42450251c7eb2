"""A data root on a mounted filesystem, read without changing one byte or timestamp.

Directories are opened with ``O_NOATIME | O_NOFOLLOW | O_DIRECTORY`` and
listed through their descriptor; only regular files are ever opened, with
``O_NOFOLLOW | O_NONBLOCK | O_NOATIME``, and ``fstat`` on the open descriptor
is what gets recorded (a name that turns out not to be a regular file is
closed unread). Symlinks are read with ``readlink`` and never followed; FIFOs,
sockets and devices are only ``lstat``-ed. Every path is one name relative to
an open directory, so no symlink on the way is followed either.

How the work is split (``benchmarks/collect.py`` measures it):

* The calling process walks what lies outside the layers (engine metadata,
  ``l/`` links, each layer's ``link``/``lower`` files) and asks the layout what
  each path is. A directory the layout calls an entry (a layer's ``diff/``)
  is not descended there: it becomes a *unit* of work.
* Forked worker processes (``threads``, two on a two-core machine) take units
  from a shared queue, largest first, and do every per-entry step of a unit
  themselves: list, ``fstat``/``lstat``, xattrs, link targets, hashing, and
  making each entry's row from its values with the encoder the caller passes
  (no :class:`Entry` is built). They send rows back in batches through a pipe;
  the calling process only writes them. Processes, not threads: per-entry
  Python work holds the GIL.
* One layer is walked by one process, depth first, names sorted, so
  a layer's rows arrive in walk order (its row ids follow it) whatever the
  timing. With ``threads=1``, or when no process can be forked, the calling
  process walks the units itself.

With a reuse lookup (``collect --reuse``), a regular file the baseline recorded is
first ``lstat``-ed; when its reuse key (:func:`~forensics.capture.hash.reuse_key`)
is unchanged it is not opened at all: its hash, first bytes and xattrs are the baseline's,
recorded with ``hash_reused``. The ctime in the key guards both (a write, a
``setxattr`` or a ``removexattr`` sets it; no system call sets it back). Any
other file is opened and read as in a full collection.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import fcntl
import gc
import marshal
import operator
import os
import pickle
import select
import signal
import stat
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence

from forensics.capture.hash import SMALL_FILE_LIMIT, FdHasher, link_group_of, reuse_key
from forensics.capture.sources import (
    READ_LIMIT,
    Action,
    Classifier,
    EncodedEntries,
    EntryEncoding,
    Item,
    Layout,
    Noted,
    Progress,
    ReuseKey,
    ReuseLookup,
    Visit,
)
from forensics.errors import NotADataRootError, O2fError, SourceError
from forensics.model import KIND_BY_IFMT, CaptureError, Entry, Kind, MetadataFile, Xattrs

_O_NOATIME = getattr(os, "O_NOATIME", 0)
_PROC_FD = os.path.isdir(b"/proc/self/fd")
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_PATH = getattr(os, "O_PATH", 0)
_PATH_FLAGS = _O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
# Through /proc/self/fd/N, a link by design: no O_NOFOLLOW there.
_REOPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
_S_IFMT = 0o170000
_NAME = operator.attrgetter("name")
_S_IFREG = stat.S_IFREG
_S_IFDIR = stat.S_IFDIR
_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()

# A worker sends its rows in batches of this many entries (a layer's last batch may be smaller).
_BATCH_ENTRIES = 2000

_RESULT_PIPE_SIZE = 1 << 20  # the default maximum of /proc/sys/fs/pipe-max-size
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


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
        {"inode", "dev", "nlink", "atime_ns", "ctime_ns", "mtime_ns", "size", "xattrs", "rdev", "blake3"}
    )

    def __init__(self, location: str, threads: int | None = None) -> None:
        self.location = location
        self.root = os.fsencode(os.path.abspath(location))
        self.threads = threads if threads is not None else min(2, os.cpu_count() or 1)
        self.bytes_read = 0
        self.layout: Layout | None = None
        self.data_root = self.location
        self.reuse: ReuseLookup | None = None  # collect --reuse: the baseline's files, layer by layer

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

    def items(
        self, layouts: Sequence[Layout], progress: Progress | None = None, encode: EntryEncoding | None = None
    ) -> Iterator[Item]:
        self.layout = self._detect(layouts)
        collection = _Collection(self.root, self.layout.classify, progress, self.threads, self.reuse, encode)
        try:
            yield from collection.run()
        finally:
            self.bytes_read = collection.bytes_read


# -- units: one layer's diff/ each ----------------------------------------------------------


class _Unit:
    """A directory the layout calls an entry: walked, with everything below it, by one process."""

    __slots__ = ("inner", "layer_id", "rel", "st")

    def __init__(self, rel: bytes, layer_id: str, inner: bytes, st: os.stat_result) -> None:
        self.rel = rel  # relative to the data root
        self.layer_id = layer_id
        self.inner = inner  # its path inside the layer (b"/" for a diff/)
        self.st = st  # its lstat from the walk outside the layers

    @property
    def weight(self) -> int:
        """A cheap guess at its size: st_nlink, 2 + its subdirectories."""
        return self.st.st_nlink


# A worker's message: (unit index, rows or Entry items, errors, the layer whose root entry is among
# the rows or None, bytes read, unit finished).
_Message = tuple[int, list, list, "str | None", int, bool]  # type: ignore[type-arg]


class _Collection:
    def __init__(
        self,
        root: bytes,
        classify: Classifier,
        progress: Progress | None,
        threads: int,
        reuse: ReuseLookup | None,
        encode: EntryEncoding | None,
    ) -> None:
        self.root = root
        self.classify = classify
        self.progress = progress
        self.threads = threads
        self.reuse = reuse
        self.encode = encode
        self.bytes_read = 0
        self.entries = 0

    def run(self) -> Iterator[Item]:
        try:
            root_fd = open_noatime(self.root, _DIR_FLAGS, None)
        except OSError as exc:
            yield CaptureError(b"", "open", exc.strerror or str(exc), exc.errno)
            return
        try:
            units: list[_Unit] = []
            yield from self._outside_layers(root_fd, units)
            # Largest first, so that no process is left with a big layer at the end.
            units.sort(key=lambda unit: -unit.weight)
            workers = _Workers.start(self, root_fd, units) if self.threads > 1 and len(units) > 1 else None
            if workers is None:
                walker = _LayerWalker(root_fd, self.reuse, self.encode)
                for index, unit in enumerate(units):
                    for message in walker.walk(index, unit):
                        yield from self._take(message)
            else:
                yield from workers.messages()
            if self.progress is not None:
                self.progress(self.entries, self.bytes_read)
        finally:
            os.close(root_fd)

    def _take(self, message: _Message) -> Iterator[Item]:
        """The items of one worker message, and the progress it makes."""
        _, records, errors, root_seen, hashed, _ = message
        if type(records) is bytes:  # rows from a worker process, marshalled (reader.encode_rows)
            rows = marshal.loads(records)
            yield EncodedEntries(rows, root_seen, records[5:])
            records = rows
        elif records:
            if self.encode is not None:
                yield EncodedEntries(records, root_seen)
            else:
                yield from records
        yield from errors
        before = self.entries
        self.entries += len(records)
        self.bytes_read += hashed
        if self.progress is not None and (before ^ self.entries) >> 12:
            self.progress(self.entries, self.bytes_read)

    def _outside_layers(self, root_fd: int, units: list[_Unit]) -> Iterator[Item]:
        """Depth first, names in byte order; each directory the layout records becomes a unit."""
        classify = self.classify
        kinds = KIND_BY_IFMT
        stack: list[tuple[int, bytes, Iterator[bytes]]] = []
        try:
            stack.append((root_fd, b"", iter(_list(root_fd))))
        except OSError as exc:
            yield CaptureError(b"", "list", exc.strerror or str(exc), exc.errno)
            return
        try:
            while stack:
                dir_fd, prefix, names = stack[-1]
                for name in names:
                    rel = prefix + name
                    try:
                        st = os.lstat(name, dir_fd=dir_fd)
                    except OSError as exc:
                        yield CaptureError(rel, "lstat", _vanished(exc), exc.errno)
                        continue
                    kind = kinds.get(st.st_mode & _S_IFMT)
                    if kind is None:
                        yield CaptureError(rel, "lstat", f"unknown file type {stat.S_IFMT(st.st_mode):o}")
                        continue
                    visit = classify(rel, kind)
                    action = visit.action
                    if action is Action.SKIP:
                        continue
                    if action is Action.NOTE:
                        yield Noted(rel, kind)
                    elif action is Action.READ:
                        yield _read_metadata(dir_fd, name, rel, st, kind, visit)
                    elif action is Action.ENTRY and kind is Kind.DIR:
                        units.append(_Unit(rel, visit.layer_id, visit.inner_path, st))
                    elif action is Action.ENTRY:  # a single entry outside any recorded directory
                        yield from _LayerWalker(root_fd, self.reuse, self.encode).single(
                            dir_fd, name, rel, st, kind, visit
                        )
                    elif kind is Kind.DIR:
                        try:
                            fd = open_noatime(name, _DIR_FLAGS, dir_fd)
                        except OSError as exc:
                            yield CaptureError(rel, "open", _vanished(exc), exc.errno)
                            continue
                        try:
                            names_below = iter(_list(fd))
                        except OSError as exc:
                            os.close(fd)
                            yield CaptureError(rel, "list", exc.strerror or str(exc), exc.errno)
                            continue
                        stack.append((fd, rel + b"/", names_below))
                        break
                else:
                    stack.pop()
                    if dir_fd != root_fd:
                        os.close(dir_fd)
        finally:
            for dir_fd, _, _ in stack:
                if dir_fd != root_fd:
                    os.close(dir_fd)


# -- the walk of one layer ------------------------------------------------------------------


_FAILED = object()  # a hardlinked inode whose first name could not be read


class _LayerWalker:
    """Every entry below one unit, with its hash; what a worker process runs."""

    def __init__(self, root_fd: int, reuse: ReuseLookup | None, encode: EntryEncoding | None) -> None:
        self.root_fd = root_fd
        self.reuse = reuse
        self.encode = encode
        # What each entry becomes: its row (Entry's values in order, no Entry built), or an Entry.
        self._make: Callable[..., object] = encode.fields if encode is not None else Entry
        self.hasher = FdHasher()
        # (dev, ino) -> (digest, reused, head) of an inode with several names, read once per process.
        self.link_hashes: dict[tuple[int, int], object] = {}

    def walk(self, index: int, unit: _Unit) -> Iterator[_Message]:
        """The unit's rows in batches, in walk order; the last one says the unit is finished."""
        layer_id = unit.layer_id
        known: Mapping[bytes, tuple[ReuseKey, str, Xattrs, bytes | None]] = {}
        if self.reuse is not None:
            known = self.reuse(layer_id)
        records: list = []  # type: ignore[type-arg]
        errors: list[CaptureError] = []
        hasher = self.hasher
        root_seen: str | None = None
        before = hasher.bytes_read

        add = records.append

        def error(inner: bytes, operation: str, message: str, errno: int | None) -> None:
            errors.append(CaptureError(_rel(unit, inner), operation, message, errno, layer_id))

        try:
            fd = _open_path(self.root_fd, unit.rel)
        except OSError as exc:
            error(unit.inner, "open", _vanished(exc), exc.errno)
            if exc.errno != errno_mod.ENOENT:  # unreadable, not gone: recorded from the walk's lstat
                add(_entry(self._make, layer_id, unit.inner, unit.st, Kind.DIR, ()))
            yield (index, records, errors, layer_id if records and unit.inner == b"/" else None, 0, True)
            return
        st = os.fstat(fd)
        xattrs = self._xattrs_of_fd(fd, unit, unit.inner, errors)
        add(_entry(self._make, layer_id, unit.inner, st, Kind.DIR, xattrs))
        root_seen = layer_id if unit.inner == b"/" else None
        # Whether names can be swapped under the walk: asked again only below a mount point.
        root_dev, root_fixed = st.st_dev, on_read_only_mount(fd)
        stack: list[tuple[int, bytes, Iterator[os.DirEntry[str]], bool]] = []
        try:
            self._push(stack, fd, unit, unit.inner, errors, root_fixed)
            while stack:
                dir_fd, prefix, names, fixed = stack[-1]
                for dirent in names:
                    name = dirent.name.encode(_FS_ENCODING, _FS_ERRORS)
                    inner = prefix + name
                    if dirent.is_file(follow_symlinks=False):
                        entry = self._file(dir_fd, name, inner, known, unit, errors, fixed)
                        if entry is not None:
                            add(entry)
                    elif dirent.is_dir(follow_symlinks=False):
                        entered = self._dir(dir_fd, name, inner, unit, errors, add)
                        if entered is not None:
                            child, dev = entered
                            below = root_fixed if dev == root_dev else on_read_only_mount(child)
                            self._push(stack, child, unit, inner, errors, below)
                            break
                    else:
                        entry = self._other(dir_fd, name, inner, unit, errors)
                        if entry is not None:
                            add(entry)
                    if len(records) >= _BATCH_ENTRIES:
                        yield (index, records, errors, root_seen, hasher.bytes_read - before, False)
                        records, errors, root_seen, before = [], [], None, hasher.bytes_read
                        add = records.append
                else:
                    stack.pop()
                    os.close(dir_fd)
        finally:
            for dir_fd, *_ in stack:
                os.close(dir_fd)
        yield (index, records, errors, root_seen, hasher.bytes_read - before, True)

    def _push(
        self,
        stack: list[tuple[int, bytes, Iterator[os.DirEntry[str]], bool]],
        fd: int,
        unit: _Unit,
        inner: bytes,
        errors: list[CaptureError],
        fixed: bool,
    ) -> None:
        try:
            with os.scandir(fd) as listing:
                # By name: one order for every run (row ids within a layer follow it).
                names = sorted(listing, key=_NAME)
        except OSError as exc:
            errors.append(
                CaptureError(_rel(unit, inner), "list", exc.strerror or str(exc), exc.errno, unit.layer_id)
            )
            os.close(fd)
            return
        stack.append((fd, inner if inner.endswith(b"/") else inner + b"/", iter(names), fixed))

    def _file(
        self,
        dir_fd: int,
        name: bytes,
        inner: bytes,
        known: Mapping[bytes, tuple[ReuseKey, str, Xattrs, bytes | None]],
        unit: _Unit,
        errors: list[CaptureError],
        fixed: bool = False,
    ) -> object:
        """A name listed as a regular file: opened, fstat-ed, hashed; or its baseline's hash taken.

        *fixed*: its directory is on a read-only mount, where no name can be swapped between the
        listing and the open (see :func:`open_listed_file`).

        With a baseline (``--reuse``), the file is first ``lstat``-ed: if its reuse key is unchanged,
        it is not opened at all and its hash and xattrs are the baseline's. The ctime in the key is
        the guard for both: a write, a ``setxattr`` or ``removexattr`` each set it to the current
        time, and no system call sets it back.
        """
        layer_id = unit.layer_id
        baseline = known.get(inner) if known else None
        if baseline is not None:
            try:
                st = os.lstat(name, dir_fd=dir_fd)
            except OSError as exc:
                errors.append(CaptureError(_rel(unit, inner), "lstat", _vanished(exc), exc.errno, layer_id))
                return None
            if st.st_mode & _S_IFMT == _S_IFREG and reuse_key(st) == baseline[0]:
                _, digest, xattrs, head = baseline
                return _entry(self._make, layer_id, inner, st, Kind.FILE, xattrs, None, digest, True, head)
        try:
            fd, st = open_listed_file(dir_fd, name, fixed)
        except OSError as exc:
            return self._unopened(dir_fd, name, inner, unit, errors, exc)
        if fd < 0:  # no regular file now (replaced since it was listed): recorded as what it is
            return self._other(dir_fd, name, inner, unit, errors)
        try:
            xattrs = self._xattrs_of_fd(fd, unit, inner, errors)
            link = None
            if st.st_nlink > 1:
                link = (st.st_dev, st.st_ino)
                done = self.link_hashes.get(link)
                if done is not None and done is not _FAILED:
                    return _entry(self._make, layer_id, inner, st, Kind.FILE, xattrs, None, *done)  # type: ignore[misc]
            try:
                digest, head = self.hasher.hash_fd(fd, st.st_size)
            except OSError as exc:
                errors.append(
                    CaptureError(_rel(unit, inner), "read", exc.strerror or str(exc), exc.errno, layer_id)
                )
                if link is not None:
                    self.link_hashes[link] = _FAILED
                return _entry(self._make, layer_id, inner, st, Kind.FILE, xattrs)
            if link is not None:
                self.link_hashes[link] = (digest, False, head)
            return _entry(self._make, layer_id, inner, st, Kind.FILE, xattrs, None, digest, False, head)
        finally:
            if fd >= 0:
                os.close(fd)

    def _unopened(
        self,
        dir_fd: int,
        name: bytes,
        inner: bytes,
        unit: _Unit,
        errors: list[CaptureError],
        exc: OSError,
    ) -> object:
        """A file that could not be opened: its error, and its entry from lstat when it is still there."""
        layer_id = unit.layer_id
        errors.append(CaptureError(_rel(unit, inner), "open", _vanished(exc), exc.errno, layer_id))
        try:
            st = os.lstat(name, dir_fd=dir_fd)
        except OSError:
            return None
        kind = KIND_BY_IFMT.get(st.st_mode & _S_IFMT)
        if kind is None:
            return None
        xattrs = self._xattrs_by_path(dir_fd, name, unit, inner, errors)
        return _entry(self._make, layer_id, inner, st, kind, xattrs)

    def _dir(
        self,
        dir_fd: int,
        name: bytes,
        inner: bytes,
        unit: _Unit,
        errors: list[CaptureError],
        add: Callable[[object], None],
    ) -> tuple[int, int] | None:
        """A name listed as a directory: its entry, and (its descriptor, its st_dev) to descend, or None."""
        layer_id = unit.layer_id
        try:
            fd = open_noatime(name, _DIR_FLAGS, dir_fd)
        except OSError as exc:
            if exc.errno == errno_mod.ENOTDIR or exc.errno == errno_mod.ELOOP:  # replaced since it was listed
                entry = self._other(dir_fd, name, inner, unit, errors)
                if entry is not None:
                    add(entry)
                return None
            entry = self._unopened(dir_fd, name, inner, unit, errors, exc)
            if entry is not None:
                add(entry)
            return None
        try:
            st = os.fstat(fd)
            xattrs = self._xattrs_of_fd(fd, unit, inner, errors)
        except OSError as exc:
            os.close(fd)
            errors.append(
                CaptureError(_rel(unit, inner), "lstat", exc.strerror or str(exc), exc.errno, layer_id)
            )
            return None
        add(_entry(self._make, layer_id, inner, st, Kind.DIR, xattrs))
        return fd, st.st_dev

    def _other(
        self, dir_fd: int, name: bytes, inner: bytes, unit: _Unit, errors: list[CaptureError]
    ) -> object:
        """Anything else (symlink, device, FIFO, socket): lstat-ed and recorded, never opened."""
        layer_id = unit.layer_id
        try:
            st = os.lstat(name, dir_fd=dir_fd)
        except OSError as exc:
            errors.append(CaptureError(_rel(unit, inner), "lstat", _vanished(exc), exc.errno, layer_id))
            return None
        kind = KIND_BY_IFMT.get(st.st_mode & _S_IFMT)
        if kind is None:
            errors.append(
                CaptureError(
                    _rel(unit, inner),
                    "lstat",
                    f"unknown file type {stat.S_IFMT(st.st_mode):o}",
                    None,
                    layer_id,
                )
            )
            return None
        if kind is Kind.FILE or kind is Kind.DIR:  # listed as something else, a file or directory now
            errors.append(
                CaptureError(
                    _rel(unit, inner), "lstat", "replaced by another file during collection", None, layer_id
                )
            )
            return _entry(self._make, layer_id, inner, st, kind, ())
        target = None
        if kind is Kind.SYMLINK:
            try:
                target = os.readlink(name, dir_fd=dir_fd)
            except OSError as exc:
                errors.append(
                    CaptureError(_rel(unit, inner), "readlink", _vanished(exc), exc.errno, layer_id)
                )
        xattrs = self._xattrs_by_path(dir_fd, name, unit, inner, errors)
        return _entry(self._make, layer_id, inner, st, kind, xattrs, target)

    def single(
        self, dir_fd: int, name: bytes, rel: bytes, st: os.stat_result, kind: Kind, visit: Visit
    ) -> Iterator[Item]:
        """An entry the layout names outside any recorded directory (no layout does so today)."""
        unit = _Unit(rel, visit.layer_id, visit.inner_path, st)
        errors: list[CaptureError] = []
        if kind is Kind.FILE:
            entry = self._file(dir_fd, name, visit.inner_path, {}, unit, errors)
        else:
            entry = self._other(dir_fd, name, visit.inner_path, unit, errors)
        yield from errors
        if entry is not None:
            yield entry if self.encode is None else EncodedEntries([entry], None)  # type: ignore[list-item]

    @staticmethod
    def _xattrs_of_fd(
        fd: int, unit: _Unit, inner: bytes, errors: list[CaptureError]
    ) -> tuple[tuple[str, bytes], ...]:
        try:
            names = os.listxattr(fd)
            if not names:
                return ()
            return tuple(sorted((n, os.getxattr(fd, n)) for n in names))
        except OSError as exc:
            if exc.errno not in (errno_mod.ENOTSUP, errno_mod.EOPNOTSUPP):
                errors.append(CaptureError(_rel(unit, inner), "xattr", exc.strerror or str(exc), exc.errno))
            return ()

    def _xattrs_by_path(
        self, dir_fd: int, name: bytes, unit: _Unit, inner: bytes, errors: list[CaptureError]
    ) -> tuple[tuple[str, bytes], ...]:
        """llistxattr/lgetxattr for entries that must not be opened (symlinks, devices, FIFOs, sockets).

        The xattr calls take no directory descriptor; naming the entry through its open parent
        (``/proc/self/fd/N/name``, the final component not followed) works at any depth, where a
        full path stops at PATH_MAX.
        """
        if _PROC_FD:
            full = b"/proc/self/fd/%d/" % dir_fd + name
        else:  # pragma: no cover - Linux has /proc
            full = os.fsencode(os.readlink(f"/dev/fd/{self.root_fd}")) + b"/" + _rel(unit, inner)
        try:
            names = os.listxattr(full, follow_symlinks=False)
            if not names:
                return ()
            return tuple(sorted((n, os.getxattr(full, n, follow_symlinks=False)) for n in names))
        except OSError as exc:
            if exc.errno not in (errno_mod.ENOTSUP, errno_mod.EOPNOTSUPP):
                errors.append(CaptureError(_rel(unit, inner), "xattr", exc.strerror or str(exc), exc.errno))
            return ()


def on_read_only_mount(fd: int) -> bool:
    """Whether the filesystem holding *fd* is mounted read-only (nothing on it can change)."""
    try:
        return bool(os.fstatvfs(fd).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def open_listed_file(dir_fd: int, name: bytes, fixed: bool) -> tuple[int, os.stat_result]:
    """A descriptor to read *name*, listed as a regular file, and its fstat; -1 if it is none now.

    On a read-only mount (*fixed*) the name is opened as it is. Anywhere else a process could
    put a FIFO or a device node in its place after the listing, and opening one has effects (a
    FIFO's blocked writer goes on, a device's driver runs): the name is first opened with
    ``O_PATH``, which opens nothing for I/O, and only an inode ``fstat`` shows to be a regular
    file is opened for reading, through that descriptor (``/proc/self/fd/N``: the same inode,
    whatever the name is by then). Without /proc or O_PATH the name is opened as it is.
    """
    if fixed or not _PROC_FD or not _O_PATH:
        try:
            fd = os.open(name, _FILE_FLAGS | _O_NOATIME, dir_fd=dir_fd)
        except PermissionError:
            if not _O_NOATIME:
                raise
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        st = os.fstat(fd)
        if st.st_mode & _S_IFMT != _S_IFREG:
            os.close(fd)
            return -1, st
        return fd, st
    path_fd = os.open(name, _PATH_FLAGS, dir_fd=dir_fd)
    try:
        st = os.fstat(path_fd)
        if st.st_mode & _S_IFMT != _S_IFREG:
            return -1, st
        return open_noatime(b"%d" % path_fd, _REOPEN_FLAGS, _own_fd_directory()), st
    finally:
        os.close(path_fd)


_FD_DIRECTORY: list[int] = []  # [pid, descriptor of that process's /proc/self/fd]


def _own_fd_directory() -> int:
    """This process's ``/proc/self/fd``, opened once per process (a forked child must not use its
    parent's: "self" is resolved when it is opened). Naming the descriptor relative to it costs
    one lookup instead of four."""
    pid = os.getpid()
    if not _FD_DIRECTORY or _FD_DIRECTORY[0] != pid:
        if _FD_DIRECTORY:
            _FD_DIRECTORY.clear()  # the parent's; closed by the fork's closerange, or still its own
        _FD_DIRECTORY.extend((pid, os.open(b"/proc/self/fd", _DIR_FLAGS)))
    return _FD_DIRECTORY[1]


def _rel(unit: _Unit, inner: bytes) -> bytes:
    """The data-root relative path of a path inside a unit (for error rows)."""
    if inner == unit.inner:
        return unit.rel
    below = inner[len(unit.inner) :].lstrip(b"/")
    return unit.rel + b"/" + below


def _open_path(root_fd: int, rel: bytes) -> int:
    """A directory below the root, opened one ``O_NOFOLLOW`` component at a time."""
    fd = root_fd
    try:
        for part in rel.split(b"/"):
            below = open_noatime(part, _DIR_FLAGS, fd)
            if fd != root_fd:
                os.close(fd)
            fd = below
    except BaseException:
        if fd != root_fd:
            os.close(fd)
        raise
    return fd


# -- the worker processes -----------------------------------------------------------------------


class _Workers:
    """Forked processes that each take units from one queue and send back their rows.

    The queue is a pipe filled with every unit's index (4 bytes each) before
    the processes start and then closed: a read of 4 bytes takes one index
    (pipe reads and writes up to PIPE_BUF are atomic), end of file means no
    work is left. Each process answers through its own pipe, which the
    calling process reads without threads, as data arrives.
    """

    def __init__(self, collection: _Collection, units: list[_Unit]) -> None:
        self.collection = collection
        self.units = units
        self.pids: list[int] = []
        self.pipes: dict[int, tuple[int, bytearray]] = {}  # read end -> (pid, buffer)
        self.open_units: dict[int, set[int]] = {}  # pid -> units started and not finished

    @classmethod
    def start(cls, collection: _Collection, root_fd: int, units: list[_Unit]) -> _Workers | None:
        queue_r, queue_w = os.pipe2(os.O_CLOEXEC)
        needed = len(units) * 4
        with contextlib.suppress(OSError):
            if needed > fcntl.fcntl(queue_w, _F_GETPIPE_SZ):
                fcntl.fcntl(queue_w, _F_SETPIPE_SZ, needed)
        try:
            # The whole queue must fit in the pipe: nobody reads it before the processes start.
            if needed > fcntl.fcntl(queue_w, _F_GETPIPE_SZ):
                raise OSError(errno_mod.ENOSPC, "too many layers for one pipe")
            os.write(queue_w, b"".join(index.to_bytes(4, "little") for index in range(len(units))))
        except OSError:
            os.close(queue_r)
            os.close(queue_w)
            return None
        workers = cls(collection, units)
        os.close(queue_w)
        try:
            for _ in range(min(collection.threads, len(units))):
                try:
                    workers._fork(root_fd, queue_r)
                except OSError:
                    break
        finally:
            os.close(queue_r)
        if not workers.pids:
            return None
        return workers

    def _fork(self, root_fd: int, queue_r: int) -> None:
        result_r, result_w = os.pipe2(os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # room for a few batches: a worker need not wait for the writer
            fcntl.fcntl(result_w, _F_SETPIPE_SZ, _RESULT_PIPE_SIZE)
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        gc.freeze()  # the caller's objects stay untouched by collections in the child: fewer copied pages
        try:
            pid = os.fork()
        except OSError:
            gc.unfreeze()
            os.close(result_r)
            os.close(result_w)
            raise
        if pid == 0:  # pragma: no cover - the child
            code = 0
            try:
                # The process keeps the data root, the queue and its own result pipe, nothing else: no
                # file of the caller's stays open in it.
                low = 3
                for keep in sorted((root_fd, queue_r, result_w)):
                    os.closerange(low, keep)
                    low = keep + 1
                os.closerange(low, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536)
                _serve(self.collection, self.units, root_fd, queue_r, result_w)
            except BaseException:
                code = 1
            os._exit(code)
        gc.unfreeze()  # in the caller, collections go on as before
        os.close(result_w)
        os.set_blocking(result_r, False)
        self.pids.append(pid)
        self.pipes[result_r] = (pid, bytearray())
        self.open_units[pid] = set()

    def messages(self) -> Iterator[Item]:
        finished = False
        try:
            while self.pipes:
                ready, _, _ = select.select(list(self.pipes), [], [])
                for fd in ready:
                    yield from self._read(fd)
            finished = True
        finally:
            self._end(kill=not finished)

    def _read(self, fd: int) -> Iterator[Item]:
        pid, buffer = self.pipes[fd]
        while True:
            try:
                chunk = os.read(fd, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                yield from self._closed(fd, pid, buffer)
                return
            buffer += chunk
            if len(chunk) < 1 << 20:
                break
        start = 0
        while len(buffer) - start >= 8:
            size = int.from_bytes(buffer[start : start + 8], "little")
            end = start + 8 + size
            if len(buffer) < end:
                break
            message = pickle.loads(memoryview(buffer)[start + 8 : end])
            start = end
            if isinstance(message, O2fError):
                raise message
            if isinstance(message, str):  # the worker failed unexpectedly: its traceback
                raise SourceError(f"a collecting process failed:\n{message}")
            index, finished_unit = message[0], message[5]
            if finished_unit:
                self.open_units[pid].discard(index)
            else:
                self.open_units[pid].add(index)
            yield from self.collection._take(message)
        if start:
            del buffer[:start]

    def _closed(self, fd: int, pid: int, buffer: bytearray) -> Iterator[Item]:
        del self.pipes[fd]
        os.close(fd)
        _, status = os.waitpid(pid, 0)
        self.pids.remove(pid)
        if buffer or status != 0 or self.open_units[pid]:
            code = os.waitstatus_to_exitcode(status)
            how = f"exit code {code}" if code >= 0 else f"signal {-code}"
            lost = sorted(
                self.units[index].rel.decode(_FS_ENCODING, _FS_ERRORS) for index in self.open_units[pid]
            )
            where = f" while reading {', '.join(lost)}" if lost else ""
            raise SourceError(f"a collecting process ended unexpectedly ({how}){where}.")
        return iter(())

    def _end(self, *, kill: bool) -> None:
        for fd in list(self.pipes):
            os.close(fd)
        self.pipes.clear()
        for pid in self.pids:
            if kill:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.pids = []


def _serve(collection: _Collection, units: list[_Unit], root_fd: int, queue_r: int, result_w: int) -> None:
    """A worker process: walks units from the queue until it is empty, sending every message."""
    with contextlib.suppress(ValueError):  # Ctrl-C is the collector's to handle; we stop when killed
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The walk makes no reference cycles, only a stream of short-lived tuples, each of which would
    # count towards the next cyclic collection: about 4% of the time, for nothing.
    gc.disable()
    walker = _LayerWalker(root_fd, collection.reuse, collection.encode)
    try:
        while True:
            index_bytes = os.read(queue_r, 4)
            if len(index_bytes) < 4:
                return
            index = int.from_bytes(index_bytes, "little")
            _send(result_w, (index, [], [], None, 0, False))  # started: if this process dies, it is named
            for message in walker.walk(index, units[index]):
                rows = message[1]
                if rows and collection.encode is not None:
                    # Rows cross the pipe as marshal version 2, the snapshot's digest encoding: the
                    # collecting process hashes the bytes it receives instead of encoding them again.
                    message = (message[0], marshal.dumps(rows, 2), *message[2:])
                _send(result_w, message)
    except O2fError as exc:  # a clear error of ours (a baseline that fails its check): raised as is
        _send(result_w, exc)
        raise
    except Exception:
        _send(result_w, traceback.format_exc())
        raise


def _send(fd: int, message: object) -> None:
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    view = memoryview(len(data).to_bytes(8, "little") + data)
    while view:
        view = view[os.write(fd, view) :]


# -- helpers ------------------------------------------------------------------------------------


def _read_metadata(
    dir_fd: int, name: bytes, rel: bytes, st: os.stat_result, kind: Kind, visit: Visit
) -> Item:
    if kind is Kind.SYMLINK:
        try:
            return Noted(rel, kind, os.readlink(name, dir_fd=dir_fd))
        except OSError as exc:
            return CaptureError(rel, "readlink", _vanished(exc), exc.errno)
    if kind is not Kind.FILE:
        return Noted(rel, kind)
    if visit.limit is not None and st.st_size > visit.limit:
        return Noted(rel, kind)
    if st.st_size > READ_LIMIT:
        return CaptureError(rel, "read", f"metadata file larger than {READ_LIMIT} bytes, not kept")
    try:
        # Engine metadata is rewritten on a live host: opened as safely as layer files are.
        fd, fst = open_listed_file(dir_fd, name, fixed=False)
    except OSError as exc:
        return CaptureError(rel, "open", _vanished(exc), exc.errno)
    if fd < 0:
        return CaptureError(rel, "open", "replaced by a non-file during collection")
    try:
        if fst.st_ino != st.st_ino or fst.st_dev != st.st_dev:
            return CaptureError(rel, "open", "replaced by another file during collection")
        chunks = []
        while chunk := os.read(fd, max(st.st_size + 1, SMALL_FILE_LIMIT)):
            chunks.append(chunk)
            if sum(map(len, chunks)) > READ_LIMIT:
                return CaptureError(rel, "read", f"metadata file larger than {READ_LIMIT} bytes, not kept")
        return MetadataFile(rel, b"".join(chunks))
    except OSError as exc:
        return CaptureError(rel, "read", exc.strerror or str(exc), exc.errno)
    finally:
        os.close(fd)


def _entry(
    make: Callable[..., object],
    layer_id: str,
    inner: bytes,
    st: os.stat_result,
    kind: Kind,
    xattrs: tuple[tuple[str, bytes], ...],
    target: bytes | None = None,
    digest: str | None = None,
    reused: bool = False,
    head: bytes | None = None,
) -> object:
    """*make* (Entry, or an encoder's ``fields``) of an entry's values as the walk read them."""
    if kind is Kind.CHAR or kind is Kind.BLOCK:
        major: int | None = os.major(st.st_rdev)
        minor: int | None = os.minor(st.st_rdev)
    else:
        major = minor = None
    # Every name of a regular file with several names shares a link group.
    group = link_group_of(st.st_dev, st.st_ino) if st.st_nlink > 1 and kind is Kind.FILE else None
    # Positional, in Entry's field order (half the cost of keywords; test_model pins the order).
    return make(
        layer_id, inner, kind, st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_size,
        st.st_mtime_ns, st.st_atime_ns, st.st_ctime_ns, st.st_ino, st.st_nlink, major, minor, target,
        xattrs, digest, group, st.st_dev, reused, head,
    )  # fmt: skip


def _list(dir_fd: int) -> list[bytes]:
    """The names in a directory (through its descriptor, so no atime change), in byte order."""
    return sorted([name.encode(_FS_ENCODING, _FS_ERRORS) for name in os.listdir(dir_fd)])


def _vanished(exc: OSError) -> str:
    if exc.errno == errno_mod.ENOENT:
        return "vanished during collection"
    return exc.strerror or str(exc)
