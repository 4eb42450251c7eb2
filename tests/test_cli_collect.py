"""`o2f collect`, `o2f info` and `o2f verify` as a user runs them (a child process, real exit codes).

Bad input is exit 2 with one sentence on stderr and never a traceback; the
docker-a corpus collects into a complete snapshot that verifies, and a
snapshot changed afterwards fails verification with exit 1.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DOCKER_A, DOCKER_A_TAR

MOUNTINFO = DOCKER_A / "mountinfo.txt"


def o2f(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forensics", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", "O2F_DEBUG": ""},
    )


def assert_refused(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2, one line on stderr that is a sentence about the input, no traceback, nothing on stdout."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert "internal error" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    message = lines[0]
    assert message.startswith("o2f: ") and message.rstrip().endswith((".", ")")), message
    for word in words:
        assert word in message, (word, message)
    assert done.stdout == ""
    return message


# --- collect: what is not a data root -----------------------------------------------------------


def test_a_directory_that_is_not_a_data_root(tmp_path: Path) -> None:
    source = tmp_path / "home"
    (source / "docs").mkdir(parents=True)
    (source / "docs" / "a.txt").write_text("a\n")
    assert_refused(o2f("collect", source, "-o", tmp_path / "s.o2f", "--quiet"), "not a container data root")
    assert not (tmp_path / "s.o2f").exists()


def test_an_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert_refused(o2f("collect", tmp_path / "empty", "-o", tmp_path / "s.o2f", "--quiet"), "empty")
    assert not (tmp_path / "s.o2f").exists()


def test_a_file_that_is_not_a_tar(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(os.urandom(4096))
    assert_refused(o2f("collect", junk, "-o", tmp_path / "s.o2f", "--quiet"), "junk.tar.gz")
    text = tmp_path / "notes.txt"
    text.write_text("just some text\n" * 100)
    assert_refused(o2f("collect", text, "-o", tmp_path / "s2.o2f", "--quiet"), "notes.txt")


@pytest.mark.skipif(not DOCKER_A_TAR.exists(), reason="corpus docker-a absent")
def test_a_truncated_tar_gz(tmp_path: Path) -> None:
    cut = tmp_path / "cut.tar.gz"
    data = DOCKER_A_TAR.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert_refused(o2f("collect", cut, "-o", tmp_path / "s.o2f", "--quiet"), "cut.tar.gz")
    if (tmp_path / "s.o2f").exists():  # whatever was written must not claim to be whole
        done = o2f("info", tmp_path / "s.o2f", "--format", "json")
        if done.returncode == 0:
            assert json.loads(done.stdout)["complete"] is False


def test_a_missing_source(tmp_path: Path) -> None:
    assert_refused(o2f("collect", tmp_path / "nope", "-o", tmp_path / "s.o2f", "--quiet"), "nope")


# --- collect: where the snapshot goes --------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smallest data root: one image layer with one file (no root needed)."""
    from tests.layerlang import file, make_data_root

    return make_data_root(
        tmp_path_factory.mktemp("tiny") / "docker", images={"tiny:1": [[file("/hello.txt", "hello\n")]]}
    ).root


def test_an_existing_snapshot_is_kept_without_force_and_replaced_with_it(
    tiny_root: Path, tmp_path: Path
) -> None:
    target = tmp_path / "case.o2f"
    target.write_bytes(b"precious earlier work\n")
    assert_refused(o2f("collect", tiny_root, "-o", target, "--quiet"), "--force")
    assert target.read_bytes() == b"precious earlier work\n"
    done = o2f("collect", tiny_root, "-o", target, "--quiet", "--force")
    assert done.returncode == 0, done.stderr
    assert o2f("verify", target).returncode == 0


@pytest.mark.parametrize("where", ["top", "nested", "via-dotdot", "via-symlink", "not-yet-existing-dir"])
def test_a_snapshot_inside_the_source_is_refused(tiny_root: Path, tmp_path: Path, where: str) -> None:
    source = tmp_path / "docker"
    shutil.copytree(tiny_root, source, symlinks=True)
    before = sorted(str(p) for p in source.rglob("*"))
    output = {
        "top": source / "snap.o2f",
        "nested": source / "overlay2" / "snap.o2f",
        "via-dotdot": tmp_path / "elsewhere" / ".." / "docker" / "snap.o2f",
        "via-symlink": tmp_path / "innocent" / "snap.o2f",
        "not-yet-existing-dir": source / "new" / "snap.o2f",
    }[where]
    (tmp_path / "elsewhere").mkdir()
    os.symlink(source / "overlay2", tmp_path / "innocent")
    assert_refused(o2f("collect", source, "-o", output, "--quiet", "--force"), "inside")
    assert sorted(str(p) for p in source.rglob("*")) == before  # nothing was written into the evidence


# --- info on files that are not (whole, current) snapshots ----------------------------------------


@pytest.fixture()
def good_snapshot(tiny_root: Path, tmp_path: Path) -> Path:
    target = tmp_path / "good.o2f"
    done = o2f("collect", tiny_root, "-o", target, "--quiet")
    assert done.returncode == 0, done.stderr
    return target


def test_info_on_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "notes.o2f"
    path.write_text("hello\n")
    assert_refused(o2f("info", path), "not an o2f snapshot")


