"""Layer verification at collection: image layers against their diff id and tar-split.

The real engine's data (docker-a) must verify on every layer, from the
directory (stream rebuilt, sha256 = diff id) and from the tar (per-file CRC-64).
Tampering with an image layer on a copy must be found and named. Small data
roots built here (no root needed) pin the format details: headers, hardlinks,
whiteouts, unsafe names, symlinked path components.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from forensics import api
from forensics.capture import tarsplit
from forensics.capture.crc64 import CHECK, crc64_bytes, crc64_iso
from forensics.capture.layerverify import compare_header, layer_path, same_time
from forensics.model import Entry, Kind, LayerFindingKind, LayerVerdict
from forensics.store.reader import open_snapshot
from tests.conftest import DOCKER_A_TAR, PODMAN_A_TAR, needs_corpus

LAYER = "a" * 64
MTIME = 1_704_067_200
TRUSTED = {"filter": "fully_trusted"} if hasattr(tarfile, "data_filter") else {}  # 3.11.4+: say so


# -- building blocks -------------------------------------------------------------------------------


def disassemble(tar_bytes: bytes) -> bytes:
    """tar-split.json.gz of a tar, as vbatts/tar-split's disassembler writes it."""
    lines = []
    position = 0
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        for info in tar.getmembers():
            lines.append(
                {"type": 2, "payload": base64.b64encode(tar_bytes[position : info.offset_data]).decode()}
            )
            raw = info.name.encode("utf-8", "surrogateescape") + (b"/" if info.isdir() else b"")
            entry: dict[str, object] = {"type": 1, "size": info.size, "payload": None}
            try:
                entry["name"] = raw.decode()
            except UnicodeDecodeError:  # tar-split keeps such names as base64 bytes
                entry["name_raw"] = base64.b64encode(raw).decode()
            size = info.size if info.isreg() else 0
            if size:
                data = tar_bytes[info.offset_data : info.offset_data + size]
                entry["payload"] = base64.b64encode(crc64_bytes(crc64_iso(data))).decode()
            lines.append(entry)
            position = info.offset_data + size
    lines.append({"type": 2, "payload": base64.b64encode(tar_bytes[position:]).decode()})
    text = "".join(json.dumps({**line, "position": n}) + "\n" for n, line in enumerate(lines))
    return gzip.compress(text.encode())


def member(name: str, data: bytes | None = None, **fields: object) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.mtime = MTIME
    info.uid, info.gid = os.getuid(), os.getgid()
    info.mode = 0o644
    if data is not None:
        info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


DEFAULT_LAYER = [
    member("app", type=tarfile.DIRTYPE, mode=0o755),
    member("app/a.txt", b"alpha\n"),
    member("app/big.bin", bytes(range(256)) * 400),
    member("app/b.txt", type=tarfile.LNKTYPE, linkname="app/a.txt"),
    member("app/link", type=tarfile.SYMTYPE, linkname="a.txt", mode=0o777),
    member("app/" + "long-name-" * 12 + ".txt", b"needs a PAX path\n"),
    member("app/caf\u00e9.txt", b"non-ASCII name\n"),
    member("app/bad\udcffbyte", b"not UTF-8: tar-split keeps it in name_raw\n"),
    member("app/empty", b""),
]


def layer_tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def tiny_root(base: Path, members: list[tuple[tarfile.TarInfo, bytes | None]] = DEFAULT_LAYER) -> Path:
    """A data root with one image layer: extracted from a tar, with layerdb's diff id and tar-split."""
    raw = layer_tar(members)
    root = base / "docker"
    diff = root / "overlay2" / LAYER / "diff"
    diff.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        tar.extractall(diff, numeric_owner=True, **TRUSTED)
        for info in tar.getmembers():  # directory and symlink times, as the engine sets them
            os.utime(diff / info.name, ns=(MTIME * 10**9, MTIME * 10**9), follow_symlinks=False)
    os.utime(diff, ns=(MTIME * 10**9, MTIME * 10**9))
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    record = root / "image" / "overlay2" / "layerdb" / "sha256" / diff_id.removeprefix("sha256:")
    record.mkdir(parents=True)
    (record / "cache-id").write_text(LAYER)
    (record / "diff").write_text(diff_id)
    (record / "size").write_text(str(len(raw)))
    (record / "tar-split.json.gz").write_bytes(disassemble(raw))
    return root


def collect(source: Path, out: Path, **options: object) -> tuple[list, list]:  # type: ignore[type-arg]
    api.collect(str(source), str(out), force=True, **options)  # type: ignore[arg-type]
    with open_snapshot(str(out)) as snapshot:
        return snapshot.layer_checks(), snapshot.layer_findings()


def tar_of(root: Path, out: Path) -> Path:
    subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-cf", str(out), "-C", str(root), "."],
        check=True,
    )
    return out


