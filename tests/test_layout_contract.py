"""The Layout contract a directory source relies on: below an ENTRY directory, every path is an
ENTRY of the same layer at the parent's inner path + "/" + name (it stops asking inside diff/)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from forensics.capture.engine import all_engines
from forensics.capture.sources import Action
from forensics.model import Kind

# A layer's diff/ root in each layout (the directory source's first ENTRY directory of a layer).
ROOTS = {
    "docker-overlay2": b"overlay2/" + b"a" * 64 + b"/diff",
    "containers-storage-overlay": b"overlay/" + b"b" * 64 + b"/diff",
    "containerd-overlayfs": b"io.containerd.snapshotter.v1.overlayfs/snapshots/17/fs",
}

names = st.binary(min_size=1, max_size=12).filter(
    lambda n: b"/" not in n and b"\0" not in n and n not in (b".", b"..")
)


def test_every_layout_is_covered() -> None:
    assert {engine.name for engine in all_engines()} == set(ROOTS)


@given(
    st.lists(names, min_size=1, max_size=6), st.sampled_from([Kind.FILE, Kind.DIR, Kind.SYMLINK, Kind.CHAR])
)
def test_descendants_of_an_entry_directory_are_entries_of_its_layer(parts: list[bytes], kind: Kind) -> None:
    for engine in all_engines():
        root = ROOTS[engine.name]
        top = engine.classify(root, Kind.DIR)
        assert top.action is Action.ENTRY and top.inner_path == b"/"
        rel, inner = root, b""
        for depth, name in enumerate(parts):
            rel, inner = rel + b"/" + name, inner + b"/" + name
            visit = engine.classify(rel, kind if depth == len(parts) - 1 else Kind.DIR)
            assert (visit.action, visit.layer_id, visit.inner_path) == (Action.ENTRY, top.layer_id, inner)
