"""containerd's ``overlayfs`` snapshotter: ``/var/lib/containerd``, ``/var/lib/docker/containerd/daemon``.

Layers: ``io.containerd.snapshotter.v1.overlayfs/snapshots/<id>/{fs,work}``, one
directory per snapshot, named by a number the snapshotter hands out. Which
snapshot is which lives only in two BoltDB files:

- ``io.containerd.snapshotter.v1.overlayfs/metadata.db`` (the backend):
  ``v1/snapshots/<backend key>/{id, kind, parent, size, inodes, createdat, ...}``
  where the backend key is ``<namespace>/<n>/<client key>``, ``id`` the
  directory number (uvarint), ``kind`` 1 View, 2 Active, 3 Committed, and
  ``parent`` the parent's backend key;
- ``io.containerd.metadata.v1.bolt/meta.db``: per namespace
  ``containers/<id>/{image, snapshotter, snapshotKey, spec, labels, ...}``,
  ``snapshots/overlayfs/<client key>/{name (= backend key), parent, children}``,
  ``images/<name>/target/{digest, mediatype}`` and ``content/blob/<digest>``.

Manifests, indexes and image configs (with the diff ids) are blobs of the
content store, ``io.containerd.content.v1.content/blobs/sha256/<hex>``; layer
blobs share that directory and are only noted (:data:`BLOB_LIMIT`). The facts
are those of the containerd-a corpus README (containerd 1.6).

Records, layout-neutral:

- a layer per snapshot directory, its id the directory name (``"11"``): what
  ``snapshots/<id>``, the mount table's ``lowerdir=`` and ``ctr snapshots
  mounts`` show. Its chain is the snapshot's parent chain, nearest first.
  Roles: ``container`` for a writable (Active) snapshot, ``image`` for a
  Committed one and for a View (a read-only view of image layers; its ``fs/``
  is empty), ``orphan`` for a directory the snapshotter does not list;
- a container per ``containers/<id>`` record, named ``<namespace>/<id>`` (ids
  are unique per namespace only). containerd keeps no process state: the state
  and exit code are unknown (None); whether a task directory existed is kept
  in the container's config JSON;
- an image per image config and namespace (namespaces never share snapshots:
  the same image in two namespaces is unpacked twice), tagged
  ``<namespace>/<name>``; image ids and chain ids are the content addresses,
  with ``@<namespace>`` appended for a copy in a further namespace (the one
  that sorts first keeps the plain id);
- an image layer record (chain id, diff id) per committed snapshot keyed
  ``sha256:<chain id>``. containerd keeps no tar-split.

Damaged metadata never stops discovery: an unreadable ``meta.db`` leaves the
containers found from their Active snapshots (``<namespace>/<key>``); an
unreadable snapshotter ``metadata.db`` leaves every snapshot directory an
orphan layer (the parents cannot be inferred); each is a warning.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from forensics.capture.engine.base import Discovered, Gathered
from forensics.capture.engine.boltdb import BoltDB, BoltError, Bucket
from forensics.capture.sources import NOTE, READ, SKIP, WALK, Action, Visit
from forensics.model import Container, Image, ImageLayer, Kind, Layer, LayerRole, clean_text

SNAPSHOTTER = b"io.containerd.snapshotter.v1.overlayfs"
SNAPSHOTS = SNAPSHOTTER + b"/snapshots"
BACKEND_DB = SNAPSHOTTER + b"/metadata.db"
METADATA = b"io.containerd.metadata.v1.bolt"
META_DB = METADATA + b"/meta.db"
CONTENT = b"io.containerd.content.v1.content"
BLOBS = CONTENT + b"/blobs"
TASKS = b"io.containerd.runtime.v2.task"
SNAPSHOTTER_NAME = "overlayfs"
# Manifests, indexes and image configs are a few KiB; layer blobs are megabytes and are only noted.
BLOB_LIMIT = 4 << 20
_TOP = {SNAPSHOTTER, METADATA, CONTENT, TASKS}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHAIN_KEY = re.compile(r"^sha256:[0-9a-f]{64}$")
KINDS = {1: "view", 2: "active", 3: "committed"}
VIEW, ACTIVE, COMMITTED = 1, 2, 3
_GO_EPOCH = datetime(1, 1, 1, tzinfo=timezone.utc)
NO_TAR_SPLIT = (
    "containerd keeps no tar-split (the layer tar's headers are not recorded), so its snapshot "
    "cannot be checked file by file against the diff id"
)
_INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}


# -- value decoders (docs/boltdb.md; containerd metadata/boltutil, snapshots/storage) -----------


def uvarint(data: bytes) -> int | None:
    """Go ``binary.Uvarint`` of the whole value; None when it is not exactly one."""
    value = shift = 0
    for index, byte in enumerate(data):
        if index >= 10:
            return None
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value if index == len(data) - 1 else None
        shift += 7
    return None


def varint(data: bytes) -> int | None:
    """Go ``binary.Varint`` (zigzag), as containerd stores sizes and the schema version."""
    value = uvarint(data)
    return None if value is None else (value >> 1) ^ -(value & 1)


def go_time(data: bytes | None) -> str | None:
    """Go ``time.MarshalBinary`` (version 1 or 2) as ISO-8601 UTC with nanoseconds; None if not one."""
    if data is None or len(data) not in (15, 16) or data[0] not in (1, 2):
        return None
    seconds, nanos = struct.unpack(">qi", data[1:13])
    if not 0 <= nanos < 10**9:
        return None
    try:
        moment = _GO_EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{nanos:09d}Z"


def protobuf_any(data: bytes) -> tuple[str | None, bytes | None]:
    """(type_url, value) of a protobuf ``google.protobuf.Any``; (None, None) when it does not parse."""
    fields: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        key, pos = _pb_varint(data, pos)
        if key is None or key & 7 != 2:
            return None, None
        length, pos = _pb_varint(data, pos)
        if length is None or pos + length > len(data):
            return None, None
        fields[key >> 3] = data[pos : pos + length]
        pos += length
    type_url = fields.get(1)
    return (None if type_url is None else type_url.decode("utf-8", "replace")), fields.get(2)


def _pb_varint(data: bytes, pos: int) -> tuple[int | None, int]:
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    return None, pos


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else clean_text(raw.decode("utf-8", "surrogateescape"))


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI ChainIDs: ``chain[0] = diff[0]``, ``chain[i] = sha256(chain[i-1] + " " + diff[i])``."""
    out: list[str] = []
    for diff_id in diff_ids:
        if out:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest())
        else:
            out.append(diff_id)
    return out


