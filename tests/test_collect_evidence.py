"""Collection changes nothing: not one timestamp, not one xattr, on a strictatime filesystem.

Two data roots (one built with :mod:`layerlang`, with a container changed
through a real overlay mount; one the extracted docker-a corpus) are copied
onto a tmpfs mounted ``-o strictatime``, where *every* read updates atime.
Every entry's atime/mtime/ctime (ns), owner, mode, size, inode and xattrs are
recorded with ``lstat``/``llistxattr`` before and after collection (listing
directories with ``O_NOATIME``, never reading contents) and must be equal;
only symlink atimes may move (``readlink`` updates them and cannot be told not
to). A control step shows the same measurement does see a plain ``open()``
read and a plain directory listing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from forensics import api
from tests.conftest import needs_root
from tests.layerlang import dir, file, hardlink, make_data_root, opaque, scan, sparse, symlink, whiteout

pytestmark = [needs_root, pytest.mark.root]

T2024 = 1_704_067_200


def change(merged: Path) -> None:
    (merged / "etc/motd").unlink()
    with open(merged / "etc/passwd", "a") as handle:
        handle.write("eve:x:0:0::/root:/bin/sh\n")
    os.setxattr(merged / "srv/notes.txt", "user.tag", b"seen")
    subprocess.run(["rm", "-rf", str(merged / "srv/old")], check=True)
    (merged / "srv/old").mkdir()
    os.symlink("/etc/shadow", merged / "srv/shadow-link")


@pytest.fixture(scope="module")
def strict_tmpfs(tmp_path_factory: pytest.TempPathFactory):
    mount_point = tmp_path_factory.mktemp("strictatime")
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "strictatime,size=1g,mode=0755", "o2f-evidence", str(mount_point)],
        check=True,
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


@pytest.fixture(scope="module")
def roots(strict_tmpfs: Path, docker_a_root: Path) -> list[Path]:
    built = make_data_root(
        strict_tmpfs / "built",
        images={
            "evidence/app:1": [
                [
                    file("/etc/motd", "hello\n", mtime=T2024),
                    file("/etc/passwd", "root:x:0:0::/root:/bin/sh\n", mtime=T2024),
                    file("/srv/notes.txt", "notes\n", mtime=T2024, xattrs={"user.origin": b"base"}),
                    hardlink("/srv/notes-link", "/srv/notes.txt"),
                    file("/srv/old/a.txt", "a\n", mtime=T2024),
                    symlink("/srv/rel", "notes.txt", mtime=T2024),
                    sparse("/srv/sparse.img", 8 << 20, {4 << 20: b"MIDDLE"}, mtime=T2024),
                    dir("/srv", mtime=T2024),
                ],
                [whiteout("/srv/old/a.txt"), opaque("/srv/new"), file("/srv/new/b.txt", "b\n")],
            ]
        },
        containers={"c": ("evidence/app:1", None, change)},
        seed="evidence",
    ).root
    corpus = strict_tmpfs / "corpus"
    subprocess.run(["cp", "-a", str(docker_a_root), str(corpus)], check=True)
    return [built, corpus]


def _differences(before: dict[bytes, dict], after: dict[bytes, dict]) -> list[tuple[bytes, str]]:
    assert set(before) == set(after)
    out = []
    for path, old in before.items():
        new = after[path]
        for key in old:
            if key == "atime_ns" and old["kind"] == "symlink":
                continue  # readlink(2) always updates a symlink's atime
            if old[key] != new[key]:
                out.append((path, key))
    return out


def test_the_tmpfs_is_strictatime(strict_tmpfs: Path) -> None:
    options = next(
        line.split()[3]
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[1] == str(strict_tmpfs)
    )
    assert "relatime" not in options.split(",") and "noatime" not in options.split(",")


def test_collection_changes_no_timestamp_and_no_xattr(roots: list[Path], tmp_path: Path) -> None:
    for index, root in enumerate(roots):
        before = scan(root, read=False)
        assert scan(root, read=False) == before  # the measurement itself changes nothing
        result = api.collect(str(root), str(tmp_path / f"snap{index}.o2f"))
        assert result.provenance.complete
        assert result.provenance.counts["entries"] > 20
        after = scan(root, read=False)
        assert _differences(before, after) == [], root
        assert any(row["kind"] == "symlink" for row in before.values())


def test_the_measurement_sees_an_ordinary_read(roots: list[Path]) -> None:
    """Control: the comparison above can fail. A plain open()+read() and a plain listing on this
    strictatime tmpfs change atime, and scan() reports exactly those changes."""
    root = roots[0]
    before = scan(root, read=False)
    victim = next(path for path, row in sorted(before.items()) if row["kind"] == "file" and row["size"])
    folder = next(path for path, row in sorted(before.items()) if row["kind"] == "dir" and path != b"/")
    with open(os.fsencode(root) + victim, "rb") as handle:
        assert handle.read()
    os.listdir(os.fsencode(root) + folder)
    after = scan(root, read=False)
    assert sorted(_differences(before, after)) == sorted([(victim, "atime_ns"), (folder, "atime_ns")])