def test_info_on_a_missing_file(tmp_path: Path) -> None:
    assert_refused(o2f("info", tmp_path / "missing.o2f"), "does not exist")


def test_info_on_a_truncated_snapshot(good_snapshot: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.o2f"
    data = good_snapshot.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert_refused(o2f("info", cut), "truncated")
    assert_refused(o2f("verify", cut), "truncated")


def test_info_on_another_apps_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT)")
        conn.execute("INSERT INTO moz_places (url) VALUES ('https://example.org')")
    conn.close()
    assert_refused(o2f("info", path), "not an o2f snapshot")


def test_info_on_a_snapshot_of_an_unknown_schema_version(good_snapshot: Path) -> None:
    with sqlite3.connect(good_snapshot) as conn:
        conn.execute("UPDATE _o2f_meta SET value = '999' WHERE key = 'schema_version'")
    conn.close()
    message = assert_refused(o2f("info", good_snapshot), "999")
    assert "version" in message


# --- the corpus -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_snapshot(docker_a_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("cli") / "docker-a.o2f"
    done = o2f("collect", docker_a_root, "-o", target, "--mounts", MOUNTINFO, "--force", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return target


def test_info_json_of_the_corpus(corpus_snapshot: Path) -> None:
    done = o2f("info", corpus_snapshot, "--format", "json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    for key in (
        "entries",
        "layers",
        "images",
        "containers",
        "mounts",
        "errors",
        "complete",
        "tool_version",
        "digest",
    ):
        assert key in info, key
    assert info["containers"] == 5
    assert info["mounts"] == 26
    assert info["layers"] == 17  # 7 image layers + 5 containers x (RW + -init)
    assert info["images"] == 13  # 3 tagged + the legacy builder's intermediates
    assert info["errors"] == 0
    assert info["entries"] > 500
    assert info["complete"] is True
    assert info["layout"] == "docker-overlay2"
    assert len(info["digest"]) == 64 and int(info["digest"], 16) >= 0
    from forensics import __version__

    assert info["tool_version"] == __version__


def test_info_table_of_the_corpus(corpus_snapshot: Path) -> None:
    done = o2f("info", corpus_snapshot)
    assert done.returncode == 0, done.stderr
    assert "digest" in done.stdout and "docker-overlay2" in done.stdout
    assert done.stderr == ""


def test_verify_passes_and_then_catches_one_changed_value(corpus_snapshot: Path, tmp_path: Path) -> None:
    done = o2f("verify", corpus_snapshot)
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stdout
    tampered = tmp_path / "tampered.o2f"
    shutil.copyfile(corpus_snapshot, tampered)
    with sqlite3.connect(tampered) as conn:
        conn.execute(
            "UPDATE entries SET mode = 2541 WHERE id = (SELECT min(id) FROM entries WHERE kind = 'file')"
        )
    conn.close()
    done = o2f("verify", tampered)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert o2f("verify", corpus_snapshot).returncode == 0  # the original is untouched


@pytest.mark.skipif(not DOCKER_A_TAR.exists(), reason="corpus docker-a absent")
def test_the_tar_and_the_extracted_tree_give_the_same_content(corpus_snapshot: Path, tmp_path: Path) -> None:
    """Cross-check of the two sources on the same evidence: every layer entry's content and metadata
    a tar can carry (kind, mode, owner, size of files, mtime, target, rdev, xattrs, blake3)."""
    target = tmp_path / "from-tar.o2f"
    done = o2f("collect", DOCKER_A_TAR, "-o", target, "--mounts", MOUNTINFO, "--quiet")
    assert done.returncode == 0, done.stderr

    def rows(path: Path) -> dict[tuple[str, str], tuple]:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            query = (
                "SELECT layer_id, path, kind, mode, uid, gid, CASE kind WHEN 'file' THEN size END, mtime_ns,"
                " target, rdev_major, rdev_minor, xattrs, blake3, link_group IS NOT NULL, whiteout, opaque,"
                " overlay_private FROM entries"
            )
            return {(r[0], r[1]): r[2:] for r in conn.execute(query)}

    from_tar, from_dir = rows(target), rows(corpus_snapshot)
    assert set(from_tar) == set(from_dir)
    differing = [key for key in from_dir if from_dir[key] != from_tar[key]]
    assert differing == []


@pytest.mark.skipif(not DOCKER_A_TAR.exists(), reason="corpus docker-a absent")
@pytest.mark.parametrize("victim", ["source tar", "hardlink to the source tar", "mount table"])
def test_the_output_never_replaces_the_evidence(tmp_path: Path, victim: str) -> None:
    evidence = tmp_path / "evidence.tar.gz"
    shutil.copyfile(DOCKER_A_TAR, evidence)
    mounts = tmp_path / "mountinfo.txt"
    shutil.copyfile(MOUNTINFO, mounts)
    output = {
        "source tar": evidence,
        "hardlink to the source tar": tmp_path / "alias.tar.gz",
        "mount table": mounts,
    }[victim]
    if victim.startswith("hardlink"):
        os.link(evidence, output)
    kept = output.read_bytes()
    done = o2f("collect", evidence, "-o", output, "--mounts", mounts, "--force", "--quiet")
    assert output.read_bytes() == kept
    assert_refused(done)
