"""Two snapshots compared by content address: images, image layers and containers (pure).

Nothing a host makes up for itself is trusted to match. overlay2 cache ids,
``l/`` link names, mount ids and container ids are random per host, so two
hosts that pulled the same image share none of them. What they do share:

- images, matched by image id (the sha256 of the image config);
- image layers, matched by chain id through each snapshot's ``image_layers``
  table (Docker's layerdb), with the diff id checked as well;
- containers, matched by name, or by explicit pairs.

For each image layer both sides hold, every entry is compared path by path
(content by BLAKE3; metadata: type, mode, owner, mtime, xattrs, symlink target,
device numbers, hardlink partners). The same layer must be identical
everywhere, so any difference is corruption or tampering. The layer root
(``diff/`` itself) is left out: no layer tar carries it, so the engine creates
it at extraction and its metadata belongs to the host.

For each matched container, the two merged views are compared (``/`` left
out, as in ``o2f diff``), and so are the two upperdirs' change reports. A view
difference is labelled with its origin: ``upper`` when either upperdir touched
or hid the path, ``init`` when the ``-init`` layer provides it, else ``image``.
An ``image`` difference under a changed path of a layer both containers use
is *explained* by that layer (``explained_by``): it is one fact, reported once
at the layer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from forensics.analyze.containers import Analysis
from forensics.analyze.diff import forensic_changes
from forensics.errors import ChainError, UsageError
from forensics.model import (
    Change,
    Container,
    Entry,
    Image,
    ImageLayer,
    Kind,
    ancestors,
    path_sort_key,
)
from forensics.overlay.classify import DETAIL_ORDER, forensic_details
from forensics.overlay.merge import View

ONLY_IN_A = "only-in-a"
ONLY_IN_B = "only-in-b"
CONTENT = "content"
METADATA = "metadata"
DIFFERS = "differs"

ORIGINS = ("upper", "init", "image")


# -- records -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """Where one compared snapshot came from (its provenance, for the report header)."""

    path: str
    digest: str | None
    host: str | None
    source: str | None
    started_utc: str | None
    schema_version: int | None
    complete: bool


@dataclass(frozen=True)
class PathDiff:
    """One path that differs between two layers or two merged views.

    ``kind``: ``only-in-a``, ``only-in-b``, ``content`` (a regular file's BLAKE3
    or size) or ``metadata`` (everything else: ``details`` says what).
    """

    path: bytes
    kind: str
    details: tuple[str, ...] = ()
    a: Entry | None = None
    b: Entry | None = None
    origin: str = ""  # container views only: upper, init or image
    explained_by: str | None = None  # chain id of the image layer difference behind it


@dataclass(frozen=True)
class LayerDiff:
    """An image layer both snapshots hold (same chain id) whose content or records differ."""

    chain_id: str
    diff_id_a: str | None
    diff_id_b: str | None
    layer_a: str | None
    layer_b: str | None
    images: tuple[str, ...]  # image names (first tag or short id), both sides; tagged ones first
    containers: tuple[str, ...]  # container names, both sides
    paths: list[PathDiff] = field(default_factory=list)
    problem: str | None = None  # e.g. a diff id mismatch, or a layer without storage


@dataclass(frozen=True)
class ChangeDiff:
    """One path whose entry in the two upperdirs' change reports differs."""

    path: bytes
    kind: str  # only-in-a, only-in-b, differs
    a: Change | None = None
    b: Change | None = None


@dataclass(frozen=True)
class ContainerPair:
    a: Container
    b: Container
    view: list[PathDiff] = field(default_factory=list)
    changes: list[ChangeDiff] = field(default_factory=list)
    problem_a: str | None = None
    problem_b: str | None = None

    @property
    def image_changed(self) -> bool:
        return self.a.image_id != self.b.image_id

    @property
    def unexplained(self) -> list[PathDiff]:
        return [d for d in self.view if d.explained_by is None]

    @property
    def changed(self) -> bool:
        return bool(
            self.image_changed or self.unexplained or self.changes or self.problem_a or self.problem_b
        )


