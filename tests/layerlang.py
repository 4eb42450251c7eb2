"""A tiny layer language for building Docker ``overlay2`` data roots in tests.

In the style of containerd's ``fstest``: a layer is a list of *ops* built with
:func:`file`, :func:`dir`, :func:`symlink`, :func:`fifo`, :func:`whiteout`,
:func:`opaque`, :func:`hardlink`, :func:`chardev` (plus :func:`blockdev`,
:func:`socket` and :func:`sparse`), applied to a directory with
:func:`write_layer`::

    base = [dir("/etc"), file("/etc/motd", b"hi\\n", mtime=1704067200), symlink("/etc/mtab", "/proc/mounts")]
    top = [whiteout("/etc/motd"), opaque("/srv"), file("/srv/new.txt", b"new\\n")]

:func:`make_data_root` lays out a whole Docker data root the way Docker Engine
20.10 writes it (the layout facts of ``shared/corpora/docker-a/README.md``)::

    def attack(merged: Path) -> None:          # runs inside a REAL kernel overlay mount
        (merged / "etc/motd").unlink()

    dr = make_data_root(root, images={"app:1": [base, top]}, containers={"web": ("app:1", None, attack)})
    dr.upper("web")                             # overlay2/<mount-id>/diff, exactly as the kernel left it

Image layers are written directly into ``diff/`` (Docker extracts a layer tar
there); whiteouts are 0/0 character devices and opaque directories carry
``trusted.overlay.opaque=y``, as Docker's tar extraction on overlay2 creates
them. Container layers (``-init`` and the RW layer) are changed *through a real
overlay mount* (:func:`mounted`, :func:`mount_layer`), so their ``diff/`` holds
exactly what the kernel writes: copy-ups, whiteouts, opaque directories,
``trusted.overlay.origin/impure/uuid`` and the leftover whiteout in
``work/work``. (This kernel shares one whiteout inode per mount: the whiteouts
a container creates are hardlinks of each other and of ``work/work/#<hex>``.)
The ``-init`` layer is populated through its own mount by :func:`docker_init`,
a transcription of dockerd's ``setupInitLayer``. :func:`mounted` also works on
a copy of a real data root (the docker-a corpus).

:func:`scan` reads a directory independently of o2f (``lstat``,
``llistxattr``, ``readlink``, BLAKE3), for comparing snapshots with the truth.

Paths in ops are absolute inside the layer (``"/etc/motd"``; the leading slash
is optional), as ``str`` or ``bytes`` (any bytes but NUL and ``/`` in a name).
Owners default to the creator's (``uid=None``; 0:0 when run as root, which
is what Docker's extraction gives); missing parent directories are created
0755 with the creator as owner. Ops are applied in order
with ``*at()`` calls relative to directory descriptors, so paths longer than
PATH_MAX work; only xattrs on symlinks and devices and sockets need a full path.
Times given as ``mtime`` are set after every op ran (creating a child changes
its parent's mtime), atime = mtime.

Needs root for: whiteouts and device nodes (``mknod``), ``trusted.*`` xattrs,
owners other than the caller, and every overlay mount (containers).

Not reproduced: ``tar-split.json.gz`` (Docker's tar reassembly data), the
daemon's bolt databases, networks and volumes. ``diff`` ids are the sha256 of a
deterministic tar of the layer made by :func:`layer_tar` (moby's whiteout
conventions, but not byte-identical to Docker's own layer tar).
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import io
import json
import os
import socket as socket_mod
import stat
import struct
import subprocess
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

Pathish = str | bytes
Ops = Sequence["Op"]
Action = Callable[[Path], None]
"""Something done inside a mounted container: receives the ``merged/`` path."""

DOCKER_VERSION = "20.10.24+dfsg1"
OPAQUE_XATTR = "trusted.overlay.opaque"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_ZERO_TIME = "0001-01-01T00:00:00Z"


# --- ops -----------------------------------------------------------------------


def _rel(path: Pathish) -> bytes:
    raw = os.fsencode(path).strip(b"/")
    if not raw or b"\0" in raw or any(part in (b"", b".", b"..") for part in raw.split(b"/")):
        raise ValueError(f"bad layer path {path!r}")
    return raw


def _ns(mtime: float | int | None) -> int | None:
    if mtime is None:
        return None
    if isinstance(mtime, int):
        return mtime * 1_000_000_000
    return round(mtime * 1_000_000_000)


@dataclass(frozen=True)
class Op:
    """One change to a layer; ``path`` is relative to the layer root, as bytes."""

    path: bytes
    mode: int = 0o644
    uid: int | None = None  # None: as created (root: 0)
    gid: int | None = None
    mtime_ns: int | None = None
    xattrs: tuple[tuple[str, bytes], ...] = ()

    def create(self, parent_fd: int, name: bytes) -> None:
        raise NotImplementedError

    def _owner_and_mode(self, parent_fd: int, name: bytes, *, chmod: bool = True) -> None:
        # chown first: it clears setuid/setgid and security.capability
        if self.uid is not None or self.gid is not None:
            uid, gid = -1 if self.uid is None else self.uid, -1 if self.gid is None else self.gid
            os.chown(name, uid, gid, dir_fd=parent_fd, follow_symlinks=False)
        if chmod:
            os.chmod(name, self.mode, dir_fd=parent_fd)

    def _chown_fd(self, fd: int) -> None:
        if self.uid is not None or self.gid is not None:  # only root may give files away
            os.fchown(fd, -1 if self.uid is None else self.uid, -1 if self.gid is None else self.gid)

    def _xattrs_on(self, fd: int) -> None:
        for key, value in self.xattrs:
            os.setxattr(fd, key, value)


@dataclass(frozen=True)
class File(Op):
    data: bytes = b""

    def create(self, parent_fd: int, name: bytes) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600, dir_fd=parent_fd)
        try:
            view = memoryview(self.data)
            while view:
                view = view[os.write(fd, view) :]
            self._chown_fd(fd)
            os.fchmod(fd, self.mode)
            self._xattrs_on(fd)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class Sparse(Op):
    size: int = 0
    chunks: tuple[tuple[int, bytes], ...] = ()

    def create(self, parent_fd: int, name: bytes) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600, dir_fd=parent_fd)
        try:
            os.ftruncate(fd, self.size)
            for offset, data in self.chunks:
                os.pwrite(fd, data, offset)
            self._chown_fd(fd)
            os.fchmod(fd, self.mode)
            self._xattrs_on(fd)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class Dir(Op):
    mode: int = 0o755

    def create(self, parent_fd: int, name: bytes) -> None:
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
        except FileExistsError:
            if not stat.S_ISDIR(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode):
                raise
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        try:
            self._chown_fd(fd)
            os.fchmod(fd, self.mode)
            self._xattrs_on(fd)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class Symlink(Op):
    target: bytes = b""

    def create(self, parent_fd: int, name: bytes) -> None:
        _unlink_if_present(parent_fd, name)
        os.symlink(self.target, name, dir_fd=parent_fd)
        self._owner_and_mode(parent_fd, name, chmod=False)


@dataclass(frozen=True)
class Node(Op):
    """FIFOs, device nodes and whiteouts (``mknod``)."""

    ifmt: int = stat.S_IFIFO
    rdev: int = 0

    def create(self, parent_fd: int, name: bytes) -> None:
        _unlink_if_present(parent_fd, name)
        os.mknod(name, self.ifmt | self.mode, self.rdev, dir_fd=parent_fd)
        self._owner_and_mode(parent_fd, name)


@dataclass(frozen=True)
class Socket(Op):
    mode: int = 0o755

    def create(self, parent_fd: int, name: bytes) -> None:
        _unlink_if_present(parent_fd, name)
        if len(name) > 100:
            raise ValueError("a socket name must be shorter than 100 bytes")
        here = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        sock = socket_mod.socket(socket_mod.AF_UNIX, socket_mod.SOCK_STREAM)
        try:
            os.fchdir(parent_fd)  # sun_path is short: bind a relative name
            sock.bind(name)
        finally:
            os.fchdir(here)
            os.close(here)
            sock.close()
        self._owner_and_mode(parent_fd, name)


@dataclass(frozen=True)
class Hardlink(Op):
    existing: bytes = b""

    def create(self, parent_fd: int, name: bytes) -> None:
        raise AssertionError("applied by _apply_one")


def file(
    path: Pathish,
    data: bytes | str = b"",
    mode: int = 0o644,
    uid: int | None = None,
    gid: int | None = None,
    mtime: float | None = None,
    xattrs: dict[str, bytes] | None = None,
) -> Op:
    """A regular file (replaces the content of an existing one)."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return File(_rel(path), mode, uid, gid, _ns(mtime), tuple(sorted((xattrs or {}).items())), raw)


