"""containerd's overlayfs snapshotter: the engine on the real containerd-a corpus, damaged metadata,
and the kernel as the oracle on containerd-shaped trees.

Ground truth is the engine's own (shared/corpora/containerd-a/README.md): ``containers.tsv``,
``snapshots.tsv`` and ``images.tsv`` (what ``ctr`` and the two BoltDB files say),
``<name>.merged[-live].tsv`` (the kernel's merged view) and ``<name>.expected.tsv``. containerd-a is
captured from its tar (no root needed) and from the extracted directory (root), and both must give
the engine's answers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forensics import api
from forensics.analyze.containers import Analysis
from forensics.capture.engine import all_engines
from forensics.capture.engine.containerd import (
    BACKEND_DB,
    META_DB,
    Containerd,
    go_time,
    protobuf_any,
    snapshot_rows,
    uvarint,
    varint,
)
from forensics.errors import NotFoundError
from forensics.model import Change, ChangeKind, LayerRole, LayerVerdict
from tests import layerlang as ll
from tests.conftest import CONTAINERD_A, CONTAINERD_A_TAR, DOCKER_A_TAR, needs_containerd_corpus, needs_root
from tests.corpus import SessionSnapshots
from tests.kernel_oracle import (
    BASE,
    FIXED_SCENARIO,
    IMAGE_STEPS,
    assert_views_equal,
    kernel_view,
    o2f_view,
    op_strategy,
    run_op,
    scoped_report_equals_full_report,
)
from tests.tarcopy import read_member, rewrite_tar
from tests.test_analyze_corpus import assert_view_matches, explains
from tests.test_cli_analyze import ok, run_cli
from tests.truth import load_containers, load_expected, load_merged, load_table, merged_truth

TRUTH = CONTAINERD_A / "truth"
MOUNTS = CONTAINERD_A / "mountinfo.txt"
ROOT = "var/lib/containerd/"
NAMES = ("ca-batch", "ca-idle", "ca-new", "ca-ops", "ca-web", "ca-worker")
RUNNING = {"ca-web", "ca-worker", "ca-idle", "ca-ops"}  # README "seize moment"
SNAPSHOTTER_DIR = "io.containerd.snapshotter.v1.overlayfs/snapshots"


def full_name(name: str) -> str:
    """containerd containers are named ``<namespace>/<id>``."""
    return f"{load_containers(TRUTH / 'containers.tsv')[name]['namespace']}/{name}"


# -- snapshots: each source collected once per session ---------------------------------------

_CORPUS = SessionSnapshots("containerd", MOUNTS)
_collect_once = _CORPUS.collect_once


@pytest.fixture(scope="session")
def ca_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """containerd-a captured straight from data-root.tar.gz (no root needed)."""
    if not CONTAINERD_A_TAR.exists():
        pytest.skip(f"corpus not found at {CONTAINERD_A}")
    return _collect_once("tar", CONTAINERD_A_TAR, tmp_path_factory)


@pytest.fixture(scope="session")
def ca_dir(containerd_a_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """containerd-a captured from the extracted directory (root: devices, trusted.* xattrs)."""
    return _collect_once("dir", containerd_a_root, tmp_path_factory)


def snapshot_of(request: pytest.FixtureRequest, source: str) -> Path:
    return request.getfixturevalue("ca_tar" if source == "tar" else "ca_dir")


def analysis_of(request: pytest.FixtureRequest, source: str) -> Analysis:
    return _CORPUS.analysis(source, snapshot_of(request, source))


@dataclass(frozen=True)
class Case:
    """One container of containerd-a from one source (the interface assert_view_matches needs)."""

    source: str
    name: str

    @property
    def all_xattrs(self) -> bool:
        """Both truth views were read from kernel mounts with listxattr: every xattr."""
        return True

    def _rows(self):  # type: ignore[no-untyped-def]
        return load_merged(merged_truth(TRUTH, self.name, self.name in RUNNING))

    def merged(self) -> dict[bytes, object]:
        # GNU tar skipped ca-web's socket /tmp/ca.sock (README, Files), so no snapshot holds it.
        return {p: r for p, r in self._rows().items() if r.type != "s"}

    def sockets(self) -> set[bytes]:
        return {p for p, r in self._rows().items() if r.type == "s"}

    def __str__(self) -> str:
        return f"{self.source}-{self.name}"


CASES = [Case(source, name) for source in ("tar", "dir") for name in NAMES]


# -- detection ----------------------------------------------------------------------------------


def test_detect() -> None:
    engine = Containerd()
    assert engine.detect({b"io.containerd.snapshotter.v1.overlayfs", META_DB}.__contains__) is None
    assert engine.detect({b"io.containerd.snapshotter.v1.overlayfs", BACKEND_DB}.__contains__) is None
    assert "io.containerd.snapshotter.v1.overlayfs" in (engine.detect({b"overlay2"}.__contains__) or "")
    # a Docker 29 data root: the containerd store is one level down
    docker29 = {b"containerd/daemon/" + BACKEND_DB}
    assert "containerd/daemon" in (engine.detect(docker29.__contains__) or "")


def test_find_root() -> None:
    engine = Containerd()
    snap = b"io.containerd.snapshotter.v1.overlayfs"
    assert engine.find_root(b"var/lib/containerd/" + snap + b"/snapshots/11/fs/etc") == b"var/lib/containerd"
    assert engine.find_root(b"var/lib/containerd/" + snap + b"/metadata.db") == b"var/lib/containerd"
    assert engine.find_root(snap + b"/snapshots/3/work") == b""
    blob = b"io.containerd.content.v1.content/blobs/sha256/" + b"a" * 64
    assert engine.find_root(b"var/lib/containerd/" + blob) == b"var/lib/containerd"
    assert (
        engine.find_root(b"var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db")
        == b"var/lib/containerd"
    )
    # Docker 29 keeps containerd's root in /var/lib/docker/containerd/daemon
    docker = b"var/lib/docker/containerd/daemon"
    assert engine.find_root(docker + b"/" + snap + b"/snapshots/7/fs") == docker
    # ... while Docker 20.10's unused tree there (docker-a) is never a containerd root
    assert engine.find_root(docker + b"/io.containerd.metadata.v1.bolt/meta.db") is None
    assert engine.find_root(docker + b"/" + snap + b"/snapshots") is None
    assert engine.find_root(docker + b"/" + blob) is None
    assert engine.find_root(b"var/lib/containerd/" + snap + b"/snapshots") is None


@pytest.mark.skipif(not DOCKER_A_TAR.exists(), reason="docker-a corpus not found")
def test_docker_a_stays_docker_overlay2() -> None:
    """docker-a's tar lists containerd/daemon/ (a meta.db, an empty snapshots/) before overlay2/."""
    from forensics.capture.tarsource import TarSource

    source = TarSource(str(DOCKER_A_TAR))
    first = next(source.items(all_engines()))
    assert first is not None
    assert source.layout is not None and source.layout.name == "docker-overlay2"
    assert source.data_root == "var/lib/docker"