@dataclass
class Comparison:
    a: Side
    b: Side
    images_only_a: list[Image] = field(default_factory=list)
    images_only_b: list[Image] = field(default_factory=list)
    images_shared: int = 0
    layers_only_a: list[ImageLayer] = field(default_factory=list)
    layers_only_b: list[ImageLayer] = field(default_factory=list)
    layers_shared: int = 0
    layer_diffs: list[LayerDiff] = field(default_factory=list)
    containers_only_a: list[Container] = field(default_factory=list)
    containers_only_b: list[Container] = field(default_factory=list)
    pairs: list[ContainerPair] = field(default_factory=list)
    image_names: dict[str, str] = field(default_factory=dict)  # image id -> name, both sides
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, int]]:
        """Counts per kind of difference (the first thing every format prints)."""
        view: dict[str, int] = {ONLY_IN_A: 0, ONLY_IN_B: 0, CONTENT: 0, METADATA: 0}
        explained = 0
        changes: dict[str, int] = {ONLY_IN_A: 0, ONLY_IN_B: 0, DIFFERS: 0}
        for pair in self.pairs:
            for d in pair.view:
                if d.explained_by is None:
                    view[d.kind] += 1
                else:
                    explained += 1
            for c in pair.changes:
                changes[c.kind] += 1
        layer_paths: dict[str, int] = {ONLY_IN_A: 0, ONLY_IN_B: 0, CONTENT: 0, METADATA: 0}
        for layer in self.layer_diffs:
            for d in layer.paths:
                layer_paths[d.kind] += 1
        return {
            "images": {
                "shared": self.images_shared,
                "only_in_a": len(self.images_only_a),
                "only_in_b": len(self.images_only_b),
            },
            "layers": {
                "shared": self.layers_shared,
                "only_in_a": len(self.layers_only_a),
                "only_in_b": len(self.layers_only_b),
                "changed": len(self.layer_diffs),
            },
            "layer_paths": {k.replace("-", "_"): v for k, v in layer_paths.items()},
            "containers": {
                "matched": len(self.pairs),
                "only_in_a": len(self.containers_only_a),
                "only_in_b": len(self.containers_only_b),
                "changed": sum(1 for p in self.pairs if p.changed),
                "image_changed": sum(1 for p in self.pairs if p.image_changed),
            },
            "container_paths": {
                **{k.replace("-", "_"): v for k, v in view.items()},
                "explained_by_layers": explained,
            },
            "change_reports": {k.replace("-", "_"): v for k, v in changes.items()},
        }


# -- entries -------------------------------------------------------------------------------


def _signature(e: Entry) -> tuple[object, ...]:
    return (
        e.kind,
        e.mode,
        e.uid,
        e.gid,
        e.mtime_ns,
        e.size if e.kind is Kind.FILE else None,
        e.blake3,
        e.target,
        e.rdev_major,
        e.rdev_minor,
        e.xattrs,
    )


def _groups(entries: Iterable[Entry]) -> dict[int, set[bytes]]:
    out: dict[int, set[bytes]] = defaultdict(set)
    for entry in entries:
        if entry.link_group is not None:
            out[entry.link_group].add(entry.path)
    return out


def _partners(entry: Entry, groups: dict[int, set[bytes]]) -> frozenset[bytes]:
    if entry.link_group is None:
        return frozenset()
    return frozenset(groups.get(entry.link_group, ()) - {entry.path})


def _order(details: Iterable[str]) -> tuple[str, ...]:
    found = set(details)
    return tuple(d for d in DETAIL_ORDER if d in found)


