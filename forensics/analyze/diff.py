"""Per-container change reports: o2f's forensic report and Docker's own `docker diff`.

Both start from the same facts: the baseline view (image + ``-init``), the
container's view (baseline + upperdir), and what the upperdir hid.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from forensics.analyze.containers import Analysis, ContainerViews, LayerDelta
from forensics.model import Change, ChangeKind, Container, Entry, Kind, ancestors, parent_path, path_sort_key
from forensics.overlay import rules
from forensics.overlay.classify import DETAIL_ORDER, docker_stat_different, forensic_details


def _groups(entries: Iterable[Entry]) -> dict[int, set[bytes]]:
    out: dict[int, set[bytes]] = defaultdict(set)
    for entry in entries:
        if entry.link_group is not None:
            out[entry.link_group].add(entry.path)
    return out


_RANK = {detail: rank for rank, detail in enumerate(DETAIL_ORDER)}


def _order(details: Iterable[str]) -> tuple[str, ...]:
    """Details once each, in the documented order (unknown ones are dropped)."""
    if not details:
        return ()
    return tuple(sorted({d for d in details if d in _RANK}, key=_RANK.__getitem__))


def forensic_changes(container: Container, cv: ContainerViews) -> list[Change]:
    """Every path the upperdir added, modified, copied up or hid, sorted by path."""
    return layer_changes(container.id, container.name or container.id, cv.stack.upper, cv)


def layer_changes(owner_id: str, owner_name: str, upper: str, cv: LayerDelta) -> list[Change]:
    """What one layer did to the view below it (a container's upperdir, or an image build step)."""
    view, baseline = cv.view, cv.baseline
    changes: list[Change] = []

    def change(path: bytes, kind: ChangeKind, details: Iterable[str] = (), **kw: object) -> None:
        changes.append(Change(owner_id, owner_name, path, kind, _order(details), layer=upper, **kw))  # type: ignore[arg-type]

    upper_groups = _groups(e for e in cv.upper_entries if not rules.is_whiteout(e))
    baseline_groups: dict[int, set[bytes]] | None = None
    touched: set[bytes] = set()
    broken_partners: set[bytes] = set()

    for raw in cv.upper_entries:
        path = raw.path
        if path == b"/" or rules.is_whiteout(raw):
            continue
        entry = view.get(path)
        if entry is None or entry.layer_id != upper:
            continue  # under a damaged parent: nothing the container can see
        touched.add(path)
        lower = baseline.get(path)
        opaque = raw.kind is Kind.DIR and bool(raw.xattrs) and rules.is_opaque(raw)
        if lower is None:
            change(path, ChangeKind.ADDED, ["opaque"] if opaque else [], entry=entry)
            continue
        details = forensic_details(lower, entry)
        if opaque:
            details.append("opaque")
        if entry.kind is Kind.FILE or lower.kind is Kind.FILE:
            old_partners: set[bytes] = set()
            if lower.link_group is not None:
                if baseline_groups is None:
                    baseline_groups = _groups(baseline.entries.values())
                old_partners = baseline_groups.get(lower.link_group, set()) - {path}
            new_partners = upper_groups.get(entry.link_group, set()) - {path} if entry.link_group else set()
            if old_partners != new_partners:
                details.append("hardlink")
                broken_partners.update(old_partners - new_partners)
        kind = ChangeKind.MODIFIED if [d for d in details if d != "hardlink"] else ChangeKind.COPIED_UP
        change(path, kind, details, entry=entry, lower=lower)

    # M4: children a redirected directory brought from its old lower path.
    for raw in cv.upper_entries:
        if raw.kind is Kind.DIR and raw.xattrs and rules.redirect_of(raw) is not None:
            for path in view.descendants(raw.path):
                entry = view.get(path)
                if entry is not None and entry.layer_id != upper and path not in baseline:
                    touched.add(path)
                    change(path, ChangeKind.ADDED, ["redirect"], entry=entry)

    # A deleted or renamed name of a lower hardlink pair leaves its partner alone too.
    removed = {removal.path for removal in cv.removals}
    for removal in cv.removals:
        lower = baseline.get(removal.path)
        if lower is not None and lower.link_group is not None:
            if baseline_groups is None:
                baseline_groups = _groups(baseline.entries.values())
            survivors = baseline_groups.get(lower.link_group, set()) - removed - touched
            broken_partners.update(p for p in survivors if view.get(p) is baseline.get(p))

    # A lower file whose hardlink partner moved on keeps the old content: it changed too.
    for path in sorted(broken_partners - touched):
        entry = view.get(path)
        lower = baseline.get(path)
        if entry is not None and lower is not None:
            change(path, ChangeKind.MODIFIED, ["hardlink"], entry=entry, lower=lower)

    for removal in cv.removals:
        change(
            removal.path,
            ChangeKind.DELETED,
            [removal.cause],
            lower=baseline.get(removal.path),
            via=removal.via,
        )
    for path in cv.orphan_whiteouts:
        change(path, ChangeKind.WHITEOUT_OF_NOTHING, via=path)
    changes.sort(key=lambda c: path_sort_key(c.path))
    return changes


def docker_changes(cv: ContainerViews) -> list[tuple[str, bytes]]:
    """Exactly what `docker diff` prints (moby ChangesDirs of the container root against its -init parent).

    Returns (letter, path) pairs sorted by path; Docker's own order is random.
    """
    view, baseline = cv.view, cv.baseline
    upper = cv.stack.upper
    marks: dict[bytes, str] = {}
    for raw in cv.upper_entries:
        path = raw.path
        if path == b"/" or rules.is_whiteout(raw):
            continue
        entry = view.get(path)
        if entry is None or entry.layer_id != upper:
            continue
        lower = baseline.get(path)
        if lower is None:
            marks[path] = "A"
        elif docker_stat_different(lower, entry):
            marks[path] = "C"
        if entry.kind is Kind.DIR and raw.xattrs and rules.redirect_of(raw) is not None:
            for child in view.descendants(path):
                if child not in baseline:
                    marks[child] = "A"
    for removal in cv.removals:
        parent = view.get(parent_path(removal.path))
        if parent is not None and parent.kind is Kind.DIR:
            marks[removal.path] = "D"
    for path in list(marks):
        for ancestor in ancestors(path):
            if ancestor not in marks:
                marks[ancestor] = "C"
    return sorted(((letter, path) for path, letter in marks.items()), key=lambda lp: path_sort_key(lp[1]))


def container_changes(analysis: Analysis, container: Container) -> list[Change]:
    return forensic_changes(container, analysis.container_views(container))
