"""Mount table parsing, against the real host tables of corpus docker-a and synthetic lines."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forensics.capture import mounts as mounts_module
from forensics.capture.mounts import mounts_referencing, parse_mount_table
from forensics.errors import MountTableError
from forensics.model import Mount

CORPUS = Path("/work/shared/corpora/docker-a")
OVERLAY2 = b"/var/lib/docker/overlay2"
LOWER_LINK = re.compile(rb"/var/lib/docker/overlay2/l/[A-Z2-7]{26}")

needs_corpus = pytest.mark.skipif(not (CORPUS / "mountinfo.txt").exists(), reason="corpus docker-a absent")


# --- the real tables -------------------------------------------------------------


@pytest.fixture(scope="module")
def running() -> dict[str, str]:
    """name -> mount id (overlay2 directory) of the containers running at the seize moment."""
    result: dict[str, str] = {}
    for row in (CORPUS / "truth" / "containers.tsv").read_text().splitlines():
        if row.startswith("#") or not row:
            continue
        fields = row.split("\t")
        if fields[2] == "running":
            result[fields[0]] = fields[6]
    assert sorted(result) == ["a-idle", "a-web", "a-worker"]
    return result


@pytest.fixture(scope="module")
def layer_files(running: dict[str, str]) -> dict[str, bytes]:
    """The ``lower`` and ``link`` files of the running containers' layers, read from the seized tar."""
    wanted = {}
    for mount_id in running.values():
        for layer in (mount_id, mount_id + "-init"):
            for name in ("lower", "link"):
                wanted[f"var/lib/docker/overlay2/{layer}/{name}"] = f"{layer}/{name}"
    found: dict[str, bytes] = {}
    with tarfile.open(CORPUS / "data-root.tar.gz") as tar:
        for member in tar:
            key = wanted.get(member.name)
            if key is not None and member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                found[key] = handle.read()
    assert len(found) == len(wanted)
    return found


@pytest.fixture(scope="module", params=["mountinfo.txt", "mounts.txt"])
def table(request: pytest.FixtureRequest) -> list[Mount]:
    name = request.param
    return parse_mount_table((CORPUS / name).read_bytes(), name)


def _by_point(mounts: list[Mount]) -> dict[bytes, Mount]:
    return {mount.mount_point: mount for mount in mounts if mount.fs_type == "overlay"}


@needs_corpus
def test_real_table_overlays_match_lower_files(
    table: list[Mount], running: dict[str, str], layer_files: dict[str, bytes]
) -> None:
    overlays = _by_point(table)
    assert len(overlays) == 3
    for mount_id in running.values():
        layer_dir = OVERLAY2 + b"/" + mount_id.encode()
        mount = overlays[layer_dir + b"/merged"]
        assert mount.source == b"overlay"
        expected = tuple(OVERLAY2 + b"/" + part for part in layer_files[f"{mount_id}/lower"].split(b":"))
        assert mount.lowerdirs == expected
        assert all(LOWER_LINK.fullmatch(lower) for lower in mount.lowerdirs)
        # Nearest first: the -init layer, then the image layers top to bottom.
        assert mount.lowerdirs[0] == OVERLAY2 + b"/l/" + layer_files[f"{mount_id}-init/link"]
        assert mount.lowerdirs[1:] == tuple(
            OVERLAY2 + b"/" + part for part in layer_files[f"{mount_id}-init/lower"].split(b":")
        )
        assert mount.upperdir == layer_dir + b"/diff"
        assert mount.workdir == layer_dir + b"/work"
        assert mount.upperdir.endswith(b"/diff") and mount.workdir.endswith(b"/work")


@needs_corpus
@pytest.mark.parametrize("name", ["mountinfo.txt", "mounts.txt"])
def test_real_table_lines_kept_verbatim(name: str) -> None:
    data = (CORPUS / name).read_bytes()
    mounts = parse_mount_table(data, name)
    assert len(mounts) == len(data.splitlines())
    assert "\n".join(mount.line for mount in mounts) + "\n" == data.decode()


