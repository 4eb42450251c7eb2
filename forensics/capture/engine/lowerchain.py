"""Resolving an overlay2-style ``lower`` file through ``l/`` short links (pure).

Docker's overlay2 driver and containers/storage both write ``lower`` as
``l/A:l/B:...``, nearest layer first, where ``l/A`` is a symlink to
``../<layer-id>/diff``.
"""

from __future__ import annotations

from dataclasses import dataclass


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
