"""The directory collector's worker processes, and the per-layer entries digests they feed.

Layers are walked by forked processes that send rows already encoded; the
collecting process writes them and hashes the bytes it received. These tests
pin what that must not change: the rows and each layer's digest do not
depend on the number of processes or on timing, a hardlink shared by two
layers walked by two processes gets one link group, a changed entries row is
named by layer when verifying, and a worker that dies leaves a snapshot
marked incomplete with one sentence, never a whole-looking one.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from forensics import api
from forensics.capture import dirsource
from forensics.errors import SourceError
from tests.conftest import needs_root
from tests.layerlang import dir, file, make_data_root, symlink
from tests.test_cli_collect import assert_refused, o2f

pytestmark = [needs_root, pytest.mark.root]

T2024 = 1_704_067_200
BASE = [
    dir("/etc", mtime=T2024),
    file("/etc/passwd", "root:x:0:0\n", mtime=T2024),
    symlink("/etc/mtab", "/proc/mounts"),
]
MIDDLE = [file(f"/usr/lib/m{i:03}", f"module {i}\n" * (i + 1), mtime=T2024) for i in range(150)]
TOP = [file("/srv/shared", "one inode, two layers\n", mtime=T2024), file("/srv/app", "app\n")]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three image layers; a file of the top one is hardlinked into the bottom one (one inode, two layers)."""
    made = make_data_root(
        tmp_path_factory.mktemp("workers") / "docker",
        images={"workers/app:1": [BASE, MIDDLE, TOP]},
        containers={"c1": ("workers/app:1", None, [file("/srv/upper", "upper\n")])},
        seed="workers",
    )
    image = made.images["workers/app:1"]
    bottom, top = (made.root / "overlay2" / layer / "diff" for layer in (image.layers[0], image.layers[-1]))
    os.link(top / "srv" / "shared", bottom / "etc" / "shared-name")
    return made.root


