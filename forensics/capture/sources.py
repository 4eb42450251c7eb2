"""Evidence sources: where the bytes of a data root come from.

A source walks a data root and asks the storage engine, path by path, what
each one is (:class:`Visit`). It never learns what a layer or a container is,
and the engine never learns whether it reads a directory or a tar stream.

Rules every source keeps (evidence is read-only): nothing is ever written,
symlinks are never followed, FIFOs, sockets and devices are never opened.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from forensics.errors import SourceError
from forensics.model import CaptureError, Entry, Kind, MetadataFile, Xattrs


class Action(enum.Enum):
    SKIP = "skip"  # not recorded, not descended
    WALK = "walk"  # descended, not recorded (the data root, overlay2/, ...)
    ENTRY = "entry"  # recorded as a layer Entry (files hashed), descended
    READ = "read"  # a small metadata file: its bytes are kept verbatim
    NOTE = "note"  # existence only (a layer's work/ or merged/): not descended


@dataclass(frozen=True, slots=True)
class Visit:
    action: Action
    layer_id: str = ""
    inner_path: bytes = b"/"  # path inside the layer, for ENTRY
    # READ: a larger file is only noted, not kept (e.g. layer blobs next to small JSON blobs in
    # containerd's content store, which share one directory and are told apart by size alone).
    limit: int | None = None


SKIP = Visit(Action.SKIP)
WALK = Visit(Action.WALK)
READ = Visit(Action.READ)
NOTE = Visit(Action.NOTE)

Classifier = Callable[[bytes, Kind], Visit]
"""(path relative to the data root, kind) -> what to do with it. Must be a pure
function of its arguments: a tar stream presents paths in any order."""

Progress = Callable[[int, int], None]
"""Called now and then with (entries so far, bytes hashed so far)."""

ReuseKey = tuple[int, int, int, int, int]
ReuseLookup = Callable[[str], Mapping[bytes, tuple[ReuseKey, str, Xattrs, bytes | None]]]
"""For a layer id, the regular files a baseline snapshot recorded in it, for ``collect --reuse``:
path inside the layer -> (reuse key, blake3, xattrs, first bytes). See
:func:`forensics.capture.hash.reuse_key`. Callable in forked worker processes."""

# The largest metadata file kept verbatim; a bigger one is an error row.
READ_LIMIT = 64 << 20


@dataclass(frozen=True, slots=True)
class Noted:
    """A path the engine wants to know exists (``work/``, ``merged/``)."""

    path: bytes
    kind: Kind
    target: bytes | None = None  # for symlinks (the l/ short names)


@dataclass(frozen=True, slots=True)
class Relink:
    """A later tar member turned an already emitted file into a hardlink group."""

    layer_id: str
    path: bytes
    link_group: int


class EntryEncoding(Protocol):
    """How the caller stores entries (the snapshot writer's encoder): a row per entry."""

    def __call__(self, entry: Entry) -> tuple:  # type: ignore[type-arg]
        """The row of an Entry."""
        ...

    def fields(self, *values: object) -> tuple:  # type: ignore[type-arg]
        """The row of an entry given as Entry's values, positionally in its field order (no Entry built)."""
        ...


@dataclass(frozen=True, slots=True)
class EncodedEntries:
    """Entries of one layer, in walk order, already turned into stored rows by the caller's ``encode``.

    A source that walks in worker processes hands rows over instead of
    :class:`Entry` objects: building them where the work is done keeps the
    collecting process free to write.
    """

    rows: list[tuple]  # type: ignore[type-arg]
    root_of: str | None  # the layer whose root entry (``/``) is among the rows, if any
    encoded: bytes | None = None  # the rows (all of one layer) in the snapshot's digest encoding


Item = Entry | EncodedEntries | MetadataFile | Noted | Relink | CaptureError


class Layout(Protocol):
    """The part of an engine a source needs: where a data root is, what each path is."""

    name: str

    def detect(self, exists: Callable[[bytes], bool]) -> str | None: ...

    def find_root(self, member: bytes) -> bytes | None: ...

    def classify(self, rel: bytes, kind: Kind) -> Visit:
        """What a path is. Contract: below a directory classified ENTRY, every path is an ENTRY of the
        same layer at the directory's inner path + "/" + name (a directory source relies on it and
        does not ask again inside a layer's diff/)."""
        ...


class Source(Protocol):
    """A data root, readable as a stream of classified items."""

    kind: str  # "directory" or "tar"
    location: str  # what the user named, for provenance
    layout: Layout | None  # set once the layout is known
    data_root: str  # where the data root lies inside the source
    bytes_read: int
    capabilities: frozenset[str]  # Entry fields this source can provide (docs/schema.md)

    def items(
        self,
        layouts: Sequence[Layout],
        progress: Progress | None = None,
        encode: EntryEncoding | None = None,
    ) -> Iterator[Item]:
        """Every path the chosen layout does not skip, as records.

        With *encode*, a source may yield :class:`EncodedEntries` (rows made
        with *encode*) instead of :class:`Entry` items.

        The first layout that recognises the source is used (raises
        NotADataRootError when none does). Hardlinked regular files share a
        ``link_group`` and are read once. Unreadable or vanished paths become
        :class:`CaptureError` items and the walk goes on.
        """
        ...


def find_source(location: str) -> Source:
    """The source for a path: a directory, or a tar archive (compressed or not)."""
    try:
        st = os.stat(location)
    except OSError as exc:
        raise SourceError(f"cannot read source {location}: {exc.strerror}.") from None
    if stat.S_ISDIR(st.st_mode):
        from forensics.capture.dirsource import DirSource

        return DirSource(location)
    if stat.S_ISREG(st.st_mode):
        from forensics.capture.tarsource import TarSource

        return TarSource(location)
    raise SourceError(f"source {location} is neither a directory nor a tar archive.")
