"""containers/storage (Podman, CRI-O, buildah): the engine on the real podman-a corpus, the
`podman diff` rules (P1-P9 of forensics/analyze/podman.py) one by one, damaged metadata, and the
kernel as the oracle on containers/storage-shaped trees.

Ground truth is the engine's own (shared/corpora/podman-a/README.md): ``<name>.merged[-live].tsv``,
``<name>.expected.tsv`` and ``<name>.diff`` (exact `podman diff`). podman-a is captured from its
tar (no root needed) and from the extracted directory (root), and both must give the engine's
answers.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forensics import api
from forensics.analyze.containers import Analysis, ContainerViews, Stack
from forensics.analyze.podman import (
    INIT_INODES,
    OUTSIDE,
    PodmanDiffError,
    podman_changes,
    same_fs_time,
    stat_in_layer,
)
from forensics.capture.engine.containers_storage import ContainersStorage, big_data_name
from forensics.model import Change, ChangeKind, Container, Entry, Kind
from forensics.overlay.merge import View
from forensics.render.analysis import docker_output, podman_output
from tests import layerlang as ll
from tests.conftest import PODMAN_A, PODMAN_A_TAR, needs_podman_corpus, needs_root
from tests.corpus import SessionSnapshots
from tests.kernel_oracle import BASE, FIXED_SCENARIO, IMAGE_STEPS, kernel_view, o2f_view, op_strategy, run_op
from tests.tarcopy import read_member, rewrite_tar
from tests.test_analyze_corpus import assert_view_matches, explains
from tests.test_cli_analyze import docker_blocks, ok, run_cli
from tests.truth import (
    load_containers,
    load_diff,
    load_expected,
    load_merged,
    merged_truth,
    parse_docker_diff,
)

TRUTH = PODMAN_A / "truth"
NAMES = ("pa-cron", "pa-job", "pa-snap", "pa-spare", "pa-web")
MOUNTS = PODMAN_A / "mountinfo.txt"
# Paths Podman itself creates in every started container's upperdir, which expected.tsv does not
# compare (README, Files: ".expected.tsv"), but which o2f's report shows against the image.
PODMAN_CREATED = {b"/etc", b"/etc/hosts", b"/etc/hostname", b"/etc/resolv.conf", b"/etc/mtab", b"/run"}
PODMAN_CREATED |= {b"/run/.containerenv"}


# -- snapshots: each source collected once per session ---------------------------------------

_CORPUS = SessionSnapshots("podman", MOUNTS)
_collect_once = _CORPUS.collect_once


@pytest.fixture(scope="session")
def pa_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """podman-a captured straight from data-root.tar.gz (no root needed)."""
    if not PODMAN_A_TAR.exists():
        pytest.skip(f"corpus not found at {PODMAN_A}")
    return _collect_once("tar", PODMAN_A_TAR, tmp_path_factory)


@pytest.fixture(scope="session")
def pa_dir(podman_a_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """podman-a captured from the extracted directory (root: devices, trusted.* xattrs)."""
    return _collect_once("dir", podman_a_root, tmp_path_factory)


def snapshot_of(request: pytest.FixtureRequest, source: str) -> Path:
    return request.getfixturevalue("pa_tar" if source == "tar" else "pa_dir")


def analysis_of(request: pytest.FixtureRequest, source: str) -> Analysis:
    return _CORPUS.analysis(source, snapshot_of(request, source))


@dataclass(frozen=True)
class Case:
    """One container of podman-a from one source (the interface assert_view_matches needs)."""

    source: str
    name: str

    @property
    def row(self) -> dict[str, str]:
        return load_containers(TRUTH / "containers.tsv")[self.name]

    @property
    def running(self) -> bool:
        return self.row["status"] == "running"

    @property
    def all_xattrs(self) -> bool:
        """merged-live.tsv carries every xattr; `podman export` keeps only security.capability."""
        return self.running

    def _rows(self):  # type: ignore[no-untyped-def]
        return load_merged(merged_truth(TRUTH, self.name, self.running))

    def merged(self) -> dict[bytes, object]:
        # GNU tar skipped the socket /tmp/pa.sock (README, Files), so no snapshot holds it.
        return {p: r for p, r in self._rows().items() if r.type != "s"}

    def sockets(self) -> set[bytes]:
        return {p for p, r in self._rows().items() if r.type == "s"}

    def __str__(self) -> str:
        return f"{self.source}-{self.name}"


CASES = [Case(source, name) for source in ("tar", "dir") for name in NAMES]


# -- the engine's records ----------------------------------------------------------------------


def test_detect_and_find_root() -> None:
    engine = ContainersStorage()
    present = {b"overlay", b"overlay-layers", b"overlay-layers/layers.json"}
    assert engine.detect(present.__contains__) is None
    assert engine.detect({b"overlay-containers"}.__contains__) is None
    assert "overlay-containers" in (engine.detect({b"overlay2"}.__contains__) or "")
    root = b"var/lib/containers/storage"
    assert engine.find_root(root + b"/overlay-layers/layers.json") == root
    assert engine.find_root(root + b"/overlay/l/ABC") == root
    assert engine.find_root(root + b"/overlay/" + b"a" * 64 + b"/diff/etc") == root
    assert engine.find_root(b"home/u/.local/share/containers/storage/libpod/bolt_state.db") == (
        b"home/u/.local/share/containers/storage"
    )
    # Docker's long-gone `overlay` driver (<id>/{root,upper,lower-id}) is not taken for this layout
    assert engine.find_root(b"var/lib/docker/overlay/" + b"a" * 64 + b"/root/etc") is None
    assert engine.find_root(root) is None


def test_big_data_file_name() -> None:
    """overlay-images/<id>/=<base64(key)> (README, layout observed)."""
    key = "sha256:5497ace07686b44ebab07a3e1678d2f694e18f3922f3f3225b079aba02dda133"
    assert big_data_name(key).startswith(b"=c2hhMjU2OjU0OTdhY2Uw")


@pytest.mark.parametrize("source", ["tar", "dir"])
def test_info_says_the_layout(request: pytest.FixtureRequest, source: str) -> None:
    info = api.info(str(snapshot_of(request, source)))
    assert info.provenance["layout"] == "containers-storage-overlay"
    if source == "tar":
        assert info.provenance["data_root"] == "var/lib/containers/storage"
    assert b"containers-storage-overlay" in ok("info", str(snapshot_of(request, source)))


@pytest.mark.parametrize("source", ["tar", "dir"])
def test_containers_match_podman(request: pytest.FixtureRequest, source: str) -> None:
    """Names from containers.json; state and exit code from libpod's bolt_state.db (truth/containers.tsv)."""
    analysis = analysis_of(request, source)
    truth = load_containers(TRUTH / "containers.tsv")
    got = {c.name: c for c in analysis.containers}
    assert set(got) == set(truth)
    for name, row in truth.items():
        c = got[name]
        assert c.id == row["container_id"]
        assert c.state == row["status"]
        assert c.exit_code == int(row["exit_code"])
        assert c.image == row["image"]
        assert c.image_id == "sha256:" + row["image_id"]
        assert c.upper_layer == row["storage_layer_id(rw)"]
        assert c.init_layer is None and c.problem is None
        assert c.created is not None
    assert got["pa-job"].finished_at is not None and got["pa-web"].finished_at is None
    assert got["pa-spare"].started_at is None
    volume = json.loads(got["pa-snap"].mounts_json or "{}")["/srv/vol"]
    assert volume["Type"] == "volume" and volume["Name"] == "pa-vol"
    assert json.loads(got["pa-web"].labels_json or "{}")["org.example.corpus"] == "podman-a"


