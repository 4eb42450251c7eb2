"""Output of the analysis commands, in every format each one offers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from forensics.model import Change, Entry, display_path
from forensics.render.common import (
    csv_flat,
    machine_output,
    render_table,
    rich_table,
    to_csv,
    to_json,
    to_jsonl,
)
from forensics.render.records import (
    CHANGE_FIELDS,
    ENTRY_FIELDS,
    body_name,
    bodyfile_line,
    change_record,
    entry_record,
)


def short(layer_id: str | None) -> str:
    return "" if not layer_id else layer_id[:12]


def _size(value: int | None) -> str:
    if value is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,} B" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024  # type: ignore[assignment]
    return str(value)


# -- containers / images ---------------------------------------------------------------


def container_record(summary: Any) -> dict[str, Any]:
    c = summary.container
    return {
        "id": c.id,
        "name": c.name,
        "image": summary.image_name,
        "image_id": c.image_id,
        "state": c.state,
        "exit_code": c.exit_code,
        "created": c.created,
        "upper_layer": c.upper_layer,
        "layers": list(summary.chain),
        "upper_size": summary.upper_size,
        "changes": summary.changes,
        "problem": summary.problem,
    }


def containers_output(summaries: Sequence[Any], fmt: str) -> str:
    records = [container_record(s) for s in summaries]
    machine = machine_output(records, fmt)
    if machine is not None:
        return machine
    rows = [
        (
            r["id"][:12],
            r["name"],
            r["image"],
            r["state"] if r["exit_code"] in (None, 0) else f"{r['state']} ({r['exit_code']})",
            (r["created"] or "")[:19],
            f"{len(r['layers'])} ({short(r['upper_layer'])} on top)" if r["layers"] else "",
            _size(r["upper_size"]),
            "" if r["changes"] is None else r["changes"],
            r["problem"] or "",
        )
        for r in records
    ]
    columns = ("id", "name", "image", "state", "created", "layers", "upper size", "changes")
    columns = (*columns, "problem")
    return render_table(rich_table(columns, rows, title="containers"))


def image_record(summary: Any) -> dict[str, Any]:
    i = summary.image
    return {
        "id": i.id,
        "tags": list(i.tags),
        "created": i.created,
        "parent": i.parent,
        "layers": list(summary.layers),
        "diff_ids": list(i.diff_ids),
        "size": summary.size,
        "containers": list(summary.containers),
        "problem": i.problem,
    }


def images_output(summaries: Sequence[Any], fmt: str) -> str:
    records = [image_record(s) for s in summaries]
    machine = machine_output(records, fmt)
    if machine is not None:
        return machine
    rows = [
        (
            r["id"].removeprefix("sha256:")[:12],
            ", ".join(r["tags"]) or "<none>",
            (r["created"] or "")[:19],
            f"{len(r['layers'])} (top {short(r['layers'][-1])})" if r["layers"] else "",
            _size(r["size"]),
            ", ".join(r["containers"]),
            r["problem"] or "",
        )
        for r in records
    ]
    columns = ("id", "tags", "created", "layers", "size", "containers", "problem")
    return render_table(rich_table(columns, rows, title="images"))


def layer_record(summary: Any) -> dict[str, Any]:
    layer = summary.layer
    return {
        "id": layer.id,
        "role": layer.role.value,
        "link": layer.link,
        "chain": list(layer.chain),
        "entries": summary.entries,
        "size": summary.size,
        "committed": layer.committed,
        "has_diff": layer.has_diff,
        "used_by": list(summary.used_by),
        "problem": layer.problem,
    }


def layers_output(summaries: Sequence[Any], fmt: str) -> str:
    records = [layer_record(s) for s in summaries]
    machine = machine_output(records, fmt)
    if machine is not None:
        return machine
    rows = [
        (
            short(r["id"]) + ("-init" if r["id"].endswith("-init") else ""),
            r["role"],
            r["entries"],
            _size(r["size"]),
            len(r["chain"]),
            ", ".join(r["used_by"]),
            r["problem"] or "",
        )
        for r in records
    ]
    columns = ("layer", "role", "entries", "size", "lower layers", "used by", "problem")
    return render_table(rich_table(columns, rows, title="layers"))


# -- ls ------------------------------------------------------------------------------


def ls_output(entries: Sequence[Entry], fmt: str, container: str) -> str:
    if fmt == "bodyfile":
        prefix = body_name(container.encode())
        return "".join(bodyfile_line(e, f"{prefix}:{body_name(e.path)}") + "\n" for e in entries)
    records = [entry_record(e) for e in entries]
    machine = machine_output(records, fmt, ENTRY_FIELDS)
    if machine is not None:
        return machine
    rows = [
        (
            e.kind.letter,
            r["mode"],
            f"{r['uid']}:{r['gid']}",
            "" if r["size"] is None else r["size"],
            _iso(r["mtime_ns"]),
            r["path"] + (f" -> {r['target']}" if "target" in r else ""),
            (r.get("blake3") or "")[:16],
            short(r["layer"]),
        )
        for e, r in zip(entries, records, strict=True)
    ]
    return render_table(rich_table(("t", "mode", "owner", "size", "mtime", "path", "blake3", "layer"), rows))


def _iso(ns: int | None) -> str:
    if ns is None:
        return ""
    from datetime import datetime, timezone

    seconds, rest = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{rest:09d}Z"


# -- diff ------------------------------------------------------------------------------


def docker_output(letters: Sequence[tuple[str, bytes]]) -> bytes:
    """`docker diff` lines: names raw, except invalid UTF-8, which Docker prints as U+FFFD."""
    return b"".join(
        letter.encode() + b" " + path.decode("utf-8", "replace").encode("utf-8") + b"\n"
        for letter, path in letters
    )


def podman_output(letters: Sequence[tuple[str, bytes]]) -> bytes:
    """`podman diff` lines: names raw, invalid UTF-8 and newlines included (fmt.Println in Podman)."""
    return b"".join(letter.encode() + b" " + path + b"\n" for letter, path in letters)


def diff_output(reports: Sequence[tuple[str, list[Change]]], fmt: str) -> str:
    changes = [c for _, report in reports for c in report]
    if fmt in ("json", "jsonl", "csv"):
        return machine_output([change_record(c) for c in changes], fmt, CHANGE_FIELDS) or ""
    if fmt == "bodyfile":
        lines = []
        for c in changes:
            entry = c.entry or c.lower
            if entry is not None:
                lines.append(bodyfile_line(entry, _body_change_name(c)) + "\n")
        return "".join(lines)
    out = []
    for name, report in reports:
        rows = []
        for c in report:
            record = change_record(c)
            note = ", ".join(c.details)
            if c.via is not None and c.via != c.path:
                note = (note + "; " if note else "") + f"via {display_path(c.via)}"
            rows.append(
                (c.kind.value, record.get("type", ""), record["path"], note, short(record.get("layer")))
            )
        title = f"{name}: {len(report)} changes"
        out.append(
            render_table(rich_table(("change", "type", "path", "details", "layer"), rows, title=title))
        )
    return "".join(out)


# -- trace, history, timeline ---------------------------------------------------------


def trace_output(steps: Sequence[Any], final: Entry | None, path: bytes, fmt: str) -> str:
    records = [
        {
            "layer": s.layer_id,
            "role": s.role,
            "verdict": s.verdict,
            "reason": s.reason,
            "entry": None if s.entry is None else entry_record(s.entry),
        }
        for s in steps
    ]
    if fmt == "json":
        return (
            to_json(
                {
                    "path": display_path(path),
                    "merged": None if final is None else entry_record(final),
                    "layers": records,
                }
            )
            + "\n"
        )
    rows = [
        (
            short(r["layer"]),
            r["role"],
            "" if r["entry"] is None else f"{r['entry']['type']} {r['entry']['mode']}",
            r["verdict"],
            r["reason"],
        )
        for r in records
    ]
    title = f"{display_path(path)}: " + (
        "not visible" if final is None else f"provided by {short(final.layer_id)}"
    )
    return render_table(rich_table(("layer", "role", "entry", "verdict", "why"), rows, title=title))


def history_output(steps: Sequence[Any], fmt: str) -> str:
    if fmt == "json":
        return (
            to_json(
                [
                    {
                        "layer": s.layer_id,
                        "diff_id": s.diff_id,
                        "created_by": s.created_by,
                        "changes": [_history_change(c) for c in s.changes],
                    }
                    for s in steps
                ]
            )
            + "\n"
        )
    out = []
    for index, s in enumerate(steps):
        rows = [
            (
                c.kind.value,
                (c.entry or c.lower).kind.value if (c.entry or c.lower) else "",
                display_path(c.path),
                ", ".join(c.details),
            )
            for c in s.changes
        ]
        title = f"layer {index} {short(s.layer_id)}: {(s.created_by or '').strip()[:100]}"
        out.append(render_table(rich_table(("change", "type", "path", "details"), rows, title=title)))
    return "".join(out)


def _history_change(change: Change) -> dict[str, Any]:
    record = change_record(change)
    for key in ("container", "container_id"):
        record.pop(key, None)
    return record


def timeline_output(events: Sequence[Any], fmt: str) -> str:
    if fmt == "bodyfile":
        return "".join(
            bodyfile_line(
                e.entry,
                _body_change_name(e.change),
            )
            + "\n"
            for e in events
        )
    records = []
    for e in events:
        record = change_record(e.change)
        record = {"time_ns": e.time_ns, "time": _iso(e.time_ns), **record}
        records.append(record)
    if fmt == "jsonl":
        return to_jsonl(records)
    return to_csv(("time_ns", "time", *CHANGE_FIELDS), [csv_flat(r) for r in records])


def _body_change_name(change: Change) -> str:
    """``container:/path (change)``: the container named in each bodyfile line."""
    return f"{body_name(change.container_name.encode())}:{body_name(change.path)} ({change.kind.value})"