def _digests(path: str) -> dict[str, tuple[int, str]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT layer_id, entries, digest FROM entry_digests").fetchall()
    conn.close()
    return {layer: (count, digest) for layer, count, digest in rows}


def test_rows_and_layer_digests_do_not_depend_on_the_number_of_processes(tree: Path, tmp_path: Path) -> None:
    api.collect(str(tree), str(tmp_path / "warm.o2f"))  # symlink atimes move once, on the first readlink
    results = {t: api.collect(str(tree), str(tmp_path / f"t{t}.o2f"), threads=t) for t in (1, 2, 3)}
    digests = {t: _digests(r.path) for t, r in results.items()}
    assert digests[1] == digests[2] == digests[3]
    assert len(digests[1]) >= 5  # three image layers, the init layer and the container's
    again = api.collect(str(tree), str(tmp_path / "again.o2f"), threads=2)
    assert _digests(again.path) == digests[2]  # nothing changed: every layer's rows are the same
    for result in (*results.values(), again):
        assert api.verify(result.path).ok


def test_one_inode_in_two_layers_walked_by_two_processes_has_one_link_group(
    tree: Path, tmp_path: Path
) -> None:
    result = api.collect(str(tree), str(tmp_path / "links.o2f"), threads=2)
    with sqlite3.connect(result.path) as conn:
        rows = conn.execute(
            "SELECT path, link_group, nlink, blake3 FROM entries"
            " WHERE path IN ('/srv/shared', '/etc/shared-name')"
        ).fetchall()
    conn.close()
    assert len(rows) == 2
    (_, group_a, nlink_a, hash_a), (_, group_b, nlink_b, hash_b) = rows
    assert group_a == group_b is not None and nlink_a == nlink_b == 2 and hash_a == hash_b is not None
    with sqlite3.connect(result.path) as conn:
        singles = conn.execute(
            "SELECT count(*) FROM entries WHERE nlink = 1 AND link_group IS NOT NULL"
        ).fetchone()
    conn.close()
    assert singles == (0,)


def test_verify_names_the_layer_whose_entries_rows_changed(tree: Path, tmp_path: Path) -> None:
    result = api.collect(str(tree), str(tmp_path / "ok.o2f"))
    forged = tmp_path / "forged.o2f"
    shutil.copy(result.path, forged)
    with sqlite3.connect(forged) as conn:
        layer = conn.execute("SELECT layer_id FROM entries WHERE path = '/etc/passwd'").fetchone()[0]
        conn.execute("UPDATE entries SET mode = 511 WHERE path = '/etc/passwd'")
    conn.close()
    checked = api.verify(str(forged))
    assert not checked.ok and checked.altered_layers == (layer,)
    assert checked.stored == checked.recomputed  # the records digest alone would not have told
    done = o2f("verify", forged)
    assert done.returncode == 1 and f"altered entries   layer {layer}" in done.stdout
    assert "entries of 1 layer(s) changed" in done.stderr


def test_a_worker_that_dies_leaves_an_incomplete_snapshot_and_one_sentence(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    walk = dirsource._LayerWalker.walk
    parent = os.getpid()

    def dying(self, index, unit):  # type: ignore[no-untyped-def]
        if os.getpid() != parent and b"/diff" in unit.rel and index == 0:
            os._exit(7)  # a worker killed in the middle of its first layer
        return walk(self, index, unit)

    monkeypatch.setattr(dirsource._LayerWalker, "walk", dying)
    output = tmp_path / "died.o2f"
    with pytest.raises(
        SourceError,
        match=r"ended unexpectedly \(exit code 7\) while reading overlay2/.*/diff\. .*marked incomplete",
    ):
        api.collect(str(tree), str(output), threads=2)
    info = api.info(str(output))
    assert not info.complete


def test_a_baseline_whose_layer_rows_changed_is_refused_before_anything_is_written(
    tree: Path, tmp_path: Path
) -> None:
    baseline = api.collect(str(tree), str(tmp_path / "baseline.o2f"))
    forged = tmp_path / "forged.o2f"
    shutil.copy(baseline.path, forged)
    with sqlite3.connect(forged) as conn:
        conn.execute("UPDATE entries SET uid = 1000 WHERE path = '/etc/passwd'")  # no hash touched
    conn.close()
    output = tmp_path / "new.o2f"
    assert_refused(o2f("collect", tree, "-o", output, "--reuse", forged, "--quiet"), "records digest")
    assert not output.exists()


def test_a_layer_root_that_cannot_be_opened_is_recorded_from_the_walk_and_an_error_row(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root nothing is unreadable; the open is made to fail as it does for another user (EACCES)."""
    opened = dirsource._open_path
    victim = next(p.name for p in (tree / "overlay2").iterdir() if p.name.endswith("-init"))

    def refusing(root_fd: int, rel: bytes) -> int:
        if victim.encode() in rel:
            raise PermissionError(13, "Permission denied")
        return opened(root_fd, rel)

    monkeypatch.setattr(dirsource, "_open_path", refusing)
    result = api.collect(str(tree), str(tmp_path / "denied.o2f"), threads=1)
    with sqlite3.connect(result.path) as conn:
        rows = conn.execute("SELECT path, kind FROM entries WHERE layer_id = ?", (victim,)).fetchall()
        errors = conn.execute(
            "SELECT path, operation, errno FROM errors WHERE layer_id = ?", (victim,)
        ).fetchall()
    conn.close()
    assert rows == [("/", "dir")]
    assert errors == [(f"overlay2/{victim}/diff", "open", 13)]
    assert api.verify(result.path).ok


def test_rows_cut_into_many_batches_are_the_same_rows(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A layer's rows go back in batches (2000 entries by default): cut small, each arrives once."""
    api.collect(str(tree), str(tmp_path / "warm.o2f"))  # symlink atimes move once, on the first readlink
    whole = api.collect(str(tree), str(tmp_path / "whole.o2f"), threads=2)
    monkeypatch.setattr(dirsource, "_BATCH_ENTRIES", 7)
    for threads in (1, 2):
        cut = api.collect(str(tree), str(tmp_path / f"cut-{threads}.o2f"), threads=threads)
        assert _digests(cut.path) == _digests(whole.path), threads
        assert api.info(cut.path).counts["entries"] == api.info(whole.path).counts["entries"] > 150


# -- a name swapped between the listing and the open ------------------------------------------------


def _blocked_writer(fifo: Path) -> threading.Thread:
    """A thread blocked in open(O_WRONLY) on *fifo* until some reader opens it."""
    thread = threading.Thread(target=lambda: os.close(os.open(fifo, os.O_WRONLY)), daemon=True)
    thread.start()
    time.sleep(0.1)
    assert thread.is_alive()
    return thread


def test_a_fifo_swapped_in_for_a_listed_file_is_never_opened(tmp_path: Path) -> None:
    """Off a read-only mount a listed file is opened with O_PATH first: a FIFO in its place is not opened.

    The control (the path for read-only mounts, where nothing can be swapped) does open it, which
    releases the blocked writer: the check can tell the difference.
    """
    fifo = tmp_path / "was-a-file"
    os.mkfifo(fifo)
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        writer = _blocked_writer(fifo)
        fd, st = dirsource.open_listed_file(dir_fd, b"was-a-file", fixed=False)
        writer.join(0.3)
        assert fd == -1 and stat.S_ISFIFO(st.st_mode)
        assert writer.is_alive()  # nobody opened the FIFO for reading
        fd, st = dirsource.open_listed_file(dir_fd, b"was-a-file", fixed=True)  # the control
        writer.join(2)
        assert fd == -1 and stat.S_ISFIFO(st.st_mode) and not writer.is_alive()
    finally:
        os.close(dir_fd)


def test_a_listed_file_is_read_through_its_o_path_descriptor(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"#!/bin/sh\n")
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for fixed in (False, True):
            fd, st = dirsource.open_listed_file(dir_fd, b"f", fixed=fixed)
            try:
                assert os.read(fd, 100) == b"#!/bin/sh\n" and st.st_ino == os.fstat(fd).st_ino
            finally:
                os.close(fd)
    finally:
        os.close(dir_fd)


def test_a_read_only_mount_is_walked_the_same(tree: Path, tmp_path: Path) -> None:
    """Evidence mounted read-only takes the plain open (nothing can be swapped): the same rows."""
    api.collect(str(tree), str(tmp_path / "warm.o2f"))  # symlink atimes move once, on the first readlink
    writable = api.collect(str(tree), str(tmp_path / "rw.o2f"), threads=2)
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "--bind", str(tree), str(mount)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], check=True)
        fd = os.open(mount, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert dirsource.on_read_only_mount(fd)
        finally:
            os.close(fd)
        read_only = api.collect(str(mount), str(tmp_path / "ro.o2f"), threads=2)
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    assert _digests(read_only.path) == _digests(writable.path)