@pytest.mark.parametrize("source", ["tar", "dir"])
def test_images_match_podman(request: pytest.FixtureRequest, source: str) -> None:
    """truth/images.tsv: ids, tags, diff ids and storage layers bottom to top, buildah intermediates too."""
    analysis = analysis_of(request, source)
    got = {i.id.removeprefix("sha256:"): i for i in analysis.images}
    lines = [line.split("\t") for line in (TRUTH / "images.tsv").read_text().splitlines()[1:] if line]
    assert set(got) == {f[0] for f in lines}
    for image_id, names, _created, diff_ids, layers in lines:
        image = got[image_id]
        assert list(image.tags) == ([] if names == "-" else names.split(","))
        assert list(image.diff_ids) == diff_ids.split(",")
        assert list(image.layers) == layers.split(",")
        assert image.problem is None and image.config_json


@pytest.mark.parametrize("source", ["tar", "dir"])
def test_layers_roles_and_image_layer_records(request: pytest.FixtureRequest, source: str) -> None:
    analysis = analysis_of(request, source)
    truth = load_containers(TRUTH / "containers.tsv")
    rw = {row["storage_layer_id(rw)"] for row in truth.values()}
    layers = analysis.layers
    assert {i for i, layer in layers.items() if layer.role.value == "container"} == rw
    assert all(layer.role.value == "image" for i, layer in layers.items() if i not in rw)
    assert all(layer.problem is None and layer.has_diff for layer in layers.values())
    base = layers["64d3f7dee0ee658f81d4ec66536f9cb5a74221802605c101dedabea0d60f3f12"]
    assert base.lower is None and base.chain == ()  # the bottom layer has empty/, no lower file
    records = analysis.snapshot.image_layers(with_tar_split=True)
    assert len(records) == 5
    by_layer = {r.layer_id: r for r in records}
    assert by_layer[base.id].chain_id == by_layer[base.id].diff_id == "sha256:" + base.id
    for record in records:  # the tar-split bytes, verbatim, for layer verification
        assert record.tar_split is not None and record.tar_split[:2] == b"\x1f\x8b"
        if record.parent is not None:
            assert record.parent in {r.chain_id for r in records}


def test_removed_containers_exit_codes_are_a_warning(pa_tar: Path) -> None:
    """README surprise 2: bolt_state.db keeps the exit codes of removed containers."""
    warnings = _CORPUS.warnings("tar")
    removed = [w for w in warnings if "removed containers" in w]
    assert len(removed) == 1 and "3 removed" in removed[0] and "137" in removed[0]
    throwaway = (TRUTH / "throwaway.tsv").read_text()
    assert all(token[:12] in throwaway for token in removed[0].split(": ")[1].split(", "))


# -- ls, the forensic report, --format podman ---------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_ls_equals_engine_merged_view(request: pytest.FixtureRequest, case: Case) -> None:
    analysis = analysis_of(request, case.source)
    assert_view_matches(case, api.list_view(analysis, analysis.find_container(case.name)))  # type: ignore[arg-type]