def compare_entries(
    a: dict[bytes, Entry],
    b: dict[bytes, Entry],
    groups_a: dict[int, set[bytes]],
    groups_b: dict[int, set[bytes]],
) -> list[PathDiff]:
    """Every path (but ``/``) whose entry differs between two path->entry maps, in path order."""
    out: list[PathDiff] = []
    for path, ea in a.items():
        if path == b"/":
            continue
        eb = b.get(path)
        if eb is None:
            out.append(PathDiff(path, ONLY_IN_A, a=ea))
            continue
        same = _signature(ea) == _signature(eb)
        partners_differ = (ea.link_group is not None or eb.link_group is not None) and _partners(
            ea, groups_a
        ) != _partners(eb, groups_b)
        if same and not partners_differ:
            continue
        details = forensic_details(ea, eb) if not same else []
        if partners_differ:
            details.append("hardlink")
        kind = CONTENT if "content" in details else METADATA
        out.append(PathDiff(path, kind, _order(details), ea, eb))
    for path, eb in b.items():
        if path != b"/" and path not in a:
            out.append(PathDiff(path, ONLY_IN_B, b=eb))
    out.sort(key=lambda d: path_sort_key(d.path))
    return out


# -- naming ----------------------------------------------------------------------------------


def image_name(image: Image) -> str:
    return image.tags[0] if image.tags else image.id.removeprefix("sha256:")[:12]


def used_by(images: Sequence[str], containers: Sequence[str]) -> str:
    """``images a:1, b:2 (+3 untagged) and containers web, db``: who uses an image layer."""
    tagged = [name for name in images if ":" in name]
    untagged = len(images) - len(tagged)
    parts = []
    if images:
        parts.append(
            "images " + ", ".join(tagged) + (f" (+{untagged} untagged)" if untagged and tagged else "")
            if tagged
            else f"{untagged} untagged images"
        )
    if containers:
        parts.append("containers " + ", ".join(containers))
    return " and ".join(parts) or "nothing"


def container_name(container: Container) -> str:
    return container.name or container.id


def side_of(analysis: Analysis) -> Side:
    p = analysis.snapshot.provenance
    version = p.get("schema_version")
    return Side(
        path=analysis.snapshot.path,
        digest=None if p.get("digest") is None else str(p.get("digest")),
        host=None if p.get("host") is None else str(p.get("host")),
        source=None if p.get("source") is None else str(p.get("source")),
        started_utc=None if p.get("started_utc") is None else str(p.get("started_utc")),
        schema_version=version if isinstance(version, int) else None,
        complete=bool(p.get("complete")),
    )


def match_containers(
    a: Analysis, b: Analysis, pairs: Sequence[tuple[str, str]] = ()
) -> tuple[list[tuple[Container, Container]], list[Container], list[Container]]:
    """Explicit pairs first (name, id or id prefix on each side), then equal names."""
    matched: list[tuple[Container, Container]] = []
    used_a: set[str] = set()
    used_b: set[str] = set()
    for name_a, name_b in pairs:
        ca, cb = a.find_container(name_a), b.find_container(name_b)
        if ca.id in used_a or cb.id in used_b:
            raise UsageError(f"--pair {name_a}={name_b} names a container that is already paired.")
        used_a.add(ca.id)
        used_b.add(cb.id)
        matched.append((ca, cb))
    by_name_b: dict[str, list[Container]] = defaultdict(list)
    for cb in b.containers:
        if cb.id not in used_b:
            by_name_b[container_name(cb)].append(cb)
    only_a: list[Container] = []
    for ca in a.containers:
        if ca.id in used_a:
            continue
        candidates = by_name_b.get(container_name(ca))
        if candidates:
            cb = candidates.pop(0)
            used_b.add(cb.id)
            matched.append((ca, cb))
        else:
            only_a.append(ca)
    only_b = [cb for cb in b.containers if cb.id not in used_b]
    matched.sort(key=lambda p: (container_name(p[0]), p[0].id))
    return matched, only_a, only_b


# -- the comparison ----------------------------------------------------------------------------


