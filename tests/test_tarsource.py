"""TarSource must yield, item for item, what DirSource yields for the extracted archive."""

from __future__ import annotations

import gzip
import io
import lzma
import tarfile
from collections import defaultdict
from pathlib import Path

import pytest
from blake3 import blake3

from forensics.capture import tarsource
from forensics.capture.dirsource import DirSource
from forensics.capture.engine.docker_overlay2 import DockerOverlay2
from forensics.capture.sources import Item, Noted, Relink
from forensics.capture.tarsource import TarSource
from forensics.errors import NotADataRootError, SourceError
from forensics.model import CaptureError, Entry, Kind, MetadataFile
from tests.conftest import DOCKER_A_TAR, needs_corpus

LAYER = "a" * 64


def collect(location: str | Path) -> list[Item]:
    return list(TarSource(str(location)).items([DockerOverlay2()]))


def entry_key(e: Entry) -> tuple[object, ...]:
    size = e.size if e.kind is Kind.FILE else None
    return (e.layer_id, e.path, e.kind, e.mode, e.uid, e.gid, e.mtime_ns, e.target, e.xattrs, e.blake3,
            e.head, e.rdev_major, e.rdev_minor, size)  # fmt: skip


def link_partition(items: list[Item]) -> set[frozenset[tuple[str, bytes]]]:
    """Paths grouped by link group, with Relink applied: the numbers themselves do not matter."""
    group_of: dict[tuple[str, bytes], int] = {}
    for item in items:
        if (isinstance(item, Entry) and item.link_group is not None) or isinstance(item, Relink):
            group_of[(item.layer_id, item.path)] = item.link_group
    groups: dict[int, set[tuple[str, bytes]]] = defaultdict(set)
    for key, group in group_of.items():
        groups[group].add(key)
    return {frozenset(members) for members in groups.values()}


def summary(items: list[Item]) -> tuple[object, ...]:
    entries = {entry_key(i) for i in items if isinstance(i, Entry) and i.kind is not Kind.SOCKET}
    files = {(i.path, i.content) for i in items if isinstance(i, MetadataFile)}
    noted = {(i.path, i.kind, i.target) for i in items if isinstance(i, Noted)}
    return entries, files, noted, link_partition(items)


@pytest.fixture(scope="module")
def tar_items() -> list[Item]:
    if not DOCKER_A_TAR.exists():
        pytest.skip("corpus not found")
    return collect(DOCKER_A_TAR)


@needs_corpus
def test_tar_matches_extracted_directory(tar_items: list[Item], docker_a_root: Path) -> None:
    dir_items = list(DirSource(str(docker_a_root)).items([DockerOverlay2()]))
    tar_entries, tar_files, tar_noted, tar_links = summary(tar_items)
    dir_entries, dir_files, dir_noted, dir_links = summary(dir_items)
    assert tar_entries - dir_entries == set()
    assert dir_entries - tar_entries == set()
    assert tar_files == dir_files
    assert tar_noted == dir_noted
    assert tar_links == dir_links
    assert len(tar_links) == 7 and all(len(group) == 2 for group in tar_links)
    assert not [i for i in tar_items if isinstance(i, CaptureError)]


@needs_corpus
def test_source_attributes_and_progress() -> None:
    source = TarSource(str(DOCKER_A_TAR))
    calls: list[tuple[int, int]] = []
    items = list(source.items([DockerOverlay2()], lambda n, b: calls.append((n, b))))
    assert source.data_root == "var/lib/docker"
    assert source.layout is not None and source.layout.name == "docker-overlay2"
    entries = [i for i in items if isinstance(i, Entry)]
    hashed = sum(e.size or 0 for e in entries if e.kind is Kind.FILE and e.link_group is None)
    assert calls[-1] == (len(entries), source.bytes_read)
    assert source.bytes_read >= hashed > 64 << 20


@needs_corpus
def test_recompressed_archives_give_identical_items(tar_items: list[Item], tmp_path: Path) -> None:
    zstandard = pytest.importorskip("zstandard")
    plain = gzip.decompress(DOCKER_A_TAR.read_bytes())
    copies = {
        "data.tar": plain,
        "data.tar.xz": lzma.compress(plain, preset=1),
        "data.tar.zst": zstandard.ZstdCompressor().compress(plain),
    }
    for name, data in copies.items():
        (tmp_path / name).write_bytes(data)
        assert collect(tmp_path / name) == tar_items, name