def report(analysis: Analysis, name: str) -> list[Change]:
    result = api.diff(analysis, [name])
    assert result.problems == []
    return result.reports[0][1]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_report_finds_every_expected_row(request: pytest.FixtureRequest, case: Case) -> None:
    changes = {c.path: c for c in report(analysis_of(request, case.source), case.name)}
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


@needs_podman_corpus
@pytest.mark.parametrize("case", CASES, ids=str)
def test_report_has_nothing_unexplained(request: pytest.FixtureRequest, case: Case) -> None:
    expected = {row.path for row in load_expected(TRUTH / f"{case.name}.expected.tsv")}
    extra = [
        (c.path, c.kind.value, c.details)
        for c in report(analysis_of(request, case.source), case.name)
        if c.path not in expected
        and c.path not in PODMAN_CREATED  # no -init layer: Podman's mount points are in the upperdir
        and not (c.kind is ChangeKind.COPIED_UP and not c.details)  # parents copied up for a change below
    ]
    assert extra == []


@pytest.mark.parametrize("case", CASES, ids=str)
def test_podman_format_equals_podman_diff(request: pytest.FixtureRequest, case: Case) -> None:
    out = ok("diff", str(snapshot_of(request, case.source)), case.name, "--format", "podman")
    assert not out.startswith(b"# ")  # one container: no heading line
    got = parse_docker_diff(out)
    want = {(letter, p) for letter, p in load_diff(TRUTH / f"{case.name}.diff") if p not in case.sockets()}
    assert sorted(got - want) == [] and sorted(want - got) == []


def test_podman_format_all_containers_and_raw_names(pa_tar: Path) -> None:
    out = ok("diff", str(pa_tar), "--format", "podman")
    blocks = docker_blocks(out)
    assert set(blocks) == set(NAMES)
    assert blocks["pa-spare"] == set()
    web = Case("tar", "pa-web")
    assert blocks["pa-web"] == load_diff(TRUTH / "pa-web.diff") - {("A", p) for p in web.sockets()}
    # P9: the name with a raw 0xFF byte and the one with a newline are printed as Podman prints them
    assert b"A /var/tmp/odd/\xffbin\n" in out and b"A /var/tmp/odd/new\nline\n" in out
    assert b"\xef\xbf\xbd" not in out


def test_podman_diff_reports_what_docker_diff_misses(pa_tar: Path) -> None:
    """README, "What podman diff prints": the timestomped /etc/os-release and the xattr-only
    index.html are C in `podman diff` (any copy-up is), while a stat comparison misses them."""
    podman = parse_docker_diff(ok("diff", str(pa_tar), "pa-web", "-f", "podman"))
    docker = parse_docker_diff(ok("diff", str(pa_tar), "pa-web", "-f", "docker"))
    for path in (b"/etc/os-release", b"/var/www/html/index.html"):
        assert ("C", path) in podman and ("C", path) not in docker
    # P2: the opaque directory is D with its new child A (docker diff: C)
    assert ("D", b"/etc/web/conf.d") in podman and ("A", b"/etc/web/conf.d/99-evil.conf") in podman
    assert ("C", b"/etc/web/conf.d") in docker
    # P8: Podman's own mount points are not listed, by either
    assert not {p for _, p in podman} & INIT_INODES


def test_tar_and_dir_snapshots_agree(request: pytest.FixtureRequest) -> None:
    tar, directory = analysis_of(request, "tar"), analysis_of(request, "dir")
    for name in NAMES:
        a, b = report(tar, name), report(directory, name)
        assert [(c.path, c.kind, c.details, c.via) for c in a] == [
            (c.path, c.kind, c.details, c.via) for c in b
        ]
        assert api.diff(tar, [name], podman=True).podman == api.diff(directory, [name], podman=True).podman


# -- every command on a podman snapshot ---------------------------------------------------------


def test_every_command_works(pa_tar: Path) -> None:
    snap = str(pa_tar)
    containers = json.loads(ok("containers", snap, "-f", "json"))
    job = next(c for c in containers if c["name"] == "pa-job")
    assert job["state"] == "exited" and job["exit_code"] == 5 and job["problem"] is None
    assert b"pa-web" in ok("containers", snap)
    images = json.loads(ok("images", snap, "-f", "json"))
    web = next(i for i in images if "localhost/podmana/web:2" in i["tags"])
    assert sorted(web["containers"]) == ["pa-cron", "pa-job", "pa-web"]
    ls = [json.loads(line) for line in ok("ls", snap, "pa-snap", "/srv", "-f", "jsonl").splitlines()]
    assert [r["path"] for r in ls] == ["/srv", "/srv/vol"]
    trace = json.loads(ok("trace", snap, "pa-web", "/var/www/html/victim.html", "-f", "json"))
    assert trace["merged"] is None and [s["verdict"] for s in trace["layers"]] == ["hides", "hidden"]
    # README surprise 3: a literal `.wh.victim.html` written in a RUN step deleted victim.html
    steps = json.loads(ok("history", snap, "localhost/podmana/web:2", "-f", "json"))
    victim = next(c for c in steps[2]["changes"] if c["path"] == "/var/www/html/victim.html")
    assert victim["change"] == "deleted" and "literal-wh-file" in victim["details"]
    # README pa-snap: persist was added by the commit layer C1 and deleted in pa-snap
    snap_steps = json.loads(ok("history", snap, "localhost/podmana/web-snap:1", "-f", "json"))
    assert any(
        c["path"] == "/etc/cron.d/persist" and c["change"] == "added" for c in snap_steps[-1]["changes"]
    )
    body = ok("timeline", snap, "pa-job").decode()
    assert "pa-job:/var/log/web/access.log.1 (added)" in body
    assert ok("diff", snap, "pa-spare") and ok("diff", snap, "pa-spare", "-f", "jsonl") == b""