def sparse(
    path: Pathish,
    size: int,
    chunks: dict[int, bytes] | None = None,
    mode: int = 0o644,
    uid: int | None = None,
    gid: int | None = None,
    mtime: float | None = None,
) -> Op:
    """A sparse regular file of *size* bytes (``truncate``), with data written at the given offsets."""
    return Sparse(_rel(path), mode, uid, gid, _ns(mtime), (), size, tuple(sorted((chunks or {}).items())))


def dir(
    path: Pathish,
    mode: int = 0o755,
    uid: int | None = None,
    gid: int | None = None,
    mtime: float | None = None,
    xattrs: dict[str, bytes] | None = None,
) -> Op:
    """A directory (an existing one keeps its content and gets this metadata)."""
    return Dir(_rel(path), mode, uid, gid, _ns(mtime), tuple(sorted((xattrs or {}).items())))


def symlink(
    path: Pathish, target: Pathish, uid: int | None = None, gid: int | None = None, mtime: float | None = None
) -> Op:
    return Symlink(_rel(path), 0o777, uid, gid, _ns(mtime), (), os.fsencode(target))


def fifo(
    path: Pathish,
    mode: int = 0o644,
    uid: int | None = None,
    gid: int | None = None,
    mtime: float | None = None,
) -> Op:
    return Node(_rel(path), mode, uid, gid, _ns(mtime), (), stat.S_IFIFO, 0)


def chardev(path: Pathish, major: int, minor: int, mode: int = 0o644, mtime: float | None = None) -> Op:
    return Node(_rel(path), mode, None, None, _ns(mtime), (), stat.S_IFCHR, os.makedev(major, minor))


def blockdev(path: Pathish, major: int, minor: int, mode: int = 0o644, mtime: float | None = None) -> Op:
    return Node(_rel(path), mode, None, None, _ns(mtime), (), stat.S_IFBLK, os.makedev(major, minor))


def whiteout(path: Pathish, mtime: float | None = None) -> Op:
    """An overlay whiteout: character device 0/0, mode ``c---------``, owner 0:0."""
    return Node(_rel(path), 0o000, 0, 0, _ns(mtime), (), stat.S_IFCHR, os.makedev(0, 0))  # always 0:0


def opaque(
    path: Pathish,
    mode: int = 0o755,
    uid: int | None = None,
    gid: int | None = None,
    mtime: float | None = None,
    xattr: str = OPAQUE_XATTR,
) -> Op:
    """A directory marked opaque (``trusted.overlay.opaque=y``; ``xattr=`` for userxattr mode)."""
    return Dir(_rel(path), mode, uid, gid, _ns(mtime), ((xattr, b"y"),))


def hardlink(path: Pathish, existing: Pathish) -> Op:
    """A second name for an entry created earlier in the same layer."""
    return Hardlink(_rel(path), existing=_rel(existing))


def socket(
    path: Pathish,
    mode: int = 0o755,
    uid: int | None = None,
    gid: int | None = None,
    mtime: float | None = None,
) -> Op:
    """A bound (and then closed) unix socket, as ``xhelper socket`` leaves it."""
    return Socket(_rel(path), mode, uid, gid, _ns(mtime))


def _unlink_if_present(parent_fd: int, name: bytes) -> None:
    with suppress(FileNotFoundError):
        os.unlink(name, dir_fd=parent_fd)


# --- applying ops ----------------------------------------------------------------


def _open_dir(base_fd: int, parts: Sequence[bytes], create: bool) -> int:
    """A descriptor of base/parts..., creating missing directories (0755, root) when asked."""
    fd = os.dup(base_fd)
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    os.chmod(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def apply(target: Path | str, ops: Iterable[Op]) -> None:
    """Apply *ops* to the directory *target* (a layer's ``diff/``, or a ``merged/`` view)."""
    base_fd = os.open(os.fspath(target), _DIR_FLAGS)
    times: list[tuple[bytes, int]] = []
    try:
        for op in ops:
            parts = op.path.split(b"/")
            parent = _open_dir(base_fd, parts[:-1], create=True)
            try:
                if isinstance(op, Hardlink):
                    src = op.existing.split(b"/")
                    src_fd = _open_dir(base_fd, src[:-1], create=False)
                    try:
                        os.link(
                            src[-1], parts[-1], src_dir_fd=src_fd, dst_dir_fd=parent, follow_symlinks=False
                        )
                    finally:
                        os.close(src_fd)
                else:
                    op.create(parent, parts[-1])
                    if op.xattrs and not isinstance(op, File | Dir | Sparse):
                        full = os.path.join(os.fsencode(target), op.path)
                        for key, value in op.xattrs:
                            os.setxattr(full, key, value, follow_symlinks=False)
            finally:
                os.close(parent)
            if op.mtime_ns is not None:
                times.append((op.path, op.mtime_ns))
        for path, ns in times:
            parts = path.split(b"/")
            parent = _open_dir(base_fd, parts[:-1], create=False)
            try:
                os.utime(parts[-1], ns=(ns, ns), dir_fd=parent, follow_symlinks=False)
            finally:
                os.close(parent)
    finally:
        os.close(base_fd)


def write_layer(diff_dir: Path | str, ops: Iterable[Op]) -> None:
    """Create *diff_dir* (0755) if needed and apply *ops* to it, as a layer extraction would."""
    os.makedirs(diff_dir, 0o755, exist_ok=True)
    apply(diff_dir, ops)


# --- a layer as Docker would tar it (for diff ids) -----------------------------------


def _walk_fd(fd: int, rel: bytes) -> Iterator[tuple[int, bytes, bytes, os.stat_result]]:
    """(parent fd, name, relative path, lstat) for everything below *fd*, sorted by name."""
    names = sorted(os.fsencode(e.name) for e in os.scandir(fd))
    for name in names:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        path = rel + b"/" + name if rel else name
        yield fd, name, path, st
        if stat.S_ISDIR(st.st_mode):
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            try:
                yield from _walk_fd(child, path)
            finally:
                os.close(child)


def layer_tar(diff_dir: Path | str) -> tuple[bytes, int]:
    """A deterministic PAX tar of a layer with moby's whiteout conventions, and the content size.

    Whiteouts become empty ``.wh.<name>`` files, opaque directories get a
    ``.wh..wh..opq`` member, hardlinks become link members, sockets are skipped
    (as GNU tar and moby do), only ``security.capability`` xattrs are kept.
    """
    out = io.BytesIO()
    size = 0
    seen: dict[tuple[int, int], str] = {}
    root_fd = os.open(os.fspath(diff_dir), _DIR_FLAGS)
    try:
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for parent_fd, name, path, st in _walk_fd(root_fd, b""):
                info = tarfile.TarInfo(os.fsdecode(path))
                info.mode = st.st_mode & 0o7777
                info.uid, info.gid = st.st_uid, st.st_gid
                info.mtime = st.st_mtime
                fmt = stat.S_IFMT(st.st_mode)
                data = None
                if fmt == stat.S_IFCHR and st.st_rdev == 0:
                    head, _, tail = path.rpartition(b"/")
                    info.name = os.fsdecode((head + b"/" if head else b"") + b".wh." + tail)
                    info.mode = 0
                elif fmt == stat.S_IFSOCK:
                    continue
                elif (st.st_ino, st.st_dev) in seen and fmt != stat.S_IFDIR:
                    info.type = tarfile.LNKTYPE
                    info.linkname = seen[(st.st_ino, st.st_dev)]
                elif fmt == stat.S_IFREG:
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=parent_fd)
                    with builtins.open(fd, "rb") as handle:
                        data = handle.read()
                    info.size = len(data)
                    size += len(data)
                    if st.st_nlink > 1:
                        seen[(st.st_ino, st.st_dev)] = info.name
                elif fmt == stat.S_IFDIR:
                    info.type = tarfile.DIRTYPE
                elif fmt == stat.S_IFLNK:
                    info.type = tarfile.SYMTYPE
                    info.linkname = os.fsdecode(os.readlink(name, dir_fd=parent_fd))
                elif fmt == stat.S_IFIFO:
                    info.type = tarfile.FIFOTYPE
                elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
                    info.type = tarfile.CHRTYPE if fmt == stat.S_IFCHR else tarfile.BLKTYPE
                    info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
                if fmt in (stat.S_IFREG, stat.S_IFDIR):
                    full = os.path.join(os.fsencode(diff_dir), path)
                    try:
                        cap = os.getxattr(full, "security.capability", follow_symlinks=False)
                        info.pax_headers["SCHILY.xattr.security.capability"] = cap.decode("latin-1")
                    except OSError:
                        pass
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
                if fmt == stat.S_IFDIR:
                    try:
                        full = os.path.join(os.fsencode(diff_dir), path)
                        marked = os.getxattr(full, OPAQUE_XATTR, follow_symlinks=False) == b"y"
                    except OSError:
                        marked = False
                    if marked:
                        wh = tarfile.TarInfo(os.fsdecode(path + b"/.wh..wh..opq"))
                        wh.mtime = st.st_mtime
                        tar.addfile(wh, io.BytesIO(b""))
    finally:
        os.close(root_fd)
    return out.getvalue(), size


