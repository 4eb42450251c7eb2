"""The read-only BoltDB reader against the real engine files in the corpora and against damage.

The corpora hold the bbolt files of containerd (``meta.db``, the overlayfs snapshotter's
``metadata.db``), Podman (``libpod/bolt_state.db``) and Docker (``volumes/metadata.db`` and more).
Their ``truth/bolt/*.txt`` trees were printed by the corpora's own tools (``tools/ctruth.py`` and
``tools/boltdump.py --tree``); the renderers below reproduce those printers line for line on what
our reader returns, so every bucket, key, value (as far as the truth prints it) and bucket
sequence is compared. A second test compares full values with the corpus reader's JSON.

Members are read from the tarballs into memory; nothing under shared/ is written.
"""

from __future__ import annotations

import ast
import datetime
import functools
import inspect
import json
import os
import runpy
import signal
import stat
import struct
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forensics.capture.engine import boltdb
from forensics.capture.engine.boltdb import BoltDB, BoltError, Bucket, fnv1a64, to_tree
from forensics.errors import O2fError
from tests.boltwriter import Sub, build
from tests.conftest import CORPORA

CONTAINERD_TAR = CORPORA / "containerd-a" / "data-root.tar.gz"
PODMAN_TAR = CORPORA / "podman-a" / "data-root.tar.gz"
DOCKER_TAR = CORPORA / "docker-a" / "data-root.tar.gz"
BOLTDUMP = CORPORA / "containerd-a" / "tools" / "boltdump.py"

META_DB = (CONTAINERD_TAR, "/io.containerd.metadata.v1.bolt/meta.db")
SNAPSHOTTER_DB = (CONTAINERD_TAR, "/io.containerd.snapshotter.v1.overlayfs/metadata.db")
PODMAN_DB = (PODMAN_TAR, "/libpod/bolt_state.db")
DOCKER_VOLUMES_DB = (DOCKER_TAR, "var/lib/docker/volumes/metadata.db")
DOCKER_CONTAINERD_DB = (DOCKER_TAR, "/containerd/daemon/io.containerd.metadata.v1.bolt/meta.db")

needs_corpora = pytest.mark.skipif(
    not all(p.exists() for p in (CONTAINERD_TAR, PODMAN_TAR, DOCKER_TAR)),
    reason=f"corpora not found at {CORPORA}",
)


@functools.cache
def bolt_members(archive: Path) -> dict[str, bytes]:
    """Every regular ``*.db`` member of a corpus tarball that is engine state (not container data)."""
    found: dict[str, bytes] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            name = member.name
            if not member.isreg() or not name.endswith(".db"):
                continue
            if any(part in name for part in ("/snapshots/", "/overlay2/", "/overlay/", "/diff/")):
                continue  # files inside container and image layers
            handle = tar.extractfile(member)
            assert handle is not None
            found[name] = handle.read()
    return found


def member(spec: tuple[Path, str]) -> tuple[str, bytes]:
    """(member name, bytes) of the one bolt member whose name ends with the suffix."""
    archive, suffix = spec
    matches = [(n, d) for n, d in bolt_members(archive).items() if n.endswith(suffix)]
    assert len(matches) == 1, f"{suffix}: {sorted(bolt_members(archive))}"
    return matches[0]


def load(spec: tuple[Path, str]) -> BoltDB:
    name, data = member(spec)
    return BoltDB.from_bytes(data, name.rsplit("/", 1)[-1])


# -- renderers of the corpora's truth files (tools/ctruth.py decoded_tree, tools/boltdump.py print_tree) --

KINDS = {0: "Unknown", 1: "View", 2: "Active", 3: "Committed"}


def uvarint(data: bytes) -> tuple[int | None, int]:
    value = shift = 0
    for i, byte in enumerate(data):
        if byte < 0x80:
            return value | byte << shift, i + 1
        value |= (byte & 0x7F) << shift
        shift += 7
    return None, 0


def full_uvarint(data: bytes) -> int | None:
    value, used = uvarint(data)
    return value if used == len(data) and used else None