@needs_corpus
def test_real_mountinfo_fields() -> None:
    mounts = parse_mount_table((CORPUS / "mountinfo.txt").read_bytes())
    bind = next(mount for mount in mounts if mount.mount_point == b"/var/lib/docker")
    assert (bind.mount_id, bind.parent_id, bind.major_minor) == (42, 27, "254:0")
    assert bind.root == b"/var/lib/docker"
    assert bind.source == b"/dev/vda" and bind.fs_type == "ext4"
    assert bind.options == "rw,relatime"
    assert bind.super_options == "rw,discard,resv_strict,resuid=65534,resgid=65534"
    assert bind.lowerdirs == () and bind.upperdir is None and bind.workdir is None
    for overlay in _by_point(mounts).values():
        assert overlay.parent_id == 42
        assert overlay.root == b"/"
        assert overlay.options == "rw,relatime"
        assert overlay.super_options is not None and overlay.super_options.startswith("rw,lowerdir=/")
    nsfs = [mount for mount in mounts if mount.fs_type == "nsfs"]
    assert len(nsfs) == 3 and all(mount.root and mount.root.startswith(b"net:[") for mount in nsfs)


@needs_corpus
def test_real_mounts_has_no_mountinfo_fields() -> None:
    mounts = parse_mount_table((CORPUS / "mounts.txt").read_bytes())
    for mount in mounts:
        assert mount.mount_id is None and mount.parent_id is None and mount.major_minor is None
        assert mount.root is None and mount.super_options is None


@needs_corpus
def test_mountinfo_and_proc_mounts_agree() -> None:
    info = parse_mount_table((CORPUS / "mountinfo.txt").read_bytes())
    proc = parse_mount_table((CORPUS / "mounts.txt").read_bytes())
    assert [mount.mount_point for mount in info] == [mount.mount_point for mount in proc]
    info_overlays, proc_overlays = _by_point(info), _by_point(proc)
    assert info_overlays.keys() == proc_overlays.keys()
    for point, mount in info_overlays.items():
        other = proc_overlays[point]
        assert (mount.lowerdirs, mount.upperdir, mount.workdir) == (
            other.lowerdirs,
            other.upperdir,
            other.workdir,
        )


@needs_corpus
def test_mounts_referencing_real_table() -> None:
    mounts = parse_mount_table((CORPUS / "mountinfo.txt").read_bytes())
    docker = mounts_referencing(mounts, b"/var/lib/docker")
    assert [mount.mount_id for mount in docker] == [42, 50, 67, 104]
    assert [mount.mount_id for mount in mounts_referencing(mounts, b"/var/lib/docker/overlay2/")] == [
        50,
        67,
        104,
    ]
    assert mounts_referencing(mounts, b"/var/lib/docker2") == []
    assert mounts_referencing(mounts, b"/var/lib/dock") == []
    assert len(mounts_referencing(mounts, b"/run/docker")) == 3


# --- synthetic lines -------------------------------------------------------------

LOWER = ":".join(f"/var/lib/docker/overlay2/l/{short * 26}" for short in "AB")
LAYER = "/var/lib/docker/overlay2/0123abcd"
OPTIONS = f"rw,relatime,lowerdir={LOWER},upperdir={LAYER}/diff,workdir={LAYER}/work"