class _Sides:
    """Per-snapshot lookups: layer id -> chain id, and which images and containers use a layer."""

    def __init__(self, analysis: Analysis) -> None:
        self.analysis = analysis
        self.image_layers = {il.chain_id: il for il in analysis.snapshot.image_layers()}
        self.chain_of = {il.layer_id: il.chain_id for il in self.image_layers.values() if il.layer_id}
        self.images_using: dict[str, list[str]] = defaultdict(list)
        for image in analysis.images:
            for layer_id in image.layers:
                self.images_using[layer_id].append(image_name(image))
        self.containers_using: dict[str, list[str]] = defaultdict(list)
        for container in analysis.containers:
            for layer_id in container.chain:
                self.containers_using[layer_id].append(container_name(container))

    def entries(self, layer_id: str | None) -> tuple[dict[bytes, Entry], dict[int, set[bytes]]] | None:
        layer = self.analysis.layers.get(layer_id or "")
        if layer is None or not layer.has_diff:
            return None
        entries = self.analysis.layer_entries(layer.id)
        return {e.path: e for e in entries}, _groups(entries)

    def image_chains(self, container: Container) -> list[str]:
        """Chain ids of the container's image layers, nearest first."""
        return [self.chain_of[layer_id] for layer_id in container.chain if layer_id in self.chain_of]


def compare(a: Analysis, b: Analysis, pairs: Sequence[tuple[str, str]] = ()) -> Comparison:
    """Everything that differs between snapshot A and snapshot B, matched by content address."""
    sa, sb = _Sides(a), _Sides(b)
    result = Comparison(side_of(a), side_of(b))
    for image in (*a.images, *b.images):
        result.image_names.setdefault(image.id, image_name(image))

    ids_a = {i.id: i for i in a.images}
    ids_b = {i.id: i for i in b.images}
    result.images_only_a = [ids_a[i] for i in sorted(set(ids_a) - set(ids_b))]
    result.images_only_b = [ids_b[i] for i in sorted(set(ids_b) - set(ids_a))]
    result.images_shared = len(set(ids_a) & set(ids_b))

    chains_a, chains_b = sa.image_layers, sb.image_layers
    result.layers_only_a = [chains_a[c] for c in sorted(set(chains_a) - set(chains_b))]
    result.layers_only_b = [chains_b[c] for c in sorted(set(chains_b) - set(chains_a))]
    shared = sorted(set(chains_a) & set(chains_b))
    result.layers_shared = len(shared)
    changed_paths: dict[str, set[bytes]] = {}
    for chain_id in shared:
        diff = _layer_diff(chain_id, sa, sb)
        if diff is not None:
            result.layer_diffs.append(diff)
            changed_paths[chain_id] = {d.path for d in diff.paths}

    matched, result.containers_only_a, result.containers_only_b = match_containers(a, b, pairs)
    # No Analysis.prepare: the full merged views are needed anyway, and the change reports reuse
    # their memoised baselines.
    for ca, cb in matched:
        result.pairs.append(_container_pair(ca, cb, sa, sb, changed_paths))
    for pair in result.pairs:
        for label, problem in (("A", pair.problem_a), ("B", pair.problem_b)):
            if problem:
                result.problems.append(f"{label}: {problem}")
    return result


def _layer_diff(chain_id: str, sa: _Sides, sb: _Sides) -> LayerDiff | None:
    la, lb = sa.image_layers[chain_id], sb.image_layers[chain_id]
    # tagged images first (a tag has a colon, a short id never), then untagged ones by short id
    images = tuple(
        sorted(
            {*sa.images_using.get(la.layer_id or "", ()), *sb.images_using.get(lb.layer_id or "", ())},
            key=lambda name: (":" not in name, name),
        )
    )
    containers = tuple(
        sorted(
            {*sa.containers_using.get(la.layer_id or "", ()), *sb.containers_using.get(lb.layer_id or "", ())}
        )
    )
    problems = []
    if la.diff_id != lb.diff_id:
        problems.append(f"the diff id differs ({la.diff_id} in A, {lb.diff_id} in B)")
    side_a, side_b = sa.entries(la.layer_id), sb.entries(lb.layer_id)
    for label, side, record in (("A", side_a, la), ("B", side_b, lb)):
        if side is None:
            problems.append(f"{label} has no stored layer {record.layer_id or '(no cache id)'} for it")
    paths: list[PathDiff] = []
    if side_a is not None and side_b is not None:
        paths = compare_entries(side_a[0], side_b[0], side_a[1], side_b[1])
    if not paths and not problems:
        return None
    problem = "; ".join(problems) + "." if problems else None
    if problem:
        problem = problem[0].upper() + problem[1:]
    return LayerDiff(
        chain_id, la.diff_id, lb.diff_id, la.layer_id, lb.layer_id, images, containers, paths, problem
    )


