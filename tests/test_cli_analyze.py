"""The analysis commands end to end: every command x format on the bundled sample, naming,
incomplete snapshots, damaged layer chains, and the timeline through the real `mactime`.

Most commands run in-process through the console entry point (``forensics.cli.app.main``, the
same function the ``o2f`` script calls, so exit codes and stderr are the real ones); a few run as
a real ``o2f`` process to keep the entry point itself honest.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from forensics import api
from forensics.cli.app import main
from tests.conftest import DOCKER_A, SAMPLE_TAR, needs_corpus
from tests.truth import load_containers, parse_docker_diff

SAMPLE_TRUTH = SAMPLE_TAR.parent / "truth"
SAMPLE_MOUNTS = SAMPLE_TAR.parent / "mountinfo.txt"
SAMPLE_CONTAINERS = ("s-batch", "s-fresh", "s-web")


# -- running the CLI ----------------------------------------------------------------------


def run_cli(*args: str) -> tuple[int, bytes, str]:
    """``o2f ARGS`` in-process: (exit code, stdout bytes, stderr text)."""
    out, err = io.BytesIO(), io.BytesIO()
    stdout = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    stderr = io.TextIOWrapper(err, encoding="utf-8", newline="", write_through=True)
    saved = sys.argv
    sys.argv = ["o2f", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            stdout.flush()
            stderr.flush()
    finally:
        sys.argv = saved
    return code, out.getvalue(), err.getvalue().decode("utf-8", "replace")


def ok(*args: str) -> bytes:
    code, out, err = run_cli(*args)
    assert code == 0, f"o2f {' '.join(args)} exited {code}: {err}"
    return out


def collect(source: Path | str, output: Path, mounts: Path | None = None) -> Path:
    api.collect(str(source), str(output), force=True, mounts_file=None if mounts is None else str(mounts))
    return output


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sample_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SAMPLE_TAR.exists():
        pytest.skip("samples/docker-sample.tar.gz is missing")
    return collect(SAMPLE_TAR, tmp_path_factory.mktemp("sample-snap") / "sample.o2f", SAMPLE_MOUNTS)


@pytest.fixture(scope="session")
def sample_truth() -> dict[str, dict[str, str]]:
    return load_containers(SAMPLE_TRUTH / "containers.tsv")


# -- every command x every format ----------------------------------------------------------

# (command arguments after the snapshot, formats the command offers)
MATRIX = {
    "info": ((), ("table", "json")),
    "containers": ((), ("table", "json", "jsonl", "csv")),
    "images": ((), ("table", "json", "jsonl", "csv")),
    "ls": (("s-web",), ("table", "jsonl", "csv", "bodyfile")),
    "ls-subdir": (("s-web", "/srv/web"), ("table", "jsonl", "csv", "bodyfile")),
    "diff": ((), ("table", "docker", "json", "jsonl", "csv", "bodyfile")),
    "diff-one": (("s-web",), ("table", "docker", "json", "jsonl", "csv", "bodyfile")),
    "trace": (("s-web", "/srv/data/ctr-delete-dir/y/z.txt"), ("table", "json")),
    "history": (("sample/app:1",), ("table", "json")),
    "timeline": ((), ("bodyfile", "jsonl", "csv")),
}
CASES = [(name, fmt) for name, (_, formats) in MATRIX.items() for fmt in formats]


def _command(name: str) -> str:
    return name.split("-")[0]


def docker_blocks(out: bytes) -> dict[str, set[tuple[str, bytes]]]:
    """`--format docker` output; with several containers a "# name" line heads each one's block."""
    parts = re.split(rb"^# ([^\n]*)\n", out, flags=re.M)
    if len(parts) == 1:
        return {"": parse_docker_diff(out)}
    assert parts[0] == b"", parts[0][:100]
    return {
        name.decode(): parse_docker_diff(body) for name, body in zip(parts[1::2], parts[2::2], strict=True)
    }


def check_output(fmt: str, out: bytes) -> None:
    """The output parses as its format says, and is not empty."""
    assert out.strip(), "empty output"
    if fmt == "json":
        json.loads(out)
    elif fmt == "jsonl":
        lines = out.decode("utf-8").splitlines()
        assert lines and all(isinstance(json.loads(line), dict) for line in lines)
    elif fmt == "csv":
        rows = list(csv.reader(io.StringIO(out.decode("utf-8"), newline="")))
        header, body = rows[0], rows[1:]
        assert header and all(h and not h[0].isdigit() for h in header), header
        assert body and all(len(r) == len(header) for r in body)
    elif fmt == "bodyfile":
        for line in out.decode("utf-8").splitlines():
            fields = line.split("|")
            assert len(fields) == 11, line
            assert all(f.lstrip("-").isdigit() for f in fields[4:]), line
    elif fmt == "docker":
        blocks = docker_blocks(out)
        assert blocks and any(blocks.values())
    else:  # table: human output, non-empty
        assert len(out.decode("utf-8").splitlines()) >= 3