def test_docker_a_directory_stays_docker_overlay2(docker_a_root: Path) -> None:
    layouts = [
        e for e in all_engines() if e.detect(lambda rel: (docker_a_root / os.fsdecode(rel)).exists()) is None
    ]
    assert layouts[0].name == "docker-overlay2"
    assert (
        Containerd().detect(lambda rel: (docker_a_root / "containerd/daemon" / os.fsdecode(rel)).exists())
        is None
    )


def test_value_decoders() -> None:
    """README "overlay backend": uvarint ids, zigzag sizes, Go MarshalBinary times, protobuf Any."""
    assert uvarint(b"\x0b") == 11 and uvarint(b"\x80\x01") == 128 and uvarint(b"\x80") is None
    # snapshot 1's size as stored: 80c09902 (the README's example "0x80c0f501" decodes to 2 011 136)
    assert varint(bytes.fromhex("80c09902")) == 2_306_048 and varint(b"\x06") == 3 and varint(b"\x05") == -3
    assert go_time(ll.go_time_bytes(1_795_802_850.5)) == "2026-11-27T18:07:30.500000000Z"
    assert go_time(b"\x01" * 3) is None
    assert protobuf_any(ll.protobuf_any("types/x", b"{}")) == ("types/x", b"{}")
    assert protobuf_any(b"\x08\x01") == (None, None)


# -- the engine's records against truth ------------------------------------------------------------


@pytest.mark.parametrize("source", ["tar", "dir"])
def test_info_says_the_layout(request: pytest.FixtureRequest, source: str) -> None:
    info = api.info(str(snapshot_of(request, source)))
    assert _CORPUS.warnings(source) == ()  # the corpus collects without a warning
    assert info.provenance["layout"] == "containerd-overlayfs"
    if source == "tar":
        assert info.provenance["data_root"] == "var/lib/containerd"
    assert b"containerd-overlayfs" in ok("info", str(snapshot_of(request, source)))


