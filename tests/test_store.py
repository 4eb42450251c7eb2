"""The snapshot store: the golden schema, the path codec, and the records digest.

``tests/golden/schema.sql`` pins the DDL of a freshly collected snapshot byte
for byte; a schema change must update it on purpose
(``O2F_UPDATE_GOLDEN=1 python -m pytest tests/test_store.py``) and bump
``SCHEMA_VERSION``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forensics import api
from forensics.capture.hash import new_hasher
from forensics.model import path_from_text, path_to_text
from forensics.store import schema
from forensics.store.reader import entry_digests, records_digest
from tests.conftest import DOCKER_A, needs_corpus, needs_root
from tests.layerlang import file, make_data_root, symlink

GOLDEN = Path(__file__).parent / "golden" / "schema.sql"
MOUNTINFO = DOCKER_A / "mountinfo.txt"


def _tiny(base: Path, *, container: bool = False) -> Path:
    containers = {"c": ("store/app:1", None, [file("/etc/changed", "x\n")])} if container else None
    root = make_data_root(
        base / "docker",
        images={"store/app:1": [[file("/etc/motd", "hi\n"), symlink("/etc/mtab", "/proc/mounts")]]},
        containers=containers,
        seed="store",
    )
    return root.root


def schema_ddl(path: Path | str) -> str:
    """Every schema object's SQL (tables, indexes, views; automatic indexes have none), by name."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name").fetchall()
    return "".join(sql + ";\n" for (sql,) in rows)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("store")
    output = base / "fresh.o2f"
    api.collect(str(_tiny(base)), str(output))
    return output


# --- golden schema ------------------------------------------------------------------------------


def test_the_schema_matches_the_golden_ddl(fresh: Path) -> None:
    ddl = schema_ddl(fresh)
    if os.environ.get("O2F_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(ddl, encoding="utf-8")
    assert GOLDEN.exists(), f"{GOLDEN} is missing; create it with O2F_UPDATE_GOLDEN=1"
    assert GOLDEN.read_bytes() == ddl.encode("utf-8")


def test_the_file_says_what_it_is(fresh: Path) -> None:
    with sqlite3.connect(f"file:{fresh}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == 0x6F326673
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
        meta = dict(conn.execute("SELECT key, value FROM _o2f_meta"))
    assert meta == {"application": schema.APPLICATION, "schema_version": str(schema.SCHEMA_VERSION)}


def test_every_schema_table_and_column_exists(fresh: Path) -> None:
    with sqlite3.connect(f"file:{fresh}?mode=ro", uri=True) as conn:
        for table in schema.TABLES:
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info([{table.name}])")]
            assert columns == table.column_names, table.name
        views = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'view'")}
    assert views == {view.name for view in schema.VIEWS}


# --- path codec -----------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_path_codec_round_trips_any_bytes(raw: bytes) -> None:
    text = path_to_text(raw)
    text.encode("utf-8")  # storable as SQLite TEXT: no lone surrogates
    assert path_from_text(text) == raw


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=100))
def test_valid_utf8_without_backslash_is_stored_as_is(text: str) -> None:
    raw = text.encode("utf-8")
    if "\\" in text:
        assert path_to_text(raw) == text.replace("\\", "\\\\")
    else:
        assert path_to_text(raw) == text


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b), min_size=2, max_size=8))
def test_path_codec_survives_sqlite_and_keeps_names_apart(names: list[bytes]) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (path TEXT PRIMARY KEY)")
    conn.executemany("INSERT OR IGNORE INTO t VALUES (?)", [(path_to_text(n),) for n in names])
    back = {path_from_text(p) for (p,) in conn.execute("SELECT path FROM t")}
    assert back == set(names)


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"/plain", "/plain"),
        (b"new\nline", "new\nline"),
        (b"back\\slash", "back\\\\slash"),
        (b"a\\x41", "a\\\\x41"),
        (b"\\xff", "\\\\xff"),
        (b"\xff", "\\xff"),
        (b"caf\xc3\xa9", "café"),
        (b"bad\xff\xfebyte", "bad\\xff\\xfebyte"),
        (b"\xed\xa0\x80", "\\xed\\xa0\\x80"),
    ],
)
def test_path_codec_examples(raw: bytes, text: str) -> None:
    assert path_to_text(raw) == text
    assert path_from_text(text) == raw