# -- the pieces ----------------------------------------------------------------------------------------


def test_crc64_is_go_iso() -> None:
    """tar-split sums with Go's hash/crc64 and the ISO table: CRC-64/GO-ISO, eight bytes big-endian."""
    assert crc64_iso(b"123456789") == CHECK == 0xB90956C775A41001
    assert crc64_iso(b"56789", crc64_iso(b"1234")) == CHECK
    assert crc64_bytes(CHECK) == bytes.fromhex("b90956c775a41001")


@pytest.mark.parametrize(
    ("name", "path"),
    [
        (b"srv/data/", b"/srv/data"),
        (b"./etc/passwd", b"/etc/passwd"),
        (b"a//b/./c", b"/a/b/c"),
        (b".hidden/x..y", b"/.hidden/x..y"),
        (b"../etc/shadow", None),
        (b"a/../../b", None),
        (b"", None),
        (b"a\0b", None),
    ],
)
def test_layer_path_never_leaves_the_layer(name: bytes, path: bytes | None) -> None:
    assert layer_path(name) == path


def test_same_time_tolerates_whole_seconds_only() -> None:
    second = MTIME * 10**9
    assert same_time(second, second + 5)  # a header without PAX keeps whole seconds
    assert not same_time(second + 1, second + 2)
    assert not same_time(second, second + 10**9)


def test_headers_parse_like_tarfile_and_rebuild_the_stream() -> None:
    raw = layer_tar(DEFAULT_LAYER)
    rebuilt = bytearray()
    names = []
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        contents = {i.name: tar.extractfile(i).read() for i in tar.getmembers() if i.isreg()}  # type: ignore[union-attr]
    for item in tarsplit.read(disassemble(raw)):
        if isinstance(item, bytes):
            rebuilt += item
            continue
        names.append(item.header.name)
        if item.size:
            rebuilt += contents[item.name.decode("utf-8", "surrogateescape")]
    assert bytes(rebuilt) == raw
    assert b"app/" in names and "app/caf\u00e9.txt".encode() in names
    assert any(n.startswith(b"app/long-name-") for n in names)


def test_damaged_tar_split_is_an_error_verdict(tmp_path: Path) -> None:
    root = tiny_root(tmp_path)
    record = next((root / "image" / "overlay2" / "layerdb" / "sha256").iterdir())
    (record / "tar-split.json.gz").write_bytes(gzip.compress(b'{"type": 2, "payload": "!!"}\n'))
    checks, findings = collect(root, tmp_path / "s.o2f")
    assert [c.verdict for c in checks] == [LayerVerdict.ERROR]
    assert "tar-split.json.gz is damaged" in (checks[0].detail or "")
    assert findings == []


def test_compare_header_reports_each_field() -> None:
    raw = layer_tar([member("bin/tool", b"x", mode=0o755, uid=0, gid=0)])
    header = next(i for i in tarsplit.read(disassemble(raw)) if not isinstance(i, bytes)).header
    entry = Entry(LAYER, b"/bin/tool", Kind.FILE, 0o4755, 0, 7, 1, MTIME * 10**9 + 3 * 10**9)
    diff = compare_header(header, entry)
    assert diff == {"mode": ["0755", "4755"], "gid": [0, 7], "mtime_ns": [MTIME * 10**9, (MTIME + 3) * 10**9]}
    entry_with_cap = Entry(
        LAYER,
        b"/bin/tool",
        Kind.FILE,
        0o755,
        0,
        0,
        1,
        MTIME * 10**9,
        xattrs=(("security.capability", b"\1"),),
    )
    assert compare_header(header, entry_with_cap) == {
        "xattrs": [{"security.capability": None}, {"security.capability": "01"}]
    }


# -- small data roots (no root needed) -------------------------------------------------------------------


def test_a_pristine_layer_verifies_from_directory_and_tar(tmp_path: Path) -> None:
    root = tiny_root(tmp_path)
    checks, findings = collect(root, tmp_path / "d.o2f")
    assert [(c.verdict, c.method) for c in checks] == [(LayerVerdict.VERIFIED, "tar-split-stream")]
    assert checks[0].computed_diff_id == checks[0].diff_id and checks[0].files_checked == len(DEFAULT_LAYER)
    assert findings == []
    checks, findings = collect(tar_of(root, tmp_path / "root.tar"), tmp_path / "t.o2f")
    assert [(c.verdict, c.method) for c in checks] == [(LayerVerdict.VERIFIED, "tar-split-files")]
    assert checks[0].computed_diff_id is None and findings == []


