"""Mount tables: which overlay mounts a host had over a data root.

A seized host's mount table is the only record of which layers were stacked,
in which order, for each running container. Three textual forms turn up in
evidence: ``/proc/self/mountinfo``, ``/proc/mounts`` and ``mount(8)`` output;
:func:`parse_mount_table` reads any of them, line by line.

Paths come back as raw bytes: the kernel octal-escapes space, tab, newline and
backslash (``\\040`` ...), and those escapes are undone exactly, so a path
with odd bytes matches the same path found on disk.
"""

from __future__ import annotations

import re
from pathlib import Path

from forensics.errors import MountTableError
from forensics.model import Mount

LIVE_MOUNTINFO = Path("/proc/self/mountinfo")
"""Where :func:`read_live_mountinfo` looks (a module constant so tests can point it elsewhere)."""

OVERLAY_TYPES = frozenset({"overlay", "fuse.fuse-overlayfs"})
"""File system types whose options name lower/upper/work directories."""

_OCTAL = re.compile(rb"\\([0-3][0-7]{2})")
_MAJOR_MINOR = re.compile(r"\d+:\d+")
_DIGITS = re.compile(rb"\d+")
# mount(8): "SRC on TARGET type TYPE (OPTIONS)", optionally followed by " [LABEL]" (mount -l).
_MOUNT8 = re.compile(rb"(?P<src>.*?) on (?P<target>.*) type (?P<type>\S+) \((?P<opts>.*)\)(?: \[[^\]]*\])?")


def parse_mount_table(data: bytes, origin: str = "<mounts>") -> list[Mount]:
    """Parse a mount table in mountinfo, ``/proc/mounts`` or ``mount(8)`` form, one Mount per line.

    The format is recognised per line, so a table pasted together from several
    sources still parses; blank lines are skipped. A line in none of the three
    forms raises :class:`MountTableError` rather than being dropped, because a
    silently missing mount would hide a container from the analysis.
    """
    mounts: list[Mount] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        body = raw[:-1] if raw.endswith(b"\r") else raw
        if not body.strip():
            continue
        line = raw.decode("utf-8", "surrogateescape")
        mount = _parse_mountinfo(body, line) or _parse_proc_mounts(body, line) or _parse_mount8(body, line)
        if mount is None:
            shown = line if len(line) <= 120 else line[:117] + "..."
            raise MountTableError(
                f"Line {number} of {origin} is in no known mount table format "
                f"(mountinfo, /proc/mounts or mount(8)): {shown!r}."
            )
        mounts.append(mount)
    return mounts


def read_live_mountinfo() -> list[Mount]:
    """The mount table of the host o2f runs on; empty where there is no procfs (not Linux, a jail)."""
    try:
        data = LIVE_MOUNTINFO.read_bytes()
    except FileNotFoundError:
        return []
    return parse_mount_table(data, str(LIVE_MOUNTINFO))


def mounts_referencing(mounts: list[Mount], data_root: bytes) -> list[Mount]:
    """The mounts that touch ``data_root``: mount point, source or an overlay directory inside it.

    Used to tell whether a live host's table concerns the collected source.
    Containment is by path component (``/var/lib/docker2`` is not inside
    ``/var/lib/docker``); relative paths (Docker's ``l/<short>`` lowerdirs when
    the mount data is too long) cannot be placed and never match.
    """
    root = _components(data_root)
    if root is None:
        return []
    found: list[Mount] = []
    for mount in mounts:
        paths = [mount.mount_point, mount.source, *mount.lowerdirs, mount.upperdir, mount.workdir]
        if any(path is not None and _is_inside(path, root) for path in paths):
            found.append(mount)
    return found


# --- the three line formats --------------------------------------------------


def _parse_mountinfo(body: bytes, line: str) -> Mount | None:
    """``ID PARENT MAJ:MIN ROOT POINT OPTS [OPTIONAL...] - TYPE SOURCE SUPER_OPTS`` (proc(5))."""
    fields = body.split(b" ")
    if len(fields) < 10 or not (_DIGITS.fullmatch(fields[0]) and _DIGITS.fullmatch(fields[1])):
        return None
    try:
        separator = fields.index(b"-", 6)
    except ValueError:
        return None
    major_minor = _text(fields[2])
    if separator != len(fields) - 4 or not _MAJOR_MINOR.fullmatch(major_minor):
        return None
    fs_type = _text(decode_octal(fields[separator + 1]))
    options = _text(fields[5])
    super_options = _text(fields[separator + 3])
    # overlay reports lowerdir= etc. as super options; fall back to the
    # per-mount options for FUSE variants that show them there.
    overlay = _overlay_dirs(fs_type, super_options) or _overlay_dirs(fs_type, options)
    return Mount(
        mount_point=decode_octal(fields[4]),
        fs_type=fs_type,
        source=decode_octal(fields[separator + 2]),
        options=options,
        mount_id=int(fields[0]),
        parent_id=int(fields[1]),
        major_minor=major_minor,
        root=decode_octal(fields[3]),
        super_options=super_options,
        lowerdirs=overlay[0] if overlay else (),
        upperdir=overlay[1] if overlay else None,
        workdir=overlay[2] if overlay else None,
        line=line,
    )


