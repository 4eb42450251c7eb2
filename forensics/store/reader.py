"""Opening snapshots read-only and turning rows back into model records.

The only module with SELECTs. It refuses files that are not snapshots, are
truncated, or carry a schema version it does not know, in one sentence each.
Evidence snapshots are opened with ``mode=ro&immutable=1``: nothing (not even a
journal) is ever written next to them.
"""

from __future__ import annotations

import itertools
import json
import marshal
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from operator import itemgetter
from typing import Protocol
from urllib.parse import quote

from forensics.errors import BaselineError, SnapshotError
from forensics.model import (
    Container,
    Entry,
    Image,
    ImageLayer,
    Kind,
    Layer,
    LayerCheck,
    LayerFinding,
    LayerFindingKind,
    LayerRole,
    LayerVerdict,
    Mount,
    Xattrs,
    path_from_text,
    xattr_name_from_text,
)
from forensics.store import schema

_SQLITE_MAGIC = b"SQLite format 3\x00"


class Hasher(Protocol):
    """What the digests need of a hash object (BLAKE3; the store does not import it)."""

    def update(self, data: bytes, /) -> object: ...

    def hexdigest(self) -> str: ...


ENTRY_DIGEST_COLUMNS = tuple(schema.ENTRIES.column_names[1:])
"""The columns of an entries row that its layer's digest covers: all but the row id."""


def encode_rows(rows: Sequence[tuple]) -> bytes:  # type: ignore[type-arg]
    """The digest input of rows: each row's tuple as CPython ``marshal`` format version 2, concatenated.

    Version 2 is exact and frozen: it tells NULL, integers (any size), floats,
    text (UTF-8, a NUL inside included) and BLOBs apart, with lengths, and
    unlike later versions it never encodes object identity (no references,
    no interning). Unlike ``repr`` it does not depend on the Unicode database
    of the Python that runs it. The writer feeds the rows it inserts, a
    verifier the rows it reads back: the same values give the same bytes.
    """
    return marshal.dumps(list(rows), 2)[5:]  # without the list's own header: batching cannot matter


class EntryDigests:
    """Running per-layer digests over entries rows, fed in row id order (in any number of calls)."""

    def __init__(self, new_hasher: Callable[[], Hasher]) -> None:
        self._new_hasher = new_hasher
        self._layers: dict[str, list] = {}  # type: ignore[type-arg]  # layer -> [hasher, rows]

    def add(self, rows: Sequence[tuple]) -> None:  # type: ignore[type-arg]
        for layer, group in itertools.groupby(rows, key=itemgetter(0)):
            run = list(group)
            self.add_encoded(layer, len(run), encode_rows(run))

    def add_encoded(self, layer: str, count: int, encoded: bytes) -> None:
        """*count* rows of one layer already encoded with :func:`encode_rows`."""
        state = self._layers.get(layer)
        if state is None:
            state = self._layers[layer] = [self._new_hasher(), 0]
        state[0].update(encoded)
        state[1] += count

    def results(self) -> dict[str, tuple[int, str]]:
        """layer -> (rows, digest hex)."""
        return {layer: (count, hasher.hexdigest()) for layer, (hasher, count) in self._layers.items()}


def entry_digests(
    conn: sqlite3.Connection, new_hasher: Callable[[], Hasher], layer_ids: Iterable[str] | None = None
) -> dict[str, tuple[int, str]]:
    """Each layer's (row count, digest) recomputed from its entries rows, in row id order."""
    columns = ", ".join(f"[{c}]" for c in ENTRY_DIGEST_COLUMNS)
    digests = EntryDigests(new_hasher)
    if layer_ids is None:
        # In row id order, which is each layer's order too: a scan, with no sort.
        cursors = [conn.execute(f"SELECT {columns} FROM entries ORDER BY id")]
    else:
        cursors = [
            conn.execute(f"SELECT {columns} FROM entries WHERE layer_id = ? ORDER BY id", (layer,))
            for layer in sorted(set(layer_ids))
        ]
    for cursor in cursors:
        while rows := cursor.fetchmany(5000):
            digests.add(rows)
    return digests.results()


