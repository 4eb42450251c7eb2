"""Evidence-integrity audit: findings from what a snapshot holds, offline.

Four sources of findings, each a pure function of records:

- :func:`layer_audit`: the layer checks made at collection (``layer_checks``,
  ``layer_findings``): image layers that differ from the tar the engine recorded;
- :func:`mount_audit`: the host mount table against the containers and their
  ``lower`` files;
- :func:`structure_audit`: orphan layers and ``l/`` links to nowhere;
- :func:`upper_audit`: what each container's upperdir added that deserves a look
  (setuid bits, capabilities, executables, hidden paths, literal ``.wh.`` files,
  whiteouts of nothing), from the same change reports as ``o2f diff``.

:func:`audit` runs them all. Severities: ``critical`` for evidence that the
storage was changed behind the engine's back (image layers, mounts), ``warning``
for what needs an examiner's look, ``info`` for what could not be checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from forensics.analyze.containers import Analysis, ContainerViews
from forensics.analyze.diff import forensic_changes
from forensics.errors import ChainError
from forensics.model import (
    AuditFinding,
    AuditKind,
    ChangeKind,
    Container,
    Entry,
    Image,
    Kind,
    Layer,
    LayerCheck,
    LayerFinding,
    LayerFindingKind,
    LayerRole,
    LayerVerdict,
    Mount,
    Severity,
    ancestors,
    base_name,
    display_path,
    executable_format,
    path_sort_key,
)

OVERLAY_TYPES = frozenset({"overlay", "fuse.fuse-overlayfs"})
RUNNING_STATES = frozenset({"running", "paused", "restarting"})
CAPABILITY_XATTR = "security.capability"
_LITERAL_WH = b".wh."
_LITERAL_OPQ = b".wh..wh..opq"
ENGINE_FILES = frozenset({b"/.dockerenv", b"/run/.containerenv"})
"""Marker files engines create in a container's root (podman's lands in the upperdir): not user changes."""
_KIND_ORDER = {kind: index for index, kind in enumerate(AuditKind)}
_LAYER_KIND = {
    LayerFindingKind.CONTENT: AuditKind.LAYER_TAMPERED,
    LayerFindingKind.METADATA: AuditKind.LAYER_METADATA_CHANGED,
    LayerFindingKind.ADDED: AuditKind.LAYER_FILE_ADDED,
    LayerFindingKind.MISSING: AuditKind.LAYER_FILE_MISSING,
}


@dataclass(frozen=True)
class AuditReport:
    """Every finding, sorted (most severe first), the layer checks, and what could not be analysed."""

    findings: list[AuditFinding]
    checks: list[LayerCheck]
    layers_checked: bool  # False when the capture skipped layer verification (--no-verify-layers)
    problems: list[str]

    @property
    def failed(self) -> bool:
        """The gate: anything of warning level or above."""
        return any(f.severity.rank >= Severity.WARNING.rank for f in self.findings)

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in reversed(Severity)}
        for finding in self.findings:
            out[finding.severity.value] += 1
        return out


def audit(analysis: Analysis) -> AuditReport:
    """Every check, on one snapshot opened for analysis."""
    snapshot = analysis.snapshot
    layers = analysis.layers
    containers = analysis.containers
    checks = snapshot.layer_checks()
    options = snapshot.provenance.get("options") or {}
    checked = bool(checks) or bool(isinstance(options, dict) and options.get("verify_layers"))
    findings = layer_audit(layers, checks, snapshot.layer_findings(), containers, analysis.images, checked)
    findings += mount_audit(snapshot.mounts(), layers, snapshot.links(), containers)
    findings += structure_audit(layers, snapshot.links())
    problems: list[str] = []
    analysis.prepare(containers)
    for container in containers:
        try:
            views = analysis.container_views(container)
        except ChainError as exc:
            problems.append(f"{exc} Its upperdir was not audited.")
            continue
        findings += upper_audit(container, views)
    return AuditReport(sort_findings(findings), checks, checked, problems)


def sort_findings(findings: Iterable[AuditFinding]) -> list[AuditFinding]:
    """Most severe first, then by kind (in the documented order), container, layer and path."""
    return sorted(
        findings,
        key=lambda f: (
            -f.severity.rank,
            _KIND_ORDER[f.kind],
            f.container or "",
            f.layer or "",
            path_sort_key(f.path or b""),
        ),
    )


# -- image layers --------------------------------------------------------------------------------


def layer_audit(
    layers: dict[str, Layer],
    checks: Sequence[LayerCheck],
    rows: Sequence[LayerFinding],
    containers: Sequence[Container],
    images: Sequence[Image],
    checked: bool = True,
) -> list[AuditFinding]:
    """Findings from the layer checks made at collection.

    A snapshot collected with ``--no-verify-layers`` has no checks: every image
    layer is then reported ``layer-unverifiable`` (info), "not checked".
    """
    users = _layer_users(containers, images)
    out: list[AuditFinding] = []
    if not checks:
        for layer in sorted(layers.values(), key=lambda item: item.id):
            if layer.role is LayerRole.IMAGE:
                why = "collected with --no-verify-layers" if not checked else "no check was recorded"
                out.append(
                    AuditFinding(
                        AuditKind.LAYER_UNVERIFIABLE,
                        Severity.INFO,
                        f"image layer not checked against the engine's records ({why})",
                        layer=layer.id,
                        evidence={"verdict": None, **users.get(layer.id, {})},
                    )
                )
        return out
    for check in checks:
        used = users.get(check.layer_id, {})
        evidence: dict[str, object] = {"verdict": check.verdict.value, "method": check.method, **used}
        if check.verdict is LayerVerdict.UNVERIFIABLE or check.verdict is LayerVerdict.ERROR:
            error = check.verdict is LayerVerdict.ERROR
            out.append(
                AuditFinding(
                    AuditKind.LAYER_UNVERIFIABLE,
                    Severity.WARNING if error else Severity.INFO,
                    ("the layer check failed: " if error else "cannot be verified: ") + (check.detail or ""),
                    layer=check.layer_id,
                    evidence=evidence,
                )
            )
        mismatch = check.computed_diff_id is not None and check.computed_diff_id != check.diff_id
        if mismatch:
            out.append(
                AuditFinding(
                    AuditKind.LAYER_TAMPERED,
                    Severity.CRITICAL,
                    f"the layer tar rebuilt from diff/ hashes to {check.computed_diff_id}, "
                    f"not to its diff id {check.diff_id} ({check.findings} files differ)",
                    layer=check.layer_id,
                    evidence={
                        **evidence,
                        "diff_id": check.diff_id,
                        "computed_diff_id": check.computed_diff_id,
                    },
                )
            )
    for row in rows:
        used = users.get(row.layer_id, {})
        out.append(
            AuditFinding(
                _LAYER_KIND[row.kind],
                Severity.CRITICAL,
                layer_finding_sentence(row),
                path=row.path,
                layer=row.layer_id,
                evidence={"differs": row.detail, **used},
            )
        )
    return out


def layer_finding_sentence(row: LayerFinding) -> str:
    """One sentence for a layer finding: what the tar recorded and what the disk holds."""
    detail = row.detail
    if row.kind is LayerFindingKind.ADDED:
        kind = _found(detail.get("type")) or "entry"
        extra = []
        if _found(detail.get("mode")) is not None:
            extra.append(f"mode {_found(detail.get('mode'))}")
        if _found(detail.get("size")) is not None:
            extra.append(f"{_found(detail.get('size'))} bytes")
        suffix = f" ({', '.join(extra)})" if extra else ""
        return f"a {kind} on disk that the layer tar does not list{suffix}"
    if row.kind is LayerFindingKind.MISSING:
        recorded = _recorded(detail.get("type")) or _recorded(detail.get("name")) or "entry"
        return f"the layer tar lists a {recorded} that is not on disk"
    prefix = "content differs from" if row.kind is LayerFindingKind.CONTENT else "metadata differs from"
    return f"{prefix} the layer tar: " + "; ".join(_field_change(k, v) for k, v in detail.items())


def _field_change(name: str, value: object) -> str:
    if not (isinstance(value, list) and len(value) == 2):
        return f"{name} {value}"
    recorded, found = value
    if name == "mtime_ns":
        return f"mtime {_time(recorded)} -> {_time(found)}"
    if name == "crc64":
        return f"CRC-64 {recorded} -> {found}"
    if name == "xattrs" and isinstance(recorded, dict) and isinstance(found, dict):
        names = ", ".join(sorted(set(recorded) | set(found)))
        return f"xattrs {names}: {_xattr_values(recorded)} -> {_xattr_values(found)}"
    return f"{name} {_plain(recorded)} -> {_plain(found)}"


def _plain(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _xattr_values(values: dict[str, object]) -> str:
    return ", ".join(f"{k}={'(none)' if v is None else v}" for k, v in sorted(values.items()))


def _time(value: object) -> str:
    if not isinstance(value, int):
        return str(value)
    stamp = datetime.fromtimestamp(value // 10**9, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = value % 10**9
    return f"{stamp}{f'.{fraction:09d}' if fraction else ''}Z"


def _recorded(value: object) -> object:
    return value[0] if isinstance(value, list) and value else None


def _found(value: object) -> object:
    return value[1] if isinstance(value, list) and len(value) == 2 else None


def _layer_users(containers: Sequence[Container], images: Sequence[Image]) -> dict[str, dict[str, list[str]]]:
    """Per layer: the tagged images and the containers built on it (a layer change reaches them all)."""
    out: dict[str, dict[str, list[str]]] = {}
    for image in images:
        if not image.tags:
            continue  # a builder's untagged intermediate: its tagged descendants name the layer
        name = image.tags[0]
        for layer_id in image.layers:
            names = out.setdefault(layer_id, {"images": [], "containers": []})["images"]
            if name not in names:
                names.append(name)
    for container in containers:
        for layer_id in container.chain:
            out.setdefault(layer_id, {"images": [], "containers": []})["containers"].append(
                container.name or container.id
            )
    return out


# -- the mount table ------------------------------------------------------------------------------


def layer_of_dir(
    path: bytes,
    layer_ids: set[str],
    by_link: dict[str, str | None],
    by_diff: dict[tuple[bytes, ...], str] | None = None,
) -> str | None:
    """The layer an overlay option names: ``.../overlay2/l/<short>``, ``l/<short>`` or ``.../<id>/diff``,
    or (*by_diff*: a layer's ``diff_path`` as components) any path ending with a layer's ``diff_path``
    (``.../snapshots/<id>/fs``)."""
    parts = [p for p in path.split(b"/") if p]
    if len(parts) >= 2 and parts[-2] == b"l":
        return by_link.get(parts[-1].decode("utf-8", "surrogateescape"))
    if len(parts) >= 2 and parts[-1] == b"diff":
        candidate = parts[-2].decode("utf-8", "surrogateescape")
        return candidate if candidate in layer_ids else None
    for length in sorted({len(key) for key in by_diff or ()}, reverse=True):
        found = (by_diff or {}).get(tuple(parts[-length:]))
        if found is not None and len(parts) >= length:
            return found
    return None


def diff_dirs(layers: dict[str, Layer]) -> tuple[dict[tuple[bytes, ...], str], set[tuple[bytes | None, ...]]]:
    """Each layer's ``diff_path`` as components (for :func:`layer_of_dir`), and the shapes of those
    paths with the layer id left open (``(b"overlay2", None, b"diff")``), for paths of no known layer."""
    by_diff: dict[tuple[bytes, ...], str] = {}
    shapes: set[tuple[bytes | None, ...]] = set()
    for layer in layers.values():
        parts = tuple(p for p in layer.diff_path.split(b"/") if p)
        if not parts:
            continue
        by_diff[parts] = layer.id
        own = layer.id.encode("utf-8", "surrogateescape")
        shapes.add(tuple(None if p == own else p for p in parts))
    return by_diff, shapes


def _shaped_like(path: bytes, shapes: set[tuple[bytes | None, ...]]) -> bool:
    parts = [p for p in path.split(b"/") if p]
    for shape in shapes:
        if None in shape and len(parts) >= len(shape):
            tail = parts[-len(shape) :]
            if all(want is None or want == got for want, got in zip(shape, tail, strict=True)):
                return True
    return False


def _short(layer_id: str) -> str:
    return layer_id[:12] + ("-init" if layer_id.endswith("-init") else "")


def _unresolved(path: bytes) -> str:
    """A lowerdir that names no layer, as its last two components (``l/ZZZ...``, ``<id>/diff``)."""
    return display_path(b"/".join(path.rstrip(b"/").split(b"/")[-2:])) + " (no such layer)"


def _layer_shaped(path: bytes) -> bool:
    """A directory of an overlay2 store, known to the snapshot or not."""
    parts = [p for p in path.split(b"/") if p]
    if len(parts) >= 2 and parts[-2] == b"l":
        return len(parts) == 2 or (len(parts) >= 3 and parts[-3] in (b"overlay2", b"overlay"))
    return len(parts) >= 3 and parts[-1] == b"diff" and parts[-3] in (b"overlay2", b"overlay")


def mount_audit(
    mounts: Sequence[Mount],
    layers: dict[str, Layer],
    links: Sequence[tuple[str, bytes, str | None]],
    containers: Sequence[Container],
) -> list[AuditFinding]:
    """Overlay mounts against the containers: rogue mounts, lower mismatches, running containers unmounted.

    Only overlay mounts that touch an overlay2 store (a layer of this snapshot,
    or a path shaped like ``.../overlay2/<id>/diff`` or ``.../overlay2/l/<short>``)
    are judged; other overlays of the host (a live system's root) are not.
    Nothing is reported when the snapshot has no mount table.
    """
    if not mounts:
        return []
    layer_ids = set(layers)
    by_link = {name: layer for name, _target, layer in links}
    by_diff, shapes = diff_dirs(layers)
    by_upper = {c.upper_layer: c for c in containers if c.upper_layer}
    mounted: set[str] = set()
    out: list[AuditFinding] = []
    for mount in mounts:
        if mount.fs_type not in OVERLAY_TYPES:
            continue
        upper = layer_of_dir(mount.upperdir, layer_ids, by_link, by_diff) if mount.upperdir else None
        lowers = [layer_of_dir(d, layer_ids, by_link, by_diff) for d in mount.lowerdirs]
        dirs = [d for d in (mount.upperdir, *mount.lowerdirs) if d]
        related = (
            upper is not None or any(lowers) or any(_layer_shaped(d) or _shaped_like(d, shapes) for d in dirs)
        )
        if not related:
            continue
        point = display_path(mount.mount_point)
        evidence: dict[str, object] = {
            "mount_point": point,
            "upperdir": None if mount.upperdir is None else display_path(mount.upperdir),
            "lowerdirs": [display_path(d) for d in mount.lowerdirs],
            "lower_layers": lowers,
            "line": mount.line,
        }
        container = by_upper.get(upper) if upper else None
        if container is None:
            if upper is not None:
                role = layers[upper].role.value
                why = f"its upperdir is layer {upper[:12]} ({role}), which no container of the snapshot uses"
            elif mount.upperdir:
                why = f"its upperdir {display_path(mount.upperdir)} is no layer of the snapshot"
            else:
                why = "a read-only overlay of layers of this store that no container uses"
            out.append(
                AuditFinding(
                    AuditKind.ROGUE_MOUNT,
                    Severity.CRITICAL,
                    f"an overlay mount that matches no container: {why}",
                    path=mount.mount_point,
                    layer=upper,
                    evidence=evidence,
                )
            )
            continue
        mounted.add(container.id)
        if tuple(lowers) != tuple(container.chain):
            shown = [
                _short(lid) if lid else _unresolved(d) for lid, d in zip(lowers, mount.lowerdirs, strict=True)
            ]
            expected = [_short(lid) for lid in container.chain]
            out.append(
                AuditFinding(
                    AuditKind.MOUNT_LOWER_MISMATCH,
                    Severity.CRITICAL,
                    f"the mount stacks lowerdirs {', '.join(shown) or 'none'}; "
                    f"the lower file of its upperdir says {', '.join(expected) or 'none'}",
                    path=mount.mount_point,
                    layer=container.upper_layer,
                    container=container.name or container.id,
                    container_id=container.id,
                    evidence={**evidence, "expected_layers": list(container.chain)},
                )
            )
    for container in containers:
        if container.state in RUNNING_STATES and container.id not in mounted:
            out.append(
                AuditFinding(
                    AuditKind.RUNNING_WITHOUT_MOUNT,
                    Severity.WARNING,
                    f"the engine says the container is {container.state}, "
                    "but the mount table has no overlay mount of its upperdir",
                    layer=container.upper_layer,
                    container=container.name or container.id,
                    container_id=container.id,
                    evidence={"state": container.state},
                )
            )
    return out


# -- structure ---------------------------------------------------------------------------------------


def structure_audit(
    layers: dict[str, Layer], links: Sequence[tuple[str, bytes, str | None]]
) -> list[AuditFinding]:
    """Layers nothing uses, and ``l/`` short names pointing at no layer."""
    out: list[AuditFinding] = []
    for layer in sorted(layers.values(), key=lambda item: item.id):
        if layer.role is LayerRole.ORPHAN:
            out.append(
                AuditFinding(
                    AuditKind.ORPHAN_LAYER,
                    Severity.WARNING,
                    "a layer directory that no image, container or layer chain references",
                    layer=layer.id,
                    evidence={"link": layer.link, "has_diff": layer.has_diff},
                )
            )
    for name, target, layer_id in links:
        if layer_id is None or layer_id not in layers:
            where = "no layer directory" if layer_id is None else f"layer {layer_id}, which does not exist"
            out.append(
                AuditFinding(
                    AuditKind.DANGLING_LINK,
                    Severity.WARNING,
                    f"l/{name} -> {display_path(target)} points at {where}",
                    path=b"l/" + name.encode("utf-8", "surrogateescape"),
                    layer=layer_id,
                    evidence={"name": name, "target": display_path(target)},
                )
            )
    return out


# -- container upperdirs -----------------------------------------------------------------------------


def upper_audit(container: Container, views: ContainerViews) -> list[AuditFinding]:
    """What one container's upperdir did that deserves a look."""
    owner = container.name or container.id
    upper = views.stack.upper
    out: list[AuditFinding] = []

    def add(kind: AuditKind, severity: Severity, path: bytes, detail: str, **evidence: object) -> None:
        out.append(AuditFinding(kind, severity, detail, path, upper, owner, container.id, dict(evidence)))

    for entry in views.upper_entries:
        leaf = base_name(entry.path)
        if entry.kind is Kind.FILE and leaf.startswith(_LITERAL_WH):
            if leaf == _LITERAL_OPQ:
                effect = "mark its directory opaque, hiding everything the image has below it"
            else:
                effect = f"turn it into a deletion of {display_path(leaf[len(_LITERAL_WH) :])}"
            add(
                AuditKind.LITERAL_WH_FILE,
                Severity.WARNING,
                entry.path,
                f"a regular file named .wh.*: `docker commit` would {effect}",
                mode=f"{entry.mode:04o}",
                size=entry.size,
            )
    changes = forensic_changes(container, views)
    hidden: set[bytes] = set()
    for change in changes:
        if change.kind is ChangeKind.WHITEOUT_OF_NOTHING:
            add(
                AuditKind.WHITEOUT_OF_NOTHING,
                Severity.WARNING,
                change.path,
                "a whiteout in the upperdir hides nothing in the image (the kernel makes one only "
                "for a name that existed below: planted, or the image layer lost the file)",
            )
            continue
        entry = change.entry
        if change.kind not in (ChangeKind.ADDED, ChangeKind.MODIFIED) or entry is None:
            continue
        lower = change.lower
        if change.kind is ChangeKind.ADDED and base_name(change.path).startswith(b"."):
            is_wh = base_name(change.path).startswith(_LITERAL_WH) and entry.kind is Kind.FILE
            engine = change.path in ENGINE_FILES
            if not is_wh and not engine and not any(a in hidden for a in ancestors(change.path)):
                hidden.add(change.path)
                add(
                    AuditKind.HIDDEN_PATH_ADDED,
                    Severity.INFO,
                    change.path,
                    f"a hidden {entry.kind.value} added by the upperdir",
                    type=entry.kind.value,
                )
        if entry.kind is not Kind.FILE:
            continue
        out.extend(_file_findings(container, upper, change.path, entry, lower))
    return out


def _runnable_by(entry: Entry) -> str:
    """What makes a file runnable: "mode bits", "ELF magic", "#! line", both joined, or "" for nothing."""
    reasons = ["mode bits"] if entry.mode & 0o111 else []
    magic = executable_format(entry)
    if magic is not None:
        reasons.append(magic)
    return " and ".join(reasons)


def _file_findings(
    container: Container, upper: str, path: bytes, entry: Entry, lower: Entry | None
) -> list[AuditFinding]:
    name = container.name or container.id
    found: list[AuditFinding] = []
    was_file = lower is not None and lower.kind is Kind.FILE
    before = lower.mode if lower is not None and was_file else 0
    new_bits = entry.mode & 0o6000 & ~before
    if new_bits:
        which = " and ".join(b for bit, b in ((0o4000, "setuid"), (0o2000, "setgid")) if new_bits & bit)
        how = f"mode {before:04o} -> {entry.mode:04o}" if was_file else f"added with mode {entry.mode:04o}"
        critical = bool(new_bits & 0o4000) and entry.uid == 0
        found.append(
            AuditFinding(
                AuditKind.SETUID_ADDED,
                Severity.CRITICAL if critical else Severity.WARNING,
                f"{which} bit added ({how}, owner {entry.uid}:{entry.gid})",
                path,
                upper,
                name,
                container.id,
                {
                    "mode": f"{entry.mode:04o}",
                    "lower_mode": f"{before:04o}" if was_file else None,
                    "uid": entry.uid,
                },
            )
        )
    capability = entry.xattr(CAPABILITY_XATTR)
    if capability is not None and (lower is None or lower.xattr(CAPABILITY_XATTR) != capability):
        found.append(
            AuditFinding(
                AuditKind.CAPABILITY_ADDED,
                Severity.WARNING,
                "file capabilities set (security.capability)"
                if lower is None or lower.xattr(CAPABILITY_XATTR) is None
                else "file capabilities changed (security.capability)",
                path,
                upper,
                name,
                container.id,
                {"security.capability": capability.hex()},
            )
        )
    judged_by = _runnable_by(entry)
    if judged_by and entry.size and not (was_file and lower is not None and _runnable_by(lower)):
        how = "became executable" if was_file else "an executable file added"
        found.append(
            AuditFinding(
                AuditKind.EXECUTABLE_ADDED,
                Severity.WARNING,
                f"{how} (mode {entry.mode:04o}, {entry.size} bytes, by {judged_by})",
                path,
                upper,
                name,
                container.id,
                {
                    "mode": f"{entry.mode:04o}",
                    "size": entry.size,
                    "blake3": entry.blake3,
                    "judged_by": judged_by,
                },
            )
        )
    return found