def gotime(data: bytes) -> str | None:
    """Go ``time.MarshalBinary`` (version 1 or 2) as ctruth.py prints it."""
    if len(data) in (15, 16) and data[0] in (1, 2):
        sec, nsec = struct.unpack(">qi", data[1:13])
        epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
        t = epoch + datetime.timedelta(seconds=sec - 62135596800, microseconds=nsec // 1000)
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{nsec:09d}Z"
    return None


def containerd_lines(bucket: Bucket, indent: int = 0, parent: str | None = None) -> Iterator[str]:
    """``ctruth.py decoded_tree``: times, varints, kinds and protobuf Any decoded, sequence when not 0."""
    pad = "  " * indent
    for k, v in bucket.items():
        key = k.decode() if all(32 <= c < 127 for c in k) else "hex:" + k.hex()
        if isinstance(v, Bucket):
            yield f"{pad}[{key}]" + (f"  (bucket sequence={v.sequence})" if v.sequence else "")
            yield from containerd_lines(v, indent + 1, key)
            continue
        if key in ("createdat", "updatedat", "expire"):
            shown = gotime(v) or "hex:" + v.hex()
        elif key == "kind" and len(v) == 1:
            shown = f"{v[0]} ({KINDS.get(v[0], '?')})"
        elif key == "id" and full_uvarint(v) is not None:
            shown = f"{full_uvarint(v)} (uvarint)"
        elif key in ("size", "inodes", "version") and (n := full_uvarint(v)) is not None:
            shown = f"{(n >> 1) ^ -(n & 1)} (varint)"
        elif key in ("spec", "options"):
            kind = v[2 : 2 + v[1]].decode("utf-8", "surrogateescape") if len(v) > 2 and v[0] == 0x0A else "?"
            shown = f"protobuf Any, {len(v)} bytes (type {kind})"
        elif not v:
            shown = "(empty)"
        else:
            try:
                shown = json.dumps(v.decode("utf-8"))
            except UnicodeDecodeError:
                shown = "hex:" + v.hex()
            if len(shown) > 300:
                shown = shown[:300] + f"...({len(v)} bytes)"
        if parent == "parents" and len(k) >= 3:
            p, i = uvarint(k)
            c, _ = uvarint(k[i + 1 :])
            key += f" (parent id {p}, child id {c})"
        yield f"{pad}{key} = {shown}"


def show(data: bytes) -> str | dict[str, str]:
    text = boltdb.text_or_none(data)
    return text if text is not None else {"hex": data.hex()}


def describe(v: bytes) -> str:
    """``boltdump.py describe``: text cut at 200 characters, otherwise hex with varint/time hints."""
    text = show(v)
    if isinstance(text, str):
        return json.dumps(text if len(text) < 200 else text[:200] + f"...({len(v)} bytes)")
    hints = []
    n, used = uvarint(v)
    if used == len(v) and used:
        assert n is not None
        hints.append(f"uvarint={n}, varint={(n >> 1) ^ -(n & 1)}")
    if len(v) == 15 and v[0] == 1:
        hints.append("go-time(binary)")
    body = v.hex() if len(v) <= 64 else v[:64].hex() + f"...({len(v)} bytes)"
    return "hex:" + body + (" [" + ", ".join(hints) + "]" if hints else "")


def boltdump_lines(bucket: Bucket, indent: int = 0) -> Iterator[str]:
    """``boltdump.py --tree``: every bucket with ``(bucket, sequence=N)``, values described."""
    pad = "  " * indent
    for k, v in bucket.items():
        shown = show(k)
        key = shown if isinstance(shown, str) else "hex:" + shown["hex"]
        if isinstance(v, Bucket):
            yield f"{pad}[{key}]  (bucket, sequence={v.sequence})"
            yield from boltdump_lines(v, indent + 1)
        else:
            yield f"{pad}{key} = {describe(v)}"


def truth_lines(corpus: str, name: str) -> list[str]:
    return (CORPORA / corpus / "truth" / "bolt" / name).read_text().splitlines()


# -- the corpora ------------------------------------------------------------------------------------


@needs_corpora
@pytest.mark.parametrize(
    ("spec", "corpus", "truth"),
    [
        (META_DB, "containerd-a", "meta.db.txt"),
        (SNAPSHOTTER_DB, "containerd-a", "overlayfs-metadata.db.txt"),
    ],
    ids=["containerd-meta.db", "containerd-overlayfs-metadata.db"],
)
def test_containerd_trees_match_truth(spec: tuple[Path, str], corpus: str, truth: str) -> None:
    """Every bucket, key, decoded value and non-zero sequence of containerd's two databases."""
    assert list(containerd_lines(load(spec).root)) == truth_lines(corpus, truth)


@needs_corpora
def test_podman_tree_matches_truth() -> None:
    """Every bucket (with its sequence), key and value of Podman's bolt_state.db."""
    assert list(boltdump_lines(load(PODMAN_DB).root)) == truth_lines("podman-a", "bolt_state.db.txt")


@needs_corpora
@pytest.mark.skipif(not BOLTDUMP.exists(), reason="the corpus's boltdump.py is not there")
@pytest.mark.parametrize("archive", [CONTAINERD_TAR, PODMAN_TAR, DOCKER_TAR], ids=lambda p: p.parent.name)
def test_full_values_match_the_corpus_reader(archive: Path, tmp_path: Path) -> None:
    """Full values (the truth files cut long ones) of every engine bolt file, against boltdump.py's JSON."""
    tool = runpy.run_path(str(BOLTDUMP))  # compiled from source: no bytecode is written under shared/
    members = bolt_members(archive)
    assert members
    for name, data in members.items():
        copy = tmp_path / name.replace("/", "_")
        copy.write_bytes(data)
        expected = tool["to_json"](tool["Bolt"](str(copy)).tree())
        assert to_tree(BoltDB.from_bytes(data, name).root)["items"] == expected, name


@needs_corpora
def test_containerd_mapping_from_container_to_snapshot_directory() -> None:
    """README mapping: container snapshotKey -> backend key -> snapshot id 11 -> snapshots/11/fs."""
    meta, backend = load(META_DB), load(SNAPSHOTTER_DB)
    container = meta.walk([b"v1", b"default", b"containers", b"ca-web"])
    assert container is not None and container.get(b"snapshotKey") == b"ca-web"
    overlayfs = meta.walk([b"v1", b"default", b"snapshots", b"overlayfs"])
    assert overlayfs is not None and overlayfs.sequence == 16  # per-namespace counter <n>
    snapshot = overlayfs.bucket(b"ca-web")
    assert snapshot is not None and snapshot.get(b"name") == b"default/11/ca-web"
    record = backend.walk([b"v1", b"snapshots", b"default/11/ca-web"])
    assert record is not None and full_uvarint(record.get(b"id") or b"") == 11
    assert record.get(b"kind") == b"\x02"  # Active
    snapshots, v1 = backend.walk([b"v1", b"snapshots"]), meta.root.bucket(b"v1")
    assert snapshots is not None and snapshots.sequence == 17  # the last backend id handed out
    assert v1 is not None and v1.get(b"version") == b"\x06"  # zigzag varint 3: schema v3
    assert [k for k, _ in v1.items()] == [b"default", b"ops", b"version"]


@needs_corpora
def test_podman_keeps_exit_codes_of_removed_containers() -> None:
    db = load(PODMAN_DB)
    codes = db.walk([b"exit-code"])
    assert codes is not None
    values = dict(codes.items())
    assert sorted(values.values()) == [b"137", b"137", b"137", b"5"]
    names = db.walk([b"all-ctrs"])
    assert names is not None
    pa_job = [k for k, v in names.items() if v == b"pa-job"]
    assert codes.get(pa_job[0]) == b"5"
    assert db.walk([b"ctr", pa_job[0]]).bucket(b"dependencies") is not None  # type: ignore[union-attr]


@needs_corpora
def test_docker_volume_and_containerd_databases() -> None:
    volumes = load(DOCKER_VOLUMES_DB)
    assert volumes.root.bucket(b"volumes").get(b"a-data") == (  # type: ignore[union-attr]
        b'{"Name":"a-data","Driver":"local","Labels":null,"Options":null}'
    )
    moby = load(DOCKER_CONTAINERD_DB).walk([b"v1", b"moby", b"containers"])
    assert moby is not None
    for _, container in moby.items():
        assert isinstance(container, Bucket)
        assert container.get(b"snapshotKey") == b""  # Docker 20.10 keeps layers in its graphdriver


@needs_corpora
def test_lookups_agree_with_iteration_on_every_corpus_file() -> None:
    """get/bucket (a cursor seek, as bbolt does) find exactly what items() lists, and nothing else."""
    for archive in (CONTAINERD_TAR, PODMAN_TAR, DOCKER_TAR):
        for name, data in bolt_members(archive).items():
            db = BoltDB.from_bytes(data, name)
            assert db.page_size == 4096 and db.txid > 0

            def check(bucket: Bucket) -> None:
                for key, value in bucket.items():
                    assert key in bucket
                    if isinstance(value, Bucket):
                        assert bucket.get(key) is None
                        found = bucket.bucket(key)
                        assert found is not None and found.path == (*bucket.path, key)
                        assert found.sequence == value.sequence
                        check(value)
                    else:
                        assert bucket.get(key) == value and bucket.bucket(key) is None
                for probe in (b"", b"\x00", b"zzzz-not-there", b"\xff" * 3):
                    if probe not in dict(bucket.items()):
                        assert bucket.get(probe) is None and bucket.bucket(probe) is None

            check(db.root)


@needs_corpora
def test_open_reads_the_same_as_from_bytes(tmp_path: Path) -> None:
    name, data = member(META_DB)
    path = tmp_path / "meta.db"
    path.write_bytes(data)
    path.chmod(0o444)
    db = BoltDB.open(path)
    assert db.origin == str(path)
    assert to_tree(db.root) == to_tree(BoltDB.from_bytes(data, name).root)
    assert db.txid == 189 and db.meta.page == 1  # the valid meta with the higher txid


# -- synthetic databases, made by tests/boltwriter.py (the shapes the corpora lack) ----------------


def expected_tree(items: dict[bytes, Any], sequence: int = 0) -> dict[str, Any]:
    """What to_tree must give for a :func:`build` input."""
    out: dict[str, Any] = {}
    for key in sorted(items):
        value = items[key]
        if isinstance(value, Sub):
            out[boltdb.key_text(key)] = expected_tree(value.items, value.sequence)
        else:
            out[boltdb.key_text(key)] = show(value)
    return {"__bucket__": True, "sequence": sequence, "items": out}


def sample_items() -> dict[bytes, Any]:
    return {
        **{b"k%03d" % i: b"v%d" % i for i in range(60)},
        b"\x00binary\xff": b"\x01\x02",
        b"big": bytes(range(256)) * 20,  # 5120 bytes: a leaf with overflow pages
        b"empty": b"",
        b"hex:looks-like-hex": b"text",
        b"nested": Sub({b"a%02d" % i: b"x" * i for i in range(30)}, sequence=42),
        b"inline": Sub({b"one": b"1", b"two": Sub({}, sequence=5)}, inline=False),
        b"tiny": Sub({b"x": b"y"}, sequence=3),
        b"void": Sub({}),
        b"wrapped": Sub({b"in": Sub({b"z": b"1"}, sequence=2, inline=True)}, inline=True),  # bbolt never does
    }


def test_synthetic_database_round_trips() -> None:
    """Branch levels, overflow pages, inline and empty buckets, binary keys, sequences."""
    items = sample_items()
    data = build(items, sequence=9)
    db = BoltDB.from_bytes(data, "synthetic.db")
    assert db.txid == 7 and db.page_size == 1024 and db.meta.page == 1
    assert to_tree(db.root) == expected_tree(items, 9)
    for key, value in items.items():
        if isinstance(value, Sub):
            assert db.root.get(key) is None and db.root.bucket(key) is not None
        else:
            assert db.root.get(key) == value and db.root.bucket(key) is None
    tiny = db.walk([b"tiny"])
    assert tiny is not None and tiny.inline and tiny.sequence == 3 and tiny.get(b"x") == b"y"
    two = db.walk([b"inline", b"two"])
    assert two is not None and two.inline and two.sequence == 5 and list(two.items()) == []
    assert two.path == (b"inline", b"two") and "inline/two" in repr(two)
    assert db.walk([b"nested"]).get(b"a29") == b"x" * 29  # type: ignore[union-attr]
    assert db.walk([b"nested", b"a01"]) is None  # a value, not a bucket
    assert db.walk([b"missing", b"deeper"]) is None
    assert db.walk([]) is db.root
    inner = db.walk([b"wrapped", b"in"])
    assert inner is not None and inner.inline and inner.sequence == 2 and inner.get(b"z") == b"1"
    depth, pgid = 0, db.meta.root
    while struct.unpack_from("<H", data, pgid * 1024 + 8)[0] == 0x01:  # a branch page: follow element 0
        depth += 1
        pgid = struct.unpack_from("<Q", data, pgid * 1024 + 16 + 8)[0]
    assert depth == 3  # three branch levels above the leaves
    assert [k for k, _ in db.root.items()] == sorted(items)


nested_items = st.recursive(
    st.dictionaries(st.binary(min_size=1, max_size=12), st.binary(max_size=300), max_size=12),
    lambda children: st.dictionaries(
        st.binary(min_size=1, max_size=12),
        st.one_of(st.binary(max_size=40), children.map(lambda d: Sub(d, sequence=len(d)))),
        max_size=8,
    ),
    max_leaves=40,
)


@settings(max_examples=150, deadline=None)
@given(items=nested_items, leaf_max=st.integers(1, 6), branch_max=st.integers(2, 4), inline=st.booleans())
def test_random_databases_round_trip(
    items: dict[bytes, Any], leaf_max: int, branch_max: int, inline: bool
) -> None:
    db = BoltDB.from_bytes(build(items, leaf_max=leaf_max, branch_max=branch_max, inline=inline), "random.db")
    assert to_tree(db.root) == expected_tree(items)
    for key, value in items.items():
        assert (db.root.bucket(key) is not None) if isinstance(value, Sub) else (db.root.get(key) == value)


# -- refusals ---------------------------------------------------------------------------------------


def refused(data: bytes, origin: str = "meta.db") -> str:
    """The one-sentence message a full read of *data* raises."""
    with pytest.raises(BoltError) as caught:
        to_tree(BoltDB.from_bytes(data, origin).root)
    message = str(caught.value)
    assert isinstance(caught.value, O2fError)
    assert message.startswith(origin + " ") and message.endswith(".") and "\n" not in message
    return message


def patched(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new) :]