def canonical_records(conn: sqlite3.Connection) -> Iterator[bytes]:
    """Every record of every table, in a canonical order and an unambiguous encoding.

    First the SQL of every table, index and view (a redefined view is a changed
    snapshot too), then each table's rows by its key (:func:`encode_rows`).
    The entries rows are not repeated here: ``entry_digests`` holds one
    digest per layer over them, and this stream covers that table. The
    snapshot's own digest column is left out: it holds the result.
    """
    yield b"\x1esqlite_master\n"
    for (sql,) in conn.execute(
        "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY type, name"
    ):
        yield sql.encode("utf-8", "surrogatepass") + b"\n"
    for table in schema.TABLES:
        if table is schema.ENTRIES:
            continue
        columns = [c for c in table.column_names if not (table.name == "snapshot" and c == "digest")]
        yield f"\x1e{table.name}\n".encode()
        cursor = conn.execute(
            f"SELECT {', '.join(f'[{c}]' for c in columns)} FROM [{table.name}] ORDER BY {table.digest_order}"
        )
        while rows := cursor.fetchmany(5000):
            yield encode_rows(rows)


def records_digest(conn: sqlite3.Connection, new_hasher: Callable[[], Hasher]) -> str:
    """The records digest over :func:`canonical_records`."""
    hasher = new_hasher()
    for chunk in canonical_records(conn):
        hasher.update(chunk)
    return hasher.hexdigest()


@dataclass(frozen=True)
class RecordsCheck:
    """A snapshot's records recomputed: the digest, and the layers whose entries rows changed."""

    digest: str
    altered_layers: tuple[str, ...]  # recomputed entries digest differs from entry_digests, or one is missing


