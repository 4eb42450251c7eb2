"""Gate commands: verify (exit 1 when something was found)."""

from __future__ import annotations

import typer

from forensics import api
from forensics.cli.app import app, examples_epilog, fail
from forensics.errors import ExitCode

PANEL = "Gate"


@app.command(
    rich_help_panel=PANEL,
    epilog=examples_epilog("o2f verify sample.o2f"),
)
def verify(snapshot: str = typer.Argument(..., help="Snapshot file.")) -> None:
    """Recompute a snapshot's records digest and compare it with the one stored at capture."""
    result = api.verify(snapshot)
    typer.echo(f"stored digest     {result.stored}")
    typer.echo(f"recomputed digest {result.recomputed}")
    typer.echo(f"file blake3       {result.file_blake3}")
    if not result.ok:
        raise fail(f"{snapshot} was changed since capture: the records digest differs.", ExitCode.FOUND)
    typer.echo("verified: every record is as captured")
