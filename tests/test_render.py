"""Hostile names through every output format of `ls`, `diff` (and `timeline`).

A consumer must get the exact bytes of every name back: JSON/JSONL from ``path_bytes`` (base64)
when present, else ``path``; CSV the same through Python's csv module; bodyfile names through the
inverse of :func:`forensics.render.records.body_name`. CSV cells that a spreadsheet would run as a
formula start with ``'``.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from forensics import api
from forensics.model import Kind
from forensics.render.records import body_name
from tests.conftest import DOCKER_A
from tests.test_analyze_corpus import (  # noqa: F401  (session fixtures, collected once)
    corpus_dir_snapshot,
    corpus_tar_snapshot,
)
from tests.test_cli_analyze import ok, run_cli
from tests.truth import load_containers, parse_docker_diff

DEEP = b"/srv/web/deep/" + b"/".join(b"d%02d" % i for i in range(1, 41)) + b"/bottom.txt"
HOSTILE = (
    b"/srv/web/bad\xff\xfebyte.txt",
    b"/srv/web/new\nline.txt",
    b"/srv/web/tab\there.txt",
    b"/srv/web/with space.txt",
    DEEP,
)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


# -- readers a consumer would write ------------------------------------------------------------

_BODY_ESCAPE = re.compile(r"\\(\\|x[0-9a-fA-F]{2})")


def unbody(name: str) -> bytes:
    """Inverse of body_name: ``\\\\`` -> ``\\``, ``\\xHH`` -> the byte, the rest is UTF-8."""
    out = bytearray()
    pos = 0
    for match in _BODY_ESCAPE.finditer(name):
        out += name[pos : match.start()].encode("utf-8")
        token = match.group(1)
        out += b"\\" if token == "\\" else bytes([int(token[1:], 16)])
        pos = match.end()
    out += name[pos:].encode("utf-8")
    return bytes(out)


def exact(record: dict, key: str = "path") -> bytes:
    raw = record.get(f"{key}_bytes")
    return base64.b64decode(raw) if raw else record[key].encode("utf-8")


def uncsv(cell: str) -> str:
    """Undo the formula guard: a leading ``'`` before a formula character."""
    return cell[1:] if cell[:1] == "'" and cell[1:2] and cell[1] in FORMULA_START else cell


def jsonl_records(out: bytes) -> list[dict]:
    return [json.loads(line) for line in out.decode("utf-8").splitlines()]


def csv_records(out: bytes) -> list[dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO(out.decode("utf-8"), newline="")))
    return [{k: uncsv(v) for k, v in row.items()} for row in rows]


def body_paths(out: bytes, container: str, suffix: bool) -> list[bytes]:
    """Names of a bodyfile: ``<container>:<path>`` (+ `` (<change>)`` for diff/timeline)."""
    paths = []
    for line in out.decode("utf-8").split("\n")[:-1]:
        fields = line.split("|")
        assert len(fields) == 11, line
        name = fields[1]
        assert name.startswith(body_name(container.encode()) + ":"), name
        name = name.split(":", 1)[1]
        if suffix:
            assert name.endswith(")"), name
            name = name[: name.rindex(" (")]
        paths.append(unbody(name))
    return paths


def parse(fmt: str, out: bytes, container: str, suffix: bool) -> list[bytes]:
    if fmt == "jsonl":
        return [exact(json.loads(line)) for line in out.decode("utf-8").splitlines()]
    if fmt == "json":
        return [exact(r) for r in json.loads(out)]
    if fmt == "csv":
        return [exact(r) for r in csv_records(out)]
    if fmt == "bodyfile":
        return body_paths(out, container, suffix)
    raise AssertionError(fmt)


# -- body_name and its inverse ----------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [*HOSTILE, b"a|b", b"back\\slash", b"back\\x41", b"\x7f\x1b[2J", b"caf\xc3\xa9", b"\xc3", b"\r\n", b""],
)
def test_body_name_is_one_reversible_line(raw: bytes) -> None:
    name = body_name(raw)
    assert "|" not in name and "\n" not in name and "\r" not in name
    assert unbody(name) == raw


# -- the corpus names through every format ----------------------------------------------------

LS_FORMATS = ("jsonl", "csv", "bodyfile")
DIFF_FORMATS = ("json", "jsonl", "csv", "bodyfile")
TIMELINE_FORMATS = ("jsonl", "csv", "bodyfile")


