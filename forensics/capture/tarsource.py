"""A data root inside a tar archive (plain, gzip, bzip2, xz or zstd), read once as a stream.

Nothing is extracted: every member is classified by the layout and turned into
the same items :class:`~forensics.capture.dirsource.DirSource` yields for the
extracted tree. A tar cannot be re-read, so members met before the data root is
recognised wait in a bounded buffer, and a hardlink member takes its content
from the name archived first (which is why that name may get a :class:`Relink`).
"""

from __future__ import annotations

import base64
import binascii
import io
import lzma
import re
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import unquote

from forensics.capture.hash import hash_stream
from forensics.capture.sources import (
    READ_LIMIT,
    Action,
    EntryEncoding,
    Item,
    Layout,
    Noted,
    Progress,
    Relink,
    Visit,
)
from forensics.errors import NotADataRootError, SourceError
from forensics.model import CaptureError, Entry, Kind, MetadataFile, Xattrs, display_path

_KINDS = {
    tarfile.REGTYPE: Kind.FILE,
    tarfile.AREGTYPE: Kind.FILE,
    tarfile.CONTTYPE: Kind.FILE,
    tarfile.GNUTYPE_SPARSE: Kind.FILE,
    tarfile.DIRTYPE: Kind.DIR,
    tarfile.SYMTYPE: Kind.SYMLINK,
    tarfile.CHRTYPE: Kind.CHAR,
    tarfile.BLKTYPE: Kind.BLOCK,
    tarfile.FIFOTYPE: Kind.FIFO,
}
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_HOLD_LIMIT = 256 << 20  # memory for members met before the data root is known
_HELD_COST = 1024  # rough size of one held TarInfo, charged against _HOLD_LIMIT
_PAX_TIME = re.compile(r"(-?)(\d+)(?:\.(\d*))?")
_DESCENDED = (Action.WALK, Action.ENTRY)
_PAST_LIMIT = "came before the data root was recognised, past the read-ahead limit"
# What a damaged stream raises from tarfile, its decompressors or the disk.
_STREAM_ERRORS: tuple[type[Exception], ...] = (
    EOFError,
    OSError,
    tarfile.TarError,
    zlib.error,
    lzma.LZMAError,
)
_NOT_TAR = "{} is not a tar archive (or a compressed one o2f can read)."
_NO_ROOT = "{} holds no container data root (no member looks like .../overlay2/<layer>/ ...)."


class _Info(tarfile.TarInfo):
    """Remembers why the last header read failed.

    tarfile ends a stream silently at an empty, short or damaged header; for
    evidence only the end-of-archive (zero) block is a clean end.
    """

    stop: tarfile.HeaderError | None = None

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.HeaderError as exc:
            cls.stop = exc
            raise


@dataclass(slots=True)
class _Held:
    """A member met before the data root was known; ``info`` is None past the buffer limit."""

    info: tarfile.TarInfo | None
    path: bytes
    kind: Kind
    content: bytes | None = None
    problem: str | None = None


@dataclass(slots=True)
class _Inode:
    """What a name's inode holds beyond its header, kept for later hardlink members to that name."""

    kind: Kind
    size: int | None
    blake3: str | None
    xattrs: Xattrs
    rdev: tuple[int | None, int | None] = (None, None)
    head: bytes | None = None  # the first bytes of a regular file's content
    target: bytes | None = None
    entry: tuple[str, bytes] | None = None  # (layer, inner path) when the first name is an Entry
    content: bytes | None = None  # when the first name is a metadata file
    group: int | None = None


class TarSource:
    """A data root archived with tar (a seized copy of /var/lib/docker, say)."""

    kind = "tar"
    capabilities = frozenset({"atime_ns", "ctime_ns", "mtime_ns", "size", "xattrs", "rdev", "blake3"})

    def __init__(self, location: str) -> None:
        self.location = location
        self.layout: Layout | None = None
        self.data_root = ""
        self.bytes_read = 0

    def items(
        self,
        layouts: Sequence[Layout],
        progress: Progress | None = None,
        encode: EntryEncoding | None = None,
    ) -> Iterator[Item]:
        # Entry items as they are (a tar is read by one process): *encode* is not needed.
        reader = _Reader(self, layouts, progress)
        try:
            yield from reader.run()
        finally:
            self.bytes_read = reader.bytes_read


