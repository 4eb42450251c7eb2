"""Analysis commands: diff, trace, history, timeline."""

from __future__ import annotations

import sys
from enum import Enum

import typer

from forensics import api
from forensics.cli.app import app, examples_epilog, fail, warn
from forensics.model import path_from_text
from forensics.render.analysis import (
    diff_output,
    docker_output,
    history_output,
    podman_output,
    timeline_output,
    trace_output,
)
from forensics.render.compare import compare_output

PANEL = "Analyze"


class DiffFormat(str, Enum):
    table = "table"
    docker = "docker"
    podman = "podman"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"
    bodyfile = "bodyfile"


class TimelineFormat(str, Enum):
    bodyfile = "bodyfile"
    jsonl = "jsonl"
    csv = "csv"


class ReportFormat(str, Enum):
    table = "table"
    json = "json"


def open_analysis(snapshot: str) -> api.Analysis:
    analysis, warnings = api.open_analysis(snapshot)
    for message in warnings:
        warn(message)
    return analysis


def cli_path(text: str) -> bytes:
    """A path argument: the snapshot's text form (``\\xHH`` for raw bytes), absolute."""
    raw = path_from_text(text)
    return raw if raw.startswith(b"/") else b"/" + raw


@app.command(
    rich_help_panel=PANEL,
    epilog=examples_epilog(
        "o2f diff sample.o2f",
        "o2f diff sample.o2f s-web --format docker",
        "o2f diff sample.o2f s-web s-batch --format jsonl > changes.jsonl",
    ),
)
def diff(
    snapshot: str = typer.Argument(..., help="Snapshot file."),
    containers: list[str] = typer.Argument(None, help="Containers (name, id or id prefix); default: all."),
    format: DiffFormat = typer.Option(DiffFormat.table, "--format", "-f", help="Output format."),
) -> None:
    """Report what each container's upperdir added, modified, copied up or deleted.

    The baseline is the image plus the `-init` layer (what `docker diff` compares against).
    `--format docker` prints exactly what `docker diff` prints, `--format podman` what `podman diff` prints.
    """
    analysis = open_analysis(snapshot)
    podman = format is DiffFormat.podman
    result = api.diff(analysis, containers, docker=format is DiffFormat.docker, podman=podman)
    for problem in result.problems:
        warn(problem)
    if format in (DiffFormat.docker, DiffFormat.podman):
        blocks, lines = (result.podman, podman_output) if podman else (result.docker, docker_output)
        for container, letters in blocks:
            if len(blocks) + len(result.problems) > 1 or not containers or len(containers) > 1:
                sys.stdout.buffer.write(f"# {container.name}\n".encode())
            sys.stdout.buffer.write(lines(letters))
        sys.stdout.flush()
        reported = len(blocks)
    else:
        reports = [(c.name or c.id, changes) for c, changes in result.reports]
        typer.echo(diff_output(reports, format.value), nl=False)
        reported = len(reports)
    if not reported and result.problems:
        raise fail("no container could be analysed.")


@app.command(
    rich_help_panel=PANEL,
    epilog=examples_epilog("o2f trace sample.o2f s-web /srv/data/ctr-delete.txt"),
)
def trace(
    snapshot: str = typer.Argument(..., help="Snapshot file."),
    container: str = typer.Argument(..., help="Container (name, id or id prefix)."),
    path: str = typer.Argument(..., help="Path inside the container (raw bytes as \\xHH)."),
    format: ReportFormat = typer.Option(ReportFormat.table, "--format", "-f", help="Output format."),
) -> None:
    """Show every layer, top to bottom, that has a path or hides it, and which one wins."""
    analysis = open_analysis(snapshot)
    raw = cli_path(path)
    steps, final = api.trace(analysis, analysis.find_container(container), raw)
    typer.echo(trace_output(steps, final, raw, format.value), nl=False)


@app.command(
    rich_help_panel=PANEL,
    epilog=examples_epilog(
        "o2f history sample.o2f sample/app:1", "o2f history sample.o2f sample/app:1 -f json"
    ),
)
def history(
    snapshot: str = typer.Argument(..., help="Snapshot file."),
    image: str = typer.Argument(..., help="Image (tag, id or id prefix)."),
    format: ReportFormat = typer.Option(ReportFormat.table, "--format", "-f", help="Output format."),
) -> None:
    """Show what each image layer added, modified and deleted relative to the layers below it."""
    analysis = open_analysis(snapshot)
    steps = api.history(analysis, analysis.find_image(image))
    typer.echo(history_output(steps, format.value), nl=False)


@app.command(
    rich_help_panel=PANEL,
    epilog=examples_epilog(
        "o2f timeline sample.o2f > body.txt && mactime -b body.txt",
        "o2f timeline sample.o2f s-web --format jsonl",
    ),
)
def timeline(
    snapshot: str = typer.Argument(..., help="Snapshot file."),
    containers: list[str] = typer.Argument(None, help="Containers; default: all."),
    format: TimelineFormat = typer.Option(TimelineFormat.bodyfile, "--format", "-f", help="Output format."),
) -> None:
    """List every upperdir change of every container by time (Sleuth Kit bodyfile by default)."""
    analysis = open_analysis(snapshot)
    selected = api.select_containers(analysis, containers)
    events, problems = api.timeline(analysis, selected)
    for problem in problems:
        warn(problem)
    if selected and len(problems) == len(selected):
        raise fail("no container could be analysed.")
    typer.echo(timeline_output(events, format.value), nl=False)


class CompareFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


@app.command(
    rich_help_panel=PANEL,
    epilog=examples_epilog(
        "o2f collect samples/docker-sample.tar.gz -o before.o2f -q --force && "
        "o2f collect samples/docker-sample.tar.gz -o after.o2f -q --force && "
        "o2f compare before.o2f after.o2f",
        "o2f collect samples/docker-sample.tar.gz -o before.o2f -q --force && "
        "o2f collect samples/docker-sample.tar.gz -o after.o2f -q --force && "
        "o2f compare before.o2f after.o2f --pair s-web=s-batch --format json",
    ),
)
def compare(
    a: str = typer.Argument(..., help="Snapshot A."),
    b: str = typer.Argument(..., help="Snapshot B."),
    pair: list[str] = typer.Option(
        None, "--pair", help="Pair container A=B explicitly (name, id or id prefix; repeatable)."
    ),
    format: CompareFormat = typer.Option(CompareFormat.table, "--format", "-f", help="Output format."),
) -> None:
    """Compare two snapshots by content address: images, image layers and containers.

    Images match by image id, image layers by chain id, containers by name (or `--pair`).
    """
    result = api.compare(a, b, pairs=pair or ())
    for problem in result.problems:
        warn(problem)
    typer.echo(compare_output(result, format.value), nl=False)
