"""Why a path looks the way it does: every layer that has it or hides it (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from forensics.model import Entry, Kind, ancestors, display_path
from forensics.overlay import rules


@dataclass(frozen=True, slots=True)
class TraceStep:
    layer_id: str
    role: str
    entry: Entry | None  # the layer's entry at the path (None when it only hides it)
    verdict: str  # "wins", "merged", "hidden", "hides", "absent"
    reason: str


def trace_path(path: bytes, layers: Sequence[tuple[str, str, Mapping[bytes, Entry]]]) -> list[TraceStep]:
    """Layers top to bottom as (layer id, role, path -> entry); only layers with something to say."""
    steps: list[TraceStep] = []
    blocked: str | None = None  # why layers further down no longer count
    winner: Entry | None = None
    for layer_id, role, entries in layers:
        entry = entries.get(path)
        hider = None
        for ancestor in ancestors(path) if path != b"/" else []:
            above = entries.get(ancestor)
            if above is None:
                continue
            if rules.is_whiteout(above):
                hider = f"whiteout at {_show(ancestor)} hides everything below it"
                break
            if above.kind is not Kind.DIR:
                hider = f"non-directory at {_show(ancestor)} hides everything below it"
                break
        if blocked is not None:
            if entry is not None:
                steps.append(TraceStep(layer_id, role, entry, "hidden", blocked))
            continue
        if hider is not None:
            steps.append(TraceStep(layer_id, role, entry, "hides", hider))
            blocked = f"hidden by layer {layer_id[:12]}: {hider}"
            continue
        if entry is None:
            opaque = next(
                (a for a in ancestors(path) if (e := entries.get(a)) is not None and rules.is_opaque(e)), None
            )
            if opaque is not None:
                steps.append(TraceStep(layer_id, role, None, "hides", f"opaque directory {_show(opaque)}"))
                blocked = f"hidden by layer {layer_id[:12]}: opaque directory {_show(opaque)}"
            continue
        if rules.is_whiteout(entry):
            steps.append(TraceStep(layer_id, role, entry, "hides", "whiteout: the path is deleted here"))
            blocked = f"hidden by the whiteout in layer {layer_id[:12]}"
            continue
        if winner is None:
            winner = entry
            reason = "topmost layer with the path"
            if entry.kind is not Kind.DIR:
                steps.append(
                    TraceStep(layer_id, role, entry, "wins", reason + "; a non-directory stops the lookup")
                )
                blocked = f"below the winning non-directory in layer {layer_id[:12]}"
                continue
            steps.append(TraceStep(layer_id, role, entry, "wins", reason + "; directory contents merge"))
        elif entry.kind is Kind.DIR:
            steps.append(
                TraceStep(layer_id, role, entry, "merged", "lower directory: its children show through")
            )
        else:
            steps.append(
                TraceStep(
                    layer_id, role, entry, "hidden", "a non-directory under a directory stops the lookup"
                )
            )
            blocked = f"below the non-directory in layer {layer_id[:12]}"
            continue
        if rules.is_opaque(entry):
            blocked = f"below the opaque directory in layer {layer_id[:12]}"
    return steps


def _show(path: bytes) -> str:
    return display_path(path)