@pytest.mark.parametrize(("name", "fmt"), CASES, ids=[f"{n}-{f}" for n, f in CASES])
def test_every_command_every_format(sample_snapshot: Path, name: str, fmt: str) -> None:
    args, _ = MATRIX[name]
    out = ok(_command(name), str(sample_snapshot), *args, "--format", fmt)
    check_output(fmt, out)
    if name == "diff" and fmt == "docker":
        blocks = docker_blocks(out)
        assert set(blocks) == set(SAMPLE_CONTAINERS) and blocks["s-fresh"] == set()


def test_short_format_option(sample_snapshot: Path) -> None:
    json.loads(ok("trace", str(sample_snapshot), "s-web", "/etc/passwd", "-f", "json"))
    json.loads(ok("history", str(sample_snapshot), "sample/app:1", "-f", "json"))


def test_containers_json_names_every_container(sample_snapshot: Path, sample_truth: dict) -> None:
    records = json.loads(ok("containers", str(sample_snapshot), "--format", "json"))
    by_name = {r["name"]: r for r in records}
    assert set(by_name) == set(SAMPLE_CONTAINERS)
    for name, row in sample_truth.items():
        assert by_name[name]["id"] == row["container_id"]
        assert by_name[name]["upper_layer"] == row["mount_id"]
        assert by_name[name]["state"] == row["state"]
        assert by_name[name]["problem"] is None


def test_real_process_entry_point(sample_snapshot: Path) -> None:
    """The installed `o2f` script: data on stdout, exit codes as documented."""
    done = subprocess.run(
        ["o2f", "diff", str(sample_snapshot), "s-web", "--format", "docker"], capture_output=True
    )
    assert done.returncode == 0, done.stderr
    assert ("A", b"/srv/web/.wh.evil") in parse_docker_diff(done.stdout)
    bad = subprocess.run(["o2f", "ls", str(sample_snapshot), "s-wbe"], capture_output=True)
    assert bad.returncode == 2
    assert bad.stdout == b""
    assert b"Did you mean" in bad.stderr


# -- naming --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["ls", "diff", "trace", "timeline"])
def test_unknown_container_suggests_close_names(sample_snapshot: Path, command: str) -> None:
    extra = ("/etc",) if command == "trace" else ()
    code, out, err = run_cli(command, str(sample_snapshot), "s-wbe", *extra)
    assert code == 2
    assert out == b""
    assert "Did you mean" in err
    assert "s-web" in err.split("Did you mean", 1)[1]


def test_unknown_image_suggests_close_tags(sample_snapshot: Path) -> None:
    code, _, err = run_cli("history", str(sample_snapshot), "sample/app:2")
    assert code == 2
    assert "Did you mean" in err and "sample/app:1" in err


@pytest.mark.parametrize("length", [3, 12, 64])
def test_container_id_prefix(sample_snapshot: Path, sample_truth: dict, length: int) -> None:
    cid = sample_truth["s-web"]["container_id"][:length]
    by_name = ok("diff", str(sample_snapshot), "s-web", "--format", "jsonl")
    by_id = ok("diff", str(sample_snapshot), cid, "--format", "jsonl")
    assert by_id == by_name
    listed = ok("ls", str(sample_snapshot), cid, "/srv/web", "--format", "jsonl")
    assert b"/srv/web/.wh.evil" in listed
    trace = json.loads(ok("trace", str(sample_snapshot), cid, "/etc/passwd", "-f", "json"))
    assert trace["merged"]["layer"] == sample_truth["s-web"]["mount_id"]


# -- incomplete snapshot --------------------------------------------------------------------


def test_incomplete_snapshot_is_analysed_with_warning(sample_snapshot: Path, tmp_path: Path) -> None:
    copy = tmp_path / "incomplete.o2f"
    shutil.copyfile(sample_snapshot, copy)
    with contextlib.closing(sqlite3.connect(copy)) as db:
        db.execute("UPDATE snapshot SET complete = 0")
        db.commit()
    for args in (("diff", str(copy), "s-web", "-f", "jsonl"), ("containers", str(copy), "-f", "json")):
        code, out, err = run_cli(*args)
        assert code == 0, err
        assert "incomplete" in err
        assert out.strip()
    # the same analysis as on the complete snapshot
    complete = ok("diff", str(sample_snapshot), "s-web", "-f", "jsonl")
    assert run_cli("diff", str(copy), "s-web", "-f", "jsonl")[1] == complete