def test_mount8_line_round_trips() -> None:
    line = f"overlay on {LAYER}/merged type overlay ({OPTIONS})"
    (mount,) = parse_mount_table(line.encode() + b"\n", "mount.txt")
    assert mount.line == line
    assert mount.source == b"overlay" and mount.fs_type == "overlay"
    assert mount.mount_point == f"{LAYER}/merged".encode()
    assert mount.options == OPTIONS
    assert mount.lowerdirs == tuple(part.encode() for part in LOWER.split(":"))
    assert mount.upperdir == f"{LAYER}/diff".encode()
    assert mount.workdir == f"{LAYER}/work".encode()
    assert mount.mount_id is None and mount.super_options is None and mount.root is None
    rebuilt = (
        f"{mount.source.decode()} on {mount.mount_point.decode()} type {mount.fs_type} ({mount.options})"
    )
    assert rebuilt == line
    (proc,) = parse_mount_table(f"overlay {LAYER}/merged overlay {OPTIONS} 0 0".encode())
    assert (proc.lowerdirs, proc.upperdir, proc.workdir) == (mount.lowerdirs, mount.upperdir, mount.workdir)


def test_mount8_with_label_and_plain_fs() -> None:
    data = b"/dev/sda1 on / type ext4 (rw,relatime) [root]\ntmpfs on /run type tmpfs (rw,nosuid,size=10%)\n"
    root, run = parse_mount_table(data)
    assert (root.source, root.mount_point, root.fs_type, root.options) == (
        b"/dev/sda1",
        b"/",
        "ext4",
        "rw,relatime",
    )
    assert run.options == "rw,nosuid,size=10%" and run.lowerdirs == () and run.upperdir is None


def test_octal_escapes_decode_to_raw_bytes() -> None:
    data = (
        b"36 35 98:0 /sub\\134dir /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root"
        b" rw,errors=continue\n"
        b"37 35 98:0 / /mnt/new\\012line\\011tab rw - tmpfs my\\040tmp rw\n"
        b"/dev/sdb1 /mnt/with\\040space\\134x vfat rw 0 0\n"
    )
    first, second, third = parse_mount_table(data)
    assert first.mount_point == b"/mnt/with space"
    assert first.root == b"/sub\\dir"
    assert (first.mount_id, first.parent_id, first.major_minor) == (36, 35, "98:0")
    assert (first.options, first.fs_type, first.source, first.super_options) == (
        "rw,noatime",
        "ext3",
        b"/dev/root",
        "rw,errors=continue",
    )
    assert second.mount_point == b"/mnt/new\nline\ttab"
    assert second.source == b"my tmp"
    assert third.mount_point == b"/mnt/with space\\x"
    assert first.line == data.split(b"\n")[0].decode()


def test_non_utf8_path_kept_as_bytes() -> None:
    data = b"tmpfs /mnt/bad\xff\xfe tmpfs rw 0 0\n"
    (mount,) = parse_mount_table(data)
    assert mount.mount_point == b"/mnt/bad\xff\xfe"
    assert mount.line.encode("utf-8", "surrogateescape") == data[:-1]


def test_lowerdir_with_escaped_colon() -> None:
    # As given to mount(2) ("\:" in the option) and as the kernel shows that string ("\134:").
    for escaped in (b"/lower/a\\:b", b"/lower/a\\134:b"):
        line = (
            b"overlay /merged overlay rw,lowerdir=" + escaped + b":/lower/c,upperdir=/u\\134:d,workdir=/w 0 0"
        )
        (mount,) = parse_mount_table(line)
        assert mount.lowerdirs == (b"/lower/a:b", b"/lower/c")
        assert mount.upperdir == b"/u:d"
        assert mount.workdir == b"/w"


def test_escaped_commas_inside_option_values() -> None:
    line = (
        b"overlay /m overlay rw,lowerdir=/lo\\,wer:/x\\054y,upperdir=/up\\,per,"
        b"workdir=/work\\054dir,index=off 0 0"
    )
    (mount,) = parse_mount_table(line)
    assert mount.lowerdirs == (b"/lo,wer", b"/x,y")
    assert mount.upperdir == b"/up,per"
    assert mount.workdir == b"/work,dir"


