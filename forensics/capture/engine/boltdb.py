"""A strictly read-only reader for BoltDB files (go.etcd.io/bbolt), standard library only.

containerd keeps its metadata in ``io.containerd.metadata.v1.bolt/meta.db``, its overlayfs
snapshotter in ``io.containerd.snapshotter.v1.overlayfs/metadata.db`` and Podman its state in
``libpod/bolt_state.db``; all three are bbolt files and there is no maintained Python reader.
This one follows bbolt's own code (``internal/common/page.go``, ``internal/common/meta.go``,
``bucket.go``, ``cursor.go``, ``db.go``, ``tx_check.go``) and refuses, with one sentence naming the
file, anything it does not understand: it never guesses and never repairs.

Read-only by construction: a file is opened ``O_RDONLY`` (plus ``O_NOATIME`` where the kernel
allows it), read into memory once and closed; nothing is locked, mapped writable or written.
Evidence that comes from elsewhere (a tar member, a disk image) is parsed from bytes with
:meth:`BoltDB.from_bytes`, so every source goes through the same code. See ``docs/boltdb.md``.
"""

from __future__ import annotations

import bisect
import os
import stat
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from forensics.errors import O2fError

MAGIC = 0xED0CDAED  # common.Magic
VERSION = 2  # common.Version: the only data file format bbolt and boltdb/bolt ever wrote

# Page types (common.BranchPageFlag ...). bbolt sets exactly one of them on every page.
BRANCH_PAGE = 0x01
LEAF_PAGE = 0x02
META_PAGE = 0x04
FREELIST_PAGE = 0x10
BUCKET_LEAF_FLAG = 0x01  # leaf element flag: the value is a nested bucket
PGID_NO_FREELIST = 0xFFFFFFFFFFFFFFFF  # meta.freelist when the freelist is not synced (NoFreelistSync)

_PAGE_HEADER = struct.Struct("<QHHI")  # id, flags, count, overflow
_META = struct.Struct("<IIIIQQQQQQ")  # magic, version, pageSize, flags, root{root, sequence}, freelist,
#                                       pgid (high-water mark), txid, checksum
_CHECKSUMMED = _META.size - 8  # FNV-1a 64 covers every meta field before the checksum (56 bytes)
_BRANCH_ELEMENT = struct.Struct("<IIQ")  # pos, ksize, pgid
_LEAF_ELEMENT = struct.Struct("<IIII")  # flags, pos, ksize, vsize
_BUCKET_HEADER = struct.Struct("<QQ")  # root pgid (0 = inline), sequence
HEADER = _PAGE_HEADER.size  # 16
ELEMENT = _LEAF_ELEMENT.size  # 16, the same for branch elements

# bbolt probes for the second meta page at 1 KiB .. 16 MiB (db.go getPageSizeFromSecondMeta); a page
# size outside that range has never been written by it and is refused rather than trusted.
MIN_PAGE_SIZE = 1024
MAX_PAGE_SIZE = 1024 << 14
# Guards against hostile or damaged files: a B+tree of ~16-byte elements in pages of at least 1 KiB
# is far shallower than this, and the engines nest buckets at most six deep.
MAX_TREE_DEPTH = 32
MAX_BUCKET_DEPTH = 64

_O_NOATIME = getattr(os, "O_NOATIME", 0)
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK  # O_NONBLOCK: a FIFO must not hang open()


class BoltError(O2fError):
    """A BoltDB file is not one, is truncated or damaged, or holds something this reader does not know."""


def fnv1a64(data: bytes) -> int:
    """FNV-1a 64, the hash bbolt's ``Meta.Sum64`` uses for the meta page checksum."""
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def page_type(flags: int) -> str:
    """The page type as bbolt's ``Page.Typ`` names it, for error messages."""
    names = {BRANCH_PAGE: "branch", LEAF_PAGE: "leaf", META_PAGE: "meta", FREELIST_PAGE: "freelist"}
    return names.get(flags, f"unknown<{flags:02x}>")


def show_key(key: bytes, limit: int = 80) -> str:
    """A key for an error message: printable ASCII as is, anything else as hex, long keys cut."""
    text = key.decode("ascii") if key and all(32 <= c < 127 for c in key) else "hex:" + key.hex()
    return text if len(text) <= limit else text[:limit] + "..."


