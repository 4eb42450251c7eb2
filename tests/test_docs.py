"""The documentation is checked like code.

- every command the app registers has an anchored section in docs/cli.md;
- every command's --help works and ends with examples;
- every example in every epilog runs on the bundled sample;
- the record fields, change kinds and exit codes the code defines are all documented;
- docs/schema.md is what cog generates from forensics/store/schema.py.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

from forensics.cli import app as cli_app
from forensics.errors import ExitCode
from forensics.model import ChangeKind
from forensics.overlay.classify import DETAIL_ORDER
from forensics.render.records import CHANGE_FIELDS, ENTRY_FIELDS

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
CLI_MD = DOCS / "cli.md"
SAMPLE_TAR = REPO / "samples" / "docker-sample.tar.gz"

# Collect examples whose SOURCE is not under samples/ (a live /var/lib/docker, a mounted image),
# each with the reason it cannot run here. Any other such example fails the suite until listed.
NEEDS_A_REAL_SOURCE = {
    "o2f collect /var/lib/docker -o host.o2f": "needs a live Docker host's data root, as root",
    "o2f collect /mnt/evidence/var/lib/docker -o case42.o2f --mounts seized-mountinfo.txt --quiet": (
        "needs a seized disk image mounted at /mnt/evidence and the host's saved mountinfo"
    ),
}


@dataclass(frozen=True)
class Command:
    name: str
    panel: str | None
    epilog: str


def _commands() -> list[Command]:
    cli_app._register([])
    out = []
    for info in cli_app.app.registered_commands:
        name = info.name or info.callback.__name__.replace("_", "-")
        out.append(Command(name, info.rich_help_panel, info.epilog or ""))
    return out


COMMANDS = _commands()
GATES = {c.name for c in COMMANDS if c.panel == "Gate"}


def _examples(command: Command) -> list[str]:
    """The example lines of an epilog: the indented lines after the **Examples** heading."""
    _, found, body = command.epilog.partition("**Examples**")
    if not found:
        return []
    return [line.strip() for line in body.splitlines() if line.startswith("    ") and line.strip()]


EXAMPLES = [(c.name, line) for c in COMMANDS for line in _examples(c)]


# -- the command reference --------------------------------------------------------------


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(markdown: str) -> list[str]:
    anchors = []
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (line.startswith("## ") or line.startswith("### ")):
            anchors.append(_slug(line.lstrip("#")))
    return anchors


def test_the_app_registers_commands() -> None:
    assert len(COMMANDS) >= 10, [c.name for c in COMMANDS]


@pytest.mark.parametrize("name", [c.name for c in COMMANDS])
def test_running_a_command_imports_the_module_that_defines_it(name: str) -> None:
    """``o2f NAME`` imports only NAME's module (cli_app._COMMAND_MODULES): it must be the right one."""
    callback = next(
        info.callback
        for info in cli_app.app.registered_commands
        if (info.name or info.callback.__name__.replace("_", "-")) == name  # type: ignore[union-attr]
    )
    assert name in cli_app._COMMAND_MODULES, f"{name} is missing from cli_app._COMMAND_MODULES"
    assert callback.__module__ == f"forensics.cli.{cli_app._COMMAND_MODULES[name]}"  # type: ignore[union-attr]


@pytest.mark.parametrize("name", [c.name for c in COMMANDS])
def test_every_command_has_a_section_in_cli_md(name: str) -> None:
    anchors = _anchors(CLI_MD.read_text(encoding="utf-8"))
    pattern = re.compile(rf"(^|-){re.escape(name)}(-|$)")
    assert any(pattern.search(a) for a in anchors), f"docs/cli.md has no ## or ### section for {name!r}"


@pytest.mark.parametrize("anchor", ["records", "change-kinds", "exit-codes"])
def test_sections_the_code_links_to_exist(anchor: str) -> None:
    """records.py links docs/cli.md#records, errors.py links docs/cli.md#exit-codes."""
    assert anchor in _anchors(CLI_MD.read_text(encoding="utf-8"))


def test_every_record_field_is_documented() -> None:
    text = CLI_MD.read_text(encoding="utf-8")
    missing = [f for f in (*ENTRY_FIELDS, *CHANGE_FIELDS) if f"`{f}`" not in text]
    assert not missing, f"fields missing from docs/cli.md: {missing}"


def test_every_change_kind_and_detail_is_documented() -> None:
    text = CLI_MD.read_text(encoding="utf-8")
    missing = [k.value for k in ChangeKind if f"`{k.value}`" not in text]
    missing += [d for d in DETAIL_ORDER if f"`{d}`" not in text]
    assert not missing, f"change kinds or details missing from docs/cli.md: {missing}"


