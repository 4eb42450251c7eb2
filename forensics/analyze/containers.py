"""Containers and their layer stacks, from a snapshot's records alone.

Views are memoised by stack: an image's merged view is computed once and
shared by every image and container built on it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from forensics.errors import ChainError, NotFoundError
from forensics.model import Container, Entry, Image, Kind, Layer, ancestors, join_path, parent_path
from forensics.overlay import rules
from forensics.overlay.merge import Removal, View, apply_layer, sort_layer
from forensics.store.reader import Snapshot

T = TypeVar("T")


@dataclass(frozen=True)
class Stack:
    """A container's layers: the upperdir on top of its baseline (init + image), nearest first."""

    container: Container
    upper: str
    baseline: tuple[str, ...]


@dataclass(frozen=True)
class LayerDelta:
    """One layer applied to the view below it, with what it hid."""

    baseline: View
    view: View
    removals: list[Removal]
    orphan_whiteouts: list[bytes]
    upper_entries: list[Entry]


@dataclass(frozen=True)
class ContainerViews(LayerDelta):
    stack: Stack
    # Each layer's own entries by path (not merged), for reports that look into single
    # lower layers the way an engine does (podman diff: analyze/podman.py).
    layer_index: Callable[[str], dict[bytes, Entry]] | None = field(default=None, compare=False, repr=False)


