"""Records every tier shares: frozen dataclasses, enums and the path codec.

Paths are bytes everywhere inside o2f. A path is absolute inside its layer or
container (``b"/"`` is a layer's ``diff/`` root). The one text form of a path
(:func:`path_to_text`) is reversible and is what the snapshot stores.
"""

from __future__ import annotations

import enum
import re
import stat
from dataclasses import dataclass, field

# --- kinds -------------------------------------------------------------------


class Kind(str, enum.Enum):
    """File type, as stored in the snapshot's ``kind`` column."""

    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    CHAR = "char"
    BLOCK = "block"
    FIFO = "fifo"
    SOCKET = "socket"

    @classmethod
    def from_mode(cls, st_mode: int) -> Kind:
        return KIND_BY_IFMT[stat.S_IFMT(st_mode)]

    @property
    def ifmt(self) -> int:
        return _IFMT_BY_KIND[self]

    @property
    def letter(self) -> str:
        """The letter ``ls -l`` and the corpus truth files use."""
        return _LETTER[self]


KIND_BY_IFMT: dict[int, Kind] = {
    stat.S_IFREG: Kind.FILE,
    stat.S_IFDIR: Kind.DIR,
    stat.S_IFLNK: Kind.SYMLINK,
    stat.S_IFCHR: Kind.CHAR,
    stat.S_IFBLK: Kind.BLOCK,
    stat.S_IFIFO: Kind.FIFO,
    stat.S_IFSOCK: Kind.SOCKET,
}
_IFMT_BY_KIND = {v: k for k, v in KIND_BY_IFMT.items()}
_LETTER = {
    Kind.FILE: "f",
    Kind.DIR: "d",
    Kind.SYMLINK: "l",
    Kind.CHAR: "c",
    Kind.BLOCK: "b",
    Kind.FIFO: "p",
    Kind.SOCKET: "s",
}


class LayerRole(str, enum.Enum):
    """What a layer directory is for, as the engine's metadata (or structure) says."""

    IMAGE = "image"
    INIT = "init"
    CONTAINER = "container"
    ORPHAN = "orphan"


# --- what a file is run as ---------------------------------------------------

# The first bytes that make a file runnable without its x bit mattering to an attacker:
# ``ld.so FILE`` runs an ELF binary, ``sh FILE`` (or the #! interpreter) a script.
EXECUTABLE_MAGIC = ((b"\x7fELF", "ELF magic"), (b"#!", "#! line"))


def executable_format(entry: Entry) -> str | None:
    """ "ELF magic" or "#! line" when the file's first bytes (``Entry.head``) say it is run as one.

    None for anything else, and when the first bytes are unknown (a snapshot that did not
    read the content, or a file that could not be read).
    """
    head = entry.head
    if not head:
        return None
    for magic, name in EXECUTABLE_MAGIC:
        if head.startswith(magic):
            return name
    return None


# --- path codec --------------------------------------------------------------

_ESCAPE_NEEDED = re.compile(r"[\\\udc80-\udcff]")
_ESCAPED = re.compile(rb"\\(\\|x[0-9a-fA-F]{2})")


def path_to_text(raw: bytes) -> str:
    """The snapshot's reversible text form of a byte string.

    Valid UTF-8 stays as it is (newlines and tabs included); a backslash is
    doubled; every byte that is not part of valid UTF-8 becomes ``\\xHH``.
    """
    if b"\\" not in raw:  # the common case, without the regular expression
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
    text = raw.decode("utf-8", "surrogateescape")
    if not _ESCAPE_NEEDED.search(text):
        return text
    return _ESCAPE_NEEDED.sub(_escape_char, text)


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group()
    if ch == "\\":
        return "\\\\"
    return f"\\x{ord(ch) - 0xDC00:02x}"


def clean_text(value: str) -> str:
    """Engine-derived text as the snapshot stores it.

    Unchanged when it is valid Unicode; when it carries bytes that were not
    UTF-8 (surrogate escapes, e.g. from a tampered layer name or JSON file),
    the path text form, so that no capture fails on one bad byte. The raw
    bytes of such files are kept in ``metadata_files``.
    """
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return path_to_text(value.encode("utf-8", "surrogateescape"))
    return value