@pytest.mark.parametrize("source", ["tar", "dir"])
def test_containers_match_truth(request: pytest.FixtureRequest, source: str) -> None:
    """containers.tsv: namespace, image, snapshot id (the upperdir), lower ids, created. containerd keeps
    no process state (README surprise 4): state and exit code are unknown, never invented."""
    analysis = analysis_of(request, source)
    got = {c.name: c for c in analysis.containers}
    truth = load_containers(TRUTH / "containers.tsv")
    assert set(got) == {f"{row['namespace']}/{cid}" for cid, row in truth.items()}
    assert {cid for cid, row in truth.items() if row["state_at_seize"] == "running"} == RUNNING
    images = {i.id: i for i in analysis.images}
    for cid, row in truth.items():
        c = got[f"{row['namespace']}/{cid}"]
        assert c.id == c.name and c.problem is None
        assert c.image == row["image"] and c.created == row["created"]
        assert c.upper_layer == row["snapshot_id"]
        assert list(c.chain) == row["lower_ids(nearest_first)"].split(":")
        assert c.init_layer is None  # containerd has no -init layer
        assert c.state is None and c.exit_code is None
        assert f"{row['namespace']}/{row['image']}" in images[c.image_id or ""].tags
        config = json.loads(c.config_json or "{}")
        assert config["snapshot"]["backend_key"] == row["backend_key"]
        assert config["snapshot"]["kind"] == row["snapshot_kind"].lower()
        assert config["runtime"]["name"] == row["runtime"]
        assert config["spec_type"].endswith("runtime-spec/1/Spec") and config["spec"]["root"]
        # a task directory exists for the containers running at the seize moment only
        assert config["task_directory"] is (cid in RUNNING)
    web = got["default/ca-web"]
    assert json.loads(web.labels_json or "{}")["corpus.example/role"] == "web"
    assert "/data" in json.loads(got["default/ca-worker"].mounts_json or "{}")  # the bind mount


@pytest.mark.parametrize("source", ["tar", "dir"])
def test_images_match_truth(request: pytest.FixtureRequest, source: str) -> None:
    """images.tsv: manifest -> config -> diff ids -> chain ids -> snapshot ids, per namespace. The copy
    in `ops` (README surprise 1: unpacked again) is its own image with `@ops` on its id."""
    analysis = analysis_of(request, source)
    got = {tag: image for image in analysis.images for tag in image.tags}
    rows = load_table(TRUTH / "images.tsv")
    assert set(got) == {f"{r['namespace']}/{r['name']}" for r in rows}
    for row in rows:
        image = got[f"{row['namespace']}/{row['name']}"]
        suffix = "" if row["namespace"] == "default" else f"@{row['namespace']}"
        assert image.id == row["config_digest"] + suffix
        assert list(image.diff_ids) == row["diff_ids"].split(",")
        assert list(image.layers) == row["snapshot_ids"].split(",")
        assert image.problem is None and json.loads(image.config_json or "{}")["rootfs"]
    records = {r.chain_id: r for r in analysis.snapshot.image_layers()}
    for row in rows:
        suffix = "" if row["namespace"] == "default" else f"@{row['namespace']}"
        chains = row["chain_ids"].split(",")
        for index, (chain, diff, sid) in enumerate(
            zip(chains, row["diff_ids"].split(","), row["snapshot_ids"].split(","), strict=True)
        ):
            record = records[chain + suffix]
            assert (record.diff_id, record.layer_id, record.tar_split) == (diff, sid, None)
            assert record.parent == (chains[index - 1] + suffix if index else None)
    assert len(records) == 8


@pytest.mark.parametrize("source", ["tar", "dir"])
def test_snapshot_table_equals_truth(request: pytest.FixtureRequest, source: str) -> None:
    """snapshots.tsv, row by row, from the two BoltDB files the snapshot keeps; and the layers table."""
    analysis = analysis_of(request, source)
    files = {path: analysis.snapshot.metadata_file(path) or b"" for path in (BACKEND_DB, META_DB)}
    rows = {(r.namespace, r.key): r for r in snapshot_rows(files)}
    truth = load_table(TRUTH / "snapshots.tsv")
    assert set(rows) == {(t["namespace"], t["key"]) for t in truth}

    def optional(text: str) -> str | None:
        return None if text == "-" else text

    for t in truth:
        row = rows[(t["namespace"], t["key"])]
        assert row.kind == t["kind"].lower()
        assert row.parent_key == optional(t["parent_key"])
        assert row.backend_key == t["backend_key"] and row.backend_id == t["backend_id(snapshots/<id>)"]
        assert row.backend_parent_id == optional(t["backend_parent_id"])
        assert ",".join(row.children) == ("" if t["children"] == "-" else t["children"])
        assert row.labels == ({} if t["labels"] == "-" else json.loads(t["labels"]))
        assert ",".join(row.containers) == ("" if t["used_by_containers"] == "-" else t["used_by_containers"])
    layers = analysis.layers
    ids = {t["backend_id(snapshots/<id>)"] for t in truth}
    assert set(layers) == ids  # the removed throw-away snapshots 9 and 10 leave a gap (truth/throwaway.tsv)
    for t in truth:
        layer = layers[t["backend_id(snapshots/<id>)"]]
        assert layer.committed is (t["kind"] == "Committed") and layer.problem is None
        assert layer.diff_path == f"{SNAPSHOTTER_DIR}/{layer.id}/fs".encode()
        assert layer.has_work is (t["kind"] != "View")
        parent = optional(t["backend_parent_id"])
        assert (layer.chain[:1] or (None,))[0] == parent
        role = {"Active": LayerRole.CONTAINER, "Committed": LayerRole.IMAGE, "View": LayerRole.IMAGE}
        assert layer.role is role[t["kind"]]