# -- the two databases, decoded --------------------------------------------------------------------


@dataclass
class BackendSnapshot:
    """One record of the snapshotter's ``metadata.db``."""

    key: str  # backend key "<namespace>/<n>/<client key>"
    id: str | None  # snapshots/<id>
    kind: int | None
    parent: str | None  # the parent's backend key
    size: int | None = None
    inodes: int | None = None
    created: str | None = None
    updated: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.key.split("/", 2)[0]

    @property
    def client_key(self) -> str:
        parts = self.key.split("/", 2)
        return parts[2] if len(parts) == 3 else self.key

    @property
    def kind_name(self) -> str:
        return KINDS.get(self.kind or 0, "unknown")


@dataclass
class ClientSnapshot:
    """``v1/<ns>/snapshots/overlayfs/<key>`` of ``meta.db``."""

    name: str | None  # the backend key
    parent: str | None  # the parent's client key
    children: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class ContainerRecord:
    id: str
    image: str | None
    snapshotter: str | None
    snapshot_key: str | None
    runtime: str | None
    runtime_options: str | None
    spec_type: str | None
    spec: object
    labels: dict[str, str]
    created: str | None
    updated: str | None


@dataclass
class Namespace:
    containers: dict[str, ContainerRecord] = field(default_factory=dict)
    snapshots: dict[str, ClientSnapshot] = field(default_factory=dict)
    images: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)  # name -> (digest, type)
    content: dict[str, int | None] = field(default_factory=dict)  # digest -> size


def _labels(bucket: Bucket | None) -> dict[str, str]:
    if bucket is None:
        return {}
    return {
        _text(k) or "": _text(v) or ""
        for k, v in bucket.items()
        if isinstance(v, bytes)  # a label is a plain value
    }


def read_backend(data: bytes, origin: str) -> dict[str, BackendSnapshot]:
    """The snapshotter's records by backend key (raises BoltError)."""
    db = BoltDB.from_bytes(data, origin)
    snapshots = db.walk([b"v1", b"snapshots"])
    out: dict[str, BackendSnapshot] = {}
    if snapshots is None:
        return out
    for key, value in snapshots.items():
        if not isinstance(value, Bucket):
            continue
        raw_id = value.get(b"id")
        number = uvarint(raw_id) if raw_id is not None else None
        kind = value.get(b"kind")
        size, inodes = value.get(b"size"), value.get(b"inodes")
        name = _text(key) or ""
        out[name] = BackendSnapshot(
            key=name,
            id=None if number is None else str(number),
            kind=kind[0] if kind is not None and len(kind) == 1 else None,
            parent=_text(value.get(b"parent")),
            size=None if size is None else varint(size),
            inodes=None if inodes is None else varint(inodes),
            created=go_time(value.get(b"createdat")),
            updated=go_time(value.get(b"updatedat")),
            labels=_labels(value.bucket(b"labels")),
        )
    return out


