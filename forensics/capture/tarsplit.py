"""Docker's ``tar-split.json.gz``: the layer tar an engine recorded, without its file contents.

Format (vbatts/tar-split ``tar/storage/entry.go``, ``tar/asm/disassemble.go``):
gzip'd JSON lines, each ``{"type", "name" | "name_raw", "size", "payload",
"position"}``.

- type 2, a *segment*: raw bytes of the tar stream (``payload``, base64):
  headers, PAX records, the padding after a file's content, the end blocks.
- type 1, a *file*: one per tar header, in stream order. ``name`` is the
  header's name (``name_raw``, base64, when it is not valid UTF-8), ``size``
  the content size, ``payload`` the CRC-64/GO-ISO of the content (base64 of
  eight bytes big-endian; null for size 0).

Writing every segment verbatim and, for each file of size > 0, the bytes of
``<diff>/<name>`` gives the layer tar back byte for byte (``tar/asm/assemble.go``,
moby ``layer/layer_store.go`` ``assembleTarTo``): its sha256 is the diff id.

The segments between two file entries are the previous file's padding
followed by complete header blocks; :func:`read` parses those headers with
the standard library's ``tarfile`` (PAX and GNU long names included), so each
:class:`FileRef` carries the metadata the engine recorded for that path.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import json
import re
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

SEGMENT = 2
FILE = 1
_BLOCK = 512
_PAX_TIME = re.compile(r"(-?)(\d+)(?:\.(\d*))?")


class TarSplitError(Exception):
    """The tar-split data is damaged or not in the format described above."""


@dataclass(frozen=True, slots=True)
class Header:
    """What one tar header recorded for a path."""

    name: bytes  # as in the tar (PAX ``path`` and GNU long names applied), e.g. b"srv/data/"
    type: bytes  # tarfile type byte: b"0" regular, b"1" hardlink, b"2" symlink, b"5" dir, ...
    mode: int  # permission bits incl. setuid/setgid/sticky
    uid: int
    gid: int
    size: int
    mtime_ns: int  # PAX mtime exactly when present, else the header's whole seconds
    mtime_exact: bool  # True when a PAX mtime gave sub-second precision
    linkname: bytes
    devmajor: int
    devminor: int
    xattrs: tuple[tuple[str, bytes], ...]  # PAX SCHILY.xattr.* records, sorted


@dataclass(frozen=True, slots=True)
class FileRef:
    """One file entry of tar-split with the header it belongs to."""

    name: bytes  # tar-split's own name: what the engine opens below diff/ to rebuild the stream
    size: int
    crc: bytes | None  # eight bytes, big-endian; None for size 0
    header: Header


class _HeaderSource:
    """The part of ``tarfile.TarFile`` that ``TarInfo.fromtarfile`` uses: the header blocks of one entry."""

    encoding = "utf-8"
    errors = "surrogateescape"

    def __init__(self, blocks: bytes) -> None:
        self.fileobj = io.BytesIO(blocks)
        self.pax_headers: dict[str, str] = {}
        self.offset = 0


def read(raw: bytes) -> Iterator[bytes | FileRef]:
    """The stream in order: segment payloads (bytes) and file entries (FileRef).

    Raises :class:`TarSplitError` on damaged gzip or JSON, or a header that
    does not parse.
    """
    pad = 0
    pending = bytearray()
    global_pax: dict[str, str] = {}
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                record = _record(line, number)
                kind = record.get("type")
                if kind == SEGMENT:
                    payload = _b64(record.get("payload"), number)
                    pending += payload
                    yield payload
                elif kind == FILE:
                    header, global_pax = _header(bytes(pending[pad:]), global_pax, number)
                    pending.clear()
                    size = record.get("size") or 0
                    if not isinstance(size, int) or size < 0:
                        raise TarSplitError(f"line {number}: invalid size {size!r}")
                    pad = -size % _BLOCK
                    crc = _b64(record.get("payload"), number) or None
                    if crc is not None and len(crc) != 8:
                        raise TarSplitError(f"line {number}: a CRC-64 of {len(crc)} bytes")
                    yield FileRef(_name(record, number), size, crc, header)
                else:
                    raise TarSplitError(f"line {number}: unknown entry type {kind!r}")
    except (OSError, EOFError, zlib.error) as exc:
        raise TarSplitError(f"the gzip data is damaged ({exc})") from None


def _record(line: bytes, number: int) -> dict[str, object]:
    try:
        record = json.loads(line)
    except ValueError:
        raise TarSplitError(f"line {number} is not JSON") from None
    if not isinstance(record, dict):
        raise TarSplitError(f"line {number} is not a JSON object")
    return record


def _b64(value: object, number: int) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, str):
        raise TarSplitError(f"line {number}: payload is not base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise TarSplitError(f"line {number}: payload is not valid base64") from None


def _name(record: dict[str, object], number: int) -> bytes:
    raw = record.get("name_raw")
    if raw:
        return _b64(raw, number)
    name = record.get("name")
    if not isinstance(name, str):
        raise TarSplitError(f"line {number}: a file entry without a name")
    return name.encode("utf-8", "surrogateescape")


def _header(blocks: bytes, global_pax: dict[str, str], number: int) -> tuple[Header, dict[str, str]]:
    """The header of one entry, and the global PAX records in force after it."""
    if not blocks or len(blocks) % _BLOCK:
        raise TarSplitError(f"line {number}: the segments before it are not whole tar header blocks")
    if len(blocks) == _BLOCK and not global_pax:
        simple = _ustar(blocks)
        if simple is not None:
            return simple, global_pax
    source = _HeaderSource(blocks)
    source.pax_headers = global_pax
    try:
        info = tarfile.TarInfo.fromtarfile(source)  # type: ignore[arg-type]
    except (tarfile.TarError, EOFError, ValueError) as exc:
        raise TarSplitError(f"line {number}: a tar header does not parse ({exc})") from None
    if source.fileobj.tell() != len(blocks):
        raise TarSplitError(f"line {number}: more header blocks than one entry")
    pax = info.pax_headers
    exact = _pax_time(pax.get("mtime"))
    xattrs = tuple(
        sorted(
            (key[13:], value.encode("utf-8", "surrogateescape"))
            for key, value in pax.items()
            if key.startswith("SCHILY.xattr.")
        )
    )
    name = info.name.encode("utf-8", "surrogateescape")
    if info.type == tarfile.DIRTYPE:
        name += b"/"  # tarfile strips it; the tar (and tar-split's name) has it
    header = Header(
        name=name,
        type=info.type,
        mode=info.mode & 0o7777,
        uid=info.uid,
        gid=info.gid,
        size=info.size,
        mtime_ns=exact if exact is not None else int(info.mtime) * 10**9,
        mtime_exact=exact is not None and exact % 10**9 != 0,
        linkname=info.linkname.encode("utf-8", "surrogateescape"),
        devmajor=info.devmajor,
        devminor=info.devminor,
        xattrs=xattrs,
    )
    return header, source.pax_headers


_SIMPLE_TYPES = frozenset(b"01234567\0")
_USTAR = b"ustar\x0000"


def _ustar(block: bytes) -> Header | None:
    """A lone POSIX ustar header, parsed directly (most headers of a Docker layer tar are).

    None for anything else (PAX or GNU extensions, base-256 numbers, a bad
    checksum, an old-style directory): ``tarfile`` then parses it, or says why not.
    """
    if block[257:265] != _USTAR or block[156] not in _SIMPLE_TYPES:
        return None
    try:
        checksum = int(block[148:156].split(b"\0", 1)[0].strip() or b"0", 8)
        if checksum != sum(block[:148]) + 256 + sum(block[156:]):
            return None
        mode, uid, gid, size, mtime, major, minor = (
            int(block[a:b].split(b"\0", 1)[0].strip() or b"0", 8)
            for a, b in ((100, 108), (108, 116), (116, 124), (124, 136), (136, 148), (329, 337), (337, 345))
        )
    except ValueError:
        return None  # base-256 or garbage: tarfile decides
    name = block[0:100].split(b"\0", 1)[0]
    prefix = block[345:500].split(b"\0", 1)[0]
    if prefix:
        name = prefix + b"/" + name
    kind = bytes((block[156],))
    if kind in (b"0", b"\0") and name.endswith(b"/"):
        return None  # an old-style directory: tarfile's rules
    if kind == b"\0":
        kind = b"0"
    if kind == b"5":
        name = name.rstrip(b"/") + b"/"
    return Header(
        name=name,
        type=kind,
        mode=mode & 0o7777,
        uid=uid,
        gid=gid,
        size=size,
        mtime_ns=mtime * 10**9,
        mtime_exact=False,
        linkname=block[157:257].split(b"\0", 1)[0],
        devmajor=major,
        devminor=minor,
        xattrs=(),
    )


def _pax_time(text: str | None) -> int | None:
    """A PAX time ("1704067200.123456789") as exact integer nanoseconds."""
    match = _PAX_TIME.fullmatch(text) if text else None
    if match is None:
        return None
    sign, whole, fraction = match.groups()
    value = int(whole) * 10**9 + int((fraction or "")[:9].ljust(9, "0"))
    return -value if sign else value
