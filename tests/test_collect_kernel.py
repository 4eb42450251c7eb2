"""Collection against what the kernel really writes: container changes made through an overlay mount.

A two-layer image is written with :mod:`layerlang`, a container is changed
*through a real ``mount -t overlay``* (rm, rm -rf, rm -rf + mkdir, append,
chmod, chown, touch, mv file, mv dir, ln, setxattr, mkfifo), the overlay is
unmounted, and the snapshot must hold exactly what the kernel left in every
layer's ``diff/``: each row equal to an independent lstat/listxattr/blake3
reading of the same directory, plus the overlay flags.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from blake3 import blake3

from forensics import api
from forensics.model import Entry, Kind, path_to_text
from tests.conftest import needs_root
from tests.layerlang import (
    dir,
    file,
    hardlink,
    make_data_root,
    mounted,
    opaque,
    scan,
    symlink,
    whiteout,
)

pytestmark = [needs_root, pytest.mark.root]

T2024 = 1_704_067_200  # 2024-01-01T00:00:00Z
T2021 = 1_614_834_367  # 2021-03-04T05:06:07Z

BASE = [
    dir("/etc", mtime=T2024),
    file("/etc/motd", "welcome\n", mtime=T2024),
    file("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", mtime=T2024),
    symlink("/etc/mtab", "/proc/mounts", mtime=T2024),
    dir("/srv/data", mtime=T2024),
    file("/srv/data/modify.txt", "original\n", mtime=T2024),
    file("/srv/data/chmod.txt", "chmod me\n", mtime=T2024),
    file("/srv/data/chown.txt", "chown me\n", mtime=T2024),
    file("/srv/data/touch.txt", "touch me\n", mtime=T2024),
    file("/srv/data/delete.txt", "delete me\n", mtime=T2024),
    file("/srv/data/rename.txt", "rename me\n", mtime=T2024),
    file("/srv/data/hl-src.txt", "link me\n", mtime=T2024),
    file("/srv/data/xattr.txt", "xattr me\n", mtime=T2024),
    file("/srv/data/keep.txt", "untouched\n", mtime=T2024),
    file("/srv/data/delete-dir/x.txt", "x\n", mtime=T2024),
    file("/srv/data/delete-dir/y/z.txt", "z\n", mtime=T2024),
    file("/srv/data/opaque/old1.txt", "old1\n", mtime=T2024),
    file("/srv/data/opaque/sub/old2.txt", "old2\n", mtime=T2024),
    file("/srv/data/rename-dir/f1.txt", "f1\n", mtime=T2024),
    file("/srv/data/rename-dir/sub/f2.txt", "f2\n", mtime=T2024),
    file("/srv/img-opaque/hidden.txt", "hidden by L1\n", mtime=T2024),
    file("/usr/share/hl/one", "pair\n", mtime=T2024),
    hardlink("/usr/share/hl/two", "/usr/share/hl/one"),
    file("/usr/bin/suid", "#!/bin/sh\n", mode=0o4755, mtime=T2024),
]
L1 = [
    whiteout("/etc/motd"),
    opaque("/srv/img-opaque"),
    file("/srv/img-opaque/shown.txt", "L1\n"),
]

# Paths of the container's upperdir after ACT, with what the kernel makes of them.
WHITEOUTS = {
    b"/srv/data/delete.txt",
    b"/srv/data/delete-dir",
    b"/srv/data/rename.txt",
    b"/srv/data/rename-dir",
}
COPIED_UP_SAME_CONTENT = {
    b"/srv/data/chmod.txt",
    b"/srv/data/chown.txt",
    b"/srv/data/touch.txt",
    b"/srv/data/xattr.txt",
    b"/srv/data/hl-src.txt",
}


def act(merged: Path) -> None:
    """What a user does inside the running container."""
    data = merged / "srv/data"
    (data / "delete.txt").unlink()  # rm file
    subprocess.run(["rm", "-rf", str(data / "delete-dir")], check=True)  # rm -rf dir
    subprocess.run(["rm", "-rf", str(data / "opaque")], check=True)  # rm -rf + mkdir: opaque
    (data / "opaque").mkdir()
    (data / "opaque/fresh.txt").write_text("fresh\n")
    with open(data / "modify.txt", "a") as handle:  # echo >> lower file
        handle.write("appended\n")
    os.chmod(data / "chmod.txt", 0o600)
    os.chown(data / "chown.txt", 1000, 1000)
    subprocess.run(["touch", "-d", "2021-03-04T05:06:07Z", str(data / "touch.txt")], check=True)
    subprocess.run(["mv", str(data / "rename.txt"), str(data / "renamed.txt")], check=True)
    # redirect_dir is off: rename(2) of a lower dir fails with EXDEV and mv copies + deletes
    subprocess.run(["mv", str(data / "rename-dir"), str(data / "renamed-dir")], check=True)
    os.link(data / "hl-src.txt", data / "hl-link.txt")  # ln of a lower file
    os.setxattr(data / "xattr.txt", "user.x", b"forensic")
    os.mkfifo(data / "new.fifo", 0o640)
    with open(merged / "usr/share/hl/one", "a") as handle:  # breaks the lower hardlink pair
        handle.write("changed through one\n")
    web = merged / "srv/web"
    web.mkdir()
    (web / "new-a").write_text("new pair\n")
    os.link(web / "new-a", web / "new-b")
    os.symlink("/etc/shadow", web / "shadow-link")
    os.symlink("../data/keep.txt", web / "rel-link")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("kernel")
    root = make_data_root(
        base / "docker",
        images={"kernel/app:1": [BASE, L1]},
        containers={"web": ("kernel/app:1", None, act)},
        seed="kernel",
    )
    before = {
        p.name: scan(p / "diff", read=False) for p in (root.root / "overlay2").iterdir() if p.name != "l"
    }
    result = api.collect(str(root.root), str(base / "snap.o2f"))
    return root, result, before


@pytest.fixture(scope="module")
def snapshot(built):
    _, result, _ = built
    with api.open_snapshot(result.path) as snap:
        yield snap


def _flags(path: str, layer_id: str) -> dict[bytes, tuple[int, int, list[str] | None]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT path, whiteout, opaque, overlay_private FROM entries WHERE layer_id = ?", (layer_id,)
        ).fetchall()
    from forensics.model import path_from_text

    return {path_from_text(p): (w, o, json.loads(x) if x else None) for p, w, o, x in rows}


def _expected(layer_id: str, path: bytes, row: dict[str, object]) -> Entry:
    return Entry(layer_id=layer_id, path=path, kind=Kind(row["kind"]), **{
        k: v for k, v in row.items() if k != "kind"
    })  # fmt: skip


def test_the_kernel_did_what_the_scenario_expects(built) -> None:
    """Guards the fixture itself: these are kernel facts the other tests rely on."""
    root, _, _ = built
    upper = scan(root.upper("web"), read=False)
    for path in WHITEOUTS:
        assert upper[path]["kind"] == "char" and (upper[path]["rdev_major"], upper[path]["rdev_minor"]) == (
            0,
            0,
        )
    assert dict(upper[b"/srv/data/opaque"]["xattrs"]).get("trusted.overlay.opaque") == b"y"
    assert b"/srv/data/opaque/fresh.txt" in upper and b"/srv/data/opaque/old1.txt" not in upper
    assert b"/srv/data/delete-dir/x.txt" not in upper  # a deleted dir is one whiteout
    assert upper[b"/srv/data/renamed-dir/sub/f2.txt"]["kind"] == "file"  # EXDEV fallback: a full copy
    assert "trusted.overlay.redirect" not in dict(upper[b"/srv/data/renamed-dir"]["xattrs"])
    assert upper[b"/srv/data/hl-link.txt"]["inode"] == upper[b"/srv/data/hl-src.txt"]["inode"]
    assert b"/usr/share/hl/two" not in upper
    assert "trusted.overlay.uuid" in dict(upper[b"/"]["xattrs"])


def test_every_row_of_every_layer_equals_an_independent_reading(built, snapshot) -> None:
    """Metadata as lstat saw it before collection; targets and hashes read independently afterwards."""
    root, _, before = built
    assert snapshot.errors() == []
    assert set(snapshot.layers) == set(before)
    for layer_id, layer in snapshot.layers.items():
        after = scan(root.root / os.fsdecode(layer.diff_path))
        rows = {e.path: e for e in snapshot.entries(layer_id)}
        assert set(rows) == set(before[layer_id]) == set(after), layer_id
        for path, row in before[layer_id].items():
            truth = dict(row, **{k: after[path][k] for k in ("target", "blake3", "head")})
            assert replace(rows[path], link_group=None) == _expected(layer_id, path, truth), (layer_id, path)
            if row["kind"] != "symlink":  # readlink updates a symlink's atime; nothing else may change
                assert dict(after[path], target=None, blake3=None, head=None) == row, (layer_id, path)


def test_hardlinks_share_a_link_group_and_nothing_else_does(built, snapshot) -> None:
    root, _, _ = built
    groups: dict[int, set[tuple[str, int]]] = {}
    for layer_id in snapshot.layers:
        for entry in snapshot.entries(layer_id):
            if entry.kind is Kind.FILE and entry.nlink and entry.nlink > 1:
                assert entry.link_group is not None, entry.path
                groups.setdefault(entry.link_group, set()).add((layer_id, entry.inode))
            elif entry.kind is Kind.FILE:
                assert entry.link_group is None, entry.path
    assert all(len(members) == 1 for members in groups.values())  # one group = one inode
    assert len({next(iter(m)) for m in groups.values()}) == len(groups)  # one inode = one group
    web = root.containers["web"].mount_id
    upper = {e.path: e for e in snapshot.entries(web)}
    assert upper[b"/srv/data/hl-src.txt"].link_group == upper[b"/srv/data/hl-link.txt"].link_group
    assert upper[b"/srv/web/new-a"].link_group == upper[b"/srv/web/new-b"].link_group
    assert upper[b"/srv/web/new-a"].link_group != upper[b"/srv/data/hl-src.txt"].link_group
    assert upper[b"/usr/share/hl/one"].link_group is None  # copy-up broke the pair
    base = {e.path: e for e in snapshot.entries(root.images["kernel/app:1"].layers[0])}
    assert base[b"/usr/share/hl/one"].link_group == base[b"/usr/share/hl/two"].link_group is not None


def test_whiteouts_and_opaque_dirs_are_flagged(built, snapshot) -> None:
    root, result, _ = built
    web = root.containers["web"].mount_id
    flags = _flags(result.path, web)
    upper = {e.path: e for e in snapshot.entries(web)}
    assert {p for p, (w, _, _) in flags.items() if w} == WHITEOUTS
    for path in WHITEOUTS:
        entry = upper[path]
        assert (entry.kind, entry.rdev, entry.mode, entry.uid, entry.gid) == (Kind.CHAR, "0:0", 0, 0, 0)
    assert {p for p, (_, o, _) in flags.items() if o} == {b"/srv/data/opaque"}
    l1 = root.images["kernel/app:1"].layers[1]
    image_flags = _flags(result.path, l1)
    assert {p for p, (w, _, _) in image_flags.items() if w} == {b"/etc/motd"}
    assert {p for p, (_, o, _) in image_flags.items() if o} == {b"/srv/img-opaque"}


def test_kernel_bookkeeping_xattrs_are_listed_as_overlay_private(built, snapshot) -> None:
    root, result, _ = built
    for layer_id in snapshot.layers:
        flags = _flags(result.path, layer_id)
        for entry in snapshot.entries(layer_id):
            private = sorted(
                n for n, _ in entry.xattrs if n.startswith(("trusted.overlay.", "user.overlay."))
            )
            assert flags[entry.path][2] == (private or None), (layer_id, entry.path)
    web = root.containers["web"].mount_id
    flags = _flags(result.path, web)
    for path in COPIED_UP_SAME_CONTENT | {b"/srv/data/modify.txt", b"/srv/data/renamed.txt"}:
        assert "trusted.overlay.origin" in flags[path][2], path
    assert "trusted.overlay.impure" in flags[b"/srv/data"][2]
    assert "trusted.overlay.uuid" in flags[b"/"][2]
    assert flags[b"/srv/data/renamed-dir/f1.txt"][2] is None  # a plain copy, not a copy-up
    assert (
        flags[b"/srv/data/opaque"][2] is not None
        and "trusted.overlay.opaque" in flags[b"/srv/data/opaque"][2]
    )


def test_copy_ups_keep_the_lower_content_and_metadata_changes(built, snapshot) -> None:
    root, _, _ = built
    base = {e.path: e for e in snapshot.entries(root.images["kernel/app:1"].layers[0])}
    upper = {e.path: e for e in snapshot.entries(root.containers["web"].mount_id)}
    for path in COPIED_UP_SAME_CONTENT:
        assert upper[path].blake3 == base[path].blake3 is not None, path
    assert upper[b"/srv/data/renamed.txt"].blake3 == base[b"/srv/data/rename.txt"].blake3
    assert (
        upper[b"/srv/data/renamed-dir/sub/f2.txt"].blake3 == base[b"/srv/data/rename-dir/sub/f2.txt"].blake3
    )
    assert upper[b"/srv/data/modify.txt"].blake3 == blake3(b"original\nappended\n").hexdigest()
    assert upper[b"/srv/data/modify.txt"].blake3 != base[b"/srv/data/modify.txt"].blake3
    assert upper[b"/srv/data/chmod.txt"].mode == 0o600
    assert (upper[b"/srv/data/chown.txt"].uid, upper[b"/srv/data/chown.txt"].gid) == (1000, 1000)
    assert upper[b"/srv/data/touch.txt"].mtime_ns == T2021 * 10**9
    assert upper[b"/srv/data/chmod.txt"].mtime_ns == T2024 * 10**9  # copy-up keeps the lower mtime
    assert upper[b"/srv/data/xattr.txt"].xattr("user.x") == b"forensic"
    assert upper[b"/srv/data/hl-src.txt"].nlink == 2
    assert upper[b"/srv/data/new.fifo"].kind is Kind.FIFO and upper[b"/srv/data/new.fifo"].blake3 is None
    assert upper[b"/srv/web/shadow-link"].target == b"/etc/shadow"
    assert upper[b"/srv/web/rel-link"].target == b"../data/keep.txt"
    assert b"/srv/data/keep.txt" not in upper


def test_stored_paths_are_the_text_form_and_verify_passes(built) -> None:
    _, result, _ = built
    with sqlite3.connect(f"file:{result.path}?mode=ro", uri=True) as conn:
        stored = {p for (p,) in conn.execute("SELECT path FROM entries")}
    assert path_to_text(b"/srv/data/renamed-dir/sub/f2.txt") in stored
    assert api.verify(result.path).ok
    assert result.provenance.complete


@pytest.mark.parametrize("relative", [False, True], ids=["absolute-lowerdirs", "relative-lowerdirs"])
def test_a_live_container_is_captured_from_its_upperdir_not_its_mount(tmp_path: Path, relative: bool) -> None:
    """A running container: ``merged/`` is an overlay mount point; it is noted, never walked, and the
    live mount table (read because a mount refers to the data root) records the overlay."""
    root = make_data_root(
        tmp_path / "docker",
        images={"live/app:1": [[file("/etc/motd", "hi\n"), file("/srv/lower-only.txt", "lower\n")]]},
        containers={"c": ("live/app:1", None, [file("/srv/upper.txt", "upper\n")])},
        seed=f"live-{relative}",
    )
    upper = root.containers["c"].mount_id
    with mounted(root.root, "c", relative=relative) as merged:
        assert (merged / "srv/lower-only.txt").read_text() == "lower\n"
        result = api.collect(str(root.root), str(tmp_path / "live.o2f"))
    with api.open_snapshot(result.path) as snap:
        assert snap.layers[upper].has_merged
        assert {e.path for e in snap.entries(upper)} == set(scan(root.upper("c"), read=False))
        overlays = [m for m in snap.mounts() if m.fs_type == "overlay" and m.mount_point.endswith(b"/merged")]
    assert any(m.mount_point == os.fsencode(root.root / "overlay2" / upper / "merged") for m in overlays)
    mine = next(m for m in overlays if m.mount_point.endswith(upper.encode() + b"/merged"))
    expected = f"{upper}/diff" if relative else str(root.root / "overlay2" / upper / "diff")
    assert mine.upperdir == expected.encode()
    assert len(mine.lowerdirs) == 2 and all(b"l/" in d for d in mine.lowerdirs)
