"""Record streams into a snapshot file, in batched transactions.

The snapshot says ``complete = 0`` from its first write until the capture has
finished, so an interrupted or failed capture never looks whole. Provenance
and the records digest are written last.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator

from forensics.errors import SnapshotError, SnapshotExistsError
from forensics.model import (
    CaptureError,
    Container,
    Entry,
    Image,
    ImageLayer,
    Kind,
    Layer,
    LayerCheck,
    LayerFinding,
    MetadataFile,
    Mount,
    Provenance,
    Xattrs,
    clean_text,
    xattr_name_to_text,
)
from forensics.model import path_to_text as _t
from forensics.store import schema
from forensics.store.reader import (
    ENTRY_DIGEST_COLUMNS,
    EntryDigests,
    Hasher,
    entry_digests,
    layer_entries,
    records_digest,
)

EntryFlags = Callable[[Entry], tuple[int, int, str | None]]
"""(whiteout, opaque, overlay-private xattr names as JSON) for an entry."""

_BATCH = 5000

# Python's sqlite3 binds None by looking for an adapter, missing, then trying __adapt__ and
# __conform__: about 0.3 us per value, as much as the rest of an entries row with its usual
# eight NULLs. A registered adapter is found at once; it returns the None, bound as NULL.
sqlite3.register_adapter(type(None), lambda value: value)

_INSERT_ENTRY = "INSERT INTO entries ({}) VALUES ({})".format(
    ", ".join(ENTRY_DIGEST_COLUMNS), ", ".join("?" * len(ENTRY_DIGEST_COLUMNS))
)
_REUSED = ENTRY_DIGEST_COLUMNS.index("hash_reused")


def _json(value: object) -> str:
    return json.dumps(_cleaned(value), sort_keys=True, ensure_ascii=False)


def _cleaned(value: object) -> object:
    """Every string inside a JSON-able value, made storable (clean_text)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): _cleaned(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_cleaned(v) for v in value]
    return value


def _row(record: dict[str, object], columns: list[str]) -> tuple[object, ...]:
    """A record's values in column order, every text value made storable (clean_text)."""
    return tuple(clean_text(v) if isinstance(v, str) else v for v in map(record.get, columns))


def _xattrs_json(entry: Entry) -> str | None:
    if not entry.xattrs:
        return None
    return json.dumps({xattr_name_to_text(name): value.hex() for name, value in entry.xattrs}, sort_keys=True)


class EntryEncoder:
    """Turns entries into entries rows (the columns after ``id``): the hot path of a capture.

    ``encoder(entry)`` takes an Entry; ``encoder.fields(...)`` takes the same values
    positionally, in Entry's field order, so that a directory source's worker processes
    build no Entry at all. It needs nothing but its arguments: it runs in forked processes.

    *flags* is asked only about entries that have xattrs or are character devices: every
    overlay marker is one of those (a whiteout is a char device, R1; opaque and private
    are xattrs, R2 and R5), and every other entry has none.
    """

    __slots__ = ("_flags", "_layers")

    def __init__(self, flags: EntryFlags) -> None:
        self._flags = flags
        self._layers: dict[str, str] = {}

    def __call__(self, entry: Entry) -> tuple:  # type: ignore[type-arg]
        return self.fields(*_entry_fields(entry))

    def fields(
        self,
        layer_id: str,
        path: bytes,
        kind: Kind,
        mode: int,
        uid: int,
        gid: int,
        size: int | None,
        mtime_ns: int | None,
        atime_ns: int | None = None,
        ctime_ns: int | None = None,
        inode: int | None = None,
        nlink: int | None = None,
        rdev_major: int | None = None,
        rdev_minor: int | None = None,
        target: bytes | None = None,
        xattrs: Xattrs = (),
        blake3: str | None = None,
        link_group: int | None = None,
        dev: int | None = None,
        hash_reused: bool = False,
        head: bytes | None = None,
    ) -> tuple:  # type: ignore[type-arg]
        layer = self._layers.get(layer_id)
        if layer is None:
            layer = self._layers[layer_id] = clean_text(layer_id)
        if xattrs or kind is Kind.CHAR:
            entry = Entry(
                layer_id, path, kind, mode, uid, gid, size, mtime_ns, atime_ns, ctime_ns, inode, nlink,
                rdev_major, rdev_minor, target, xattrs, blake3, link_group, dev, hash_reused, head,
            )  # fmt: skip
            whiteout, opaque, private = self._flags(entry)
            xattrs_text = _xattrs_json(entry) if xattrs else None
        else:
            whiteout = opaque = 0
            private = xattrs_text = None
        return (
            layer,
            _t(path),
            kind._value_,  # the plain str: a str subclass (the enum) takes sqlite3's slow path
            mode,
            uid,
            gid,
            size,
            atime_ns,
            mtime_ns,
            ctime_ns,
            inode,
            dev,
            nlink,
            rdev_major,
            rdev_minor,
            None if target is None else _t(target),
            xattrs_text,
            blake3,
            head,
            1 if hash_reused else 0,
            link_group,
            whiteout,
            opaque,
            private,
        )