def xattr_name_to_text(name: str) -> str:
    """An xattr name (str with surrogate escapes for raw bytes) in the reversible text form."""
    return path_to_text(name.encode("utf-8", "surrogateescape"))


def xattr_name_from_text(text: str) -> str:
    return path_from_text(text).decode("utf-8", "surrogateescape")


def path_from_text(text: str) -> bytes:
    """Inverse of :func:`path_to_text`."""
    raw = text.encode("utf-8")
    if b"\\" not in raw:
        return raw
    return _ESCAPED.sub(_unescape_bytes, raw)


def _unescape_bytes(match: re.Match[bytes]) -> bytes:
    token = match.group(1)
    if token == b"\\":
        return b"\\"
    return bytes([int(token[1:], 16)])


def display_path(raw: bytes) -> str:
    """Human and JSON form: valid UTF-8 as is, each invalid byte as ``\\xHH``.

    Not reversible when the name holds a literal backslash followed by ``x``;
    machine formats therefore add the raw bytes (base64) when this differs
    from a plain UTF-8 decode.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    text = raw.decode("utf-8", "surrogateescape")
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if "\udc80" <= c <= "\udcff" else c for c in text)


def is_valid_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def path_sort_key(path: bytes) -> tuple[bytes, ...]:
    """The one sort order for paths: by byte components, so a directory's entries stay together."""
    return tuple(path.split(b"/"))


def join_path(parent: bytes, name: bytes) -> bytes:
    return parent + name if parent.endswith(b"/") else parent + b"/" + name


def parent_path(path: bytes) -> bytes:
    head, _, _ = path.rpartition(b"/")
    return head or b"/"


def base_name(path: bytes) -> bytes:
    return path.rpartition(b"/")[2]


def ancestors(path: bytes) -> list[bytes]:
    """``/a/b/c`` -> ``[/a, /a/b]`` (excluding ``/`` and the path itself)."""
    parts = path.split(b"/")[1:-1]
    out: list[bytes] = []
    acc = b""
    for part in parts:
        acc += b"/" + part
        out.append(acc)
    return out


# --- records -----------------------------------------------------------------

Xattrs = tuple[tuple[str, bytes], ...]
"""Extended attributes as sorted (name, raw value) pairs."""


@dataclass(slots=True)
class Entry:
    """One filesystem entry inside one layer's ``diff/`` directory.

    Treated as immutable (derive changed copies with ``dataclasses.replace``). It
    is not declared frozen because a frozen dataclass costs 7x more to build,
    and analysis builds one per entry of every layer it reads.

    Fields a source cannot provide are ``None`` (unknown), never invented.
    ``link_group`` is shared by every name of one inode (hardlinks) within the
    snapshot; ``None`` when the entry has a single name. ``hash_reused`` says
    that ``blake3`` was taken from the baseline of ``collect --reuse`` because
    the file's reuse key matched (``forensics.capture.hash.reuse_key``).
    """

    layer_id: str
    path: bytes
    kind: Kind
    mode: int  # permission bits incl. setuid/setgid/sticky (st_mode & 0o7777)
    uid: int
    gid: int
    size: int | None
    mtime_ns: int | None
    atime_ns: int | None = None
    ctime_ns: int | None = None
    inode: int | None = None
    nlink: int | None = None
    rdev_major: int | None = None
    rdev_minor: int | None = None
    target: bytes | None = None
    xattrs: Xattrs = ()
    blake3: str | None = None
    link_group: int | None = None
    dev: int | None = None  # st_dev: with inode, names the file on the collecting host only
    hash_reused: bool = False  # blake3 taken from a --reuse baseline snapshot, not read
    head: bytes | None = None  # a regular file's first bytes (its magic), as read when hashing

    @property
    def rdev(self) -> str | None:
        if self.rdev_major is None:
            return None
        return f"{self.rdev_major}:{self.rdev_minor}"

    def xattr(self, name: str) -> bytes | None:
        for key, value in self.xattrs:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class CaptureError:
    """An entry or file the collector could not read; the walk went on."""

    path: bytes  # relative to the data root
    operation: str
    message: str
    errno: int | None = None
    layer_id: str | None = None