# --- the records digest -----------------------------------------------------------------------------


def _digest(conn: sqlite3.Connection) -> tuple[str, dict[str, tuple[int, str]]]:
    """What verification recomputes: the records digest, and each layer's entries digest."""
    return records_digest(conn, new_hasher), entry_digests(conn, new_hasher)


def _changes(value: object) -> list[tuple[str, object]]:
    """Other values for one cell: a different value of the same type, and the same value as another type."""
    if value is None:
        return [("0", 0), ("''", "")]
    if isinstance(value, int):
        return [("+1", value + 1), ("as text", str(value)), ("NULL", None)]
    if isinstance(value, str):
        return [("+x", value + "x"), ("as blob", value.encode()), ("NULL", None), ("cut", value[:-1])]
    if isinstance(value, bytes):
        return [("+byte", value + b"\0"), ("NULL", None)]
    return [("float", float(value) + 0.5)]  # type: ignore[arg-type]


@needs_corpus
@needs_root
def test_the_digest_changes_when_any_single_value_changes(tmp_path: Path) -> None:
    output = tmp_path / "full.o2f"
    api.collect(str(_tiny(tmp_path, container=True)), str(output), mounts_file=str(MOUNTINFO))
    conn = sqlite3.connect(":memory:")
    with sqlite3.connect(output) as disk:
        disk.backup(conn)
    disk.close()
    for table in schema.TABLES:  # every table gets at least one row
        if not conn.execute(f"SELECT count(*) FROM [{table.name}]").fetchone()[0]:
            values = [{int: 1, str: "x", bytes: b"x", float: 1.0}[c.type] for c in table.columns]
            conn.execute(f"INSERT INTO [{table.name}] VALUES ({','.join('?' * len(values))})", values)
    conn.commit()
    baseline = _digest(conn)
    checked = 0
    for table in schema.TABLES:
        rowid, *row = conn.execute(
            f"SELECT rowid, * FROM [{table.name}] ORDER BY rowid DESC LIMIT 1"
        ).fetchone()
        for spec, value in zip(table.columns, row, strict=True):
            column = spec.name
            original = conn.execute(
                f"SELECT typeof([{column}]), [{column}] FROM [{table.name}] WHERE rowid = ?", (rowid,)
            ).fetchone()
            for label, new in _changes(value):
                if new is None and spec.not_null:
                    continue
                conn.execute(f"UPDATE [{table.name}] SET [{column}] = ? WHERE rowid = ?", (new, rowid))
                stored = conn.execute(
                    f"SELECT typeof([{column}]), [{column}] FROM [{table.name}] WHERE rowid = ?", (rowid,)
                ).fetchone()
                changed = _digest(conn)
                conn.rollback()
                if stored == original:  # column affinity turned it back into the same value: no change
                    continue
                if table.name == "snapshot" and column == "digest":
                    assert changed == baseline  # the stored digest is the result, not an input
                    continue
                if table.name == "entries" and column == "id":
                    # An entries row id is covered through the order of its layer's rows, not its
                    # value (docs/evidence.md): a new id that keeps the order is not a new record.
                    continue
                assert changed != baseline, (table.name, column, label)
                checked += 1
    assert _digest(conn) == baseline
    assert checked > 150, checked


