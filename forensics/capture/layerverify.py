"""Image layers checked against the engine's own records: the diff id and tar-split.

Docker never changes an image layer's ``diff/`` after extracting it, and keeps
what it needs to rebuild the layer tar exactly: ``layerdb/sha256/<chain>/diff``
(the diff id, sha256 of the uncompressed tar) and ``tar-split.json.gz`` (every
header and padding byte, and a CRC-64 of each file; see :mod:`tarsplit`).
Editing a file inside an image layer changes every container built on it, and
``docker diff`` never looks there. This module finds it.

For every image layer with tar-split, each header is compared with the entry the
walk recorded at that path (:func:`compare_header`), and each file's content
with the CRC-64 tar-split holds. Two methods, by source:

``tar-split-stream`` (directory source)
    The layer tar is rebuilt the way the engine does (segments verbatim, each
    file's bytes from ``diff/``) and hashed with sha256: the result must be the
    diff id. Files are read with the directory source's safety rules: every path
    component opened relative to its parent's descriptor with ``O_NOFOLLOW``
    (and ``O_NOATIME``), ``lstat`` first and only regular files opened, ``fstat``
    confirming the inode, names with ``..`` never followed.

``tar-split-files`` (tar source)
    A tar archive cannot be re-read in the layer tar's order (GNU tar stores
    directories in readdir order), so no stream hash: a second streaming pass
    over the archive computes the CRC-64 of each regular file in the image
    layers (a side map bounded by the number of image-layer files), and each one
    is compared with tar-split. CRC-64 is not a cryptographic hash: it catches
    any accidental or careless change, but someone who knows the check can
    forge a different content with the same CRC. The directory method is the
    strong one.

Metadata is compared on both: the rebuilt stream takes its headers from
tar-split, so a ``chmod u+s`` on disk leaves the diff id intact; only the
header comparison shows it. What the engine's extraction does to a header
(moby go-archive ``createTarFile`` and the overlay whiteout converter) is
what is expected on disk:

- ``.wh.<name>`` is a whiteout: a character device 0/0 at ``<name>``, owned by
  the header's uid/gid (its mode is 0 and its mtime the extraction time);
- ``.wh..wh..opq`` marks its directory opaque (``trusted.overlay.opaque=y``);
  other ``.wh..wh.*`` names are not extracted;
- a hardlink header is a name of the same inode as its link target;
- xattrs are the header's ``SCHILY.xattr.*`` records, exactly;
- mtimes compare like go-archive ``sameFsTime``: equal, or the same second
  with either side at 0 ns (tar headers without PAX keep whole seconds).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from forensics.capture import tarsplit
from forensics.capture.crc64 import crc64_bytes, crc64_iso
from forensics.capture.dirsource import on_read_only_mount, open_listed_file, open_noatime
from forensics.model import (
    Entry,
    ImageLayer,
    Kind,
    Layer,
    LayerCheck,
    LayerFinding,
    LayerFindingKind,
    LayerRole,
    LayerVerdict,
    path_to_text,
)

STREAM = "tar-split-stream"
FILES = "tar-split-files"
NONE = "none"

EntriesOf = Callable[[list[str]], Iterator[tuple[str, list[Entry]]]]
"""(layer ids, sorted) -> each layer's entries as the snapshot holds them, in that order."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
_WHITEOUT = b".wh."
_OPAQUE_MARK = b".wh..wh..opq"
_META_PREFIX = b".wh..wh."
_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
_TAR_KIND = {
    b"0": Kind.FILE,
    b"\0": Kind.FILE,
    b"7": Kind.FILE,
    b"1": Kind.FILE,
    b"S": Kind.FILE,
    b"2": Kind.SYMLINK,
    b"5": Kind.DIR,
    b"3": Kind.CHAR,
    b"4": Kind.BLOCK,
    b"6": Kind.FIFO,
}
_NS = 10**9


@dataclass
class LayerResult:
    """A layer's check and its findings, ready for the writer."""

    check: LayerCheck
    findings: list[LayerFinding] = field(default_factory=list)


# -- entry points ----------------------------------------------------------------------