def _where(path: tuple[bytes, ...]) -> str:
    return "the root bucket" if not path else "bucket " + "/".join(show_key(k, 40) for k in path)


@dataclass(frozen=True, slots=True)
class Meta:
    """One of the two meta pages; ``problem`` says why bbolt would reject it (None when valid)."""

    page: int
    magic: int
    version: int
    page_size: int
    flags: int
    root: int
    sequence: int
    freelist: int
    pgid: int  # high-water mark: the number of pages the database uses
    txid: int
    checksum: int
    problem: str | None


def _read_meta(data: bytes, page: int, offset: int) -> Meta | None:
    """The meta page at *offset*, validated the way ``Meta.Validate`` does; None if it is not in *data*."""
    if offset < 0 or offset + HEADER + _META.size > len(data):
        return None
    fields = _META.unpack_from(data, offset + HEADER)
    magic, version, _, _, _, _, _, _, _, checksum = fields
    if magic != MAGIC:
        problem: str | None = "no bbolt magic"
    elif version != VERSION:
        problem = f"format version {version}, not {VERSION}"
    elif checksum != fnv1a64(data[offset + HEADER : offset + HEADER + _CHECKSUMMED]):
        problem = "checksum mismatch"
    else:
        problem = None
    return Meta(page, *fields, problem=problem)


