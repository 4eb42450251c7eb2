"""`o2f collect --reuse`: hashes taken from a baseline only for files whose reuse key is unchanged.

The fast path keeps the slow path's contract (STYLE.md): a collection that
reuses every hash of an unchanged tree holds exactly the entries a full
collection holds, on both the in-process and the forked hashing path. A file
whose content changed is read again: a same-size edit with a new mtime, a
same-size edit whose mtime was put back (only the ctime tells, and that is
the case the ctime in the key exists for), and a file replaced by another
inode with the same size and mtime. A baseline that cannot be trusted to
supply hashes is refused in one sentence, exit 2.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from blake3 import blake3

from forensics import api
from forensics.model import path_to_text
from tests.conftest import SAMPLE_TAR, needs_root
from tests.layerlang import dir, file, hardlink, make_data_root, symlink
from tests.test_cli_collect import assert_refused, o2f

pytestmark = [needs_root, pytest.mark.root]

T2024 = 1_704_067_200

BASE = [
    dir("/etc", mtime=T2024),
    file("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", mtime=T2024),
    file("/etc/hosts", "127.0.0.1 localhost\n", mtime=T2024),
    symlink("/etc/mtab", "/proc/mounts", mtime=T2024),
    file("/usr/bin/tool", b"\x7fELF" + bytes(range(256)) * 40, mode=0o755, mtime=T2024),
    file("/usr/bin/suid", "#!/bin/sh\n", mode=0o4755, mtime=T2024),
    file("/usr/share/hl/one", "pair\n", mtime=T2024),
    hardlink("/usr/share/hl/two", "/usr/share/hl/one"),
    file("/usr/share/tagged", "tagged\n", mtime=T2024, xattrs={"user.origin": b"base"}),
    file("/srv/empty", "", mtime=T2024),
]
TOP = [file("/srv/app.conf", "listen 80\n", mtime=T2024), file("/srv/data.bin", os.urandom(3 << 20))]
TARGET = b"/etc/hosts"  # the file the edits below change, in the base image layer


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small data root with two image layers and a container changed through a real overlay mount."""
    root = make_data_root(
        tmp_path_factory.mktemp("reuse") / "docker",
        images={"reuse/app:1": [BASE, TOP]},
        containers={"web": ("reuse/app:1", None, [file("/srv/upper.txt", "upper\n"), file(TARGET, "x\n")])},
        seed="reuse",
    )
    return root.root


@pytest.fixture()
def tree(built: Path, tmp_path: Path) -> Path:
    """A private copy (hardlinks, owners, xattrs and times kept) that a test may change."""
    dest = tmp_path / "docker"
    subprocess.run(["cp", "-a", str(built), str(dest)], check=True)
    return dest