@dataclass(frozen=True, slots=True)
class Layer:
    """One layer directory of the storage layout (an overlay2 ``<id>/``)."""

    id: str
    role: LayerRole
    link: str | None = None  # short name in l/
    lower: str | None = None  # raw content of the `lower` file
    committed: bool = False
    has_work: bool = False
    has_merged: bool = False
    has_diff: bool = True
    diff_path: bytes = b""  # relative to the data root
    chain: tuple[str, ...] = ()  # lower layer ids, nearest first
    problem: str | None = None  # why the chain could not be resolved


@dataclass(frozen=True, slots=True)
class ImageLayer:
    """An engine's content-addressed record of an image layer (Docker's layerdb)."""

    chain_id: str
    diff_id: str | None
    parent: str | None
    layer_id: str | None  # the storage layer (overlay2 cache id)
    size: int | None
    tar_split: bytes | None = None  # raw gzip bytes, kept for layer verification
    # Why the engine's records cannot verify this layer (e.g. containerd keeps no tar-split); said by
    # layer verification instead of a generic sentence. Not stored: the verdict's detail carries it.
    unverifiable: str | None = None


@dataclass(frozen=True, slots=True)
class Image:
    id: str
    tags: tuple[str, ...] = ()
    created: str | None = None
    parent: str | None = None
    diff_ids: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()  # storage layer ids, bottom to top
    config_json: str | None = None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Container:
    id: str
    name: str | None = None
    image: str | None = None  # image reference as the engine recorded it
    image_id: str | None = None
    created: str | None = None
    state: str | None = None  # running, exited, created, paused, ...
    exit_code: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    upper_layer: str | None = None
    init_layer: str | None = None
    chain: tuple[str, ...] = ()  # layer ids below the upper, nearest first
    top_chain_id: str | None = None  # content address of the image's top layer
    mounts_json: str | None = None
    labels_json: str | None = None
    config_json: str | None = None
    hostconfig_json: str | None = None
    problem: str | None = None  # what is missing or damaged in its metadata


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of a mount table, with overlay options parsed."""

    mount_point: bytes
    fs_type: str
    source: bytes
    options: str
    mount_id: int | None = None
    parent_id: int | None = None
    major_minor: str | None = None
    root: bytes | None = None
    super_options: str | None = None
    lowerdirs: tuple[bytes, ...] = ()
    upperdir: bytes | None = None
    workdir: bytes | None = None
    line: str = ""  # the original line, verbatim


@dataclass(frozen=True, slots=True)
class MetadataFile:
    """A raw engine metadata file kept verbatim (JSON configs, tags, ...)."""

    path: bytes  # relative to the data root
    content: bytes


@dataclass(slots=True)
class Provenance:
    tool_version: str
    started_utc: str
    source: str
    source_kind: str
    layout: str
    host: str
    kernel: str
    data_root: str = ""
    options: dict[str, object] = field(default_factory=dict)
    capabilities: frozenset[str] = frozenset()
    bytes_read: int = 0
    hashes_reused: int = 0
    finished_utc: str | None = None
    complete: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    digest: str | None = None


class ChangeKind(str, enum.Enum):
    """What an upperdir did to a path, relative to the image + ``-init`` baseline."""

    ADDED = "added"
    DELETED = "deleted"
    MODIFIED = "modified"
    COPIED_UP = "copied-up"
    WHITEOUT_OF_NOTHING = "whiteout-of-nothing"


@dataclass(frozen=True, slots=True)
class Change:
    """One path of a container's change report."""

    container_id: str
    container_name: str
    path: bytes
    kind: ChangeKind
    details: tuple[str, ...] = ()
    entry: Entry | None = None  # the container's entry (None when deleted)
    lower: Entry | None = None  # the baseline entry it replaced or hid
    via: bytes | None = None  # deleted: the whiteout, opaque dir or entry that hid it
    layer: str | None = None  # the layer holding the change (the upperdir)