def test_every_exit_code_is_in_the_table() -> None:
    text = CLI_MD.read_text(encoding="utf-8")
    _, _, section = text.partition("## Exit codes")
    for code in ExitCode:
        assert re.search(rf"^\| {int(code)} \| `{code.name}` \|", section, re.M), code


# -- running the CLI ------------------------------------------------------------------


@pytest.fixture(scope="session")
def o2f_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory whose `o2f` runs this checkout with this interpreter (the examples say `o2f`)."""
    bin_dir = tmp_path_factory.mktemp("bin")
    script = bin_dir / "o2f"
    script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m forensics "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bin_dir


def _env(o2f_bin: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{o2f_bin}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}".rstrip(os.pathsep)
    env.pop("O2F_DEBUG", None)
    return env


def _workdir(path: Path) -> Path:
    """A directory where `samples/docker-sample.tar.gz` resolves, as in the repository root."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "samples").symlink_to(REPO / "samples", target_is_directory=True)
    return path


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory, o2f_bin: Path) -> Path:
    """A working directory holding sample.o2f, collected once from the bundled sample."""
    if not SAMPLE_TAR.exists():
        pytest.skip("samples/docker-sample.tar.gz is missing")
    cwd = _workdir(tmp_path_factory.mktemp("docs-examples"))
    done = subprocess.run(
        ["o2f", "collect", "samples/docker-sample.tar.gz", "-o", "sample.o2f", "--quiet"],
        cwd=cwd,
        env=_env(o2f_bin),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return cwd


@pytest.mark.parametrize("name", [c.name for c in COMMANDS])
def test_help_works_and_shows_examples(name: str, o2f_bin: Path) -> None:
    done = subprocess.run(
        ["o2f", name, "--help"], env=_env(o2f_bin), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "Examples" in done.stdout, f"o2f {name} --help shows no examples"
    assert _examples(next(c for c in COMMANDS if c.name == name)), f"o2f {name} has no example lines"


def _collect_source(line: str) -> str | None:
    """The SOURCE argument of an `o2f collect` example, parsed by the command's own option parser."""
    words = shlex.split(line)
    if words[:2] != ["o2f", "collect"]:
        return None
    args = []
    for word in words[2:]:
        if word in {">", ">>", "|", "&&", "||", ";"}:
            break
        args.append(word)
    command = typer.main.get_command(cli_app.app).commands["collect"]  # type: ignore[attr-defined]
    with command.make_context("collect", args, resilient_parsing=True) as ctx:
        source = ctx.params.get("source")
    return None if source is None else str(source)


def test_every_listed_collect_example_still_exists() -> None:
    lines = {line for _, line in EXAMPLES}
    stale = sorted(set(NEEDS_A_REAL_SOURCE) - lines)
    assert not stale, f"NEEDS_A_REAL_SOURCE lists examples no epilog has any more: {stale}"


@pytest.mark.parametrize(("name", "line"), EXAMPLES, ids=[line for _, line in EXAMPLES])
def test_example_runs_on_the_sample(
    name: str, line: str, sample_dir: Path, o2f_bin: Path, tmp_path: Path
) -> None:
    source = _collect_source(line)
    if source is not None and not source.startswith("samples/"):
        assert line in NEEDS_A_REAL_SOURCE, (
            f"{line!r} collects from {source}, which is not the sample: add it to NEEDS_A_REAL_SOURCE "
            "with a reason, or make it run on samples/"
        )
        pytest.skip(NEEDS_A_REAL_SOURCE[line])
    if re.search(r"\bmactime\b", line) and shutil.which("mactime") is None:
        pytest.skip("mactime (sleuthkit) is not installed")
    # A collect example gets its own directory, so it cannot disturb the shared sample.o2f.
    cwd = _workdir(tmp_path / "collect") if source is not None else sample_dir
    done = subprocess.run(
        ["bash", "-c", "set -o pipefail; " + line],
        cwd=cwd,
        env=_env(o2f_bin),
        capture_output=True,
        text=True,
        timeout=300,
    )
    allowed = {int(ExitCode.OK), int(ExitCode.FOUND)} if name in GATES else {int(ExitCode.OK)}
    assert done.returncode in allowed, f"{line!r} exited {done.returncode}:\n{done.stderr}"
    assert "internal error" not in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


# -- generated docs ---------------------------------------------------------------------


def test_schema_md_is_what_cog_generates() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cogapp", "--check", "docs/schema.md"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
