"""`api.audit`: findings from layer checks, the mount table, structure and upperdirs.

On the docker-a corpus: no rogue mount from its own mount tables, a-web's
literal `.wh.evil` and setuid copy, a-worker's capabilities. On a tampered copy:
every layer finding names the layer, the path and what differs, and upperdir
anomalies planted in a container show with their kind.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from forensics import api
from forensics.analyze.audit import layer_audit, layer_of_dir, mount_audit, sort_findings, structure_audit
from forensics.capture.mounts import parse_mount_table
from forensics.model import (
    AuditFinding,
    AuditKind,
    Container,
    Layer,
    LayerCheck,
    LayerFinding,
    LayerFindingKind,
    LayerRole,
    LayerVerdict,
    Severity,
)
from tests.conftest import DOCKER_A, DOCKER_A_TAR, PODMAN_A, PODMAN_A_TAR, needs_corpus

MOUNTINFO = DOCKER_A / "mountinfo.txt"
MOUNTS = DOCKER_A / "mounts.txt"
A_WEB_UPPER = "d417b6e5895df9e5330c38e9e483fa39136349694d3c94de0e1137f67f251a9a"


def audit_of(source: Path | str, out: Path, **options: object) -> api.AuditReport:
    api.collect(str(source), str(out), force=True, **options)  # type: ignore[arg-type]
    analysis, _ = api.open_analysis(str(out))
    return api.audit(analysis)


def kinds(report: api.AuditReport) -> set[AuditKind]:
    return {f.kind for f in report.findings}


def find(report: api.AuditReport, kind: AuditKind, path: bytes | None = None) -> AuditFinding:
    for finding in report.findings:
        if finding.kind is kind and (path is None or finding.path == path):
            return finding
    raise AssertionError(
        f"no {kind.value} at {path!r} in {[(f.kind.value, f.path) for f in report.findings]}"
    )


@pytest.fixture(scope="module")
def corpus_report(tmp_path_factory: pytest.TempPathFactory) -> api.AuditReport:
    if not DOCKER_A_TAR.exists():
        pytest.skip("corpus not found")
    out = tmp_path_factory.mktemp("audit") / "corpus.o2f"
    return audit_of(DOCKER_A_TAR, out, mounts_file=str(MOUNTINFO))


# -- the corpus as the engine left it ----------------------------------------------------------------


@needs_corpus
def test_every_corpus_layer_is_verified(corpus_report: api.AuditReport) -> None:
    assert corpus_report.layers_checked
    assert [c.verdict for c in corpus_report.checks] == [LayerVerdict.VERIFIED] * 7
    assert not any(k.value.startswith("layer-") for k in kinds(corpus_report))


@needs_corpus
def test_corpus_mount_tables_match_the_containers(corpus_report: api.AuditReport, tmp_path: Path) -> None:
    mount_kinds = {AuditKind.ROGUE_MOUNT, AuditKind.MOUNT_LOWER_MISMATCH, AuditKind.RUNNING_WITHOUT_MOUNT}
    assert not kinds(corpus_report) & mount_kinds
    report = audit_of(DOCKER_A_TAR, tmp_path / "m.o2f", mounts_file=str(MOUNTS), verify_layers=False)
    assert not kinds(report) & mount_kinds


@needs_corpus
def test_corpus_upperdir_findings(corpus_report: api.AuditReport) -> None:
    literal = find(corpus_report, AuditKind.LITERAL_WH_FILE, b"/srv/web/.wh.evil")
    assert (literal.container, literal.layer, literal.severity) == ("a-web", A_WEB_UPPER, Severity.WARNING)
    assert "deletion of evil" in literal.detail
    setuid = find(corpus_report, AuditKind.SETUID_ADDED, b"/srv/data/ctr-suid.txt")
    assert setuid.severity is Severity.CRITICAL and "0644 -> 4755" in setuid.detail
    for path in (b"/srv/worker/cap-raw", b"/srv/worker/cp-cap"):
        assert find(corpus_report, AuditKind.CAPABILITY_ADDED, path).container == "a-worker"
        # both are "#!/bin/sh" scripts with mode 0755 (their first bytes are in the snapshot)
        assert (
            find(corpus_report, AuditKind.EXECUTABLE_ADDED, path).evidence["judged_by"]
            == "mode bits and #! line"
        )
    assert corpus_report.failed
    assert corpus_report.findings == sort_findings(corpus_report.findings)
    assert corpus_report.findings[0].severity is Severity.CRITICAL


@needs_corpus
def test_a_fake_overlay_line_is_a_rogue_mount(tmp_path: Path) -> None:
    lines = MOUNTINFO.read_text().splitlines()
    web = next(i for i, line in enumerate(lines) if A_WEB_UPPER in line)
    fake = "f" * 64
    lines.append(
        f"999 42 0:99 / /var/lib/docker/overlay2/{fake}/merged rw,relatime shared:9 - overlay overlay "
        f"rw,lowerdir=/var/lib/docker/overlay2/l/COBPUJ6RU3XEHZCR723VMO752L,"
        f"upperdir=/var/lib/docker/overlay2/{fake}/diff,workdir=/var/lib/docker/overlay2/{fake}/work"
    )
    worker = next(i for i, line in enumerate(lines) if "2aaa9fab5df9" in line)
    lines[worker] = lines[worker].replace(
        "lowerdir=/var/lib/docker/overlay2/l/", "lowerdir=/var/lib/docker/overlay2/l/X", 1
    )
    del lines[web]
    table = tmp_path / "mountinfo.txt"
    table.write_text("\n".join(lines) + "\n")
    report = audit_of(DOCKER_A_TAR, tmp_path / "m.o2f", mounts_file=str(table), verify_layers=False)
    rogue = find(report, AuditKind.ROGUE_MOUNT)
    assert rogue.severity is Severity.CRITICAL and fake in rogue.detail
    assert rogue.path == f"/var/lib/docker/overlay2/{fake}/merged".encode()
    mismatch = find(report, AuditKind.MOUNT_LOWER_MISMATCH)
    assert mismatch.container == "a-worker" and "(no such layer)" in mismatch.detail
    unmounted = find(report, AuditKind.RUNNING_WITHOUT_MOUNT)
    assert unmounted.container == "a-web"
    assert [f.kind for f in report.findings].count(AuditKind.RUNNING_WITHOUT_MOUNT) == 1


@needs_corpus
def test_no_verify_layers_makes_every_image_layer_unverifiable(tmp_path: Path) -> None:
    report = audit_of(DOCKER_A_TAR, tmp_path / "n.o2f", verify_layers=False)
    assert not report.layers_checked and report.checks == []
    unverifiable = [f for f in report.findings if f.kind is AuditKind.LAYER_UNVERIFIABLE]
    assert len(unverifiable) == 7
    assert {f.severity for f in unverifiable} == {Severity.INFO}
    assert all("--no-verify-layers" in f.detail for f in unverifiable)


@pytest.mark.skipif(not PODMAN_A_TAR.exists(), reason="podman-a corpus not found")
def test_podman_a_audit(tmp_path: Path) -> None:
    """containers-storage: layers verify, mounts match, and podman's own files are no findings."""
    report = audit_of(PODMAN_A_TAR, tmp_path / "p.o2f", mounts_file=str(PODMAN_A / "mountinfo.txt"))
    assert [c.verdict for c in report.checks] == [LayerVerdict.VERIFIED] * 5
    assert not {f.kind for f in report.findings if f.severity is Severity.CRITICAL} - {AuditKind.SETUID_ADDED}
    paths = {(f.kind, f.container, f.path) for f in report.findings}
    assert (AuditKind.LITERAL_WH_FILE, "pa-web", b"/var/tmp/odd/.wh..wh..opq") in paths
    assert "opaque" in find(report, AuditKind.LITERAL_WH_FILE, b"/var/tmp/odd/.wh..wh..opq").detail
    assert (AuditKind.EXECUTABLE_ADDED, "pa-web", b"/tmp/.bb") in paths
    # the empty bind-mount targets and the marker podman writes into every upperdir
    assert not [p for k, _, p in paths if p in (b"/etc/hosts", b"/run/.containerenv")]


