"""The kernel as the oracle, shared by every differential test: a fixed base image, image-level
markers, random container operations, and the two views compared (the kernel's, mounted
read-only, walked with lstat; o2f's, rebuilt offline from a snapshot).

Used by tests/test_kernel_differential.py (Docker overlay2 trees), tests/test_podman.py
(containers/storage trees) and tests/test_containerd.py (containerd snapshotter trees). Needs
root to mount; the callers skip without it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

from blake3 import blake3
from hypothesis import strategies as st

from forensics import api
from forensics.analyze.diff import forensic_changes
from forensics.model import Kind
from tests import layerlang as ll

BASE = [
    ll.dir("/d1"),
    ll.file("/d1/a", b"alpha\n", mtime=1_700_000_000),
    ll.file("/d1/b", b"bravo\n", mode=0o600, mtime=1_700_000_000),
    ll.dir("/d1/s"),
    ll.file("/d1/s/deep", b"deep\n", mtime=1_700_000_000),
    ll.dir("/d2"),
    ll.file("/d2/c", b"charlie\n", uid=1000, gid=1000, mtime=1_700_000_000),
    ll.symlink("/d2/link", "../d1/a"),
    ll.file("/f", b"top file\n", mtime=1_700_000_000),
    ll.file("/hl1", b"linked\n", mtime=1_700_000_000),
    ll.hardlink("/hl2", "/hl1"),
    ll.fifo("/pipe"),
    ll.dir("/tree"),
    ll.file("/tree/x", b"x\n"),
]

# A second image layer: the image-level markers the kernel must honour below a container.
# One deterministic container scenario run under every image step, as a floor under hypothesis.
FIXED_SCENARIO = [
    ("append", "/d1/a", b"more"),
    ("rm-then-mkdir", "/d2", None),
    ("rename", "/d1/s", "/d1/n2"),
    ("hardlink", "/hl1", "/n1"),
    ("rewrite-same-size", "/d2/c", None),
    ("setxattr", "/f", b"v"),
    ("rm-rf", "/tree", None),
]

IMAGE_STEPS = {
    "none": [],
    "whiteout-file": [ll.whiteout("/d1/b")],
    "whiteout-dir": [ll.whiteout("/d1/s")],
    "opaque": [ll.opaque("/d2"), ll.file("/d2/new", b"new in image\n")],
    "file-over-dir": [ll.file("/tree", b"now a file\n")],
    "dir-over-file": [ll.dir("/f"), ll.file("/f/inner", b"inner\n")],
    "modify": [ll.file("/d1/a", b"alpha v2\n", mtime=1_710_000_000)],
}

PATHS = [
    "/d1",
    "/d1/a",
    "/d1/b",
    "/d1/s",
    "/d1/s/deep",
    "/d2",
    "/d2/c",
    "/d2/link",
    "/f",
    "/hl1",
    "/hl2",
    "/tree",
    "/tree/x",
    "/n1",
    "/d1/n2",
    "/d2/new",
]


def _not_a_file(full: str) -> bool:
    """The path (symlinks followed, as open() does) exists and is not a regular file."""
    try:
        return not stat.S_ISREG(os.stat(full).st_mode)
    except OSError:
        return False


def run_op(merged: Path, op: tuple) -> None:  # type: ignore[type-arg]
    name, path, arg = op
    full = str(merged) + path
    if name in ("create", "append", "rewrite-same-size") and _not_a_file(full):
        return  # opening a FIFO (made by mkfifo) would block the test forever; a device is no better
    if name == "rm-then-mkdir" and not (os.path.isdir(full) and not os.path.islink(full)):
        return  # shutil.rmtree opens the path before it checks it is a directory: a FIFO would block
    with contextlib.suppress(OSError, shutil.Error):
        if name == "mkdir":
            os.mkdir(full)
        elif name == "create":
            with open(full, "wb") as handle:
                handle.write(arg)
        elif name == "append":
            with open(full, "ab") as handle:
                handle.write(arg)
        elif name == "rewrite-same-size":
            st = os.lstat(full)
            with open(full, "r+b") as handle:
                data = handle.read()
                handle.seek(0)
                handle.write(bytes((b ^ 0x20) for b in data))
            os.utime(full, ns=(st.st_atime_ns, st.st_mtime_ns))
        elif name == "chmod":
            os.chmod(full, arg, follow_symlinks=False) if not os.path.islink(full) else None
        elif name == "chown":
            os.chown(full, arg, arg, follow_symlinks=False)
        elif name == "touch":
            os.utime(full, ns=(arg, arg), follow_symlinks=False)
        elif name == "rm":
            os.unlink(full)
        elif name == "rm-rf":
            shutil.rmtree(full) if os.path.isdir(full) and not os.path.islink(full) else os.unlink(full)
        elif name == "rm-then-mkdir":
            shutil.rmtree(full)
            os.mkdir(full)
            with open(full + "/fresh", "wb") as handle:
                handle.write(b"fresh\n")
        elif name == "rename":
            shutil.move(
                full, str(merged) + arg
            )  # EXDEV on a lower directory falls back to copy + delete, as mv does
        elif name == "symlink":
            os.symlink(arg, full)
        elif name == "hardlink":
            os.link(full, str(merged) + arg)
        elif name == "setxattr":
            os.setxattr(full, "user.o2f", arg, follow_symlinks=False)
        elif name == "mkfifo":
            os.mkfifo(full)


op_strategy = st.one_of(
    st.tuples(st.just("mkdir"), st.sampled_from(PATHS), st.none()),
    st.tuples(st.just("create"), st.sampled_from(PATHS), st.binary(max_size=8)),
    st.tuples(st.just("append"), st.sampled_from(PATHS), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("rewrite-same-size"), st.sampled_from(PATHS), st.none()),
    st.tuples(st.just("chmod"), st.sampled_from(PATHS), st.sampled_from([0o600, 0o755, 0o4755, 0o1777])),
    st.tuples(st.just("chown"), st.sampled_from(PATHS), st.sampled_from([0, 1000])),
    st.tuples(st.just("touch"), st.sampled_from(PATHS), st.sampled_from([1_600_000_000_123_456_789, 0])),
    st.tuples(st.just("rm"), st.sampled_from(PATHS), st.none()),
    st.tuples(st.just("rm-rf"), st.sampled_from(PATHS), st.none()),
    st.tuples(st.just("rm-then-mkdir"), st.sampled_from(PATHS), st.none()),
    st.tuples(st.just("rename"), st.sampled_from(PATHS), st.sampled_from(PATHS)),
    st.tuples(
        st.just("symlink"), st.sampled_from(PATHS), st.sampled_from(["/etc/shadow", "d1/a", "nowhere"])
    ),
    st.tuples(st.just("hardlink"), st.sampled_from(PATHS), st.sampled_from(PATHS)),
    st.tuples(st.just("setxattr"), st.sampled_from(PATHS), st.binary(min_size=1, max_size=4)),
    st.tuples(st.just("mkfifo"), st.sampled_from(PATHS), st.none()),
)


def kernel_view(
    root: Path, upper: str, lower: str, driver: str = "overlay2", diff: str = "diff"
) -> dict[bytes, tuple]:  # type: ignore[type-arg]
    """The merged view as the kernel shows it: the layers mounted read-only, walked with lstat.

    *lower* is the upper layer's ``lower`` file (``l/A:l/B``), resolved in ``<root>/<driver>/``;
    the upper layer's files are in ``<upper>/<diff>`` there. For a containerd root:
    ``driver="io.containerd.snapshotter.v1.overlayfs/snapshots"``, ``diff="fs"``, *lower*
    ``4/fs:3/fs`` (the parent snapshots, nearest first).
    """
    overlay2 = root / driver
    target = root.parent / "kernel-view"
    target.mkdir(exist_ok=True)
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={upper}/{diff}:{lower},ro", str(target)],
        cwd=overlay2,
        check=True,
    )
    try:
        out: dict[bytes, tuple] = {}  # type: ignore[type-arg]
        base = os.fsencode(target)
        for dirpath, dirnames, filenames in os.walk(base):
            for name in dirnames + filenames:
                full = os.path.join(dirpath, name)
                out[full[len(base) :]] = describe(full)
        return out
    finally:
        subprocess.run(["umount", str(target)], check=True)


def describe(full: bytes) -> tuple:  # type: ignore[type-arg]
    st = os.lstat(full)
    kind = Kind.from_mode(st.st_mode)
    digest = target = None
    if kind is Kind.FILE:
        with open(full, "rb") as handle:
            digest = blake3(handle.read()).hexdigest()
    if kind is Kind.SYMLINK:
        target = os.readlink(full)
    xattrs = tuple(
        sorted(
            (n, os.getxattr(full, n, follow_symlinks=False))
            for n in os.listxattr(full, follow_symlinks=False)
        )
    )
    rdev = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" if kind in (Kind.CHAR, Kind.BLOCK) else None
    size = st.st_size if kind is Kind.FILE else None
    return (
        kind,
        st.st_mode & 0o7777,
        st.st_uid,
        st.st_gid,
        size,
        st.st_mtime_ns,
        target,
        digest,
        rdev,
        xattrs,
    )


def o2f_view(snapshot: Path, container: str) -> dict[bytes, tuple]:  # type: ignore[type-arg]
    analysis, _ = api.open_analysis(str(snapshot))
    entries = api.list_view(analysis, analysis.find_container(container))
    out = {}
    for e in entries:
        if e.path == b"/":
            continue
        size = e.size if e.kind is Kind.FILE else None
        out[e.path] = (e.kind, e.mode, e.uid, e.gid, size, e.mtime_ns, e.target, e.blake3, e.rdev, e.xattrs)
    analysis.snapshot.close()
    return out


def assert_views_equal(mine: dict[bytes, tuple], kernel: dict[bytes, tuple], ops: object) -> None:  # type: ignore[type-arg]
    """o2f's offline view (:func:`o2f_view`) is the kernel's (:func:`kernel_view`), path by path."""
    assert set(mine) == set(kernel), {
        "only o2f": sorted(set(mine) - set(kernel)),
        "only kernel": sorted(set(kernel) - set(mine)),
    }
    for path in sorted(kernel):
        assert mine[path] == kernel[path], (path, ops)


def scoped_report_equals_full_report(snapshot: Path) -> None:
    """The fast path (image views scoped to what the upper layers touch) keeps the full path's contract."""
    full, _ = api.open_analysis(str(snapshot))
    expected = {c.id: forensic_changes(c, full.container_views(c)) for c in full.containers}
    scoped, _ = api.open_analysis(str(snapshot))
    result = api.diff(scoped, None)
    assert {c.id: changes for c, changes in result.reports} == expected
    full.snapshot.close()
    scoped.snapshot.close()