@dataclass
class Scope:
    """The part of a view a set of layers can touch: paths (closed under ancestors) and whole subtrees."""

    paths: set[bytes] = field(default_factory=lambda: {b"/"})
    subtrees: set[bytes] = field(default_factory=set)
    everything: bool = False

    def add_paths(self, paths: Iterable[bytes]) -> None:
        for path in paths:
            if path not in self.paths:
                self.paths.add(path)
                self.paths.update(ancestors(path))

    def add_layer(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            path = entry.path
            self.add_paths((path,))
            hides_below = entry.kind is not Kind.DIR or (bool(entry.xattrs) and rules.is_opaque(entry))
            if entry.kind is Kind.DIR and entry.xattrs:
                redirect = rules.redirect_of(entry)
                if redirect is not None:
                    hides_below = True
                    source = redirect if redirect.startswith(b"/") else join_path(parent_path(path), redirect)
                    self.add_paths((source,))
                    self.subtrees.add(source)
            if hides_below:
                if path == b"/":
                    self.everything = True
                self.subtrees.add(path)


def _unscoped_matches(name: str, named: Iterable[tuple[T, str | None]]) -> list[T]:
    """Records whose name is ``<scope>/<name>``: a name given without its scope (containerd names
    containers ``<namespace>/<id>`` and tags images ``<namespace>/<ref>``; a bare id or ref works when
    it is unique). Only names no record has exactly get here."""
    if not name or name.startswith("/"):
        return []
    out: list[T] = []
    for record, full in named:
        if full is not None and full.partition("/")[2] == name and record not in out:
            out.append(record)
    return out


class Analysis:
    """One snapshot opened for analysis; caches layer entries and merged views."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._layer_entries: dict[str, list[Entry]] = {}
        self._views: dict[tuple[str, ...], View] = {(): View()}
        self._scoped: dict[tuple[str, ...], View] = {}
        self._indexes: dict[str, dict[bytes, Entry]] = {}

    @property
    def containers(self) -> list[Container]:
        return self.snapshot.containers

    @property
    def layers(self) -> dict[str, Layer]:
        return self.snapshot.layers

    @property
    def images(self) -> list[Image]:
        return self.snapshot.images

    # -- naming -------------------------------------------------------------------

    def find_container(self, name: str) -> Container:
        """By full id, unique id prefix, or name; an unknown one gets the close matches."""
        containers = self.containers
        for container in containers:
            if name in (container.id, container.name, "/" + (container.name or "")):
                return container
        scoped = _unscoped_matches(name, [(c, c.name) for c in containers])
        if len(scoped) == 1:
            return scoped[0]
        if len(scoped) > 1:
            names = ", ".join(sorted(c.name or c.id for c in scoped))
            raise NotFoundError(f"container {name!r} is ambiguous: {names}.")
        matches = [c for c in containers if c.id.startswith(name)] if len(name) >= 3 else []
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            ids = ", ".join(c.id[:12] for c in matches)
            raise NotFoundError(f"container id prefix {name!r} is ambiguous: {ids}.")
        names = [c.name or c.id for c in containers] + [c.id[:12] for c in containers]
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        known = ", ".join(sorted(c.name or c.id[:12] for c in containers)) or "none"
        raise NotFoundError(f"no container {name!r} in {self.snapshot.path}.{hint} Containers: {known}.")

    def find_image(self, name: str) -> Image:
        images = self.images
        for image in images:
            if name in (image.id, *image.tags):
                return image
        scoped = _unscoped_matches(name, [(i, tag) for i in images for tag in i.tags])
        if len({i.id for i in scoped}) == 1:
            return scoped[0]
        if scoped:
            tags = ", ".join(sorted({t for i in scoped for t in i.tags if t.endswith("/" + name)}))
            raise NotFoundError(f"image {name!r} is ambiguous: {tags}.")
        bare = name.removeprefix("sha256:")
        matches = (
            [i for i in images if i.id.removeprefix("sha256:").startswith(bare)] if len(bare) >= 3 else []
        )
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            ids = ", ".join(i.id.removeprefix("sha256:")[:12] for i in matches)
            raise NotFoundError(f"image id prefix {name!r} is ambiguous: {ids}.")
        tags = [t for i in images for t in i.tags]
        close = difflib.get_close_matches(name, tags, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise NotFoundError(f"no image {name!r} in {self.snapshot.path}.{hint}")

    # -- stacks and views ---------------------------------------------------------------

    def stack(self, container: Container) -> Stack:
        """The container's layers, or a ChainError saying what is broken (for this container only)."""
        upper = container.upper_layer
        label = container.name or container.id
        if not upper:
            raise ChainError(
                f"container {label} has no upper layer record ({container.problem or 'no mount-id'})."
            )
        layer = self.layers.get(upper)
        if layer is None:
            raise ChainError(f"container {label}: its upper layer {upper} is not in the snapshot.")
        if layer.problem:
            raise ChainError(f"container {label}: {layer.problem}.")
        for below in container.chain:
            lower = self.layers.get(below)
            if lower is None:
                raise ChainError(f"container {label}: layer {below} of its chain is not in the snapshot.")
            if not lower.has_diff:
                raise ChainError(f"container {label}: layer {below} of its chain has no diff/ directory.")
        return Stack(container, upper, tuple(container.chain))

    def layer_entries(self, layer_id: str) -> list[Entry]:
        entries = self._layer_entries.get(layer_id)
        if entries is None:
            entries = self._layer_entries[layer_id] = sort_layer(self.snapshot.entries(layer_id))
        return entries

    def layer_index(self, layer_id: str) -> dict[bytes, Entry]:
        """One layer's own entries by path (its diff/ as stored, not merged with anything)."""
        index = self._indexes.get(layer_id)
        if index is None:
            index = self._indexes[layer_id] = {e.path: e for e in self.layer_entries(layer_id)}
        return index

    def view(self, chain: tuple[str, ...]) -> View:
        """The merged view of layers nearest first; every suffix is memoised."""
        view = self._views.get(chain)
        if view is None:
            below = self.view(chain[1:])
            view, _, _ = apply_layer(below, self.layer_entries(chain[0]))
            self._views[chain] = view
        return view

    # -- scoped views: only what a set of upper layers can touch ------------------------

    def prepare(self, containers: Iterable[Container]) -> None:
        """Scope the image views of these containers to what their upper and init layers touch.

        A change report only looks at the paths an upper layer holds, their
        ancestors, the subtrees it hides and the hardlink partners of what it
        replaces. Loading just those entries of the image layers, and merging
        them with the same rules, gives the same view of every path in scope
        (a path's visibility depends only on the path and its ancestors in each
        layer) at a fraction of the cost. One scope per image chain is shared
        by all its containers.
        """
        scopes: dict[tuple[str, ...], Scope] = {}
        for container in containers:
            try:
                stack = self.stack(container)
            except ChainError:
                continue
            has_init = bool(stack.baseline) and stack.baseline[0] == container.init_layer
            image_chain = stack.baseline[1:] if has_init else stack.baseline
            scope = scopes.setdefault(image_chain, Scope())
            for layer_id in (stack.upper, *stack.baseline[:1]) if has_init else (stack.upper,):
                scope.add_layer(self.layer_entries(layer_id))
        for chain, scope in scopes.items():
            if not chain or scope.everything:
                continue
            scope.add_paths(self.snapshot.paths_sharing_links(chain, scope.paths))
            view = View()
            for layer_id in reversed(chain):
                entries = sort_layer(self.snapshot.entries_in(layer_id, scope.paths, scope.subtrees))
                view, _, _ = apply_layer(view, entries)
            self._scoped[chain] = view

    def container_views(self, container: Container) -> ContainerViews:
        stack = self.stack(container)
        baseline = self._baseline(stack)
        upper_entries = self.layer_entries(stack.upper)
        view, removals, orphans = apply_layer(baseline, upper_entries)
        return ContainerViews(baseline, view, removals, orphans, upper_entries, stack, self.layer_index)

    def _baseline(self, stack: Stack) -> View:
        """The baseline view, from a prepared scope when there is one."""
        for split in range(len(stack.baseline) + 1):
            scoped = self._scoped.get(stack.baseline[split:])
            if scoped is not None:
                view = scoped
                for layer_id in reversed(stack.baseline[:split]):
                    view, _, _ = apply_layer(view, self.layer_entries(layer_id))
                return view
        return self.view(stack.baseline)

    def layer_delta(self, chain: tuple[str, ...]) -> LayerDelta:
        """What the first layer of *chain* (nearest first) did to the layers below it."""
        baseline = self.view(chain[1:])
        entries = self.layer_entries(chain[0])
        view, removals, orphans = apply_layer(baseline, entries)
        return LayerDelta(baseline, view, removals, orphans, entries)

    def container_view(self, container: Container) -> View:
        stack = self.stack(container)
        return self.view((stack.upper, *stack.baseline))

    def image_view(self, image: Image) -> View:
        return self.view(tuple(reversed(image.layers)))
