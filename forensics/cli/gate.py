"""Gate commands: verify, drift (exit 1 when something was found)."""

from __future__ import annotations

from enum import Enum

import typer

from forensics import __version__, api
from forensics.cli.analyze import open_analysis
from forensics.cli.app import app, examples_epilog, fail, warn
from forensics.errors import ExitCode
from forensics.render.audit import audit_output
from forensics.render.compare import drift_output

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
    for layer in result.altered_layers:
        typer.echo(f"altered entries   layer {layer}")
    if not result.ok:
        what = "the records digest differs" if result.stored != result.recomputed else "entries rows differ"
        if result.altered_layers:
            what += f" (entries of {len(result.altered_layers)} layer(s) changed)"
        raise fail(f"{snapshot} was changed since capture: {what}.", ExitCode.FOUND)
    typer.echo("verified: every record is as captured")


class DriftFormat(str, Enum):
    text = "text"
    json = "json"
    junit = "junit"
    sarif = "sarif"


@app.command(
    rich_help_panel=PANEL,
    epilog=examples_epilog(
        "o2f collect samples/docker-sample.tar.gz -o baseline.o2f -q --force && "
        "o2f collect samples/docker-sample.tar.gz -o current.o2f -q --force && "
        "o2f drift baseline.o2f current.o2f",
        "o2f drift sample.o2f --no-baseline",
        "o2f drift sample.o2f --no-baseline --ignore '/srv/**' --ignore '/tmp' --format junit > drift.xml",
        "o2f drift sample.o2f --no-baseline --policy samples/drift-policy.toml --format sarif > drift.sarif",
    ),
)
def drift(
    baseline: str = typer.Argument(
        ..., help="Baseline snapshot (with --no-baseline: the snapshot to check)."
    ),
    current: str = typer.Argument(None, help="Current snapshot."),
    no_baseline: bool = typer.Option(
        False, "--no-baseline", help="Image immutability: every upperdir change is drift."
    ),
    ignore: list[str] = typer.Option(
        None, "--ignore", help="Path glob to ignore (`*`, `?`, `[...]`, `**`; repeatable)."
    ),
    policy: str = typer.Option(None, "--policy", help="Policy file (TOML, see docs/policy.md)."),
    format: DriftFormat = typer.Option(DriftFormat.text, "--format", "-f", help="Output format."),
) -> None:
    """Fail (exit 1) when containers drifted from a baseline snapshot, or from their images.

    Exit 0: no drift; 1: drift (a finding at level failure); 2: bad input.
    """
    report = api.drift(baseline, current, no_baseline=no_baseline, ignore=ignore or (), policy=policy)
    for problem in report.problems:
        warn(problem)
    typer.echo(drift_output(report, format.value, __version__), nl=False)
    if report.drifted:
        raise typer.Exit(int(ExitCode.FOUND))


class AuditFormat(str, Enum):
    table = "table"
    json = "json"


@app.command(
    rich_help_panel=PANEL,
    epilog=examples_epilog("o2f audit sample.o2f", "o2f audit sample.o2f --format json"),
)
def audit(
    snapshot: str = typer.Argument(..., help="Snapshot file."),
    format: AuditFormat = typer.Option(AuditFormat.table, "--format", "-f", help="Output format."),
) -> None:
    """Fail (exit 1) on evidence of tampering: changed image layers, rogue mounts, suspicious upperdir files.

    Image layers are judged by the checks made at collection (diff id and tar-split); the mount table,
    layer structure and every container's upperdir are examined here. Exit 0: nothing of warning level
    or above; 1: something was found; 2: bad input.
    """
    report = api.audit(open_analysis(snapshot))
    for problem in report.problems:
        warn(problem)
    typer.echo(
        audit_output(report.findings, report.checks, format.value, layers_checked=report.layers_checked),
        nl=False,
    )
    if report.failed:
        raise typer.Exit(int(ExitCode.FOUND))