# -- damaged metadata: the structural view with a warning, never a traceback --------------------

ROOT = "var/lib/containers/storage/"
JOB_LAYER = "b377de59240b8b98396b1c2eefc80feff2eeb610e89faa2f474dba25a7b3b5d9"
W3_LAYER = "78d122fe994e52d97ffa88fb4b70821c3a411eacd5016e22306cf32b96268b3d"


def damaged_tar(
    dest: Path, *, drop: Callable[[str], bool] = lambda n: False, replace: dict[str, bytes]
) -> Path:
    """A copy of the podman-a tar with members dropped or replaced (uncompressed; sparse members expanded)."""
    return rewrite_tar(PODMAN_A_TAR, dest, ROOT, drop=drop, replace=replace)


def _bolt_bytes() -> bytes:
    return read_member(PODMAN_A_TAR, ROOT + "libpod/bolt_state.db")


def _collect_damaged(tmp_path: Path, **damage: object) -> tuple[Path, tuple[str, ...]]:
    if not PODMAN_A_TAR.exists():
        pytest.skip(f"corpus not found at {PODMAN_A}")
    source = damaged_tar(tmp_path / "damaged.tar", **damage)  # type: ignore[arg-type]
    snapshot = tmp_path / "damaged.o2f"
    result = api.collect(str(source), str(snapshot), force=True)
    return snapshot, result.warnings


def _no_traceback(*args: str) -> tuple[int, bytes, str]:
    code, out, err = run_cli(*args)
    assert "internal error" not in err and "Traceback" not in err, err
    return code, out, err


def _truth_ids() -> dict[str, str]:
    return {name: row["container_id"] for name, row in load_containers(TRUTH / "containers.tsv").items()}


@needs_podman_corpus
def test_truncated_bolt_state_db(tmp_path: Path) -> None:
    snapshot, warnings = _collect_damaged(tmp_path, replace={"libpod/bolt_state.db": _bolt_bytes()[:100_000]})
    assert any(
        "bolt_state.db is truncated" in w and "states and exit codes are unknown" in w for w in warnings
    )
    analysis, _ = api.open_analysis(str(snapshot))
    got = {c.name: c for c in analysis.containers}
    assert {n: c.id for n, c in got.items()} == _truth_ids()  # still found, from containers.json
    assert all(c.state is None and c.exit_code is None for c in got.values())
    code, out, _ = _no_traceback("diff", str(snapshot), "pa-job", "-f", "podman")
    assert code == 0 and parse_docker_diff(out) == load_diff(TRUTH / "pa-job.diff")


@pytest.mark.parametrize("damage", ["missing", "invalid"])
def test_containers_json_damaged_containers_found_by_structure(tmp_path: Path, damage: str) -> None:
    """Layers that no image uses and that sit on others are containers; layers.json names them
    `<name>-layer` (README surprise 5) and bolt_state.db's name registry gives their ids back."""
    path = "overlay-containers/containers.json"
    if damage == "missing":
        snapshot, warnings = _collect_damaged(tmp_path, drop=lambda rel: rel == path, replace={})
        assert any("containers.json is missing" in w for w in warnings)
    else:
        snapshot, warnings = _collect_damaged(tmp_path, replace={path: b'[{"id": "52bb4033e9'})
        assert any("containers.json is not valid JSON" in w for w in warnings)
    analysis, _ = api.open_analysis(str(snapshot))
    got = {c.name: c for c in analysis.containers}
    assert {n: c.id for n, c in got.items()} == _truth_ids()
    truth = load_containers(TRUTH / "containers.tsv")
    for name, c in got.items():
        assert c.state == truth[name]["status"] and c.upper_layer == truth[name]["storage_layer_id(rw)"]
        assert c.problem is not None and "structure" in c.problem
    code, out, err = _no_traceback("diff", str(snapshot), "pa-web", "-f", "podman")
    assert code == 0 and "structure" in err  # the container's problem: a warning, and a heading
    assert docker_blocks(out)["pa-web"] == load_diff(TRUTH / "pa-web.diff") - {("A", b"/tmp/pa.sock")}


def test_no_containers_json_and_no_bolt_state(tmp_path: Path) -> None:
    snapshot, warnings = _collect_damaged(
        tmp_path,
        drop=lambda rel: rel in ("overlay-containers/containers.json", "libpod/bolt_state.db"),
        replace={},
    )
    assert any("containers.json is missing" in w for w in warnings)
    analysis, _ = api.open_analysis(str(snapshot))
    truth = load_containers(TRUTH / "containers.tsv")
    got = {c.name: c for c in analysis.containers}
    assert set(got) == set(truth)
    for name, c in got.items():  # no ids without the registry: the layer id stands in
        assert c.id == c.upper_layer == truth[name]["storage_layer_id(rw)"]
    code, _, _ = _no_traceback("containers", str(snapshot))
    assert code == 0