@pytest.fixture(params=["tar", "dir"])
def snapshot(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(f"corpus_{request.param}_snapshot")


@pytest.mark.parametrize("fmt", LS_FORMATS)
def test_ls_every_name_exact(snapshot: Path, fmt: str) -> None:
    analysis, _ = api.open_analysis(str(snapshot))
    want = [e.path for e in api.list_view(analysis, analysis.find_container("a-web"))]
    got = parse(fmt, ok("ls", str(snapshot), "a-web", "--format", fmt), "a-web", suffix=False)
    assert got == want
    assert set(HOSTILE) <= set(got)


@pytest.mark.parametrize("fmt", DIFF_FORMATS)
def test_diff_every_name_exact(snapshot: Path, fmt: str) -> None:
    analysis, _ = api.open_analysis(str(snapshot))
    want = [c.path for c in api.diff(analysis, ["a-web"]).reports[0][1]]
    got = parse(fmt, ok("diff", str(snapshot), "a-web", "--format", fmt), "a-web", suffix=True)
    assert got == want
    assert set(HOSTILE) <= set(got)


@pytest.mark.parametrize("fmt", TIMELINE_FORMATS)
def test_timeline_every_name_exact(snapshot: Path, fmt: str) -> None:
    got = parse(fmt, ok("timeline", str(snapshot), "a-web", "--format", fmt), "a-web", suffix=True)
    assert set(HOSTILE) <= set(got)


def test_diff_docker_format_prints_names_like_docker(snapshot: Path) -> None:
    """Raw newlines and tabs; invalid UTF-8 as U+FFFD (README "What docker diff prints")."""
    got = {p for _, p in parse_docker_diff(ok("diff", str(snapshot), "a-web", "--format", "docker"))}
    for raw in HOSTILE:
        assert raw.decode("utf-8", "replace").encode("utf-8") in got
    assert b"/srv/web/bad\xef\xbf\xbd\xef\xbf\xbdbyte.txt" in got


@pytest.mark.parametrize("raw", HOSTILE, ids=lambda r: r.decode("utf-8", "replace")[-20:])
def test_path_argument_reaches_hostile_name(corpus_tar_snapshot: Path, raw: bytes) -> None:  # noqa: F811
    """`o2f ls SNAP a-web PATH` and `o2f trace` take the \\xHH text form of the snapshot."""
    text = raw.decode("utf-8", "surrogateescape")
    text = "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in text)
    records = jsonl_records(ok("ls", str(corpus_tar_snapshot), "a-web", text, "-f", "jsonl"))
    assert [exact(r) for r in records] == [raw]
    trace = json.loads(ok("trace", str(corpus_tar_snapshot), "a-web", text, "-f", "json"))
    assert trace["merged"] is not None and exact(trace["merged"]) == raw


def test_table_formats_show_names(corpus_tar_snapshot: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Human tables: not parseable, but they show printable names as the display form."""
    monkeypatch.setenv("COLUMNS", "250")  # wide enough that rich does not fold the path cell
    table = ok("ls", str(corpus_tar_snapshot), "a-web", "/srv/web/with space.txt").decode("utf-8")
    assert "/srv/web/with space.txt" in table
    table = ok("ls", str(corpus_tar_snapshot), "a-web", "/srv/web/bad\\xff\\xfebyte.txt").decode("utf-8")
    assert "bad\\xff\\xfebyte.txt" in table


# -- names built to attack spreadsheets and terminals -----------------------------------------

FORMULA_NAMES = (b"=cmd|' -C calc'!A0", b"-x", b"@x", b"+x")
FORMULA_TARGETS = (b"=cmd|' /C calc'!A0", b"-x", b"@x", b"+x")


@pytest.fixture(scope="module")
def hostile_snapshot(docker_a_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of docker-a whose a-web upperdir holds formula names, formula symlink targets,
    ambiguous targets and rich-markup names (one collection for the module)."""
    base = tmp_path_factory.mktemp("hostile")
    root = base / "docker"
    subprocess.run(["cp", "-a", str(docker_a_root), str(root)], check=True)
    mount_id = load_containers(DOCKER_A / "truth" / "containers.tsv")["a-web"]["mount_id"]
    web = os.fsencode(root / "overlay2" / mount_id / "diff" / "srv" / "web")
    for name in FORMULA_NAMES:
        with open(os.path.join(web, name), "wb") as handle:
            handle.write(b"x\n")
    for index, target in enumerate(FORMULA_TARGETS):
        os.symlink(target, os.path.join(web, b"formula-link%d" % index))
    os.symlink(b"bad\xfftarget", os.path.join(web, b"target-invalid"))
    os.symlink(b"bad\\xfftarget", os.path.join(web, b"target-literal"))  # a real backslash, x, f, f
    with open(os.path.join(web, b"[bold red]loud"), "wb"):
        pass
    os.symlink(b"[/x]", os.path.join(web, b"markup-target"))
    out = base / "hostile.o2f"
    api.collect(str(root), str(out), force=True, mounts_file=str(DOCKER_A / "mountinfo.txt"))
    return out


def _by_path(records: list[dict]) -> dict[bytes, dict]:
    return {exact(r): r for r in records}


def test_csv_neutralises_formula_cells(hostile_snapshot: Path) -> None:
    snap = str(hostile_snapshot)
    for command in (("ls", snap, "a-web", "/srv/web"), ("diff", snap, "a-web")):
        out = ok(*command, "--format", "csv")
        raw_rows = list(csv.DictReader(io.StringIO(out.decode("utf-8"), newline="")))
        for row in raw_rows:
            for column, cell in row.items():
                assert not cell.startswith(FORMULA_START), (column, cell)
        rows = _by_path([{k: v for k, v in r.items()} for r in raw_rows])
        for name in FORMULA_NAMES:
            assert b"/srv/web/" + name in rows  # the path cell starts with "/", exact as it is
        for index, target in enumerate(FORMULA_TARGETS):
            cell = rows[b"/srv/web/formula-link%d" % index]["target"]
            assert cell == "'" + target.decode()


def test_json_keeps_formula_names_exact(hostile_snapshot: Path) -> None:
    snap = str(hostile_snapshot)
    ls = _by_path(jsonl_records(ok("ls", snap, "a-web", "/srv/web", "-f", "jsonl")))
    diff = _by_path(json.loads(ok("diff", snap, "a-web", "-f", "json")))
    for records in (ls, diff):
        for name in FORMULA_NAMES:
            assert records[b"/srv/web/" + name]["type"] == "file"
        for index, target in enumerate(FORMULA_TARGETS):
            assert records[b"/srv/web/formula-link%d" % index]["target"] == target.decode()
    body = body_paths(ok("ls", snap, "a-web", "/srv/web", "-f", "bodyfile"), "a-web", False)
    for name in FORMULA_NAMES:  # the bodyfile escapes the "|" of the first one
        assert b"/srv/web/" + name in body


def test_ls_symlink_targets_exact(hostile_snapshot: Path) -> None:
    ls = _by_path(jsonl_records(ok("ls", str(hostile_snapshot), "a-web", "/srv/web", "-f", "jsonl")))
    assert exact(ls[b"/srv/web/target-invalid"], "target") == b"bad\xfftarget"
    assert exact(ls[b"/srv/web/target-literal"], "target") == b"bad\\xfftarget"
    rows = _by_path(csv_records(ok("ls", str(hostile_snapshot), "a-web", "/srv/web", "-f", "csv")))
    assert exact(rows[b"/srv/web/target-invalid"], "target") == b"bad\xfftarget"
    assert exact(rows[b"/srv/web/target-literal"], "target") == b"bad\\xfftarget"


def test_diff_symlink_targets_exact(hostile_snapshot: Path) -> None:
    """Regression: change records had `target` only in display form (no `target_bytes`)."""
    diff = _by_path(json.loads(ok("diff", str(hostile_snapshot), "a-web", "-f", "json")))
    assert exact(diff[b"/srv/web/target-literal"], "target") == b"bad\\xfftarget"
    assert exact(diff[b"/srv/web/target-invalid"], "target") == b"bad\xfftarget"


@pytest.mark.parametrize("command", ["ls", "diff"])
def test_table_shows_markup_like_names_literally(
    hostile_snapshot: Path, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: table cells were parsed as rich markup ('[bold red]loud' showed as 'loud')."""
    monkeypatch.setenv("COLUMNS", "250")
    where = ["/srv/web/[bold red]loud"] if command == "ls" else []
    code, out, err = run_cli(command, str(hostile_snapshot), "a-web", *where)
    assert code == 0, err
    text = out.decode("utf-8")
    assert "/srv/web/loud" not in text
    assert "/srv/web/[bold red]loud" in text


def test_table_survives_markup_closing_tag_target(hostile_snapshot: Path) -> None:
    """Regression: a symlink target '[/x]' crashed the `o2f ls` table with rich MarkupError."""
    code, out, err = run_cli("ls", str(hostile_snapshot), "a-web", "/srv/web/markup-target")
    assert code == 0, err
    assert "[/x]" in out.decode("utf-8")


def test_markup_names_exact_in_machine_formats(hostile_snapshot: Path) -> None:
    ls = _by_path(jsonl_records(ok("ls", str(hostile_snapshot), "a-web", "/srv/web", "-f", "jsonl")))
    assert ls[b"/srv/web/[bold red]loud"]["type"] == Kind.FILE.value
    assert ls[b"/srv/web/markup-target"]["target"] == "[/x]"
