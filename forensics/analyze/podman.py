"""Exactly what `podman diff` prints (Podman 4.x on containers/storage's overlay driver).

`podman diff` (libpod ``diff.go`` ``GetDiff``) asks containers/storage for the changes of the
container's layer against its parent. With native overlay diff, the overlay driver
(``drivers/overlay/overlay.go`` ``Changes``) hands the upperdir and the lower diff
directories, nearest first, to ``archive.OverlayChanges`` (``pkg/archive/changes_linux.go``),
which runs the walk in ``changes()`` (``pkg/archive/changes.go``). Unlike `docker diff`
(go-archive ``ChangesDirs``: two merged trees compared), it walks the upperdir alone and looks
each path up in the raw lower layers. (That is the *native* diff, ``podman info``: ``Native Overlay
Diff: "true"``; with a mount program such as fuse-overlayfs, or when the driver's native-diff check
fails, Podman compares two mounted trees instead, which this module does not copy.) So:

- P1  a whiteout (character device 0/0) in the upperdir is ``D <path>`` (``overlayDeletedFile``);
- P2  an upperdir directory with ``trusted.overlay.opaque=y`` (exactly ``y``; ``user.overlay.*`` is
      not read) is ``D <dir>`` when some lower layer has that path and it is not a whiteout there,
      checked layer by layer, nearest first; a whiteout of the path or of an ancestor in a layer
      without the path stops the search (``overlayDeletedFile``). Its children are then walked as
      any other path;
- P3  any other path is ``A`` unless a lower layer has it: layer by layer, nearest first, a
      whiteout of the path or of one of its ancestors in that layer makes it ``A``; else the first
      layer that has the path makes it ``C`` (``changes()`` "layerScan"). So every copy-up is ``C``,
      even one that changed nothing (a chmod back, ``ln``, an xattr-only edit), and a path an
      opaque directory of a lower layer hides still counts as present below it;
- P4  a directory found in a lower layer is left out when its mode (type and 07777), size and
      mtime (``sameFsTime``) equal the lower one's: only directories whose metadata changed are
      ``C`` by themselves (``changes()``, moby#13590);
- P5  every ancestor of an ``A`` or ``D`` path that was not reported itself is ``C`` (``changes()``
      "tail" of ``changedDirs``);
- P6  lower layers are looked up with ``os.Stat``, which follows symlinks: a relative symlink in a
      lower layer leads on inside that layer; an absolute one (or one climbing above the layer root)
      leads to the host that ran Podman, which a snapshot does not hold: o2f counts such a path as
      present there (``C``), as it is on any host that has the target;
- P7  a lower lookup that fails otherwise (a non-directory in the middle of the path, ENOTDIR, or
      more than 40 symlinks, ELOOP) makes `podman diff` itself fail: :class:`PodmanDiffError`;
- P8  libpod drops its own mount points by exact path (``initInodes``): ``/dev``, ``/etc/hostname``,
      ``/etc/hosts``, ``/etc/resolv.conf``, ``/etc/mtab``, ``/proc``, ``/run``, ``/run/.containerenv``,
      ``/run/notify``, ``/run/secrets``, ``/run/podman-init``, ``/sys``; the ``C`` of a parent that
      P5 added for them stays;
- P9  names are printed raw (``fmt.Println`` of ``Change.String()``): invalid UTF-8 stays as it is and
      a newline in a name splits the line.
"""

from __future__ import annotations

from collections.abc import Callable

from forensics.analyze.containers import ContainerViews
from forensics.errors import O2fError
from forensics.model import Entry, Kind, ancestors, join_path, parent_path, path_sort_key

# libpod/diff.go initInodes (define.ContainerInitPath is /run/podman-init).
INIT_INODES = frozenset(
    {
        b"/dev",
        b"/etc/hostname",
        b"/etc/hosts",
        b"/etc/resolv.conf",
        b"/proc",
        b"/run",
        b"/run/notify",
        b"/run/.containerenv",
        b"/run/secrets",
        b"/run/podman-init",
        b"/sys",
        b"/etc/mtab",
    }
)
OPAQUE_XATTR = "trusted.overlay.opaque"  # the only one overlayDeletedFile reads
MAX_SYMLINKS = 40  # the kernel's limit on symlinks followed in one lookup (ELOOP)


class PodmanDiffError(O2fError):
    """`podman diff` itself would fail on this container (P7)."""


class _Outside:
    """A lookup that left the layer through a symlink (P6): present, on a host o2f cannot see."""


OUTSIDE = _Outside()
Lookup = Entry | _Outside | None


def _whiteout(found: Lookup) -> bool:
    return (
        isinstance(found, Entry)
        and found.kind is Kind.CHAR
        and found.rdev_major == 0
        and found.rdev_minor == 0
    )


def stat_in_layer(index: dict[bytes, Entry], path: bytes) -> Lookup:
    """``os.Stat(<layer diff> + path)``: the entry the path leads to, following every symlink.

    None when nothing is there (ENOENT); :data:`OUTSIDE` when a symlink leads out of the layer
    (P6). Raises :class:`PodmanDiffError` for ENOTDIR and ELOOP (P7) with the errno name, for the
    caller to word.
    """
    pending = [part for part in reversed(path.split(b"/")) if part]
    current = b"/"
    followed = 0
    while pending:
        name = pending.pop()
        if name == b".":
            continue
        if name == b"..":
            if current == b"/":
                return OUTSIDE
            current = parent_path(current)
            continue
        child = join_path(current, name)
        entry = index.get(child)
        if entry is None:
            return None
        if entry.kind is Kind.SYMLINK:
            followed += 1
            if followed > MAX_SYMLINKS:
                raise PodmanDiffError("ELOOP")
            target = entry.target or b""
            if target.startswith(b"/"):
                return OUTSIDE
            pending.extend(part for part in reversed(target.split(b"/")) if part)
            continue
        if not pending:
            return entry
        if entry.kind is not Kind.DIR:
            raise PodmanDiffError("ENOTDIR")
        current = child
    return index.get(current)


