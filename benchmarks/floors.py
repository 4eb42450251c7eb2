#!/usr/bin/env python3
"""Lower bounds for a collection in CPython: the cost of each step no collector can skip.

    python benchmarks/floors.py [--scale 5] [--workdir /tmp/o2f-bench] [--runs 3]

On the tree ``benchmarks/collect.py`` uses (``WORKDIR/o2-s<N>``, generated there), it times
each mandatory step alone, in one process, as bare as Python allows (no o2f code in the loops),
and prints the medians and their sum:

a. start-up: ``python -m forensics --version`` (interpreter, typer and its pydantic, o2f's CLI);
b. the walk: every directory listed through an ``O_NOATIME`` descriptor; every regular file
   opened once, ``fstat``-ed, its xattrs listed, read into one reused buffer and hashed with
   BLAKE3 (over 1 MiB: mapped); every other entry ``lstat``-ed and its xattrs listed: the
   metadata and content the issue asks for, with no record built;
c. the store: as many entries rows as the tree has (taken from an o2f snapshot of it, made
   here once) inserted into a fresh SQLite file in one transaction, then the entries indexes
   built.

The sum over two cores is what a perfectly parallel collector could reach on a two-core
machine: a target below it cannot be met by any CPython collector that does these steps. It
prints figures; it never asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import mmap
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from blake3 import blake3

sys.path.insert(0, str(Path(__file__).resolve().parent))

from collect import DEFAULT_SHARED, ensure_tree

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_NOATIME", 0)
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_NOATIME", 0)


def walk(root: bytes) -> tuple[int, int]:
    """One pass with the least work per entry: list, stat, list xattrs; open, read and hash files.

    Regular files are opened once (``fstat`` and ``flistxattr`` on that descriptor), as o2f does;
    other entries are ``lstat``-ed and their xattrs listed by path through the parent's descriptor.
    """
    buffer = bytearray((1 << 20) + 1)
    view = memoryview(buffer)
    entries = size = 0
    stack = [os.open(root, _DIR)]
    while stack:
        fd = stack.pop()
        with os.scandir(fd) as listing:
            names = list(listing)
        for entry in names:
            entries += 1
            if entry.is_file(follow_symlinks=False):
                file_fd = os.open(entry.name, _FILE, dir_fd=fd)
                length = os.fstat(file_fd).st_size
                os.listxattr(file_fd)
                if length > 1 << 20:
                    with mmap.mmap(file_fd, 0, access=mmap.ACCESS_READ) as mapped:
                        blake3(mapped).digest()
                else:
                    blake3(view[: os.readv(file_fd, [view])]).digest()
                os.close(file_fd)
                size += length
            elif entry.is_dir(follow_symlinks=False):
                child = os.open(entry.name, _DIR, dir_fd=fd)
                os.fstat(child)
                os.listxattr(child)
                stack.append(child)
            else:
                os.stat(entry.name, dir_fd=fd, follow_symlinks=False)
                with contextlib.suppress(OSError):
                    os.listxattr(f"/proc/self/fd/{fd}/{entry.name}", follow_symlinks=False)
        os.close(fd)
    return entries, size


def store(snapshot: Path) -> int:
    with sqlite3.connect(f"file:{snapshot}?mode=ro", uri=True) as source:
        ddl = source.execute("SELECT sql FROM sqlite_master WHERE name = 'entries'").fetchone()[0]
        indexes = [
            sql
            for (sql,) in source.execute(
                "SELECT sql FROM sqlite_master"
                " WHERE tbl_name = 'entries' AND type = 'index' AND sql IS NOT NULL"
            )
        ]
        columns = [row[1] for row in source.execute("PRAGMA table_info(entries)")][1:]
        rows = source.execute(f"SELECT {', '.join(columns)} FROM entries ORDER BY id").fetchall()
    sqlite3.register_adapter(type(None), lambda value: value)
    with tempfile.TemporaryDirectory() as scratch:
        conn = sqlite3.connect(Path(scratch) / "floor.db", isolation_level=None)
        for pragma in ("page_size = 65536", "journal_mode = OFF", "synchronous = OFF"):
            conn.execute(f"PRAGMA {pragma}")
        conn.execute(ddl)
        conn.execute("BEGIN")
        started = time.perf_counter()
        insert = f"INSERT INTO entries ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        for start in range(0, len(rows), 5000):
            conn.executemany(insert, rows[start : start + 5000])
        for sql in indexes:
            conn.execute(sql)
        conn.execute("COMMIT")
        store.seconds = time.perf_counter() - started  # type: ignore[attr-defined]
        conn.close()
    return len(rows)


def timed(function: Callable[[], object], runs: int) -> tuple[float, object]:
    walls, result = [], None
    for _ in range(runs):
        started = time.process_time()
        result = function()
        walls.append(time.process_time() - started)
    return statistics.median(walls), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/o2f-bench"))
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    tree = ensure_tree(args, args.scale, [])
    root = os.fsencode(tree)
    snapshot = args.workdir / f"floors-s{args.scale:g}.o2f"
    forensics = [sys.executable, "-m", "forensics"]
    subprocess.run([*forensics, "collect", str(tree), "-o", str(snapshot), "--force", "--quiet"], check=True)

    starts = []
    for _ in range(args.runs):
        started = time.perf_counter()
        subprocess.run([*forensics, "--version"], check=True, capture_output=True)
        starts.append(time.perf_counter() - started)
    startup = statistics.median(starts)
    walk(root)  # warm the page cache
    walk_cpu, counted = timed(lambda: walk(root), args.runs)
    entries, size = counted  # type: ignore[misc]
    store_runs = []
    for _ in range(args.runs):
        store(snapshot)
        store_runs.append(store.seconds)  # type: ignore[attr-defined]
    store_cpu = statistics.median(store_runs)

    total = startup + walk_cpu + store_cpu
    print(f"tree {tree}: {entries:,} entries, {size:,} bytes of regular files (warm cache)")
    print(f"  a. start-up (python -m forensics --version)   {startup:6.3f} s")
    print(f"  b. walk: list, stat, xattrs; read and BLAKE3  {walk_cpu:6.3f} s CPU")
    print(f"  c. store: insert the rows, build the indexes  {store_cpu:6.3f} s")
    print(f"  sum {total:.3f} s of work; on 2 cores at best {startup + (total - startup) / 2:.3f} s wall")
    print("  (start-up runs on one core; everything else is assumed perfectly parallel)")


if __name__ == "__main__":
    main()