def test_invalid_layers_json_and_missing_images_json(tmp_path: Path) -> None:
    snapshot, warnings = _collect_damaged(
        tmp_path,
        drop=lambda rel: rel == "overlay-images/images.json",
        replace={"overlay-layers/layers.json": b"{not json"},
    )
    assert any("layers.json is not valid JSON" in w for w in warnings)
    assert any("images.json is missing" in w for w in warnings)
    analysis, _ = api.open_analysis(str(snapshot))
    assert analysis.images == [] and analysis.snapshot.image_layers() == []
    assert {c.name for c in analysis.containers} == set(NAMES)  # containers.json still names them
    for name in NAMES:  # chains come from the lower files: every view is still right
        case = Case("tar", name)
        assert_view_matches(case, api.list_view(analysis, analysis.find_container(name)))  # type: ignore[arg-type]
    code, _, _ = _no_traceback("images", str(snapshot))
    assert code == 0


def test_container_layer_directory_gone(tmp_path: Path) -> None:
    snapshot, warnings = _collect_damaged(
        tmp_path, drop=lambda rel: rel.startswith(f"overlay/{JOB_LAYER}"), replace={}
    )
    assert any(JOB_LAYER in w and "directory is gone" in w for w in warnings)
    analysis, _ = api.open_analysis(str(snapshot))
    job = analysis.find_container("pa-job")
    assert job.problem is not None and JOB_LAYER in job.problem and "gone" in job.problem
    code, out, err = _no_traceback("diff", str(snapshot), "-f", "podman")
    assert code == 0 and "pa-job" in err
    blocks = docker_blocks(out)
    assert set(blocks) == set(NAMES) - {"pa-job"}
    assert blocks["pa-cron"] == load_diff(TRUTH / "pa-cron.diff")
    code, _, err = _no_traceback("diff", str(snapshot), "pa-job")
    assert code == 2 and "no container could be analysed" in err


def test_image_layer_directory_gone(tmp_path: Path) -> None:
    """W3 is below pa-web, pa-cron, pa-job and pa-snap: their chains break, pa-spare's does not."""
    snapshot, warnings = _collect_damaged(
        tmp_path, drop=lambda rel: rel.startswith(f"overlay/{W3_LAYER}"), replace={}
    )
    assert any(W3_LAYER in w and "directory is gone" in w for w in warnings)
    analysis, _ = api.open_analysis(str(snapshot))
    web = next(i for i in analysis.images if "localhost/podmana/web:2" in i.tags)
    assert web.problem is not None and W3_LAYER in web.problem
    code, out, err = _no_traceback("diff", str(snapshot), "-f", "podman")
    assert code == 0 and set(docker_blocks(out)) == {"pa-spare"}
    assert err.count(W3_LAYER) >= 4
    code, _, _ = _no_traceback("containers", str(snapshot))
    assert code == 0


# -- the podman diff rules, one by one (records only) ----------------------------------------------

SECOND = 1_000_000_000
T0 = 1_700_000_000 * SECOND


def e(
    path: str,
    kind: Kind = Kind.FILE,
    *,
    layer: str = "L1",
    mode: int | None = None,
    size: int | None = 1,
    mtime: int = T0,
    target: str | None = None,
    xattrs: tuple[tuple[str, bytes], ...] = (),
) -> Entry:
    if mode is None:
        mode = 0o755 if kind is Kind.DIR else 0o644
    rdev = (0, 0) if kind is Kind.CHAR else (None, None)
    return Entry(
        layer_id=layer,
        path=path.encode(),
        kind=kind,
        mode=mode,
        uid=0,
        gid=0,
        size=size,
        mtime_ns=mtime,
        rdev_major=rdev[0],
        rdev_minor=rdev[1],
        target=None if target is None else target.encode(),
        xattrs=xattrs,
    )


def d(path: str, **kw: object) -> Entry:
    kw.setdefault("size", 4096)
    return e(path, Kind.DIR, **kw)  # type: ignore[arg-type]


def wh(path: str, **kw: object) -> Entry:
    return e(path, Kind.CHAR, mode=0, size=0, **kw)  # type: ignore[arg-type]


OPAQUE = (("trusted.overlay.opaque", b"y"),)


def podman(upper: list[Entry], *lowers: list[Entry]) -> set[tuple[str, bytes]]:
    """`podman diff` of an upperdir over lower layers given nearest first."""
    names = [f"L{i + 1}" for i in range(len(lowers))]
    indexes = {
        name: {b"/": d("/")} | {x.path: x for x in layer} for name, layer in zip(names, lowers, strict=True)
    }
    container = Container(id="c" * 64, name="c", upper_layer="U", chain=tuple(names))
    cv = ContainerViews(
        View(), View(), [], [], [d("/"), *upper], Stack(container, "U", tuple(names)), indexes.__getitem__
    )
    return set(podman_changes(cv))


def test_p1_whiteout_is_d_even_of_nothing() -> None:
    assert podman([d("/a"), wh("/a/f")], [d("/a"), e("/a/f")]) == {("D", b"/a/f"), ("C", b"/a")}
    assert podman([wh("/ghost")], [d("/x")]) == {("D", b"/ghost")}