# --- layer verification and audit ---------------------------------------------------


class LayerVerdict(str, enum.Enum):
    """What checking an image layer against the engine's records (diff id, tar-split) concluded."""

    VERIFIED = "verified"  # every file and header matches the layer tar the engine recorded
    TAMPERED = "tampered"  # something differs (layer_findings says what)
    UNVERIFIABLE = "unverifiable"  # nothing to check against (no tar-split, no engine record)
    ERROR = "error"  # the check could not be completed (unreadable tar-split or files)


class LayerFindingKind(str, enum.Enum):
    """How one path of an image layer on disk differs from the layer tar the engine recorded."""

    CONTENT = "content"  # CRC-64 or size of the file's bytes
    METADATA = "metadata"  # type, mode, owner, mtime, link target, device numbers or xattrs
    ADDED = "added"  # on disk, not in the tar
    MISSING = "missing"  # in the tar, not on disk


@dataclass(frozen=True, slots=True)
class LayerCheck:
    """One image layer checked at collection (one ``layer_checks`` row)."""

    layer_id: str
    verdict: LayerVerdict
    method: str | None  # tar-split-stream, tar-split-files or none
    chain_id: str | None = None
    diff_id: str | None = None
    computed_diff_id: str | None = None  # sha256 of the rebuilt stream (tar-split-stream only)
    files_checked: int | None = None
    findings: int = 0
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class LayerFinding:
    """One path of an image layer that differs from its recorded tar (one ``layer_findings`` row).

    ``detail`` maps each field that differs to ``[recorded, found]`` (``crc64``,
    ``size``, ``type``, ``mode``, ``uid``, ``gid``, ``mtime_ns``, ``target``,
    ``link``, ``rdev``, ``xattrs``, ``opaque``), or holds ``read`` with the
    reason a file could not be read.
    """

    layer_id: str
    path: bytes
    kind: LayerFindingKind
    detail: dict[str, object] = field(default_factory=dict)


class Severity(str, enum.Enum):
    """How much an audit finding matters; a gate fails at ``warning`` and above."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class AuditKind(str, enum.Enum):
    """Every kind of finding ``o2f audit`` reports (docs/cli.md#o2f-audit)."""

    LAYER_TAMPERED = "layer-tampered"
    LAYER_METADATA_CHANGED = "layer-metadata-changed"
    LAYER_FILE_ADDED = "layer-file-added"
    LAYER_FILE_MISSING = "layer-file-missing"
    LAYER_UNVERIFIABLE = "layer-unverifiable"
    ROGUE_MOUNT = "rogue-mount"
    MOUNT_LOWER_MISMATCH = "mount-lower-mismatch"
    RUNNING_WITHOUT_MOUNT = "running-without-mount"
    ORPHAN_LAYER = "orphan-layer"
    DANGLING_LINK = "dangling-link"
    WHITEOUT_OF_NOTHING = "whiteout-of-nothing"
    LITERAL_WH_FILE = "literal-wh-file"
    SETUID_ADDED = "setuid-added"
    CAPABILITY_ADDED = "capability-added"
    EXECUTABLE_ADDED = "executable-added"
    HIDDEN_PATH_ADDED = "hidden-path-added"


@dataclass(frozen=True, slots=True)
class AuditFinding:
    """One anomaly ``o2f audit`` found: what, how bad, where, and the evidence."""

    kind: AuditKind
    severity: Severity
    detail: str  # one sentence for people
    path: bytes | None = None  # inside the layer or container
    layer: str | None = None  # layer id
    container: str | None = None  # container name
    container_id: str | None = None
    evidence: dict[str, object] = field(default_factory=dict)  # machine-readable facts behind detail