def with_meta(data: bytes, page: int, size: int, **fields: int) -> bytes:
    """Rewrite meta fields of page 0 or 1 (pages of *size* bytes) and seal them with a correct checksum."""
    names = ["magic", "version", "page_size", "flags", "root", "sequence", "freelist", "pgid", "txid"]
    at = page * size + 16
    values = dict(zip(names, struct.unpack_from("<IIIIQQQQQ", data, at), strict=True))
    values.update(fields)
    packed = struct.pack("<IIIIQQQQQ", *(values[n] for n in names))
    return patched(data, at, packed + struct.pack("<Q", fnv1a64(packed)))


def test_zeros_are_not_a_boltdb() -> None:
    assert "is not a BoltDB" in refused(bytes(65536))
    assert "is not a BoltDB" in refused(b"")
    assert "is not a BoltDB" in refused(b"SQLite format 3\0" + bytes(8000))


@needs_corpora
def test_truncated_copies_are_refused() -> None:
    _, data = member(META_DB)
    message = refused(data[:100_000])
    assert message == (
        "meta.db is truncated: its meta page (txid 189) counts 60 pages of 4096 bytes (245760 bytes) "
        "but only 100000 bytes are present."
    )
    assert "is truncated" in refused(data[:6000])  # meta 1 cut off, meta 0 says the file is longer
    assert "is truncated" in refused(data[:50])  # inside the first meta page
    assert "is truncated" in refused(data[: 60 * 4096 - 1])


