"""The documented Python API: capture into a snapshot, and open one for analysis.

The CLI calls only this module and ``render``. Capture joins a source, a
storage layout and the writer; nothing here parses or prints.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from forensics import __version__
from forensics.analyze.containers import Analysis
from forensics.analyze.diff import docker_changes, forensic_changes
from forensics.analyze.report import (
    container_summaries,
    history,
    image_summaries,
    layer_summaries,
    list_view,
    timeline,
    trace,
)
from forensics.capture.engine import Discovered, Engine, Gathered, all_engines
from forensics.capture.hash import hash_chunks, hash_file_path
from forensics.capture.mounts import mounts_referencing, parse_mount_table, read_live_mountinfo
from forensics.capture.sources import Noted, Relink, Source, find_source
from forensics.errors import ChainError, MountTableError, O2fError, SnapshotError, UsageError
from forensics.model import (
    CaptureError,
    Change,
    Container,
    Entry,
    MetadataFile,
    Mount,
    Provenance,
    xattr_name_to_text,
)
from forensics.overlay import rules
from forensics.store.reader import Snapshot, SnapshotInfo, open_snapshot
from forensics.store.writer import SnapshotWriter

Progress = Callable[[int, int], None]

__all__ = ["CollectResult", "collect", "info", "open_snapshot", "verify"]


@dataclass(frozen=True)
class CollectResult:
    path: str
    digest: str
    file_blake3: str
    provenance: Provenance
    warnings: tuple[str, ...]


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _entry_flags(entry: Entry) -> tuple[int, int, str | None]:
    private = rules.private_xattr_names(entry) if entry.xattrs else []
    return (
        int(rules.is_whiteout(entry)),
        int(bool(entry.xattrs) and rules.is_opaque(entry)),
        json.dumps([xattr_name_to_text(n) for n in private]) if private else None,
    )


def _refuse_inside_source(source: Source, output: str, mounts_file: str | None) -> None:
    """The snapshot must never replace or land inside evidence (the source, or the mount table given)."""
    for evidence in (source.location, mounts_file):
        if evidence is not None and os.path.exists(output) and os.path.samefile(output, evidence):
            raise UsageError(f"the snapshot {output} is the evidence file {evidence} itself; refusing.")
    if source.kind != "directory":
        return
    src = Path(source.location).resolve()
    out = Path(output).resolve().parent / Path(output).name
    if out == src or src in out.parents:
        raise UsageError(
            f"the snapshot {output} would be written inside the source {source.location}; refusing."
        )


def _load_mounts(mounts_file: str | None, source: Source) -> tuple[list[Mount], str]:
    if mounts_file is not None:
        try:
            with open(mounts_file, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise UsageError(f"cannot read mount table {mounts_file}: {exc.strerror}.") from None
        return parse_mount_table(data, mounts_file), mounts_file
    if source.kind == "directory":
        try:
            live = read_live_mountinfo()
        except MountTableError:
            return [], "none"
        root = os.fsencode(os.path.realpath(source.location))
        if any(m.upperdir or m.lowerdirs for m in mounts_referencing(live, root)):
            return live, "/proc/self/mountinfo"
    return [], "none"


def collect(
    source_path: str,
    output: str,
    *,
    force: bool = False,
    mounts_file: str | None = None,
    progress: Progress | None = None,
    threads: int | None = None,
) -> CollectResult:
    """Capture a data root (directory or tar archive) into a new snapshot file."""
    source = find_source(source_path)
    if threads is not None and hasattr(source, "threads"):
        source.threads = threads  # type: ignore[attr-defined]
    _refuse_inside_source(source, output, mounts_file)
    mounts, mounts_origin = _load_mounts(mounts_file, source)
    provenance = Provenance(
        tool_version=__version__,
        started_utc=_utc_now(),
        source=source_path,
        source_kind=source.kind,
        layout="",
        host=socket.gethostname(),
        kernel=platform.release(),
        options={"mounts": mounts_origin, "force": force},
        capabilities=source.capabilities,
    )
    engines = all_engines()
    items = source.items(engines, progress)
    # Detection happens on the first item: no snapshot file is created for a source that is not a data root.
    try:
        first = next(items)
    except StopIteration:
        first = None
    writer = SnapshotWriter(output, force=force, flags=_entry_flags)
    provenance.layout = source.layout.name if source.layout else ""
    provenance.data_root = source.data_root
    gathered = Gathered()
    try:
        writer.begin(provenance)
        stream = items if first is None else _chain_first(first, items)
        for item in stream:
            if isinstance(item, Entry):
                writer.add_entry(item)
                if item.path == b"/":
                    gathered.layer_roots.add(item.layer_id)
            elif isinstance(item, MetadataFile):
                gathered.add_file(item)
            elif isinstance(item, Noted):
                gathered.add_noted(item)
            elif isinstance(item, Relink):
                writer.relink(item.layer_id, item.path, item.link_group)
            elif isinstance(item, CaptureError):
                writer.add_error(item)
        discovered = _write_discovered(writer, engines, source, gathered, mounts)
        provenance.finished_utc = _utc_now()
        provenance.complete = True
        provenance.bytes_read = source.bytes_read
        digest = writer.finish(provenance, hash_chunks)
    except BaseException as exc:
        provenance.finished_utc = None
        provenance.bytes_read = source.bytes_read
        if source.layout is not None and not isinstance(exc, KeyboardInterrupt):
            # What was read before the failure stays analysable (marked incomplete).
            with contextlib.suppress(Exception):
                _write_discovered(writer, engines, source, gathered, mounts)
        writer.abort(provenance)
        writer.close()
        if isinstance(exc, O2fError):
            raise type(exc)(f"{exc} The partial snapshot {output} is marked incomplete.") from None
        raise
    writer.close()
    return CollectResult(output, digest, hash_file_path(output), provenance, tuple(discovered.warnings))


def _write_discovered(
    writer: SnapshotWriter, engines: list[Engine], source: Source, gathered: Gathered, mounts: list[Mount]
) -> Discovered:
    """The layout's account of what was read: layers, chains, images, containers; and the mount table."""
    writer.flush()
    engine = next(e for e in engines if e.name == source.layout.name)  # type: ignore[union-attr]
    discovered = engine.discover(gathered)
    writer.add_metadata_files(MetadataFile(p, c) for p, c in sorted(gathered.files.items()))
    writer.add_layers(discovered.layers, discovered.links)
    writer.add_image_layers(discovered.image_layers)
    writer.add_images(discovered.images)
    writer.add_containers(discovered.containers)
    writer.add_mounts(mounts)
    return discovered