def test_p2_opaque_directory() -> None:
    lower = [d("/o"), e("/o/old")]
    assert podman([d("/o", xattrs=OPAQUE), e("/o/new")], lower) == {("D", b"/o"), ("A", b"/o/new")}
    # a child with a name the lower directory had is C: the opaque directory does not count
    assert podman([d("/o", xattrs=OPAQUE), e("/o/old")], lower) == {("D", b"/o"), ("C", b"/o/old")}
    # user.overlay.opaque (rootless, userxattr) is not read: an ordinary directory
    user = (("user.overlay.opaque", b"y"),)
    assert podman([d("/o", xattrs=user), e("/o/new")], lower) == {
        ("C", b"/o"),
        ("A", b"/o/new"),
    }
    # a new opaque directory over a whiteout in a nearer layer is not a deletion
    assert podman([d("/o", xattrs=OPAQUE)], [wh("/o")], lower) == {("A", b"/o")}
    assert podman([d("/o", xattrs=OPAQUE)], []) == {("A", b"/o")}


def test_p3_layer_scan() -> None:
    # a copy-up that changed nothing is still C
    assert podman([e("/f")], [e("/f")]) == {("C", b"/f")}
    # the nearest layer with a whiteout of the path, or of an ancestor, makes it A
    assert podman([e("/f")], [wh("/f")], [e("/f")]) == {("A", b"/f")}
    assert podman([d("/x"), e("/x/f")], [wh("/x")], [d("/x"), e("/x/f")]) == {
        ("A", b"/x"),
        ("A", b"/x/f"),
    }
    # the first layer that has it decides; an opaque directory in a lower layer is not honoured
    assert podman([d("/o"), e("/o/f")], [d("/o", xattrs=OPAQUE)], [d("/o"), e("/o/f")]) == {("C", b"/o/f")}


def test_p4_directory_metadata() -> None:
    same = podman([d("/a"), e("/a/f")], [d("/a"), e("/a/f")])
    assert same == {("C", b"/a/f")}  # /a unchanged: not listed, and C of a file adds no parents
    assert podman([d("/a", mtime=T0 + 2 * SECOND)], [d("/a")]) == {("C", b"/a")}
    assert podman([d("/a", mtime=T0 + SECOND + 1)], [d("/a", mtime=T0 + 7)]) == {("C", b"/a")}
    assert podman([d("/a", mode=0o700)], [d("/a")]) == {("C", b"/a")}
    assert podman([d("/a", size=8192)], [d("/a")]) == {("C", b"/a")}
    assert podman([d("/a", size=None)], [d("/a", size=8192)]) == set()  # a tar records no directory size
    assert podman([d("/a", mtime=T0 + 123)], [d("/a")]) == set()  # same second, one side 0 ns
    assert podman([d("/a", mtime=T0 + SECOND)], [d("/a", mtime=T0 + 5)]) == set()  # a tar rounded it up
    assert podman([d("/a")], [e("/a")]) == {("C", b"/a")}  # a directory over a file


def test_p4_same_fs_time_tolerates_rounding() -> None:
    assert same_fs_time(T0, T0) and same_fs_time(T0 + 5, T0) and not same_fs_time(T0 + 5, T0 + 6)
    assert same_fs_time(T0 - SECOND + 600_000_000, T0)  # rounded up by a tar writer
    assert not same_fs_time(T0 - 2 * SECOND + 600_000_000, T0)


def test_p5_parents_of_a_and_d() -> None:
    assert podman([d("/a"), d("/a/b"), e("/a/b/new")], [d("/a"), d("/a/b")]) == {
        ("C", b"/a"),
        ("C", b"/a/b"),
        ("A", b"/a/b/new"),
    }
    # a parent reported for itself is not repeated
    assert podman([d("/a", mode=0o700), wh("/a/gone")], [d("/a"), e("/a/gone")]) == {
        ("C", b"/a"),
        ("D", b"/a/gone"),
    }


def test_p6_lower_lookups_follow_symlinks() -> None:
    layer = {x.path: x for x in [d("/"), d("/real"), e("/real/x"), e("/link", Kind.SYMLINK, target="real")]}
    layer[b"/abs"] = e("/abs", Kind.SYMLINK, target="/etc/passwd")
    layer[b"/up"] = e("/up", Kind.SYMLINK, target="../../x")
    layer[b"/dangling"] = e("/dangling", Kind.SYMLINK, target="nowhere")
    assert stat_in_layer(layer, b"/link/x") == layer[b"/real/x"]
    assert stat_in_layer(layer, b"/link") == layer[b"/real"]
    assert stat_in_layer(layer, b"/abs") is OUTSIDE and stat_in_layer(layer, b"/up") is OUTSIDE
    assert stat_in_layer(layer, b"/dangling") is None and stat_in_layer(layer, b"/none/x") is None
    # a dangling symlink is as good as nothing: the next layer decides
    link = e("/f", Kind.SYMLINK, target="nowhere")
    assert podman([e("/f")], [link]) == {("A", b"/f")}
    assert podman([e("/f")], [link], [e("/f")]) == {("C", b"/f")}
    # an absolute target is on the host that ran Podman: counted as present
    assert podman([e("/f")], [e("/f", Kind.SYMLINK, target="/bin/busybox")]) == {("C", b"/f")}