@needs_corpora
def test_the_valid_meta_with_the_higher_txid_wins_and_a_damaged_one_falls_back() -> None:
    """As db.meta(): a bad checksum on the newer meta page exposes the previous transaction."""
    _, data = member(META_DB)
    current = BoltDB.from_bytes(data, "meta.db")
    assert (current.meta.page, current.txid) == (1, 189)
    older = BoltDB.from_bytes(patched(data, 4096 + 16 + 56, b"\0" * 8), "meta.db")
    assert (older.meta.page, older.txid) == (0, 188)
    to_tree(older.root)  # the previous transaction's tree is still whole
    message = refused(patched(patched(data, 16 + 56, b"\0" * 8), 4096 + 16 + 56, b"\0" * 8))
    assert "no meta page is valid (page 0: checksum mismatch, page 1: checksum mismatch)" in message
    assert "format version 3" in refused(with_meta(with_meta(data, 0, 4096, version=3), 1, 4096, version=3))


def test_page_size_is_found_from_the_second_meta_when_the_first_is_bad() -> None:
    data = build({b"a": b"1"}, page_size=4096, txid=3)
    db = BoltDB.from_bytes(patched(data, 16, b"\0\0\0\0"), "x.db")  # meta 0 loses its magic
    assert db.page_size == 4096 and db.meta.page == 1 and db.root.get(b"a") == b"1"


