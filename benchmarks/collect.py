#!/usr/bin/env python3
"""Collection speed of o2f against the naive reference and the b3sum floor, on generated overlay2 trees.

    python benchmarks/collect.py [--scales 1 5] [--runs 3] [--workdir /tmp/o2f-bench] [--keep]
                                 [--rss-scale 10] [--shared ../shared/bench] [--json out.json]
                                 [--o2f CMD] [--baseline CMD]

For each scale it generates (or reuses) ``WORKDIR/o2-s<N>`` with
``make-overlay2-tree OUT --scale N`` from the shared bench folder, then times,
alternating in one loop on a warm page cache (one warm-up pass of each first):

a. ``o2f collect TREE -o X --force --quiet`` (a subprocess)
b. ``python naive_collect.py TREE DB`` (the naive reference of the shared bench folder)
c. ``find TREE -type f -print0 | xargs -0 -P2 -n 1000 b3sum > /dev/null`` (the floor: every byte
   read and hashed on both cores), skipped with a note when b3sum is not installed
d. as root, ``o2f collect`` of the same tree bind-mounted read-only (``o2f-ro``), as evidence is
   mounted: there nothing can be swapped between a listing and an open, so o2f opens listed files
   directly instead of through an ``O_PATH`` descriptor (``--no-ro`` leaves it out)

(and, with ``--baseline CMD``, another o2f, e.g. ``"env PYTHONPATH=/old/checkout python -m
forensics"`` run from outside the repository) and prints per tool the median wall time
(min-max), CPU seconds and peak RSS,
the ratios o2f/naive and o2f/b3sum, and the bytes o2f read (``o2f info X
--format json``). ``--rss-scale N`` adds one o2f run on a scale-N tree for its
peak RSS only.

The page cache counts as warm only if the tree was read within the last
minute (the bench VM reclaims idle page cache after about 60 s), hence the
warm-up pass right before the timed runs and the alternation. The machine may
be shared: the load average is printed before and after each scale, and
figures are medians. This script prints figures; it never asserts. The
targets (o2f <= 0.35x naive and <= 1.5x b3sum at scale 5, peak RSS <= 200 MiB
at scale 10) are printed beside them for reference.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPO.parent / "shared" / "bench"
TARGET_NAIVE = 0.35
TARGET_B3SUM = 1.5
TARGET_RSS_MIB = 200


@dataclass
class Run:
    wall: float
    cpu: float  # user + system seconds of the process and the children it waited for
    max_rss_kib: int  # largest resident set of the process or any child it waited for
    returncode: int


@dataclass
class Tool:
    name: str
    command: list[str]
    shell: bool = False
    runs: list[Run] = field(default_factory=list)

    @property
    def walls(self) -> list[float]:
        return [r.wall for r in self.runs]

    def median(self) -> float:
        return statistics.median(self.walls)


def run_once(command: list[str] | str, *, shell: bool = False) -> Run:
    """Wall time, CPU time and peak RSS of one command, from wait4's resource usage."""
    args = ["/bin/sh", "-c", command] if shell else command
    start = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # type: ignore[arg-type]
    stderr = process.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = stderr.decode(errors="replace")[-500:]
        print(f"    ! {shlex.join(args)} exited with {process.returncode}: {tail}")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, process.returncode)


_COMPILED: list[bool] = []


def o2f_command(args: argparse.Namespace) -> list[str]:
    """``--o2f``, else this interpreter with ``-m forensics``: the interpreter the naive reference runs
    on, and not a version manager's shim on PATH (pyenv's costs about 60 ms per run).

    The package's bytecode is compiled once first, as ``pip install`` does for an installed
    package: with PYTHONDONTWRITEBYTECODE set (as on the bench VM) and an editable install,
    every run would otherwise compile every module again (about 0.1 s of each collection).
    """
    if args.o2f:
        return shlex.split(args.o2f)
    if not _COMPILED:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "forensics")], check=True)
        _COMPILED.append(True)
    return [sys.executable, "-m", "forensics"]