def test_p7_lookups_podman_itself_fails_on() -> None:
    # ENOTDIR in the layer scan: podman diff fails
    with pytest.raises(PodmanDiffError, match="ENOTDIR"):
        podman([d("/t", xattrs=OPAQUE), e("/t/new")], [e("/t")], [d("/t")])
    loop = [e("/a", Kind.SYMLINK, target="b"), e("/b", Kind.SYMLINK, target="a")]
    with pytest.raises(PodmanDiffError, match="ELOOP"):
        podman([d("/a"), e("/a/f")], loop)
    # ENOTDIR in a whiteout check is tolerated: here the non-directory is the whiteout itself
    assert podman([d("/t"), e("/t/new")], [wh("/t")], [d("/t")]) == {("A", b"/t"), ("A", b"/t/new")}


def test_p8_libpod_mount_points_are_dropped() -> None:
    upper = [d("/etc"), e("/etc/hosts"), e("/etc/mtab", Kind.SYMLINK, target="/proc/mounts"), d("/run")]
    upper.append(e("/run/.containerenv"))
    got = podman(upper, [d("/etc"), d("/run")])
    assert got == {("C", b"/etc")}  # the parent P5 added for /etc/hosts stays


def test_p9_names_are_printed_raw() -> None:
    letters = [("A", b"/odd/new\nline"), ("A", b"/odd/\xffbin")]
    assert podman_output(letters) == b"A /odd/new\nline\nA /odd/\xffbin\n"
    assert docker_output(letters) == b"A /odd/new\nline\nA /odd/\xef\xbf\xbdbin\n"


# -- the kernel as the oracle, on containers/storage trees ---------------------------------------


def reference_podman_diff(upper: Path, lowers: list[Path]) -> set[tuple[str, bytes]] | str:
    """containers/storage's OverlayChanges and libpod's initInodes filter, transcribed, run on the
    real directories with os.lstat/os.stat/getxattr: an oracle independent of the snapshot."""
    top = os.fsencode(upper)
    layers = [os.fsencode(layer) for layer in lowers]

    def chain(path: bytes) -> list[bytes]:
        out, head = [], path.rpartition(b"/")[0]
        while head:
            out.append(head)
            head = head.rpartition(b"/")[0]
        return out

    def stat_(full: bytes, tolerate: bool) -> os.stat_result | None:
        try:
            return os.stat(full)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            if tolerate:
                return None
            raise

    def white(s: os.stat_result | None) -> bool:
        return s is not None and stat.S_ISCHR(s.st_mode) and s.st_rdev == 0

    def same_time(a: int, b: int) -> bool:
        (asec, ans), (bsec, bns) = divmod(a, 10**9), divmod(b, 10**9)
        if (asec, ans) == (bsec, bns):
            return True
        if ans and bns:
            return False
        return asec == bsec or (bns == 0 and asec == bsec - 1) or (ans == 0 and asec - 1 == bsec)

    def walk(rel: bytes):  # type: ignore[no-untyped-def]
        for name in sorted(os.listdir(top + rel)):
            path = rel + b"/" + name
            st_ = os.lstat(top + path)
            yield path, st_
            if stat.S_ISDIR(st_.st_mode):
                yield from walk(path)

    changes: list[tuple[str, bytes]] = []
    changed: set[bytes] = set()
    try:
        for path, f in walk(b""):
            kind = None
            if white(f):
                kind = "D"
            elif stat.S_ISDIR(f.st_mode):
                try:
                    opaque = os.getxattr(top + path, "trusted.overlay.opaque", follow_symlinks=False)
                except OSError:
                    opaque = b""
                if opaque == b"y":
                    for layer in layers:
                        s = stat_(layer + path, True)
                        if s is not None:
                            kind = None if white(s) else "D"
                            break
                        if any(white(stat_(layer + p, True)) for p in chain(path)):
                            break
            if kind is None:
                kind = "A"
                for layer in layers:
                    if white(stat_(layer + path, True)) or any(
                        white(stat_(layer + p, True)) for p in chain(path)
                    ):
                        break
                    s = stat_(layer + path, False)
                    if s is None:
                        continue
                    both_dirs = stat.S_ISDIR(s.st_mode) and stat.S_ISDIR(f.st_mode)
                    same = s.st_size == f.st_size and s.st_mode == f.st_mode
                    kind = "skip" if both_dirs and same and same_time(f.st_mtime_ns, s.st_mtime_ns) else "C"
                    break
            if kind == "skip":
                continue
            if stat.S_ISDIR(f.st_mode):
                changed.add(path)
            if kind in ("A", "D"):
                for parent in chain(path):
                    if parent not in changed:
                        changes.append(("C", parent))
                        changed.add(parent)
            changes.append((kind, path))
    except NotADirectoryError:
        return "ENOTDIR"
    return {(k, p) for k, p in changes if p not in INIT_INODES}