def test_impossible_meta_numbers_are_refused() -> None:
    data = build(sample_items())
    assert "unsupported page size of 512" in refused(
        with_meta(with_meta(data, 0, 1024, page_size=512), 1, 1024, txid=1)
    )
    assert "puts the root bucket at page 9999" in refused(with_meta(data, 1, 1024, root=9999))
    assert "puts the freelist at page 0" in refused(with_meta(data, 1, 1024, freelist=0))
    assert "is truncated" in refused(with_meta(data, 1, 1024, pgid=10**6))


@needs_corpora
def test_a_corrupted_page_type_is_refused() -> None:
    _, data = member(META_DB)
    root = BoltDB.from_bytes(data, "meta.db").meta.root
    message = refused(patched(data, root * 4096 + 8, struct.pack("<H", 0x10)))
    assert message == (
        f"meta.db is damaged: page {root} in the root bucket is a freelist page "
        "where a branch or leaf page is expected."
    )
    assert "unknown<03>" in refused(patched(data, root * 4096 + 8, struct.pack("<H", 0x03)))
    assert "calls itself page 77" in refused(patched(data, root * 4096, struct.pack("<Q", 77)))


def root_page(data: bytes) -> int:
    return BoltDB.from_bytes(data, "x").meta.root


def test_a_branch_that_points_at_itself_is_a_cycle() -> None:
    data = build(sample_items())
    root = root_page(data)
    assert struct.unpack_from("<H", data, root * 1024 + 8)[0] == 0x01  # a branch page
    looped = patched(data, root * 1024 + 16 + 8, struct.pack("<Q", root))
    assert "is referenced again below itself (a cycle)" in refused(looped)
    with pytest.raises(BoltError, match="cycle"):
        BoltDB.from_bytes(looped, "meta.db").root.get(b"k000")


