"""Capture commands: collect."""

from __future__ import annotations

import typer

from forensics import api
from forensics.cli.app import app, examples_epilog, fail, progress_reporter, warn
from forensics.errors import ExitCode

PANEL = "Capture"


@app.command(
    rich_help_panel=PANEL,
    epilog=examples_epilog(
        "o2f collect /var/lib/docker -o host.o2f",
        "o2f collect samples/docker-sample.tar.gz -o sample.o2f --force",
        "o2f collect /mnt/evidence/var/lib/docker -o case42.o2f --mounts seized-mountinfo.txt --quiet",
    ),
)
def collect(
    source: str = typer.Argument(
        ..., help="Docker data root directory, or a tar archive of one (.tar, .tar.gz, .tar.xz, .tar.zst)."
    ),
    output: str = typer.Option(..., "-o", "--output", help="Snapshot file to create."),
    mounts: str = typer.Option(
        None, "--mounts", help="Saved mount table: /proc/self/mountinfo, /proc/mounts or `mount` output."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing snapshot file."),
    threads: int = typer.Option(
        None,
        "--threads",
        min=1,
        max=64,
        help="Collecting processes for a directory source, each walking whole layers (list, stat, xattrs, "
        "hash) (default: 2, or 1 on a single CPU; 1 walks in-process).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    verify_layers: bool = typer.Option(
        True,
        "--verify-layers/--no-verify-layers",
        help="Check image layers against the engine's diff ids and tar-split (re-reads image layers).",
    ),
    reuse: str = typer.Option(
        None,
        "--reuse",
        metavar="BASELINE",
        help="Take the hash of each file whose layer, path, device, inode, size, mtime and ctime are "
        "unchanged from this earlier snapshot of the same directory instead of reading it (the baseline's "
        "digest is checked first; entries.hash_reused marks those hashes).",
    ),
) -> None:
    """Capture a data root and its mount table into one SQLite snapshot, read-only."""
    try:
        with progress_reporter(quiet, "collecting") as progress:
            result = api.collect(
                source,
                output,
                force=force,
                mounts_file=mounts,
                progress=progress,
                threads=threads,
                verify_layers=verify_layers,
                reuse=reuse,
            )
    except KeyboardInterrupt:
        raise fail(f"interrupted; {output} is marked incomplete.", ExitCode.INTERRUPTED) from None
    for message in result.warnings:
        warn(message)
    p = result.provenance
    counts = p.counts
    typer.echo(f"snapshot       {result.path}")
    typer.echo(f"layout         {p.layout}  ({p.source_kind} {p.source})")
    typer.echo(
        f"captured       {counts.get('entries', 0)} entries in {counts.get('layers', 0)} layers, "
        f"{counts.get('images', 0)} images, {counts.get('containers', 0)} containers, "
        f"{counts.get('mounts', 0)} mounts, {counts.get('errors', 0)} errors"
    )
    typer.echo(f"records digest {result.digest}")
    typer.echo(f"file blake3    {result.file_blake3}")