def verify_layers(
    source: object, layers: Iterable[Layer], image_layers: Iterable[ImageLayer], entries_of: EntriesOf
) -> Iterator[LayerResult]:
    """One result per image layer, in layer-id order.

    *source* is the collection's source (``kind`` "directory" with ``root``, or
    "tar" with ``location`` and ``data_root``). Never raises for a damaged layer
    or tar-split: that layer's verdict is ``error``.
    """
    layer_map = {layer.id: layer for layer in layers}
    records: dict[str, ImageLayer] = {}
    for record in sorted(image_layers, key=lambda r: r.chain_id):
        if record.layer_id and record.layer_id in layer_map:
            records.setdefault(record.layer_id, record)
    targets = sorted(
        {lid for lid, layer in layer_map.items() if layer.role is LayerRole.IMAGE} | set(records)
    )
    checkable = [
        lid for lid in targets if lid in records and records[lid].tar_split and layer_map[lid].has_diff
    ]
    kind = getattr(source, "kind", "")
    reader: _Content
    if kind == "directory":
        reader = _DiskContent(getattr(source, "root"))  # noqa: B009 - a DirSource attribute
    else:
        reader = _TarContent(source, {layer_map[lid].diff_path: lid for lid in checkable})
    entries = _Lookahead(entries_of(checkable) if checkable else iter(()))
    try:
        for layer_id in targets:
            record = records.get(layer_id)
            if record is None:
                yield _plain(layer_id, None, LayerVerdict.UNVERIFIABLE, "no engine record names this layer")
                continue
            if not record.tar_split:
                why = record.unverifiable or "the engine kept no tar-split"
                yield _plain(layer_id, record, LayerVerdict.UNVERIFIABLE, why)
                continue
            if not layer_map[layer_id].has_diff:
                yield _plain(layer_id, record, LayerVerdict.ERROR, "the layer has no diff/ directory")
                continue
            yield check_layer(record, layer_map[layer_id], entries.take(layer_id), reader)
    finally:
        reader.close()


def check_layer(record: ImageLayer, layer: Layer, entries: list[Entry], content: _Content) -> LayerResult:
    """One layer: every tar-split entry against the snapshot's entries and the content source."""
    assert record.tar_split is not None
    checker = _Checker(layer.id, {e.path: e for e in entries})
    sha = hashlib.sha256() if content.method == STREAM else None
    try:
        problem = content.open_layer(layer)
        if problem is not None:
            return _plain(layer.id, record, LayerVerdict.ERROR, problem, content.method)
        for item in tarsplit.read(record.tar_split):
            if isinstance(item, bytes):
                if sha is not None:
                    sha.update(item)
                continue
            checker.file(item, content, sha)
    except tarsplit.TarSplitError as exc:
        return _plain(layer.id, record, LayerVerdict.ERROR, f"tar-split.json.gz is damaged: {exc}", NONE)
    finally:
        content.close_layer()
    findings = checker.finish()
    computed = None
    if sha is not None and not checker.stream_broken:
        computed = "sha256:" + sha.hexdigest()
    mismatch = computed is not None and computed != record.diff_id
    if findings or mismatch:
        verdict = LayerVerdict.TAMPERED
    elif checker.unread or checker.stream_broken:
        verdict = LayerVerdict.ERROR
    else:
        verdict = LayerVerdict.VERIFIED
    check = LayerCheck(
        layer_id=layer.id,
        verdict=verdict,
        method=content.method,
        chain_id=record.chain_id,
        diff_id=record.diff_id,
        computed_diff_id=computed,
        files_checked=checker.files,
        findings=len(findings),
        detail=_detail(verdict, content.method, checker, findings, computed, record.diff_id),
    )
    return LayerResult(check, findings)


def _plain(
    layer_id: str, record: ImageLayer | None, verdict: LayerVerdict, detail: str, method: str = NONE
) -> LayerResult:
    return LayerResult(
        LayerCheck(
            layer_id=layer_id,
            verdict=verdict,
            method=method,
            chain_id=record.chain_id if record else None,
            diff_id=record.diff_id if record else None,
            detail=detail,
        )
    )


def _detail(
    verdict: LayerVerdict,
    method: str,
    checker: _Checker,
    findings: list[LayerFinding],
    computed: str | None,
    diff_id: str | None,
) -> str:
    if verdict is LayerVerdict.VERIFIED:
        if method == STREAM:
            return "rebuilt layer tar matches the diff id; every header matches the disk"
        return "every file's CRC-64 and header match tar-split (no stream hash from a tar)"
    parts = []
    if findings:
        counts: dict[str, int] = {}
        for finding in findings:
            counts[finding.kind.value] = counts.get(finding.kind.value, 0) + 1
        parts.append(", ".join(f"{n} {kind}" for kind, n in counts.items()))
    if computed is not None and computed != diff_id:
        parts.append(f"the rebuilt layer tar hashes to {computed}, not to the diff id")
    if checker.stream_broken and method == STREAM:
        parts.append("the layer tar could not be rebuilt (a listed file is missing or unreadable)")
    if checker.unread:
        first = ", ".join(checker.unread[:3])
        parts.append(f"{len(checker.unread)} files could not be checked ({first})")
    return "; ".join(parts)