class ReuseFiles:
    """A baseline's hashed regular files, one layer per call, for ``collect --reuse``.

    Each layer's rows are checked against the baseline's ``entry_digests``
    before any of its hashes is handed out (the caller checks the records
    digest, which covers that table). Callable from the collector's worker
    processes: each process opens its own read-only connection on first use
    (an SQLite connection must not cross a fork).
    """

    def __init__(self, path: str, new_hasher: Callable[[], Hasher]) -> None:
        self.path = path
        self.new_hasher = new_hasher
        self._conn: sqlite3.Connection | None = None
        self._pid = 0

    def __call__(
        self, layer_id: str
    ) -> dict[bytes, tuple[tuple[int, int, int, int, int], str, Xattrs, bytes | None]]:
        """path -> ((dev, inode, size, mtime_ns, ctime_ns), blake3, xattrs, head) for its hashed files.

        The key is ``forensics.capture.hash.reuse_key``'s, in its order. A file
        without a hash or a device number (it could not be read) is left out.
        """
        if self._conn is None or self._pid != os.getpid():
            self._conn = sqlite3.connect(_read_only_uri(self.path), uri=True)
            self._pid = os.getpid()
        columns = ", ".join(f"[{c}]" for c in ENTRY_DIGEST_COLUMNS)
        try:
            rows = self._conn.execute(
                f"SELECT {columns} FROM entries WHERE layer_id = ? ORDER BY id", (layer_id,)
            ).fetchall()
            stored = self._conn.execute(
                "SELECT entries, digest FROM entry_digests WHERE layer_id = ?", (layer_id,)
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise SnapshotError(f"{self.path} is damaged or truncated ({exc}).") from None
        hasher = self.new_hasher()
        hasher.update(encode_rows(rows))
        if (stored is None and rows) or (
            stored is not None and tuple(stored) != (len(rows), hasher.hexdigest())
        ):
            raise BaselineError(
                f"the baseline {self.path} fails its records digest check (the entries of layer {layer_id} "
                "were changed, added or removed since capture), so its hashes cannot be reused."
            )
        out = {}
        for row in rows:
            path, kind, dev, inode, size, mtime, ctime, digest = (row[i] for i in _REUSE_FIELDS)
            if kind != "file" or None in (digest, dev, inode, size, mtime, ctime):
                continue
            raw = path_from_text(path) if "\\" in path else path.encode("utf-8", "surrogateescape")
            xattrs = row[_XATTRS_FIELD]
            out[raw] = (
                (dev, inode, size, mtime, ctime),
                digest,
                _xattrs(xattrs) if xattrs else (),
                row[_HEAD_FIELD],
            )
        return out


_REUSE_FIELDS = tuple(
    ENTRY_DIGEST_COLUMNS.index(c)
    for c in ("path", "kind", "dev", "inode", "size", "mtime_ns", "ctime_ns", "blake3")
)
_XATTRS_FIELD = ENTRY_DIGEST_COLUMNS.index("xattrs")
_HEAD_FIELD = ENTRY_DIGEST_COLUMNS.index("head")


def _read_only_uri(path: str) -> str:
    """Evidence snapshots are opened read-only and immutable: nothing, not even a journal, is written."""
    return "file:" + quote(os.path.abspath(path)) + "?mode=ro&immutable=1"


@dataclass(frozen=True)
class SnapshotInfo:
    path: str
    provenance: dict[str, object]
    counts: dict[str, int]

    @property
    def complete(self) -> bool:
        return bool(self.provenance.get("complete"))


def _loads(text: str | None, default: object) -> object:
    if text is None:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


class Snapshot:
    """A snapshot opened read-only."""

    def __init__(self, path: str) -> None:
        self.path = path
        _check_file(path)
        try:
            self.conn = sqlite3.connect(_read_only_uri(path), uri=True)
            self.conn.execute("PRAGMA query_only = ON")
            version = self._meta("schema_version")
        except sqlite3.DatabaseError as exc:
            raise SnapshotError(f"{path} is not a readable o2f snapshot ({exc}).") from None
        if version is None:
            raise SnapshotError(f"{path} is an SQLite file but not an o2f snapshot (no schema version).")
        if version != str(schema.SCHEMA_VERSION):
            raise SnapshotError(
                f"{path} has snapshot schema version {version}; "
                f"this o2f reads version {schema.SCHEMA_VERSION}."
            )
        try:
            for table in schema.TABLES:
                present = {row[1] for row in self.conn.execute(f"PRAGMA table_info([{table.name}])")}
                missing = [c for c in table.column_names if c not in present]
                if missing:
                    what = f"table {table.name}" if not present else f"column {table.name}.{missing[0]}"
                    raise SnapshotError(
                        f"{path} says schema version {version} but lacks {what}: it is damaged, or was "
                        f"written by a development build of o2f."
                    )
        except sqlite3.DatabaseError as exc:
            raise SnapshotError(f"{path} is damaged or truncated ({exc}).") from None

    def _meta(self, key: str) -> str | None:
        try:
            row = self.conn.execute("SELECT value FROM _o2f_meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.OperationalError:
            return None
        return None if row is None else row[0]

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        try:
            self.conn.row_factory = sqlite3.Row
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise SnapshotError(f"{self.path} is damaged or truncated ({exc}).") from None
        finally:
            self.conn.row_factory = None

    # -- provenance ---------------------------------------------------------------

    @cached_property
    def provenance(self) -> dict[str, object]:
        rows = self._query("SELECT * FROM snapshot WHERE id = 1")
        if not rows:
            raise SnapshotError(f"{self.path} has no provenance row: it is not a whole snapshot.")
        out = dict(rows[0])
        for key in ("options", "counts", "capabilities"):
            out[key] = _loads(out.get(key), {} if key != "capabilities" else [])  # type: ignore[arg-type]
        return out

    def info(self) -> SnapshotInfo:
        counts = {
            t.name: self._query(f"SELECT count(*) AS n FROM [{t.name}]")[0]["n"]
            for t in schema.TABLES
            if not t.name.startswith("_") and t.name != "snapshot"
        }
        return SnapshotInfo(self.path, self.provenance, counts)

    def check_records(self, new_hasher: Callable[[], Hasher]) -> RecordsCheck:
        """Every entries row against its layer's stored digest, and the records digest over the rest."""
        try:
            stored = {
                layer: (count, digest)
                for layer, count, digest in self.conn.execute(
                    "SELECT layer_id, entries, digest FROM entry_digests"
                )
            }
            recomputed = entry_digests(self.conn, new_hasher)
            altered = sorted(
                layer
                for layer in stored.keys() | recomputed.keys()
                if stored.get(layer) != recomputed.get(layer)
            )
            return RecordsCheck(records_digest(self.conn, new_hasher), tuple(altered))
        except sqlite3.DatabaseError as exc:
            raise SnapshotError(f"{self.path} is damaged or truncated ({exc}).") from None

    # -- records --------------------------------------------------------------------

    @cached_property
    def layers(self) -> dict[str, Layer]:
        out = {}
        for row in self._query("SELECT * FROM layers ORDER BY id"):
            out[row["id"]] = Layer(
                id=row["id"],
                role=LayerRole(row["role"]),
                link=row["link"],
                lower=row["lower"],
                committed=bool(row["committed"]),
                has_work=bool(row["has_work"]),
                has_merged=bool(row["has_merged"]),
                has_diff=bool(row["has_diff"]),
                diff_path=path_from_text(row["diff_path"] or ""),
                chain=tuple(_loads(row["chain"], [])),  # type: ignore[arg-type]
                problem=row["problem"],
            )
        return out

    def links(self) -> list[tuple[str, bytes, str | None]]:
        return [
            (row["name"], path_from_text(row["target"]), row["layer_id"])
            for row in self._query("SELECT * FROM links ORDER BY name")
        ]

    @cached_property
    def containers(self) -> list[Container]:
        return [
            Container(
                id=row["id"],
                name=row["name"],
                image=row["image"],
                image_id=row["image_id"],
                created=row["created"],
                state=row["state"],
                exit_code=row["exit_code"],
                started_at=row["started_at"],
                finished_at=row["finished_at"],
                upper_layer=row["upper_layer"],
                init_layer=row["init_layer"],
                chain=tuple(_loads(row["chain"], [])),  # type: ignore[arg-type]
                top_chain_id=row["top_chain_id"],
                mounts_json=row["mount_points"],
                labels_json=row["labels"],
                config_json=row["config"],
                hostconfig_json=row["hostconfig"],
                problem=row["problem"],
            )
            for row in self._query("SELECT * FROM containers ORDER BY name, id")
        ]

    @cached_property
    def images(self) -> list[Image]:
        return [
            Image(
                id=row["id"],
                tags=tuple(_loads(row["tags"], [])),  # type: ignore[arg-type]
                created=row["created"],
                parent=row["parent"],
                diff_ids=tuple(_loads(row["diff_ids"], [])),  # type: ignore[arg-type]
                layers=tuple(_loads(row["layers"], [])),  # type: ignore[arg-type]
                config_json=row["config"],
                problem=row["problem"],
            )
            for row in self._query("SELECT * FROM images ORDER BY id")
        ]

    def image_layers(self, with_tar_split: bool = False) -> list[ImageLayer]:
        columns = "*" if with_tar_split else "chain_id, diff_id, parent, layer_id, size, NULL AS tar_split"
        return [
            ImageLayer(
                chain_id=row["chain_id"],
                diff_id=row["diff_id"],
                parent=row["parent"],
                layer_id=row["layer_id"],
                size=row["size"],
                tar_split=row["tar_split"],
            )
            for row in self._query(f"SELECT {columns} FROM image_layers ORDER BY chain_id")
        ]

    def mounts(self) -> list[Mount]:
        return [
            Mount(
                mount_point=path_from_text(row["mount_point"]),
                fs_type=row["fs_type"],
                source=path_from_text(row["source"] or ""),
                options=row["options"] or "",
                mount_id=row["mount_id"],
                parent_id=row["parent_id"],
                major_minor=row["major_minor"],
                root=None if row["root"] is None else path_from_text(row["root"]),
                super_options=row["super_options"],
                lowerdirs=tuple(path_from_text(d) for d in _loads(row["lowerdirs"], [])),  # type: ignore[union-attr]
                upperdir=None if row["upperdir"] is None else path_from_text(row["upperdir"]),
                workdir=None if row["workdir"] is None else path_from_text(row["workdir"]),
                line=row["line"],
            )
            for row in self._query("SELECT * FROM mounts ORDER BY id")
        ]

    def layer_sizes(self) -> dict[str, tuple[int, int]]:
        """Per layer: (number of entries, bytes of regular files)."""
        rows = self._query(
            "SELECT layer_id, count(*) AS n, coalesce(sum(CASE WHEN kind = 'file' THEN size END), 0) AS bytes"
            " FROM entries GROUP BY layer_id"
        )
        return {row["layer_id"]: (row["n"], row["bytes"]) for row in rows}

    def errors(self) -> list[dict[str, object]]:
        return [dict(row) for row in self._query("SELECT * FROM errors ORDER BY id")]

    def layer_checks(self) -> list[LayerCheck]:
        """Image layers checked at collection (empty when verification was skipped)."""
        return [
            LayerCheck(
                layer_id=row["layer_id"],
                verdict=LayerVerdict(row["verdict"]),
                method=row["method"],
                chain_id=row["chain_id"],
                diff_id=row["diff_id"],
                computed_diff_id=row["computed_diff_id"],
                files_checked=row["files_checked"],
                findings=row["findings"],
                detail=row["detail"],
            )
            for row in self._query("SELECT * FROM layer_checks ORDER BY layer_id")
        ]

    def layer_findings(self) -> list[LayerFinding]:
        """Per-file differences of image layers from their recorded tar, in row order."""
        return [
            LayerFinding(
                layer_id=row["layer_id"],
                path=path_from_text(row["path"]),
                kind=LayerFindingKind(row["kind"]),
                detail=_loads(row["detail"], {}),  # type: ignore[arg-type]
            )
            for row in self._query("SELECT * FROM layer_findings ORDER BY id")
        ]

    # -- a baseline for collect --reuse ---------------------------------------------

    def check_reusable(self) -> None:
        """Refuses, in one sentence, a snapshot whose hashes ``collect --reuse`` must not take.

        It must be complete (a stored digest) and collected from a directory:
        a tar records no device and inode numbers to match. The digest itself
        is checked by the caller (``forensics.api``), which has the hash.
        """
        provenance = self.provenance
        if not provenance.get("complete") or provenance.get("digest") is None:
            raise SnapshotError(
                f"the baseline {self.path} is incomplete (its capture did not finish), so its hashes "
                "cannot be reused."
            )
        if provenance.get("source_kind") != "directory":
            raise SnapshotError(
                f"the baseline {self.path} was collected from a {provenance.get('source_kind')}, which "
                "records no device or inode numbers: --reuse needs a baseline collected from a directory."
            )

    def records_digest(self, new_hasher: Callable[[], Hasher]) -> str:
        """The records digest recomputed; the entries rows are covered by their per-layer digests,
        which :meth:`check_records` (or :class:`ReuseFiles`, layer by layer) checks."""
        try:
            return records_digest(self.conn, new_hasher)
        except sqlite3.DatabaseError as exc:
            raise SnapshotError(f"{self.path} is damaged or truncated ({exc}).") from None

    def reuse_lookup(self, new_hasher: Callable[[], Hasher]) -> ReuseFiles:
        """The baseline's hashed files layer by layer, usable in forked processes (``collect --reuse``)."""
        return ReuseFiles(self.path, new_hasher)

    def metadata_file(self, path: bytes) -> bytes | None:
        from forensics.model import path_to_text

        rows = self._query("SELECT content FROM metadata_files WHERE path = ?", (path_to_text(path),))
        return rows[0]["content"] if rows else None

    def entries(self, layer_id: str) -> list[Entry]:
        """Every entry of one layer."""
        return self._entries(layer_id, "", ())

    def entries_in(self, layer_id: str, paths: Iterable[bytes], subtrees: Iterable[bytes]) -> list[Entry]:
        """One layer's entries at *paths* and below each of *subtrees* (analysis of a part of a view).

        Every subtree root must be among *paths*.
        """
        from forensics.model import path_to_text

        out = self._entries(
            layer_id,
            " AND path IN (SELECT value FROM json_each(?))",
            (json.dumps([path_to_text(p) for p in paths]),),
        )
        directories = {e.path for e in out if e.kind is Kind.DIR}
        for top in subtrees:
            if top not in directories:
                continue  # nothing below it in this layer
            # Every descendant of P sorts in [P + '/', P + '0'): '0' follows '/' in byte order.
            text = path_to_text(top)
            out += self._entries(layer_id, " AND path >= ? AND path < ?", (text + "/", text + "0"))
        return out

    def paths_sharing_links(self, layer_ids: Iterable[str], paths: Iterable[bytes]) -> set[bytes]:
        """Paths in these layers that share a link group with an entry at one of *paths*."""
        from forensics.model import path_to_text

        layers = json.dumps(list(layer_ids))
        rows = self._query(
            "SELECT DISTINCT path FROM entries WHERE layer_id IN (SELECT value FROM json_each(?))"
            " AND link_group IN (SELECT link_group FROM entries WHERE link_group IS NOT NULL"
            " AND layer_id IN (SELECT value FROM json_each(?)) AND path IN (SELECT value FROM json_each(?)))",
            (layers, layers, json.dumps([path_to_text(p) for p in paths])),
        )
        return {path_from_text(row["path"]) for row in rows}

    def _entries(self, layer_id: str, where: str, params: tuple[object, ...]) -> list[Entry]:
        try:
            rows = self.conn.execute(
                "SELECT CAST(path AS BLOB), kind, mode, uid, gid, size, mtime_ns, atime_ns, ctime_ns, inode,"
                " nlink, rdev_major, rdev_minor, CAST(target AS BLOB), xattrs, blake3, link_group, dev,"
                " hash_reused, head FROM entries WHERE layer_id = ?" + where,
                (layer_id, *params),
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise SnapshotError(f"{self.path} is damaged or truncated ({exc}).") from None
        kinds = _KINDS
        out = []
        append = out.append
        for row in rows:
            # Columns 2-12 (mode .. rdev minor) go to Entry as they are, in the same order.
            path, kind, target, xattrs, digest, group, dev, reused, head = (*row[:2], *row[13:])
            # CAST gives the UTF-8 bytes of the text form: the raw bytes unless it holds an escape.
            if b"\\" in path:
                path = path_from_text(path.decode())
            if target is not None and b"\\" in target:
                target = path_from_text(target.decode())
            xattr_pairs = _xattrs(xattrs) if xattrs else ()
            append(
                Entry(
                    layer_id,
                    path,
                    kinds[kind],
                    *row[2:13],
                    target,
                    xattr_pairs,
                    digest,
                    group,
                    dev,
                    reused == 1,
                    head,
                )
            )
        return out


_KINDS = {k.value: k for k in Kind}


def _xattrs(text: str) -> tuple[tuple[str, bytes], ...]:
    return tuple(sorted((xattr_name_from_text(k), bytes.fromhex(v)) for k, v in json.loads(text).items()))


def _check_file(path: str) -> None:
    try:
        with open(path, "rb") as handle:
            head = handle.read(100)
            size = os.fstat(handle.fileno()).st_size
    except FileNotFoundError:
        raise SnapshotError(f"snapshot {path} does not exist.") from None
    except IsADirectoryError:
        raise SnapshotError(f"{path} is a directory, not a snapshot file.") from None
    except OSError as exc:
        raise SnapshotError(f"cannot read snapshot {path}: {exc.strerror}.") from None
    if not head.startswith(_SQLITE_MAGIC):
        raise SnapshotError(f"{path} is not an o2f snapshot (not an SQLite file).")
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    if page_size and pages and size < page_size * pages:
        raise SnapshotError(f"{path} is truncated ({size} of {page_size * pages} bytes).")


def layer_entries(conn: sqlite3.Connection, layer_ids: list[str]) -> Iterator[tuple[str, list[Entry]]]:
    """The entries of these layers, one layer at a time in layer-id order.

    For checks that run on the writer's own connection while a capture is
    being written (layer verification), before the indexes exist: one sorted
    scan, and only one layer's entries in memory at a time.
    """
    cursor = conn.execute(
        "SELECT layer_id, CAST(path AS BLOB), kind, mode, uid, gid, size, mtime_ns, atime_ns, ctime_ns,"
        " inode, nlink, rdev_major, rdev_minor, CAST(target AS BLOB), xattrs, blake3, link_group, dev,"
        " hash_reused FROM entries WHERE layer_id IN (SELECT value FROM json_each(?)) ORDER BY layer_id, id",
        (json.dumps(layer_ids),),
    )
    current: str | None = None
    batch: list[Entry] = []
    while rows := cursor.fetchmany(2000):
        for layer_id, path, kind, *rest in rows:
            if layer_id != current:
                if current is not None:
                    yield current, batch
                current, batch = layer_id, []
            if b"\\" in path:
                path = path_from_text(path.decode())
            target, xattrs = rest[11], rest[12]
            if target is not None and b"\\" in target:
                target = path_from_text(target.decode())
            batch.append(
                Entry(
                    layer_id,
                    path,
                    _KINDS[kind],
                    *rest[:11],
                    target,
                    _xattrs(xattrs) if xattrs else (),
                    rest[13],
                    rest[14],
                    rest[15],
                    rest[16] == 1,
                )
            )
    if current is not None:
        yield current, batch


def open_snapshot(path: str) -> Snapshot:
    return Snapshot(path)
