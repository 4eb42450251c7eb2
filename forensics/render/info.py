"""`o2f info`: provenance and counts."""

from __future__ import annotations

from typing import Any

from forensics.render.common import render_table, rich_table, to_json

COUNT_KEYS = ("entries", "layers", "images", "containers", "mounts", "errors")


def info_record(provenance: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    record: dict[str, Any] = {key: counts.get(key, 0) for key in COUNT_KEYS}
    record.update(
        {
            "complete": bool(provenance.get("complete")),
            "tool_version": provenance.get("tool_version"),
            "schema_version": provenance.get("schema_version"),
            "digest": provenance.get("digest"),
            "layout": provenance.get("layout"),
            "source": provenance.get("source"),
            "source_kind": provenance.get("source_kind"),
            "data_root": provenance.get("data_root"),
            "host": provenance.get("host"),
            "kernel": provenance.get("kernel"),
            "started_utc": provenance.get("started_utc"),
            "finished_utc": provenance.get("finished_utc"),
            "bytes_read": provenance.get("bytes_read"),
            "hashes_reused": provenance.get("hashes_reused"),
            "options": provenance.get("options"),
            "capabilities": provenance.get("capabilities"),
            "counts": counts,
        }
    )
    return record


def info_json(record: dict[str, Any]) -> str:
    return to_json(record) + "\n"


def info_table(record: dict[str, Any]) -> str:
    rows = []
    for key, value in record.items():
        if key == "counts":
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        elif key == "complete":
            value = "yes" if value else "NO - the capture did not finish"
        elif isinstance(value, (list, dict)):
            value = to_json(value).replace("\n", " ")
        rows.append((key, value))
    return render_table(rich_table(("field", "value"), rows, title="o2f snapshot"))