def ensure_tree(args: argparse.Namespace, scale: float, generated: list[Path]) -> Path:
    """WORKDIR/o2-s<N>, generated unless a complete one (with its marker file) is there."""
    tree = args.workdir / f"o2-s{scale:g}"
    marker = args.workdir / f"o2-s{scale:g}.complete"
    if tree.is_dir() and marker.exists():
        print(f"  reusing {tree}")
        return tree
    generator = args.shared / "make-overlay2-tree"
    if not generator.exists():
        sys.exit(f"{generator} not found: point --shared at the shared bench folder")
    if os.geteuid() != 0:
        print(
            "  note: not root; make-overlay2-tree needs root for a complete tree (devices, trusted.* xattrs)"
        )
    print(f"  generating {tree} (scale {scale:g}) ...", flush=True)
    start = time.perf_counter()
    marker.unlink(missing_ok=True)
    subprocess.run([str(generator), str(tree), "--scale", f"{scale:g}", "--force", "--quiet"], check=True)
    marker.write_text(f"make-overlay2-tree --scale {scale:g}\n")
    generated.append(tree)
    print(f"  generated in {time.perf_counter() - start:.1f} s")
    return tree


def snapshot_info(o2f: list[str], snapshot: Path) -> dict[str, object]:
    done = subprocess.run([*o2f, "info", str(snapshot), "--format", "json"], capture_output=True, text=True)
    if done.returncode != 0:
        return {}
    try:
        return json.loads(done.stdout)
    except ValueError:
        return {}


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def fmt_run(tool: Tool) -> str:
    walls = tool.walls
    cpu = statistics.median(r.cpu for r in tool.runs)
    rss = max(r.max_rss_kib for r in tool.runs) / 1024
    return (
        f"  {tool.name:<8} {statistics.median(walls):7.3f} s  ({min(walls):.3f}-{max(walls):.3f})"
        f"   cpu {cpu:6.2f} s   peak RSS {rss:7.1f} MiB"
    )


def bench_scale(args: argparse.Namespace, scale: float, generated: list[Path], b3sum: str | None) -> dict:
    print(f"\n== scale {scale:g}")
    tree = ensure_tree(args, scale, generated)
    o2f_db = args.workdir / f"o2f-s{scale:g}.db"
    naive_db = args.workdir / f"naive-s{scale:g}.db"
    tools = [
        Tool("o2f", [*o2f_command(args), "collect", str(tree), "-o", str(o2f_db), "--force", "--quiet"]),
        Tool("naive", [args.python, str(args.shared / "naive_collect.py"), str(tree), str(naive_db)]),
    ]
    baseline_db = args.workdir / f"o2f-baseline-s{scale:g}.db"
    if args.baseline:
        command = [*shlex.split(args.baseline), "collect", str(tree), "-o", str(baseline_db), "--force"]
        tools.insert(1, Tool("baseline", [*command, "--quiet"]))
    if b3sum:
        quoted = shlex.quote(str(tree))
        tools.append(
            Tool("b3sum", [f"find {quoted} -type f -print0 | xargs -0 -P2 -n 1000 {b3sum} > /dev/null"], True)
        )
    with read_only_view(args, tree) as view:
        if view is not None:
            # The same tree mounted read-only, as evidence is: nothing can be swapped there, so o2f
            # opens listed files directly instead of through an O_PATH descriptor (docs/evidence.md).
            ro_db = args.workdir / f"o2f-ro-s{scale:g}.db"
            command = [*o2f_command(args), "collect", str(view), "-o", str(ro_db), "--force", "--quiet"]
            tools.insert(1, Tool("o2f-ro", command))
        return _time_tools(args, scale, tree, tools, o2f_db)


@contextlib.contextmanager
def read_only_view(args: argparse.Namespace, tree: Path) -> Iterator[Path | None]:
    """*tree* bind-mounted read-only (root only; None elsewhere, and that column is left out)."""
    if os.geteuid() != 0 or args.no_ro:
        yield None
        return
    view = args.workdir / f"{tree.name}.ro"
    view.mkdir(exist_ok=True)
    try:
        subprocess.run(["mount", "--bind", str(tree), str(view)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"  note: no read-only view of {tree} ({exc})")
        subprocess.run(["umount", str(view)], check=False, capture_output=True)
        yield None
        return
    try:
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=False)


