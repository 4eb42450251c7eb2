"""analyze/compare.py: two snapshots matched by content address, never by local names.

The main case is issue 4's "two hosts from one corpus": the docker-a data root as host A, and a copy
with every host-local name changed (cache ids, l/ links, mount ids, container ids) as host B, where
one file was added to a-web's upperdir, /etc/os-release was edited in the shared base layer (same
size, mtime put back) and a-batch was removed. compare must find exactly those three things.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from forensics import api
from forensics.analyze.compare import (
    CONTENT,
    METADATA,
    ONLY_IN_A,
    ONLY_IN_B,
    compare_changes,
    compare_entries,
)
from forensics.errors import NotFoundError, SnapshotError, UsageError
from forensics.model import Change, ChangeKind, Entry, Kind
from tests.hosts import (
    ADDED_CONTAINER,
    ADDED_PATH,
    B0_CHAIN,
    EDITED_PATH,
    REMOVED_CONTAINER,
    TwoHosts,
    two_hosts,
)

CONTAINERS = {"a-batch", "a-fresh", "a-idle", "a-web", "a-worker"}


@pytest.fixture(scope="module")
def hosts(docker_a_root: Path, tmp_path_factory: pytest.TempPathFactory) -> TwoHosts:
    return two_hosts(docker_a_root, tmp_path_factory.mktemp("compare-hosts"))


def _zero(summary: dict[str, dict[str, int]]) -> bool:
    """Nothing differs: every count but the shared and matched ones is 0."""
    return all(
        v == 0 for counts in summary.values() for k, v in counts.items() if k not in ("shared", "matched")
    )


# -- the corpus against itself ----------------------------------------------------------------


def test_the_same_tree_collected_twice_is_identical(hosts: TwoHosts) -> None:
    result = api.compare(str(hosts.a), str(hosts.a_again))
    summary = result.summary()
    assert _zero(summary), summary
    assert summary["containers"]["matched"] == 5
    assert summary["images"]["shared"] == 13 and summary["layers"]["shared"] == 7
    assert result.problems == []


def test_a_second_host_shares_no_local_name_and_still_matches_everything(hosts: TwoHosts) -> None:
    a, _ = api.open_analysis(str(hosts.a))
    b, _ = api.open_analysis(str(hosts.b_same))
    assert not set(a.layers) & set(b.layers), "the second host must not share one cache id"
    assert not {c.id for c in a.containers} & {c.id for c in b.containers}
    assert not {layer.link for layer in a.layers.values()} & {layer.link for layer in b.layers.values()}
    assert {c.upper_layer for c in b.containers}.isdisjoint({c.upper_layer for c in a.containers})
    summary = api.compare(str(hosts.a), str(hosts.b_same)).summary()
    assert _zero(summary), summary
    assert summary["containers"]["matched"] == 5


# -- the three differences ----------------------------------------------------------------------


def test_two_hosts_exactly_the_three_differences(hosts: TwoHosts) -> None:
    result = api.compare(str(hosts.a), str(hosts.b))
    assert result.problems == []
    # no image or image layer on one side only: removing a container removes no image
    assert not result.images_only_a and not result.images_only_b
    assert not result.layers_only_a and not result.layers_only_b
    # 1. the edit inside the shared base layer: content only (same size, same mtime)
    assert [(d.chain_id, [(p.path, p.kind, p.details) for p in d.paths]) for d in result.layer_diffs] == [
        (B0_CHAIN, [(EDITED_PATH.encode(), CONTENT, ("content",))])
    ]
    layer = result.layer_diffs[0]
    assert layer.problem is None and layer.diff_id_a == layer.diff_id_b == B0_CHAIN
    assert layer.layer_a != layer.layer_b  # the same content under two hosts' cache ids
    assert {"corpa/base:1", "corpa/app:1.0", "corpa/tools:2"} <= set(layer.images)
    assert set(layer.containers) == CONTAINERS
    # 2. the removed container
    assert [c.name for c in result.containers_only_a] == [REMOVED_CONTAINER]
    assert result.containers_only_b == []
    assert {p.a.name for p in result.pairs} == CONTAINERS - {REMOVED_CONTAINER}
    assert all(p.a.name == p.b.name and p.a.id != p.b.id for p in result.pairs)
    # 3. the file added to a-web's upperdir, in the merged view and in the change report
    unexplained = {(p.a.name, d.path, d.kind, d.origin) for p in result.pairs for d in p.unexplained}
    assert unexplained == {(ADDED_CONTAINER, ADDED_PATH.encode(), ONLY_IN_B, "upper")}
    changes = {(p.a.name, c.path, c.kind) for p in result.pairs for c in p.changes}
    assert changes == {(ADDED_CONTAINER, ADDED_PATH.encode(), ONLY_IN_B)}
    # every container that sees /etc/os-release sees the layer's edit, explained by the layer
    explained = {(p.a.name, d.path, d.explained_by) for p in result.pairs for d in p.view if d.explained_by}
    assert explained == {(name, EDITED_PATH.encode(), B0_CHAIN) for name in CONTAINERS - {REMOVED_CONTAINER}}
    assert [p.a.name for p in result.pairs if p.changed] == [ADDED_CONTAINER]
    summary = result.summary()
    assert summary["layers"]["changed"] == 1
    assert summary["containers"]["only_in_a"] == 1
    assert summary["container_paths"] == {
        "only_in_a": 0,
        "only_in_b": 1,
        "content": 0,
        "metadata": 0,
        "explained_by_layers": 4,
    }


def test_the_edit_is_invisible_to_size_and_mtime(hosts: TwoHosts) -> None:
    """The layer edit keeps size and mtime: only the BLAKE3 hash tells (docker diff would not see it)."""
    layer = api.compare(str(hosts.a), str(hosts.b)).layer_diffs[0]
    d = layer.paths[0]
    assert d.a is not None and d.b is not None
    assert (d.a.size, d.a.mtime_ns, d.a.mode) == (d.b.size, d.b.mtime_ns, d.b.mode)
    assert d.a.blake3 != d.b.blake3


def test_compare_is_symmetric(hosts: TwoHosts) -> None:
    forward = api.compare(str(hosts.a), str(hosts.b))
    backward = api.compare(str(hosts.b), str(hosts.a))
    assert [c.name for c in backward.containers_only_b] == [REMOVED_CONTAINER]
    flipped = {(p.a.name, d.path, d.kind) for p in backward.pairs for d in p.unexplained}
    assert flipped == {(ADDED_CONTAINER, ADDED_PATH.encode(), ONLY_IN_A)}
    assert [d.chain_id for d in backward.layer_diffs] == [d.chain_id for d in forward.layer_diffs]


# -- matching containers ----------------------------------------------------------------------------


def test_explicit_pairs_override_names(hosts: TwoHosts) -> None:
    result = api.compare(str(hosts.a), str(hosts.b), pairs=["a-web=a-worker"])
    pairs = {(p.a.name, p.b.name) for p in result.pairs}
    assert ("a-web", "a-worker") in pairs
    assert {c.name for c in result.containers_only_a} == {"a-worker", REMOVED_CONTAINER}
    assert {c.name for c in result.containers_only_b} == {"a-web"}
    web_vs_worker = next(p for p in result.pairs if p.a.name == "a-web")
    assert web_vs_worker.changes, "two different containers' upperdirs differ"


def test_pairs_accept_ids_and_prefixes(hosts: TwoHosts) -> None:
    a, _ = api.open_analysis(str(hosts.a))
    b, _ = api.open_analysis(str(hosts.b))
    web_a, web_b = a.find_container("a-web"), b.find_container("a-web")
    result = api.compare(str(hosts.a), str(hosts.b), pairs=[f"{web_a.id[:12]}={web_b.id}"])
    assert ("a-web", "a-web") in {(p.a.name, p.b.name) for p in result.pairs}


@pytest.mark.parametrize("pair", ["a-web", "=a-web", "a-web="])
def test_a_malformed_pair_is_a_usage_error(hosts: TwoHosts, pair: str) -> None:
    with pytest.raises(UsageError, match="A=B"):
        api.compare(str(hosts.a), str(hosts.b), pairs=[pair])


def test_a_pair_naming_an_unknown_container_suggests_names(hosts: TwoHosts) -> None:
    with pytest.raises(NotFoundError, match="Did you mean"):
        api.compare(str(hosts.a), str(hosts.b), pairs=["a-wbe=a-web"])


def test_a_container_cannot_be_paired_twice(hosts: TwoHosts) -> None:
    with pytest.raises(UsageError, match="already paired"):
        api.compare(str(hosts.a), str(hosts.b), pairs=["a-web=a-web", "a-worker=a-web"])


# -- bad input ------------------------------------------------------------------------------------


def test_a_snapshot_compared_with_itself_is_refused(hosts: TwoHosts, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="A and B are the same snapshot"):
        api.compare(str(hosts.a), str(hosts.a))
    link = tmp_path / "same.o2f"
    os.symlink(hosts.a, link)
    with pytest.raises(UsageError, match="A and B are the same snapshot"):
        api.compare(str(hosts.a), str(link))
    copy = tmp_path / "copy.o2f"
    shutil.copyfile(hosts.a, copy)  # another file, the same records: the same snapshot
    with pytest.raises(UsageError, match=r"A and B are the same snapshot.*same records digest"):
        api.compare(str(hosts.a), str(copy))


def write_other_version(snapshot: Path, dest: Path, version: str = "99") -> Path:
    """A copy of *snapshot* whose _o2f_meta says another schema version."""
    shutil.copyfile(snapshot, dest)
    with sqlite3.connect(dest) as conn:
        conn.execute("UPDATE _o2f_meta SET value = ? WHERE key = 'schema_version'", (version,))
    conn.close()
    return dest


def test_snapshots_of_different_schema_versions_are_refused(hosts: TwoHosts, tmp_path: Path) -> None:
    other = write_other_version(hosts.b, tmp_path / "v99.o2f")
    with pytest.raises(SnapshotError, match="schema version 99"):
        api.compare(str(hosts.a), str(other))


def test_a_missing_snapshot_is_refused(hosts: TwoHosts, tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="does not exist"):
        api.compare(str(hosts.a), str(tmp_path / "nope.o2f"))


# -- the pure parts -----------------------------------------------------------------------------


def _file(
    path: bytes, data: str = "x", *, layer: str = "L", mode: int = 0o644, mtime: int = 1, **kw: object
) -> Entry:
    return Entry(layer, path, Kind.FILE, mode, 0, 0, len(data), mtime, blake3=f"h-{data}", **kw)  # type: ignore[arg-type]


def test_compare_entries_kinds_and_details() -> None:
    a = {
        b"/": Entry("A", b"/", Kind.DIR, 0o755, 0, 0, None, 1),
        b"/same": _file(b"/same", layer="A"),
        b"/content": _file(b"/content", "old", layer="A"),
        b"/meta": _file(b"/meta", layer="A"),
        b"/gone": _file(b"/gone", layer="A"),
        b"/root-differs-but-is-skipped": _file(b"/root-differs-but-is-skipped", layer="A"),
    }
    b = {
        b"/": Entry("B", b"/", Kind.DIR, 0o700, 0, 0, None, 2),
        b"/same": _file(b"/same", layer="B"),  # another layer id: the same entry
        b"/content": _file(b"/content", "new", layer="B"),
        b"/meta": _file(b"/meta", layer="B", mode=0o4755, mtime=2),
        b"/new": _file(b"/new", layer="B"),
        b"/root-differs-but-is-skipped": _file(b"/root-differs-but-is-skipped", layer="B"),
    }
    diffs = {d.path: (d.kind, d.details) for d in compare_entries(a, b, {}, {})}
    assert diffs == {
        b"/content": (CONTENT, ("content",)),
        b"/gone": (ONLY_IN_A, ()),
        b"/meta": (METADATA, ("mode", "mtime")),
        b"/new": (ONLY_IN_B, ()),
    }
    assert [d.path for d in compare_entries(a, b, {}, {})] == sorted(diffs)


def test_compare_entries_hardlink_partners() -> None:
    """Link groups are numbered per snapshot: only the set of partner paths counts."""
    a = {b"/one": _file(b"/one", link_group=7), b"/two": _file(b"/two", link_group=7)}
    b_same = {b"/one": _file(b"/one", link_group=3), b"/two": _file(b"/two", link_group=3)}
    b_split = {b"/one": _file(b"/one", link_group=3), b"/two": _file(b"/two")}
    groups_a = {7: {b"/one", b"/two"}}
    assert compare_entries(a, b_same, groups_a, {3: {b"/one", b"/two"}}) == []
    split = compare_entries(a, b_split, groups_a, {3: {b"/one"}})
    assert [(d.path, d.kind, d.details) for d in split] == [
        (b"/one", METADATA, ("hardlink",)),
        (b"/two", METADATA, ("hardlink",)),
    ]


def test_compare_changes() -> None:
    def change(path: bytes, kind: ChangeKind, details: tuple[str, ...] = (), data: str = "x") -> Change:
        return Change("c", "c", path, kind, details, _file(path, data, layer="up"), layer="up")

    a = [change(b"/a", ChangeKind.ADDED), change(b"/m", ChangeKind.MODIFIED, ("content",), "1")]
    b = [change(b"/b", ChangeKind.ADDED), change(b"/m", ChangeKind.MODIFIED, ("content",), "2")]
    assert [(d.path, d.kind) for d in compare_changes(a, b)] == [
        (b"/a", ONLY_IN_A),
        (b"/b", ONLY_IN_B),
        (b"/m", "differs"),
    ]
    assert compare_changes(a, list(a)) == []
