#!/usr/bin/env python3
"""Analysis speed: `o2f diff` over every container of a generated tree, against its collection time.

    python benchmarks/analyze.py [--scale 5] [--runs 5] [--workdir /tmp/o2f-bench] [--shared ../shared/bench]

Generates (or reuses) the tree the collection benchmark uses, then alternates in one loop on a warm
cache: ``o2f collect TREE -o S --force --quiet`` and ``o2f diff S --format jsonl`` (every container,
every change, written to /dev/null), plus ``o2f diff S --format docker`` and ``o2f ls`` of one
container's whole view. Prints medians and the ratio diff/collect (target: <= 0.25 at scale 5).
It prints figures; it never asserts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from collect import DEFAULT_SHARED, Tool, ensure_tree, fmt_run, loadavg, o2f_command, run_once

TARGET = 0.25


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=5)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/o2f-bench"))
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--o2f", default=None, help="command to run o2f (default: the o2f on PATH)")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    o2f = o2f_command(args)
    tree = ensure_tree(args, args.scale, [])
    with tempfile.TemporaryDirectory(prefix="o2f-analyze-") as tmp:
        snapshot = Path(tmp) / "tree.o2f"
        subprocess.run([*o2f, "collect", str(tree), "-o", str(snapshot), "--force", "--quiet"], check=True)
        containers = json.loads(
            subprocess.run(
                [*o2f, "containers", str(snapshot), "--format", "json"], capture_output=True, check=True
            ).stdout
        )
        first = containers[0]["name"]
        tools = [
            Tool("collect", [*o2f, "collect", str(tree), "-o", str(snapshot) + ".2", "--force", "--quiet"]),
            Tool("diff", f"{' '.join(o2f)} diff {snapshot} --format jsonl > /dev/null", shell=True),
            Tool("docker", f"{' '.join(o2f)} diff {snapshot} --format docker > /dev/null", shell=True),
            Tool("ls", f"{' '.join(o2f)} ls {snapshot} {first} --format jsonl > /dev/null", shell=True),
        ]
        print(f"scale {args.scale:g}: {len(containers)} containers; load {loadavg()}")
        for tool in tools:  # warm-up
            run_once(tool.command, shell=tool.shell)
        for _ in range(args.runs):
            for tool in tools:
                tool.runs.append(run_once(tool.command, shell=tool.shell))
        for tool in tools:
            print(fmt_run(tool))
        collect = statistics.median(tools[0].walls)
        for tool in tools[1:]:
            ratio = statistics.median(tool.walls) / collect
            note = f"   (target <= {TARGET})" if tool.name == "diff" else ""
            print(f"  {tool.name}/collect = {ratio:.2f}{note}")
        print(f"load after: {loadavg()}")


if __name__ == "__main__":
    main()