def read_meta(data: bytes, origin: str) -> dict[str, Namespace]:
    """Namespaces of ``meta.db`` with their containers, overlayfs snapshots, images and content."""
    db = BoltDB.from_bytes(data, origin)
    v1 = db.walk([b"v1"])
    out: dict[str, Namespace] = {}
    if v1 is None:
        return out
    for ns_key, ns_bucket in v1.items():
        if not isinstance(ns_bucket, Bucket):
            continue  # v1/version
        ns = Namespace()
        out[_text(ns_key) or ""] = ns
        containers = ns_bucket.bucket(b"containers")
        for cid, bucket in containers.items() if containers is not None else ():
            if isinstance(bucket, Bucket):
                ns.containers[_text(cid) or ""] = _container_record(_text(cid) or "", bucket)
        snapshots = ns_bucket.walk([b"snapshots", SNAPSHOTTER_NAME.encode()])
        for key, bucket in snapshots.items() if snapshots is not None else ():
            if isinstance(bucket, Bucket):
                children = bucket.bucket(b"children")
                ns.snapshots[_text(key) or ""] = ClientSnapshot(
                    name=_text(bucket.get(b"name")),
                    parent=_text(bucket.get(b"parent")),
                    children=tuple(_text(k) or "" for k in children) if children is not None else (),
                    labels=_labels(bucket.bucket(b"labels")),
                )
        images = ns_bucket.bucket(b"images")
        for name, bucket in images.items() if images is not None else ():
            if isinstance(bucket, Bucket):
                target = bucket.bucket(b"target")
                digest = _text(target.get(b"digest")) if target is not None else None
                media = _text(target.get(b"mediatype")) if target is not None else None
                ns.images[_text(name) or ""] = (digest, media)
        blobs = ns_bucket.walk([b"content", b"blob"])
        for digest, bucket in blobs.items() if blobs is not None else ():
            if isinstance(bucket, Bucket):
                size = bucket.get(b"size")
                ns.content[_text(digest) or ""] = None if size is None else varint(size)
    return out


def _container_record(cid: str, bucket: Bucket) -> ContainerRecord:
    runtime = bucket.bucket(b"runtime")
    options = runtime.get(b"options") if runtime is not None else None
    spec_raw = bucket.get(b"spec")
    spec_type, spec_value = protobuf_any(spec_raw) if spec_raw else (None, None)
    spec: object = None
    if spec_value is not None:
        try:
            spec = json.loads(spec_value)
        except ValueError:
            spec = None
    return ContainerRecord(
        id=cid,
        image=_text(bucket.get(b"image")) or None,
        snapshotter=_text(bucket.get(b"snapshotter")),
        snapshot_key=_text(bucket.get(b"snapshotKey")),
        runtime=_text(runtime.get(b"name")) if runtime is not None else None,
        runtime_options=protobuf_any(options)[0] if options else None,
        spec_type=spec_type,
        spec=spec,
        labels=_labels(bucket.bucket(b"labels")),
        created=go_time(bucket.get(b"createdat")),
        updated=go_time(bucket.get(b"updatedat")),
    )


# -- the snapshot table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotRow:
    """One snapshot as ``ctr snapshots info`` and the backend see it (truth/snapshots.tsv's columns)."""

    namespace: str
    key: str
    kind: str
    parent_key: str | None
    backend_key: str
    backend_id: str | None
    backend_parent_id: str | None
    children: tuple[str, ...]
    labels: dict[str, str]
    containers: tuple[str, ...]


def snapshot_rows(files: dict[bytes, bytes]) -> list[SnapshotRow]:
    """Every snapshot of every namespace, from the two databases (raises BoltError)."""
    backend = read_backend(files[BACKEND_DB], BACKEND_DB.decode())
    meta = read_meta(files[META_DB], META_DB.decode())
    rows = []
    for key, record in sorted(backend.items()):
        ns = meta.get(record.namespace, Namespace())
        client = ns.snapshots.get(record.client_key)
        parent = backend.get(record.parent or "")
        users = tuple(
            sorted(
                c.id
                for c in ns.containers.values()
                if c.snapshot_key == record.client_key and c.snapshotter == SNAPSHOTTER_NAME
            )
        )
        rows.append(
            SnapshotRow(
                namespace=record.namespace,
                key=record.client_key,
                kind=record.kind_name,
                parent_key=parent.client_key if parent is not None else None,
                backend_key=key,
                backend_id=record.id,
                backend_parent_id=parent.id if parent is not None else None,
                children=client.children if client is not None else (),
                labels=client.labels if client is not None else {},
                containers=users,
            )
        )
    return rows


# -- the engine ------------------------------------------------------------------------------------------


def _root_before(parts: list[bytes], index: int) -> bytes:
    return b"/".join(parts[:index])


