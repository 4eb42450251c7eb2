"""Reports built on container views: summaries, ls, trace, image history, timeline."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from forensics.analyze.containers import Analysis
from forensics.analyze.diff import forensic_changes, layer_changes
from forensics.errors import ChainError, NotFoundError
from forensics.model import Change, ChangeKind, Container, Entry, Image, Kind, Layer, base_name, path_sort_key
from forensics.overlay import rules
from forensics.overlay.trace import TraceStep, trace_path


@dataclass(frozen=True)
class ContainerSummary:
    container: Container
    image_name: str | None
    chain: tuple[str, ...]
    upper_size: int | None
    changes: int | None
    problem: str | None


@dataclass(frozen=True)
class LayerSummary:
    layer: Layer
    entries: int
    size: int
    used_by: tuple[str, ...]  # images (tags or short ids) and containers stacked on it


def layer_summaries(analysis: Analysis) -> list[LayerSummary]:
    """Every layer directory with its role; orphans (no chain, no engine record) included."""
    sizes = analysis.snapshot.layer_sizes()
    users: dict[str, set[str]] = {}
    names = _image_names(analysis)
    for image in analysis.images:
        for layer_id in image.layers:
            users.setdefault(layer_id, set()).add(names[image.id])
    for container in analysis.containers:
        for layer_id in (container.upper_layer, *container.chain):
            if layer_id:
                users.setdefault(layer_id, set()).add(container.name or container.id)
    return [
        LayerSummary(layer, *sizes.get(layer.id, (0, 0)), tuple(sorted(users.get(layer.id, ()))))
        for layer in analysis.layers.values()
    ]


@dataclass(frozen=True)
class ImageSummary:
    image: Image
    layers: tuple[str, ...]
    containers: tuple[str, ...]
    size: int


def _image_names(analysis: Analysis) -> dict[str, str]:
    return {i.id: (i.tags[0] if i.tags else i.id.removeprefix("sha256:")[:12]) for i in analysis.images}


def container_summaries(analysis: Analysis) -> list[ContainerSummary]:
    names = _image_names(analysis)
    out = []
    analysis.prepare(analysis.containers)
    for container in analysis.containers:
        problem = container.problem
        upper_size = changes = None
        chain: tuple[str, ...] = ()
        try:
            cv = analysis.container_views(container)
            chain = (cv.stack.upper, *cv.stack.baseline)
            upper_size = sum(e.size or 0 for e in cv.upper_entries if e.kind is Kind.FILE)
            changes = len(forensic_changes(container, cv))
        except ChainError as exc:
            problem = str(exc)
        out.append(
            ContainerSummary(
                container,
                names.get(container.image_id or "", container.image),
                chain,
                upper_size,
                changes,
                problem,
            )
        )
    return out


def image_summaries(analysis: Analysis) -> list[ImageSummary]:
    users: dict[str, list[str]] = {}
    for container in analysis.containers:
        if container.image_id:
            users.setdefault(container.image_id, []).append(container.name or container.id)
    out = []
    for image in analysis.images:
        size = 0
        for layer in image.layers:
            size += sum(e.size or 0 for e in analysis.layer_entries(layer) if e.kind is Kind.FILE)
        out.append(ImageSummary(image, image.layers, tuple(sorted(users.get(image.id, ()))), size))
    return out


def list_view(analysis: Analysis, container: Container, path: bytes = b"/") -> list[Entry]:
    """The merged view at and below *path*, in path order."""
    view = analysis.container_view(container)
    top = path.rstrip(b"/") or b"/"
    if top not in view:
        raise NotFoundError(
            f"{path.decode('utf-8', 'replace')} does not exist in container {container.name}."
        )
    return view.walk(top)


def trace(analysis: Analysis, container: Container, path: bytes) -> tuple[list[TraceStep], Entry | None]:
    stack = analysis.stack(container)
    layers = []
    for layer_id in (stack.upper, *stack.baseline):
        role = analysis.layers[layer_id].role.value
        entries = {e.path: e for e in analysis.layer_entries(layer_id)}
        layers.append((layer_id, role, entries))
    top = path.rstrip(b"/") or b"/"
    return trace_path(top, layers), analysis.container_view(container).get(top)


@dataclass(frozen=True)
class HistoryStep:
    layer_id: str
    diff_id: str | None
    created_by: str | None
    changes: list[Change] = field(default_factory=list)


def _history_commands(image: Image) -> list[str | None]:
    """created_by of each history step that made a layer, bottom to top."""
    try:
        history = json.loads(image.config_json or "{}").get("history") or []
    except ValueError:
        return []
    return [step.get("created_by") for step in history if not step.get("empty_layer")]


def history(analysis: Analysis, image: Image) -> list[HistoryStep]:
    """What each image layer added, modified and deleted relative to the layers below it."""
    commands = _history_commands(image)
    layers = image.layers
    out = []
    for index, layer_id in enumerate(layers):
        chain = tuple(reversed(layers[: index + 1]))
        delta = analysis.layer_delta(chain)
        command = commands[index] if index < len(commands) else None
        changes = layer_changes(image.id, layer_id[:12], layer_id, delta)
        if command:
            changes = [_mark_literal_whiteout(change, command) for change in changes]
        diff_id = image.diff_ids[index] if index < len(image.diff_ids) else None
        out.append(HistoryStep(layer_id, diff_id, command, changes))
    return out


def _mark_literal_whiteout(change: Change, command: str) -> Change:
    """A deletion whose `.wh.<name>` the build step wrote as a file (the engine made it a whiteout)."""
    if change.kind not in (ChangeKind.DELETED, ChangeKind.WHITEOUT_OF_NOTHING) or change.via != change.path:
        return change
    literal = (rules.TAR_WHITEOUT_PREFIX + base_name(change.path)).decode("utf-8", "surrogateescape")
    if literal in command:
        from dataclasses import replace

        return replace(change, details=(*change.details, "literal-wh-file"))
    return change


@dataclass(frozen=True)
class TimelineEvent:
    time_ns: int
    change: Change
    entry: Entry  # the upperdir entry whose timestamps date the change (the whiteout for a deletion)


def timeline(analysis: Analysis, containers: list[Container]) -> tuple[list[TimelineEvent], list[str]]:
    """Every upperdir change of every container, by time (mtime of the upper entry)."""
    events: list[TimelineEvent] = []
    problems: list[str] = []
    analysis.prepare(containers)
    for container in containers:
        try:
            cv = analysis.container_views(container)
        except ChainError as exc:
            problems.append(str(exc))
            continue
        upper = {e.path: e for e in cv.upper_entries}
        for change in forensic_changes(container, cv):
            dating = (
                change.entry if change.entry is not None and change.entry.layer_id == cv.stack.upper else None
            )
            if dating is None and change.via is not None:
                dating = upper.get(change.via)
            if dating is None:
                continue
            events.append(TimelineEvent(dating.mtime_ns or 0, change, dating))
    events.sort(key=lambda e: (e.time_ns, e.change.container_name, path_sort_key(e.change.path)))
    return events, problems