def same_fs_time(a: int | None, b: int | None) -> bool:
    """``sameFsTime``/``sameFSTimePair`` (pkg/archive/changes.go of containers/storage 1.4x): equal
    times, or the same second when either side has 0 ns, or one second apart when the later side
    has 0 ns (a tar writer rounded it up)."""
    if a is None or b is None:
        return True  # unknown to the source: nothing to compare
    a_sec, a_ns = divmod(a, 1_000_000_000)
    b_sec, b_ns = divmod(b, 1_000_000_000)
    if a_sec == b_sec and a_ns == b_ns:
        return True
    if a_ns != 0 and b_ns != 0:
        return False
    if a_sec == b_sec:
        return True
    return (b_ns == 0 and a_sec == b_sec - 1) or (a_ns == 0 and a_sec - 1 == b_sec)


def _same_dir(upper: Entry, lower: Entry) -> bool:
    """P4: ``f.Size() == stat.Size() && f.Mode() == stat.Mode() && sameFsTime(...)`` for two directories.

    A size the source could not provide (a tar records none for directories) counts as equal.
    """
    if lower.kind is not Kind.DIR:
        return False
    sizes_differ = upper.size is not None and lower.size is not None and upper.size != lower.size
    return not sizes_differ and upper.mode == lower.mode and same_fs_time(upper.mtime_ns, lower.mtime_ns)


class _Scan:
    def __init__(self, lowers: list[dict[bytes, Entry]], label: str) -> None:
        self.lowers = lowers
        self.label = label

    def stat(self, index: dict[bytes, Entry], path: bytes, *, tolerate_enotdir: bool) -> Lookup:
        try:
            return stat_in_layer(index, path)
        except PodmanDiffError as exc:
            if tolerate_enotdir and str(exc) == "ENOTDIR":
                return None  # overlayLowerContainsWhiteout tolerates ENOTDIR
            raise PodmanDiffError(
                f"podman diff fails on container {self.label}: looking up "
                f"{path.decode('utf-8', 'replace')} in a lower layer gives {exc}."
            ) from None

    def whiteout_on_way(self, index: dict[bytes, Entry], path: bytes) -> bool:
        """A whiteout of the path or of one of its ancestors in this layer (overlayLowerContainsWhiteout)."""
        if _whiteout(self.stat(index, path, tolerate_enotdir=True)):
            return True
        return any(_whiteout(self.stat(index, d, tolerate_enotdir=True)) for d in reversed(ancestors(path)))

    def deleted(self, entry: Entry) -> bool:
        """P1, P2: overlayDeletedFile."""
        if _whiteout(entry):
            return True
        if entry.kind is not Kind.DIR or entry.xattr(OPAQUE_XATTR) != b"y":
            return False
        path = entry.path
        for index in self.lowers:
            found = self.stat(index, path, tolerate_enotdir=True)
            if found is not None:
                return not _whiteout(found)
            for directory in reversed(ancestors(path)):
                if _whiteout(self.stat(index, directory, tolerate_enotdir=True)):
                    return False
        return False

    def present_below(self, entry: Entry) -> Lookup:
        """P3: the first lower entry the walk compares with, or None (added)."""
        path = entry.path
        for index in self.lowers:
            if self.whiteout_on_way(index, path):
                return None
            found = self.stat(index, path, tolerate_enotdir=False)
            if found is not None:
                return found
        return None


def podman_changes(cv: ContainerViews) -> list[tuple[str, bytes]]:
    """Exactly what `podman diff` prints, as (letter, path) pairs sorted by path (Podman's own
    order is the walk's, with parents added late). Raises :class:`PodmanDiffError` when Podman
    would fail (P7)."""
    index_of: Callable[[str], dict[bytes, Entry]] | None = cv.layer_index
    if index_of is None:
        raise ValueError("podman_changes needs views made by Analysis.container_views")
    container = cv.stack.container
    scan = _Scan([index_of(layer) for layer in cv.stack.baseline], container.name or container.id)
    changes: list[tuple[str, bytes]] = []
    changed_dirs: set[bytes] = set()
    for entry in sorted(cv.upper_entries, key=lambda e: path_sort_key(e.path)):
        path = entry.path
        if path == b"/":
            continue
        if scan.deleted(entry):
            letter = "D"
        else:
            lower = scan.present_below(entry)
            if lower is None:
                letter = "A"
            elif entry.kind is Kind.DIR and isinstance(lower, Entry) and _same_dir(entry, lower):
                continue  # P4: not recorded, and not in changedDirs either
            else:
                letter = "C"
        if entry.kind is Kind.DIR:
            changed_dirs.add(path)
        if letter in ("A", "D"):  # P5
            for parent in ancestors(path):
                if parent not in changed_dirs:
                    changes.append(("C", parent))
                    changed_dirs.add(parent)
        changes.append((letter, path))
    kept = [(letter, path) for letter, path in changes if path not in INIT_INODES]  # P8
    return sorted(kept, key=lambda lp: path_sort_key(lp[1]))