def test_every_kind_of_tampering_is_named(tmp_path: Path) -> None:
    root = tiny_root(tmp_path)
    diff = root / "overlay2" / LAYER / "diff"
    edited = diff / "app" / "big.bin"
    before = edited.stat()
    with open(edited, "r+b") as handle:  # same size, mtime restored
        handle.write(b"EVIL")
    os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.chmod(diff / "app" / "caf\u00e9.txt", 0o4755)
    (diff / "app" / "empty").unlink()
    checks, findings = collect(root, tmp_path / "d.o2f")
    by_kind = {(f.kind, f.path): f.detail for f in findings}
    assert checks[0].verdict is LayerVerdict.TAMPERED
    assert checks[0].computed_diff_id is not None and checks[0].computed_diff_id != checks[0].diff_id
    assert set(by_kind[(LayerFindingKind.CONTENT, b"/app/big.bin")]) == {"crc64"}
    assert by_kind[(LayerFindingKind.METADATA, "/app/caf\u00e9.txt".encode())] == {"mode": ["0644", "4755"]}
    assert by_kind[(LayerFindingKind.MISSING, b"/app/empty")] == {"type": ["file", None]}
    assert (LayerFindingKind.METADATA, b"/app") in by_kind  # the directory's mtime moved with the unlink
    # the same from a tar of the tampered root
    checks, findings = collect(tar_of(root, tmp_path / "root.tar"), tmp_path / "t.o2f")
    assert checks[0].verdict is LayerVerdict.TAMPERED and checks[0].method == "tar-split-files"
    assert {(f.kind, f.path) for f in findings} == set(by_kind)


def test_a_broken_hardlink_and_an_added_file(tmp_path: Path) -> None:
    root = tiny_root(tmp_path)
    app = root / "overlay2" / LAYER / "diff" / "app"
    os.unlink(app / "b.txt")
    (app / "b.txt").write_bytes(b"alpha\n")
    os.utime(app / "b.txt", (MTIME, MTIME))
    (app / ".x").write_bytes(b"dropped")
    os.utime(app, (MTIME, MTIME))
    checks, findings = collect(root, tmp_path / "d.o2f")
    got = {(f.kind, f.path): f.detail for f in findings}
    assert got[(LayerFindingKind.METADATA, b"/app/b.txt")] == {
        "link": ["hardlink to /app/a.txt", "not a hardlink of /app/a.txt"]
    }
    assert got[(LayerFindingKind.ADDED, b"/app/.x")]["size"] == [None, 7]
    assert len(got) == 2
    # hardlink and addition leave the stream as it was: only the header comparison sees them
    assert checks[0].computed_diff_id == checks[0].diff_id and checks[0].verdict is LayerVerdict.TAMPERED


