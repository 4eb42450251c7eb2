"""Model records as plain dicts, and the Sleuth Kit bodyfile line.

Every machine format (json, jsonl, csv) is built from these dicts, so the path
rules and field names are the same everywhere (docs/cli.md#records).
"""

from __future__ import annotations

import stat
from typing import Any

from forensics.model import Change, Entry, Kind
from forensics.render.common import path_fields

ENTRY_FIELDS = (
    "path",
    "path_bytes",
    "type",
    "mode",
    "uid",
    "gid",
    "size",
    "mtime_ns",
    "target",
    "target_bytes",
    "blake3",
    "rdev",
    "xattrs",
    "layer",
)

CHANGE_FIELDS = (
    "container",
    "container_id",
    "path",
    "path_bytes",
    "change",
    "details",
    "type",
    "mode",
    "uid",
    "gid",
    "size",
    "mtime_ns",
    "target",
    "target_bytes",
    "blake3",
    "layer",
    "via",
    "via_bytes",
    "lower_type",
    "lower_mode",
    "lower_uid",
    "lower_gid",
    "lower_size",
    "lower_blake3",
    "lower_layer",
)


def mode_text(entry: Entry) -> str:
    return f"{entry.mode:04o}"


def _stat_fields(entry: Entry, prefix: str = "") -> dict[str, Any]:
    """type, mode, owner and size (a directory's size is filesystem-specific: None)."""
    return {
        prefix + "type": entry.kind.value,
        prefix + "mode": mode_text(entry),
        prefix + "uid": entry.uid,
        prefix + "gid": entry.gid,
        prefix + "size": entry.size if entry.kind is not Kind.DIR else None,
    }


def _content_fields(entry: Entry) -> dict[str, Any]:
    """mtime, symlink target (with raw bytes when not UTF-8) and hash."""
    record: dict[str, Any] = {"mtime_ns": entry.mtime_ns}
    if entry.target is not None:
        record.update(path_fields(entry.target, "target"))
    if entry.blake3 is not None:
        record["blake3"] = entry.blake3
    return record


def entry_record(entry: Entry) -> dict[str, Any]:
    record: dict[str, Any] = path_fields(entry.path)
    record.update(_stat_fields(entry))
    record.update(_content_fields(entry))
    if entry.rdev is not None:
        record["rdev"] = entry.rdev
    record["xattrs"] = {name: value.hex() for name, value in entry.xattrs}
    record["layer"] = entry.layer_id
    return record


def change_record(change: Change) -> dict[str, Any]:
    record: dict[str, Any] = {"container": change.container_name, "container_id": change.container_id}
    record.update(path_fields(change.path))
    record["change"] = change.kind.value
    record["details"] = list(change.details)
    current = change.entry or change.lower
    if current is not None:
        record.update(_stat_fields(current))
        record.update(_content_fields(current))
    record["layer"] = change.entry.layer_id if change.entry is not None else change.layer
    if change.via is not None:
        record.update(path_fields(change.via, "via"))
    if change.lower is not None:
        lower = change.lower
        record.update(_stat_fields(lower, "lower_"))
        record.update({"lower_blake3": lower.blake3, "lower_layer": lower.layer_id})
    return record


# -- bodyfile (Sleuth Kit 3.x) ------------------------------------------------------

_BODY_TYPE = {
    Kind.FILE: "r",
    Kind.DIR: "d",
    Kind.SYMLINK: "l",
    Kind.CHAR: "c",
    Kind.BLOCK: "b",
    Kind.FIFO: "p",
    Kind.SOCKET: "s",
}


def body_name(raw: bytes) -> str:
    """A bodyfile name: reversible, one line, no ``|`` (the field separator).

    Valid UTF-8 stays; ``\\`` is doubled; ``|``, control bytes and invalid
    UTF-8 become ``\\xHH``.
    """
    text = raw.decode("utf-8", "surrogateescape")
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch == "|" or code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        else:
            out.append(ch)
    return "".join(out)


def body_mode(entry: Entry) -> str:
    letter = _BODY_TYPE[entry.kind]
    perms = stat.filemode(entry.kind.ifmt | entry.mode)[1:]
    return f"{letter}/{letter}{perms}"


def _seconds(ns: int | None) -> int:
    return 0 if ns is None else ns // 1_000_000_000


def bodyfile_line(entry: Entry, name: str) -> str:
    """``MD5|name|inode|mode_as_string|UID|GID|size|atime|mtime|ctime|crtime`` (seconds)."""
    return "|".join(
        (
            "0",
            name,
            str(entry.inode or 0),
            body_mode(entry),
            str(entry.uid),
            str(entry.gid),
            str(entry.size or 0),
            str(_seconds(entry.atime_ns)),
            str(_seconds(entry.mtime_ns)),
            str(_seconds(entry.ctime_ns)),
            "0",
        )
    )