def test_lowerdir_plus_and_datadir_plus() -> None:
    line = (
        b"50 42 0:39 / /m rw,relatime - overlay overlay rw,lowerdir+=/l1,lowerdir+=/l\\134:2,"
        b"datadir+=/d\\,1,upperdir=/u,workdir=/w,redirect_dir=on,metacopy=on"
    )
    (mount,) = parse_mount_table(line)
    # lowerdir+= paths are not overlay-escaped: the backslash before the colon is part of the name.
    assert mount.lowerdirs == (b"/l1", b"/l\\:2", b"/d,1")
    assert (mount.upperdir, mount.workdir) == (b"/u", b"/w")


def test_legacy_data_only_layers() -> None:
    (mount,) = parse_mount_table(b"overlay /m overlay ro,lowerdir=/a:/b::/data1::/data2 0 0")
    assert mount.lowerdirs == (b"/a", b"/b", b"/data1", b"/data2")
    assert mount.upperdir is None and mount.workdir is None


def test_fuse_overlayfs_and_overlay_options_on_other_types() -> None:
    data = (
        b"fuse-overlayfs /m fuse.fuse-overlayfs rw,lowerdir=/a:/b,upperdir=/u,workdir=/w 0 0\n"
        b"tmpfs /t tmpfs rw,upperdir=/u 0 0\n"
    )
    fuse, other = parse_mount_table(data)
    assert fuse.lowerdirs == (b"/a", b"/b") and fuse.upperdir == b"/u" and fuse.workdir == b"/w"
    assert other.lowerdirs == () and other.upperdir is None


def test_blank_lines_and_crlf() -> None:
    data = b"\nproc /proc proc rw 0 0\r\n   \n\nsysfs /sys sysfs rw 0 0"
    proc, sysfs = parse_mount_table(data)
    assert proc.mount_point == b"/proc" and proc.options == "rw"
    assert proc.line == "proc /proc proc rw 0 0\r"
    assert sysfs.mount_point == b"/sys"


@pytest.mark.parametrize(
    ("data", "number"),
    [
        (b"proc /proc proc rw 0 0\n\nthis is not a mount table\n", 3),
        (b"this is garbage", 1),
        (b"proc /proc proc rw 0 0\n36 35 98:0 / /mnt rw master:1 ext3 /dev/root rw\n", 2),  # no "-"
        (b"36 35 98:0 / /mnt rw - ext3 /dev/root rw extra\n", 1),  # too many after "-"
        (b"36 35 x:y / /mnt rw - ext3 /dev/root rw\n", 1),
        (b"proc /proc proc rw 0 x\n", 1),
        (b"proc /proc proc rw 0\n", 1),
    ],
)
def test_garbage_line_raises_with_line_number(data: bytes, number: int) -> None:
    with pytest.raises(MountTableError) as caught:
        parse_mount_table(data, "seized/mounts.txt")
    message = str(caught.value)
    assert f"Line {number} of seized/mounts.txt" in message
    assert message.count(". ") == 0 and message.endswith(".")


def test_mounts_referencing_is_component_wise() -> None:
    data = (
        b"/dev/vda /var/lib/docker ext4 rw 0 0\n"
        b"/dev/vda /var/lib/docker2 ext4 rw 0 0\n"
        b"/dev/vdb /var/lib/docker2/sub ext4 rw 0 0\n"
        b"overlay /elsewhere overlay rw,lowerdir=/var/lib/docker2/l/A,upperdir=/var/lib/docker/x/diff,"
        b"workdir=/tmp/w 0 0\n"
        b"overlay /elsewhere2 overlay rw,lowerdir=/var/lib/docker2/l/A:/var/lib/docker/l/B,"
        b"upperdir=/u,workdir=/w 0 0\n"
        b"overlay /elsewhere3 overlay rw,lowerdir=/o,upperdir=/u,workdir=/var/lib/docker/w/work 0 0\n"
        b"/var/lib/docker/disk.img /mnt/img ext4 rw 0 0\n"
        b"overlay /relative overlay rw,lowerdir=l/A:l/B,upperdir=/u,workdir=/w 0 0\n"
    )
    mounts = parse_mount_table(data)
    points = [mount.mount_point for mount in mounts_referencing(mounts, b"/var/lib/docker")]
    assert points == [b"/var/lib/docker", b"/elsewhere", b"/elsewhere2", b"/elsewhere3", b"/mnt/img"]
    assert points == [mount.mount_point for mount in mounts_referencing(mounts, b"/var/lib/docker/")]
    points2 = [mount.mount_point for mount in mounts_referencing(mounts, b"/var/lib/docker2")]
    assert points2 == [b"/var/lib/docker2", b"/var/lib/docker2/sub", b"/elsewhere", b"/elsewhere2"]
    assert mounts_referencing(mounts, b"var/lib/docker") == []
    assert len(mounts_referencing(mounts, b"/")) == len(mounts)