# -- one layer -------------------------------------------------------------------------------


class _Checker:
    """Compares one layer's tar-split entries, in order, with the entries the walk recorded."""

    def __init__(self, layer_id: str, entries: dict[bytes, Entry]) -> None:
        self.layer_id = layer_id
        self.entries = entries
        self.seen: set[bytes] = {b"/"}  # the layer root has no header in a layer tar
        self.opaque: set[bytes] = set()  # directories a .wh..wh..opq marks
        self.metadata: dict[bytes, dict[str, object]] = {}
        self.findings: list[LayerFinding] = []
        self.files = 0
        self.stream_broken = False
        self.unread: list[str] = []

    def _finding(self, path: bytes, kind: LayerFindingKind, detail: dict[str, object]) -> None:
        self.findings.append(LayerFinding(self.layer_id, path, kind, detail))

    def file(self, ref: tarsplit.FileRef, content: _Content, sha: hashlib._Hash | None) -> None:
        self.files += 1
        header = ref.header
        path = layer_path(header.name)
        if path is None:
            self._finding(_shown_name(header.name), LayerFindingKind.MISSING, {"name": ["unsafe name", None]})
            if ref.size:
                self.stream_broken = True
            return
        parent, _, base = path.rpartition(b"/")
        parent = parent or b"/"
        if base == _OPAQUE_MARK:
            self.opaque.add(parent)
            return
        if base.startswith(_META_PREFIX):
            return  # aufs bookkeeping (.wh..wh.plnk, ...): never extracted
        whiteout = base.startswith(_WHITEOUT)
        if whiteout:
            path = (parent if parent != b"/" else b"") + b"/" + base[len(_WHITEOUT) :]
        self.seen.add(path)
        entry = self.entries.get(path)
        if entry is None:
            recorded = "whiteout" if whiteout else _TAR_KIND.get(header.type, Kind.FILE).value
            self._finding(path, LayerFindingKind.MISSING, {"type": [recorded, None]})
            if ref.size:
                self.stream_broken = True
            return
        if whiteout:
            diff = compare_whiteout(header, entry)
        else:
            target = None
            if header.type == b"1":
                linked = layer_path(header.linkname)
                target = self.entries.get(linked) if linked is not None else None
            diff = compare_header(header, entry, target)
        if diff:
            self.metadata.setdefault(path, {}).update(diff)
        if ref.size and not whiteout and header.type != b"1":
            # The engine reads tar-split's name; it is the header's unless tar-split was edited.
            source = path if ref.name.rstrip(b"/") == header.name.rstrip(b"/") else layer_path(ref.name)
            self._content(ref, path, source, entry, content, sha)

    def _content(
        self,
        ref: tarsplit.FileRef,
        path: bytes,
        source: bytes | None,
        entry: Entry,
        content: _Content,
        sha: hashlib._Hash | None,
    ) -> None:
        if entry.kind is not Kind.FILE:
            self.stream_broken = True  # the type difference is already a metadata finding
            return
        if source is None:
            self.stream_broken = True
            self.unread.append(f"{path_to_text(path)}: tar-split names it {ref.name!r}, which is unsafe")
            return
        try:
            got = content.read(source, sha)
        except OSError as exc:
            self.stream_broken = True
            self.unread.append(f"{path_to_text(path)}: {exc.strerror or exc}")
            return
        if got is None:
            self.unread.append(f"{path_to_text(path)}: no content captured")
            return
        crc, size = got
        detail: dict[str, object] = {}
        found = crc64_bytes(crc)
        if ref.crc is not None and found != ref.crc:
            detail["crc64"] = [ref.crc.hex(), found.hex()]
        if size != ref.size:
            detail["size"] = [ref.size, size]
        if detail:
            self._finding(path, LayerFindingKind.CONTENT, detail)

    def finish(self) -> list[LayerFinding]:
        """Opaque markers, the metadata differences and every entry the tar does not list."""
        for path, entry in self.entries.items():
            if entry.kind is not Kind.DIR:
                continue
            found = any(entry.xattr(name) == b"y" for name in _OPAQUE_XATTRS)
            recorded = path in self.opaque
            if found != recorded:
                self.metadata.setdefault(path, {})["opaque"] = [recorded, found]
        for path in sorted(self.opaque - set(self.entries)):
            if path not in self.seen:
                self._finding(path, LayerFindingKind.MISSING, {"type": ["dir", None]})
        for path, detail in self.metadata.items():
            self._finding(path, LayerFindingKind.METADATA, detail)
        for path in sorted(set(self.entries) - self.seen):
            entry = self.entries[path]
            self._finding(path, LayerFindingKind.ADDED, _found_fields(entry))
        return self.findings


