"""`o2f audit` as a user runs it: the two formats and the exit codes 0, 1 and 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from forensics import api
from tests.conftest import DOCKER_A, DOCKER_A_TAR
from tests.test_layerverify import LAYER, tiny_root

FIELDS = {"kind", "severity", "path", "layer", "container", "detail"}


def o2f(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forensics", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", "O2F_DEBUG": ""},
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not DOCKER_A_TAR.exists():
        pytest.skip("corpus not found")
    out = tmp_path_factory.mktemp("cli-audit") / "corpus.o2f"
    api.collect(str(DOCKER_A_TAR), str(out), mounts_file=str(DOCKER_A / "mountinfo.txt"))
    return out


def test_json_on_the_corpus_exits_1(corpus: Path) -> None:
    done = o2f("audit", corpus, "--format", "json")
    assert done.returncode == 1, done.stderr
    assert done.stderr == ""
    report = json.loads(done.stdout)
    assert report["summary"]["failed"] is True and report["summary"]["critical"] >= 1
    assert [c["verdict"] for c in report["layer_checks"]] == ["verified"] * 7
    assert all(set(f) >= FIELDS for f in report["findings"])
    literal = next(f for f in report["findings"] if f["kind"] == "literal-wh-file")
    assert (literal["path"], literal["container"], literal["severity"]) == (
        "/srv/web/.wh.evil",
        "a-web",
        "warning",
    )
    assert len(literal["layer"]) == 64
    assert not any(f["kind"] == "rogue-mount" for f in report["findings"])


def test_table_on_the_corpus(corpus: Path) -> None:
    done = o2f("audit", corpus)
    assert done.returncode == 1, done.stderr
    assert "image layers" in done.stdout and "tar-split-files" in done.stdout
    assert "literal-wh-file" in done.stdout and "/srv/web/.wh.evil" in done.stdout
    assert done.stdout.rstrip().splitlines()[-1].startswith("FAILED: ")


def test_a_clean_data_root_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "clean.o2f"
    api.collect(str(tiny_root(tmp_path)), str(out))
    done = o2f("audit", out)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verified" in done.stdout
    assert done.stdout.rstrip().splitlines()[-1] == "passed: 0 critical, 0 warning, 0 info"
    report = json.loads(o2f("audit", out, "-f", "json").stdout)
    assert report["findings"] == [] and report["summary"]["failed"] is False


def test_unverified_layers_alone_do_not_fail_the_gate(tmp_path: Path) -> None:
    out = tmp_path / "unchecked.o2f"
    collected = o2f("collect", tiny_root(tmp_path), "-o", out, "--no-verify-layers", "--quiet")
    assert collected.returncode == 0, collected.stderr
    with api.open_snapshot(str(out)) as snapshot:
        assert snapshot.provenance["options"]["verify_layers"] is False  # type: ignore[index]
    done = o2f("audit", out, "-f", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["summary"]["layers_checked"] is False
    assert [(f["kind"], f["severity"]) for f in report["findings"]] == [("layer-unverifiable", "info")]


@pytest.mark.parametrize("case", ["missing", "not-a-snapshot", "bad-format"])
def test_bad_input_exits_2(case: str, tmp_path: Path) -> None:
    if case == "missing":
        done = o2f("audit", tmp_path / "nope.o2f")
    elif case == "not-a-snapshot":
        (tmp_path / "x.o2f").write_text("hello\n")
        done = o2f("audit", tmp_path / "x.o2f")
    else:
        (tmp_path / "x.o2f").write_text("")
        done = o2f("audit", tmp_path / "x.o2f", "--format", "xml")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    if case != "bad-format":
        assert done.stderr.startswith("o2f: ") and len(done.stderr.strip().splitlines()) == 1


def test_a_tampered_layer_warns_at_collection_and_fails_the_audit(tmp_path: Path) -> None:
    root = tiny_root(tmp_path)
    tool = root / "overlay2" / LAYER / "diff" / "app" / "big.bin"  # a.txt has a hardlink: two findings
    tool.chmod(0o4755)
    out = tmp_path / "t.o2f"
    collected = o2f("collect", root, "-o", out, "--quiet")
    assert collected.returncode == 0, collected.stderr
    assert f"warning: image layer {LAYER[:12]} differs from the layer tar" in collected.stderr
    done = o2f("audit", out, "-f", "json")
    assert done.returncode == 1
    (finding,) = json.loads(done.stdout)["findings"]
    assert (finding["kind"], finding["layer"], finding["path"]) == (
        "layer-metadata-changed",
        LAYER,
        "/app/big.bin",
    )
    assert finding["detail"] == "metadata differs from the layer tar: mode 0644 -> 4755"
    assert finding["evidence"]["differs"] == {"mode": ["0644", "4755"]}