def _time_tools(args: argparse.Namespace, scale: float, tree: Path, tools: list[Tool], o2f_db: Path) -> dict:
    print(f"  load average before: {loadavg()}")
    print("  warm-up:", " ".join(t.name for t in tools), flush=True)
    for tool in tools:
        run_once(tool.command[0] if tool.shell else tool.command, shell=tool.shell)
    for index in range(args.runs):
        print(f"  run {index + 1}/{args.runs}:", end="", flush=True)
        for tool in tools:
            run = run_once(tool.command[0] if tool.shell else tool.command, shell=tool.shell)
            tool.runs.append(run)
            print(f" {tool.name} {run.wall:.3f}", end="", flush=True)
        print()
    print(f"  load average after:  {loadavg()}")
    info = snapshot_info(o2f_command(args), o2f_db)
    print(f"\n  scale {scale:g}: median wall (min-max) over {args.runs} alternating warm runs")
    for tool in tools:
        print(fmt_run(tool))
    by_name = {t.name: t for t in tools}
    failed = [t.name for t in tools if any(r.returncode != 0 for r in t.runs)]
    if failed:
        print(f"  no ratios: {', '.join(failed)} failed (see above); the figures would mean nothing")
        return {"scale": scale, "failed": failed}
    o2f = by_name["o2f"].median()
    ratio_naive = o2f / by_name["naive"].median()
    print(f"  o2f/naive  {ratio_naive:.2f}x   (target <= {TARGET_NAIVE}x at scale 5)")
    ratio_b3sum = None
    if "b3sum" in by_name:
        ratio_b3sum = o2f / by_name["b3sum"].median()
        print(f"  o2f/b3sum  {ratio_b3sum:.2f}x   (target <= {TARGET_B3SUM}x at scale 5)")
    else:
        print("  o2f/b3sum  n/a (b3sum not installed)")
    if "o2f-ro" in by_name:
        ro = by_name["o2f-ro"].median()
        print(f"  read-only mount: o2f/naive {ro / by_name['naive'].median():.2f}x", end="")
        if "b3sum" in by_name:
            print(f", o2f/b3sum {ro / by_name['b3sum'].median():.2f}x", end="")
        print()
    bytes_read = info.get("bytes_read")
    entries = info.get("entries")
    if bytes_read is not None:
        rate = bytes_read / o2f / 1e6  # type: ignore[operator]
        print(f"  o2f bytes read {bytes_read:,} ({rate:,.0f} MB/s at the median), entries {entries:,}")
    result = {
        "scale": scale,
        "tree": str(tree),
        "tools": {
            t.name: {
                "median": t.median(),
                "min": min(t.walls),
                "max": max(t.walls),
                "walls": t.walls,
                "cpu": [r.cpu for r in t.runs],
                "max_rss_kib": max(r.max_rss_kib for r in t.runs),
            }
            for t in tools
        },
        "o2f_over_naive": ratio_naive,
        "o2f_over_b3sum": ratio_b3sum,
        "bytes_read": bytes_read,
        "entries": entries,
    }
    if args.baseline:
        ratio = o2f / by_name["baseline"].median()
        print(f"  o2f/baseline {ratio:.2f}x   (baseline: {args.baseline})")
        result["o2f_over_baseline"] = ratio
    if not args.keep:
        for path in (
            o2f_db,
            *(args.workdir / f"{name}-s{scale:g}.db" for name in ("naive", "o2f-baseline", "o2f-ro")),
        ):
            path.unlink(missing_ok=True)
    return result