def test_a_bucket_rooted_at_an_ancestor_page_is_a_cycle() -> None:
    items = {b"a": b"1", b"child": Sub({b"x": b"y"}, inline=False)}
    data = build(items, leaf_max=8)
    root = root_page(data)
    child_root = BoltDB.from_bytes(data, "x").root.bucket(b"child").root_page  # type: ignore[union-attr]
    at = data.index(struct.pack("<QQ", child_root, 0))
    looped = patched(data, at, struct.pack("<Q", root))
    assert "a cycle" in refused(looped)
    db = BoltDB.from_bytes(looped, "meta.db")
    with pytest.raises(BoltError, match="cycle"):
        db.walk([b"child", b"child", b"child"])


def test_a_page_shared_by_two_buckets_is_refused_in_a_full_walk() -> None:
    items = {b"a": Sub({b"x": b"1"}, inline=False), b"b": Sub({b"y": b"2"}, inline=False)}
    data = build(items, leaf_max=8)
    db = BoltDB.from_bytes(data, "x")
    a_root, b_root = db.root.bucket(b"a").root_page, db.root.bucket(b"b").root_page  # type: ignore[union-attr]
    at = data.index(struct.pack("<QQ", b_root, 0))
    shared = patched(data, at, struct.pack("<Q", a_root))
    assert f"page {a_root} in bucket b is referenced more than once" in refused(shared)