def test_changing_the_stored_digest_fails_verification(fresh: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.o2f"
    copy.write_bytes(fresh.read_bytes())
    assert api.verify(str(copy)).ok
    with sqlite3.connect(copy) as conn:
        conn.execute("UPDATE snapshot SET digest = ? WHERE id = 1", ("0" * 64,))
    conn.close()
    assert not api.verify(str(copy)).ok


def test_a_deleted_or_added_row_changes_the_digest(fresh: Path) -> None:
    conn = sqlite3.connect(":memory:")
    with sqlite3.connect(f"file:{fresh}?mode=ro", uri=True) as disk:
        disk.backup(conn)
    baseline = _digest(conn)
    conn.execute("DELETE FROM entries WHERE id = (SELECT max(id) FROM entries)")
    assert _digest(conn) != baseline
    conn.rollback()
    conn.execute("INSERT INTO errors (id, path, operation, message) VALUES (1, 'x', 'open', 'm')")
    assert _digest(conn) != baseline
    conn.rollback()
    # moving a value from the end of one cell to the start of the next is not the same record
    conn.execute("UPDATE _o2f_meta SET value = value || ',''x' WHERE key = 'application'")
    assert _digest(conn) != baseline


def test_swapping_two_entries_row_ids_changes_their_layer_digest(fresh: Path) -> None:
    conn = sqlite3.connect(":memory:")
    with sqlite3.connect(f"file:{fresh}?mode=ro", uri=True) as disk:
        disk.backup(conn)
    baseline = _digest(conn)
    layer, first, last = conn.execute(
        "SELECT layer_id, min(id), max(id) FROM entries GROUP BY layer_id HAVING count(*) > 1 LIMIT 1"
    ).fetchone()
    conn.execute("UPDATE entries SET id = -1 WHERE id = ?", (first,))
    conn.execute("UPDATE entries SET id = ? WHERE id = ?", (first, last))
    conn.execute("UPDATE entries SET id = ? WHERE id = -1", (last,))
    records, layers = _digest(conn)
    assert records == baseline[0] and layers[layer] != baseline[1][layer]


def test_text_after_a_nul_character_is_covered_by_the_digest(fresh: Path, tmp_path: Path) -> None:
    copy = tmp_path / "tampered.o2f"
    copy.write_bytes(fresh.read_bytes())
    with sqlite3.connect(copy) as conn:
        conn.execute("UPDATE images SET config = config || char(0) || '{\"evil\": true}'")
    conn.close()
    assert not api.verify(str(copy)).ok


def test_the_encoder_gives_one_row_from_an_entry_or_from_its_values() -> None:
    """Directory workers pass an entry's values (no Entry built); a tar passes Entries: same rows."""
    from dataclasses import astuple, fields

    from forensics.api import _entry_flags
    from forensics.model import Entry, Kind
    from forensics.store.writer import EntryEncoder

    assert [f.name for f in fields(Entry)][-2:] == ["hash_reused", "head"]  # the positional order
    entries = [
        Entry("L", b"/etc/passwd", Kind.FILE, 0o644, 0, 0, 5, 1, 2, 3, 4, 1, blake3="ab", head=b"root:"),
        Entry("L", b"/gone", Kind.CHAR, 0, 0, 0, 0, 1, rdev_major=0, rdev_minor=0),
        Entry("L", b"/opaque", Kind.DIR, 0o755, 0, 0, 0, 1, xattrs=(("trusted.overlay.opaque", b"y"),)),
        Entry("L", b"/m", Kind.FILE, 0o644, 0, 0, 0, 1, xattrs=(("trusted.overlay.origin", b"\x00"),)),
    ]
    encoder = EntryEncoder(_entry_flags)
    rows = [encoder(e) for e in entries]
    assert rows == [encoder.fields(*astuple(e, tuple_factory=tuple)) for e in entries]
    flags = [row[-3:] for row in rows]
    assert flags == [
        (0, 0, None),
        (1, 0, None),
        (0, 1, '["trusted.overlay.opaque"]'),
        (0, 0, '["trusted.overlay.origin"]'),
    ]