def _chain_first(first: object, rest: object):  # type: ignore[no-untyped-def]
    yield first
    yield from rest  # type: ignore[misc]


def info(path: str) -> SnapshotInfo:
    with open_snapshot(path) as snapshot:
        return snapshot.info()


@dataclass(frozen=True)
class VerifyResult:
    path: str
    stored: str | None
    recomputed: str
    file_blake3: str

    @property
    def ok(self) -> bool:
        return self.stored == self.recomputed


def verify(path: str) -> VerifyResult:
    """Recompute the records digest and compare it with the one stored at collection."""
    with open_snapshot(path) as snapshot:
        stored = snapshot.provenance.get("digest")
        recomputed = hash_chunks(snapshot.recompute_records())
    if stored is None:
        raise SnapshotError(f"{path} has no stored digest: the capture did not finish.")
    return VerifyResult(path, str(stored), recomputed, hash_file_path(path))


# -- analysis -----------------------------------------------------------------------


def open_analysis(path: str) -> tuple[Analysis, list[str]]:
    """A snapshot opened for analysis, and warnings about what it lacks."""
    snapshot = open_snapshot(path)
    warnings = []
    if not snapshot.provenance.get("complete"):
        counts = snapshot.info().counts
        warnings.append(
            f"{path} is incomplete (the capture did not finish); analysing the "
            f"{counts.get('entries', 0)} entries and {counts.get('containers', 0)} containers it holds."
        )
    return Analysis(snapshot), warnings


def select_containers(analysis: Analysis, names: Sequence[str] | None) -> list[Container]:
    """The named containers (id, id prefix or name), or all of them."""
    if not names:
        return list(analysis.containers)
    return [analysis.find_container(name) for name in names]


@dataclass(frozen=True)
class DiffResult:
    reports: list[tuple[Container, list[Change]]]
    docker: list[tuple[Container, list[tuple[str, bytes]]]]
    problems: list[str]


def diff(analysis: Analysis, names: Sequence[str] | None, *, docker: bool = False) -> DiffResult:
    """Change reports per container; a damaged chain is a problem for that container only."""
    reports: list[tuple[Container, list[Change]]] = []
    letters: list[tuple[Container, list[tuple[str, bytes]]]] = []
    problems: list[str] = []
    selected = select_containers(analysis, names)
    analysis.prepare(selected)
    for container in selected:
        if container.problem:
            problems.append(f"container {container.name or container.id}: {container.problem}")
        try:
            views = analysis.container_views(container)
        except ChainError as exc:
            problems.append(str(exc))
            continue
        if docker:
            letters.append((container, docker_changes(views)))
        else:
            reports.append((container, forensic_changes(container, views)))
    return DiffResult(reports, letters, problems)


__all__ += [
    "Analysis",
    "DiffResult",
    "Snapshot",
    "VerifyResult",
    "container_summaries",
    "diff",
    "history",
    "image_summaries",
    "layer_summaries",
    "list_view",
    "open_analysis",
    "select_containers",
    "timeline",
    "trace",
]