class Containerd:
    name = "containerd-overlayfs"

    def detect(self, exists: Callable[[bytes], bool]) -> str | None:
        if exists(SNAPSHOTTER) and (exists(META_DB) or exists(BACKEND_DB)):
            return None
        if exists(b"containerd/daemon/" + BACKEND_DB):
            return (
                "it is a Docker data root whose containerd store is in containerd/daemon/: "
                "collect that directory"
            )
        return f"it has no {SNAPSHOTTER.decode()}/ with {META_DB.decode()} or its metadata.db"

    def find_root(self, member: bytes) -> bytes | None:
        """The containerd root above a member that only a populated overlayfs snapshotter has.

        ``.../io.containerd.snapshotter.v1.overlayfs/metadata.db`` or ``snapshots/<id>/...``;
        for a root that is not Docker's own ``containerd/daemon`` also ``meta.db`` and content
        blobs, which may come first in an archive. Docker 20.10 to 28 keep an unused containerd
        tree in ``containerd/daemon`` (a meta.db, empty ``snapshots/``) next to ``overlay2/``:
        it is never taken for a containerd root.
        """
        parts = member.rstrip(b"/").split(b"/")
        for index, part in enumerate(parts):
            below = parts[index + 1 :]
            if part == SNAPSHOTTER and below:
                if below[0] == b"metadata.db" and len(below) == 1:
                    return _root_before(parts, index)
                if below[0] == b"snapshots" and len(below) >= 3 and below[2] in (b"fs", b"work"):
                    return _root_before(parts, index)
            if parts[max(index - 2, 0) : index] == [b"containerd", b"daemon"]:
                continue
            if part == METADATA and below == [b"meta.db"]:
                return _root_before(parts, index)
            if (
                part == CONTENT
                and len(below) == 3
                and below[0] == b"blobs"
                and _HEX64.match(_text(below[2]) or "")
            ):
                return _root_before(parts, index)
        return None

    def classify(self, rel: bytes, kind: Kind) -> Visit:
        parts = rel.split(b"/")
        top = parts[0]
        depth = len(parts)
        is_dir = kind is Kind.DIR
        if depth == 1:
            return WALK if is_dir and top in _TOP else SKIP
        if top == SNAPSHOTTER:
            return self._classify_snapshotter(parts, depth, kind)
        if top == METADATA:
            return READ if depth == 2 and parts[1] == b"meta.db" and not is_dir else SKIP
        if top == CONTENT:
            if parts[1] != b"blobs":
                return SKIP
            if depth <= 3:
                return WALK if is_dir else SKIP
            if depth == 4 and kind is Kind.FILE:
                return Visit(Action.READ, limit=BLOB_LIMIT)
            return SKIP
        if top == TASKS:
            if depth == 2:
                return WALK if is_dir else SKIP
            return NOTE if depth == 3 else SKIP
        return SKIP

    @staticmethod
    def _classify_snapshotter(parts: list[bytes], depth: int, kind: Kind) -> Visit:
        if parts[1] == b"metadata.db":
            return READ if depth == 2 and kind is not Kind.DIR else SKIP
        if parts[1] != b"snapshots":
            return SKIP
        if depth == 2:
            return WALK if kind is Kind.DIR else SKIP
        if depth == 3:
            return WALK if kind is Kind.DIR else SKIP
        layer_id = parts[2].decode("utf-8", "surrogateescape")
        if parts[3] == b"fs":
            inner = b"/" + b"/".join(parts[4:]) if depth > 4 else b"/"
            return Visit(Action.ENTRY, layer_id, inner)
        return NOTE if depth == 4 else SKIP

    def discover(self, gathered: Gathered) -> Discovered:
        return _Discovery(gathered).run()


# -- discovery ----------------------------------------------------------------------------------------


def blob_path(digest: str) -> bytes | None:
    """``sha256:<hex>`` -> its path in the content store; None for anything else."""
    algorithm, _, hex_ = digest.partition(":")
    if algorithm != "sha256" or not _HEX64.match(hex_):
        return None
    return BLOBS + b"/sha256/" + hex_.encode()


@dataclass
class _ImageParts:
    config_digest: str | None = None
    config: dict[str, object] | None = None
    config_text: str | None = None
    problem: str | None = None