# -- ls and the forensic report ------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_ls_equals_engine_merged_view(request: pytest.FixtureRequest, case: Case) -> None:
    analysis = analysis_of(request, case.source)
    assert_view_matches(case, api.list_view(analysis, analysis.find_container(full_name(case.name))))  # type: ignore[arg-type]


def report(analysis: Analysis, name: str) -> list[Change]:
    result = api.diff(analysis, [name])
    assert result.problems == []
    return result.reports[0][1]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_report_finds_every_expected_row(request: pytest.FixtureRequest, case: Case) -> None:
    changes = {c.path: c for c in report(analysis_of(request, case.source), full_name(case.name))}
    missing, wrong = [], []
    for row in load_expected(TRUTH / f"{case.name}.expected.tsv"):
        if row.path in case.sockets():
            continue  # the socket GNU tar skipped
        change = changes.get(row.path)
        if change is None:
            missing.append((row.path, row.change, row.details))
        elif not explains(row, change):
            wrong.append((row.path, row.change, row.details, change.kind.value, change.details))
    assert missing == [] and wrong == []


@needs_containerd_corpus
@pytest.mark.parametrize("case", CASES, ids=str)
def test_report_has_nothing_unexplained(request: pytest.FixtureRequest, case: Case) -> None:
    """No -init layer, and ctr adds nothing to an upperdir (README): every other change is a parent
    directory copied up for a change below it."""
    expected = {row.path for row in load_expected(TRUTH / f"{case.name}.expected.tsv")}
    extra = [
        (c.path, c.kind.value, c.details)
        for c in report(analysis_of(request, case.source), full_name(case.name))
        if c.path not in expected and not (c.kind is ChangeKind.COPIED_UP and not c.details)
    ]
    assert extra == []


def test_tar_and_dir_snapshots_agree(request: pytest.FixtureRequest) -> None:
    tar, directory = analysis_of(request, "tar"), analysis_of(request, "dir")
    for name in NAMES:
        a, b = report(tar, full_name(name)), report(directory, full_name(name))
        assert [(c.path, c.kind, c.details, c.via) for c in a] == [
            (c.path, c.kind, c.details, c.via) for c in b
        ]
    assert [i.id for i in tar.images] == [i.id for i in directory.images]


# -- names ------------------------------------------------------------------------------------------


def test_bare_ids_and_tags_work_when_unique(ca_tar: Path) -> None:
    analysis, _ = api.open_analysis(str(ca_tar))
    assert analysis.find_container("ca-web").name == "default/ca-web"
    assert analysis.find_container("ca-ops").name == "ops/ca-ops"
    assert analysis.find_container("default/ca-new").upper_layer == "14"
    assert analysis.find_image("docker.io/corpca/base:1").tags == ("default/docker.io/corpca/base:1",)
    assert analysis.find_image("ops/docker.io/corpca/app:1").id.endswith("@ops")
    with pytest.raises(NotFoundError, match=r"ambiguous: default/docker\.io/corpca/app:1, ops/"):
        analysis.find_image("docker.io/corpca/app:1")
    with pytest.raises(NotFoundError, match="Did you mean"):
        analysis.find_container("ca-wbe")
    analysis.snapshot.close()


# -- every command on a containerd snapshot ---------------------------------------------------------


def test_every_command_works(ca_tar: Path, ca_dir: Path, tmp_path: Path) -> None:
    snap = str(ca_tar)
    containers = json.loads(ok("containers", snap, "-f", "json"))
    web = next(c for c in containers if c["name"] == "default/ca-web")
    assert web["state"] is None and web["layers"] == ["11", "4", "3", "2", "1"] and web["problem"] is None
    assert b"default/ca-web" in ok("containers", snap, "-f", "csv")
    images = json.loads(ok("images", snap, "-f", "json"))
    app = next(i for i in images if "default/docker.io/corpca/app:1" in i["tags"])
    assert app["containers"] == ["default/ca-batch", "default/ca-web", "default/ca-worker"]
    layers = {r["id"]: r for r in json.loads(ok("layers", snap, "-f", "json"))}
    assert layers["17"]["role"] == "image" and layers["17"]["chain"] == ["4", "3", "2", "1"]  # the View
    ls = [json.loads(line) for line in ok("ls", snap, "ca-ops", "/root", "-f", "jsonl").splitlines()]
    assert [r["path"] for r in ls] == ["/root", "/root/.ash_history", "/root/ops.txt"]
    assert ls[-1]["layer"] == "16"
    # README D2: the literal .wh.index.html of a RUN step became a real whiteout in the layer
    trace = json.loads(ok("trace", snap, "ca-web", "/app/static/index.html", "-f", "json"))
    assert trace["merged"] is None and [s["verdict"] for s in trace["layers"]] == ["hides", "hidden"]
    steps = json.loads(ok("history", snap, "default/docker.io/corpca/app:1", "-f", "json"))
    index = next(c for c in steps[2]["changes"] if c["path"] == "/app/static/index.html")
    assert index["change"] == "deleted"
    body = ok("timeline", snap, "ca-batch").decode()
    assert "default/ca-batch:/app/result.txt (added)" in body
    assert b"default/ca-new: 0 changes" in ok("diff", snap, "ca-new")
    assert ok("diff", snap, "ca-idle", "-f", "jsonl") == b""
    docker = ok("diff", snap, "ca-ops", "-f", "docker")
    assert b"A /root/ops.txt\n" in docker and b"D /app/migrations/001.sql\n" in docker
    # two snapshots of the same host: nothing differs
    compared = json.loads(ok("compare", snap, str(ca_dir), "-f", "json"))
    assert compared["summary"]["images"]["shared"] == 3 and compared["summary"]["images"]["only_in_a"] == 0
    code, _, err = run_cli("drift", snap, str(ca_dir))
    assert code == 0, err
    code, out, _ = run_cli("drift", snap, "--no-baseline", "-f", "json")
    assert code == 1 and b"default/ca-web" in out