# -- comparisons (pure) ---------------------------------------------------------------------------


def layer_path(name: bytes) -> bytes | None:
    """A tar member name as a path inside the layer (``srv/data/`` -> ``/srv/data``); None if unsafe.

    Unsafe: empty, or holding a ``..`` component or a NUL; such a name would
    reach outside ``diff/`` and is never opened.
    """
    wrapped = b"/" + name.strip(b"/") + b"/"
    if b"//" not in wrapped and b"/./" not in wrapped and b"/../" not in wrapped and b"\0" not in name:
        return wrapped[:-1]  # the common case: nothing to normalise
    parts = [p for p in name.split(b"/") if p and p != b"."]
    if not parts or b".." in parts or any(b"\0" in p for p in parts):
        return None
    return b"/" + b"/".join(parts)


def same_time(recorded: int, found: int | None) -> bool:
    """go-archive ``sameFsTime``: equal, or the same second with either side at 0 ns."""
    if found is None:
        return True  # the source could not tell
    if recorded == found:
        return True
    return recorded // _NS == found // _NS and (recorded % _NS == 0 or found % _NS == 0)


def compare_header(
    header: tarsplit.Header, entry: Entry, link_target: Entry | None = None
) -> dict[str, object]:
    """Each field the engine's extraction set that differs on disk: ``{field: [recorded, found]}``."""
    diff: dict[str, object] = {}
    kind = _TAR_KIND.get(header.type, Kind.FILE)
    if header.type == b"1" and link_target is not None:
        kind = link_target.kind  # a hardlink header names an inode of any type
    if entry.kind is not kind:
        diff["type"] = [kind.value, entry.kind.value]
        return diff
    if header.mode != entry.mode:
        diff["mode"] = [f"{header.mode:04o}", f"{entry.mode:04o}"]
    if header.uid != entry.uid:
        diff["uid"] = [header.uid, entry.uid]
    if header.gid != entry.gid:
        diff["gid"] = [header.gid, entry.gid]
    if not same_time(header.mtime_ns, entry.mtime_ns):
        diff["mtime_ns"] = [header.mtime_ns, entry.mtime_ns]
    if kind is Kind.SYMLINK and entry.target is not None and header.linkname != entry.target:
        diff["target"] = [path_to_text(header.linkname), path_to_text(entry.target)]
    if header.type == b"1":
        linked = layer_path(header.linkname)
        shown = path_to_text(linked or header.linkname)
        if not _same_inode(entry, link_target):
            diff["link"] = [f"hardlink to {shown}", f"not a hardlink of {shown}"]
    if kind in (Kind.CHAR, Kind.BLOCK) and entry.rdev_major is not None:
        recorded_rdev = f"{header.devmajor}:{header.devminor}"
        if recorded_rdev != entry.rdev:
            diff["rdev"] = [recorded_rdev, entry.rdev]
    recorded_x = dict(header.xattrs)
    found_x = {n: v for n, v in entry.xattrs if not (kind is Kind.DIR and n in _OPAQUE_XATTRS)}
    if recorded_x != found_x:
        names = sorted(n for n in set(recorded_x) | set(found_x) if recorded_x.get(n) != found_x.get(n))
        diff["xattrs"] = [
            {n: _hex(recorded_x.get(n)) for n in names},
            {n: _hex(found_x.get(n)) for n in names},
        ]
    return diff


def _same_inode(entry: Entry, other: Entry | None) -> bool:
    """Two names of one inode: by inode number (directory source), else by link group (tar source)."""
    if other is None:
        return False
    if entry.inode is not None and other.inode is not None:
        return entry.inode == other.inode
    return entry.link_group is not None and entry.link_group == other.link_group


