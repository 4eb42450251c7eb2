"""A lower entry and the entry that replaced it, classified (pure).

Two classifiers with different contracts:

- :func:`forensic_details` is o2f's own: content is judged by hash, every
  metadata field is compared, overlay bookkeeping is ignored.
- :func:`docker_stat_different` copies ``statDifferent`` from moby's
  go-archive ``changes_unix.go`` exactly, so ``--format docker`` stays
  set-equal to ``docker diff`` (content is never compared; size and mtime only
  when the mode lacks the S_IFDIR bit, which block devices and sockets share
  with directories, moby#9874).
"""

from __future__ import annotations

from forensics.model import Entry, Kind

DETAIL_ORDER = (
    # what differs (modified, copied-up)
    "type",
    "content",
    "target",
    "mode",
    "uid",
    "gid",
    "mtime",
    "xattrs",
    "rdev",
    "hardlink",
    "opaque",
    # why a path is gone (deleted) or where it came from (added)
    "whiteout",
    "replaced",
    "redirect",
    "literal-wh-file",
)
_S_IFDIR = 0o040000
_CAPABILITY = "security.capability"


def forensic_details(lower: Entry, upper: Entry) -> list[str]:
    """What differs between two merged-view entries of one path (hardlinks are judged by the caller)."""
    details = []
    if lower.kind is not upper.kind:
        details.append("type")
    elif upper.kind is Kind.FILE:
        if lower.blake3 != upper.blake3 or lower.size != upper.size:
            details.append("content")
    elif upper.kind is Kind.SYMLINK and lower.target != upper.target:
        details.append("target")
    if lower.mode != upper.mode:
        details.append("mode")
    if lower.uid != upper.uid:
        details.append("uid")
    if lower.gid != upper.gid:
        details.append("gid")
    if lower.mtime_ns != upper.mtime_ns:
        details.append("mtime")
    if lower.xattrs != upper.xattrs:
        details.append("xattrs")
    if (lower.rdev_major, lower.rdev_minor) != (
        upper.rdev_major,
        upper.rdev_minor,
    ) and lower.kind is upper.kind:
        details.append("rdev")
    return details


def docker_size(entry: Entry) -> int | None:
    """The size ``lstat`` reports through the merged mount: a symlink's is its target's length."""
    if entry.kind is Kind.SYMLINK:
        return len(entry.target or b"")
    if entry.kind is Kind.DIR:
        return None
    return entry.size


def _same_fs_time(a: int | None, b: int | None) -> bool:
    """moby sameFsTime: equal, or the same second with either side at 0 ns (tar truncation)."""
    if a == b:
        return True
    if a is None or b is None:
        return False
    sec_a, ns_a = divmod(a, 1_000_000_000)
    sec_b, ns_b = divmod(b, 1_000_000_000)
    return sec_a == sec_b and (ns_a == 0 or ns_b == 0)


def docker_stat_different(old: Entry, new: Entry) -> bool:
    """moby go-archive changes_unix.go statDifferent, field for field."""
    old_mode = old.kind.ifmt | old.mode
    new_mode = new.kind.ifmt | new.mode
    if (
        old_mode != new_mode
        or old.uid != new.uid
        or old.gid != new.gid
        or (old.rdev_major, old.rdev_minor) != (new.rdev_major, new.rdev_minor)
        or old.xattr(_CAPABILITY) != new.xattr(_CAPABILITY)
    ):
        return True
    if old_mode & _S_IFDIR == _S_IFDIR:
        return False
    return not _same_fs_time(old.mtime_ns, new.mtime_ns) or docker_size(old) != docker_size(new)