def _entry_fields(entry: Entry) -> tuple:  # type: ignore[type-arg]
    """An Entry's values in its field order (what EntryEncoder.fields takes)."""
    return tuple(getattr(entry, name) for name in _ENTRY_FIELDS)


_ENTRY_FIELDS = tuple(f.name for f in dataclasses.fields(Entry))


class SnapshotWriter:
    """Creates one snapshot file and fills it."""

    def __init__(
        self,
        path: str,
        *,
        force: bool = False,
        encode: EntryEncoder,
        new_hasher: Callable[[], Hasher],
    ) -> None:
        self.path = path
        if os.path.lexists(path):
            if not force:
                raise SnapshotExistsError(f"snapshot {path} already exists (use --force to replace it).")
            for suffix in ("", "-journal", "-wal", "-shm"):
                if os.path.lexists(path + suffix):
                    os.unlink(path + suffix)
        try:
            self.conn = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise SnapshotError(f"cannot create snapshot {path}: {exc}.") from None
        # 64 KiB pages: a fifth fewer page writes and reads than 4 KiB while the rows go in and the
        # indexes are built, for at most a page of slack per table in a small snapshot.
        self.conn.execute("PRAGMA page_size = 65536")
        self.conn.execute("PRAGMA journal_mode = OFF")
        self.conn.execute("PRAGMA synchronous = OFF")
        self.conn.execute(f"PRAGMA application_id = {0x6F326673}")  # 'o2fs'
        self.conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")
        self.encode = encode
        self.new_hasher = new_hasher
        self._digests = EntryDigests(new_hasher)
        self._dirty_layers: set[str] = set()  # rows changed after their digest was taken (relinks)
        self._entries: list[tuple[object, ...]] = []
        self._errors: list[tuple[object, ...]] = []
        self._relinks: list[tuple[int, str, str]] = []
        self._next_error = 1
        self.hashes_reused = 0  # entries written with hash_reused (provenance.hashes_reused)
        self._layer_texts: dict[str, str] = {}
        self._create()

    def _layer_text(self, layer_id: str) -> str:
        text = self._layer_texts.get(layer_id)
        if text is None:
            text = self._layer_texts[layer_id] = clean_text(layer_id)
        return text

    def _insert(self, table: str, records: Iterable[dict[str, object]]) -> None:
        """Rows given as column -> value, every text value made storable (clean_text)."""
        columns = schema.table(table).column_names
        names = ", ".join(f"[{c}]" for c in columns)
        self.conn.executemany(
            f"INSERT INTO [{table}] ({names}) VALUES ({', '.join('?' * len(columns))})",
            (_row(r, columns) for r in records),
        )

    def _create(self) -> None:
        for statement in schema.create_statements():
            self.conn.execute(statement)
        self._insert(
            "_o2f_meta",
            [
                {"key": "application", "value": schema.APPLICATION},
                {"key": "schema_version", "value": str(schema.SCHEMA_VERSION)},
            ],
        )

    # -- streaming ----------------------------------------------------------------

    def begin(self, provenance: Provenance) -> None:
        self.conn.execute("BEGIN")
        self._write_provenance(provenance)
        self.conn.execute("COMMIT")
        self.conn.execute("BEGIN")

    def add_entry(self, entry: Entry) -> None:
        row = self.encode(entry)
        self._digests.add((row,))  # hashed in the order rows are inserted: row id order
        self._entries.append(row)
        if len(self._entries) >= _BATCH:
            self._flush_entries()

    def add_rows(self, rows: list[tuple], encoded: bytes | None = None) -> None:  # type: ignore[type-arg]
        """Entries rows made by :attr:`encode`, in walk order.

        *encoded*: the same rows of one layer already in the digest encoding
        (``reader.encode_rows``), as a worker process sent them.
        """
        if encoded is None:
            self._digests.add(rows)
        else:
            self._digests.add_encoded(rows[0][0], len(rows), encoded)
        self._entries.extend(rows)
        if len(self._entries) >= _BATCH:
            self._flush_entries()

    def _flush_entries(self) -> None:
        rows = self._entries
        if rows:
            self.hashes_reused += sum(row[_REUSED] for row in rows)
            self.conn.executemany(_INSERT_ENTRY, rows)
            self._entries = []

    def add_error(self, error: CaptureError) -> None:
        self._errors.append(
            (
                self._next_error,
                _t(error.path),
                None if error.layer_id is None else self._layer_text(error.layer_id),
                error.operation,
                error.errno,
                clean_text(error.message),
            )
        )
        self._next_error += 1

    def relink(self, layer_id: str, path: bytes, link_group: int) -> None:
        layer = self._layer_text(layer_id)
        self._relinks.append((link_group, layer, _t(path)))
        self._dirty_layers.add(layer)

    def add_metadata_files(self, files: Iterable[MetadataFile]) -> None:
        self.conn.executemany(
            "INSERT OR REPLACE INTO metadata_files (path, size, content) VALUES (?,?,?)",
            ((_t(f.path), len(f.content), f.content) for f in files),
        )

    # -- after the walk -------------------------------------------------------------

    def add_layers(self, layers: Iterable[Layer], links: Iterable[tuple[str, bytes, str | None]]) -> None:
        self._insert(
            "layers",
            (
                {
                    "id": layer.id,
                    "name": layer.id[:12] + ("-init" if layer.id.endswith("-init") else ""),
                    "role": layer.role.value,
                    "link": layer.link,
                    "lower": layer.lower,
                    "committed": int(layer.committed),
                    "has_work": int(layer.has_work),
                    "has_merged": int(layer.has_merged),
                    "has_diff": int(layer.has_diff),
                    "diff_path": _t(layer.diff_path),
                    "chain": _json(list(layer.chain)),
                    "problem": layer.problem,
                }
                for layer in layers
            ),
        )
        self._insert(
            "links",
            ({"name": name, "target": _t(target), "layer_id": layer} for name, target, layer in links),
        )

    def add_image_layers(self, records: Iterable[ImageLayer]) -> None:
        self._insert(
            "image_layers",
            (
                {
                    "chain_id": r.chain_id,
                    "diff_id": r.diff_id,
                    "parent": r.parent,
                    "layer_id": r.layer_id,
                    "size": r.size,
                    "has_tar_split": int(r.tar_split is not None),
                    "tar_split": r.tar_split,
                }
                for r in records
            ),
        )

    def add_images(self, images: Iterable[Image]) -> None:
        self._insert(
            "images",
            (
                {
                    "id": image.id,
                    "name": image.tags[0] if image.tags else image.id.removeprefix("sha256:")[:12],
                    "tags": _json(list(image.tags)),
                    "created": image.created,
                    "parent": image.parent,
                    "diff_ids": _json(list(image.diff_ids)),
                    "layers": _json(list(image.layers)),
                    "config": image.config_json,
                    "problem": image.problem,
                }
                for image in images
            ),
        )

    def add_containers(self, containers: Iterable[Container]) -> None:
        self._insert(
            "containers",
            (
                {
                    "id": c.id,
                    "name": c.name or c.id,
                    "image": c.image,
                    "image_id": c.image_id,
                    "created": c.created,
                    "state": c.state,
                    "exit_code": c.exit_code,
                    "started_at": c.started_at,
                    "finished_at": c.finished_at,
                    "upper_layer": c.upper_layer,
                    "init_layer": c.init_layer,
                    "chain": _json(list(c.chain)),
                    "top_chain_id": c.top_chain_id,
                    "mount_points": c.mounts_json,
                    "labels": c.labels_json,
                    "config": c.config_json,
                    "hostconfig": c.hostconfig_json,
                    "problem": c.problem,
                }
                for c in containers
            ),
        )

    def add_mounts(self, mounts: Iterable[Mount]) -> None:
        self._insert(
            "mounts",
            (
                {
                    "id": index,
                    "mount_id": m.mount_id,
                    "parent_id": m.parent_id,
                    "major_minor": m.major_minor,
                    "root": None if m.root is None else _t(m.root),
                    "mount_point": _t(m.mount_point),
                    "fs_type": m.fs_type,
                    "source": _t(m.source),
                    "options": m.options,
                    "super_options": m.super_options,
                    "lowerdirs": _json([_t(d) for d in m.lowerdirs]) if m.lowerdirs else None,
                    "upperdir": None if m.upperdir is None else _t(m.upperdir),
                    "workdir": None if m.workdir is None else _t(m.workdir),
                    "line": m.line,
                }
                for index, m in enumerate(mounts, 1)
            ),
        )

    def layer_entries(self, layer_ids: list[str]) -> Iterator[tuple[str, list[Entry]]]:
        """The entries written so far for these layers, one layer at a time in id order (call flush first)."""
        return layer_entries(self.conn, layer_ids)

    def add_layer_checks(self, checks: Iterable[LayerCheck]) -> None:
        self._insert(
            "layer_checks",
            (
                {
                    "layer_id": c.layer_id,
                    "chain_id": c.chain_id,
                    "diff_id": c.diff_id,
                    "verdict": c.verdict.value,
                    "method": c.method,
                    "computed_diff_id": c.computed_diff_id,
                    "files_checked": c.files_checked,
                    "findings": c.findings,
                    "detail": c.detail,
                }
                for c in checks
            ),
        )

    def add_layer_findings(self, findings: Iterable[LayerFinding]) -> None:
        start = self.conn.execute("SELECT coalesce(max(id), 0) FROM layer_findings").fetchone()[0]
        self._insert(
            "layer_findings",
            (
                {
                    "id": start + number,
                    "layer_id": f.layer_id,
                    "path": _t(f.path),
                    "kind": f.kind.value,
                    "detail": _json(f.detail),
                }
                for number, f in enumerate(findings, 1)
            ),
        )

    def flush(self) -> None:
        """Writes buffered rows; the open transaction stays open."""
        self._flush_entries()
        if self._errors:
            self.conn.executemany(
                "INSERT INTO errors (id, path, layer_id, operation, errno, message) VALUES (?,?,?,?,?,?)",
                self._errors,
            )
            self._errors.clear()
        if self._relinks:
            self.conn.executemany(
                "UPDATE entries SET link_group = ? WHERE layer_id = ? AND path = ?", self._relinks
            )
            self._relinks.clear()

    def finish(self, provenance: Provenance) -> str:
        """Entry digests, indexes, counts, provenance, then the records digest: the snapshot is whole."""
        self.flush()
        digests = self._digests.results()
        if self._dirty_layers:  # rows updated after they were hashed: hash those layers again
            digests.update(entry_digests(self.conn, self.new_hasher, self._dirty_layers))
        self.conn.executemany(
            "INSERT INTO entry_digests (layer_id, entries, digest) VALUES (?,?,?)",
            sorted((layer, count, digest) for layer, (count, digest) in digests.items()),
        )
        for statement in schema.index_statements():
            self.conn.execute(statement)
        provenance.counts = self.counts()
        self._write_provenance(provenance)
        # complete = 1 and the digest are committed together: no whole-looking snapshot without one.
        digest = records_digest(self.conn, self.new_hasher)
        provenance.digest = digest
        self.conn.execute("UPDATE snapshot SET digest = ? WHERE id = 1", (digest,))
        self.conn.execute("COMMIT")
        return digest

    def abort(self, provenance: Provenance) -> None:
        """Keeps what was written, marked incomplete."""
        try:
            self.flush()
            provenance.counts = self.counts()
            provenance.complete = False
            self._write_provenance(provenance)
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")
        except sqlite3.Error:
            pass

    def counts(self) -> dict[str, int]:
        return {
            t.name: self.conn.execute(f"SELECT count(*) FROM [{t.name}]").fetchone()[0]
            for t in schema.TABLES
            if not t.name.startswith("_") and t.name != "snapshot"
        }

    def _write_provenance(self, p: Provenance) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO snapshot (id, tool_version, schema_version, started_utc, finished_utc,"
            " complete, source, source_kind, data_root, layout, host, kernel, options, counts, capabilities,"
            " bytes_read, hashes_reused, digest) VALUES (1,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            tuple(
                clean_text(v) if isinstance(v, str) else v
                for v in (
                    p.tool_version,
                    schema.SCHEMA_VERSION,
                    p.started_utc,
                    p.finished_utc,
                    int(p.complete),
                    p.source,
                    p.source_kind,
                    p.data_root,
                    p.layout,
                    p.host,
                    p.kernel,
                    _json(p.options),
                    _json(p.counts),
                    _json(sorted(p.capabilities)),
                    p.bytes_read,
                    p.hashes_reused,
                    p.digest,
                )
            ),
        )

    def close(self) -> None:
        self.conn.close()
