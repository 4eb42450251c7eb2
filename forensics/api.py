"""The documented Python API: capture into a snapshot, and open one for analysis.

The CLI calls only this module and ``render``. Capture joins a source, a
storage layout and the writer; nothing here parses or prints.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import os
import platform
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from forensics import __version__
from forensics.capture.hash import hash_file_path, new_hasher
from forensics.errors import (
    BaselineError,
    ChainError,
    MountTableError,
    O2fError,
    PolicyError,
    SnapshotError,
    UsageError,
)
from forensics.model import (
    CaptureError,
    Change,
    Container,
    Entry,
    LayerVerdict,
    MetadataFile,
    Mount,
    Provenance,
    xattr_name_to_text,
)
from forensics.overlay import rules
from forensics.store.reader import Snapshot, SnapshotInfo, open_snapshot

if TYPE_CHECKING:
    from forensics.analyze import compare as _compare
    from forensics.analyze import drift as _drift
    from forensics.analyze.audit import AuditReport
    from forensics.analyze.containers import Analysis
    from forensics.capture.engine import Discovered, Engine, Gathered
    from forensics.capture.sources import Source
    from forensics.store.writer import SnapshotWriter

Progress = Callable[[int, int], None]

# Analysis code is imported when first used (here, or by name from outside): a collection, a
# verification or an info starts faster without it, as analysis commands start without capture code.
_ANALYSIS_NAMES = {
    "Analysis": "forensics.analyze.containers",
    "AuditReport": "forensics.analyze.audit",
    **dict.fromkeys(
        (
            "container_summaries",
            "history",
            "image_summaries",
            "layer_summaries",
            "list_view",
            "timeline",
            "trace",
        ),
        "forensics.analyze.report",
    ),
}


def __getattr__(name: str) -> object:
    module = _ANALYSIS_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["CollectResult", "collect", "info", "open_snapshot", "verify", *_ANALYSIS_NAMES]


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
    from forensics.capture.mounts import mounts_referencing, parse_mount_table, read_live_mountinfo

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
    verify_layers: bool = True,
    reuse: str | None = None,
) -> CollectResult:
    """Capture a data root (directory or tar archive) into a new snapshot file.

    ``verify_layers`` checks every image layer against the engine's records
    (diff id and tar-split) and stores the verdicts in ``layer_checks`` and
    ``layer_findings`` (docs/evidence.md#image-layers-checked-at-collection).

    ``reuse`` names a baseline snapshot of the same directory: a regular file
    whose layer, path, device, inode, size, mtime and ctime are all unchanged
    gets the baseline's hash instead of being read (``entries.hash_reused``).
    The baseline must be complete, collected from a directory, and pass its
    records digest check (docs/evidence.md#re-collecting-with---reuse).
    """
    # Capture code is imported here, not at the top: analysis commands start faster without it.
    from forensics.capture.sources import find_source

    source = find_source(source_path)
    if threads is not None and hasattr(source, "threads"):
        source.threads = threads  # type: ignore[attr-defined]
    _refuse_inside_source(source, output, mounts_file)
    baseline = None if reuse is None else _open_baseline(reuse, source, output)
    try:
        return _collect(source, source_path, output, force, mounts_file, progress, verify_layers, baseline)
    finally:
        if baseline is not None:
            baseline.close()


def _open_baseline(path: str, source: Source, output: str) -> Snapshot:
    """The baseline of ``--reuse``, checked before any of its hashes is used, digest included."""
    if source.kind != "directory":
        raise UsageError(
            f"--reuse needs a directory source: {source.location} is a tar archive, which records no "
            "device or inode numbers to match."
        )
    if os.path.exists(output) and os.path.exists(path) and os.path.samefile(output, path):
        raise UsageError(f"the snapshot {output} is the baseline {path} itself; refusing.")
    baseline = open_snapshot(path)
    try:
        baseline.check_reusable()
        # The records digest (over everything but the entries rows) now; each layer's entries rows
        # against their digest as the collecting processes take that layer's hashes (ReuseFiles).
        if baseline.records_digest(new_hasher) != baseline.provenance["digest"]:
            raise SnapshotError(
                f"the baseline {path} fails its records digest check (a record was changed, added or "
                "removed since capture), so its hashes cannot be reused."
            )
    except BaseException:
        baseline.close()
        raise
    return baseline


def _collect(
    source: Source,
    source_path: str,
    output: str,
    force: bool,
    mounts_file: str | None,
    progress: Progress | None,
    verify_layers: bool,
    baseline: Snapshot | None,
) -> CollectResult:
    from forensics.capture.engine import Gathered, all_engines
    from forensics.capture.sources import EncodedEntries, Noted, Relink
    from forensics.store.writer import EntryEncoder, SnapshotWriter

    mounts, mounts_origin = _load_mounts(mounts_file, source)
    options: dict[str, object] = {"mounts": mounts_origin, "force": force, "verify_layers": verify_layers}
    if baseline is not None:
        options["reuse"] = {"baseline": baseline.path, "digest": baseline.provenance["digest"]}
        source.reuse = baseline.reuse_lookup(new_hasher)  # type: ignore[attr-defined]
    provenance = Provenance(
        tool_version=__version__,
        started_utc=_utc_now(),
        source=source_path,
        source_kind=source.kind,
        layout="",
        host=socket.gethostname(),
        kernel=platform.release(),
        options=options,
        capabilities=source.capabilities,
    )
    engines = all_engines()
    encode = EntryEncoder(_entry_flags)
    items = source.items(engines, progress, encode)
    # Detection happens on the first item: no snapshot file is created for a source that is not a data root.
    try:
        first = next(items)
    except StopIteration:
        first = None
    writer = SnapshotWriter(output, force=force, encode=encode, new_hasher=new_hasher)
    provenance.layout = source.layout.name if source.layout else ""
    provenance.data_root = source.data_root
    gathered = Gathered()
    # Rows are short-lived tuples without cycles: cyclic collection during the walk is pure cost.
    with _without_cyclic_gc():
        try:
            writer.begin(provenance)
            stream = items if first is None else itertools.chain((first,), items)
            for item in stream:
                if type(item) is EncodedEntries:
                    writer.add_rows(item.rows, item.encoded)
                    if item.root_of is not None:
                        gathered.layer_roots.add(item.root_of)
                elif isinstance(item, Entry):
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
            if verify_layers:
                _verify_layers(writer, source, discovered)
            provenance.finished_utc = _utc_now()
            provenance.complete = True
            provenance.bytes_read = source.bytes_read
            provenance.hashes_reused = writer.hashes_reused
            digest = writer.finish(provenance)
        except BaseException as exc:
            provenance.finished_utc = None
            provenance.bytes_read = source.bytes_read
            provenance.hashes_reused = writer.hashes_reused
            if source.layout is not None and not isinstance(exc, KeyboardInterrupt):
                # What was read before the failure stays analysable (marked incomplete).
                with contextlib.suppress(Exception):
                    _write_discovered(writer, engines, source, gathered, mounts)
            writer.abort(provenance)
            writer.close()
            if isinstance(exc, BaselineError):
                # The baseline failed its check for a layer while collecting: a refusal, as if found
                # before the first write, so nothing of this collection is kept.
                with contextlib.suppress(OSError):
                    os.unlink(output)
                raise
            if isinstance(exc, O2fError):
                raise type(exc)(f"{exc} The partial snapshot {output} is marked incomplete.") from None
            raise
    writer.close()
    return CollectResult(output, digest, hash_file_path(output), provenance, tuple(discovered.warnings))


@contextlib.contextmanager
def _without_cyclic_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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


def _verify_layers(writer: SnapshotWriter, source: Source, discovered: Discovered) -> None:
    """Every image layer against its diff id and tar-split, into layer_checks and layer_findings."""
    from forensics.capture.layerverify import verify_layers as verify_layers_of

    writer.flush()
    checks = []
    findings = []
    for result in verify_layers_of(source, discovered.layers, discovered.image_layers, writer.layer_entries):
        checks.append(result.check)
        findings.extend(result.findings)
        check = result.check
        if check.verdict is LayerVerdict.TAMPERED:
            discovered.warnings.append(
                f"image layer {check.layer_id[:12]} differs from the layer tar the engine recorded "
                f"({check.detail}); o2f audit lists the files."
            )
        elif check.verdict is LayerVerdict.ERROR:
            discovered.warnings.append(
                f"image layer {check.layer_id[:12]} could not be verified: {check.detail}."
            )
    writer.add_layer_checks(checks)
    writer.add_layer_findings(findings)


def info(path: str) -> SnapshotInfo:
    with open_snapshot(path) as snapshot:
        return snapshot.info()


@dataclass(frozen=True)
class VerifyResult:
    path: str
    stored: str | None
    recomputed: str
    file_blake3: str
    altered_layers: tuple[str, ...] = ()  # layers whose entries rows no longer match entry_digests

    @property
    def ok(self) -> bool:
        return self.stored == self.recomputed and not self.altered_layers


def verify(path: str) -> VerifyResult:
    """Recompute the records digest and every layer's entries digest; compare them with those stored."""
    with open_snapshot(path) as snapshot:
        stored = snapshot.provenance.get("digest")
        check = snapshot.check_records(new_hasher)
    if stored is None:
        raise SnapshotError(f"{path} has no stored digest: the capture did not finish.")
    return VerifyResult(path, str(stored), check.digest, hash_file_path(path), check.altered_layers)


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
    from forensics.analyze.containers import Analysis

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
    podman: list[tuple[Container, list[tuple[str, bytes]]]] = field(default_factory=list)


def diff(
    analysis: Analysis, names: Sequence[str] | None, *, docker: bool = False, podman: bool = False
) -> DiffResult:
    """Change reports per container; a damaged chain is a problem for that container only.

    ``docker=True`` gives what `docker diff` prints, ``podman=True`` what `podman diff` prints.
    """
    from forensics.analyze.diff import docker_changes, forensic_changes
    from forensics.analyze.podman import PodmanDiffError, podman_changes

    reports: list[tuple[Container, list[Change]]] = []
    letters: list[tuple[Container, list[tuple[str, bytes]]]] = []
    podman_letters: list[tuple[Container, list[tuple[str, bytes]]]] = []
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
        if podman:
            try:
                podman_letters.append((container, podman_changes(views)))
            except PodmanDiffError as exc:
                problems.append(str(exc))
        elif docker:
            letters.append((container, docker_changes(views)))
        else:
            reports.append((container, forensic_changes(container, views)))
    return DiffResult(reports, letters, problems, podman_letters)


__all__ += [
    "DiffResult",
    "Snapshot",
    "VerifyResult",
    "diff",
    "open_analysis",
    "select_containers",
]


# -- compare and drift ---------------------------------------------------------------


def _open_two(first: str, second: str, labels: tuple[str, str]) -> tuple[Analysis, Analysis, list[str]]:
    """Two different snapshots of one schema version, opened for analysis, and their warnings."""
    if os.path.exists(first) and os.path.exists(second) and os.path.samefile(first, second):
        raise UsageError(f"{labels[0]} and {labels[1]} are the same snapshot ({first}); give two snapshots.")
    a, warnings_a = open_analysis(first)
    b, warnings_b = open_analysis(second)
    pa, pb = a.snapshot.provenance, b.snapshot.provenance
    if pa.get("schema_version") != pb.get("schema_version"):
        raise UsageError(
            f"{first} has schema version {pa.get('schema_version')} and {second} has "
            f"{pb.get('schema_version')}; compare snapshots of one version."
        )
    if pa.get("digest") is not None and pa.get("digest") == pb.get("digest"):
        raise UsageError(
            f"{labels[0]} and {labels[1]} are the same snapshot: {first} and {second} have the same "
            "records digest."
        )
    return a, b, warnings_a + warnings_b


def _pairs(pairs: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for pair in pairs:
        left, sep, right = pair.partition("=")
        if not sep or not left or not right:
            raise UsageError(f"--pair {pair!r} is not of the form A=B (a container of A, one of B).")
        out.append((left, right))
    return out


def compare(a: str, b: str, *, pairs: Sequence[str] = ()) -> _compare.Comparison:
    """What differs between snapshots A and B: images, image layers and containers, by content address.

    *pairs*: ``"A=B"`` strings pairing a container of A with one of B (name,
    id or id prefix); the other containers are matched by name. Warnings
    (an incomplete snapshot, a container whose chain is broken) are in
    ``.problems``.
    """
    from forensics.analyze import compare as _compare

    first, second, warnings = _open_two(a, b, ("A", "B"))
    result = _compare.compare(first, second, _pairs(pairs))
    result.problems[:0] = warnings
    return result


def load_policy(path: str | None) -> _drift.Policy:
    """A drift policy file (docs/policy.md), or the built-in policy when *path* is None."""
    from forensics.analyze import drift as _drift

    if path is None:
        return _drift.Policy()
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise PolicyError(f"policy file {path} does not exist.") from None
    except IsADirectoryError:
        raise PolicyError(f"policy file {path} is a directory.") from None
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc.strerror}.") from None
    return _drift.parse_policy(data, path)


def drift(
    baseline: str,
    current: str | None = None,
    *,
    no_baseline: bool = False,
    ignore: Sequence[str] = (),
    policy: str | None = None,
) -> _drift.DriftReport:
    """The drift gate: CURRENT against BASELINE, or (``no_baseline``) each container against its image.

    ``report.drifted`` is the verdict (any failure); ``report.findings`` the
    failures and warnings; ``report.problems`` the warnings to show.
    """
    from forensics.analyze import compare as _compare
    from forensics.analyze import drift as _drift

    rules_ = load_policy(policy)
    if no_baseline:
        if current is not None:
            raise UsageError("--no-baseline checks one snapshot; give only CURRENT.")
        analysis, warnings = open_analysis(baseline)
        result = diff(analysis, None)
        raw = _drift.findings_from_changes(result.reports)
        names = [c.name or c.id for c in analysis.containers]
        side = _compare.side_of(analysis)
        return _drift.drift_report(
            "no-baseline", None, side, raw, names, rules_, ignore, [*warnings, *result.problems]
        )
    if current is None:
        raise UsageError("drift needs BASELINE and CURRENT, or --no-baseline with one snapshot.")
    first, second, warnings = _open_two(baseline, current, ("the baseline", "the current snapshot"))
    comparison = _compare.compare(first, second)
    raw = _drift.findings_from_comparison(comparison)
    names = [c.name or c.id for c in (*first.containers, *second.containers)]
    return _drift.drift_report(
        "baseline",
        comparison.a,
        comparison.b,
        raw,
        names,
        rules_,
        ignore,
        [*warnings, *comparison.problems],
    )


__all__ += ["compare", "drift", "load_policy"]


# -- audit ----------------------------------------------------------------------------


def audit(analysis: Analysis) -> AuditReport:
    """Evidence-integrity findings: image layer checks, mount table, structure and upperdirs."""
    from forensics.analyze import audit as _audit

    return _audit.audit(analysis)


__all__ += ["audit"]