def test_layers_cannot_be_verified_and_the_audit_says_so(ca_tar: Path) -> None:
    """containerd keeps no tar-split: each image layer is `unverifiable`, with the reason."""
    analysis, _ = api.open_analysis(str(ca_tar))
    checks = {c.layer_id: c for c in analysis.snapshot.layer_checks()}
    assert set(checks) == {"1", "2", "3", "4", "5", "6", "7", "8", "17"}
    for layer_id in "12345678":
        check = checks[layer_id]
        assert check.verdict is LayerVerdict.UNVERIFIABLE and "containerd keeps no tar-split" in (
            check.detail or ""
        )
        assert check.diff_id is not None and check.chain_id is not None
    report_ = api.audit(analysis)
    kinds = {(f.kind.value, f.container) for f in report_.findings}
    # the mount table matches every running container: no mount finding
    assert not {k for k, _ in kinds if "mount" in k}
    assert ("setuid-added", "default/ca-web") in kinds and ("setuid-added", "default/ca-batch") in kinds
    analysis.snapshot.close()


def test_audit_reads_containerd_mount_lines(tmp_path: Path) -> None:
    """mountinfo's lowerdir=.../snapshots/<id>/fs are this snapshot's layers: a swapped lower is found."""
    if not CONTAINERD_A_TAR.exists():
        pytest.skip("corpus not found")
    table = MOUNTS.read_text().replace("snapshots/3/fs:", "snapshots/99/fs:")
    table = table.replace("snapshots/16/fs,", "snapshots/5/fs,")  # ca-ops' upperdir: an image layer
    (tmp_path / "mountinfo.txt").write_text(table)
    snapshot = tmp_path / "s.o2f"
    api.collect(str(CONTAINERD_A_TAR), str(snapshot), mounts_file=str(tmp_path / "mountinfo.txt"))
    analysis, _ = api.open_analysis(str(snapshot))
    found = {
        (f.kind.value, f.container, f.layer) for f in api.audit(analysis).findings if "mount" in f.kind.value
    }
    assert found == {
        ("mount-lower-mismatch", "default/ca-web", "11"),
        ("mount-lower-mismatch", "default/ca-worker", "12"),
        ("rogue-mount", None, "5"),
    }
    analysis.snapshot.close()


# -- damaged metadata: a warning naming what is missing, never a traceback ------------------------------


def _collect_damaged(tmp_path: Path, **damage: object) -> tuple[Path, tuple[str, ...]]:
    if not CONTAINERD_A_TAR.exists():
        pytest.skip(f"corpus not found at {CONTAINERD_A}")
    source = rewrite_tar(CONTAINERD_A_TAR, tmp_path / "damaged.tar", ROOT, **damage)  # type: ignore[arg-type]
    snapshot = tmp_path / "damaged.o2f"
    result = api.collect(str(source), str(snapshot), force=True)
    return snapshot, result.warnings


def _no_traceback(*args: str) -> tuple[int, bytes, str]:
    code, out, err = run_cli(*args)
    assert "internal error" not in err and "Traceback" not in err, err
    return code, out, err


def _truncated(name: str) -> bytes:
    return read_member(CONTAINERD_A_TAR, ROOT + name)[:20_000]


