"""Resolving an overlay2-style ``lower`` file through ``l/`` short links (pure).

Docker's overlay2 driver and containers/storage both write ``lower`` as
``l/A:l/B:...``, nearest layer first, where ``l/A`` is a symlink to
``../<layer-id>/diff``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from forensics.capture.sources import Noted
from forensics.model import Kind, Layer, LayerRole


@dataclass(frozen=True, slots=True)
class Chain:
    layers: tuple[str, ...]  # nearest first
    problem: str | None = None


def link_target_layer(target: bytes) -> str | None:
    """``../<id>/diff`` -> ``<id>``; anything else is not a layer link."""
    parts = target.split(b"/")
    if len(parts) == 3 and parts[0] == b".." and parts[2] == b"diff" and parts[1]:
        return parts[1].decode("utf-8", "surrogateescape")
    return None


def resolve_lower(
    layer_id: str,
    lower: str | None,
    links: dict[str, str | None],
    layer_ids: set[str],
) -> Chain:
    """The layer ids a ``lower`` file names, or the first reason it cannot be followed.

    *links* maps a short name to the layer its symlink points at (None when the
    symlink points somewhere else). A chain that names the layer itself, or one
    layer twice, is a cycle.
    """
    if lower is None:
        return Chain(())
    text = lower.strip()
    if not text:
        return Chain(())
    resolved: list[str] = []
    for element in text.split(":"):
        short = element[2:] if element.startswith("l/") else element
        if short not in links:
            return Chain(tuple(resolved), f"lower of layer {layer_id} names l/{short}, which does not exist")
        target = links[short]
        if target is None:
            return Chain(
                tuple(resolved), f"l/{short} named by layer {layer_id} does not point at a layer diff"
            )
        if target not in layer_ids:
            return Chain(
                tuple(resolved), f"l/{short} named by layer {layer_id} points at missing layer {target}"
            )
        if target == layer_id or target in resolved:
            return Chain(tuple(resolved), f"lower chain of layer {layer_id} has a cycle at layer {target}")
        resolved.append(target)
    return Chain(tuple(resolved))


@dataclass(frozen=True, slots=True)
class LayerDirs:
    """The layer directories and ``l/`` links under one overlay2-style driver directory."""

    layer_ids: set[str]
    links: list[tuple[str, bytes, str | None]]  # (short name, raw target, layer id), sorted
    link_map: dict[str, str | None]  # short name -> layer id


def scan_layer_dirs(
    driver: bytes, roots: Iterable[str], paths: Iterable[bytes], noted: dict[bytes, Noted]
) -> LayerDirs:
    """Layers under ``<driver>/<id>/`` (and those whose diff/ root was walked), and the ``l/`` links."""
    layer_ids = set(roots)
    for path in paths:
        parts = path.split(b"/")
        if len(parts) >= 3 and parts[0] == driver and parts[1] != b"l":
            layer_ids.add(parts[1].decode("utf-8", "surrogateescape"))
    links: list[tuple[str, bytes, str | None]] = []
    link_map: dict[str, str | None] = {}
    for path, item in noted.items():
        parts = path.split(b"/")
        if len(parts) == 3 and parts[0] == driver and parts[1] == b"l":
            short = parts[2].decode("utf-8", "surrogateescape")
            target = item.target or b""
            layer = link_target_layer(target) if item.kind is Kind.SYMLINK else None
            links.append((short, target, layer))
            link_map[short] = layer
    links.sort()
    return LayerDirs(layer_ids, links, link_map)


def layer_record(
    driver: bytes,
    layer_id: str,
    role: LayerRole,
    files: dict[bytes, bytes],
    noted: dict[bytes, Noted],
    roots: set[str],
    chain: tuple[str, ...],
    problem: str | None,
) -> Layer:
    """A layer of an overlay2-style driver directory, from the files the walk read and noted."""
    base = driver + b"/" + layer_id.encode("utf-8", "surrogateescape")

    def text(name: bytes) -> str | None:
        raw = files.get(base + name)
        return None if raw is None else raw.decode("utf-8", "surrogateescape").strip()

    return Layer(
        id=layer_id,
        role=role,
        link=text(b"/link"),
        lower=text(b"/lower"),
        committed=base + b"/committed" in files,
        has_work=base + b"/work" in noted,
        has_merged=base + b"/merged" in noted,
        has_diff=layer_id in roots,
        diff_path=base + b"/diff",
        chain=chain,
        problem=problem,
    )