class _Reader:
    def __init__(self, source: TarSource, layouts: Sequence[Layout], progress: Progress | None) -> None:
        self.source = source
        self.location = source.location
        self.layouts = layouts
        self.progress = progress
        self.prefix: bytes | None = None
        self.held: list[_Held] = []
        self.held_bytes = 0
        self.descends: dict[bytes, bool] = {b"": True}
        self.known: dict[bytes, _Inode] = {}
        self.next_group = 1
        self.entries = 0
        self.bytes_read = 0
        self.info_class: type[_Info] = type("_Info", (_Info,), {"stop": None})  # one per stream
        self.errors = _STREAM_ERRORS

    # -- the stream -------------------------------------------------------------

    def run(self) -> Iterator[Item]:
        try:
            raw = open(self.location, "rb")  # noqa: SIM115 - closed below, after the stream
        except OSError as exc:
            raise SourceError(f"cannot read source {self.location}: {exc.strerror}.") from None
        with raw:
            tar = self._open(raw)
            last: str | None = None
            try:
                member = tar.next()
                while member is not None:
                    yield from self._member(tar, member)
                    last = member.name
                    tar.members.clear()  # a stream needs no member index; keep memory flat
                    member = tar.next()
            except self.errors as exc:
                raise self._damaged(last, _reason(exc)) from None
            stop = self.info_class.stop
            if stop is not None and not isinstance(stop, tarfile.EOFHeaderError):
                damaged = isinstance(stop, tarfile.InvalidHeaderError)
                raise self._damaged(last, "invalid header" if damaged else "no end-of-archive marker")
        if self.prefix is None:
            raise NotADataRootError(_NO_ROOT.format(self.location))
        if self.progress is not None:
            self.progress(self.entries, self.bytes_read)

    def _open(self, raw: io.BufferedReader) -> tarfile.TarFile:
        """tarfile's own stream reader; zstd (which it lacks before 3.14) is unwrapped first."""
        fileobj: BinaryIO = raw
        mode = "r|*"
        try:
            zstd = raw.peek(4)[:4] == _ZSTD_MAGIC
        except OSError as exc:
            raise SourceError(f"cannot read source {self.location}: {exc.strerror}.") from None
        if zstd:
            try:
                import zstandard
            except ImportError:
                raise SourceError(
                    f"{self.location} is zstd-compressed and the zstandard package is not installed."
                ) from None
            fileobj = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            mode = "r|"
            self.errors = (*_STREAM_ERRORS, zstandard.ZstdError)
        try:
            # surrogateescape: member names and PAX values come back as their exact bytes
            return tarfile.open(
                fileobj=fileobj,
                mode=mode,
                tarinfo=self.info_class,
                encoding="utf-8",
                errors="surrogateescape",
            )
        except self.errors:
            raise SourceError(_NOT_TAR.format(self.location)) from None

    def _damaged(self, last: str | None, reason: str) -> SourceError:
        where = "in its first member" if last is None else f"after member {_shown(last)}"
        return SourceError(f"{self.location} is truncated or corrupt {where}: {reason}.")

    def _member(self, tar: tarfile.TarFile, info: tarfile.TarInfo) -> Iterator[Item]:
        path = _normal(info.name)
        if self.prefix is None:
            for layout in self.layouts:
                prefix = layout.find_root(path)
                if prefix is not None:
                    self.prefix = prefix.strip(b"/")
                    self.source.layout = layout
                    self.source.data_root = self.prefix.decode("utf-8", "surrogateescape")
                    break
            else:
                self._hold(tar, info, path)
                return
            held, self.held = self.held, []
            for item in held:
                yield from self._classify(tar, item.info, item.path, item.kind, item)
        kind = _KINDS.get(info.type, Kind.FILE)
        yield from self._classify(tar, info, path, kind, None)

    def _hold(self, tar: tarfile.TarFile, info: tarfile.TarInfo, path: bytes) -> None:
        """Keep a member for replay; past the limit only its name, so it can be reported."""
        kind = _KINDS.get(info.type, Kind.FILE)
        cost = _HELD_COST + len(path)
        if self.held_bytes + cost > _HOLD_LIMIT:
            self.held.append(_Held(None, path, kind, problem=_PAST_LIMIT))
            return
        self.held_bytes += cost
        held = _Held(info, path, kind)
        if info.type in _KINDS and kind is Kind.FILE:
            if info.size > READ_LIMIT or self.held_bytes + info.size > _HOLD_LIMIT:
                held.problem = "came before the data root was recognised and was too large to keep"
            else:
                stream = tar.extractfile(info)
                held.content = stream.read() if stream is not None else b""
                self.held_bytes += info.size
        self.held.append(held)

    # -- classification -----------------------------------------------------------

    def _rel(self, path: bytes) -> bytes | None:
        prefix = self.prefix
        assert prefix is not None
        if not prefix:
            return path
        if path == prefix:
            return b""
        if path.startswith(prefix + b"/"):
            return path[len(prefix) + 1 :]
        return None

    def _reached(self, rel: bytes) -> bool:
        """Whether a directory walk would reach rel: every ancestor was walked or entered."""
        assert self.source.layout is not None
        pending = []
        parent = rel.rpartition(b"/")[0]
        while parent not in self.descends:
            pending.append(parent)
            parent = parent.rpartition(b"/")[0]
        reached = self.descends[parent]
        for directory in reversed(pending):
            reached = reached and self.source.layout.classify(directory, Kind.DIR).action in _DESCENDED
            self.descends[directory] = reached
        return reached

    def _classify(
        self, tar: tarfile.TarFile, info: tarfile.TarInfo | None, path: bytes, kind: Kind, held: _Held | None
    ) -> Iterator[Item]:
        rel = self._rel(path)
        if not rel or not self._reached(rel):
            return
        assert self.source.layout is not None
        known = None
        if info is not None and info.type == tarfile.LNKTYPE:
            target = self._rel(_normal(info.linkname))
            known = self.known.get(target) if target is not None else None
            kind = known.kind if known is not None else Kind.FILE
        elif info is not None and info.type not in _KINDS:
            yield CaptureError(rel, "type", f"unsupported tar member type {info.type!r}")
            return
        visit = self.source.layout.classify(rel, kind)
        action = visit.action
        if action is Action.SKIP or action is Action.WALK:
            return
        if info is None:
            assert held is not None and held.problem is not None
            yield CaptureError(rel, "read", held.problem, None, visit.layer_id or None)
        elif action is Action.NOTE or _over_limit(visit, kind, info):
            yield Noted(rel, kind)
        elif action is Action.READ:
            yield self._read(tar, info, rel, kind, held, known)
        elif action is Action.ENTRY and info.type == tarfile.LNKTYPE:
            yield from self._hardlink(info, rel, visit, known)
        elif action is Action.ENTRY:
            yield from self._entry(tar, info, rel, kind, visit, held)

    def _read(
        self,
        tar: tarfile.TarFile,
        info: tarfile.TarInfo,
        rel: bytes,
        kind: Kind,
        held: _Held | None,
        known: _Inode | None,
    ) -> Item:
        if kind is Kind.SYMLINK:
            target = known.target if known is not None else _raw(info.linkname)
            return Noted(rel, kind, target)
        if kind is not Kind.FILE:
            return Noted(rel, kind)
        if info.type == tarfile.LNKTYPE:
            if known is None or known.content is None:
                message = f"links to {_shown(info.linkname)}, whose content was not kept"
                return CaptureError(rel, "hardlink", message)
            content = known.content
        elif info.size > READ_LIMIT:
            return CaptureError(rel, "read", f"metadata file larger than {READ_LIMIT} bytes, not kept")
        elif held is not None:
            if held.content is None:
                return CaptureError(rel, "read", held.problem or "content not kept")
            content = held.content
        else:
            stream = tar.extractfile(info)
            content = stream.read() if stream is not None else b""
        self.known[rel] = _Inode(Kind.FILE, len(content), None, (), content=content)
        return MetadataFile(rel, content)

    def _entry(
        self,
        tar: tarfile.TarFile,
        info: tarfile.TarInfo,
        rel: bytes,
        kind: Kind,
        visit: Visit,
        held: _Held | None,
    ) -> Iterator[Item]:
        xattrs, problem = _xattrs(info.pax_headers)
        if problem:
            yield CaptureError(rel, "xattr", problem, None, visit.layer_id)
        body = _Inode(kind, None if kind in (Kind.DIR, Kind.SYMLINK) else 0, None, xattrs)
        body.entry = (visit.layer_id, visit.inner_path)
        if kind is Kind.FILE:
            body.size = info.size  # the real size, for sparse members too
            if held is None:
                stream: BinaryIO | None = tar.extractfile(info)
            else:
                stream = None if held.content is None else io.BytesIO(held.content)
            if stream is None:
                problem = (held and held.problem) or "content not kept"
                yield CaptureError(rel, "read", problem, None, visit.layer_id)
            else:
                body.blake3, count, body.head = hash_stream(stream)
                self.bytes_read += count
        elif kind is Kind.CHAR or kind is Kind.BLOCK:
            body.rdev = (info.devmajor, info.devminor)
        elif kind is Kind.SYMLINK:
            body.target = _raw(info.linkname)
        if kind is not Kind.DIR:
            self.known[rel] = body
        yield self._make(info, visit, body, xattrs)

    def _hardlink(
        self, info: tarfile.TarInfo, rel: bytes, visit: Visit, known: _Inode | None
    ) -> Iterator[Item]:
        own, problem = _xattrs(info.pax_headers)
        if problem:
            yield CaptureError(rel, "xattr", problem, None, visit.layer_id)
        if known is None:
            message = f"links to {_shown(info.linkname)}, which the archive holds no captured file for"
            yield CaptureError(rel, "hardlink", message, None, visit.layer_id)
            yield self._make(info, visit, _Inode(Kind.FILE, None, None, own), own)
            return
        if known.blake3 is None and known.content is not None:
            known.blake3, _, known.head = hash_stream(io.BytesIO(known.content))
        if known.kind is Kind.FILE and known.group is None:  # like DirSource: only regular files are grouped
            known.group, self.next_group = self.next_group, self.next_group + 1
            if known.entry is not None:
                yield Relink(known.entry[0], known.entry[1], known.group)
        self.known[rel] = known
        # GNU tar writes xattrs on the first name only
        yield self._make(info, visit, known, own or known.xattrs)

    def _make(self, info: tarfile.TarInfo, visit: Visit, body: _Inode, xattrs: Xattrs) -> Entry:
        """The Entry: the header gives mode, owner and times; body what the inode holds."""
        self.entries += 1
        if self.progress is not None and not self.entries & 1023:
            self.progress(self.entries, self.bytes_read)
        pax = info.pax_headers
        mtime = _pax_time(pax.get("mtime"))
        return Entry(
            layer_id=visit.layer_id,
            path=visit.inner_path,
            kind=body.kind,
            mode=info.mode & 0o7777,
            uid=info.uid,
            gid=info.gid,
            size=body.size,
            mtime_ns=mtime if mtime is not None else int(info.mtime) * 10**9,
            atime_ns=_pax_time(pax.get("atime")),
            ctime_ns=_pax_time(pax.get("ctime")),
            rdev_major=body.rdev[0],
            rdev_minor=body.rdev[1],
            target=body.target,
            xattrs=xattrs,
            blake3=body.blake3,
            link_group=body.group,
            head=body.head,
        )