# --- a Docker data root ---------------------------------------------------------------


@dataclass(frozen=True)
class ContainerSpec:
    """A container to create: *init* populates its ``-init`` layer (default: what dockerd does),
    *run* is done inside its mounted root. *state*: created (never started), exited or running
    (``merged/`` stays as an empty directory, like in a seized tar of a live host)."""

    image: str
    init: Ops | Action | None = None
    run: Ops | Action | None = None
    state: str | None = None  # default: "exited" when run is given, else "created"
    exit_code: int = 0


@dataclass
class ImageRecord:
    name: str  # repository:tag
    id: str  # sha256:<hex of the config>
    diff_ids: list[str]
    chain_ids: list[str]
    layers: list[str]  # overlay2 cache ids, bottom to top


@dataclass
class ContainerRecord:
    name: str
    id: str
    image: ImageRecord
    mount_id: str  # the RW layer (upperdir)
    init_id: str  # <mount-id>-init
    state: str

    @property
    def chain(self) -> list[str]:
        """Layer ids below the upper, nearest first (init, then the image top to bottom)."""
        return [self.init_id, *reversed(self.image.layers)]


@dataclass
class DataRoot:
    root: Path
    images: dict[str, ImageRecord] = field(default_factory=dict)
    containers: dict[str, ContainerRecord] = field(default_factory=dict)

    def diff(self, layer_id: str) -> Path:
        return self.root / "overlay2" / layer_id / "diff"

    def upper(self, container: str) -> Path:
        return self.diff(self.containers[container].mount_id)


class _Ids:
    """Deterministic stand-ins for Docker's random ids (64 hex) and l/ names (26 base32)."""

    def __init__(self, seed: str) -> None:
        self.seed = seed
        self.count = 0

    def _next(self) -> bytes:
        self.count += 1
        return hashlib.sha256(f"layerlang/{self.seed}/{self.count}".encode()).digest()

    def hex64(self) -> str:
        return self._next().hex()

    def short(self) -> str:
        return base64.b32encode(self._next()[:16]).decode()[:26]