def test_read_live_mountinfo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(mounts_module, "LIVE_MOUNTINFO", tmp_path / "absent")
    assert mounts_module.read_live_mountinfo() == []
    saved = tmp_path / "mountinfo"
    saved.write_bytes(b"22 27 0:21 / /proc rw,relatime - proc proc rw\n")
    monkeypatch.setattr(mounts_module, "LIVE_MOUNTINFO", saved)
    (mount,) = mounts_module.read_live_mountinfo()
    assert mount.mount_point == b"/proc" and mount.mount_id == 22


@pytest.mark.skipif(not Path("/proc/self/mountinfo").exists(), reason="no procfs")
def test_read_live_mountinfo_on_this_host() -> None:
    mounts = mounts_module.read_live_mountinfo()
    assert mounts and all(mount.mount_id is not None for mount in mounts)


# --- properties ------------------------------------------------------------------

raw_paths = st.binary(min_size=1, max_size=40).filter(lambda raw: b"\0" not in raw)


def kernel_escape(raw: bytes, special: bytes = b" \t\n\\") -> bytes:
    """What the kernel's seq_escape does: each special byte as a 3-digit octal escape."""
    return b"".join(b"\\%03o" % byte if byte in special else bytes([byte]) for byte in raw)


def overlay_escape(raw: bytes) -> bytes:
    """What a user passing a path in lowerdir=/upperdir= has to do: backslash before \\ : and ,."""
    return b"".join(b"\\" + bytes([byte]) if byte in b"\\:," else bytes([byte]) for byte in raw)


@given(source=raw_paths, point=raw_paths)
@settings(max_examples=300)
def test_property_proc_mounts_paths_round_trip(source: bytes, point: bytes) -> None:
    line = kernel_escape(source) + b" /" + kernel_escape(point) + b" ext4 rw,relatime 0 0"
    (mount,) = parse_mount_table(line + b"\n")
    assert mount.source == source
    assert mount.mount_point == b"/" + point
    assert mount.line.encode("utf-8", "surrogateescape") == line


@given(lowers=st.lists(raw_paths, min_size=1, max_size=4), upper=raw_paths)
@settings(max_examples=200)
def test_property_overlay_option_paths_round_trip(lowers: list[bytes], upper: bytes) -> None:
    def shown(value: bytes) -> bytes:  # seq_show_option escapes ", \t\n\\" in option values
        return kernel_escape(value, b", \t\n\\")

    lowerdir = b":".join(overlay_escape(b"/" + lower) for lower in lowers)
    options = b"rw,lowerdir=" + shown(lowerdir) + b",upperdir=" + shown(overlay_escape(b"/" + upper))
    options += b",workdir=/w"
    (info,) = parse_mount_table(b"1 2 0:3 / /m rw - overlay overlay " + options)
    (proc,) = parse_mount_table(b"overlay /m overlay " + options + b" 0 0")
    for mount in (info, proc):
        assert mount.lowerdirs == tuple(b"/" + lower for lower in lowers)
        assert mount.upperdir == b"/" + upper
        assert mount.workdir == b"/w"