@needs_containerd_corpus
def test_truncated_meta_db_containers_from_active_snapshots(tmp_path: Path) -> None:
    """Without meta.db, each Active snapshot (backend key <ns>/<n>/<key>, key = the container id) is a
    container found by structure: names and views are still right, images are unknown."""
    meta = "io.containerd.metadata.v1.bolt/meta.db"
    snapshot, warnings = _collect_damaged(tmp_path, replace={meta: _truncated(meta)})
    assert any("meta.db is truncated" in w and "found from their active snapshots" in w for w in warnings)
    analysis, _ = api.open_analysis(str(snapshot))
    assert analysis.images == [] and len(analysis.snapshot.image_layers()) == 8  # from snapshots and configs
    got = {c.name: c for c in analysis.containers}
    assert set(got) == {full_name(n) for n in NAMES}
    for name in NAMES:
        container = got[full_name(name)]
        assert container.problem is not None and "structure" in container.problem
        assert_view_matches(Case("tar", name), api.list_view(analysis, container))  # type: ignore[arg-type]
    code, _, err = _no_traceback("diff", str(snapshot), "ca-web")
    assert code == 0 and "structure" in err
    code, _, _ = _no_traceback("images", str(snapshot))
    assert code == 0
    analysis.snapshot.close()


@needs_containerd_corpus
def test_truncated_snapshotter_db_orphan_layers(tmp_path: Path) -> None:
    """Without the snapshotter's metadata.db no snapshot id can be tied to a key or a parent."""
    db = "io.containerd.snapshotter.v1.overlayfs/metadata.db"
    snapshot, warnings = _collect_damaged(tmp_path, replace={db: _truncated(db)})
    assert any("metadata.db is truncated" in w and "orphan layer" in w for w in warnings)
    analysis, _ = api.open_analysis(str(snapshot))
    assert {layer.role for layer in analysis.layers.values()} == {LayerRole.ORPHAN}
    assert {c.name for c in analysis.containers} == {full_name(n) for n in NAMES}
    assert all("cannot be matched to a directory" in (c.problem or "") for c in analysis.containers)
    code, _, err = _no_traceback("diff", str(snapshot))
    assert code == 2 and "no container could be analysed" in err
    for command in ("containers", "images", "layers", "audit"):
        code, _, _ = _no_traceback(command, str(snapshot))
        assert code in (0, 1)
    analysis.snapshot.close()


def test_meta_db_missing(tmp_path: Path) -> None:
    snapshot, warnings = _collect_damaged(tmp_path, drop=lambda rel: rel.startswith("io.containerd.metadata"))
    assert any("meta.db is missing" in w for w in warnings)
    code, out, _ = _no_traceback("containers", str(snapshot), "-f", "json")
    assert code == 0 and len(json.loads(out)) == len(NAMES)


def test_container_snapshot_directory_gone(tmp_path: Path) -> None:
    snapshot, warnings = _collect_damaged(tmp_path, drop=lambda rel: rel.startswith(f"{SNAPSHOTTER_DIR}/13/"))
    assert any("default/13/ca-batch" in w and "snapshots/13 is gone" in w for w in warnings)
    analysis, _ = api.open_analysis(str(snapshot))
    batch = analysis.find_container("ca-batch")
    assert batch.problem is not None and "snapshots/13) is gone" in batch.problem
    code, out, err = _no_traceback("diff", str(snapshot), "-f", "docker")
    assert code == 0 and "ca-batch" in err and b"default/ca-web" in out
    code, _, err = _no_traceback("diff", str(snapshot), "ca-batch")
    assert code == 2 and "no container could be analysed" in err
    analysis.snapshot.close()


def test_image_snapshot_directory_gone(tmp_path: Path) -> None:
    """Snapshot 3 (D2 of app:1 in `default`) is below ca-web, ca-worker and ca-batch only."""
    snapshot, warnings = _collect_damaged(tmp_path, drop=lambda rel: rel.startswith(f"{SNAPSHOTTER_DIR}/3/"))
    assert any("snapshots/3 is gone" in w for w in warnings)
    analysis, _ = api.open_analysis(str(snapshot))
    app = analysis.find_image("default/docker.io/corpca/app:1")
    assert app.problem is not None and "snapshot 3" in app.problem
    broken = {c.name for c in analysis.containers if c.problem}
    assert broken == {"default/ca-web", "default/ca-worker", "default/ca-batch"}
    result = api.diff(analysis, None)
    assert {c.name for c, _ in result.reports} == {"default/ca-idle", "default/ca-new", "ops/ca-ops"}
    code, _, _ = _no_traceback("containers", str(snapshot))
    assert code == 0
    analysis.snapshot.close()


# -- the kernel as the oracle, on containerd trees -------------------------------------------------------

IMAGE = "docker.io/library/app:1"


def _compare_containerd(root: Path, tmp: Path, image_step: str, ops: list) -> None:  # type: ignore[type-arg]
    def run(merged: Path) -> None:
        for op in ops:
            run_op(merged, op)

    made = ll.make_containerd_root(
        root, images={IMAGE: [BASE, IMAGE_STEPS[image_step]]}, containers={"c": (IMAGE, None, run)}
    )
    record = made.containers["c"]
    snapshot = tmp / "snap.o2f"
    api.collect(str(root), str(snapshot), force=True)
    lower = ":".join(f"{sid}/fs" for sid in record.chain)
    kernel = kernel_view(root, record.snapshot_id, lower, driver=SNAPSHOTTER_DIR, diff="fs")
    scoped_report_equals_full_report(snapshot)
    assert_views_equal(o2f_view(snapshot, "c"), kernel, ops)


