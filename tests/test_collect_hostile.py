"""Collection of a data root built to hurt the collector.

A layer holds: symlinks to the host's /etc/shadow and to /, a FIFO, a socket,
device nodes, names with newline/tab/backslash/``\\x``-looking text/invalid
UTF-8/255 bytes, a 40-level tree deeper than 3 KB, mode-000 entries and a
100 MB sparse file. Metadata paths are hostile too (a FIFO and a shadow
symlink in ``containers/<id>/``, a layer whose ``diff`` is a symlink to /etc,
an ``l/`` link to /etc/shadow). The collector must finish, follow nothing,
keep every name byte for byte, and produce a snapshot that verifies.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from blake3 import blake3

from forensics import api
from forensics.model import Entry, Kind, path_from_text
from tests.conftest import needs_root
from tests.layerlang import (
    blockdev,
    chardev,
    dir,
    fifo,
    file,
    hardlink,
    make_data_root,
    scan,
    socket,
    sparse,
    symlink,
)

pytestmark = [needs_root, pytest.mark.root]

NAMES = [
    b"new\nline",
    b"tab\there",
    b"carriage\rreturn",
    b"back\\slash",
    b"a\\x41",  # looks like an escape of "A"
    b"\\xff",  # the text form of the raw byte below
    b"\xff",
    b"bad\xff\xfebyte",
    b"caf\xc3\xa9",
    b"\xed\xa0\x80surrogate-utf8",  # CESU/WTF-8 surrogate: not valid UTF-8
    b"n" * 255,
    "é".encode() * 127 + b"x",  # 255 bytes of multibyte UTF-8
    b"\x1b[31mred",
    b" ",
    b"-rf",
    b".wh.evil",  # a literal file in a layer that the collector merely records
]
DEEP = "/deep/" + "/".join(f"d{i:02d}" + "x" * 78 for i in range(1, 41))  # 40 levels, > 3 KB
SPARSE_SIZE = 100 * 2**20
HOSTILE = [
    symlink("/etc/shadow-link", "/etc/shadow"),
    symlink("/srv/rootlink", "/"),
    symlink("/srv/dotdot", "../../../../../../../../etc/shadow"),
    fifo("/run/block.fifo"),
    socket("/run/app.sock"),
    chardev("/dev/null-copy", 1, 3),
    blockdev("/dev/loop-copy", 7, 0),
    *[file(b"/names/" + name, b"name:" + name) for name in NAMES],
    file(DEEP + "/bottom.txt", "bottom\n"),
    file("/secret/zero", "top secret\n", mode=0o000),
    file("/secret/locked/inner.txt", "locked\n"),
    dir("/secret/locked", mode=0o000),
    sparse("/big/sparse.img", SPARSE_SIZE),
    hardlink("/big/sparse-link", "/big/sparse.img"),  # a second name of a file hashed on a worker thread
    file("/big/after.txt", "after\n"),
]


def _shadow() -> bytes:
    try:
        return Path("/etc/shadow").read_bytes()
    except OSError:
        pytest.skip("cannot read the host's /etc/shadow")


def _collect_cli(source: Path, output: Path, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The CLI in a child process: a collector blocked on a FIFO fails by timeout instead of hanging."""
    return subprocess.run(
        [sys.executable, "-m", "forensics", "collect", str(source), "-o", str(output), "--force", "--quiet"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("hostile")
    root = make_data_root(
        base / "docker",
        images={"hostile/app:1": [[file("/etc/passwd", "root:x:0:0::/root:/bin/sh\n")], HOSTILE]},
        containers={"victim": ("hostile/app:1", None, None)},
        seed="hostile",
    )
    cdir = root.root / "containers" / root.containers["victim"].id
    (cdir / "hostname").unlink(missing_ok=True)
    os.mkfifo(cdir / "hostname")
    os.symlink("/etc/shadow", cdir / "hosts")
    os.symlink("/etc/shadow", root.root / "overlay2" / "l" / "SHADOWSHADOWSHADOWSHADOWSH")
    evil = root.root / "overlay2" / ("e" * 64)
    evil.mkdir()
    os.symlink("/etc", evil / "diff")
    before = scan(root.diff(root.images["hostile/app:1"].layers[1]), read=False)
    done = _collect_cli(root.root, base / "snap.o2f")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return root, base / "snap.o2f", before


@pytest.fixture(scope="module")
def snapshot(hostile):
    with api.open_snapshot(str(hostile[1])) as snap:
        yield snap


def _layer(hostile) -> str:
    return hostile[0].images["hostile/app:1"].layers[1]


def test_fifo_and_socket_are_recorded_and_never_opened(hostile, snapshot) -> None:
    rows = {e.path: e for e in snapshot.entries(_layer(hostile))}
    assert rows[b"/run/block.fifo"].kind is Kind.FIFO and rows[b"/run/block.fifo"].blake3 is None
    assert rows[b"/run/app.sock"].kind is Kind.SOCKET and rows[b"/run/app.sock"].blake3 is None
    assert (rows[b"/dev/null-copy"].kind, rows[b"/dev/null-copy"].rdev) == (Kind.CHAR, "1:3")
    assert (rows[b"/dev/loop-copy"].kind, rows[b"/dev/loop-copy"].rdev) == (Kind.BLOCK, "7:0")
    assert rows[b"/big/after.txt"].blake3 == blake3(b"after\n").hexdigest()  # the walk went on


def test_no_symlink_is_followed(hostile, snapshot) -> None:
    root, path, _ = hostile
    shadow_hash = blake3(_shadow()).hexdigest()
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        hashes = {h for (h,) in conn.execute("SELECT DISTINCT blake3 FROM entries")}
        contents = [c for (c,) in conn.execute("SELECT content FROM metadata_files")]
        paths = [path_from_text(p) for (p,) in conn.execute("SELECT path FROM entries")]
        meta_paths = [path_from_text(p) for (p,) in conn.execute("SELECT path FROM metadata_files")]
    assert shadow_hash not in hashes
    assert _shadow() not in contents
    assert not any(p.startswith(b"/srv/rootlink/") for p in paths)
    rows = {e.path: e for e in snapshot.entries(_layer(hostile))}
    assert rows[b"/etc/shadow-link"].target == b"/etc/shadow"
    assert rows[b"/srv/rootlink"].target == b"/"
    assert rows[b"/srv/dotdot"].target == b"../../../../../../../../etc/shadow"
    cid = root.containers["victim"].id
    assert f"containers/{cid}/hosts".encode() not in meta_paths  # a symlink, not a file to keep
    assert f"containers/{cid}/hostname".encode() not in meta_paths  # a FIFO
    evil = [e for e in snapshot.entries("e" * 64)]
    assert [(e.path, e.kind, e.target) for e in evil] == [(b"/", Kind.SYMLINK, b"/etc")]
    links = {name: (target, layer) for name, target, layer in snapshot.links()}
    assert links["SHADOWSHADOWSHADOWSHADOWSH"] == (b"/etc/shadow", None)


def test_names_round_trip_byte_for_byte(hostile, snapshot) -> None:
    _, _, before = hostile
    rows = {e.path: e for e in snapshot.entries(_layer(hostile))}
    assert set(rows) == set(before)
    for name in NAMES:
        entry = rows[b"/names/" + name]
        assert entry.blake3 == blake3(b"name:" + name).hexdigest(), name
    deep = DEEP.encode() + b"/bottom.txt"
    assert len(deep) > 3072 and deep.count(b"/") == 42
    assert rows[deep].blake3 == blake3(b"bottom\n").hexdigest()


def test_every_row_equals_an_independent_reading(hostile, snapshot) -> None:
    root, _, before = hostile
    after = scan(root.diff(_layer(hostile)))
    for path, row in before.items():
        truth = dict(row, **{k: after[path][k] for k in ("target", "blake3", "head")})
        expected = Entry(layer_id=_layer(hostile), path=path, **dict(truth, kind=Kind(truth["kind"])))
        got = {e.path: e for e in snapshot.entries(_layer(hostile))}[path]
        assert replace(got, link_group=None) == expected, path


def test_mode_000_entries_are_read_as_root(hostile, snapshot) -> None:
    rows = {e.path: e for e in snapshot.entries(_layer(hostile))}
    assert (
        rows[b"/secret/zero"].mode == 0
        and rows[b"/secret/zero"].blake3 == blake3(b"top secret\n").hexdigest()
    )
    assert rows[b"/secret/locked"].mode == 0
    assert rows[b"/secret/locked/inner.txt"].blake3 == blake3(b"locked\n").hexdigest()
    assert snapshot.errors() == []


def test_a_100_mb_sparse_file_is_hashed_as_its_zeros(hostile, snapshot) -> None:
    zeros = blake3(max_threads=blake3.AUTO)
    chunk = bytes(4 * 2**20)
    assert SPARSE_SIZE % len(chunk) == 0
    for _ in range(SPARSE_SIZE // len(chunk)):
        zeros.update(chunk)
    rows = {e.path: e for e in snapshot.entries(_layer(hostile))}
    entry, link = rows[b"/big/sparse.img"], rows[b"/big/sparse-link"]
    assert entry.size == SPARSE_SIZE
    assert entry.blake3 == zeros.hexdigest()
    assert link.blake3 == entry.blake3 and link.link_group == entry.link_group is not None


def test_the_snapshot_verifies(hostile) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "forensics", "verify", str(hostile[1])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    info = json.loads(
        subprocess.run(
            [sys.executable, "-m", "forensics", "info", str(hostile[1]), "--format", "json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert info["complete"] is True and info["errors"] == 0


# --- an unprivileged collector ---------------------------------------------------------------

_AS_NOBODY = """
import json, os, sys
from forensics import api
import forensics.capture.dirsource, forensics.capture.engine, forensics.store.writer, forensics.store.reader
# api imports capture code on use; load all of it while the interpreter's files are still reachable.
import forensics.capture.layerverify, forensics.capture.mounts, forensics.capture.sources
from forensics.capture.engine import all_engines
import importlib.metadata, sqlite_utils
all_engines()
sqlite_utils.Database(memory=True)  # loads its plugins (entry points under /root) while still root
os.setgroups([])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
assert os.geteuid() == 65534
result = api.collect(sys.argv[1], sys.argv[2])
print(json.dumps(result.provenance.counts))
"""


@pytest.fixture()
def nobody_dir():
    """A directory the unprivileged user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="o2f-nobody-", dir="/tmp"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_unreadable_entries_become_errors_and_the_walk_goes_on(nobody_dir: Path) -> None:
    """Collector without privileges (setresuid to 65534 after imports: /root, which holds the
    interpreter, is not reachable for nobody, so ``setpriv`` cannot start it)."""
    root = make_data_root(
        nobody_dir / "docker",
        images={
            "nobody/app:1": [
                [
                    file("/a-first.txt", "first\n"),
                    file("/m-zero", "secret\n", mode=0o000),
                    file("/n-locked/inner.txt", "inner\n"),
                    dir("/n-locked", mode=0o000),
                    file("/z-last.txt", "last\n"),
                ]
            ]
        },
        seed="nobody",
    )
    subprocess.run(["chown", "-R", "-h", "65534:65534", str(root.root)], check=True)
    out = nobody_dir / "out"
    out.mkdir()
    os.chown(out, 65534, 65534)
    done = subprocess.run(
        [sys.executable, "-c", _AS_NOBODY, str(root.root), str(out / "snap.o2f")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    layer = root.images["nobody/app:1"].layers[0]
    with api.open_snapshot(str(out / "snap.o2f")) as snap:
        rows = {e.path: e for e in snap.entries(layer)}
        errors = {
            (path_from_text(e["path"]), e["operation"], e["errno"], e["layer_id"]) for e in snap.errors()
        }
        assert snap.provenance["complete"] == 1
    base = f"overlay2/{layer}/diff".encode()
    assert (base + b"/m-zero", "open", 13, layer) in errors
    assert (base + b"/n-locked", "open", 13, layer) in errors
    assert len(errors) == 2
    assert rows[b"/m-zero"].blake3 is None and rows[b"/m-zero"].mode == 0  # still a row, without a hash
    assert rows[b"/n-locked"].kind is Kind.DIR and b"/n-locked/inner.txt" not in rows
    assert rows[b"/a-first.txt"].blake3 == blake3(b"first\n").hexdigest()
    assert rows[b"/z-last.txt"].blake3 == blake3(b"last\n").hexdigest()


# --- damaged or hostile encodings: known bugs -------------------------------------------------


def _simple_root(base: Path):
    return make_data_root(
        base / "docker",
        images={"enc/app:1": [[file("/a", "a\n")], [file("/b", "b\n")]]},
        containers={"c": ("enc/app:1", None, None)},
        seed="encoding",
    )


def test_a_non_utf8_xattr_name_does_not_abort_collection(tmp_path: Path) -> None:
    root = _simple_root(tmp_path)
    target = root.diff(root.images["enc/app:1"].layers[1]) / "b"
    os.setxattr(target, b"user.bad\xff", b"v")
    api.collect(str(root.root), str(tmp_path / "snap.o2f"))
    with api.open_snapshot(str(tmp_path / "snap.o2f")) as snap:
        rows = {e.path: e for e in snap.entries(root.images["enc/app:1"].layers[1])}
    assert os.fsencode(rows[b"/b"].xattrs[0][0]) == b"user.bad\xff"
    assert api.verify(str(tmp_path / "snap.o2f")).ok


def _damage(case: str, root) -> None:
    top = root.root / "overlay2" / root.images["enc/app:1"].layers[1]
    if case == "layer directory name":
        os.makedirs(os.fsencode(root.root / "overlay2") + b"/bad\xff/diff")
    elif case == "lower file":
        with open(top / "lower", "ab") as handle:
            handle.write(b"\xff")
    elif case == "link file":
        with open(top / "link", "ab") as handle:
            handle.write(b"\xff")
    elif case == "l/ short name":
        os.symlink(b"../nowhere/diff", os.fsencode(root.root / "overlay2" / "l") + b"/BAD\xff")
    elif case == "layerdb diff file":
        record = next((root.root / "image/overlay2/layerdb/sha256").iterdir())
        with open(record / "diff", "ab") as handle:
            handle.write(b"\xff")
    elif case == "image config":
        config = next((root.root / "image/overlay2/imagedb/content/sha256").iterdir())
        config.write_bytes(config.read_bytes().replace(b'"os":"linux"', b'"os":"lin\xffux"'))
    elif case == "container config":
        config = root.root / "containers" / root.containers["c"].id / "config.v2.json"
        config.write_bytes(config.read_bytes().replace(b'"Name":"/c"', b'"Name":"/c\xff"'))
    elif case == "layerdb mounts directory name":
        record = os.fsencode(root.root / "image/overlay2/layerdb/mounts") + b"/\xff"
        os.makedirs(record)
        with open(record + b"/mount-id", "w") as handle:
            handle.write(root.containers["c"].mount_id)


@pytest.mark.parametrize(
    "case",
    [
        "layer directory name",
        "lower file",
        "link file",
        "l/ short name",
        "layerdb diff file",
        "image config",
        "container config",
        "layerdb mounts directory name",
    ],
)
def test_invalid_utf8_in_engine_metadata_does_not_abort_collection(case: str, tmp_path: Path) -> None:
    root = _simple_root(tmp_path)
    _damage(case, root)
    api.collect(str(root.root), str(tmp_path / "snap.o2f"))
    assert api.verify(str(tmp_path / "snap.o2f")).ok


def test_entries_deeper_than_path_max_keep_their_xattrs(tmp_path: Path) -> None:
    deep = "/".join(f"d{i:02d}" + "q" * 77 for i in range(60))  # about 4.8 KB
    root = make_data_root(
        tmp_path / "docker",
        images={
            "deep/app:1": [[symlink(deep + "/link", "/etc/shadow"), fifo(deep + "/pipe"), file(deep + "/f")]]
        },
        seed="deep",
    )
    api.collect(str(root.root), str(tmp_path / "snap.o2f"))
    with api.open_snapshot(str(tmp_path / "snap.o2f")) as snap:
        assert snap.errors() == []
        rows = {e.path: e for e in snap.entries(root.images["deep/app:1"].layers[0])}
    assert rows[b"/" + deep.encode() + b"/link"].target == b"/etc/shadow"