def _parse_proc_mounts(body: bytes, line: str) -> Mount | None:
    """``SOURCE POINT TYPE OPTIONS FREQ PASSNO`` (fstab(5) layout, as /proc/mounts writes it)."""
    fields = body.split(b" ")
    if len(fields) != 6 or not (_DIGITS.fullmatch(fields[4]) and _DIGITS.fullmatch(fields[5])):
        return None
    if not fields[1] or not fields[2] or not fields[3]:
        return None
    return _simple_mount(fields[0], fields[1], fields[2], fields[3], line)


def _parse_mount8(body: bytes, line: str) -> Mount | None:
    """``SOURCE on POINT type TYPE (OPTIONS)``, what ``mount`` with no arguments prints."""
    match = _MOUNT8.fullmatch(body)
    if match is None or not match["target"]:
        return None
    return _simple_mount(match["src"], match["target"], match["type"], match["opts"], line)


def _simple_mount(source: bytes, point: bytes, fs_type: bytes, options: bytes, line: str) -> Mount:
    """A Mount from the four fields the two non-mountinfo formats share."""
    type_text = _text(decode_octal(fs_type))
    options_text = _text(options)
    overlay = _overlay_dirs(type_text, options_text)
    return Mount(
        mount_point=decode_octal(point),
        fs_type=type_text,
        source=decode_octal(source),
        options=options_text,
        lowerdirs=overlay[0] if overlay else (),
        upperdir=overlay[1] if overlay else None,
        workdir=overlay[2] if overlay else None,
        line=line,
    )


# --- overlay options -----------------------------------------------------------

_OverlayDirs = tuple[tuple[bytes, ...], bytes | None, bytes | None]


def _overlay_dirs(fs_type: str, options: str) -> _OverlayDirs | None:
    """Lower, upper and work directories named in an overlay option string; None if it names none.

    Two escape layers are undone in order: the kernel's octal escapes of the
    shown value, then overlayfs's own backslash escapes in ``lowerdir=``,
    ``upperdir=`` and ``workdir=`` (``\\:`` keeps a colon inside one lower
    directory). ``lowerdir+=`` and ``datadir+=`` (kernel 6.8+) take one
    unescaped path each, so only an escaped comma is unescaped there.
    """
    if fs_type not in OVERLAY_TYPES:
        return None
    lowerdirs: list[bytes] = []
    upperdir: bytes | None = None
    workdir: bytes | None = None
    seen = False
    for option in split_options(options.encode("utf-8", "surrogateescape")):
        key, eq, value = option.partition(b"=")
        if not eq:
            continue
        if key == b"lowerdir":
            # Legacy form replaces any earlier list; "::" separates data-only layers (empty parts).
            parts = _split_unescaped(decode_octal(value), b":")
            lowerdirs = [_unescape(part) for part in parts if part]
        elif key in (b"lowerdir+", b"datadir+"):
            # A backslash-comma belongs to the option string, not the path: undo it before the octal escapes.
            lowerdirs.append(decode_octal(value.replace(b"\\,", b",")))
        elif key == b"upperdir":
            upperdir = _unescape(decode_octal(value))
        elif key == b"workdir":
            workdir = _unescape(decode_octal(value))
        else:
            continue
        seen = True
    if not seen:
        return None
    return tuple(lowerdirs), upperdir, workdir


def split_options(options: bytes) -> list[bytes]:
    """Split a comma-separated option string on commas not escaped by a backslash.

    The kernel shows a comma inside a value as ``\\054``, but option strings
    from user space (and some kernels) carry ``\\,``; both stay in one option.
    """
    return _split_unescaped(options, b",")


def _split_unescaped(value: bytes, separator: bytes) -> list[bytes]:
    """Split on ``separator`` except where a backslash escapes it; escapes are kept as they are."""
    parts: list[bytes] = []
    start = 0
    index = 0
    size = len(value)
    sep = separator[0]
    backslash = ord("\\")
    while index < size:
        byte = value[index]
        if byte == backslash:
            index += 2
            continue
        if byte == sep:
            parts.append(value[start:index])
            start = index + 1
        index += 1
    parts.append(value[start:])
    return parts


def _unescape(value: bytes) -> bytes:
    """Overlayfs's path unescape: a backslash makes the next byte literal (``\\:`` -> ``:``)."""
    if b"\\" not in value:
        return value
    return re.sub(rb"\\(.?)", rb"\1", value, flags=re.DOTALL)


# --- small helpers ---------------------------------------------------------------


def decode_octal(field: bytes) -> bytes:
    """Undo the kernel's octal escapes (``\\040`` space, ``\\011`` tab, ``\\012`` newline, ``\\134`` ``\\``).

    Kept as exact bytes: a path must compare equal to the same path read from disk.
    """
    if b"\\" not in field:
        return field
    return _OCTAL.sub(lambda match: bytes([int(match.group(1), 8)]), field)


def _text(raw: bytes) -> str:
    """Bytes as text without losing any: invalid UTF-8 survives as surrogates."""
    return raw.decode("utf-8", "surrogateescape")


def _components(path: bytes) -> tuple[bytes, ...] | None:
    """The components of an absolute path (``//`` and ``.`` ignored); None for a relative one."""
    if not path.startswith(b"/"):
        return None
    return tuple(part for part in path.split(b"/") if part not in (b"", b"."))


def _is_inside(path: bytes, root: tuple[bytes, ...]) -> bool:
    """Whether ``path`` is ``root`` or below it, comparing whole components."""
    parts = _components(path)
    return parts is not None and parts[: len(root)] == root