def _mkdir(path: Path, mode: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    return path


def _write(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)


def _iso(seconds: float) -> str:
    import datetime

    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


class _Builder:
    def __init__(self, root: Path, seed: str, clock: float) -> None:
        self.root = root
        self.ids = _Ids(seed)
        self.clock = clock
        self.overlay2 = _mkdir(root / "overlay2", 0o710)
        _mkdir(self.overlay2 / "l", 0o700)
        self.image_dir = _mkdir(root / "image", 0o700) / "overlay2"
        _mkdir(self.image_dir, 0o700)
        self.layerdb = _mkdir(self.image_dir / "layerdb", 0o700)
        _mkdir(self.layerdb / "sha256", 0o755)
        _mkdir(self.layerdb / "mounts", 0o755)
        _mkdir(self.image_dir / "imagedb" / "content" / "sha256", 0o700)
        _mkdir(self.image_dir / "imagedb" / "metadata" / "sha256", 0o700)
        _mkdir(self.image_dir / "distribution", 0o700)
        _mkdir(root / "containers", 0o710)
        _mkdir(root / "volumes", 0o701)
        _mkdir(root / "tmp", 0o700)
        self.links: dict[str, str] = {}  # layer id -> short name
        self.by_chain: dict[str, str] = {}  # chain id -> layer id

    def tick(self) -> str:
        self.clock += 1.25
        return _iso(self.clock)

    def new_layer(self, layer_id: str, lower_ids: Sequence[str], *, committed: bool) -> Path:
        """overlay2/<id>/{diff,link,lower,work,committed} and l/<short> -> ../<id>/diff."""
        layer = _mkdir(self.overlay2 / layer_id, 0o710)
        _mkdir(layer / "diff", 0o755)
        short = self.ids.short()
        _write(layer / "link", short)
        os.symlink(f"../{layer_id}/diff", self.overlay2 / "l" / short)
        self.links[layer_id] = short
        if lower_ids:
            _write(layer / "lower", ":".join(f"l/{self.links[i]}" for i in lower_ids))
            _mkdir(layer / "work", 0o700)
        if committed:
            _write(layer / "committed", b"", 0o600)
        return layer

    def image(self, name: str, layers: Sequence[Ops]) -> ImageRecord:
        if ":" not in name.rpartition("/")[2]:
            name += ":latest"
        diff_ids: list[str] = []
        chain_ids: list[str] = []
        layer_ids: list[str] = []
        for ops in layers:
            cache_id = self.ids.hex64()
            layer = self.new_layer(cache_id, list(reversed(layer_ids)), committed=True)
            write_layer(layer / "diff", ops)
            tar, size = layer_tar(layer / "diff")
            diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()
            parent = chain_ids[-1] if chain_ids else None
            chain_id = (
                diff_id
                if parent is None
                else "sha256:" + hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()
            )
            if chain_id in self.by_chain:  # the same layer already exists: Docker shares it
                self._drop_layer(cache_id)
                cache_id = self.by_chain[chain_id]
            else:
                self.by_chain[chain_id] = cache_id
                record = _mkdir(self.layerdb / "sha256" / chain_id.removeprefix("sha256:"), 0o700)
                _write(record / "cache-id", cache_id)
                _write(record / "diff", diff_id)
                _write(record / "size", str(size))
                if parent is not None:
                    _write(record / "parent", parent)
            diff_ids.append(diff_id)
            chain_ids.append(chain_id)
            layer_ids.append(cache_id)
        config = {
            "architecture": "amd64",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/bin/sh"],
                "Labels": {"org.example.layerlang": name},
            },
            "created": self.tick(),
            "docker_version": DOCKER_VERSION,
            "history": [
                {"created": self.tick(), "created_by": f"layerlang layer {i}"} for i in range(len(layers))
            ],
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        raw = json.dumps(config, separators=(",", ":")).encode()
        image_id = "sha256:" + hashlib.sha256(raw).hexdigest()
        _write(
            self.image_dir / "imagedb" / "content" / "sha256" / image_id.removeprefix("sha256:"), raw, 0o600
        )
        return ImageRecord(name, image_id, diff_ids, chain_ids, layer_ids)

    def _drop_layer(self, layer_id: str) -> None:
        import shutil

        short = self.links.pop(layer_id)
        os.unlink(self.overlay2 / "l" / short)
        shutil.rmtree(self.overlay2 / layer_id)

    def container(self, name: str, spec: ContainerSpec, image: ImageRecord) -> ContainerRecord:
        state = spec.state or ("exited" if spec.run is not None else "created")
        container_id = self.ids.hex64()
        mount_id = self.ids.hex64()
        init_id = mount_id + "-init"
        image_lowers = list(reversed(image.layers))
        self.new_layer(init_id, image_lowers, committed=True)
        _run_in(self.root, init_id, docker_init if spec.init is None else spec.init)
        self.new_layer(mount_id, [init_id, *image_lowers], committed=False)
        if state != "created":
            _run_in(self.root, mount_id, spec.run if spec.run is not None else [])
            if state == "running":
                _mkdir(self.overlay2 / mount_id / "merged", 0o755)
        record = _mkdir(self.layerdb / "mounts" / container_id, 0o755)
        _write(record / "mount-id", mount_id)
        _write(record / "init-id", init_id)
        _write(record / "parent", image.chain_ids[-1])
        self._container_files(container_id, name, image, state, spec.exit_code)
        return ContainerRecord(name, container_id, image, mount_id, init_id, state)

    def _container_files(self, cid: str, name: str, image: ImageRecord, state: str, exit_code: int) -> None:
        cdir = _mkdir(self.root / "containers" / cid, 0o710)
        _mkdir(cdir / "checkpoints", 0o700)
        created = self.tick()
        started = self.tick() if state != "created" else _ZERO_TIME
        finished = self.tick() if state == "exited" else _ZERO_TIME
        config = {
            "StreamConfig": {},
            "State": {
                "Running": state == "running",
                "Paused": False,
                "Restarting": False,
                "OOMKilled": False,
                "RemovalInProgress": False,
                "Dead": False,
                "Pid": 4242 if state == "running" else 0,
                "ExitCode": exit_code,
                "Error": "",
                "StartedAt": started,
                "FinishedAt": finished,
                "Health": None,
            },
            "ID": cid,
            "Created": created,
            "Managed": False,
            "Path": "/bin/sh",
            "Args": [],
            "Config": {
                "Hostname": cid[:12],
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/bin/sh"],
                "Image": image.name,
                "Labels": {"org.example.layerlang": name},
            },
            "Image": image.id,
            "LogPath": f"/var/lib/docker/containers/{cid}/{cid}-json.log",
            "Name": "/" + name,
            "Driver": "overlay2",
            "OS": "linux",
            "RestartCount": 0,
            "HasBeenStartedBefore": state != "created",
            "MountPoints": {},
        }
        _write(cdir / "config.v2.json", json.dumps(config, separators=(",", ":")), 0o600)
        hostconfig = {
            "Binds": None,
            "LogConfig": {"Type": "json-file", "Config": {}},
            "NetworkMode": "none",
            "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
            "Runtime": "runc",
        }
        _write(cdir / "hostconfig.json", json.dumps(hostconfig, separators=(",", ":")))
        if state != "created":
            _mkdir(cdir / "mounts", 0o710)
            _write(cdir / "hostname", cid[:12] + "\n")
            _write(cdir / "hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
            _write(cdir / "resolv.conf", "nameserver 127.0.0.1\n")
            _write(
                cdir / "resolv.conf.hash", "sha256:" + hashlib.sha256(b"nameserver 127.0.0.1\n").hexdigest()
            )
            _write(cdir / f"{cid}-json.log", b"", 0o640)

    def repositories(self, images: dict[str, ImageRecord]) -> None:
        repos: dict[str, dict[str, str]] = {}
        for record in images.values():
            repo = record.name.rpartition(":")[0]
            repos.setdefault(repo, {})[record.name] = record.id
        _write(
            self.image_dir / "repositories.json", json.dumps({"Repositories": repos}, separators=(",", ":"))
        )


def make_data_root(
    root: Path | str,
    images: dict[str, Sequence[Ops]] | None = None,
    containers: dict[str, tuple[str, Ops | Action | None, Ops | Action | None] | ContainerSpec] | None = None,
    *,
    seed: str = "0",
    clock: float = 1_704_067_200.0,
) -> DataRoot:
    """Write a Docker 20.10 ``overlay2`` data root at *root* and return its ids.

    *images*: ``{"repo:tag": [layer ops, bottom first]}``; layers with the same
    chain id are shared between images, as Docker's layer store does.
    *containers*: ``{name: (image, init, run)}`` or ``{name: ContainerSpec}``.
    ``init`` None means dockerd's own ``-init`` content (:func:`docker_init`);
    ``run`` is a list of ops or a callable receiving the ``merged/`` path, both
    applied through a real overlay mount of the container (needs root).
    ids are deterministic for one *seed*; timestamps in JSON start at *clock*.
    """
    root = Path(root)
    _mkdir(root, 0o710)
    builder = _Builder(root, seed, clock)
    result = DataRoot(root)
    for name, layers in (images or {}).items():
        record = builder.image(name, layers)
        result.images[record.name] = record
    builder.repositories(result.images)
    for name, spec in (containers or {}).items():
        if not isinstance(spec, ContainerSpec):
            spec = ContainerSpec(*spec)
        image_name = spec.image if spec.image in result.images else spec.image + ":latest"
        result.containers[name] = builder.container(name, spec, result.images[image_name])
    return result


# --- the kernel -------------------------------------------------------------------------


def docker_init(merged: Path) -> None:
    """What dockerd's ``setupInitLayer`` (moby daemon/initlayer) does in the mounted ``-init`` layer."""
    entries = {
        "/dev/pts": "dir",
        "/dev/shm": "dir",
        "/proc": "dir",
        "/sys": "dir",
        "/.dockerenv": "file",
        "/etc/resolv.conf": "file",
        "/etc/hosts": "file",
        "/etc/hostname": "file",
        "/dev/console": "file",
        "/etc/mtab": "/proc/mounts",
    }
    for path, kind in entries.items():
        prev = str(merged)
        for part in path.strip("/").split("/"):
            prev = os.path.join(prev, part)
            with suppress(OSError):
                os.unlink(prev)  # fails on directories, as in moby
        full = str(merged) + path
        if os.path.exists(full):
            continue
        _mkdirs_root(os.path.dirname(full))
        if kind == "dir":
            _mkdirs_root(full)
        elif kind == "file":
            fd = os.open(full, os.O_CREAT | os.O_WRONLY, 0o755)
            os.fchown(fd, 0, 0)
            os.close(fd)
        else:
            os.symlink(kind, full)


def _mkdirs_root(path: str) -> None:
    if os.path.isdir(path):
        return
    _mkdirs_root(os.path.dirname(path))
    os.mkdir(path, 0o755)
    os.chown(path, 0, 0)


def _run_in(root: Path, layer_id: str, what: Ops | Action, driver: str = "overlay2") -> None:
    with mount_layer(root, layer_id, driver=driver) as merged:
        if callable(what):
            what(merged)
        else:
            apply(merged, what)


def _container_layer(root: Path, container: str | ContainerRecord) -> str:
    if isinstance(container, ContainerRecord):
        return container.mount_id
    mounts = root / "image" / "overlay2" / "layerdb" / "mounts"
    if (mounts / container / "mount-id").is_file():
        return (mounts / container / "mount-id").read_text().strip()
    for config in (root / "containers").glob("*/config.v2.json"):
        if json.loads(config.read_bytes()).get("Name") == "/" + container:
            return (mounts / config.parent.name / "mount-id").read_text().strip()
    raise KeyError(f"no container {container!r} in {root}")


@contextmanager
def mount_layer(
    root: Path | str,
    layer_id: str,
    *,
    options: str = "",
    relative: bool | None = None,
    driver: str = "overlay2",
) -> Iterator[Path]:
    """Mount layer *layer_id* of data root *root* as overlay upper, as dockerd's overlay2 driver does.

    ``mount -t overlay overlay -o lowerdir=<l/ links>,upperdir=<id>/diff,workdir=<id>/work <id>/merged``,
    run with cwd ``overlay2/``. Like moby's driver (``overlay2.Get``) the lowerdirs are the ``l/``
    links as absolute paths, unless the option string would not fit in a page: then the short
    relative form (``l/A:l/B``, ``<id>/diff``), which the kernel resolves against the cwd and
    shows verbatim in mountinfo. ``relative=True``/``False`` forces one form. No other options
    unless *options* adds some. Yields ``overlay2/<id>/merged``; unmounts and removes it afterwards.
    ``driver="overlay"`` does the same in a containers/storage root (``overlay/``).
    """
    overlay2 = Path(root).absolute() / driver
    layer = overlay2 / layer_id
    lower = (layer / "lower").read_text()
    work = layer / "work"
    if not work.exists():
        _mkdir(work, 0o700)
    merged = layer / "merged"
    created = not merged.exists()
    if created:
        _mkdir(merged, 0o700)
    absolute = ":".join(f"{overlay2}/{part}" for part in lower.split(":"))
    opts = f"lowerdir={absolute},upperdir={layer}/diff,workdir={layer}/work"
    if relative or (relative is None and len(opts) + len(options) + 1 > os.sysconf("SC_PAGESIZE") - 1):
        opts = f"lowerdir={lower},upperdir={layer_id}/diff,workdir={layer_id}/work"
    if options:
        opts += "," + options
    done = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", opts, f"{layer_id}/merged"],
        cwd=overlay2,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        if created:
            merged.rmdir()
        raise OSError(f"mount of layer {layer_id} failed: {done.stderr.strip()}")
    try:
        yield merged
    finally:
        subprocess.run(["umount", str(merged)], check=True, capture_output=True)
        if created:
            merged.rmdir()


@contextmanager
def mounted(
    root: Path | str, container: str | ContainerRecord, *, options: str = "", relative: bool | None = None
) -> Iterator[Path]:
    """Mount a container's root (by name, container id or record) and yield its ``merged/`` path.

    Works on any Docker data root, e.g. a copy of the docker-a corpus::

        with mounted(copy, "a-web") as merged:
            (merged / "etc/motd").unlink()
    """
    root = Path(root)
    with mount_layer(root, _container_layer(root, container), options=options, relative=relative) as merged:
        yield merged


__all__ = [
    "ContainerRecord",
    "ContainerSpec",
    "DataRoot",
    "ImageRecord",
    "Op",
    "apply",
    "blockdev",
    "chardev",
    "dir",
    "docker_init",
    "fifo",
    "file",
    "hardlink",
    "layer_tar",
    "make_data_root",
    "mount_layer",
    "mounted",
    "opaque",
    "scan",
    "socket",
    "sparse",
    "symlink",
    "whiteout",
    "write_layer",
]


# --- an independent reference reading -------------------------------------------------


def scan(diff_dir: Path | str, *, read: bool = True) -> dict[bytes, dict[str, object]]:
    """Every entry below *diff_dir* read with plain ``lstat``/``llistxattr``/``readlink`` (never o2f).

    Keys are layer paths (``b"/"`` is the diff root itself); values carry the
    snapshot's entry fields (kind, mode, uid, gid, size, mtime_ns, atime_ns,
    ctime_ns, inode, dev, nlink, rdev_major, rdev_minor, target, xattrs, blake3, head).
    Everything is lstat-ed before any file is read, directories are listed and
    files opened with ``O_NOATIME``, so the recorded atimes are those before the
    scan. ``read=False`` reads neither symlinks (``readlink`` updates their
    atime) nor file contents: ``target``, ``blake3`` and ``head`` stay None.
    """
    from blake3 import blake3

    kinds = {
        stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFCHR: "char",
        stat.S_IFBLK: "block", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket",
    }  # fmt: skip
    root = os.fsencode(os.path.abspath(diff_dir))
    out: dict[bytes, dict[str, object]] = {}
    pending = [b"/"]
    while pending:
        path = pending.pop()
        full = root if path == b"/" else root + path
        st = os.lstat(full)
        kind = kinds[stat.S_IFMT(st.st_mode)]
        device = kind in ("char", "block")
        names = sorted(os.listxattr(full, follow_symlinks=False))
        out[path] = {
            "kind": kind,
            "mode": st.st_mode & 0o7777,
            "uid": st.st_uid,
            "gid": st.st_gid,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "atime_ns": st.st_atime_ns,
            "ctime_ns": st.st_ctime_ns,
            "inode": st.st_ino,
            "dev": st.st_dev,
            "nlink": st.st_nlink,
            "rdev_major": os.major(st.st_rdev) if device else None,
            "rdev_minor": os.minor(st.st_rdev) if device else None,
            "target": os.readlink(full) if kind == "symlink" and read else None,
            "xattrs": tuple((n, os.getxattr(full, n, follow_symlinks=False)) for n in names),
            "blake3": None,
            "head": None,
        }
        if kind == "dir":
            prefix = b"" if path == b"/" else path
            fd = os.open(full, _DIR_FLAGS | getattr(os, "O_NOATIME", 0))
            try:
                pending.extend(prefix + b"/" + os.fsencode(name) for name in os.listdir(fd))
            finally:
                os.close(fd)
    if read:
        for path, row in out.items():
            if row["kind"] == "file":
                fd = os.open(root + path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NOATIME", 0))
                hasher = blake3()
                with builtins.open(fd, "rb") as handle:
                    row["head"] = handle.read(16)  # the file's magic, as o2f keeps it (entries.head)
                    hasher.update(row["head"])
                    while chunk := handle.read(1 << 20):
                        hasher.update(chunk)
                row["blake3"] = hasher.hexdigest()
    return out


# --- a containers/storage root (Podman, CRI-O, buildah) ----------------------------------


@dataclass
class StorageContainer:
    name: str
    id: str
    image: ImageRecord
    layer_id: str  # the RW layer (upperdir); no -init layer in containers/storage
    state: str

    @property
    def chain(self) -> list[str]:
        """Layer ids below the upper, nearest first (the image, top to bottom)."""
        return list(reversed(self.image.layers))


@dataclass
class StorageRoot:
    root: Path
    images: dict[str, ImageRecord] = field(default_factory=dict)
    containers: dict[str, StorageContainer] = field(default_factory=dict)

    def diff(self, layer_id: str) -> Path:
        return self.root / "overlay" / layer_id / "diff"

    def upper(self, container: str) -> Path:
        return self.diff(self.containers[container].layer_id)


def podman_init(merged: Path) -> None:
    """What Podman 4.3 leaves in a container's upperdir when it starts it (podman-a README,
    "containers/storage layout observed"): empty 0755 mount-point files ``/etc/hosts``,
    ``/etc/hostname`` and ``/run/.containerenv`` where the image has none, and
    ``/etc/mtab -> /proc/mounts``. The real contents live in the runroot, bind-mounted over them."""
    for path in ("/etc/hosts", "/etc/hostname", "/run/.containerenv"):
        full = str(merged) + path
        if os.path.lexists(full):
            continue
        _mkdirs_root(os.path.dirname(full))
        fd = os.open(full, os.O_CREAT | os.O_WRONLY, 0o755)
        os.fchown(fd, 0, 0)
        os.close(fd)
    mtab = str(merged) + "/etc/mtab"
    if not os.path.lexists(mtab):
        os.symlink("/proc/mounts", mtab)


class _StorageBuilder:
    """containers/storage's overlay driver layout, as Podman 4.3 / buildah 1.28 write it."""

    def __init__(self, root: Path, seed: str, clock: float) -> None:
        self.root = root
        self.ids = _Ids(seed)
        self.clock = clock
        self.overlay = _mkdir(root / "overlay", 0o700)
        _mkdir(self.overlay / "l", 0o755)
        for name in ("overlay-layers", "overlay-images", "overlay-containers", "libpod", "volumes", "tmp"):
            _mkdir(root / name, 0o700)
        self.links: dict[str, str] = {}
        self.by_chain: dict[str, str] = {}
        self.layers: list[dict[str, object]] = []
        self.images: list[dict[str, object]] = []
        self.containers: list[dict[str, object]] = []

    def tick(self) -> str:
        self.clock += 1.25
        return _iso(self.clock)

    def new_layer(self, layer_id: str, lower_ids: Sequence[str]) -> Path:
        """overlay/<id>/{diff,link,lower|empty,work} and l/<short> -> ../<id>/diff (lower: no newline)."""
        layer = _mkdir(self.overlay / layer_id, 0o700)
        _mkdir(layer / "diff", 0o755)
        short = self.ids.short()
        _write(layer / "link", short)
        os.symlink(f"../{layer_id}/diff", self.overlay / "l" / short)
        self.links[layer_id] = short
        if lower_ids:
            _write(layer / "lower", ":".join(f"l/{self.links[i]}" for i in lower_ids))
        else:
            _mkdir(layer / "empty", 0o700)
        _mkdir(layer / "work", 0o700)
        return layer

    def image(self, name: str, layers: Sequence[Ops]) -> ImageRecord:
        if ":" not in name.rpartition("/")[2]:
            name += ":latest"
        diff_ids: list[str] = []
        chain_ids: list[str] = []
        layer_ids: list[str] = []
        for ops in layers:
            layer_id = self.ids.hex64()
            layer = self.new_layer(layer_id, list(reversed(layer_ids)))
            write_layer(layer / "diff", ops)
            tar, _size = layer_tar(layer / "diff")
            diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()
            parent = chain_ids[-1] if chain_ids else None
            chain_id = (
                diff_id
                if parent is None
                else "sha256:" + hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()
            )
            if chain_id in self.by_chain:  # containers/storage reuses a layer it already has
                self._drop_layer(layer_id)
                layer_id = self.by_chain[chain_id]
            else:
                self.by_chain[chain_id] = layer_id
                record: dict[str, object] = {"id": layer_id}
                if layer_ids:
                    record["parent"] = layer_ids[-1]
                record.update(
                    {
                        "created": self.tick(),
                        "compressed-diff-digest": diff_id,
                        "compressed-size": len(tar),
                        "diff-digest": diff_id,
                        "diff-size": len(tar),
                        "uidset": [0],
                        "gidset": [0],
                    }
                )
                self.layers.append(record)
            diff_ids.append(diff_id)
            chain_ids.append(chain_id)
            layer_ids.append(layer_id)
        config = {
            "architecture": "amd64",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/bin/sh"],
                "Labels": {"org.example.layerlang": name},
            },
            "created": self.tick(),
            "history": [
                {"created": self.tick(), "created_by": f"layerlang layer {i}"} for i in range(len(layers))
            ],
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        raw = json.dumps(config, separators=(",", ":")).encode()
        image_hex = hashlib.sha256(raw).hexdigest()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"digest": "sha256:" + image_hex, "size": len(raw)},
                "layers": [{"digest": d} for d in diff_ids],
            },
            separators=(",", ":"),
        ).encode()
        manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        image_dir = _mkdir(self.root / "overlay-images" / image_hex, 0o700)
        blobs = {"sha256:" + image_hex: raw, "manifest-" + manifest_digest: manifest, "manifest": manifest}
        for key, blob in blobs.items():
            _write(image_dir / ("=" + base64.b64encode(key.encode()).decode()), blob, 0o600)
        _write(image_dir / "manifest", manifest, 0o600)
        self.images.append(
            {
                "id": image_hex,
                "digest": manifest_digest,
                "names": [name],
                "layer": layer_ids[-1],
                "metadata": "{}",
                "big-data-names": list(blobs),
                "big-data-sizes": {k: len(v) for k, v in blobs.items()},
                "big-data-digests": {k: "sha256:" + hashlib.sha256(v).hexdigest() for k, v in blobs.items()},
                "created": config["created"],
            }
        )
        return ImageRecord(name, "sha256:" + image_hex, diff_ids, chain_ids, layer_ids)

    def _drop_layer(self, layer_id: str) -> None:
        import shutil

        short = self.links.pop(layer_id)
        os.unlink(self.overlay / "l" / short)
        shutil.rmtree(self.overlay / layer_id)

    def container(self, name: str, spec: ContainerSpec, image: ImageRecord) -> StorageContainer:
        state = spec.state or ("exited" if spec.run is not None else "created")
        container_id = self.ids.hex64()
        layer_id = self.ids.hex64()
        self.new_layer(layer_id, list(reversed(image.layers)))
        self.layers.append(
            {"id": layer_id, "names": [f"{name}-layer"], "parent": image.layers[-1], "created": self.tick()}
        )
        if state != "created":
            init = podman_init if spec.init is None else spec.init
            _run_in(self.root, layer_id, init, driver="overlay")
            _run_in(self.root, layer_id, spec.run if spec.run is not None else [], driver="overlay")
        if state in ("created", "running"):
            _mkdir(self.overlay / layer_id / "merged", 0o700)
        created = self.tick()
        metadata = {
            "image-name": image.name,
            "image-id": image.id.removeprefix("sha256:"),
            "name": name,
            "created-at": int(self.clock),
        }
        self.containers.append(
            {
                "id": container_id,
                "names": [name],
                "image": image.id.removeprefix("sha256:"),
                "layer": layer_id,
                "metadata": json.dumps(metadata, separators=(",", ":")),
                "created": created,
                "flags": {"MountLabel": "", "ProcessLabel": ""},
            }
        )
        _mkdir(self.root / "overlay-containers" / container_id / "userdata", 0o700)
        return StorageContainer(name, container_id, image, layer_id, state)

    def finish(self) -> None:
        """The three JSON stores, as containers/storage writes them (one line, no newline)."""
        for path, records in (
            ("overlay-layers/layers.json", self.layers),
            ("overlay-images/images.json", self.images),
            ("overlay-containers/containers.json", self.containers),
        ):
            _write(self.root / path, json.dumps(records, separators=(",", ":")), 0o600)