# -- damaged layer chains (real corpus copy) -------------------------------------------------


def _batch_layers(root: Path) -> tuple[Path, str, str]:
    """a-batch's RW layer dir, its own l/ name, and its -init layer's l/ name."""
    mount_id = load_containers(DOCKER_A / "truth" / "containers.tsv")["a-batch"]["mount_id"]
    upper = root / "overlay2" / mount_id
    init = root / "overlay2" / f"{mount_id}-init"
    return upper, (upper / "link").read_text(), (init / "link").read_text()


def _only_users(root: Path, short: str) -> list[str]:
    return [
        p.parent.name for p in (root / "overlay2").glob("*/lower") if f"l/{short}" in p.read_text().split(":")
    ]


def _check_per_container(snapshot: Path) -> None:
    """a-batch is reported as a warning naming it; every other container is still analysed."""
    code, out, err = run_cli("diff", str(snapshot), "--format", "jsonl")
    assert code == 0, err
    assert "a-batch" in err
    names = {json.loads(line)["container"] for line in out.decode().splitlines()}
    assert names == {"a-web", "a-worker"}  # a-idle and a-fresh have no changes
    code, out, err = run_cli("diff", str(snapshot), "a-web", "a-batch", "--format", "docker")
    assert code == 0 and "a-batch" in err
    # only a-web could be reported, so its block comes without a "# name" head
    assert b"# a-batch" not in out
    assert ("A", b"/srv/web/.wh.evil") in parse_docker_diff(out.removeprefix(b"# a-web\n"))
    code, out, err = run_cli("diff", str(snapshot), "a-batch")
    assert code == 2
    assert "a-batch" in err
    code, out, err = run_cli("timeline", str(snapshot), "--format", "jsonl")
    assert code == 0 and "a-batch" in err
    assert {json.loads(line)["container"] for line in out.decode().splitlines()} == {"a-web", "a-worker"}
    records = {r["name"]: r for r in json.loads(ok("containers", str(snapshot), "-f", "json"))}
    assert records["a-batch"]["problem"] and records["a-batch"]["changes"] is None
    assert records["a-web"]["problem"] is None and records["a-web"]["changes"] > 0
    code, _, err = run_cli("ls", str(snapshot), "a-batch")
    assert code == 2 and "a-batch" in err
    assert ok("ls", str(snapshot), "a-worker", "/srv/worker", "-f", "jsonl")


def test_missing_link_breaks_one_container_only(docker_a_copy: Path, tmp_path: Path) -> None:
    _, _, init_short = _batch_layers(docker_a_copy)
    assert _only_users(docker_a_copy, init_short) == [_batch_layers(docker_a_copy)[0].name]
    (docker_a_copy / "overlay2" / "l" / init_short).unlink()
    _check_per_container(collect(docker_a_copy, tmp_path / "nolink.o2f"))


def test_lower_naming_missing_link_breaks_one_container_only(docker_a_copy: Path, tmp_path: Path) -> None:
    upper, _, _ = _batch_layers(docker_a_copy)
    elements = (upper / "lower").read_text().split(":")
    elements[2] = "l/AAAAAAAAAAAAAAAAAAAAAAAAAA"  # an image layer's link that does not exist
    (upper / "lower").write_text(":".join(elements))
    snapshot = collect(docker_a_copy, tmp_path / "badlower.o2f")
    _check_per_container(snapshot)
    assert "AAAAAAAAAAAAAAAAAAAAAAAAAA" in run_cli("diff", str(snapshot), "a-batch")[2]


def test_lower_cycle_breaks_one_container_only(docker_a_copy: Path, tmp_path: Path) -> None:
    upper, own_short, _ = _batch_layers(docker_a_copy)
    lower = (upper / "lower").read_text()
    (upper / "lower").write_text(f"l/{own_short}:{lower}")  # the layer names itself
    snapshot = collect(docker_a_copy, tmp_path / "cycle.o2f")
    _check_per_container(snapshot)
    assert "cycle" in run_cli("diff", str(snapshot), "a-batch")[2]


def test_timeline_exit_2_when_nothing_could_be_reported(docker_a_copy: Path, tmp_path: Path) -> None:
    """Regression: timeline exited 0 with empty output when no selected container could be analysed."""
    _, _, init_short = _batch_layers(docker_a_copy)
    (docker_a_copy / "overlay2" / "l" / init_short).unlink()
    snapshot = collect(docker_a_copy, tmp_path / "nolink.o2f")
    assert run_cli("diff", str(snapshot), "a-batch")[0] == 2  # diff does it right
    code, _, err = run_cli("timeline", str(snapshot), "a-batch")
    assert "a-batch" in err
    assert code == 2


