"""Overlay markers as numbered predicates (see docs/overlay-rules.md).

Each rule cites the kernel document (Documentation/filesystems/overlayfs.rst)
or engine file it follows; its test carries the same number.
"""

from __future__ import annotations

from forensics.model import Entry, Kind

OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
REDIRECT_XATTRS = ("trusted.overlay.redirect", "user.overlay.redirect")
METACOPY_XATTRS = ("trusted.overlay.metacopy", "user.overlay.metacopy")
PRIVATE_PREFIXES = ("trusted.overlay.", "user.overlay.")
# The tar form of the markers (moby go-archive whiteouts.go): `.wh.<name>` and `.wh..wh..opq`.
TAR_WHITEOUT_PREFIX = b".wh."
TAR_OPAQUE_NAME = b".wh..wh..opq"


def is_whiteout(entry: Entry) -> bool:
    """R1: overlayfs records a deletion as a 0/0 character device (overlayfs.rst "whiteouts")."""
    return entry.kind is Kind.CHAR and entry.rdev_major == 0 and entry.rdev_minor == 0


def is_opaque(entry: Entry) -> bool:
    """R2: a directory with ``trusted.overlay.opaque=y`` (or ``user.`` in userxattr mode) hides
    everything below it in lower layers (overlayfs.rst "whiteouts and opaque directories";
    containerd continuity fs/diff_linux.go checks trusted.* then user.*)."""
    if entry.kind is not Kind.DIR:
        return False
    return any(entry.xattr(name) == b"y" for name in OPAQUE_XATTRS)


def redirect_of(entry: Entry) -> bytes | None:
    """R3: a renamed directory continues from the lower path in its redirect xattr
    (overlayfs.rst "redirect_dir"): absolute from the layer root, or relative to its parent."""
    if entry.kind is not Kind.DIR:
        return None
    for name in REDIRECT_XATTRS:
        value = entry.xattr(name)
        if value is not None:
            return value
    return None


def is_metacopy(entry: Entry) -> bool:
    """R4: a metacopy file holds only metadata; its data comes from the lower file
    (overlayfs.rst "metadata only copy up")."""
    return entry.kind is Kind.FILE and any(entry.xattr(name) is not None for name in METACOPY_XATTRS)


def is_private_xattr(name: str) -> bool:
    """R5: ``trusted.overlay.*`` (and ``user.overlay.*`` in userxattr mode) are the kernel's
    bookkeeping (origin, impure, uuid, ...): kept in the snapshot, never part of a merged view."""
    return name.startswith(PRIVATE_PREFIXES)


def private_xattr_names(entry: Entry) -> list[str]:
    return [name for name, _ in entry.xattrs if is_private_xattr(name)]


def visible_xattrs(entry: Entry) -> tuple[tuple[str, bytes], ...]:
    """The xattrs a process inside the container sees (R5)."""
    if not entry.xattrs:
        return ()
    return tuple((name, value) for name, value in entry.xattrs if not is_private_xattr(name))