@needs_corpus
def test_damaged_or_foreign_archives(tmp_path: Path) -> None:
    whole = DOCKER_A_TAR.read_bytes()
    half = tmp_path / "half.tar.gz"
    half.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(SourceError, match="truncated") as caught:
        collect(half)
    assert "\n" not in str(caught.value) and str(caught.value).endswith(".")

    # Cut exactly at a member boundary: tarfile alone would call this a clean end.
    plain = gzip.decompress(whole)
    with tarfile.open(fileobj=io.BytesIO(plain)) as tf:
        offsets = [member.offset for member in tf]
    cut = tmp_path / "cut.tar"
    cut.write_bytes(plain[: offsets[len(offsets) // 2]])
    with pytest.raises(SourceError, match="truncated or corrupt after member var/lib/docker/"):
        collect(cut)

    text = tmp_path / "notes.txt"
    text.write_text("these are not the archives you are looking for\n" * 20)
    with pytest.raises(SourceError, match="not a tar archive"):
        collect(text)

    unrelated = tmp_path / "unrelated.tar.gz"
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    with tarfile.open(unrelated, "w:gz") as tf:
        tf.add(tmp_path / "etc", arcname="etc")
    with pytest.raises(NotADataRootError, match="holds no container data root"):
        collect(unrelated)


@needs_corpus
def test_odd_names_and_sparse_files(tar_items: list[Item], docker_a_root: Path) -> None:
    web = {i.path for i in tar_items if isinstance(i, Entry) and i.path.startswith(b"/srv/web/")}
    assert b"/srv/web/bad\xff\xfebyte.txt" in web
    assert b"/srv/web/new\nline.txt" in web
    sparse = {
        i.path: i
        for i in tar_items
        if isinstance(i, Entry) and i.path in (b"/srv/worker/sparse.img", b"/srv/img-new/sparse.img")
    }
    assert {e.size for e in sparse.values()} == {16 << 20, 64 << 20}
    for entry in sparse.values():
        on_disk = docker_a_root / "overlay2" / entry.layer_id / "diff" / entry.path.decode().lstrip("/")
        assert entry.blake3 == blake3(on_disk.read_bytes()).hexdigest()
        assert entry.head == on_disk.read_bytes()[:16]


def member(name: str, kind: bytes = tarfile.REGTYPE, **pax: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.pax_headers = kind, 0o644, 1704067200, dict(pax)
    return info


def add_file(tf: tarfile.TarFile, name: str, content: bytes, **pax: str) -> None:
    info = member(name, **pax)
    info.size = len(content)
    tf.addfile(info, io.BytesIO(content))


def test_synthetic_details(tmp_path: Path) -> None:
    """Late data root, hardlinks in and out of it, libarchive xattrs, exact and negative PAX times."""
    diff = f"data/overlay2/{LAYER}/diff"
    archive = tmp_path / "synthetic.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tf:
        add_file(tf, "other/x", b"x")
        add_file(tf, f"data/containers/{LAYER}/hostname", b"web\n")  # held until the root is known
        tf.addfile(member(diff, tarfile.DIRTYPE, mtime="1704067200.123456789"))
        add_file(tf, f"{diff}/a", b"hello", mtime="-1.5", **{"LIBARCHIVE.xattr.user.a%20b": "dmFsdWU"})
        for name, target in (("b", f"./{diff}/a"), ("c", "other/x")):
            link = member(f"{diff}/{name}", tarfile.LNKTYPE)
            link.linkname = target
            tf.addfile(link)
    items = collect(archive)
    assert MetadataFile(f"containers/{LAYER}/hostname".encode(), b"web\n") in items
    by_path = {i.path: i for i in items if isinstance(i, Entry)}
    assert by_path[b"/"].mtime_ns == 1704067200_123456789 and by_path[b"/"].size is None
    a, b, c = by_path[b"/a"], by_path[b"/b"], by_path[b"/c"]
    assert a.mtime_ns == -1_500_000_000 and a.xattrs == (("user.a b", b"value"),)
    assert b.blake3 == a.blake3 == blake3(b"hello").hexdigest() and b.size == 5 and b.xattrs == a.xattrs
    assert Relink(LAYER, b"/a", b.link_group) in items and b.link_group is not None
    assert c.blake3 is None and c.link_group is None and c.size is None
    errors = [i for i in items if isinstance(i, CaptureError)]
    assert [(e.path, e.operation) for e in errors] == [(f"overlay2/{LAYER}/diff/c".encode(), "hardlink")]


def test_read_ahead_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Members past the read-ahead buffer are reported, not silently lost."""
    monkeypatch.setattr(tarsource, "_HOLD_LIMIT", 1500)
    archive = tmp_path / "late.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tf:
        add_file(tf, "data/containers/first", b"")  # fills the buffer
        add_file(tf, f"data/containers/{LAYER}/hostname", b"web\n")
        tf.addfile(member(f"data/overlay2/{LAYER}/diff", tarfile.DIRTYPE))
    errors = [i for i in collect(archive) if isinstance(i, CaptureError)]
    assert [(e.path, e.operation) for e in errors] == [(f"containers/{LAYER}/hostname".encode(), "read")]
