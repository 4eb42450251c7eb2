"""Readers for the corpus ground-truth files (docker-a ``truth/`` and ``samples/truth/``).

Formats are those of ``shared/corpora/docker-a/README.md``:

- ``<name>.merged[-live].tsv`` (and ``images/*.tsv``, ``layers/*.tsv``): "TSV format" - tab
  separated, ``#`` header, ``path type mode uid gid size target blake3 rdev hardlink_group mtime
  xattrs``; ``path``, ``target`` and ``hardlink_group`` escaped (``\\\\``, ``\\t``, ``\\n``, ``\\r``,
  ``\\xHH``).
- ``<name>.diff``: the exact ``docker diff`` output, ``[ACD] /path`` lines whose names may hold raw
  newlines and tabs (and U+FFFD for invalid UTF-8).
- ``<name>.expected.tsv``: ``path change details``.
- ``containers.tsv``: one row per container, columns named by the ``#`` header.

Paths come back as raw ``bytes``, exactly as the filesystem had them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_ESCAPE = re.compile(r"\\(\\|t|n|r|x[0-9a-fA-F]{2})")
_SIMPLE = {"\\": b"\\", "t": b"\t", "n": b"\n", "r": b"\r"}


def unescape(text: str) -> bytes:
    """The raw bytes of an escaped TSV field (README "TSV format")."""
    out = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(text):
        out += text[pos : match.start()].encode("utf-8")
        token = match.group(1)
        out += _SIMPLE[token] if token in _SIMPLE else bytes([int(token[1:], 16)])
        pos = match.end()
    out += text[pos:].encode("utf-8")
    return bytes(out)


def _optional(text: str) -> str | None:
    return None if text == "-" else text


@dataclass(frozen=True)
class TruthEntry:
    """One line of a merged-view TSV, decoded."""

    path: bytes
    type: str  # f d l c b p s (h in layer listings)
    mode: int
    uid: int
    gid: int
    size: int | None
    target: bytes | None
    blake3: str | None
    rdev: str | None  # "major:minor"
    hardlink_group: bytes | None
    mtime: int
    xattrs: dict[str, bytes]


def parse_xattrs(text: str) -> dict[str, bytes]:
    if text == "-":
        return {}
    out = {}
    for item in text.split(";"):
        name, _, value = item.partition("=")
        out[name] = bytes.fromhex(value)
    return out


def load_merged(path: Path) -> dict[bytes, TruthEntry]:
    """A merged-view TSV as raw path -> entry."""
    rows: dict[bytes, TruthEntry] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        f = line.split("\t")
        if len(f) != 12:
            raise ValueError(f"{path}: expected 12 fields, got {len(f)}: {line!r}")
        raw = unescape(f[0])
        rows[raw] = TruthEntry(
            path=raw,
            type=f[1],
            mode=int(f[2], 8),
            uid=int(f[3]),
            gid=int(f[4]),
            size=None if f[5] == "-" else int(f[5]),
            target=None if f[6] == "-" else unescape(f[6]),
            blake3=_optional(f[7]),
            rdev=_optional(f[8]),
            hardlink_group=None if f[9] == "-" else unescape(f[9]),
            mtime=int(f[10]),
            xattrs=parse_xattrs(f[11]),
        )
    return rows


def hardlink_partition(rows: dict[bytes, TruthEntry]) -> set[frozenset[bytes]]:
    """Paths sharing an inode, as a set of groups (groups of one are left out)."""
    groups: dict[bytes, set[bytes]] = {}
    for row in rows.values():
        if row.hardlink_group is not None:
            groups.setdefault(row.hardlink_group, set()).add(row.path)
    return {frozenset(members) for members in groups.values() if len(members) > 1}


_DIFF_SPLIT = re.compile(rb"\n(?=[ACD] /)")


def load_diff(path: Path) -> set[tuple[str, bytes]]:
    """``docker diff`` output as a set of (letter, raw path) pairs (Docker's order is random)."""
    return parse_docker_diff(path.read_bytes())


def parse_docker_diff(data: bytes) -> set[tuple[str, bytes]]:
    if data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        return set()
    out = set()
    for line in _DIFF_SPLIT.split(data):
        letter, space, name = line[:1], line[1:2], line[2:]
        if letter not in (b"A", b"C", b"D") or space != b" " or not name.startswith(b"/"):
            raise ValueError(f"not a docker diff line: {line!r}")
        out.add((letter.decode(), name))
    return out


@dataclass(frozen=True)
class Expected:
    """One row of ``<name>.expected.tsv``."""

    path: bytes
    change: str  # added deleted deleted-child type-changed content-modified target-modified metadata-modified
    details: str

    @property
    def fields(self) -> set[str]:
        """The metadata fields a row names (``mode``, ``uid``, ``mtime``, ``hardlink_group``, ...)."""
        if self.change not in ("metadata-modified", "content-modified", "target-modified"):
            return set()
        names = set()
        for part in self.details.split("; "):
            word = part.split(" ", 1)[0]
            if word in ("mode", "uid", "gid", "mtime", "rdev", "xattrs", "hardlink_group", "size"):
                names.add(word)
        return names


def load_expected(path: Path) -> list[Expected]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        f = line.split("\t")
        rows.append(Expected(unescape(f[0]), f[1], f[2] if len(f) > 2 else ""))
    return rows


def load_table(path: Path) -> list[dict[str, str]]:
    """A truth TSV whose first line is a ``#`` header naming the columns: one dict per row."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].lstrip("#").split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:] if line]


def load_containers(path: Path) -> dict[str, dict[str, str]]:
    """``containers.tsv`` as name -> {column: value}, columns named by the header (containerd-a's
    has no name column: its rows are keyed by ``container_id``)."""
    return {row.get("name") or row["container_id"]: row for row in load_table(path)}


def merged_truth(truth_dir: Path, name: str, running: bool) -> Path:
    """The merged view to compare with: the live one for running containers (all xattrs, sockets)."""
    live = truth_dir / f"{name}.merged-live.tsv"
    return live if running and live.exists() else truth_dir / f"{name}.merged.tsv"