def test_keys_out_of_order_are_refused() -> None:
    data = build({b"k1": b"a", b"k2": b"b", b"k3": b"c"}, leaf_max=8)
    assert "key k0 on page" in refused(data.replace(b"k3c", b"k0c"))
    deep = build(sample_items())
    assert "out of order" in refused(deep.replace(b"k059", b"k000"))


def test_elements_outside_their_page_are_refused() -> None:
    data = build({b"k1": b"a", b"k2": b"b"}, leaf_max=8)
    root = root_page(data)
    element = root * 1024 + 16
    assert "element 0 of page" in refused(patched(data, element + 4, struct.pack("<I", 5000)))
    assert "claims 500 elements" in refused(patched(data, root * 1024 + 10, struct.pack("<H", 500)))
    assert "unknown flags 0x4" in refused(patched(data, element, struct.pack("<I", 4)))
    deep = build(sample_items())
    child_pgid_at = root_page(deep) * 1024 + 16 + 8  # element 0 of the root branch page
    assert "refers to page 1000000000, beyond the high-water mark" in refused(
        patched(deep, child_pgid_at, struct.pack("<Q", 10**9))
    )


def test_broken_bucket_values_are_refused() -> None:
    data = build({b"b": Sub({b"x": b"y"}, inline=True)}, leaf_max=8)
    root = root_page(data)
    vsize_at = root * 1024 + 16 + 12
    assert "too short for a bucket header" in refused(patched(data, vsize_at, struct.pack("<I", 8)))
    assert "too short for a page header" in refused(patched(data, vsize_at, struct.pack("<I", 20)))
    element = root * 1024 + 16
    _, pos, ksize, _ = struct.unpack_from("<IIII", data, element)
    inline_page = element + pos + ksize + 16  # after the key and the 16-byte bucket header
    assert struct.unpack_from("<QHH", data, inline_page) == (0, 0x02, 1)
    assert "inline page of bucket b is a branch page" in refused(patched(data, inline_page + 8, b"\x01\x00"))


def test_nesting_and_tree_depth_are_bounded() -> None:
    chain: dict[bytes, Any] = {b"leaf": b"v"}
    for _ in range(boltdb.MAX_BUCKET_DEPTH + 2):
        chain = {b"n": Sub(chain, inline=False)}
    assert "nest more than 64 levels deep" in refused(build(chain, page_size=1024))
    tall = build({b"a": b"1", b"b": b"2"}, extra_levels=boltdb.MAX_TREE_DEPTH)
    assert "more than 32 levels deep" in refused(tall)
    with pytest.raises(BoltError, match="levels deep"):
        BoltDB.from_bytes(tall, "meta.db").root.get(b"a")
    fine = build({b"a": b"1", b"b": b"2"}, extra_levels=boltdb.MAX_TREE_DEPTH - 2)
    assert BoltDB.from_bytes(fine, "x").root.get(b"b") == b"2"


# -- read-only --------------------------------------------------------------------------------------