class BoltDB:
    """A bbolt database held in memory, as of the transaction its current meta page records."""

    def __init__(self, data: bytes, origin: str) -> None:
        self._data = data
        self.origin = origin
        self.meta = self._choose_meta()
        self.page_size = self.meta.page_size
        self.txid = self.meta.txid
        self.high_water = self.meta.pgid
        self.root = Bucket(self, (), self.meta.root, None, self.meta.sequence, frozenset())

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, origin: str) -> BoltDB:
        """Parse a database already in memory, e.g. a tar member; *origin* names it in every error."""
        return cls(bytes(data), origin)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> BoltDB:
        """Read the file at *path* without write access or locks, then parse it.

        bbolt itself opens ``O_RDWR`` and takes an ``flock``; evidence must not be touched, so the
        file is opened ``O_RDONLY`` (with ``O_NOATIME`` when we own it or hold CAP_FOWNER), must be a
        regular file, and is read once into memory, which also avoids SIGBUS from a mapped file that
        a live engine truncates underneath us.
        """
        name = os.fspath(path)
        try:
            fd = _open_readonly(name)
        except OSError as exc:
            raise BoltError(f"{name} cannot be opened for reading: {exc.strerror or exc}.") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise BoltError(f"{name} is not a regular file, so it cannot be a BoltDB.")
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
        except OSError as exc:
            raise BoltError(f"{name} cannot be read: {exc.strerror or exc}.") from exc
        finally:
            os.close(fd)
        return cls(b"".join(chunks), name)

    def walk(self, path: Sequence[bytes]) -> Bucket | None:
        """The bucket at *path* (a sequence of keys) below the root bucket; None where a step is missing."""
        return self.root.walk(path)

    # -- meta pages -------------------------------------------------------------------------------

    def _fail(self, what: str) -> BoltError:
        return BoltError(f"{self.origin} {what}.")

    def _choose_meta(self) -> Meta:
        """The meta page bbolt would use: the valid one with the higher txid (``db.meta``)."""
        data = self._data
        meta0 = _read_meta(data, 0, 0)
        if meta0 is None:
            if len(data) >= HEADER + 4 and struct.unpack_from("<I", data, HEADER)[0] == MAGIC:
                raise self._fail(f"is truncated: its {len(data)} bytes end inside the first meta page")
            raise self._fail(f"is not a BoltDB: its {len(data)} bytes are too few for a meta page")
        page_size = meta0.page_size if meta0.problem is None else self._probe_page_size()
        if not page_size:  # only to name what is wrong with page 1 too: its likeliest place
            page_size = meta0.page_size if MIN_PAGE_SIZE <= meta0.page_size <= MAX_PAGE_SIZE else 4096
        meta1 = _read_meta(data, 1, page_size)
        candidates = [m for m in (meta0, meta1) if m is not None]
        valid = [m for m in candidates if m.problem is None]
        if not valid:
            if all(m.magic != MAGIC for m in candidates):
                raise self._fail(f"is not a BoltDB: no meta page carries the bbolt magic {MAGIC:#010X}")
            reasons = ", ".join(f"page {m.page}: {m.problem}" for m in candidates)
            raise self._fail(f"is damaged: no meta page is valid ({reasons})")
        meta = max(valid, key=lambda m: m.txid)  # meta0 wins a tie, as in db.meta()
        self._check_meta(meta)
        return meta

    def _probe_page_size(self) -> int:
        """With page 0 invalid, find page 1 at 1 KiB .. 16 MiB as ``getPageSizeFromSecondMeta`` does."""
        for shift in range(15):
            offset = MIN_PAGE_SIZE << shift
            meta = _read_meta(self._data, 1, offset)
            if meta is None:
                break
            if meta.problem is None:
                return meta.page_size
        return 0

    def _check_meta(self, meta: Meta) -> None:
        """Refuse a meta page whose numbers cannot describe this file (``Meta.Write`` asserts them)."""
        size, hwm = meta.page_size, meta.pgid
        if not MIN_PAGE_SIZE <= size <= MAX_PAGE_SIZE:
            raise self._fail(f"has an unsupported page size of {size} bytes in meta page {meta.page}")
        if meta.page == 1 and _read_meta(self._data, 1, size) != meta:
            raise self._fail(f"is damaged: meta page 1 does not lie at its page size of {size} bytes")
        if hwm < 2 or not 2 <= meta.root < hwm:
            raise self._fail(
                f"is damaged: meta page {meta.page} puts the root bucket at page {meta.root} "
                f"with a high-water mark of {hwm} pages"
            )
        if meta.freelist != PGID_NO_FREELIST and not 2 <= meta.freelist < hwm:
            raise self._fail(
                f"is damaged: meta page {meta.page} puts the freelist at page {meta.freelist} "
                f"with a high-water mark of {hwm} pages"
            )
        if hwm * size > len(self._data):
            raise self._fail(
                f"is truncated: its meta page (txid {meta.txid}) counts {hwm} pages of {size} bytes "
                f"({hwm * size} bytes) but only {len(self._data)} bytes are present"
            )

    # -- pages ------------------------------------------------------------------------------------

    def _page(self, pgid: int, path: tuple[bytes, ...]) -> tuple[int, int, int, int]:
        """(start, end, flags, count) of a branch or leaf page, overflow pages included.

        Applies bbolt's ``FastCheck``: the page must call itself *pgid* and be a branch or a leaf.
        """
        size, data = self.page_size, self._data
        if pgid >= self.high_water:
            raise self._fail(
                f"is damaged: {_where(path)} refers to page {pgid}, beyond the high-water mark "
                f"of {self.high_water} pages"
            )
        start = pgid * size
        if start + size > len(data):
            raise self._fail(f"is truncated: page {pgid} lies beyond its {len(data)} bytes")
        ident, flags, count, overflow = _PAGE_HEADER.unpack_from(data, start)
        if flags not in (BRANCH_PAGE, LEAF_PAGE):
            raise self._fail(
                f"is damaged: page {pgid} in {_where(path)} is a {page_type(flags)} page "
                "where a branch or leaf page is expected"
            )
        if ident != pgid:
            raise self._fail(f"is damaged: page {pgid} in {_where(path)} calls itself page {ident}")
        if pgid + overflow >= self.high_water:
            raise self._fail(
                f"is damaged: page {pgid} in {_where(path)} has {overflow} overflow pages running past "
                f"the high-water mark of {self.high_water} pages"
            )
        end = start + (overflow + 1) * size
        if end > len(data):
            raise self._fail(f"is truncated: overflow pages of page {pgid} lie beyond its {len(data)} bytes")
        if flags == BRANCH_PAGE and count == 0:
            raise self._fail(f"is damaged: branch page {pgid} in {_where(path)} has no elements")
        return start, end, flags, count

    def _fits(self, start: int, end: int, count: int, what: str) -> None:
        if start + HEADER + count * ELEMENT > end:
            raise self._fail(
                f"is damaged: {what} claims {count} elements, more than fit in its {end - start} bytes"
            )

    def _branch(self, start: int, end: int, count: int, what: str) -> list[tuple[bytes, int]]:
        """The (key, child pgid) elements of a branch page; keys lie at element address + pos."""
        self._fits(start, end, count, what)
        data, out = self._data, []
        for i in range(count):
            at = start + HEADER + i * ELEMENT
            pos, ksize, child = _BRANCH_ELEMENT.unpack_from(data, at)
            if at + pos + ksize > end:
                raise self._fail(f"is damaged: element {i} of {what} points outside the page")
            out.append((data[at + pos : at + pos + ksize], child))
        return out

    def _leaf(self, start: int, end: int, count: int, what: str) -> list[tuple[bytes, int, int, int]]:
        """The (key, flags, value start, value end) elements of a leaf page, in page order."""
        self._fits(start, end, count, what)
        data, out = self._data, []
        for i in range(count):
            at = start + HEADER + i * ELEMENT
            flags, pos, ksize, vsize = _LEAF_ELEMENT.unpack_from(data, at)
            if flags & ~BUCKET_LEAF_FLAG:
                raise self._fail(f"is damaged: element {i} of {what} has unknown flags {flags:#x}")
            key_at = at + pos
            if key_at + ksize + vsize > end:
                raise self._fail(f"is damaged: element {i} of {what} points outside the page")
            out.append((data[key_at : key_at + ksize], flags, key_at + ksize, key_at + ksize + vsize))
        return out