def test_tar_split_names_outside_the_layer_are_never_opened(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not evidence\n")
    root = tiny_root(tmp_path)
    record = next((root / "image" / "overlay2" / "layerdb" / "sha256").iterdir())
    lines = gzip.decompress((record / "tar-split.json.gz").read_bytes()).decode().splitlines()
    forged = []
    for line in lines:
        item = json.loads(line)
        if item.get("name") == "app/a.txt":
            item["name"] = "../../../../secret.txt"
        forged.append(json.dumps(item))
    (record / "tar-split.json.gz").write_bytes(gzip.compress(("\n".join(forged) + "\n").encode()))
    before = secret.stat().st_atime_ns
    os.utime(secret, ns=(before - 10**9, secret.stat().st_mtime_ns))
    checks, _ = collect(root, tmp_path / "d.o2f")
    assert checks[0].verdict is LayerVerdict.ERROR
    assert "unsafe" in (checks[0].detail or "")
    assert secret.stat().st_atime_ns == before - 10**9


def test_a_symlinked_directory_in_a_layer_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.txt").write_bytes(b"alpha\n")
    root = tiny_root(tmp_path)
    app = root / "overlay2" / LAYER / "diff" / "app"
    (app.parent / "real").mkdir()
    for child in app.iterdir():
        child.rename(app.parent / "real" / child.name)
    app.rmdir()
    app.symlink_to(outside)
    checks, findings = collect(root, tmp_path / "d.o2f")
    assert checks[0].verdict is LayerVerdict.TAMPERED
    kinds = {(f.kind, f.path) for f in findings}
    assert (LayerFindingKind.METADATA, b"/app") in kinds  # recorded a directory, found a symlink
    assert (LayerFindingKind.MISSING, b"/app/a.txt") in kinds
    assert checks[0].computed_diff_id is None  # the stream could not be rebuilt through the link


def test_no_verify_layers_writes_no_checks(tmp_path: Path) -> None:
    root = tiny_root(tmp_path)
    checks, findings = collect(root, tmp_path / "d.o2f", verify_layers=False)
    assert checks == [] and findings == []
    with open_snapshot(str(tmp_path / "d.o2f")) as snapshot:
        assert snapshot.provenance["options"]["verify_layers"] is False  # type: ignore[index]


def test_a_layer_without_tar_split_is_unverifiable(tmp_path: Path) -> None:
    root = tiny_root(tmp_path)
    record = next((root / "image" / "overlay2" / "layerdb" / "sha256").iterdir())
    (record / "tar-split.json.gz").unlink()
    checks, _ = collect(root, tmp_path / "d.o2f")
    assert [(c.verdict, c.method) for c in checks] == [(LayerVerdict.UNVERIFIABLE, "none")]


# -- the real engine's data root ------------------------------------------------------------------------


@needs_corpus
def test_every_docker_a_layer_verifies_from_the_tar(tmp_path: Path) -> None:
    checks, findings = collect(DOCKER_A_TAR, tmp_path / "t.o2f")
    assert len(checks) == 7
    assert {(c.verdict, c.method) for c in checks} == {(LayerVerdict.VERIFIED, "tar-split-files")}
    assert sum(c.files_checked or 0 for c in checks) == 522
    assert findings == []


def test_every_docker_a_layer_verifies_from_the_directory(docker_a_root: Path, tmp_path: Path) -> None:
    checks, findings = collect(docker_a_root, tmp_path / "d.o2f")
    assert len(checks) == 7
    assert {(c.verdict, c.method) for c in checks} == {(LayerVerdict.VERIFIED, "tar-split-stream")}
    assert all(c.computed_diff_id == c.diff_id for c in checks)
    assert findings == []


def image_layer_holding(root: Path, inner: str) -> Path:
    for record in (root / "image" / "overlay2" / "layerdb" / "sha256").iterdir():
        diff = root / "overlay2" / (record / "cache-id").read_text() / "diff"
        if (diff / inner).exists():
            return diff
    raise AssertionError(inner)


def test_tampering_with_docker_a_image_layers(docker_a_copy: Path, tmp_path: Path) -> None:
    """The issue's four cases, on a real engine's layers: each named with its layer, path and difference."""
    base = image_layer_holding(docker_a_copy, "etc/passwd")
    passwd = base / "etc" / "passwd"
    st = passwd.stat()
    data = bytearray(passwd.read_bytes())
    data[:4] = b"evil"
    passwd.write_bytes(bytes(data))
    os.utime(passwd, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.chmod(base / "bin" / "busybox", 0o4755)
    app = image_layer_holding(docker_a_copy, "opt/app/payload/hl-a")
    (app / "opt" / "app" / "payload" / "dropper").write_bytes(b"#!/bin/sh\n")
    (app / "opt" / "app" / "payload" / "sub" / "dir" / "nested.txt").unlink()
    checks, findings = collect(docker_a_copy, tmp_path / "d.o2f")
    verdicts = {c.layer_id: c.verdict for c in checks}
    base_id, app_id = base.parent.name, app.parent.name
    assert verdicts[base_id] is LayerVerdict.TAMPERED and verdicts[app_id] is LayerVerdict.TAMPERED
    assert [v for k, v in verdicts.items() if k not in (base_id, app_id)] == [LayerVerdict.VERIFIED] * 5
    got = {(f.layer_id, f.kind, f.path): f.detail for f in findings}
    assert "crc64" in got[(base_id, LayerFindingKind.CONTENT, b"/etc/passwd")]
    assert got[(base_id, LayerFindingKind.METADATA, b"/bin/busybox")] == {"mode": ["0755", "4755"]}
    assert (app_id, LayerFindingKind.ADDED, b"/opt/app/payload/dropper") in got
    assert (app_id, LayerFindingKind.MISSING, b"/opt/app/payload/sub/dir/nested.txt") in got
    base_check = next(c for c in checks if c.layer_id == base_id)
    assert base_check.computed_diff_id not in (None, base_check.diff_id)


# -- containers-storage (podman) keeps tar-split too -------------------------------------------------------


@pytest.mark.skipif(not PODMAN_A_TAR.exists(), reason="podman-a corpus not found")
def test_every_podman_a_layer_verifies_from_the_tar(tmp_path: Path) -> None:
    """overlay-layers/<id>.tar-split.gz: the same format (a literal .wh. file of a RUN step is a whiteout)."""
    checks, findings = collect(PODMAN_A_TAR, tmp_path / "t.o2f")
    assert len(checks) == 5
    assert {(c.verdict, c.method) for c in checks} == {(LayerVerdict.VERIFIED, "tar-split-files")}
    assert findings == []


def test_every_podman_a_layer_verifies_from_the_directory(podman_a_root: Path, tmp_path: Path) -> None:
    checks, findings = collect(podman_a_root, tmp_path / "d.o2f")
    assert {(c.verdict, c.method) for c in checks} == {(LayerVerdict.VERIFIED, "tar-split-stream")}
    assert len(checks) == 5 and all(c.computed_diff_id == c.diff_id for c in checks)
    assert findings == []