def _rows(path: str) -> dict[tuple[str, str], dict[str, object]]:
    """Every entry column but the row id, by (layer, path)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM entries").fetchall()
    conn.close()
    names = [k for k in rows[0].keys() if k != "id"] if rows else []  # noqa: SIM118 (a Row iterates values)
    return {(r["layer_id"], r["path"]): {k: r[k] for k in names} for r in rows}


def _without_reuse_marks(rows: dict[tuple[str, str], dict[str, object]]) -> dict:
    return {key: {k: v for k, v in row.items() if k != "hash_reused"} for key, row in rows.items()}


def _base_layer(snapshot: str) -> str:
    """The bottom layer of the image."""
    with api.open_snapshot(snapshot) as snap:
        return next(image.layers[0] for image in snap.images if image.layers)


def _hashed_files(rows: dict) -> set:
    return {key for key, row in rows.items() if row["kind"] == "file" and row["blake3"] is not None}


def _assert_no_differences(a: str, b: str) -> None:
    done = o2f("compare", a, b, "--format", "json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)["summary"]
    for part, counts in summary.items():
        for name, count in counts.items():
            if name not in ("shared", "matched"):
                assert count == 0, (part, name, count)


# --- an unchanged tree -------------------------------------------------------------------------


def test_reusing_every_hash_of_an_unchanged_tree_gives_the_entries_of_a_full_collection(
    tree: Path, tmp_path: Path
) -> None:
    baseline = api.collect(str(tree), str(tmp_path / "baseline.o2f"))
    # Reading symlinks moved their atimes once (relatime): compare with full collections made after it.
    full = {t: api.collect(str(tree), str(tmp_path / f"full-{t}.o2f"), threads=t) for t in (1, 2)}
    reused = {
        t: api.collect(str(tree), str(tmp_path / f"reused-{t}.o2f"), threads=t, reuse=baseline.path)
        for t in (1, 2)
    }
    expected = _rows(full[1].path)
    assert _rows(full[2].path) == expected
    files = _hashed_files(expected)
    assert len(files) >= 10 and all(row["hash_reused"] == 0 for row in expected.values())
    for threads, result in reused.items():
        rows = _rows(result.path)
        # blake3 and every other column, whiteout and link groups included
        assert _without_reuse_marks(rows) == _without_reuse_marks(expected), threads
        assert {key for key, row in rows.items() if row["hash_reused"]} == files, threads
        p = result.provenance
        assert (p.hashes_reused, p.bytes_read) == (len(files), 0), threads
        assert p.options["reuse"] == {"baseline": baseline.path, "digest": baseline.digest}
        assert api.verify(result.path).ok
        assert api.info(result.path).provenance["hashes_reused"] == len(files)
    assert full[1].provenance.hashes_reused == 0 and "reuse" not in full[1].provenance.options
    assert full[1].provenance.bytes_read > 3 << 20
    # The hardlinked pair: one group, both names reused; xattrs unchanged (the ctime guards them too).
    rows = _rows(reused[2].path)
    layer = next(layer for layer, path in rows if path == "/usr/share/hl/one")
    one, two = rows[(layer, "/usr/share/hl/one")], rows[(layer, "/usr/share/hl/two")]
    assert one["link_group"] == two["link_group"] is not None
    assert one["hash_reused"] == two["hash_reused"] == 1
    assert json.loads(rows[(layer, "/usr/share/tagged")]["xattrs"]) == {"user.origin": b"base".hex()}
    assert rows[(layer, "/usr/share/tagged")]["dev"] == os.lstat(tree).st_dev
    _assert_no_differences(full[2].path, reused[2].path)


def test_the_reader_gives_back_dev_and_hash_reused(tree: Path, tmp_path: Path) -> None:
    baseline = api.collect(str(tree), str(tmp_path / "baseline.o2f"))
    reused = api.collect(str(tree), str(tmp_path / "reused.o2f"), reuse=baseline.path)
    with api.open_snapshot(reused.path) as snap:
        entries = [e for layer in snap.layers for e in snap.entries(layer)]
    files = [e for e in entries if e.blake3 is not None]
    assert files and all(e.hash_reused for e in files)
    assert not any(e.hash_reused for e in entries if e.blake3 is None)
    assert {e.dev for e in entries} == {os.lstat(tree).st_dev}


def test_a_changed_xattr_is_read_again_not_taken_from_the_baseline(tree: Path, tmp_path: Path) -> None:
    """setxattr sets the ctime: the reuse key no longer matches, so the file is opened and read."""
    baseline = api.collect(str(tree), str(tmp_path / "baseline.o2f"))
    layer = _base_layer(baseline.path)
    tagged = tree / "overlay2" / layer / "diff" / "usr" / "share" / "tagged"
    os.setxattr(tagged, "user.origin", b"changed")
    for threads in (1, 2):
        output = str(tmp_path / f"reused-{threads}.o2f")
        result = api.collect(str(tree), output, reuse=baseline.path, threads=threads)
        row = _rows(result.path)[(layer, "/usr/share/tagged")]
        assert json.loads(row["xattrs"]) == {"user.origin": b"changed".hex()}, threads
        assert row["hash_reused"] == 0 and row["blake3"] == blake3(b"tagged\n").hexdigest(), threads
        assert result.provenance.bytes_read == len(b"tagged\n"), threads


# --- changed files are read again --------------------------------------------------------------


def _edit_in_place(path: Path, data: bytes) -> None:
    with open(path, "r+b") as handle:
        assert len(data) == os.fstat(handle.fileno()).st_size
        handle.write(data)


def _recollect(tree: Path, tmp_path: Path, change) -> tuple[dict, dict, tuple[str, str]]:  # type: ignore[no-untyped-def]
    """Baseline, *change*, then a reused and a full collection of the changed tree."""
    baseline = api.collect(str(tree), str(tmp_path / "baseline.o2f"))
    layer = _base_layer(baseline.path)
    path = tree / "overlay2" / layer / "diff" / "etc" / "hosts"
    before = os.lstat(path)
    change(path, before)
    after = os.lstat(path)
    assert after.st_size == before.st_size
    reused = {
        t: api.collect(str(tree), str(tmp_path / f"reused-{t}.o2f"), reuse=baseline.path, threads=t)
        for t in (1, 2)
    }
    full = api.collect(str(tree), str(tmp_path / "full.o2f"))
    key = (layer, path_to_text(TARGET))
    base_rows = _rows(baseline.path)
    for threads, result in reused.items():
        rows = _rows(result.path)
        now = blake3(path.read_bytes()).hexdigest()
        assert rows[key]["blake3"] == now != base_rows[key]["blake3"], threads
        assert rows[key]["hash_reused"] == 0, threads
        others = _hashed_files(rows) - {key}
        assert all(rows[k]["hash_reused"] == 1 for k in others), threads
        assert result.provenance.hashes_reused == len(others)
        assert result.provenance.bytes_read == after.st_size
        assert _without_reuse_marks(rows) == _without_reuse_marks(_rows(full.path)), threads
    _assert_no_differences(full.path, reused[2].path)
    return base_rows, _rows(reused[1].path), key


def test_a_same_size_edit_with_a_new_mtime_is_read_again(tree: Path, tmp_path: Path) -> None:
    def change(path: Path, before: os.stat_result) -> None:
        _edit_in_place(path, b"10.6.6.6 localhost\n\n")
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))

    base, rows, key = _recollect(tree, tmp_path, change)
    assert rows[key]["mtime_ns"] != base[key]["mtime_ns"]


def test_a_same_size_edit_with_the_mtime_restored_is_read_again_because_the_ctime_moved(
    tree: Path, tmp_path: Path
) -> None:
    """The tampering `touch -d` hides from an mtime check: only the ctime (which no call sets back) tells."""

    def change(path: Path, before: os.stat_result) -> None:
        _edit_in_place(path, b"10.6.6.6 localhost\n\n")
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))

    base, rows, key = _recollect(tree, tmp_path, change)
    unchanged = ("layer_id", "path", "dev", "inode", "size", "mtime_ns")
    assert all(rows[key][k] == base[key][k] for k in unchanged)  # everything but the ctime matches
    assert rows[key]["ctime_ns"] > base[key]["ctime_ns"]


def test_a_file_replaced_by_another_inode_with_the_same_size_and_mtime_is_read_again(
    tree: Path, tmp_path: Path
) -> None:
    def change(path: Path, before: os.stat_result) -> None:
        new = path.with_name("hosts.new")
        new.write_bytes(b"10.6.6.6 localhost\n\n")
        os.chmod(new, before.st_mode & 0o7777)
        os.utime(new, ns=(before.st_atime_ns, before.st_mtime_ns))
        os.rename(new, path)

    base, rows, key = _recollect(tree, tmp_path, change)
    assert rows[key]["inode"] != base[key]["inode"]
    assert (rows[key]["size"], rows[key]["mtime_ns"]) == (base[key]["size"], base[key]["mtime_ns"])


# --- the command line, and baselines that cannot supply hashes --------------------------------


@pytest.fixture()
def baseline(tree: Path, tmp_path: Path) -> Path:
    target = tmp_path / "baseline.o2f"
    api.collect(str(tree), str(target))
    return target


def test_the_command_reuses_and_compare_finds_no_difference(tree: Path, baseline: Path, tmp_path: Path):
    full = tmp_path / "full.o2f"
    reused = tmp_path / "reused.o2f"
    assert o2f("collect", tree, "-o", full, "--quiet").returncode == 0
    done = o2f("collect", tree, "-o", reused, "--reuse", baseline, "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    info = json.loads(o2f("info", reused, "--format", "json").stdout)
    assert info["hashes_reused"] > 0 and info["bytes_read"] == 0
    assert info["options"]["reuse"]["baseline"] == str(baseline)
    _assert_no_differences(str(full), str(reused))


def _copy(snapshot: Path, tmp_path: Path, name: str, *sql: str) -> Path:
    target = tmp_path / name
    shutil.copyfile(snapshot, target)
    with sqlite3.connect(target) as conn:
        for statement in sql:
            conn.execute(statement)
    conn.close()
    return target


def _refused(tree: Path, tmp_path: Path, baseline: Path | str, *words: str) -> None:
    output = tmp_path / "new.o2f"
    assert_refused(o2f("collect", tree, "-o", output, "--reuse", baseline, "--quiet"), *words)
    assert not output.exists()  # refused before anything was written


def test_a_tar_source_cannot_reuse(baseline: Path, tmp_path: Path) -> None:
    output = tmp_path / "new.o2f"
    done = o2f("collect", SAMPLE_TAR, "-o", output, "--reuse", baseline, "--quiet")
    assert_refused(done, "directory source")
    assert not output.exists()


def test_a_baseline_collected_from_a_tar_is_refused(tree: Path, tmp_path: Path) -> None:
    from_tar = tmp_path / "from-tar.o2f"
    api.collect(str(SAMPLE_TAR), str(from_tar))
    _refused(tree, tmp_path, from_tar, "collected from a tar")


def test_a_tampered_baseline_is_refused(tree: Path, baseline: Path, tmp_path: Path) -> None:
    forged = _copy(
        baseline,
        tmp_path,
        "forged.o2f",
        "UPDATE entries SET blake3 = '" + "0" * 64 + "' WHERE path = '/etc/hosts'",
    )
    _refused(tree, tmp_path, forged, "records digest")


def test_an_incomplete_baseline_is_refused(tree: Path, baseline: Path, tmp_path: Path) -> None:
    partial = _copy(baseline, tmp_path, "partial.o2f", "UPDATE snapshot SET complete = 0, digest = NULL")
    _refused(tree, tmp_path, partial, "incomplete")


def test_a_baseline_without_device_numbers_is_refused(tree: Path, baseline: Path, tmp_path: Path) -> None:
    older = _copy(baseline, tmp_path, "older.o2f", "ALTER TABLE entries DROP COLUMN dev")
    _refused(tree, tmp_path, older, "entries.dev")


def test_a_baseline_of_another_schema_version_is_refused(tree: Path, baseline: Path, tmp_path: Path) -> None:
    version = "UPDATE _o2f_meta SET value = '1' WHERE key = 'schema_version'"
    other = _copy(baseline, tmp_path, "v2.o2f", version)
    _refused(tree, tmp_path, other, "schema version 1")


def test_a_missing_baseline_is_refused(tree: Path, tmp_path: Path) -> None:
    _refused(tree, tmp_path, tmp_path / "nope.o2f", "does not exist")


def test_the_baseline_is_never_the_output(tree: Path, baseline: Path) -> None:
    kept = baseline.read_bytes()
    done = o2f("collect", tree, "-o", baseline, "--reuse", baseline, "--force", "--quiet")
    assert_refused(done, "baseline")
    assert baseline.read_bytes() == kept