def _open_readonly(name: str) -> int:
    """``os.open`` read-only, with O_NOATIME when permitted (the owner or CAP_FOWNER)."""
    if _O_NOATIME:
        try:
            return os.open(name, _OPEN_FLAGS | _O_NOATIME)
        except PermissionError:
            pass
    return os.open(name, _OPEN_FLAGS)


class Bucket:
    """One bucket: the root bucket, a bucket with its own pages, or an inline bucket inside a value.

    Lookups follow bbolt's cursor (``cursor.go`` ``seek``); :meth:`items` walks every page and
    checks what ``tx_check.go`` checks about key order, so a damaged tree raises instead of
    silently yielding a wrong view.
    """

    def __init__(
        self,
        db: BoltDB,
        path: tuple[bytes, ...],
        root: int,
        inline: tuple[int, int] | None,
        sequence: int,
        above: frozenset[int],
    ) -> None:
        self._db = db
        self.path = path
        self.root_page = root  # 0 for an inline bucket
        self._inline = inline  # (start, end) of the inline page inside the parent's value
        self.sequence = sequence
        self._above = above  # pages on the way from the root bucket here: meeting one again is a cycle
        if len(path) > MAX_BUCKET_DEPTH:
            raise db._fail(f"is damaged: its buckets nest more than {MAX_BUCKET_DEPTH} levels deep")

    def __repr__(self) -> str:
        return f"<Bucket {_where(self.path)} of {self._db.origin}>"

    @property
    def inline(self) -> bool:
        """True when the bucket lives inside its parent's value (bbolt's inline bucket, root 0)."""
        return self._inline is not None

    # -- lookups ----------------------------------------------------------------------------------

    def _seek(self, key: bytes) -> tuple[tuple[bytes, int, int, int] | None, frozenset[int]]:
        """The leaf element holding *key* (or None) and the pages passed on the way to it."""
        db = self._db
        if self._inline is not None:
            start, end = self._inline
            elements = db._leaf(
                start, end, _inline_count(db, self), f"the inline page of {_where(self.path)}"
            )
            visited = self._above
        else:
            pgid, visited, depth = self.root_page, set(self._above), 0
            while True:
                if pgid in visited:
                    raise _cycle(db, pgid, self.path)
                visited.add(pgid)
                depth += 1
                if depth > MAX_TREE_DEPTH:
                    raise _too_deep(db, self.path)
                start, end, flags, count = db._page(pgid, self.path)
                what = f"page {pgid} in {_where(self.path)}"
                if flags == LEAF_PAGE:
                    elements = db._leaf(start, end, count, what)
                    break
                branch = db._branch(start, end, count, what)
                index = bisect.bisect_right([k for k, _ in branch], key) - 1
                pgid = branch[max(index, 0)][1]
            visited = frozenset(visited)
        keys = [e[0] for e in elements]
        index = bisect.bisect_left(keys, key)
        if index < len(keys) and keys[index] == key:
            return elements[index], visited
        return None, visited

    def get(self, key: bytes) -> bytes | None:
        """The value stored under *key*; None when absent or when *key* names a nested bucket (as bbolt)."""
        element, _ = self._seek(key)
        if element is None or element[1] & BUCKET_LEAF_FLAG:
            return None
        return self._db._data[element[2] : element[3]]

    def bucket(self, key: bytes) -> Bucket | None:
        """The nested bucket under *key*; None when absent or when *key* holds a plain value."""
        element, visited = self._seek(key)
        if element is None or not element[1] & BUCKET_LEAF_FLAG:
            return None
        return _child(self, element, visited)

    def __getitem__(self, key: bytes) -> bytes | Bucket:
        element, visited = self._seek(key)
        if element is None:
            raise KeyError(key)
        if element[1] & BUCKET_LEAF_FLAG:
            return _child(self, element, visited)
        return self._db._data[element[2] : element[3]]

    def __contains__(self, key: bytes) -> bool:
        return self._seek(key)[0] is not None

    # -- iteration --------------------------------------------------------------------------------

    def items(self) -> Iterator[tuple[bytes, bytes | Bucket]]:
        """Every key in byte order with its value, or its nested bucket as a :class:`Bucket`."""
        data = self._db._data
        for (key, flags, vstart, vend), visited in self._elements():
            if flags & BUCKET_LEAF_FLAG:
                yield key, _child(self, (key, flags, vstart, vend), visited)
            else:
                yield key, data[vstart:vend]

    def keys(self) -> Iterator[bytes]:
        """Every key in byte order (values and nested buckets alike)."""
        for (key, _, _, _), _visited in self._elements():
            yield key

    def __iter__(self) -> Iterator[bytes]:
        return self.keys()

    def _elements(
        self, seen: set[int] | None = None
    ) -> Iterator[tuple[tuple[bytes, int, int, int], frozenset[int]]]:
        """Leaf elements in tree order, each with the pages above it, checking order as tx_check does.

        With *seen* (a whole-database walk), a page met a second time anywhere is refused as well.
        """
        db = self._db
        if self._inline is not None:
            start, end = self._inline
            what = f"the inline page of {_where(self.path)}"
            previous = None
            for element in db._leaf(start, end, _inline_count(db, self), what):
                if previous is not None and element[0] <= previous:
                    raise _disorder(db, element[0], what)
                previous = element[0]
                yield element, self._above
            return
        yield from self._walk(seen)

    def _walk(self, seen: set[int] | None) -> Iterator[tuple[tuple[bytes, int, int, int], frozenset[int]]]:
        """Leaf elements of the page tree, depth first and in key order, with an explicit stack.

        Every key below a branch element must lie in [its key, the next element's key), which is
        what ``tx_check.go`` (``recursivelyCheckPages``) verifies; a page met again on the way down
        is a cycle. No recursion, so a hostile file cannot exhaust Python's stack.
        """
        db, path = self._db, self.path
        stack: list[tuple[int, bytes | None, bytes | None, frozenset[int], int]] = [
            (self.root_page, None, None, self._above, 1)
        ]
        while stack:
            pgid, low, high, above, depth = stack.pop()
            if pgid in above:
                raise _cycle(db, pgid, path)
            if depth > MAX_TREE_DEPTH:
                raise _too_deep(db, path)
            start, end, flags, count = db._page(pgid, path)
            if seen is not None:  # tx_check.go: each page, overflow pages included, is referenced once
                for covered in range(pgid, pgid + (end - start) // db.page_size):
                    if covered in seen:
                        raise db._fail(
                            f"is damaged: page {covered} in {_where(path)} is referenced more than once"
                        )
                    seen.add(covered)
            what = f"page {pgid} in {_where(path)}"
            here = above | {pgid}
            previous: bytes | None = None
            if flags == BRANCH_PAGE:
                branch = db._branch(start, end, count, what)
                children = []
                for i, (key, child) in enumerate(branch):
                    if (previous is not None and key <= previous) or not _within(key, low, high):
                        raise _disorder(db, key, what)
                    previous = key
                    bound = branch[i + 1][0] if i + 1 < len(branch) else high
                    children.append((child, key, bound, here, depth + 1))
                stack.extend(reversed(children))
                continue
            for element in db._leaf(start, end, count, what):
                key = element[0]
                if (previous is not None and key <= previous) or not _within(key, low, high):
                    raise _disorder(db, key, what)
                previous = key
                yield element, here

    def walk(self, path: Sequence[bytes]) -> Bucket | None:
        """The bucket reached by following *path* from this one, or None where a step is missing."""
        bucket: Bucket | None = self
        for key in path:
            if bucket is None:
                return None
            bucket = bucket.bucket(key)
        return bucket


def _within(key: bytes, low: bytes | None, high: bytes | None) -> bool:
    return (low is None or key >= low) and (high is None or key < high)


def _inline_count(db: BoltDB, bucket: Bucket) -> int:
    """The element count of an inline bucket's page, which bbolt always writes as a leaf."""
    assert bucket._inline is not None
    start = bucket._inline[0]
    _, flags, count, _ = _PAGE_HEADER.unpack_from(db._data, start)
    if flags != LEAF_PAGE:
        raise db._fail(
            f"is damaged: the inline page of {_where(bucket.path)} is a {page_type(flags)} page "
            "where a leaf page is expected"
        )
    return count


def _child(parent: Bucket, element: tuple[bytes, int, int, int], above: frozenset[int]) -> Bucket:
    """Open the nested bucket whose header is the element's value (``Bucket.openBucket``)."""
    db = parent._db
    key, _, vstart, vend = element
    path = (*parent.path, key)
    if vend - vstart < _BUCKET_HEADER.size:
        raise db._fail(f"is damaged: the value of {_where(path)} is too short for a bucket header")
    root, sequence = _BUCKET_HEADER.unpack_from(db._data, vstart)
    if root != 0:
        return Bucket(db, path, root, None, sequence, above)
    start = vstart + _BUCKET_HEADER.size
    if vend - start < HEADER:
        raise db._fail(f"is damaged: the inline page of {_where(path)} is too short for a page header")
    return Bucket(db, path, 0, (start, vend), sequence, above)


def _cycle(db: BoltDB, pgid: int, path: tuple[bytes, ...]) -> BoltError:
    return db._fail(f"is damaged: page {pgid} in {_where(path)} is referenced again below itself (a cycle)")


def _too_deep(db: BoltDB, path: tuple[bytes, ...]) -> BoltError:
    return db._fail(f"is damaged: the page tree of {_where(path)} is more than {MAX_TREE_DEPTH} levels deep")


def _disorder(db: BoltDB, key: bytes, what: str) -> BoltError:
    return db._fail(f"is damaged: key {show_key(key)} on {what} is out of order")


# -- JSON-able views -------------------------------------------------------------------------------


def text_or_none(data: bytes) -> str | None:
    """*data* as text when it is UTF-8 made of printable characters, tabs and newlines."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if all(c.isprintable() or c in "\n\t" for c in text) else None


def key_text(key: bytes) -> str:
    """A key as a JSON object key: its text, or ``hex:<hex>`` (also for text that itself starts so)."""
    text = text_or_none(key)
    return text if text is not None and not text.startswith("hex:") else "hex:" + key.hex()


def to_tree(bucket: Bucket) -> dict[str, Any]:
    """A nested, JSON-able copy of *bucket*, the shape the corpora's ``tools/boltdump.py`` prints.

    ``{"__bucket__": true, "sequence": N, "items": {key: value}}`` where a key is its text or
    ``hex:<hex>`` and a value is its text, ``{"hex": "<hex>"}`` or a nested bucket of the same shape;
    items keep bbolt's byte order. Every page is read, so a damaged file raises :class:`BoltError`,
    and a page reached twice anywhere in the walk is refused (``tx_check.go``: multiple references).
    """
    return _tree(bucket, set())


def _tree(bucket: Bucket, seen: set[int]) -> dict[str, Any]:
    db = bucket._db
    items: dict[str, Any] = {}
    for (key, flags, vstart, vend), above in bucket._elements(seen):
        if flags & BUCKET_LEAF_FLAG:
            items[key_text(key)] = _tree(_child(bucket, (key, flags, vstart, vend), above), seen)
        else:
            value = db._data[vstart:vend]
            text = text_or_none(value)
            items[key_text(key)] = text if text is not None else {"hex": value.hex()}
    return {"__bucket__": True, "sequence": bucket.sequence, "items": items}