class _Discovery:
    """One discover() run: the databases parsed once, each missing piece a warning."""

    def __init__(self, gathered: Gathered) -> None:
        self.gathered = gathered
        self.files = gathered.files
        self.warnings: list[str] = []
        self.image_ids: dict[tuple[str, str], str] = {}  # (namespace, image name) -> image id

    # -- inputs ----------------------------------------------------------------------

    def _database(self, path: bytes, reader: Callable[[bytes, str], dict], consequence: str) -> dict | None:  # type: ignore[type-arg]
        raw = self.files.get(path)
        if raw is None:
            why = "is too large to read" if path in self.gathered.noted else "is missing"
            self.warnings.append(f"{path.decode()} {why}; {consequence}.")
            return None
        try:
            return reader(raw, path.decode())
        except BoltError as exc:
            self.warnings.append(f"{exc} {consequence[0].upper()}{consequence[1:]}.")
            return None

    def _snapshot_dirs(self) -> set[str]:
        ids = set(self.gathered.layer_roots)
        prefix = SNAPSHOTS + b"/"
        for path in list(self.files) + list(self.gathered.noted):
            if path.startswith(prefix):
                rest = path[len(prefix) :].split(b"/")
                if len(rest) >= 2:
                    ids.add(rest[0].decode("utf-8", "surrogateescape"))
        return ids

    def _blob(self, digest: str | None) -> tuple[bytes | None, str | None]:
        """A content blob's bytes, or why there are none."""
        path = blob_path(digest or "")
        if path is None:
            return None, f"digest {digest!r} is not a sha256 digest"
        raw = self.files.get(path)
        if raw is not None:
            return raw, None
        if path in self.gathered.noted:
            return None, f"blob {digest} is larger than {BLOB_LIMIT >> 20} MiB and was not read"
        return None, f"blob {digest} is not in the content store"

    def _json_blob(self, digest: str | None) -> tuple[dict[str, object] | None, str | None, str | None]:
        raw, problem = self._blob(digest)
        if raw is None:
            return None, None, problem
        text = raw.decode("utf-8", "surrogateescape")
        try:
            data = json.loads(raw)
        except ValueError:
            return None, text, f"blob {digest} is not valid JSON"
        if not isinstance(data, dict):
            return None, text, f"blob {digest} is not a JSON object"
        return data, text, None

    def _config_diff_ids(self) -> dict[str, str]:
        """chain id -> diff id, from every image config in the content store."""
        out: dict[str, str] = {}
        prefix = BLOBS + b"/sha256/"
        for path, raw in self.files.items():
            if not path.startswith(prefix) or not raw.startswith(b"{") or b"diff_ids" not in raw:
                continue
            try:
                data = json.loads(raw)
            except ValueError:
                continue
            diff_ids = _diff_ids(data)
            for chain, diff in zip(chain_ids(diff_ids), diff_ids, strict=True):
                out[chain] = diff
        return out

    # -- the run ------------------------------------------------------------------------

    def run(self) -> Discovered:
        dirs = self._snapshot_dirs()
        backend = self._database(
            BACKEND_DB,
            read_backend,
            "snapshot ids, kinds and parents are unknown: every snapshot directory is listed as an "
            "orphan layer, and no container can be matched to its directory",
        )
        meta = self._database(
            META_DB,
            read_meta,
            "containers are found from their active snapshots only (no images, labels or specs)",
        )
        self.backend: dict[str, BackendSnapshot] = backend or {}
        self.backend_read = backend is not None
        self.meta: dict[str, Namespace] | None = meta
        self.by_client: dict[tuple[str, str], list[BackendSnapshot]] = {}
        for record in self.backend.values():
            self.by_client.setdefault((record.namespace, record.client_key), []).append(record)
        self.dirs = dirs
        self.by_id: dict[str, BackendSnapshot] = {}
        for record in sorted(self.backend.values(), key=lambda r: r.key):
            if record.id is None:
                self.warnings.append(f"snapshot {record.key} in metadata.db has no id")
                continue
            if record.id in self.by_id:
                self.warnings.append(
                    f"snapshots {self.by_id[record.id].key} and {record.key} in metadata.db "
                    f"share id {record.id}"
                )
                continue
            self.by_id[record.id] = record
            if record.id not in dirs:
                self.warnings.append(
                    f"snapshot {record.key} ({KINDS.get(record.kind or 0, 'unknown kind')}) is in "
                    f"metadata.db but its directory {SNAPSHOTS.decode()}/{record.id} is gone"
                )
        self.chains = {sid: self._chain(sid) for sid in sorted(dirs | set(self.by_id))}

        image_layers, self.chain_of = self._image_layers()
        images = self._images()
        containers = self._containers()
        layers = self._layers(containers)
        return Discovered(layers, image_layers, images, containers, [], self.warnings)

    # -- chains -----------------------------------------------------------------------

    def _chain(self, snapshot_id: str) -> tuple[tuple[str, ...], str | None]:
        """Parent ids of a snapshot, nearest first, and why the chain is broken (if it is)."""
        record = self.by_id.get(snapshot_id)
        if record is None:
            return (), None
        out: list[str] = []
        parent = record.parent
        while parent:
            above = self.backend.get(parent)
            if above is None or above.id is None:
                return tuple(out), f"parent {parent} of snapshot {record.key} is not in metadata.db"
            if above.id == snapshot_id or above.id in out:
                return tuple(out), f"the parent chain of snapshot {record.key} has a cycle at {parent}"
            if above.id not in self.dirs:
                out.append(above.id)
                return tuple(out), (
                    f"snapshot {above.key} below {record.key} is gone "
                    f"({SNAPSHOTS.decode()}/{above.id} does not exist)"
                )
            out.append(above.id)
            parent = above.parent
        return tuple(out), None

    # -- image layers -------------------------------------------------------------------

    def _qualified(self) -> Iterator[tuple[str, BackendSnapshot]]:
        """Committed image-layer snapshots (client key ``sha256:<chain id>``), namespaces in byte order."""
        for record in sorted(self.backend.values(), key=lambda r: (r.namespace, r.client_key, r.key)):
            if record.kind == COMMITTED and _CHAIN_KEY.match(record.client_key) and record.id is not None:
                yield record.namespace, record

    def _image_layers(self) -> tuple[list[ImageLayer], dict[tuple[str, str], str]]:
        """One record per committed layer snapshot; (namespace, chain id) -> the chain id stored."""
        diff_of = self._config_diff_ids()
        stored: dict[tuple[str, str], str] = {}
        taken: set[str] = set()
        for ns, record in self._qualified():
            chain = record.client_key
            if (ns, chain) in stored:
                continue
            name = chain if chain not in taken else f"{chain}@{ns}"
            taken.add(name)
            stored[(ns, chain)] = name
        out = []
        done: set[tuple[str, str]] = set()
        for ns, record in self._qualified():
            chain = record.client_key
            if (ns, chain) in done:
                continue
            done.add((ns, chain))
            parent = self.backend.get(record.parent or "")
            parent_name = None
            if parent is not None:
                parent_name = stored.get((parent.namespace, parent.client_key)) or parent.client_key
            out.append(
                ImageLayer(
                    chain_id=stored[(ns, chain)],
                    diff_id=diff_of.get(chain),
                    parent=parent_name,
                    layer_id=record.id,
                    size=record.size,
                    tar_split=None,
                    unverifiable=NO_TAR_SPLIT,
                )
            )
        return sorted(out, key=lambda r: r.chain_id), stored

    def _snapshot_id(self, ns: str, client_key: str) -> str | None:
        """The directory of a namespace's snapshot: via meta.db's record, else the backend key's shape."""
        space = (self.meta or {}).get(ns)
        client = space.snapshots.get(client_key) if space is not None else None
        if client is not None and client.name in self.backend:
            return self.backend[client.name].id
        matches = self.by_client.get((ns, client_key), [])
        if len(matches) == 1:
            return matches[0].id
        return None

    def _backend_of(self, ns: str, client_key: str) -> BackendSnapshot | None:
        sid = self._snapshot_id(ns, client_key)
        return self.by_id.get(sid) if sid is not None else None

    # -- images ---------------------------------------------------------------------------

    def _resolve(self, ns: str, digest: str | None, media: str | None) -> _ImageParts:
        """Target -> (index ->) manifest -> config; for an index, the platform this namespace unpacked."""
        data, _, problem = self._json_blob(digest)
        if data is None:
            return _ImageParts(problem=f"its target {problem}")
        if media in _INDEX_TYPES or isinstance(data.get("manifests"), list):
            candidates = []
            for item in data.get("manifests") or []:
                if not isinstance(item, dict) or not isinstance(item.get("digest"), str):
                    continue
                manifest, _, _ = self._json_blob(item["digest"])
                if manifest is not None:
                    candidates.append(manifest)
            if not candidates:
                return _ImageParts(problem=f"no manifest of index {digest} is in the content store")
            chosen = None
            for manifest in candidates:
                parts = self._manifest_config(manifest)
                if parts.config is not None:
                    top = chain_ids(_diff_ids(parts.config))
                    if top and self._snapshot_id(ns, top[-1]) is not None:
                        return parts
                    chosen = chosen or parts
            return chosen or _ImageParts(problem=f"no manifest of index {digest} has its config blob")
        return self._manifest_config(data)

    def _manifest_config(self, manifest: dict[str, object]) -> _ImageParts:
        config = manifest.get("config")
        digest = config.get("digest") if isinstance(config, dict) else None
        if not isinstance(digest, str):
            return _ImageParts(problem="its manifest names no config")
        data, text, problem = self._json_blob(digest)
        return _ImageParts(digest, data, text, None if problem is None else f"its config {problem}")

    def _images(self) -> list[Image]:
        if self.meta is None:
            return []
        # One image per config and namespace; an image whose config cannot be read is named by its target.
        found: dict[tuple[str, str], tuple[list[str], _ImageParts]] = {}
        for ns in sorted(self.meta):
            for name, (digest, media) in sorted(self.meta[ns].images.items()):
                parts = self._resolve(ns, digest, media)
                key = (ns, parts.config_digest if parts.config is not None else (digest or f"{ns}/{name}"))
                found.setdefault(key, ([], parts))[0].append(f"{ns}/{name}")
        taken: set[str] = set()
        images = []
        for (ns, address), (tags, parts) in sorted(found.items()):
            image_id = address if address not in taken else f"{address}@{ns}"
            taken.add(image_id)
            for tag in tags:
                self.image_ids[(ns, tag.split("/", 1)[1])] = image_id
            if parts.config is None or parts.config_digest is None:
                problem = f"image {tags[0]}: {parts.problem}; its layers are unknown"
                self.warnings.append(problem)
                images.append(
                    Image(
                        id=image_id, tags=tuple(sorted(tags)), config_json=parts.config_text, problem=problem
                    )
                )
                continue
            diff_ids = _diff_ids(parts.config)
            layers: list[str] = []
            problem = None
            for chain in chain_ids(diff_ids):
                sid = self._snapshot_id(ns, chain)
                if sid is None:
                    problem = (
                        f"image {tags[0]} names layer {chain}, which no snapshot of namespace {ns} holds "
                        "(not unpacked, or its snapshot is gone)"
                    )
                    break
                layers.append(sid)
                if sid not in self.dirs:
                    problem = f"image {tags[0]} names snapshot {sid}, whose directory is gone"
                    break
            created = parts.config.get("created")
            images.append(
                Image(
                    id=image_id,
                    tags=tuple(sorted(tags)),
                    created=created if isinstance(created, str) else None,
                    diff_ids=tuple(diff_ids),
                    layers=tuple(layers),
                    config_json=parts.config_text,
                    problem=problem,
                )
            )
        return sorted(images, key=lambda i: i.id)

    # -- containers ------------------------------------------------------------------------

    def _containers(self) -> list[Container]:
        containers: list[Container] = []
        claimed: set[str] = set()
        tasks = self._task_dirs()
        for ns in sorted(self.meta or {}):
            for _cid, record in sorted((self.meta or {})[ns].containers.items()):
                container = self._container(ns, record, tasks)
                if container.upper_layer:
                    claimed.add(container.upper_layer)
                containers.append(container)
        # Structural: Active snapshots no container record names (all of them when meta.db is unreadable).
        for record in sorted(self.backend.values(), key=lambda r: r.key):
            if record.kind != ACTIVE or record.id is None or record.id in claimed:
                continue
            if record.client_key.startswith("extract-"):
                self.warnings.append(
                    f"snapshot {record.key} ({SNAPSHOTS.decode()}/{record.id}) is an unfinished layer unpack"
                )
                continue
            name = f"{record.namespace}/{record.client_key}"
            if any(c.id == name for c in containers):  # a record of that id uses another snapshot
                name = f"{name}@{record.id}"
            if self.meta is not None:
                self.warnings.append(
                    f"active snapshot {record.key} ({SNAPSHOTS.decode()}/{record.id}) is used by no "
                    "container record; it is listed as a container found by structure only"
                )
                why = "no container record names it"
            else:
                why = "meta.db could not be read"
            problem = (
                f"container {name} was found by structure only ({why}): its active snapshot "
                f"{record.key} is {SNAPSHOTS.decode()}/{record.id}"
            )
            chain, chain_problem = self.chains.get(record.id, ((), None))
            parent = self.backend.get(record.parent or "")
            containers.append(
                Container(
                    id=name,
                    name=name,
                    created=record.created,
                    upper_layer=record.id,
                    chain=chain,
                    top_chain_id=self._top_chain_id(record.namespace, parent),
                    problem=problem if chain_problem is None else f"{problem}; {chain_problem}",
                    config_json=json.dumps(
                        {
                            "namespace": record.namespace,
                            "snapshot": _snapshot_json(record),
                            "task_directory": (record.namespace, record.client_key) in tasks,
                        },
                        sort_keys=True,
                    ),
                )
            )
        return sorted(containers, key=lambda c: c.id)

    def _task_dirs(self) -> set[tuple[str, str]]:
        out = set()
        for path in self.gathered.noted:
            parts = path.split(b"/")
            if len(parts) == 3 and parts[0] == TASKS:
                out.add((_text(parts[1]) or "", _text(parts[2]) or ""))
        return out

    def _top_chain_id(self, ns: str, parent: BackendSnapshot | None) -> str | None:
        if parent is None:
            return None
        return self.chain_of.get((ns, parent.client_key))

    def _container(self, ns: str, record: ContainerRecord, tasks: set[tuple[str, str]]) -> Container:
        name = f"{ns}/{record.id}"
        problems: list[str] = []
        upper: str | None = None
        chain: tuple[str, ...] = ()
        snapshot: BackendSnapshot | None = None
        if not record.snapshotter:
            problems.append(
                f"container {name} names no snapshotter: its file system is not in containerd's store "
                "(Docker 20.10 to 28 keep it in their overlay2/)"
            )
        elif record.snapshotter != SNAPSHOTTER_NAME:
            problems.append(
                f"container {name} uses snapshotter {record.snapshotter or '(none)'}; "
                f"o2f captures only {SNAPSHOTTER_NAME}"
            )
        elif not record.snapshot_key:
            problems.append(f"container {name} has no snapshot key")
        elif not self.backend_read:
            problems.append(
                f"the snapshotter's metadata.db could not be read: snapshot {record.snapshot_key} of "
                f"container {name} cannot be matched to a directory"
            )
        else:
            snapshot = self._backend_of(ns, record.snapshot_key)
            if snapshot is None:
                problems.append(
                    f"snapshot {record.snapshot_key} of container {name} is not in the snapshotter's "
                    "metadata.db"
                )
            else:
                upper = snapshot.id
                chain, chain_problem = self.chains.get(snapshot.id or "", ((), None))
                if snapshot.id not in self.dirs:
                    problems.append(
                        f"the snapshot of container {name} ({SNAPSHOTS.decode()}/{snapshot.id}) is gone"
                    )
                elif chain_problem:
                    problems.append(chain_problem)
                if snapshot.kind != ACTIVE:
                    problems.append(f"the snapshot of container {name} is a {snapshot.kind_name} snapshot")
        image_id = self.image_ids.get((ns, record.image or "")) if record.image else None
        parent = self.backend.get(snapshot.parent or "") if snapshot is not None else None
        config = {
            "namespace": ns,
            "id": record.id,
            "image": record.image,
            "snapshotter": record.snapshotter,
            "snapshotKey": record.snapshot_key,
            "snapshot": _snapshot_json(snapshot) if snapshot is not None else None,
            "runtime": {"name": record.runtime, "options": record.runtime_options},
            "labels": record.labels,
            "createdAt": record.created,
            "updatedAt": record.updated,
            # io.containerd.runtime.v2.task/<ns>/<id>/ exists while a task exists (running, or stopped
            # and not deleted); containerd's metadata records no process state.
            "task_directory": (ns, record.id) in tasks,
            "spec_type": record.spec_type,
            "spec": record.spec,
        }
        return Container(
            id=name,
            name=name,
            image=record.image,
            image_id=image_id,
            created=record.created,
            upper_layer=upper,
            chain=chain,
            top_chain_id=self._top_chain_id(ns, parent),
            mounts_json=json.dumps(_bind_mounts(record.spec), sort_keys=True),
            labels_json=json.dumps(record.labels, sort_keys=True),
            config_json=json.dumps(config, sort_keys=True),
            problem="; ".join(problems) or None,
        )

    # -- layers ------------------------------------------------------------------------------

    def _layers(self, containers: list[Container]) -> list[Layer]:
        uppers = {c.upper_layer for c in containers if c.upper_layer}
        unknown = sorted(sid for sid in self.dirs if sid not in self.by_id)
        if unknown and self.backend_read:
            self.warnings.append(
                f"{len(unknown)} snapshot directories are not in metadata.db and are listed as orphan "
                f"layers: {', '.join(unknown)}"
            )
        layers = []
        for sid in sorted(self.dirs):
            record = self.by_id.get(sid)
            chain, problem = self.chains.get(sid, ((), None))
            base = SNAPSHOTS + b"/" + sid.encode("utf-8", "surrogateescape")
            has_fs = sid in self.gathered.layer_roots
            if not has_fs:
                problem = f"snapshot {sid} has no fs/ directory"
            if sid in uppers:
                role = LayerRole.CONTAINER
            elif record is None:
                role = LayerRole.ORPHAN
            else:
                role = LayerRole.IMAGE  # committed, a view, or an unfinished unpack
            layers.append(
                Layer(
                    id=sid,
                    role=role,
                    committed=record is not None and record.kind == COMMITTED,
                    has_work=base + b"/work" in self.gathered.noted,
                    has_merged=False,
                    has_diff=has_fs,
                    diff_path=base + b"/fs",
                    chain=chain,
                    problem=problem,
                )
            )
        return layers


# -- helpers ------------------------------------------------------------------------------------------


def _diff_ids(config: dict[str, object]) -> list[str]:
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    return [d for d in diff_ids if isinstance(d, str)] if isinstance(diff_ids, list) else []


def _snapshot_json(record: BackendSnapshot) -> dict[str, object]:
    return {
        "backend_key": record.key,
        "id": record.id,
        "kind": record.kind_name,
        "parent": record.parent,
        "created": record.created,
        "labels": record.labels,
    }


def _bind_mounts(spec: object) -> dict[str, dict[str, object]]:
    """Bind mounts of the OCI spec by destination (Docker's MountPoints shape)."""
    out: dict[str, dict[str, object]] = {}
    mounts = spec.get("mounts") if isinstance(spec, dict) else None
    for mount in mounts if isinstance(mounts, list) else ():
        if not isinstance(mount, dict) or not isinstance(mount.get("destination"), str):
            continue
        options = mount.get("options") if isinstance(mount.get("options"), list) else []
        if mount.get("type") == "bind" or "bind" in options or "rbind" in options:
            out[mount["destination"]] = {
                "Type": "bind",
                "Source": mount.get("source"),
                "Destination": mount["destination"],
                "Options": options,
            }
    return out