def _compare_storage(root: Path, tmp: Path, image_step: str, ops: list) -> None:  # type: ignore[type-arg]
    def run(merged: Path) -> None:
        for op in ops:
            run_op(merged, op)

    store = ll.make_storage_root(
        root,
        images={"localhost/app:1": [BASE, IMAGE_STEPS[image_step]]},
        containers={"c": ("localhost/app:1", None, run)},
    )
    record = store.containers["c"]
    snapshot = tmp / "snap.o2f"
    api.collect(str(root), str(snapshot), force=True)
    lower = (root / "overlay" / record.layer_id / "lower").read_text()
    kernel = kernel_view(root, record.layer_id, lower, driver="overlay")
    mine = o2f_view(snapshot, "c")
    assert set(mine) == set(kernel), {
        "only o2f": sorted(set(mine) - set(kernel)),
        "only kernel": sorted(set(kernel) - set(mine)),
    }
    for path in sorted(kernel):
        assert mine[path] == kernel[path], (path, ops)
    # --format podman against the transcription of containers/storage run on the real tree
    want = reference_podman_diff(store.upper("c"), [store.diff(layer) for layer in record.chain])
    analysis, _ = api.open_analysis(str(snapshot))
    result = api.diff(analysis, ["c"], podman=True)
    analysis.snapshot.close()
    if want == "ENOTDIR":
        assert result.podman == [] and "ENOTDIR" in " ".join(result.problems), ops
    else:
        assert result.problems == [] and set(result.podman[0][1]) == want, ops


@needs_root
@settings(
    max_examples=int(os.environ.get("O2F_KERNEL_EXAMPLES", "15")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(image_step=st.sampled_from(sorted(IMAGE_STEPS)), ops=st.lists(op_strategy, min_size=1, max_size=12))
def test_storage_offline_view_equals_kernel_view(
    tmp_path_factory: pytest.TempPathFactory, image_step: str, ops: list
) -> None:  # type: ignore[type-arg]
    tmp = tmp_path_factory.mktemp("kdiff-storage")
    _compare_storage(tmp / "storage", tmp, image_step, ops)


@needs_root
@pytest.mark.parametrize("image_step", sorted(IMAGE_STEPS))
def test_storage_every_image_step_with_a_fixed_scenario(tmp_path: Path, image_step: str) -> None:
    ops = FIXED_SCENARIO
    _compare_storage(tmp_path / "storage", tmp_path, image_step, ops)


@needs_root
def test_storage_root_layout(tmp_path: Path) -> None:
    """make_storage_root writes what the engine expects: empty/ in the bottom layer, no -init layer,
    layers named <name>-layer, created containers with merged/, and Podman's mount points."""
    store = ll.make_storage_root(
        tmp_path / "s",
        images={"localhost/app:1": [BASE]},
        containers={"idle": ll.ContainerSpec("localhost/app:1"), "ran": ("localhost/app:1", None, [])},
    )
    bottom = store.root / "overlay" / store.images["localhost/app:1"].layers[0]
    assert (bottom / "empty").is_dir() and not (bottom / "lower").exists()
    assert (store.root / "overlay" / store.containers["idle"].layer_id / "merged").is_dir()
    assert os.readlink(store.upper("ran") / "etc" / "mtab") == "/proc/mounts"
    layers = json.loads((store.root / "overlay-layers" / "layers.json").read_bytes())
    assert {tuple(r.get("names", ())) for r in layers} >= {("idle-layer",), ("ran-layer",)}
    snapshot = tmp_path / "s.o2f"
    api.collect(str(store.root), str(snapshot), force=True)
    analysis, _ = api.open_analysis(str(snapshot))
    assert {c.name: c.upper_layer for c in analysis.containers} == {
        n: c.layer_id for n, c in store.containers.items()
    }
    assert all(c.init_layer is None and c.problem is None for c in analysis.containers)
    assert [c.kind for c in api.diff(analysis, ["idle"]).reports[0][1]] == []


def test_oracle_ops_never_block_on_a_fifo(tmp_path: Path) -> None:
    """Regression (found by the storage differential): `rm-then-mkdir` of a FIFO hung the suite in
    shutil.rmtree's open(); writes to a FIFO would hang in open() too."""
    import signal

    (tmp_path / "d2").mkdir()
    os.mkfifo(tmp_path / "d2" / "link")
    os.symlink("link", tmp_path / "d2" / "via")
    previous = signal.signal(signal.SIGALRM, signal.default_int_handler)
    signal.alarm(5)
    try:
        for op in ("rm-then-mkdir", "create", "append", "rewrite-same-size"):
            for path in ("/d2/link", "/d2/via"):
                run_op(tmp_path, (op, path, b"x"))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert stat.S_ISFIFO(os.lstat(tmp_path / "d2" / "link").st_mode)


@needs_root
def test_storage_p7_podman_diff_fails_where_podman_fails(tmp_path: Path) -> None:
    """A directory made where an image layer has a file over a lower directory: containers/storage's
    lookup of /tree/x in that layer gives ENOTDIR, and `podman diff` fails; so does --format podman."""
    ops = [("rm", "/tree", None), ("mkdir", "/tree", None), ("create", "/tree/x", b"x")]
    _compare_storage(tmp_path / "storage", tmp_path, "file-over-dir", ops)
    code, out, err = run_cli("diff", str(tmp_path / "snap.o2f"), "c", "--format", "podman")
    assert code == 2 and out == b"" and "ENOTDIR" in err and "no container could be analysed" in err
    assert run_cli("diff", str(tmp_path / "snap.o2f"), "c")[0] == 0  # the forensic report is unaffected