# -- helpers ------------------------------------------------------------------------


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _normal(name: str) -> bytes:
    """Member name as data-root bytes: no leading ``/`` or ``./``, no trailing ``/``."""
    path = _raw(name).rstrip(b"/")
    while True:
        if path.startswith(b"/"):
            path = path.lstrip(b"/")
        elif path.startswith(b"./"):
            path = path[2:]
        else:
            break
    return b"" if path == b"." else path


def _shown(name: str) -> str:
    """A member name inside a one-line message."""
    return display_path(_raw(name)).replace("\n", "\\n")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).rstrip(".") or type(exc).__name__


def _pax_time(text: str | None) -> int | None:
    """A PAX time ("1704067200.123456789", "-1.5") as exact integer nanoseconds."""
    match = _PAX_TIME.fullmatch(text) if text else None
    if match is None:
        return None
    sign, whole, fraction = match.groups()
    nanoseconds = int(whole) * 10**9 + int((fraction or "")[:9].ljust(9, "0"))
    return -nanoseconds if sign else nanoseconds


def _xattrs(pax: dict[str, str]) -> tuple[Xattrs, str | None]:
    """Extended attributes from GNU/star (raw) and libarchive (base64) PAX records."""
    found: dict[str, bytes] = {}
    problem = None
    for key, value in pax.items():
        if key.startswith("SCHILY.xattr."):
            found[key[13:]] = _raw(value)
        elif key.startswith("LIBARCHIVE.xattr."):
            name = unquote(key[17:], errors="surrogateescape")
            try:
                found.setdefault(name, base64.b64decode(value + "=" * (-len(value) % 4)))
            except binascii.Error:
                problem = f"extended attribute {name} has an invalid base64 value"
    return tuple(sorted(found.items())), problem


def _over_limit(visit: Visit, kind: Kind, info: tarfile.TarInfo) -> bool:
    """A READ of a file larger than the layout's limit: only noted, like a directory source does."""
    return (
        visit.action is Action.READ
        and visit.limit is not None
        and kind is Kind.FILE
        and info.size > visit.limit
    )
