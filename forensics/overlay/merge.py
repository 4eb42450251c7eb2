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
    whiteouts that hid nothing. (The loop is written out: it runs once per
    entry of every layer analysed.)
    """
    b = _Builder(base)
    entries = b.entries
    kids_of = b._kids
    for entry in layer:
        path = entry.path
        head = None
        if path != b"/":
            head = path.rpartition(b"/")[0] or b"/"
            parent = entries.get(head)
            if parent is None or parent.kind is not Kind.DIR:
                # The layer's own parent was not applied (a damaged layer): nothing to hang it on.
                continue
        old = entries.get(path)
        kind = entry.kind
        if kind is Kind.CHAR and rules.is_whiteout(entry):
            if old is None:
                b.orphan_whiteouts.append(path)
            else:
                b.remove(path, path, "whiteout")
            continue
        merged = merged_entry(entry) if entry.xattrs else entry
        if kind is Kind.DIR:
            redirect = rules.redirect_of(entry) if entry.xattrs else None
            if old is not None:
                if old.kind is not Kind.DIR:
                    b.remove_below(path, path, "replaced")
                elif entry.xattrs and rules.is_opaque(entry):
                    b.remove_below(path, path, "opaque")
                elif redirect is not None:
                    b.remove_below(path, path, "redirect")
            if redirect is not None:
                b.put(merged)
                source = _redirect_path(entry, redirect)
                lower = base.entries.get(source)
                if lower is not None and lower.kind is Kind.DIR and source != path:
                    b.graft(source, path)
                continue
        else:
            if old is not None and old.kind is Kind.DIR:
                b.remove_below(path, path, "replaced")
            if entry.xattrs and rules.is_metacopy(entry):
                merged = _with_lower_data(merged, entry, base)
        if old is None and head is not None:
            kids_of(head).add(path)
        entries[path] = merged
    # A path hidden and then provided again by the layer itself is replaced, not gone.
    removals = [r for r in b.removals if r.path not in entries]
    return View(entries, b.children), removals, b.orphan_whiteouts


def _with_lower_data(merged: Entry, entry: Entry, base: View) -> Entry:
    """M5: metadata from the metacopy entry, size and hash from the lower file (or its redirect)."""
    data_path = entry.path
    redirect = next((v for n, v in entry.xattrs if n in rules.REDIRECT_XATTRS), None)
    if redirect is not None:
        data_path = _redirect_path(entry, redirect)
    data = base.entries.get(data_path)
    if data is not None and data.kind is Kind.FILE:
        return replace(merged, size=data.size, blake3=data.blake3)
    return merged


def flatten(layers_top_first: Sequence[Sequence[Entry]]) -> View:
    """The merged view of a whole stack (each layer sorted parents first), top layer first."""
    view = View()
    for layer in reversed(layers_top_first):
        view, _, _ = apply_layer(view, layer)
    return view
