"""A data root on a mounted filesystem, read without changing one byte or timestamp.

Directories are opened with ``O_NOATIME`` and listed through their descriptor,
entries are examined with ``lstat`` relative to that descriptor, and only
regular files are ever opened, with ``O_NOFOLLOW | O_NONBLOCK | O_NOATIME``,
after which ``fstat`` confirms the descriptor is still the regular file that
was ``lstat``-ed (same device and inode). Symlinks are read with ``readlink``
and never followed; FIFOs, sockets and devices are only ``lstat``-ed.

How the work is split (``benchmarks/collect.py`` measures it):

* The calling thread walks: it lists directories, ``lstat``-s and classifies
  every name, reads xattrs and link targets, and builds every item. Items are
  queued in walk order, in batches.
* The regular files to hash are jobs inside a batch. With ``threads > 1`` a
  batch's jobs go to that many forked hashing processes, which open, check,
  read the xattrs of and hash each file (reaching its directory through their
  own ``O_NOFOLLOW`` descriptor chain from the data root) while the walk goes
  on. Processes, not threads: per-entry Python work holds the GIL, and on a
  two-core machine hashing threads made the collection slower, not faster.
  With ``threads=1``, or when a process cannot be forked, the calling thread
  hashes the files itself.
* Batches are yielded in walk order, so the items (and a snapshot's row ids)
  do not depend on the number of processes or on timing. Only a few batches
  are in flight: memory does not grow with the tree.

With a reuse lookup (``collect --reuse``), a file whose layer, path and reuse key
(:func:`~forensics.capture.hash.reuse_key`) match the baseline is still a job
like any other: it is opened, checked and its xattrs read exactly as above,
and only the reading of its content is left out when ``fstat`` on the open
descriptor still gives the same key. The baseline's hash is then recorded,
with ``hash_reused``. The decision rides in the job, so the hashing processes
and the walking thread make it the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno as errno_mod
import os
import pickle
import select
import signal
import stat
import sys
from collections import deque
from collections.abc import Iterator, Mapping, Sequence

from forensics.capture.hash import SMALL_FILE_LIMIT, FdHasher, reuse_key
from forensics.capture.sources import (
    READ_LIMIT,
    Action,
    Classifier,
    Item,
    Layout,
    Noted,
    Progress,
    ReuseKey,
    ReuseLookup,
    Visit,
)
from forensics.errors import NotADataRootError, SourceError
from forensics.model import KIND_BY_IFMT, CaptureError, Entry, Kind, MetadataFile

_O_NOATIME = getattr(os, "O_NOATIME", 0)
_PROC_FD = os.path.isdir(b"/proc/self/fd")
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_S_IFMT = 0o170000
_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()

# A batch is handed out once it holds this many files to hash, this many bytes
# of them, or this many items in all.
_BATCH_JOBS = 64
_BATCH_BYTES = 8 << 20
_BATCH_ITEMS = 1024
# Batches handed out and not yet yielded, per hashing process.
_IN_FLIGHT = 8

# What hashing one file gave (a job's result), as plain tuples that cross a pipe:
_HASHED = 0  # (_HASHED, xattrs, xattr error or None, digest); an error is (errno, message)
_NOT_OPENED = 1  # (_NOT_OPENED, errno, message)
_REPLACED = 2  # (_REPLACED,): fstat shows another inode, or not a regular file
_NOT_READ = 3  # (_NOT_READ, xattrs, xattr error or None, errno, message)
_REUSED = 4  # (_REUSED, xattrs, xattr error or None, digest): the baseline's hash, content not read


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

    def items(self, layouts: Sequence[Layout], progress: Progress | None = None) -> Iterator[Item]:
        self.layout = self._detect(layouts)
        walker = _Walker(self.root, self.layout.classify, progress, self.threads, self.reuse)
        try:
            yield from walker.run()
        finally:
            self.bytes_read = walker.bytes_read


# -- hashing one file ------------------------------------------------------------------


def _hash_at(
    dir_fd: int,
    name: bytes,
    dev: int,
    ino: int,
    size: int,
    hasher: FdHasher,
    known: tuple[ReuseKey, str] | None = None,
) -> tuple:  # type: ignore[type-arg]
    """Opens, checks, hashes and closes the regular file *name* that was lstat-ed as (dev, ino).

    *known*: the reuse key the walk saw and the baseline's hash for it. The
    content is then not read if ``fstat`` on the open descriptor still gives
    that key; everything else (the checks, the xattrs) is done all the same.
    """
    try:
        try:
            fd = os.open(name, _FILE_FLAGS | _O_NOATIME, dir_fd=dir_fd)
        except PermissionError:
            if not _O_NOATIME:
                raise
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        return (_NOT_OPENED, exc.errno, _vanished(exc))
    try:
        fst = os.fstat(fd)
        if fst.st_ino != ino or fst.st_dev != dev or not stat.S_ISREG(fst.st_mode):
            return (_REPLACED,)
        xattrs: tuple[tuple[str, bytes], ...] = ()
        xattr_error = None
        try:
            names = os.listxattr(fd)
            if names:
                xattrs = tuple(sorted((n, os.getxattr(fd, n)) for n in names))
        except OSError as exc:
            if exc.errno not in (errno_mod.ENOTSUP, errno_mod.EOPNOTSUPP):
                xattr_error = (exc.errno, exc.strerror or str(exc))
        if known is not None and reuse_key(fst) == known[0]:
            return (_REUSED, xattrs, xattr_error, known[1])
        try:
            digest = hasher.hash_fd(fd, size)
        except OSError as exc:
            return (_NOT_READ, xattrs, xattr_error, exc.errno, exc.strerror or str(exc))
        return (_HASHED, xattrs, xattr_error, digest)
    finally:
        os.close(fd)


# -- the hashing processes -------------------------------------------------------------


def _send(fd: int, message: object) -> None:
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    view = memoryview(len(data).to_bytes(8, "little") + data)
    while view:
        view = view[os.write(fd, view) :]


def _receive(fd: int) -> object:
    """The next message, or None at end of file."""
    header = _read_exactly(fd, 8)
    if header is None:
        return None
    data = _read_exactly(fd, int.from_bytes(header, "little"))
    if data is None:
        raise EOFError("message cut short")
    return pickle.loads(data)


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunk = os.read(fd, size)
    if len(chunk) == size or not chunk:
        return chunk or (None if size else b"")
    parts = [chunk]
    size -= len(chunk)
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            return None
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


class _DirChain:
    """A hashing process's own descriptors from the data root down to the directory in use.

    Each step is opened with ``O_NOFOLLOW | O_DIRECTORY`` relative to the one
    above, so no symlink is followed and no path is longer than one name.
    """

    def __init__(self, root_fd: int) -> None:
        self.names: list[bytes] = []
        self.fds = [root_fd]
        self.prefix: bytes | None = b""

    def fd(self, prefix: bytes) -> int:
        """The descriptor of the directory *prefix* (``b""`` for the root, else ``b"a/b/"``)."""
        if prefix == self.prefix:
            return self.fds[-1]
        self.prefix = None
        wanted = prefix[:-1].split(b"/") if prefix else []
        keep = 0
        for have, want in zip(self.names, wanted, strict=False):
            if have != want:
                break
            keep += 1
        while len(self.names) > keep:
            self.names.pop()
            os.close(self.fds.pop())
        for name in wanted[keep:]:
            self.fds.append(open_noatime(name, _DIR_FLAGS, self.fds[-1]))
            self.names.append(name)
        self.prefix = prefix
        return self.fds[-1]


def _serve(root_fd: int, requests: int, results: int) -> None:
    """A hashing process: answers each batch of (directory, name, dev, ino, size, known), in order."""
    with contextlib.suppress(ValueError):  # Ctrl-C is the collector's to handle; we stop when our pipe closes
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    hasher = FdHasher()
    dirs = _DirChain(root_fd)
    while True:
        batch = _receive(requests)
        if batch is None:
            return
        before = hasher.bytes_read
        answers = []
        for prefix, name, dev, ino, size, known in batch:  # type: ignore[attr-defined]
            try:
                dir_fd = dirs.fd(prefix)
            except OSError as exc:
                answers.append((_NOT_OPENED, exc.errno, _vanished(exc)))
                continue
            answers.append(_hash_at(dir_fd, name, dev, ino, size, hasher, known))
        _send(results, (answers, hasher.bytes_read - before))


class _Process:
    """One hashing process, seen from the walking thread."""

    __slots__ = ("buffer", "pending", "pid", "requests", "results")

    def __init__(self, pid: int, requests: int, results: int) -> None:
        self.pid = pid
        self.requests = requests  # write end, non-blocking
        self.results = results  # read end, non-blocking
        self.buffer = bytearray()  # answers read and not yet complete
        self.pending: deque[_Batch] = deque()  # batches sent, in order, not yet answered


class _Hashers:
    """Forked hashing processes; each answers its batches in the order it got them.

    The walking thread talks to them without helper threads (which would
    contend for the GIL): requests are written and answers read through
    non-blocking pipes, and it waits in ``poll`` only when it needs an answer,
    or when a process's request pipe is full.
    """

    def __init__(self, root_fd: int, count: int) -> None:
        self.processes: list[_Process] = []
        for _ in range(count):
            try:
                self._start(root_fd)
            except OSError:
                break

    def _start(self, root_fd: int) -> None:
        request_r, request_w = os.pipe2(os.O_CLOEXEC)
        result_r, result_w = os.pipe2(os.O_CLOEXEC)
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        try:
            pid = os.fork()
        except OSError:
            for fd in (request_r, request_w, result_r, result_w):
                os.close(fd)
            raise
        if pid == 0:  # pragma: no cover - the child
            code = 0
            try:
                # The process keeps the data root and its two pipe ends, nothing else: no file of
                # the caller's stays open in it, and only the parent holds the other pipe ends (a
                # process sees end of file on its requests once the parent closes them).
                low = 3
                for keep in sorted((root_fd, request_r, result_w)):
                    os.closerange(low, keep)
                    low = keep + 1
                os.closerange(low, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536)
                _serve(root_fd, request_r, result_w)
            except BaseException:
                code = 1
            os._exit(code)
        os.close(request_r)
        os.close(result_w)
        os.set_blocking(request_w, False)
        os.set_blocking(result_r, False)
        self.processes.append(_Process(pid, request_w, result_r))

    def __len__(self) -> int:
        return len(self.processes)

    def submit(self, batch: _Batch) -> None:
        """Sends the batch's files to the process with the fewest batches waiting."""
        process = min(self.processes, key=lambda p: len(p.pending))
        items = batch.items
        data = pickle.dumps([items[index][6] for index in batch.jobs], pickle.HIGHEST_PROTOCOL)  # type: ignore[index]
        view = memoryview(len(data).to_bytes(8, "little") + data)
        process.pending.append(batch)
        while view:
            try:
                view = view[os.write(process.requests, view) :]
            except BlockingIOError:  # the pipe is full: wait for room, taking in answers meanwhile
                self.poll(block=True, writer=process)
                if process not in self.processes:
                    return
            except OSError:  # the process is gone
                self._lost(process)
                return

    def poll(self, *, block: bool, writer: _Process | None = None) -> None:
        """Takes in every answer that has arrived; with *block*, waits for one (or for room to write)."""
        if block:
            poller = select.poll()
            waiting = False
            for process in self.processes:
                if process.pending:
                    poller.register(process.results, select.POLLIN)
                    waiting = True
            if writer is not None:
                poller.register(writer.requests, select.POLLOUT)
                waiting = True
            if waiting:
                poller.poll()
        for process in list(self.processes):
            if process.pending:
                self._read(process)

    def _read(self, process: _Process) -> None:
        buffer = process.buffer
        while True:
            try:
                chunk = os.read(process.results, 1 << 20)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:  # end of file: the process died
                self._lost(process)
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
            batch = process.pending.popleft()
            batch.results, batch.hashed = pickle.loads(memoryview(buffer)[start + 8 : end])
            batch.done = True
            start = end
        if start:
            del buffer[:start]

    def _lost(self, process: _Process) -> None:
        """A process that is gone: its batches are hashed by the walking thread instead."""
        for batch in process.pending:
            batch.results = None
            batch.done = True
        process.pending.clear()
        self.processes.remove(process)
        self._end(process, kill=True)

    def _end(self, process: _Process, *, kill: bool) -> None:
        os.close(process.requests)
        if kill:
            with contextlib.suppress(OSError):
                os.kill(process.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(process.pid, 0)
        os.close(process.results)

    def close(self, *, kill: bool) -> None:
        for process in self.processes:
            self._end(process, kill=kill)
        self.processes = []


# -- the walk ---------------------------------------------------------------------------


class _Batch:
    """Items in walk order; ``jobs`` are the indexes of files still to hash (job tuples)."""

    __slots__ = (
        "close",
        "done",
        "entries",
        "hashed",
        "items",
        "jobs",
        "leaders",
        "mixed",
        "results",
        "size",
    )

    def __init__(self) -> None:
        self.items: list[object] = []
        self.jobs: list[int] = []
        self.size = 0  # lstat bytes of the files to hash
        self.entries = 0  # Entry items this batch will yield
        self.close: list[int] = []  # directory descriptors to close once the batch is yielded
        self.leaders: list[tuple[int, tuple[int, int]]] = []  # (index, (dev, ino)) of hardlink leaders
        self.mixed = False  # items will hold lists (errors + entry) or hardlink followers
        self.results: list[tuple] | None = None  # type: ignore[type-arg]  # one per job; None: hash here
        self.hashed = 0  # bytes read while hashing
        self.done = False


class _Follower:
    """A later name of a hardlinked file whose first name is still being hashed."""

    __slots__ = ("index", "job", "leader")

    def __init__(self, job: tuple[object, ...], leader: _Batch, index: int) -> None:
        self.job = job
        self.leader = leader
        self.index = index


_FAILED = object()  # link_hashes: the first name of this inode could not be hashed


_Open = tuple[int, bytes, Iterator[bytes], "tuple[str, bytes] | None"]
"""An open directory being listed: its descriptor, its path, its remaining names, and for a directory
inside a layer's diff/ the (layer id, inner path prefix) every name below it inherits."""


class _Walker:
    def __init__(
        self,
        root: bytes,
        classify: Classifier,
        progress: Progress | None,
        threads: int,
        reuse: ReuseLookup | None = None,
    ) -> None:
        self.root = root
        self.classify = classify
        self.progress = progress
        self.entries = 0
        self.hashed_bytes = 0
        self.hasher = FdHasher()
        self.threads = threads
        # (dev, ino) -> link group id, and the hash of that inode: the Entry of its first name,
        # _FAILED, or (batch, index) while its first name is being hashed. Only for st_nlink > 1.
        self.link_groups: dict[tuple[int, int], int] = {}
        self.link_hashes: dict[tuple[int, int], object] = {}
        self.next_group = 1
        self.batch = _Batch()
        self.window: deque[_Batch] = deque()
        self.hashers: _Hashers | None = None
        self.in_flight = 0
        self.reuse = reuse
        self.reuse_layer: str | None = None  # the layer whose baseline files are in reuse_files
        self.reuse_files: Mapping[bytes, tuple[ReuseKey, str]] = {}

    @property
    def bytes_read(self) -> int:
        return self.hashed_bytes

    def run(self) -> Iterator[Item]:
        try:
            root_fd = open_noatime(self.root, _DIR_FLAGS, None)
        except OSError as exc:
            yield CaptureError(b"", "open", exc.strerror or str(exc), exc.errno)
            return
        stack: list[_Open] = []
        finished = False
        try:
            try:
                names = _list(root_fd)
            except OSError as exc:
                yield CaptureError(b"", "list", exc.strerror or str(exc), exc.errno)
                return
            if self.threads > 1:
                self.hashers = _Hashers(root_fd, self.threads)
                if not self.hashers:
                    self.hashers = None
            self.in_flight = _IN_FLIGHT * (len(self.hashers) if self.hashers else 1)
            stack.append((root_fd, b"", iter(names), None))
            yield from self._walk(stack)
            self._submit()
            while self.window:
                yield from self._emit(block=True)
            if self.progress is not None:
                self.progress(self.entries, self.hashed_bytes)
            finished = True
        finally:
            if self.hashers is not None:
                self.hashers.close(kill=not finished)
            fds = [open_dir[0] for open_dir in stack if open_dir[0] != root_fd]
            for batch in (*self.window, self.batch):
                fds.extend(batch.close)
            for fd in (*fds, root_fd):
                os.close(fd)

    def _walk(self, stack: list[_Open]) -> Iterator[Item]:
        """Depth first, names in byte order, each directory's entry before its contents."""
        classify = self.classify
        lstat = os.lstat
        kinds = KIND_BY_IFMT
        file_kind = Kind.FILE
        dir_kind = Kind.DIR
        entry_action = Action.ENTRY
        skip_action = Action.SKIP
        batch = self.batch
        items = batch.items
        known = None
        reuse = self.reuse
        while stack:
            dir_fd, prefix, names, inherited = stack[-1]
            for name in names:
                rel = prefix + name
                try:
                    st = lstat(name, dir_fd=dir_fd)
                except OSError as exc:
                    items.append(CaptureError(rel, "lstat", _vanished(exc), exc.errno))
                    continue
                kind = kinds.get(st.st_mode & _S_IFMT)
                if kind is None:
                    items.append(CaptureError(rel, "lstat", f"unknown file type {stat.S_IFMT(st.st_mode):o}"))
                    continue
                if inherited is None:
                    visit = classify(rel, kind)
                else:  # below a layer's diff/ everything is an entry of that layer (Layout contract)
                    visit = Visit(entry_action, inherited[0], inherited[1] + name)
                action = visit.action
                if action is entry_action and kind is file_kind:
                    batch.entries += 1
                    size = st.st_size
                    if reuse is not None:
                        known = self._known(visit, st)
                        if known is not None:
                            size = 0  # nothing to read: the batch fills by its number of files
                    request = (prefix, name, st.st_dev, st.st_ino, st.st_size, known)
                    job = (dir_fd, name, rel, st, visit, None, request)
                    if st.st_nlink > 1:
                        job = self._hardlink(job)
                        if job is None:
                            continue
                    batch.jobs.append(len(items))
                    items.append(job)
                    batch.size += size
                    if len(batch.jobs) >= _BATCH_JOBS or batch.size >= _BATCH_BYTES:
                        self._submit()
                        batch = self.batch
                        items = batch.items
                        yield from self._emit(block=len(self.window) > self.in_flight)
                    continue
                if action is skip_action:
                    continue
                if action is Action.NOTE:
                    items.append(Noted(rel, kind))
                elif action is Action.READ:
                    items.append(self._read_metadata(dir_fd, name, rel, st, kind, visit))
                elif kind is dir_kind:
                    entered = self._enter_dir(dir_fd, name, rel, st, visit)
                    if entered is not None:
                        stack.append(entered)
                        break
                elif action is entry_action:
                    self._other(dir_fd, name, rel, st, kind, visit)
                if len(items) >= _BATCH_ITEMS:
                    self._submit()
                    batch = self.batch
                    items = batch.items
                    yield from self._emit(block=len(self.window) > self.in_flight)
            else:
                stack.pop()
                if stack:  # not the root: closed once the files named in it are hashed
                    batch.close.append(dir_fd)

    def _enter_dir(
        self, dir_fd: int, name: bytes, rel: bytes, st: os.stat_result, visit: Visit
    ) -> _Open | None:
        batch = self.batch
        items = batch.items
        record = visit.action is Action.ENTRY
        if record:
            batch.entries += 1
        try:
            fd = open_noatime(name, _DIR_FLAGS, dir_fd)
        except OSError as exc:
            if record:
                xattrs, _ = self._xattrs_by_path(rel, dir_fd, name)
                items.append(_entry(visit, st, Kind.DIR, xattrs))
            items.append(CaptureError(rel, "open", _vanished(exc), exc.errno, visit.layer_id or None))
            return None
        if record:
            xattrs, error = _xattrs_of_fd(fd, rel)
            if error:
                items.append(error)
            items.append(_entry(visit, st, Kind.DIR, xattrs))
        try:
            names = _list(fd)
        except OSError as exc:
            items.append(CaptureError(rel, "list", exc.strerror or str(exc), exc.errno))
            os.close(fd)
            return None
        inherited = None
        if record:
            inner = visit.inner_path
            inherited = (visit.layer_id, inner if inner.endswith(b"/") else inner + b"/")
        return fd, rel + b"/", iter(names), inherited

    def _other(
        self, dir_fd: int, name: bytes, rel: bytes, st: os.stat_result, kind: Kind, visit: Visit
    ) -> None:
        """A symlink, device, FIFO or socket: recorded, never opened."""
        batch = self.batch
        batch.entries += 1
        items = batch.items
        target = None
        if kind is Kind.SYMLINK:
            try:
                target = os.readlink(name, dir_fd=dir_fd)
            except OSError as exc:
                items.append(CaptureError(rel, "readlink", _vanished(exc), exc.errno, visit.layer_id))
        xattrs, error = self._xattrs_by_path(rel, dir_fd, name)
        if error:
            items.append(error)
        items.append(_entry(visit, st, kind, xattrs, target))

    def _known(self, visit: Visit, st: os.stat_result) -> tuple[ReuseKey, str] | None:
        """The baseline's (reuse key, hash) for this file, when its layer, path and key are unchanged."""
        if visit.layer_id != self.reuse_layer:
            self.reuse_layer = visit.layer_id
            self.reuse_files = self.reuse(visit.layer_id)  # type: ignore[misc]
        found = self.reuse_files.get(visit.inner_path)
        if found is None or found[0] != reuse_key(st):
            return None
        return found

    def _hardlink(self, job: tuple) -> tuple | None:  # type: ignore[type-arg]
        """A name of an inode with several names: the job to hash it, or None when it was dealt with."""
        dir_fd, name, rel, st, visit, _, request = job
        batch = self.batch
        key = (st.st_dev, st.st_ino)
        group = self.link_groups.get(key)
        if group is None:
            group = self.link_groups[key] = self.next_group
            self.next_group += 1
        job = (dir_fd, name, rel, st, visit, group, request)
        known = self.link_hashes.get(key)
        if known is None or known is _FAILED:
            # The first name (or the first since reading failed): hash it.
            self.link_hashes[key] = (batch, len(batch.items))
            batch.leaders.append((len(batch.items), key))
            return job
        if type(known) is Entry:
            xattrs, error = self._xattrs_by_path(rel)
            if error:
                batch.items.append(error)
            digest, reused = known.blake3, known.hash_reused
            batch.items.append(_entry(visit, st, Kind.FILE, xattrs, None, group, digest, reused))
            return None
        leader, index = known  # type: ignore[misc]
        batch.items.append(_Follower(job, leader, index))
        batch.mixed = True
        return None

    # -- batches ----------------------------------------------------------------

    def _submit(self) -> None:
        """Hands the current batch out (or hashes it here, without hashing processes)."""
        batch = self.batch
        if not batch.items and not batch.close:
            return
        self.batch = _Batch()
        self.window.append(batch)
        if not batch.jobs:
            batch.done = True
        elif self.hashers:
            self.hashers.submit(batch)
        else:
            self._hash_here(batch)

    def _hash_here(self, batch: _Batch) -> None:
        hasher = self.hasher
        before = hasher.bytes_read
        items = batch.items
        batch.results = [
            _hash_at(job[0], job[1], job[6][2], job[6][3], job[6][4], hasher, job[6][5])  # type: ignore[index]
            for job in (items[index] for index in batch.jobs)
        ]
        batch.hashed = hasher.bytes_read - before
        batch.done = True

    def _emit(self, block: bool) -> Iterator[Item]:
        """Yields finished batches from the head of the window, in order."""
        window = self.window
        while window:
            batch = window[0]
            if not batch.done:
                self.hashers.poll(block=False)  # type: ignore[union-attr]
                while not batch.done:
                    if not block:
                        return
                    self.hashers.poll(block=True)  # type: ignore[union-attr]
                block = False
            if batch.jobs:
                if batch.results is None:  # its hashing process is gone
                    self._hash_here(batch)
                self._finish_jobs(batch)
            if batch.mixed:
                for item in batch.items:
                    if type(item) is list:
                        yield from item
                    elif type(item) is _Follower:
                        yield from self._follow(item)
                    else:
                        yield item  # type: ignore[misc]
            else:
                yield from batch.items  # type: ignore[misc]
            for index, key in batch.leaders:
                result = batch.items[index]
                leader = result if type(result) is not list else result[-1]
                self.link_hashes[key] = _FAILED if leader.blake3 is None else leader  # type: ignore[union-attr]
            window.popleft()
            for fd in batch.close:
                os.close(fd)
            before = self.entries
            self.entries += batch.entries
            self.hashed_bytes += batch.hashed
            if self.progress is not None and (before ^ self.entries) >> 10:
                self.progress(self.entries, self.hashed_bytes)

    def _finish_jobs(self, batch: _Batch) -> None:
        """Each job's entry (after its errors, if any), in its place."""
        items = batch.items
        results = batch.results
        for index, result in zip(batch.jobs, results, strict=True):  # type: ignore[arg-type]
            _, _, rel, st, visit, group, _ = items[index]  # type: ignore[misc]
            status = result[0]
            if status in (_HASHED, _REUSED):
                entry = _entry(visit, st, Kind.FILE, result[1], None, group, result[3], status == _REUSED)
                if result[2] is None:
                    items[index] = entry
                    continue
                items[index] = [_xattr_error(rel, result[2]), entry]
            else:
                items[index] = self._failed(rel, st, visit, group, result)
            batch.mixed = True
        batch.results = None

    def _failed(self, rel: bytes, st: os.stat_result, visit: Visit, group: int | None, result: tuple) -> list:  # type: ignore[type-arg]
        """The items for a file that could not be opened or read, in the order a reader meets them."""
        status = result[0]
        if status == _NOT_OPENED:
            xattrs, _ = self._xattrs_by_path(rel)
            return [
                CaptureError(rel, "open", result[2], result[1], visit.layer_id),
                _entry(visit, st, Kind.FILE, xattrs, None, group),
            ]
        if status == _REPLACED:
            return [
                CaptureError(rel, "open", "replaced by another file during collection", None, visit.layer_id),
                _entry(visit, st, Kind.FILE, (), None, group),
            ]
        _, xattrs, xattr_error, errno, message = result
        out: list[Item] = [_xattr_error(rel, xattr_error)] if xattr_error else []
        out.append(CaptureError(rel, "read", message, errno, visit.layer_id))
        out.append(_entry(visit, st, Kind.FILE, xattrs, None, group))
        return out

    def _follow(self, follower: _Follower) -> Iterator[Item]:
        """A later hardlink name, once its first name is hashed: its hash, or a reading of its own."""
        result = follower.leader.items[follower.index]
        leader = result if type(result) is not list else result[-1]
        dir_fd, name, rel, st, visit, group, request = follower.job
        if leader.blake3 is None:  # type: ignore[union-attr]
            before = self.hasher.bytes_read
            answer = _hash_at(dir_fd, name, st.st_dev, st.st_ino, st.st_size, self.hasher, request[5])  # type: ignore[arg-type, index]
            self.hashed_bytes += self.hasher.bytes_read - before
            status = answer[0]
            if status not in (_HASHED, _REUSED):
                yield from self._failed(rel, st, visit, group, answer)  # type: ignore[arg-type]
                return
            if answer[2] is not None:
                yield _xattr_error(rel, answer[2])  # type: ignore[arg-type]
            yield _entry(visit, st, Kind.FILE, answer[1], None, group, answer[3], status == _REUSED)  # type: ignore[arg-type]
            return
        xattrs, error = self._xattrs_by_path(rel)  # type: ignore[arg-type]
        if error:
            yield error
        yield _entry(visit, st, Kind.FILE, xattrs, None, group, leader.blake3, leader.hash_reused)  # type: ignore[arg-type, union-attr]

    # -- entries that are not hashed --------------------------------------------

    def _xattrs_by_path(
        self, rel: bytes, dir_fd: int | None = None, name: bytes | None = None
    ) -> tuple[tuple[tuple[str, bytes], ...], CaptureError | None]:
        """llistxattr/lgetxattr for entries that must not be opened (symlinks, devices, FIFOs, sockets).

        The xattr calls take no directory descriptor; naming the entry through its open parent
        (``/proc/self/fd/N/name``, the final component not followed) works at any depth, where a
        full path stops at PATH_MAX.
        """
        if dir_fd is not None and name is not None and _PROC_FD:
            full = b"/proc/self/fd/%d/" % dir_fd + name
        else:
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

    def _read_metadata(
        self, dir_fd: int, name: bytes, rel: bytes, st: os.stat_result, kind: Kind, visit: Visit
    ) -> Item:
        if kind is Kind.SYMLINK:
            try:
                return Noted(rel, kind, os.readlink(name, dir_fd=dir_fd))
            except OSError as exc:
                return CaptureError(rel, "readlink", _vanished(exc), exc.errno)
        if kind is not Kind.FILE:
            return Noted(rel, kind)
        limit = getattr(visit, "limit", None)  # a layout may want only small files of a directory kept
        if limit is not None and st.st_size > limit:
            return Noted(rel, kind)
        if st.st_size > READ_LIMIT:
            return CaptureError(rel, "read", f"metadata file larger than {READ_LIMIT} bytes, not kept")
        try:
            fd = open_noatime(name, _FILE_FLAGS, dir_fd)
        except OSError as exc:
            return CaptureError(rel, "open", _vanished(exc), exc.errno)
        try:
            fst = os.fstat(fd)
            if not stat.S_ISREG(fst.st_mode):
                return CaptureError(rel, "open", "replaced by a non-file during collection")
            if fst.st_ino != st.st_ino or fst.st_dev != st.st_dev:
                return CaptureError(rel, "open", "replaced by another file during collection")
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


def _entry(
    visit: Visit,
    st: os.stat_result,
    kind: Kind,
    xattrs: tuple[tuple[str, bytes], ...],
    target: bytes | None = None,
    group: int | None = None,
    digest: str | None = None,
    reused: bool = False,
) -> Entry:
    if kind is Kind.CHAR or kind is Kind.BLOCK:
        major: int | None = os.major(st.st_rdev)
        minor: int | None = os.minor(st.st_rdev)
    else:
        major = minor = None
    if _ENTRY_POSITIONAL:  # half the cost of keywords, for one Entry per entry of the tree
        return Entry(
            visit.layer_id, visit.inner_path, kind, st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_size,
            st.st_mtime_ns, st.st_atime_ns, st.st_ctime_ns, st.st_ino, st.st_nlink, major, minor, target,
            xattrs, digest, group, st.st_dev, reused,
        )  # fmt: skip
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
        rdev_major=major,
        rdev_minor=minor,
        target=target,
        xattrs=xattrs,
        blake3=digest,
        link_group=group,
        dev=st.st_dev,
        hash_reused=reused,
    )


# The field order _entry passes positionally; keywords are used if Entry ever changes.
_ENTRY_POSITIONAL = tuple(field.name for field in dataclasses.fields(Entry)) == (
    "layer_id", "path", "kind", "mode", "uid", "gid", "size", "mtime_ns", "atime_ns", "ctime_ns", "inode",
    "nlink", "rdev_major", "rdev_minor", "target", "xattrs", "blake3", "link_group", "dev", "hash_reused",
)  # fmt: skip


def _list(dir_fd: int) -> list[bytes]:
    """The names in a directory (through its descriptor, so no atime change), in byte order."""
    return sorted([name.encode(_FS_ENCODING, _FS_ERRORS) for name in os.listdir(dir_fd)])


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


def _xattr_error(rel: bytes, error: tuple[int, str]) -> CaptureError:
    return CaptureError(rel, "xattr", error[1], error[0])


def _vanished(exc: OSError) -> str:
    if exc.errno == errno_mod.ENOENT:
        return "vanished during collection"
    return exc.strerror or str(exc)
