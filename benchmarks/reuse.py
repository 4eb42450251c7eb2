#!/usr/bin/env python3
"""Re-collection with ``--reuse`` against a full collection of the same unchanged tree.

    python benchmarks/reuse.py [--scale 5] [--runs 5] [--threads N] [--cold] [--workdir /tmp/o2f-bench]
                               [--shared ../shared/bench] [--o2f CMD] [--json out.json]

Generates (or reuses) the tree the collection benchmark uses (``WORKDIR/o2-s<N>``), collects it
once into a baseline, then times, alternating in one loop on a warm page cache (one warm-up pass
of each first, as in ``collect.py``):

a. ``o2f collect TREE -o FULL --force --quiet`` (every file read and hashed)
b. ``o2f collect TREE -o REUSED --force --quiet --reuse BASELINE`` (nothing changed: every hash reused)
c. ``o2f verify BASELINE``: the baseline's records digest, which ``--reuse`` recomputes first

and prints per command the median wall time (min-max), CPU seconds and peak RSS, the speed-up
full/reused (target >= 3x at scale 5, warm), and for both snapshots the bytes read and the hashes
reused (``o2f info --format json``). It prints figures; it never asserts.

``--cold`` drops the tree's file contents from the page cache (``posix_fadvise(DONTNEED)`` on
every regular file; directories and inodes stay cached) before each collection, untimed: the
case of a host whose image layers were not read lately. It makes the shared tree cold for anyone
else timing it at the same moment.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from collect import (
    DEFAULT_SHARED,
    Tool,
    ensure_tree,
    fmt_run,
    loadavg,
    o2f_command,
    run_once,
    snapshot_info,
)

TARGET = 3.0


def evict(tree: Path) -> None:
    """The content of every regular file below *tree* out of the page cache (metadata stays)."""
    for top, _, names in os.walk(tree):
        for name in names:
            path = os.path.join(top, name)
            if not stat.S_ISREG(os.lstat(path).st_mode):
                continue
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NOATIME", 0))
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=5, help="tree scale (default: 5)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command (default: 5)")
    parser.add_argument("--threads", type=int, help="--threads for both collections (default: o2f's)")
    parser.add_argument("--cold", action="store_true", help="evict the tree's file contents before each run")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/o2f-bench"), help="trees and outputs")
    parser.add_argument(
        "--shared", type=Path, default=DEFAULT_SHARED, help=f"bench folder ({DEFAULT_SHARED})"
    )
    parser.add_argument("--o2f", help="o2f command line (default: this interpreter, -m forensics)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.workdir = args.workdir.resolve()
    args.shared = args.shared.resolve()
    o2f = o2f_command(args)
    tree = ensure_tree(args, args.scale, [])
    extra = ["--threads", str(args.threads)] if args.threads else []
    with tempfile.TemporaryDirectory(prefix="o2f-reuse-", dir=args.workdir) as tmp:
        baseline, full, reused = (Path(tmp) / f"{name}.o2f" for name in ("baseline", "full", "reused"))
        subprocess.run([*o2f, "collect", str(tree), "-o", str(baseline), "--quiet", *extra], check=True)
        collect = [*o2f, "collect", str(tree), "--force", "--quiet", *extra, "-o"]
        tools = [
            Tool("full", [*collect, str(full)]),
            Tool("reused", [*collect, str(reused), "--reuse", str(baseline)]),
            Tool("verify", [*o2f, "verify", str(baseline)]),
        ]
        print(f"o2f: {' '.join(o2f)}{'  ' + ' '.join(extra) if extra else ''}")
        print(f"scale {args.scale:g}: {tree}; load average before: {loadavg()}")
        print("  warm-up:", " ".join(t.name for t in tools), flush=True)
        for tool in tools:
            run_once(tool.command)
        for index in range(args.runs):
            print(f"  run {index + 1}/{args.runs}:", end="", flush=True)
            for tool in tools:
                if args.cold and tool.name != "verify":
                    evict(tree)
                run = run_once(tool.command)
                tool.runs.append(run)
                print(f" {tool.name} {run.wall:.3f}", end="", flush=True)
            print()
        print(f"  load average after:  {loadavg()}")
        infos = {"full": snapshot_info(o2f, full), "reused": snapshot_info(o2f, reused)}
    cache = "cold (file contents evicted)" if args.cold else "warm"
    print(f"\n  scale {args.scale:g}: median wall (min-max) over {args.runs} alternating runs, {cache} cache")
    for tool in tools:
        print(fmt_run(tool))
    medians = {tool.name: tool.median() for tool in tools}
    speedup = medians["full"] / medians["reused"]
    print(f"  full/reused {speedup:.2f}x   (target >= {TARGET:g}x at scale 5)")
    for name, info in infos.items():
        print(
            f"  {name:<6} bytes read {info.get('bytes_read') or 0:>15,}   hashes reused "
            f"{info.get('hashes_reused') or 0:>9,}   entries {info.get('entries') or 0:,}"
        )
    if args.json:
        figures = {
            "scale": args.scale,
            "tree": str(tree),
            "threads": args.threads,
            "cold": args.cold,
            "tools": {
                t.name: {
                    "median": t.median(),
                    "walls": t.walls,
                    "cpu": [r.cpu for r in t.runs],
                    "max_rss_kib": max(r.max_rss_kib for r in t.runs),
                }
                for t in tools
            },
            "full_over_reused": speedup,
            "snapshots": infos,
            "median_spread": {t.name: statistics.pstdev(t.walls) for t in tools},
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