def test_open_never_asks_for_write_access(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(build(sample_items()))
    path.chmod(0o444)
    old = 1_000_000_000
    os.utime(path, ns=(old, old))
    flags_seen: list[int] = []
    real_open = os.open

    def spy(name: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        flags_seen.append(flags)
        return real_open(name, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    db = BoltDB.open(path)
    monkeypatch.undo()
    assert to_tree(db.root) == expected_tree(sample_items())
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    assert flags_seen and all(f & writing == 0 for f in flags_seen)
    after = path.stat()
    assert stat.S_IMODE(after.st_mode) == 0o444 and after.st_mtime_ns == old
    if os.geteuid() == 0 or after.st_uid == os.geteuid():  # O_NOATIME is permitted
        assert after.st_atime_ns == old


def test_open_source_uses_o_rdonly_and_nothing_that_writes() -> None:
    """The code (docstrings aside) names O_RDONLY and no flag, call or module that writes or locks."""
    assert "os.O_RDONLY" in inspect.getsource(boltdb)
    assert "_open_readonly" in inspect.getsource(BoltDB.open)
    tree = ast.parse(inspect.getsource(boltdb))
    attributes = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    banned = {"O_RDWR", "O_WRONLY", "O_CREAT", "O_TRUNC", "O_APPEND", "flock", "lockf", "fcntl", "mmap"}
    assert (attributes | names) & banned == set()
    assert "open" not in names  # no builtin open(): only os.open, with the flags above
    assert "O_RDONLY" in attributes


@contextmanager
def alarm(seconds: int) -> Iterator[None]:
    """Fail instead of hanging (a FIFO opened for reading blocks until a writer appears)."""

    def ring(signum: int, frame: Any) -> None:
        raise TimeoutError(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_open_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.db"
    os.mkfifo(fifo)
    with alarm(5), pytest.raises(BoltError, match="is not a regular file"):
        BoltDB.open(fifo)
    with pytest.raises(BoltError, match="is not a regular file"):
        BoltDB.open(tmp_path)
    with pytest.raises(BoltError, match=r"cannot be opened for reading: No such file or directory\.$"):
        BoltDB.open(tmp_path / "missing.db")


# -- fuzzing ----------------------------------------------------------------------------------------


@functools.cache
def fuzz_bases() -> tuple[bytes, ...]:
    """containerd's meta.db, Podman's bolt_state.db (4 KiB pages) and the synthetic file (1 KiB pages)."""
    return member(META_DB)[1], member(PODMAN_DB)[1], build(sample_items())


@needs_corpora
@settings(
    max_examples=300,
    deadline=2000,  # milliseconds per example; a full read of meta.db takes a few
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_random_damage_gives_a_tree_or_a_bolt_error(data: st.DataObject) -> None:
    """Byte flips in real files (headers and elements favoured, metas resealed or not) never escape as
    anything but BoltError, and never hang."""
    base = data.draw(st.sampled_from(range(3)), label="file")
    blob = bytearray(fuzz_bases()[base])
    page_size = 1024 if base == 2 else 4096
    pages = len(blob) // page_size
    for _ in range(data.draw(st.integers(1, 8), label="flips")):
        if data.draw(st.booleans(), label="structural"):
            at = data.draw(st.integers(0, pages - 1)) * page_size + data.draw(st.integers(0, 95))
        else:
            at = data.draw(st.integers(0, len(blob) - 1))
        blob[at] ^= data.draw(st.integers(1, 255))
    if data.draw(st.booleans(), label="reseal metas"):
        for page in (0, 1):
            at = page * page_size + 16
            blob[at + 56 : at + 64] = struct.pack("<Q", fnv1a64(bytes(blob[at : at + 56])))
    with alarm(20):
        try:
            db = BoltDB.from_bytes(bytes(blob), "meta.db")
            to_tree(db.root)
            db.walk([b"v1", b"default", b"containers"])
            db.root.get(b"k010")
        except BoltError as error:
            message = str(error)
            assert message.startswith("meta.db ") and message.endswith(".") and "\n" not in message
