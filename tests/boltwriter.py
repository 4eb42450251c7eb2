"""A tiny bbolt writer for tests: the shapes the corpora lack (deep trees, overflow pages, inline
buckets in buckets, damage) for tests/test_boltdb.py, and whole engine databases (containerd's
``meta.db`` and snapshotter ``metadata.db``) for tests/layerlang.py. Test-only: o2f itself never
writes a BoltDB file.

Pages are laid out as bbolt lays them out: meta pages 0 and 1, a freelist page at 2, then the
B+tree pages (``build``). Small buckets without sub-buckets are inline, as bbolt writes them.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from forensics.capture.engine.boltdb import fnv1a64


class Sub:
    """A nested bucket for :func:`build`."""

    def __init__(self, items: dict[bytes, Any], sequence: int = 0, inline: bool | None = None) -> None:
        self.items, self.sequence, self.inline = items, sequence, inline


def build(
    items: dict[bytes, Any],
    *,
    page_size: int = 1024,
    leaf_max: int = 4,
    branch_max: int = 3,
    txid: int = 7,
    sequence: int = 0,
    inline: bool = True,
    extra_levels: int = 0,
) -> bytes:
    """A bbolt file laid out as bbolt lays it out: meta 0 and 1, a freelist at 2, then the pages."""
    pages: dict[int, bytes] = {}
    next_id = [3]

    def leaf(elements: list[tuple[int, bytes, bytes]], inline_page: bool = False) -> tuple[int, bytes]:
        body, heads = b"", b""
        for i, (flags, key, value) in enumerate(elements):
            pos = 16 + 16 * len(elements) + len(body) - (16 + 16 * i)
            heads += struct.pack("<IIII", flags, pos, len(key), len(value))
            body += key + value
        size = 16 + len(heads) + len(body)
        if inline_page:  # inside a bucket value: no id, no padding
            return 0, struct.pack("<QHHI", 0, 0x02, len(elements), 0) + heads + body
        count = math.ceil(size / page_size)
        pgid = next_id[0]
        next_id[0] += count
        blob = struct.pack("<QHHI", pgid, 0x02, len(elements), count - 1) + heads + body
        pages[pgid] = blob.ljust(count * page_size, b"\0")
        return pgid, blob

    def branch(children: list[tuple[bytes, int]]) -> int:
        body, heads = b"", b""
        for i, (key, child) in enumerate(children):
            pos = 16 + 16 * len(children) + len(body) - (16 + 16 * i)
            heads += struct.pack("<IIQ", pos, len(key), child)
            body += key
        count = math.ceil((16 + len(heads) + len(body)) / page_size)
        pgid = next_id[0]
        next_id[0] += count
        pages[pgid] = (struct.pack("<QHHI", pgid, 0x01, len(children), count - 1) + heads + body).ljust(
            count * page_size, b"\0"
        )
        return pgid

    def elements_of(entries: dict[bytes, Any]) -> list[tuple[int, bytes, bytes]]:
        out = []
        for key in sorted(entries):
            value = entries[key]
            out.append((1, key, bucket_value(value)) if isinstance(value, Sub) else (0, key, value))
        return out

    def tree(elements: list[tuple[int, bytes, bytes]]) -> int:
        chunks = [elements[i : i + leaf_max] for i in range(0, len(elements), leaf_max)] or [[]]
        level = [(chunk[0][1] if chunk else b"", leaf(chunk)[0]) for chunk in chunks]
        while len(level) > 1:
            level = [
                (group[0][0], branch(group))
                for group in (level[i : i + branch_max] for i in range(0, len(level), branch_max))
            ]
        root = level[0][1]
        for _ in range(extra_levels):
            root = branch([(level[0][0], root)])
        return root

    def bucket_value(sub: Sub) -> bytes:
        nested = any(isinstance(v, Sub) for v in sub.items.values())
        elements = elements_of(sub.items)
        make_inline = sub.inline if sub.inline is not None else (inline and not nested and len(elements) <= 3)
        if make_inline:
            return struct.pack("<QQ", 0, sub.sequence) + leaf(elements, inline_page=True)[1]
        return struct.pack("<QQ", tree(elements), sub.sequence)

    root = tree(elements_of(items))
    hwm = next_id[0]
    out = bytearray(hwm * page_size)
    for i in (0, 1):
        fields = struct.pack("<IIIIQQQQQ", 0xED0CDAED, 2, page_size, 0, root, sequence, 2, hwm, txid - 1 + i)
        meta = struct.pack("<QHHI", i, 0x04, 0, 0) + fields + struct.pack("<Q", fnv1a64(fields))
        out[i * page_size : i * page_size + len(meta)] = meta
    out[2 * page_size : 2 * page_size + 16] = struct.pack("<QHHI", 2, 0x10, 0, 0)
    for pgid, blob in pages.items():
        out[pgid * page_size : pgid * page_size + len(blob)] = blob
    return bytes(out)
