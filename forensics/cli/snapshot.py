"""Snapshot commands: info (and, with the analyzer, containers, images, ls)."""

from __future__ import annotations

from enum import Enum

import typer

from forensics import api
from forensics.cli.analyze import cli_path, open_analysis
from forensics.cli.app import app, examples_epilog, warn
from forensics.render.analysis import containers_output, images_output, layers_output, ls_output
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


class ListFormat(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


class LsFormat(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"
    bodyfile = "bodyfile"


@app.command(
    rich_help_panel=PANEL,
    epilog=examples_epilog("o2f containers sample.o2f", "o2f containers sample.o2f --format json"),
)
def containers(
    snapshot: str = typer.Argument(..., help="Snapshot file."),
    format: ListFormat = typer.Option(ListFormat.table, "--format", "-f", help="Output format."),
) -> None:
    """List containers: id, name, image, state, layer chain, upper size and number of changes."""
    analysis = open_analysis(snapshot)
    typer.echo(containers_output(api.container_summaries(analysis), format.value), nl=False)


@app.command(
    rich_help_panel=PANEL,
    epilog=examples_epilog("o2f images sample.o2f", "o2f images sample.o2f --format json"),
)
def images(
    snapshot: str = typer.Argument(..., help="Snapshot file."),
    format: ListFormat = typer.Option(ListFormat.table, "--format", "-f", help="Output format."),
) -> None:
    """List images with their tags, layers and the containers using them."""
    analysis = open_analysis(snapshot)
    typer.echo(images_output(api.image_summaries(analysis), format.value), nl=False)


@app.command(
    rich_help_panel=PANEL,
    epilog=examples_epilog("o2f layers sample.o2f", "o2f layers sample.o2f --format json"),
)
def layers(
    snapshot: str = typer.Argument(..., help="Snapshot file."),
    format: ListFormat = typer.Option(ListFormat.table, "--format", "-f", help="Output format."),
) -> None:
    """List every layer directory with its role (image, init, container, orphan), size and users."""
    analysis = open_analysis(snapshot)
    typer.echo(layers_output(api.layer_summaries(analysis), format.value), nl=False)


@app.command(
    rich_help_panel=PANEL,
    epilog=examples_epilog("o2f ls sample.o2f s-web /srv", "o2f ls sample.o2f s-web --format jsonl"),
)
def ls(
    snapshot: str = typer.Argument(..., help="Snapshot file."),
    container: str = typer.Argument(..., help="Container (name, id or id prefix)."),
    path: str = typer.Argument("/", help="Directory or file inside the container (raw bytes as \\xHH)."),
    format: LsFormat = typer.Option(LsFormat.table, "--format", "-f", help="Output format."),
) -> None:
    """List a container's merged view below PATH, rebuilt offline from the snapshot."""
    analysis = open_analysis(snapshot)
    target = analysis.find_container(container)
    entries = api.list_view(analysis, target, cli_path(path))
    typer.echo(ls_output(entries, format.value, target.name or target.id), nl=False)