@needs_root
@settings(
    max_examples=int(os.environ.get("O2F_KERNEL_EXAMPLES", "15")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(image_step=st.sampled_from(sorted(IMAGE_STEPS)), ops=st.lists(op_strategy, min_size=1, max_size=12))
def test_containerd_offline_view_equals_kernel_view(
    tmp_path_factory: pytest.TempPathFactory, image_step: str, ops: list
) -> None:  # type: ignore[type-arg]
    tmp = tmp_path_factory.mktemp("kdiff-containerd")
    _compare_containerd(tmp / "containerd", tmp, image_step, ops)


@needs_root
@pytest.mark.parametrize("image_step", sorted(IMAGE_STEPS))
def test_containerd_every_image_step_with_a_fixed_scenario(tmp_path: Path, image_step: str) -> None:
    ops = FIXED_SCENARIO
    _compare_containerd(tmp_path / "containerd", tmp_path, image_step, ops)


@needs_root
def test_containerd_root_layout(tmp_path: Path) -> None:
    """make_containerd_root writes what the engine reads: both BoltDB files (tests/boltwriter.py), one
    snapshot directory per layer and container, content blobs; states as containerd keeps them."""
    made = ll.make_containerd_root(
        tmp_path / "c",
        images={IMAGE: [BASE], "docker.io/library/more:1": [BASE, [ll.file("/more", b"m")]]},
        containers={
            "idle": ll.ContainerSpec(IMAGE),
            "ran": (IMAGE, None, [ll.file("/new", b"x")]),
            "up": ll.ContainerSpec("docker.io/library/more:1", state="running"),
        },
    )
    snapshot = tmp_path / "c.o2f"
    result = api.collect(str(made.root), str(snapshot), force=True)
    assert result.warnings == ()
    analysis, _ = api.open_analysis(str(snapshot))
    got = {c.name: c for c in analysis.containers}
    assert {n: c.upper_layer for n, c in got.items()} == {
        f"default/{n}": c.snapshot_id for n, c in made.containers.items()
    }
    assert all(c.problem is None and c.state is None for c in got.values())
    assert json.loads(got["default/up"].config_json or "{}")["task_directory"] is True
    assert {i.tags[0]: list(i.layers) for i in analysis.images} == {
        f"default/{n}": i.snapshots for n, i in made.images.items()
    }
    changes = api.diff(analysis, ["ran"]).reports[0][1]
    assert [(c.path, c.kind) for c in changes] == [(b"/new", ChangeKind.ADDED)]
    analysis.snapshot.close()


@needs_root
def test_snapshots_no_container_uses(tmp_path: Path) -> None:
    """An active snapshot no container names (`ctr snapshots prepare`) is a container found by
    structure, with a warning; a view is an image layer; a directory metadata.db does not list is an
    orphan layer, which the audit reports."""
    made = ll.make_containerd_root(
        tmp_path / "c",
        images={IMAGE: [BASE]},
        containers={"idle": ll.ContainerSpec(IMAGE)},
        snapshots={"scratch": ("active", IMAGE), "look": ("view", IMAGE)},
    )
    ll.write_layer(made.root / SNAPSHOTTER_DIR / "99" / "fs", [ll.file("/planted", b"x")])
    snapshot = tmp_path / "c.o2f"
    warnings = api.collect(str(made.root), str(snapshot), force=True).warnings
    scratch, look = made.snapshots["scratch"], made.snapshots["look"]
    assert any(
        f"/scratch ({SNAPSHOTTER_DIR}/{scratch}) is used by no container record" in w for w in warnings
    )
    assert any("not in metadata.db" in w and "99" in w for w in warnings)
    analysis, _ = api.open_analysis(str(snapshot))
    found = analysis.find_container("scratch")
    assert found.name == "default/scratch" and found.upper_layer == scratch
    assert found.problem is not None and "structure" in found.problem
    roles = {lid: layer.role for lid, layer in analysis.layers.items()}
    assert roles[scratch] is LayerRole.CONTAINER and roles[look] is LayerRole.IMAGE
    assert roles["99"] is LayerRole.ORPHAN
    assert analysis.layers[look].chain == tuple(made.containers["idle"].chain)
    orphans = [f for f in api.audit(analysis).findings if f.kind.value == "orphan-layer"]
    assert [f.layer for f in orphans] == ["99"]
    analysis.snapshot.close()


@needs_root
def test_docker29_tar_of_var_lib_docker(tmp_path: Path) -> None:
    """A tar of a Docker 29 data root: containerd's store is found in containerd/daemon/."""
    import tarfile

    made = ll.make_containerd_root(tmp_path / "daemon", images={IMAGE: [BASE]}, namespace="moby")
    archive = tmp_path / "docker.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(made.root, arcname="var/lib/docker/containerd/daemon")
    snapshot = tmp_path / "d.o2f"
    result = api.collect(str(archive), str(snapshot), force=True)
    assert result.provenance.layout == "containerd-overlayfs" and result.warnings == ()
    assert result.provenance.data_root == "var/lib/docker/containerd/daemon"
    analysis, _ = api.open_analysis(str(snapshot))
    assert [i.tags for i in analysis.images] == [(f"moby/{IMAGE}",)]
    analysis.snapshot.close()


def test_hostile_metadata_never_raises() -> None:
    """Odd values in both databases and the content store are problems and warnings, not exceptions."""
    from forensics.capture.engine.base import Gathered
    from forensics.capture.engine.containerd import BLOBS
    from tests.boltwriter import Sub, build

    def snap(sid: bytes, kind: int, parent: bytes | None = None) -> Sub:
        fields = {b"id": sid, b"kind": bytes([kind])}
        return Sub(fields | ({b"parent": parent} if parent else {}))

    backend = {
        b"v1": Sub(
            {
                b"snapshots": Sub(
                    {
                        b"ns/1/sha256:" + b"a" * 64: snap(b"\x01", 3),
                        b"ns/2/loop": snap(b"\x02", 2, b"ns/2/loop"),  # its own parent
                        b"ns/3/badid": snap(b"\xff", 2),  # not a uvarint
                        b"ns/4/orphaned": snap(b"\x04", 2, b"ns/9/gone"),
                        b"noslash": snap(b"\x05", 1),
                    }
                )
            }
        )
    }
    index = json.dumps({"manifests": [{"digest": "sha256:" + "e" * 64}, {"digest": 7}, "x"]}).encode()
    blobs = {
        "b" * 64: b"[1, 2]",
        "c" * 64: index,
        "d" * 64: json.dumps({"config": {"digest": "sha256:" + "f" * 64}}).encode(),
    }
    blobs["f" * 64] = json.dumps({"rootfs": "not a dict", "created": 5}).encode()

    def image(digest: str, media: str = "application/vnd.oci.image.manifest.v1+json") -> Sub:
        return Sub({b"target": Sub({b"digest": digest.encode(), b"mediatype": media.encode()})})

    def container(**fields: bytes) -> Sub:
        return Sub({k.encode(): v for k, v in fields.items()} | {b"spec": b"\x0a\xff"})

    namespace = Sub(
        {
            b"containers": Sub(
                {
                    b"native": container(snapshotter=b"native", snapshotKey=b"x"),
                    b"nokey": container(snapshotter=b"overlayfs"),
                    b"lost": container(snapshotter=b"overlayfs", snapshotKey=b"nowhere", image=b"i/md5"),
                    b"loop": container(snapshotter=b"overlayfs", snapshotKey=b"loop"),
                }
            ),
            b"images": Sub(
                {
                    b"i/md5": image("md5:abc"),
                    b"i/list": image("sha256:" + "b" * 64),
                    b"i/index": image("sha256:" + "c" * 64, "application/vnd.oci.image.index.v1+json"),
                    b"i/config": image("sha256:" + "d" * 64),
                    b"i/none": Sub({}),
                }
            ),
            b"snapshots": Sub({b"overlayfs": Sub({b"loop": Sub({b"name": b"ns/2/loop"})})}),
            b"content": b"not a bucket",
        }
    )
    meta = {b"v1": Sub({b"ns": namespace, b"version": b"\x06"})}
    gathered = Gathered()
    gathered.files = {
        BACKEND_DB: build(backend, page_size=4096, leaf_max=16),
        META_DB: build(meta, page_size=4096),
    }
    gathered.files.update({BLOBS + b"/sha256/" + k.encode(): v for k, v in blobs.items()})
    gathered.layer_roots = {"1", "2", "4", "5", "7"}
    found = Containerd().discover(gathered)
    problems = {c.id: c.problem or "" for c in found.containers}
    assert "o2f captures only overlayfs" in problems["ns/native"]
    assert "no snapshot key" in problems["ns/nokey"]
    assert "not in the snapshotter's metadata.db" in problems["ns/lost"]
    assert "cycle" in problems["ns/loop"]
    assert "ns/9/gone" in problems["ns/orphaned"] and "structure" in problems["ns/orphaned"]
    images = {i.tags[0]: i.problem or "" for i in found.images}
    assert "not a sha256 digest" in images["ns/i/md5"] and "not a JSON object" in images["ns/i/list"]
    assert "no manifest of index" in images["ns/i/index"]
    assert images["ns/i/config"] == "" and images["ns/i/none"]
    roles = {layer.id: layer.role for layer in found.layers}
    assert roles["7"] is LayerRole.ORPHAN and roles["5"] is LayerRole.IMAGE
    assert any("has no id" in w for w in found.warnings)
    assert any("not in metadata.db" in w and "7" in w for w in found.warnings)
