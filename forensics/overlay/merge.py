"""An ordered layer stack into a merged view, as the kernel's overlayfs shows it (pure).

A :class:`View` is a flattened stack: every visible path with the entry that
provides it. Applying a layer on top of a view is the kernel's lookup turned
inside out (overlayfs.rst "directories", "whiteouts and opaque directories"):

- M1: the top layer's entry wins; a non-directory stops the lookup, so it
  hides everything at and below its path in the layers under it.
- M2: a directory over a directory merges: metadata from the top one, the
  children of both.
- M3: a whiteout hides its path and everything below it; an opaque directory
  hides everything below it. Both act only on the layers below their own.
- M4: a directory with a redirect continues from its old lower path.
- M5: a metacopy file takes metadata from its own layer and data (size,
  hash) from the lower file.
- M6: overlay-private xattrs never appear in the merged view.

Flattening is associative, so an image's view is computed once and shared by
every image and container stacked on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from forensics.model import Entry, Kind, base_name, join_path, parent_path, path_sort_key
from forensics.overlay import rules


@dataclass(frozen=True, slots=True)
class Removal:
    """A path of the lower view that a layer hid, and the layer entry that hid it."""

    path: bytes
    via: bytes  # the whiteout, opaque directory or replacing entry
    cause: str  # "whiteout", "opaque", "replaced", "redirect"


@dataclass(slots=True)
class View:
    """A merged view: path -> providing entry, and each directory's children."""

    entries: dict[bytes, Entry] = field(default_factory=dict)
    children: dict[bytes, set[bytes]] = field(default_factory=dict)

    def get(self, path: bytes) -> Entry | None:
        return self.entries.get(path)

    def __contains__(self, path: bytes) -> bool:
        return path in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def walk(self, top: bytes = b"/") -> list[Entry]:
        """Every entry at and below *top*, in the one path order."""
        if top not in self.entries:
            return []
        out = []
        stack = [top]
        while stack:
            path = stack.pop()
            entry = self.entries.get(path)
            if entry is None:
                continue
            out.append(entry)
            kids = self.children.get(path)
            if kids:
                stack.extend(sorted(kids, key=path_sort_key, reverse=True))
        return out

    def descendants(self, top: bytes) -> list[bytes]:
        out = []
        stack = list(self.children.get(top, ()))
        while stack:
            path = stack.pop()
            out.append(path)
            stack.extend(self.children.get(path, ()))
        return out


def sort_layer(entries: Iterable[Entry]) -> list[Entry]:
    """A layer's entries, parents before children."""
    return sorted(entries, key=lambda e: path_sort_key(e.path))


def merged_entry(entry: Entry) -> Entry:
    """M6: the entry as the merged view shows it."""
    if entry.xattrs and any(rules.is_private_xattr(name) for name, _ in entry.xattrs):
        return replace(entry, xattrs=rules.visible_xattrs(entry))
    return entry


