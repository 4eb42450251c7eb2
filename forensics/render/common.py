"""Shared output helpers: JSON values, CSV cells, path fields and rich tables.

Every format shows paths by the same rules: ``path`` is the display form
(valid UTF-8 as is, invalid bytes as ``\\xHH``) and, where that is not the
plain UTF-8 decoding, ``path_bytes`` carries the raw bytes in base64.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from forensics.model import display_path

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def path_fields(raw: bytes, key: str = "path") -> dict[str, str]:
    """``{"path": display}`` plus ``{"path_bytes": base64}`` when the name is not valid UTF-8."""
    try:
        return {key: raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {key: display_path(raw), key + "_bytes": base64.b64encode(raw).decode("ascii")}


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=False, default=_default)


def to_jsonl(records: Iterable[Mapping[str, Any]]) -> str:
    encode = _LINE_ENCODER.encode
    return "".join(encode(r) + "\n" for r in records)


def _default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


_LINE_ENCODER = json.JSONEncoder(ensure_ascii=False, default=_default)


def csv_cell(value: Any) -> str:
    """A CSV cell a spreadsheet will not run as a formula (OWASP CSV injection)."""
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    else:
        text = str(value)
    if text.startswith(_FORMULA_START):
        return "'" + text
    return text


def to_csv(columns: Sequence[str], records: Iterable[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for record in records:
        writer.writerow([csv_cell(record.get(c)) for c in columns])
    return buffer.getvalue()


def csv_flat(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record for one CSV row: xattrs as a JSON cell (empty when none), details comma-joined."""
    out = dict(record)
    if "xattrs" in out:
        out["xattrs"] = json.dumps(out["xattrs"], sort_keys=True) if out["xattrs"] else ""
    if "details" in out:
        out["details"] = ",".join(out["details"])
    return out


def machine_output(
    records: Sequence[Mapping[str, Any]], fmt: str, columns: Sequence[str] | None = None
) -> str | None:
    """json, jsonl or csv of these records; None for a format the caller renders itself."""
    if fmt == "json":
        return to_json(list(records)) + "\n"
    if fmt == "jsonl":
        return to_jsonl(records)
    if fmt == "csv":
        header = columns if columns is not None else (list(records[0]) if records else ["id"])
        return to_csv(header, [csv_flat(r) for r in records])
    return None


def rich_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> Table:
    """A rich table whose cells are plain text: names from evidence are never read as markup."""
    table = Table(title=None if title is None else Text(title), show_lines=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(Text(_one_line("" if cell is None else str(cell))) for cell in row))
    return table


def _one_line(text: str) -> str:
    """Tables are for people: a control character in a name is shown escaped, so no name can fake a row."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def render_table(table: Table) -> str:
    """A rich table as text: coloured on a terminal, plain when piped (the data is the same)."""
    console = Console(width=max(100, Console().width), record=False)
    with console.capture() as capture:
        console.print(table)
    return capture.get()