def rss_only(args: argparse.Namespace, scale: float, generated: list[Path]) -> dict:
    print(f"\n== scale {scale:g}: peak RSS of o2f only")
    tree = ensure_tree(args, scale, generated)
    snapshot = args.workdir / f"o2f-s{scale:g}.db"
    run = run_once([*o2f_command(args), "collect", str(tree), "-o", str(snapshot), "--force", "--quiet"])
    mib = run.max_rss_kib / 1024
    info = snapshot_info(o2f_command(args), snapshot)
    print(
        f"  o2f {run.wall:.3f} s (one run, cache state unknown), cpu {run.cpu:.2f} s, "
        f"peak RSS {mib:.1f} MiB (target <= {TARGET_RSS_MIB} MiB at scale 10), "
        f"entries {info.get('entries')}, bytes read {info.get('bytes_read')}"
    )
    if not args.keep:
        snapshot.unlink(missing_ok=True)
    return {"scale": scale, "wall": run.wall, "cpu": run.cpu, "max_rss_kib": run.max_rss_kib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 5], help="tree scales (default: 1 5)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per tool and scale (default: 3)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/o2f-bench"), help="trees and outputs")
    parser.add_argument("--keep", action="store_true", help="keep the trees generated and the snapshots")
    parser.add_argument(
        "--shared", type=Path, default=DEFAULT_SHARED, help=f"bench folder ({DEFAULT_SHARED})"
    )
    parser.add_argument("--rss-scale", type=float, help="also measure o2f's peak RSS alone at this scale")
    parser.add_argument("--o2f", help="o2f command line (default: this interpreter, -m forensics)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for naive_collect.py (blake3)")
    parser.add_argument(
        "--baseline",
        help="another o2f command line to time alongside as 'baseline' (an older checkout)",
    )
    parser.add_argument(
        "--no-ro", action="store_true", help="leave out the o2f run on a read-only bind mount of the tree"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.workdir = args.workdir.resolve()
    args.shared = args.shared.resolve()

    b3sum = shutil.which("b3sum")
    print(f"o2f: {shlex.join(o2f_command(args))}")
    print(f"bench folder: {args.shared}")
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}")
    if b3sum:
        version = subprocess.run([b3sum, "--version"], capture_output=True, text=True).stdout.strip()
        print(f"floor: {version} (find | xargs -0 -P2 -n 1000 b3sum)")
    else:
        print("note: b3sum is not installed (Debian: apt-get install b3sum); the b3sum floor (c) is skipped")

    generated: list[Path] = []
    results: dict[str, object] = {"scales": [], "rss": None}
    try:
        for scale in args.scales:
            results["scales"].append(bench_scale(args, scale, generated, b3sum))  # type: ignore[union-attr]
        if args.rss_scale is not None:
            results["rss"] = rss_only(args, args.rss_scale, generated)
    finally:
        if not args.keep:
            for tree in generated:
                shutil.rmtree(tree, ignore_errors=True)
                (args.workdir / f"{tree.name}.complete").unlink(missing_ok=True)

    print("\n== summary (median wall seconds)")
    print(f"  {'scale':>5} {'o2f':>8} {'naive':>8} {'b3sum':>8} {'o2f/naive':>10} {'o2f/b3sum':>10} "
          f"{'bytes read':>15} {'peak RSS':>10}")  # fmt: skip
    for row in results["scales"]:  # type: ignore[union-attr]
        if "failed" in row:
            print(f"  {row['scale']:>5g}  failed: {', '.join(row['failed'])}")
            continue
        tools = row["tools"]
        b3 = f"{tools['b3sum']['median']:8.3f}" if "b3sum" in tools else "     n/a"
        over_b3 = f"{row['o2f_over_b3sum']:9.2f}x" if row["o2f_over_b3sum"] else "       n/a"
        print(
            f"  {row['scale']:>5g} {tools['o2f']['median']:8.3f} {tools['naive']['median']:8.3f} {b3} "
            f"{row['o2f_over_naive']:9.2f}x {over_b3} {row['bytes_read'] or 0:>15,} "
            f"{tools['o2f']['max_rss_kib'] / 1024:7.1f} MiB"
        )
    if results["rss"]:
        rss = results["rss"]
        print(f"  scale {rss['scale']:g}: o2f peak RSS {rss['max_rss_kib'] / 1024:.1f} MiB")  # type: ignore[index]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