def compare_whiteout(header: tarsplit.Header, entry: Entry) -> dict[str, object]:
    """A ``.wh.<name>`` header against the entry at ``<name>``: a 0/0 device owned as the header says."""
    diff: dict[str, object] = {}
    if entry.kind is not Kind.CHAR or (entry.rdev_major or 0, entry.rdev_minor or 0) != (0, 0):
        diff["type"] = ["whiteout", entry.kind.value if entry.kind is not Kind.CHAR else f"char {entry.rdev}"]
        return diff
    if header.uid != entry.uid:
        diff["uid"] = [header.uid, entry.uid]
    if header.gid != entry.gid:
        diff["gid"] = [header.gid, entry.gid]
    return diff


def _found_fields(entry: Entry) -> dict[str, object]:
    detail: dict[str, object] = {
        "type": [None, entry.kind.value],
        "mode": [None, f"{entry.mode:04o}"],
        "uid": [None, entry.uid],
        "gid": [None, entry.gid],
    }
    if entry.kind is Kind.FILE:
        detail["size"] = [None, entry.size]
    if entry.target is not None:
        detail["target"] = [None, path_to_text(entry.target)]
    if entry.xattrs:
        detail["xattrs"] = [None, {n: v.hex() for n, v in entry.xattrs}]
    return detail


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _shown_name(name: bytes) -> bytes:
    return b"/" + name.lstrip(b"/")


# -- where file content comes from ------------------------------------------------------------------


class _Content:
    method = NONE

    def open_layer(self, layer: Layer) -> str | None:
        """Prepare to read one layer; a sentence when it cannot be read at all."""
        return None

    def read(self, path: bytes, sha: hashlib._Hash | None) -> tuple[int, int] | None:
        """(CRC-64, bytes) of the file at *path* in the layer (normalised, safe: see
        :func:`layer_path`); feeds *sha* when given. None: its content was not captured."""
        raise NotImplementedError

    def close_layer(self) -> None:
        pass

    def close(self) -> None:
        pass


class _DiskContent(_Content):
    """Files read from ``<root>/<layer diff path>/<name>``, one path component at a time."""

    method = STREAM

    def __init__(self, root: bytes) -> None:
        self.root = root
        self.diff_fd: int | None = None
        self.fixed = False  # the layer is on a read-only mount: names cannot be swapped (dirsource)
        self.stack: list[tuple[bytes, int]] = []  # open directories below diff/, outermost first
        self.buffer = bytearray(_CHUNK)
        self.view = memoryview(self.buffer)

    def open_layer(self, layer: Layer) -> str | None:
        parts = [p for p in layer.diff_path.split(b"/") if p]
        if not parts or b".." in parts:
            return "the layer's diff/ path is not usable"
        try:
            fd = open_noatime(self.root, _DIR_FLAGS, None)
        except OSError as exc:
            return f"cannot open the data root: {exc.strerror}"
        try:
            for part in parts:
                inner = open_noatime(part, _DIR_FLAGS, fd)
                os.close(fd)
                fd = inner
        except OSError as exc:
            os.close(fd)
            return f"cannot open {path_to_text(layer.diff_path)}: {exc.strerror}"
        self.diff_fd = fd
        self.fixed = on_read_only_mount(fd)
        return None

    def _dir_of(self, parts: list[bytes]) -> int:
        """The descriptor of the directory holding the last part, reusing open ancestors."""
        assert self.diff_fd is not None
        dirs = parts[:-1]
        keep = 0
        while keep < len(self.stack) and keep < len(dirs) and self.stack[keep][0] == dirs[keep]:
            keep += 1
        while len(self.stack) > keep:
            os.close(self.stack.pop()[1])
        fd = self.stack[-1][1] if self.stack else self.diff_fd
        for part in dirs[keep:]:
            fd = open_noatime(part, _DIR_FLAGS, fd)
            self.stack.append((part, fd))
        return fd

    def read(self, path: bytes, sha: hashlib._Hash | None) -> tuple[int, int] | None:
        parts = path[1:].split(b"/")
        dir_fd = self._dir_of(parts)
        leaf = parts[-1]
        fd, st = open_listed_file(dir_fd, leaf, self.fixed)  # never a FIFO or device, even swapped in
        if fd < 0:
            raise OSError(0, "not a regular file")
        try:
            view = self.view
            crc = 0
            total = 0
            while count := os.readv(fd, [view]):
                chunk = view[:count]
                crc = crc64_iso(chunk, crc)
                if sha is not None:
                    sha.update(chunk)
                total += count
                if count < len(view) and total >= st.st_size:
                    break  # a short read at the size lstat gave is the end (as capture/hash.py trusts it)
            return crc, total
        finally:
            os.close(fd)

    def close_layer(self) -> None:
        while self.stack:
            os.close(self.stack.pop()[1])
        if self.diff_fd is not None:
            os.close(self.diff_fd)
            self.diff_fd = None