def _container_pair(
    ca: Container, cb: Container, sa: _Sides, sb: _Sides, changed_paths: dict[str, set[bytes]]
) -> ContainerPair:
    problem_a = problem_b = None
    view_a = view_b = None
    changes_a: list[Change] = []
    changes_b: list[Change] = []
    try:
        view_a = sa.analysis.container_view(ca)
        changes_a = forensic_changes(ca, sa.analysis.container_views(ca))
    except ChainError as exc:
        problem_a = str(exc)
    try:
        view_b = sb.analysis.container_view(cb)
        changes_b = forensic_changes(cb, sb.analysis.container_views(cb))
    except ChainError as exc:
        problem_b = str(exc)
    if view_a is None or view_b is None:
        return ContainerPair(ca, cb, [], [], problem_a, problem_b)

    reported = {c.path for c in changes_a} | {c.path for c in changes_b}
    common = [c for c in sa.image_chains(ca) if c in set(sb.image_chains(cb))]
    view = [
        _label(d, ca, cb, reported, common, changed_paths)
        for d in compare_entries(view_a.entries, view_b.entries, _view_groups(view_a), _view_groups(view_b))
    ]
    return ContainerPair(ca, cb, view, compare_changes(changes_a, changes_b), None, None)


def _view_groups(view: View) -> dict[int, set[bytes]]:
    return _groups(view.entries.values())


def _label(
    d: PathDiff,
    ca: Container,
    cb: Container,
    reported: set[bytes],
    common_chains: list[str],
    changed_paths: dict[str, set[bytes]],
) -> PathDiff:
    if d.path in reported:
        return replace(d, origin="upper")
    if (d.a is not None and d.a.layer_id == ca.init_layer) or (
        d.b is not None and d.b.layer_id == cb.init_layer
    ):
        return replace(d, origin="init")
    candidates = (d.path, *ancestors(d.path))
    for chain_id in common_chains:
        paths = changed_paths.get(chain_id)
        if paths and any(p in paths for p in candidates):
            return replace(d, origin="image", explained_by=chain_id)
    return replace(d, origin="image")


def _change_signature(change: Change) -> tuple[object, ...]:
    entry = change.entry
    upper = entry is not None and entry.layer_id == change.layer
    return (
        change.kind,
        change.details,
        change.via,
        _signature(entry) if upper and entry is not None else None,
    )


def compare_changes(a: Sequence[Change], b: Sequence[Change]) -> list[ChangeDiff]:
    """Paths whose change-report entry differs: in one report only, or another kind, details or entry."""
    by_a = {c.path: c for c in a}
    by_b = {c.path: c for c in b}
    out = []
    for path, change in by_a.items():
        other = by_b.get(path)
        if other is None:
            out.append(ChangeDiff(path, ONLY_IN_A, a=change))
        elif _change_signature(change) != _change_signature(other):
            out.append(ChangeDiff(path, DIFFERS, change, other))
    for path, change in by_b.items():
        if path not in by_a:
            out.append(ChangeDiff(path, ONLY_IN_B, b=change))
    out.sort(key=lambda d: path_sort_key(d.path))
    return out


__all__ = [
    "CONTENT",
    "DIFFERS",
    "METADATA",
    "ONLY_IN_A",
    "ONLY_IN_B",
    "ChangeDiff",
    "Comparison",
    "ContainerPair",
    "LayerDiff",
    "PathDiff",
    "Side",
    "compare",
    "compare_changes",
    "compare_entries",
    "match_containers",
]