class _Builder:
    """Applies one layer to a copy of a view, copying children sets only where it writes."""

    def __init__(self, base: View) -> None:
        self.base = base
        self.entries = base.entries.copy()
        self.children = base.children.copy()
        self.owned: set[bytes] = set()
        self.removals: list[Removal] = []
        self.orphan_whiteouts: list[bytes] = []

    def _kids(self, path: bytes) -> set[bytes]:
        if path not in self.owned:
            self.children[path] = set(self.children.get(path, ()))
            self.owned.add(path)
        return self.children[path]

    def remove_below(self, path: bytes, via: bytes, cause: str) -> None:
        """Hides every lower path under *path* (not *path* itself)."""
        kids = self.children.pop(path, None)
        self.owned.discard(path)
        stack = list(kids or ())
        while stack:
            child = stack.pop()
            if self.entries.pop(child, None) is not None:
                self.removals.append(Removal(child, via, cause))
            grand = self.children.pop(child, None)
            self.owned.discard(child)
            if grand:
                stack.extend(grand)

    def remove(self, path: bytes, via: bytes, cause: str) -> None:
        if self.entries.pop(path, None) is None:
            return
        self.removals.append(Removal(path, via, cause))
        self.remove_below(path, via, cause)
        if path != b"/":
            self._kids(parent_path(path)).discard(path)

    def put(self, entry: Entry) -> None:
        path = entry.path
        if path not in self.entries and path != b"/":
            self._kids(parent_path(path)).add(path)
        self.entries[path] = entry

    def graft(self, source: bytes, target: bytes) -> None:
        """M4: the lower subtree at *source* continues below the redirected directory *target*."""
        base = self.base
        stack = [(source, target)]
        while stack:
            old, new = stack.pop()
            for child in base.children.get(old, ()):
                entry = base.entries.get(child)
                if entry is None:
                    continue
                moved = join_path(new, base_name(child))
                if moved in self.entries:
                    continue
                self.put(replace(entry, path=moved))
                stack.append((child, moved))


def _redirect_path(entry: Entry, value: bytes) -> bytes:
    value = value.rstrip(b"\x00")
    if value.startswith(b"/"):
        return value
    return join_path(parent_path(entry.path), value)


def apply_layer(base: View, layer: Sequence[Entry]) -> tuple[View, list[Removal], list[bytes]]:
    """The view with *layer* (sorted parents first) on top of *base*.

    Returns the new view, the lower paths the layer hid, and the layer's
    whiteouts that hid nothing.
    """
    b = _Builder(base)
    entries = b.entries
    for entry in layer:
        path = entry.path
        if path != b"/":
            parent = entries.get(parent_path(path))
            if parent is None or parent.kind is not Kind.DIR:
                # The layer's own parent was not applied (a damaged layer): nothing to hang it on.
                continue
        old = entries.get(path)
        if rules.is_whiteout(entry):
            if old is None:
                b.orphan_whiteouts.append(path)
            elif old.layer_id != entry.layer_id:
                b.remove(path, path, "whiteout")
            continue
        from_lower = old is not None and old.layer_id != entry.layer_id
        if entry.kind is Kind.DIR:
            redirect = rules.redirect_of(entry) if entry.xattrs else None
            if from_lower and old.kind is not Kind.DIR:  # type: ignore[union-attr]
                b.remove_below(path, path, "replaced")
            elif from_lower and entry.xattrs and rules.is_opaque(entry):
                b.remove_below(path, path, "opaque")
            elif redirect is not None:
                if from_lower:
                    b.remove_below(path, path, "redirect")
                b.put(merged_entry(entry))
                source = _redirect_path(entry, redirect)
                lower = base.entries.get(source)
                if lower is not None and lower.kind is Kind.DIR and source != path:
                    b.graft(source, path)
                continue
            b.put(merged_entry(entry))
            continue
        if from_lower:
            b.remove_below(path, path, "replaced")
        merged = merged_entry(entry)
        if entry.xattrs and rules.is_metacopy(entry):
            data_path = path
            redirect = next((v for n, v in entry.xattrs if n in rules.REDIRECT_XATTRS), None)
            if redirect is not None:
                data_path = _redirect_path(entry, redirect)
            data = base.entries.get(data_path)
            if data is not None and data.kind is Kind.FILE:
                merged = replace(merged, size=data.size, blake3=data.blake3)
        b.put(merged)
    # A path hidden and then provided again by the layer itself is replaced, not gone.
    removals = [r for r in b.removals if r.path not in b.entries]
    return View(b.entries, b.children), removals, b.orphan_whiteouts


def flatten(layers_top_first: Sequence[Sequence[Entry]]) -> View:
    """The merged view of a whole stack (each layer sorted parents first), top layer first."""
    view = View()
    for layer in reversed(layers_top_first):
        view, _, _ = apply_layer(view, layer)
    return view