# -- a tampered copy -----------------------------------------------------------------------------------


def test_audit_names_each_tampering(docker_a_copy: Path, tmp_path: Path) -> None:
    records = docker_a_copy / "image" / "overlay2" / "layerdb" / "sha256"
    layers = [docker_a_copy / "overlay2" / (r / "cache-id").read_text() / "diff" for r in records.iterdir()]
    base = next(d for d in layers if (d / "etc" / "passwd").exists())
    shadow = base / "etc" / "group"
    st = shadow.stat()
    shadow.write_bytes(shadow.read_bytes().replace(b"root", b"toor", 1))  # same size
    os.utime(shadow, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.chmod(base / "usr" / "bin" / "sgid-tool", 0o6755)
    (base / "etc" / "ld.so.preload").write_bytes(b"/lib/evil.so\n")
    (base / "etc" / "os-release").unlink()
    upper = docker_a_copy / "overlay2" / A_WEB_UPPER / "diff"
    (upper / "tmp" / ".cache").mkdir()
    (upper / "tmp" / ".cache" / "miner").write_bytes(b"\x7fELF")
    os.chmod(upper / "tmp" / ".cache" / "miner", 0o755)
    (upper / "srv" / "web" / "run-me").write_bytes(b"#!/bin/sh\nid\n")  # no x bit: sh run-me runs it
    (upper / "srv" / "web" / "notes.txt").write_bytes(b"#notes\n")
    os.mknod(upper / "srv" / "web" / "ghost", 0o600 | 0o020000, os.makedev(0, 0))
    report = audit_of(docker_a_copy, tmp_path / "t.o2f")
    base_id = base.parent.name

    tampered = find(report, AuditKind.LAYER_TAMPERED, b"/etc/group")
    assert tampered.layer == base_id and tampered.severity is Severity.CRITICAL
    assert tampered.detail.startswith("content differs from the layer tar: CRC-64 ")
    assert "corpa/base:1" in tampered.evidence["images"]  # type: ignore[operator]
    assert "a-web" in tampered.evidence["containers"]  # type: ignore[operator]
    stream = [f for f in report.findings if f.kind is AuditKind.LAYER_TAMPERED and f.path is None]
    assert stream == []  # a listed file is missing: the stream cannot be rebuilt, the files say it all
    meta = find(report, AuditKind.LAYER_METADATA_CHANGED, b"/usr/bin/sgid-tool")
    assert meta.layer == base_id and "mode 2755 -> 6755" in meta.detail
    added = find(report, AuditKind.LAYER_FILE_ADDED, b"/etc/ld.so.preload")
    assert added.layer == base_id and "13 bytes" in added.detail
    missing = find(report, AuditKind.LAYER_FILE_MISSING, b"/etc/os-release")
    assert missing.layer == base_id and "not on disk" in missing.detail
    etc = find(report, AuditKind.LAYER_METADATA_CHANGED, b"/etc")
    assert "mtime 2024-01-01T00:00:00Z ->" in etc.detail

    hidden = find(report, AuditKind.HIDDEN_PATH_ADDED, b"/tmp/.cache")
    assert (hidden.container, hidden.severity) == ("a-web", Severity.INFO)
    assert not [
        f for f in report.findings if f.kind is AuditKind.HIDDEN_PATH_ADDED and f.path != b"/tmp/.cache"
    ]
    miner = find(report, AuditKind.EXECUTABLE_ADDED, b"/tmp/.cache/miner")
    assert (miner.container, miner.evidence["judged_by"]) == ("a-web", "mode bits and ELF magic")
    script = find(report, AuditKind.EXECUTABLE_ADDED, b"/srv/web/run-me")
    assert script.evidence["judged_by"] == "#! line" and "by #! line" in script.detail
    assert not [
        f for f in report.findings if f.path == b"/srv/web/notes.txt" and f.kind is AuditKind.EXECUTABLE_ADDED
    ]
    ghost = find(report, AuditKind.WHITEOUT_OF_NOTHING, b"/srv/web/ghost")
    assert ghost.layer == A_WEB_UPPER


def test_a_same_size_edit_alone_fails_the_stream_hash(docker_a_copy: Path, tmp_path: Path) -> None:
    records = docker_a_copy / "image" / "overlay2" / "layerdb" / "sha256"
    layers = [docker_a_copy / "overlay2" / (r / "cache-id").read_text() / "diff" for r in records.iterdir()]
    motd = next(d for d in layers if (d / "etc" / "motd").is_file()) / "etc" / "motd"
    st = motd.stat()
    motd.write_bytes(motd.read_bytes().upper())
    os.utime(motd, ns=(st.st_atime_ns, st.st_mtime_ns))
    report = audit_of(docker_a_copy, tmp_path / "t.o2f")
    layer_kinds = [f for f in report.findings if f.kind.value.startswith("layer-")]
    stream = find(report, AuditKind.LAYER_TAMPERED, None)
    assert stream.path is None and "not to its diff id" in stream.detail
    assert [(f.kind, f.path) for f in layer_kinds] == [
        (AuditKind.LAYER_TAMPERED, None),
        (AuditKind.LAYER_TAMPERED, b"/etc/motd"),
    ]


# -- pure checks on records ------------------------------------------------------------------------------


def _layer(layer_id: str, role: LayerRole = LayerRole.IMAGE, **fields: object) -> Layer:
    return Layer(id=layer_id, role=role, **fields)  # type: ignore[arg-type]


def test_structure_orphans_and_dangling_links() -> None:
    layers = {"a" * 64: _layer("a" * 64), "b" * 64: _layer("b" * 64, LayerRole.ORPHAN)}
    links = [
        ("AAA", b"../" + b"a" * 64 + b"/diff", "a" * 64),
        ("ZZZ", b"../gone/diff", None),
        ("YYY", b"x", "c" * 64),
    ]
    found = structure_audit(layers, links)
    assert [(f.kind, f.layer) for f in found] == [
        (AuditKind.ORPHAN_LAYER, "b" * 64),
        (AuditKind.DANGLING_LINK, None),
        (AuditKind.DANGLING_LINK, "c" * 64),
    ]
    assert found[1].path == b"l/ZZZ" and "../gone/diff" in found[1].detail


def test_mounts_with_relative_short_names_resolve() -> None:
    """Docker mounts with relative `l/<short>` lowerdirs when the option string would be too long."""
    upper, init, image = "c" * 64, "c" * 64 + "-init", "a" * 64
    layers = {
        upper: _layer(upper, LayerRole.CONTAINER),
        init: _layer(init, LayerRole.INIT),
        image: _layer(image),
    }
    links = [
        ("INIT", b"../" + init.encode() + b"/diff", init),
        ("IMG", b"../" + image.encode() + b"/diff", image),
    ]
    container = Container(id="x" * 64, name="web", state="running", upper_layer=upper, chain=(init, image))
    line = f"overlay /m overlay rw,lowerdir=l/INIT:l/IMG,upperdir={upper}/diff,workdir={upper}/work 0 0\n"
    assert mount_audit(parse_mount_table(line.encode()), layers, links, [container]) == []
    swapped = line.replace("l/INIT:l/IMG", "l/IMG:l/INIT")
    found = mount_audit(parse_mount_table(swapped.encode()), layers, links, [container])
    assert [f.kind for f in found] == [AuditKind.MOUNT_LOWER_MISMATCH]
    assert (
        layer_of_dir(b"/var/lib/docker/overlay2/l/IMG", set(layers), dict((n, lid) for n, _, lid in links))
        == image
    )
    # a host's own overlay root is not judged
    host = b"overlay / overlay rw,lowerdir=/live/ro,upperdir=/live/rw/upper,workdir=/live/rw/work 0 0\n"
    assert mount_audit(parse_mount_table(host), layers, links, []) == []


def test_layer_audit_maps_each_check() -> None:
    layer = "a" * 64
    checks = [
        LayerCheck(
            layer,
            LayerVerdict.TAMPERED,
            "tar-split-stream",
            diff_id="sha256:1",
            computed_diff_id="sha256:2",
            findings=1,
        ),
        LayerCheck("b" * 64, LayerVerdict.UNVERIFIABLE, "none", detail="the engine kept no tar-split"),
        LayerCheck(
            "c" * 64, LayerVerdict.ERROR, "tar-split-stream", detail="tar-split.json.gz is damaged: x"
        ),
    ]
    rows = [LayerFinding(layer, b"/etc/passwd", LayerFindingKind.CONTENT, {"crc64": ["00", "11"]})]
    found = sort_findings(layer_audit({}, checks, rows, [], []))
    assert [(f.kind, f.severity, f.path) for f in found] == [
        (AuditKind.LAYER_TAMPERED, Severity.CRITICAL, None),
        (AuditKind.LAYER_TAMPERED, Severity.CRITICAL, b"/etc/passwd"),
        (AuditKind.LAYER_UNVERIFIABLE, Severity.WARNING, None),
        (AuditKind.LAYER_UNVERIFIABLE, Severity.INFO, None),
    ]
    assert found[1].detail == "content differs from the layer tar: CRC-64 00 -> 11"