class _TarContent(_Content):
    """CRC-64s from a second streaming pass over the tar source, for the wanted layers only."""

    method = FILES

    def __init__(self, source: object, diff_paths: dict[bytes, str]) -> None:
        self.crcs: dict[str, dict[bytes, tuple[int, int]]] = {}
        self.problem: str | None = None
        self.layer: dict[bytes, tuple[int, int]] = {}
        if diff_paths:
            try:
                self.crcs = tar_crcs(source, diff_paths)
            except Exception as exc:  # a damaged archive: the first pass said so already
                self.problem = f"the second pass over the archive failed ({type(exc).__name__}: {exc})"

    def open_layer(self, layer: Layer) -> str | None:
        self.layer = self.crcs.get(layer.id, {})
        return self.problem

    def read(self, path: bytes, sha: hashlib._Hash | None) -> tuple[int, int] | None:
        return self.layer.get(path)


def tar_crcs(source: object, diff_paths: dict[bytes, str]) -> dict[str, dict[bytes, tuple[int, int]]]:
    """CRC-64 and size of every regular file below the given ``diff/`` paths (data-root relative: layer id).

    Streams the archive once more (decompressing it again), reading only the
    members of those layers. A hardlink member takes the value of the name it
    links to, when that name is in one of those layers.
    """
    from forensics.capture.tarsource import _normal, _Reader

    layout = getattr(source, "layout")  # noqa: B009 - a TarSource attribute
    prefix = getattr(source, "data_root").encode("utf-8", "surrogateescape").strip(b"/")  # noqa: B009
    out: dict[str, dict[bytes, tuple[int, int]]] = {lid: {} for lid in diff_paths.values()}
    depths = sorted({len(p.split(b"/")) for p in diff_paths})
    seen: dict[bytes, tuple[int, int]] = {}
    buffer = bytearray(_CHUNK)

    def place(member: str) -> tuple[str, bytes, bytes] | None:
        path = _normal(member)
        if prefix:
            if not path.startswith(prefix + b"/"):
                return None
            path = path[len(prefix) + 1 :]
        parts = path.split(b"/")
        for depth in depths:  # overlay2/<id>/diff (Docker), overlay/<id>/diff (containers-storage)
            layer_id = diff_paths.get(b"/".join(parts[:depth]))
            if layer_id is not None and len(parts) > depth:
                return layer_id, b"/" + b"/".join(parts[depth:]), path
        return None

    with open(getattr(source, "location"), "rb") as raw:  # noqa: B009
        tar = _Reader(source, [layout], None)._open(raw)  # type: ignore[arg-type]
        while (info := tar.next()) is not None:
            tar.members.clear()  # a stream needs no member index; keep memory flat
            placed = place(info.name)
            if placed is None:
                continue
            layer_id, inner, rel = placed
            if info.islnk():
                target = _normal(info.linkname)
                if prefix and target.startswith(prefix + b"/"):
                    target = target[len(prefix) + 1 :]
                value = seen.get(target)
                if value is not None:
                    out[layer_id][inner] = seen[rel] = value
                continue
            if not info.isreg():
                continue
            stream = tar.extractfile(info)
            if stream is None:
                continue
            crc = 0
            total = 0
            while count := stream.readinto(buffer):  # type: ignore[attr-defined]
                crc = crc64_iso(memoryview(buffer)[:count], crc)
                total += count
            out[layer_id][inner] = seen[rel] = (crc, total)
    return out


# -- helpers ---------------------------------------------------------------------------------------


class _Lookahead:
    """Each layer's entries from a stream sorted by layer id; layers with none get an empty list."""

    def __init__(self, items: Iterator[tuple[str, list[Entry]]]) -> None:
        self.items = items
        self.head: tuple[str, list[Entry]] | None = next(items, None)

    def take(self, layer_id: str) -> list[Entry]:
        while self.head is not None and self.head[0] < layer_id:
            self.head = next(self.items, None)
        if self.head is not None and self.head[0] == layer_id:
            entries = self.head[1]
            self.head = next(self.items, None)
            return entries
        return []