def make_storage_root(
    root: Path | str,
    images: dict[str, Sequence[Ops]] | None = None,
    containers: dict[str, tuple[str, Ops | Action | None, Ops | Action | None] | ContainerSpec] | None = None,
    *,
    seed: str = "0",
    clock: float = 1_704_067_200.0,
) -> StorageRoot:
    """Write a containers/storage root (Podman 4.3's ``/var/lib/containers/storage``) at *root*.

    The layout facts of ``shared/corpora/podman-a/README.md``: ``overlay/<id>/{diff,link,lower,work}``
    (the bottom layer has ``empty/`` instead of ``lower``; no ``-init`` layer),
    ``overlay/l/<short>``, ``overlay-layers/layers.json`` (container layers named
    ``<name>-layer``), ``overlay-images/images.json`` with the config as big-data item
    ``sha256:<image-id>`` (file ``=<base64(key)>``), ``overlay-containers/containers.json``.
    *images* and *containers* as for :func:`make_data_root`; a container's ``init`` is what Podman
    does in the upperdir when it starts it (default :func:`podman_init`), applied through the same
    real overlay mount as ``run``. Created and running containers keep an empty ``merged/``.

    Not reproduced: ``<id>.tar-split.gz`` and ``libpod/bolt_state.db`` (so states and exit
    codes are unknown to o2f), the runroot.
    """
    root = Path(root)
    _mkdir(root, 0o700)
    builder = _StorageBuilder(root, seed, clock)
    result = StorageRoot(root)
    for name, layers in (images or {}).items():
        record = builder.image(name, layers)
        result.images[record.name] = record
    for name, spec in (containers or {}).items():
        if not isinstance(spec, ContainerSpec):
            spec = ContainerSpec(*spec)
        image_name = spec.image if spec.image in result.images else spec.image + ":latest"
        result.containers[name] = builder.container(name, spec, result.images[image_name])
    builder.finish()
    return result


