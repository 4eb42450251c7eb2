"""The typer application, the one error-to-exit-code mapping, and progress.

Stdout carries data only; messages, warnings and progress go to stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from forensics import __version__
from forensics.errors import ExitCode, O2fError

app = typer.Typer(
    name="o2f",
    help="Forensic snapshot-and-diff for container overlay storage.\n\n"
    "Capture a Docker data root (directory or tar) into one SQLite snapshot, then analyse it offline.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def examples_epilog(*lines: str) -> str:
    """The EXAMPLES block at the end of a command's --help (each runs on samples/)."""
    body = "\n\n".join(f"    {line}" for line in lines)
    return f"**Examples**\n\n{body}"


def warn(message: str) -> None:
    """A warning on stderr; the message is evidence-derived text, never markup."""
    err_console.print(Text.assemble(("warning: ", "yellow"), message), highlight=False)


def fail(message: str, code: ExitCode = ExitCode.TROUBLE) -> typer.Exit:
    err_console.print(f"o2f: {message}", markup=False, highlight=False)
    return typer.Exit(int(code))


@contextmanager
def progress_reporter(quiet: bool, what: str) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress line on a terminal; nothing when piped or with --quiet."""
    if quiet or not err_console.is_terminal:
        yield None
        return
    columns = (
        TextColumn(f"[bold]{what}[/]"),
        BarColumn(bar_width=None),
        TextColumn("{task.fields[entries]:>9,} entries  {task.fields[mib]:>9,.1f} MiB  {task.fields[rate]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(what, total=None, entries=0, mib=0.0, rate="")

        def update(entries: int, hashed: int) -> None:
            elapsed = bar.tasks[0].elapsed or 0.0
            rate = f"{hashed / elapsed / 1e6:,.0f} MB/s" if elapsed > 0.2 else ""
            bar.update(task, entries=entries, mib=hashed / 2**20, rate=rate)

        yield update


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"o2f {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(
        False, "--version", callback=version_callback, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Forensic snapshot-and-diff for container overlay storage."""


# The module defining each command. Running one command imports only its module (start-up time is
# part of every collection and every CI gate); anything else (--help, a typo) imports them all.
_COMMAND_MODULES = {
    "collect": "capture",
    **dict.fromkeys(("info", "containers", "images", "layers", "ls"), "snapshot"),
    **dict.fromkeys(("diff", "trace", "history", "timeline", "compare"), "analyze"),
    **dict.fromkeys(("verify", "drift", "audit"), "gate"),
}


def _register(argv: list[str]) -> None:
    import importlib

    command = argv[1] if len(argv) > 1 else None
    if command in _COMMAND_MODULES:
        importlib.import_module(f"forensics.cli.{_COMMAND_MODULES[command]}")
        return
    from forensics.cli import analyze, capture, gate, snapshot  # noqa: F401  (commands register themselves)


def main() -> None:
    """Console entry point: every expected failure is one line on stderr and exit code 2."""
    try:
        _register(sys.argv)
        app()
    except O2fError as exc:
        err_console.print(f"o2f: {exc}", markup=False, highlight=False)
        sys.exit(ExitCode.TROUBLE)
    except KeyboardInterrupt:
        err_console.print("o2f: interrupted.", markup=False)
        sys.exit(ExitCode.INTERRUPTED)
    except Exception as exc:  # a bug: one line unless O2F_DEBUG=1
        if os.environ.get("O2F_DEBUG") == "1":
            raise
        err_console.print(
            f"o2f: internal error ({type(exc).__name__}: {exc}); this is a bug - "
            "rerun with O2F_DEBUG=1 for the traceback.",
            markup=False,
        )
        sys.exit(ExitCode.TROUBLE)
