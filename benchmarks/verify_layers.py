#!/usr/bin/env python3
"""What layer verification costs at collection, and which CRC-64 implementation to use.

    python3 benchmarks/verify_layers.py                 # corpus (directory and tar) + a scale-1 tree
    python3 benchmarks/verify_layers.py --crc           # CRC-64/GO-ISO implementations only
    python3 benchmarks/verify_layers.py --scale 0       # corpus only
    python3 benchmarks/verify_layers.py --repeat 5 --tar-tree

Figures: wall seconds of ``forensics.api.collect`` with ``verify_layers=False`` and
``True`` (median of ``--repeat`` runs after one warm-up run), and the difference.

Sources:

- the docker-a corpus (``shared/corpora/docker-a``): its tar as given, and the
  tree extracted from it (needs root). Real engine data with tar-split.
- a tree from ``shared/bench/make-overlay2-tree --scale N`` (needs root). That
  tree has no tar-split, so this script writes one for every image layer the way
  Docker's layer tar writer would (walk in lexical order, PAX headers, whiteouts
  as ``.wh.`` entries, opaque directories as ``.wh..wh..opq``, hardlinks as
  link entries, mtimes truncated to seconds, xattrs as ``SCHILY.xattr.*``) and
  replaces each layerdb ``diff`` with the sha256 of that tar, so every layer
  verifies. The tree is generated in a temporary directory and removed after.
  ``--tar-tree`` also measures a GNU tar of it (tar-split-files method).

Run it on the project VM and quote medians; see shared/bench/README.md for noise.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("O2F_SHARED", REPO.parent / "shared"))
CORPUS_TAR = SHARED / "corpora" / "docker-a" / "data-root.tar.gz"
MAKE_TREE = SHARED / "bench" / "make-overlay2-tree"

sys.path.insert(0, str(REPO))

from forensics import api  # noqa: E402
from forensics.capture.crc64 import crc64_bytes, crc64_iso  # noqa: E402

# -- CRC-64 implementations ------------------------------------------------------------------------


def _table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xD800000000000000 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _table()


def crc64_pure(data: bytes, crc: int = 0) -> int:
    """The pure-Python table implementation (Go's hash/crc64 update loop)."""
    crc ^= 0xFFFFFFFFFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF


def _implementations() -> dict[str, object]:
    found: dict[str, object] = {"fastcrc (chosen)": lambda d, c=0: crc64_iso(d, c)}
    try:
        import anycrc

        model = anycrc.Model("CRC64-GO-ISO")
        found["anycrc"] = lambda d, c=0: model.calc(d, c) if c else model.calc(d)
    except ImportError:
        pass
    try:
        import crcmod

        fn = crcmod.mkCrcFun(0x1000000000000001B, initCrc=0, rev=True, xorOut=0xFFFFFFFFFFFFFFFF)
        found["crcmod (C extension)" if crcmod.crcmod._usingExtension else "crcmod (pure)"] = fn
    except ImportError:
        pass
    found["pure-Python table"] = crc64_pure
    return found


def crc_bench(repeat: int) -> None:
    big = os.urandom(64 << 20)
    small = [os.urandom(1700) for _ in range(20000)]  # the median file of the scale-1 tree
    print("CRC-64/GO-ISO, median of", repeat, "runs (pure Python: 1 MiB, one run)")
    started = time.perf_counter()
    hashlib.sha256(big).digest()
    print(
        f"  {'sha256 (hashlib, reference)':28s} {len(big) / (time.perf_counter() - started) / 1e9:7.2f} GB/s"
    )
    for name, fn in _implementations().items():
        assert fn(b"123456789") == 0xB90956C775A41001, name  # type: ignore[operator]
        if name.startswith("pure"):
            chunk = big[: 1 << 20]
            started = time.perf_counter()
            fn(chunk)  # type: ignore[operator]
            print(f"  {name:28s} {len(chunk) / (time.perf_counter() - started) / 1e9:7.3f} GB/s")
            continue
        view = memoryview(big)
        big_s = _median(lambda: fn(view), repeat)  # type: ignore[operator]  # noqa: B023
        small_s = _median(lambda: [fn(s) for s in small], repeat)  # type: ignore[operator]  # noqa: B023
        print(
            f"  {name:28s} {len(big) / big_s / 1e9:7.2f} GB/s   "
            f"{small_s / len(small) * 1e6:5.2f} us per 1.7 KB file"
        )


def _median(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# -- collection with and without verification --------------------------------------------------------


def collect_bench(label: str, source: str, repeat: int, out_dir: Path, mounts: str | None = None) -> None:
    out = str(out_dir / "bench.o2f")
    times: dict[bool, list[float]] = {False: [], True: []}
    result = None
    for run in range(repeat + 1):
        for verify in (False, True):
            started = time.perf_counter()
            result = api.collect(source, out, force=True, verify_layers=verify, mounts_file=mounts)
            if run:  # the first round warms the page cache
                times[verify].append(time.perf_counter() - started)
    assert result is not None
    with api.open_snapshot(out) as snapshot:
        checks = snapshot.layer_checks()
    verdicts: dict[str, int] = {}
    for check in checks:
        verdicts[check.verdict.value] = verdicts.get(check.verdict.value, 0) + 1
    without, with_ = statistics.median(times[False]), statistics.median(times[True])
    counts = result.provenance.counts
    print(
        f"{label:34s} {counts.get('entries', 0):>8,} entries {len(checks):>3} image layers "
        f"({', '.join(f'{n} {v}' for v, n in sorted(verdicts.items()))})"
    )
    print(
        f"{'':34s} without {without:7.3f} s   with {with_:7.3f} s   "
        f"cost {with_ - without:+7.3f} s ({(with_ - without) / without * 100:+.0f}%)"
    )


# -- tar-split for a benchmark tree ---------------------------------------------------------------------


def add_tar_split(root: Path) -> tuple[int, int]:
    """Writes tar-split.json.gz and a matching diff id for every image layer; (layers, bytes)."""
    layerdb = root / "image" / "overlay2" / "layerdb" / "sha256"
    layers = total = 0
    for record in sorted(layerdb.iterdir()):
        cache_id = (record / "cache-id").read_text().strip()
        diff = root / "overlay2" / cache_id / "diff"
        if not diff.is_dir():
            continue
        entries, digest, size = _layer_tar_split(diff)
        with gzip.open(record / "tar-split.json.gz", "wb") as handle:
            for position, entry in enumerate(entries):
                entry["position"] = position
                handle.write(json.dumps(entry, separators=(",", ":")).encode() + b"\n")
        (record / "diff").write_text("sha256:" + digest)
        layers += 1
        total += size
    return layers, total


def _layer_tar_split(diff: Path) -> tuple[list[dict[str, object]], str, int]:
    sha = hashlib.sha256()
    entries: list[dict[str, object]] = []
    pending = bytearray()
    inodes: dict[tuple[int, int], str] = {}
    content_bytes = 0

    def segment(data: bytes) -> None:
        pending.extend(data)

    def emit(info: tarfile.TarInfo, data_path: str | None) -> None:
        nonlocal content_bytes
        segment(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        entries.append({"type": 2, "payload": base64.b64encode(bytes(pending)).decode()})
        sha.update(pending)
        pending.clear()
        name = info.name.encode("utf-8", "surrogateescape")
        entry: dict[str, object] = {"type": 1, "size": info.size, "payload": None}
        try:
            entry["name"] = name.decode("utf-8")
        except UnicodeDecodeError:
            entry["name_raw"] = base64.b64encode(name).decode()
        if data_path is not None and info.size:
            crc = 0
            with open(data_path, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    sha.update(chunk)
                    crc = crc64_iso(chunk, crc)
            entry["payload"] = base64.b64encode(crc64_bytes(crc)).decode()
            content_bytes += info.size
            segment(b"\0" * (-info.size % 512))
        entries.append(entry)

    def visit(directory: str, rel: str) -> None:
        for name in sorted(os.listdir(directory), key=os.fsencode):
            full = os.path.join(directory, name)
            st = os.lstat(full)
            path = f"{rel}{name}"
            info = tarfile.TarInfo(path)
            info.mode = st.st_mode & 0o7777
            info.uid, info.gid = st.st_uid, st.st_gid
            info.mtime = int(st.st_mtime)
            xattrs = {}
            for key in os.listxattr(full, follow_symlinks=False):
                if key not in ("trusted.overlay.opaque", "user.overlay.opaque"):
                    value = os.getxattr(full, key, follow_symlinks=False)
                    xattrs["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
            info.pax_headers = xattrs
            kind = st.st_mode & 0o170000
            data = None
            if kind == 0o040000:
                info.type = tarfile.DIRTYPE
                info.name = path + "/"
            elif kind == 0o120000:
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(full)
            elif kind == 0o020000 and st.st_rdev == 0:
                info = tarfile.TarInfo(f"{rel}.wh.{name}")
                info.mode, info.uid, info.gid, info.mtime = 0o600, st.st_uid, st.st_gid, int(st.st_mtime)
            elif kind in (0o020000, 0o060000):
                info.type = tarfile.CHRTYPE if kind == 0o020000 else tarfile.BLKTYPE
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            elif kind == 0o010000:
                info.type = tarfile.FIFOTYPE
            elif kind == 0o100000:
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in inodes:
                    info.type = tarfile.LNKTYPE
                    info.linkname = inodes[key]
                else:
                    inodes[key] = path
                    info.size = st.st_size
                    data = full
            else:
                continue  # sockets are not archived
            emit(info, data)
            if kind == 0o040000:
                opaque = any(
                    os.getxattr(full, n, follow_symlinks=False) == b"y"
                    for n in ("trusted.overlay.opaque", "user.overlay.opaque")
                    if n in os.listxattr(full, follow_symlinks=False)
                )
                if opaque:
                    marker = tarfile.TarInfo(f"{path}/.wh..wh..opq")
                    marker.mode, marker.uid, marker.gid, marker.mtime = (
                        0o600,
                        st.st_uid,
                        st.st_gid,
                        info.mtime,
                    )
                    emit(marker, None)
                visit(full, path + "/")

    visit(str(diff), "")
    segment(b"\0" * 1024)
    entries.append({"type": 2, "payload": base64.b64encode(bytes(pending)).decode()})
    sha.update(pending)
    return entries, sha.hexdigest(), content_bytes


# -- main -------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crc", action="store_true", help="only compare CRC-64 implementations")
    parser.add_argument("--repeat", type=int, default=3, help="counted runs per figure (default 3)")
    parser.add_argument("--scale", type=float, default=1.0, help="benchmark tree scale; 0 skips it")
    parser.add_argument("--tar-tree", action="store_true", help="also measure a GNU tar of the tree")
    args = parser.parse_args()
    if args.crc:
        crc_bench(max(args.repeat, 3))
        return
    work = Path(tempfile.mkdtemp(prefix="o2f-verify-bench-"))
    try:
        if CORPUS_TAR.exists():
            collect_bench("docker-a tar (tar-split-files)", str(CORPUS_TAR), args.repeat, work)
            if os.geteuid() == 0:
                corpus = work / "corpus"
                corpus.mkdir()
                subprocess.run(
                    ["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpzf", str(CORPUS_TAR)],
                    cwd=corpus,
                    check=True,
                )
                root = corpus / "var" / "lib" / "docker"
                collect_bench("docker-a directory (tar-split-stream)", str(root), args.repeat, work)
        if args.scale > 0 and os.geteuid() == 0 and MAKE_TREE.exists():
            tree = work / "tree"
            subprocess.run(
                [sys.executable, str(MAKE_TREE), str(tree), "--scale", str(args.scale), "--quiet"], check=True
            )
            started = time.perf_counter()
            layers, size = add_tar_split(tree)
            print(
                f"(tar-split written for {layers} image layers, {size / 1e6:,.1f} MB of file content, "
                f"in {time.perf_counter() - started:.1f} s)"
            )
            collect_bench(f"scale-{args.scale:g} tree directory", str(tree), args.repeat, work)
            if args.tar_tree:
                archive = work / "tree.tar"
                subprocess.run(
                    ["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-cf", str(archive), "."],
                    cwd=tree,
                    check=True,
                )
                collect_bench(f"scale-{args.scale:g} tree tar", str(archive), args.repeat, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