__all__ += ["StorageContainer", "StorageRoot", "make_storage_root", "podman_init"]


# --- a containerd root (overlayfs snapshotter) --------------------------------------------


CONTAINERD_SNAPSHOTTER = "io.containerd.snapshotter.v1.overlayfs"
_GO_YEAR1_TO_UNIX = 62_135_596_800  # seconds from 0001-01-01 to 1970-01-01 (Go's time epoch)


def uvarint_bytes(value: int) -> bytes:
    """Go ``binary.PutUvarint``."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def varint_bytes(value: int) -> bytes:
    """Go ``binary.PutVarint`` (zigzag), as containerd stores sizes and its schema version."""
    return uvarint_bytes(value << 1 if value >= 0 else (~value << 1) | 1)


def go_time_bytes(seconds: float) -> bytes:
    """Go ``time.MarshalBinary`` (version 1) of a UTC time, as containerd stores createdat/updatedat."""
    ns = round(seconds * 1_000_000_000)
    return struct.pack(">bqih", 1, ns // 1_000_000_000 + _GO_YEAR1_TO_UNIX, ns % 1_000_000_000, -1)


def protobuf_any(type_url: str, value: bytes) -> bytes:
    """A ``google.protobuf.Any`` (field 1 type_url, field 2 value), as containerd stores the spec."""
    url = type_url.encode()
    return b"\x0a" + uvarint_bytes(len(url)) + url + b"\x12" + uvarint_bytes(len(value)) + value


@dataclass
class ContainerdImage:
    name: str  # e.g. docker.io/library/app:1
    config_digest: str  # sha256:<hex of the config>: the image id
    manifest_digest: str
    diff_ids: list[str]
    chain_ids: list[str]
    snapshots: list[str]  # snapshot ids (snapshots/<id>), bottom to top


@dataclass
class ContainerdContainer:
    name: str  # the container id within its namespace
    namespace: str
    image: ContainerdImage
    snapshot_id: str  # the Active snapshot: its fs/ is the upperdir
    state: str

    @property
    def chain(self) -> list[str]:
        """Snapshot ids below the upper, nearest first (the image, top to bottom)."""
        return list(reversed(self.image.snapshots))


@dataclass
class ContainerdRoot:
    root: Path
    namespace: str
    images: dict[str, ContainerdImage] = field(default_factory=dict)
    containers: dict[str, ContainerdContainer] = field(default_factory=dict)
    snapshots: dict[str, str] = field(default_factory=dict)  # key -> id of the snapshots no container uses

    def fs(self, snapshot_id: str) -> Path:
        return self.root / CONTAINERD_SNAPSHOTTER / "snapshots" / snapshot_id / "fs"

    def upper(self, container: str) -> Path:
        return self.fs(self.containers[container].snapshot_id)


class _ContainerdBuilder:
    """containerd 1.6's overlayfs snapshotter and bolt metadata store (containerd-a README)."""

    def __init__(self, root: Path, namespace: str, clock: float) -> None:
        self.root = root
        self.ns = namespace
        self.clock = clock
        self.snapshots = _mkdir(_mkdir(root / CONTAINERD_SNAPSHOTTER, 0o700) / "snapshots", 0o700)
        self.blobs = _mkdir(root / "io.containerd.content.v1.content" / "blobs" / "sha256", 0o755)
        _mkdir(root / "io.containerd.content.v1.content" / "ingest", 0o700)
        _mkdir(root / "io.containerd.metadata.v1.bolt", 0o711)
        _mkdir(root / "tmpmounts", 0o700)
        self.next_id = 0  # backend ids: snapshots/<id>
        self.next_n = 0  # the namespace's counter in backend keys "<ns>/<n>/<key>"
        self.backend: dict[bytes, object] = {}  # backend key -> record (a boltwriter.Sub)
        self.parents: dict[bytes, bytes] = {}
        self.client: dict[str, dict[str, object]] = {}  # client key -> fields, for meta.db
        self.by_chain: dict[str, str] = {}  # chain id -> snapshot id
        self.key_of: dict[str, str] = {}  # snapshot id -> backend key
        self.content: dict[str, dict[str, str]] = {}  # digest -> labels
        self.images: dict[str, ContainerdImage] = {}
        self.containers: dict[str, tuple[ContainerdContainer, str]] = {}

    def tick(self) -> bytes:
        self.clock += 0.75
        return go_time_bytes(self.clock)

    def blob(self, data: bytes, labels: dict[str, str] | None = None) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        _write(self.blobs / digest.removeprefix("sha256:"), data, 0o444)
        self.content[digest] = labels or {}
        return digest

    def snapshot(self, key: str, kind: int, parent_id: str | None, *, size: int | None = None) -> str:
        from tests.boltwriter import Sub

        self.next_id += 1
        self.next_n += 2 if kind == 3 else 1  # an unpack uses an extract key, then the commit
        snapshot_id = str(self.next_id)
        directory = _mkdir(self.snapshots / snapshot_id, 0o700)
        _mkdir(directory / "fs", 0o755)
        if kind != 1:
            _mkdir(directory / "work", 0o700)
        backend_key = f"{self.ns}/{self.next_n}/{key}".encode()
        stamp = self.tick()
        fields: dict[bytes, object] = {
            b"id": uvarint_bytes(self.next_id),
            b"kind": bytes([kind]),
            b"createdat": stamp,
            b"updatedat": stamp,
        }
        if parent_id is not None:
            fields[b"parent"] = self.key_of[parent_id].encode()
            key_bytes = uvarint_bytes(int(parent_id)) + b"\x00" + uvarint_bytes(self.next_id)
            self.parents[key_bytes] = backend_key
        if kind == 3:
            fields[b"size"] = varint_bytes(size or 0)
            fields[b"inodes"] = varint_bytes(1)
        self.backend[backend_key] = Sub(fields)
        self.key_of[snapshot_id] = backend_key.decode()
        parent_key = None
        if parent_id is not None:
            parent_key = self.key_of[parent_id].split("/", 2)[2]
            self.client[parent_key].setdefault("children", set()).add(key)  # type: ignore[union-attr]
        self.client[key] = {"name": backend_key, "parent": parent_key, "stamp": stamp}
        return snapshot_id

    def image(self, name: str, layers: Sequence[Ops]) -> ContainerdImage:
        diff_ids: list[str] = []
        chains: list[str] = []
        ids: list[str] = []
        manifest_layers = []
        for ops in layers:
            staging = self.root.parent / f".layer-{len(self.content)}"
            write_layer(staging, ops)
            tar, _size = layer_tar(staging)
            subprocess.run(["rm", "-rf", str(staging)], check=True)
            diff_id = self.blob(tar)
            self.content[diff_id] = {"containerd.io/uncompressed": diff_id}
            manifest_layers.append(
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar",
                    "size": len(tar),
                    "digest": diff_id,
                }
            )
            chain = (
                diff_id
                if not chains
                else "sha256:" + hashlib.sha256(f"{chains[-1]} {diff_id}".encode()).hexdigest()
            )
            if chain not in self.by_chain:  # containerd unpacks a chain once per namespace
                snapshot_id = self.snapshot(chain, 3, ids[-1] if ids else None, size=len(tar))
                write_layer(self.snapshots / snapshot_id / "fs", ops)  # the applier's result
                self.by_chain[chain] = snapshot_id
            diff_ids.append(diff_id)
            chains.append(chain)
            ids.append(self.by_chain[chain])
        config = {
            "architecture": "amd64",
            "config": {"Cmd": ["/bin/sh"], "Labels": {"org.example.layerlang": name}},
            "created": _iso(self.clock),
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        raw = json.dumps(config, separators=(",", ":")).encode()
        config_digest = self.blob(raw, {"containerd.io/gc.ref.snapshot.overlayfs": chains[-1]})
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "size": len(raw),
                    "digest": config_digest,
                },
                "layers": manifest_layers,
            },
            separators=(",", ":"),
        ).encode()
        labels = {"containerd.io/gc.ref.content.config": config_digest}
        labels.update({f"containerd.io/gc.ref.content.l.{i}": d for i, d in enumerate(diff_ids)})
        manifest_digest = self.blob(manifest, labels)
        record = ContainerdImage(name, config_digest, manifest_digest, diff_ids, chains, ids)
        self.images[name] = record
        return record

    def container(self, name: str, spec: ContainerSpec, image: ContainerdImage) -> ContainerdContainer:
        state = spec.state or ("exited" if spec.run is not None else "created")
        snapshot_id = self.snapshot(name, 2, image.snapshots[-1])
        record = ContainerdContainer(name, self.ns, image, snapshot_id, state)
        if state != "created":
            for what in (spec.init, spec.run):
                if what is None:
                    continue
                with mount_snapshot(self.root, record) as merged:
                    if callable(what):
                        what(merged)
                    else:
                        apply(merged, what)
            if spec.run is None and spec.init is None:
                with mount_snapshot(self.root, record):
                    pass  # started: the kernel leaves work/work and the uuid xattr
        if state == "running":
            _mkdir(self.root / "io.containerd.runtime.v2.task" / self.ns / name, 0o700)
        self.containers[name] = (record, state)
        return record

    def finish(self) -> None:
        from tests.boltwriter import Sub, build

        backend = {
            b"v1": Sub(
                {
                    b"parents": Sub(dict(self.parents)),
                    b"snapshots": Sub(dict(self.backend), sequence=self.next_id),  # type: ignore[arg-type]
                }
            )
        }
        _write(
            self.root / CONTAINERD_SNAPSHOTTER / "metadata.db",
            build(backend, page_size=4096, leaf_max=16),
            0o600,
        )
        stamp = self.tick()
        snapshots = {}
        for key, fields in self.client.items():
            record: dict[bytes, object] = {
                b"name": fields["name"],
                b"createdat": fields["stamp"],
                b"updatedat": fields["stamp"],
            }
            if fields.get("parent"):
                record[b"parent"] = str(fields["parent"]).encode()
            children = fields.get("children")
            if children:
                record[b"children"] = Sub({c.encode(): b"" for c in sorted(children)})  # type: ignore[union-attr]
            snapshots[key.encode()] = Sub(record)
        content = {
            digest.encode(): Sub(
                {
                    b"createdat": stamp,
                    b"labels": Sub({k.encode(): v.encode() for k, v in labels.items()}),
                    b"size": varint_bytes((self.blobs / digest.removeprefix("sha256:")).stat().st_size),
                    b"updatedat": stamp,
                }
            )
            for digest, labels in self.content.items()
        }
        images = {
            name.encode(): Sub(
                {
                    b"createdat": stamp,
                    b"target": Sub(
                        {
                            b"digest": image.manifest_digest.encode(),
                            b"mediatype": b"application/vnd.docker.distribution.manifest.v2+json",
                            b"size": varint_bytes(
                                (self.blobs / image.manifest_digest.removeprefix("sha256:")).stat().st_size
                            ),
                        }
                    ),
                    b"updatedat": stamp,
                }
            )
            for name, image in self.images.items()
        }
        containers = {}
        for name, (record, _state) in self.containers.items():
            spec = {
                "ociVersion": "1.0.2-dev",
                "process": {"args": ["/bin/sh"], "cwd": "/"},
                "root": {"path": "rootfs"},
                "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            }
            containers[name.encode()] = Sub(
                {
                    b"createdat": stamp,
                    b"image": record.image.name.encode(),
                    b"labels": Sub({b"org.example.layerlang": name.encode()}),
                    b"runtime": Sub({b"name": b"io.containerd.runc.v2"}),
                    b"snapshotKey": name.encode(),
                    b"snapshotter": b"overlayfs",
                    b"spec": protobuf_any(
                        "types.containerd.io/opencontainers/runtime-spec/1/Spec", json.dumps(spec).encode()
                    ),
                    b"updatedat": stamp,
                }
            )
        namespace = Sub(
            {
                b"containers": Sub(containers),
                b"content": Sub({b"blob": Sub(content), b"ingests": Sub({})}),
                b"images": Sub(images),
                b"leases": Sub({}),
                b"snapshots": Sub({b"overlayfs": Sub(snapshots, sequence=self.next_n)}),
            }
        )
        meta = {b"v1": Sub({self.ns.encode(): namespace, b"version": varint_bytes(3)})}
        _write(
            self.root / "io.containerd.metadata.v1.bolt" / "meta.db",
            build(meta, page_size=4096, leaf_max=16),
            0o600,
        )


@contextmanager
def mount_snapshot(root: Path | str, container: ContainerdContainer) -> Iterator[Path]:
    """Mount a container's Active snapshot as containerd does (``ctr snapshots mounts``):
    ``lowerdir=<parents' fs/, nearest first>,upperdir=<id>/fs,workdir=<id>/work``, absolute paths,
    on ``<root>/tmpmounts/<name>``. Yields the mount point; unmounts and removes it afterwards."""
    snapshots = Path(root).absolute() / CONTAINERD_SNAPSHOTTER / "snapshots"
    lowers = ":".join(str(snapshots / sid / "fs") for sid in container.chain)
    upper = snapshots / container.snapshot_id
    target = _mkdir(Path(root).absolute() / "tmpmounts" / container.name, 0o700)
    opts = f"lowerdir={lowers},upperdir={upper}/fs,workdir={upper}/work"
    done = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", opts, str(target)], capture_output=True, text=True
    )
    if done.returncode != 0:
        target.rmdir()
        raise OSError(f"mount of snapshot {container.snapshot_id} failed: {done.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True, capture_output=True)
        target.rmdir()


def make_containerd_root(
    root: Path | str,
    images: dict[str, Sequence[Ops]] | None = None,
    containers: dict[str, tuple[str, Ops | Action | None, Ops | Action | None] | ContainerSpec] | None = None,
    *,
    snapshots: dict[str, tuple[str, str]] | None = None,
    namespace: str = "default",
    clock: float = 1_704_067_200.0,
) -> ContainerdRoot:
    """Write a containerd root (``/var/lib/containerd``, overlayfs snapshotter) at *root*.

    The layout facts of ``shared/corpora/containerd-a/README.md``: one directory per snapshot,
    ``io.containerd.snapshotter.v1.overlayfs/snapshots/<id>/{fs,work}`` (a committed image layer
    written as containerd's applier leaves it: whiteouts 0/0 devices, opaque directories with
    ``trusted.overlay.opaque=y``), the snapshotter's ``metadata.db`` (backend keys
    ``<ns>/<n>/<key>``, ids, kinds, parents), ``meta.db`` with the namespace's containers
    (``snapshotKey`` = the container id), images and content records, and the content store
    with each image's manifest, config and (uncompressed) layer blobs. *images* and *containers*
    as for :func:`make_data_root`; there is no ``-init`` layer (a container's ``init`` ops, if
    given, run through the same mount before ``run``); running containers get a task directory.
    *snapshots*: ``{key: ("active" | "view", image)}``, snapshots no container uses (``ctr snapshots
    prepare`` / ``view``); returns their ids in ``.snapshots``. Both databases are written by
    ``tests/boltwriter.py``. Needs root for the mounts.
    """
    root = Path(root)
    _mkdir(root, 0o711)
    builder = _ContainerdBuilder(root, namespace, clock)
    result = ContainerdRoot(root, namespace)
    for name, layers in (images or {}).items():
        result.images[name] = builder.image(name, layers)
    for name, spec in (containers or {}).items():
        if not isinstance(spec, ContainerSpec):
            spec = ContainerSpec(*spec)
        result.containers[name] = builder.container(name, spec, result.images[spec.image])
    for key, (kind, image) in (snapshots or {}).items():
        result.snapshots[key] = builder.snapshot(
            key, {"view": 1, "active": 2}[kind], result.images[image].snapshots[-1]
        )
    builder.finish()
    return result


__all__ += [
    "ContainerdContainer",
    "ContainerdImage",
    "ContainerdRoot",
    "go_time_bytes",
    "make_containerd_root",
    "mount_snapshot",
    "protobuf_any",
    "uvarint_bytes",
    "varint_bytes",
]