def test_warning_text_from_evidence_is_not_markup(docker_a_copy: Path, tmp_path: Path) -> None:
    """Regression: warn() printed evidence text as rich markup; 'l/[/x]' in a `lower` file crashed diff."""
    upper, _, _ = _batch_layers(docker_a_copy)
    (upper / "lower").write_text("l/[/x]:" + (upper / "lower").read_text())
    snapshot = collect(docker_a_copy, tmp_path / "markup.o2f")
    code, out, err = run_cli("diff", str(snapshot), "--format", "jsonl")
    assert code == 0, err
    assert "l/[/x]" in err and "a-batch" in err
    assert {json.loads(line)["container"] for line in out.decode().splitlines()} == {"a-web", "a-worker"}


def test_missing_lower_layer_diff_is_reported(docker_a_copy: Path, tmp_path: Path) -> None:
    """Regression: a chain layer without diff/ was silently analysed as an empty layer."""
    # corpa/app:1.0 layer L3 (creates /srv/img-new/*): a-web, a-worker and a-batch stand on it.
    images = (DOCKER_A / "truth" / "images.tsv").read_text().splitlines()
    app = next(line.split("\t") for line in images if "corpa/app:1.0" in line)
    l3 = app[6].split(",")[3]
    shutil.rmtree(docker_a_copy / "overlay2" / l3 / "diff")
    snapshot = collect(docker_a_copy, tmp_path / "nodiff.o2f")
    _, out, err = run_cli("diff", str(snapshot), "--format", "jsonl")
    assert "a-web" in err and l3 in err  # a warning naming the container and the damaged layer
    names = {json.loads(line)["container"] for line in out.decode().splitlines()}
    assert "a-web" not in names  # not a report built on a partial view


# -- timeline through the Sleuth Kit -------------------------------------------------------


def _mactime() -> str:
    path = shutil.which("mactime")
    if path is None:
        pytest.skip("mactime (Debian package sleuthkit) is not installed: `apt-get install -y sleuthkit`")
    return path


def run_mactime(mactime: str, body: Path) -> subprocess.CompletedProcess[bytes]:
    """`mactime -b BODY -d -y`: comma-separated, ISO 8601 dates, in UTC."""
    return subprocess.run(
        [mactime, "-b", str(body), "-d", "-y"], capture_output=True, env={**os.environ, "TZ": "UTC"}
    )


def test_timeline_bodyfile_accepted_by_mactime(sample_snapshot: Path, tmp_path: Path) -> None:
    mactime = _mactime()
    body = ok("timeline", str(sample_snapshot))
    lines = body.decode("utf-8").splitlines()
    assert lines
    for line in lines:
        name = line.split("|")[1]
        assert name.split(":", 1)[0] in SAMPLE_CONTAINERS, line
    path = tmp_path / "body.txt"
    path.write_bytes(body)
    done = run_mactime(mactime, path)
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO(done.stdout.decode("utf-8"), newline="")))
    assert rows[0][:2] == ["Date", "Size"]
    assert len(rows) > len(lines)  # one row per distinct time of each entry
    named = {row[-1] for row in rows[1:]}
    assert all(n.split(":", 1)[0] in SAMPLE_CONTAINERS for n in named)
    # every bodyfile entry comes back from mactime under its own name
    assert named == {line.split("|")[1] for line in lines}
    # the touched file is dated by its mtime (2021-03-04T05:06:07Z)
    touch = [r for r in rows if r[-1] == "s-web:/srv/data/ctr-touch.txt (modified)"]
    assert any(r[0].startswith("2021-03-04T05:06:07") and "m" in r[2] for r in touch), touch


@needs_corpus
def test_timeline_corpus_bodyfile_hostile_names_mactime(tmp_path: Path) -> None:
    mactime = _mactime()
    snapshot = collect(DOCKER_A / "data-root.tar.gz", tmp_path / "a.o2f", DOCKER_A / "mountinfo.txt")
    body = ok("timeline", str(snapshot))
    lines = body.decode("utf-8").splitlines()
    names = {"a-web", "a-worker", "a-batch"}
    assert {line.split("|")[1].split(":", 1)[0] for line in lines} == names
    assert "a-web:/srv/web/new\\x0aline.txt (added)" in {line.split("|")[1] for line in lines}
    path = tmp_path / "body.txt"
    path.write_bytes(body)
    done = run_mactime(mactime, path)
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO(done.stdout.decode("utf-8"), newline="")))[1:]
    assert {r[-1].split(":", 1)[0] for r in rows} == names
