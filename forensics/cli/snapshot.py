"""Snapshot commands: info (and, with the analyzer, containers, images, ls)."""

from __future__ import annotations

from enum import Enum

import typer

from forensics import api
from forensics.cli.app import app, examples_epilog, warn
from forensics.render.info import info_json, info_record, info_table

PANEL = "Snapshot"


class InfoFormat(str, Enum):
    table = "table"
    json = "json"


@app.command(
    rich_help_panel=PANEL,
    epilog=examples_epilog("o2f info sample.o2f", "o2f info sample.o2f --format json"),
)
def info(
    snapshot: str = typer.Argument(..., help="Snapshot file."),
    format: InfoFormat = typer.Option(InfoFormat.table, "--format", "-f", help="Output format."),
) -> None:
    """Show a snapshot's provenance and record counts."""
    details = api.info(snapshot)
    record = info_record(details.provenance, details.counts)
    if not details.complete:
        warn(f"{snapshot} is incomplete: the capture did not finish.")
    typer.echo(info_json(record) if format is InfoFormat.json else info_table(record), nl=False)
