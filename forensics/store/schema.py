"""The snapshot schema, written once as data.

``docs/schema.md`` is generated from this module (``cog``), and so is the DDL
the writer runs (:func:`create_statements`, :func:`index_statements`); a
golden test pins that DDL.
Any change bumps :data:`SCHEMA_VERSION` and gets a changelog entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SCHEMA_VERSION = 2
APPLICATION = "o2f-snapshot"


@dataclass(frozen=True)
class Column:
    name: str
    type: type  # int, str, bytes or float, as sqlite-utils takes them
    description: str
    not_null: bool = False


@dataclass(frozen=True)
class Index:
    columns: tuple[str, ...]
    unique: bool = False
    where: str | None = None  # a partial index: only the rows this holds for (e.g. "x IS NOT NULL")


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    columns: tuple[Column, ...]
    pk: str | tuple[str, ...]
    foreign_keys: tuple[tuple[str, str, str], ...] = ()
    indexes: tuple[Index, ...] = ()  # built once the rows are in
    digest_order: str = ""  # ORDER BY used for the records digest
    label_column: str | None = None

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass(frozen=True)
class View:
    name: str
    description: str
    sql: str
    columns: tuple[str, ...] = field(default=())


PATH_NOTE = (
    "text form of raw bytes: valid UTF-8 as is, a backslash doubled, every other byte as \\xHH "
    "(reversible; see docs/schema.md#paths)"
)

META = Table(
    name="_o2f_meta",
    description="Bookkeeping: the schema version and the application tag.",
    columns=(
        Column("key", str, "setting name", True),
        Column("value", str, "setting value"),
    ),
    pk="key",
    digest_order="key",
)

SNAPSHOT = Table(
    name="snapshot",
    description="Provenance of the capture: one row.",
    columns=(
        Column("id", int, "always 1", True),
        Column("tool_version", str, "o2f version that wrote the snapshot", True),
        Column("schema_version", int, "schema version of this file", True),
        Column("started_utc", str, "capture start, ISO-8601 UTC", True),
        Column("finished_utc", str, "capture end, ISO-8601 UTC; NULL while incomplete"),
        Column("complete", int, "1 when the capture finished; 0 for an interrupted or failed one", True),
        Column("source", str, "the source path as given", True),
        Column("source_kind", str, "directory or tar", True),
        Column("data_root", str, "data root inside the source (a tar member prefix, or the directory)"),
        Column("layout", str, "storage layout detected, e.g. docker-overlay2"),
        Column("host", str, "host name of the collecting machine"),
        Column("kernel", str, "kernel release of the collecting machine"),
        Column("options", str, "collection options, JSON"),
        Column("counts", str, "record counts per table, JSON"),
        Column("capabilities", str, "entry fields the source could provide, JSON array"),
        Column("bytes_read", int, "bytes of file content read and hashed"),
        Column(
            "hashes_reused",
            int,
            "entries whose hash was taken from a baseline snapshot instead of read (`o2f collect --reuse`; "
            "`entries.hash_reused` marks them, `options.reuse` names the baseline)",
        ),
        Column("digest", str, "BLAKE3 over every record in canonical order (o2f verify recomputes it)"),
    ),
    pk="id",
    digest_order="id",
)

LAYERS = Table(
    name="layers",
    description="One row per layer directory of the storage layout.",
    columns=(
        Column("id", str, "layer directory name (overlay2 cache id, or `<mount-id>-init`)", True),
        Column("name", str, "short id (first 12 characters), for display", True),
        Column("role", str, "image, init, container or orphan", True),
        Column("link", str, "content of the `link` file (short name in l/)"),
        Column("lower", str, "content of the `lower` file, verbatim"),
        Column("committed", int, "1 when a `committed` file exists", True),
        Column("has_work", int, "1 when a `work/` directory exists (noted, never walked)", True),
        Column("has_merged", int, "1 when a `merged/` directory exists (never descended)", True),
        Column("has_diff", int, "1 when the layer's `diff/` directory exists", True),
        Column("diff_path", str, "path of the layer's diff/ relative to the data root"),
        Column("chain", str, "JSON array of the lower layer ids, nearest first"),
        Column("problem", str, "why the chain could not be resolved, when it could not"),
    ),
    pk="id",
    indexes=(Index(("role",)),),
    digest_order="id",
    label_column="name",
)

LINKS = Table(
    name="links",
    description="The `l/` short-name symlinks.",
    columns=(
        Column("name", str, "short name", True),
        Column("target", str, "symlink target, " + PATH_NOTE, True),
        Column("layer_id", str, "layer the link points at (NULL when it points elsewhere)"),
    ),
    pk="name",
    foreign_keys=(("layer_id", "layers", "id"),),
    digest_order="name",
)

ENTRIES = Table(
    name="entries",
    description="Every entry below every layer's diff/.",
    columns=(
        Column("id", int, "row id", True),
        Column("layer_id", str, "layer holding the entry", True),
        Column("path", str, "absolute path inside the layer (`/` is the diff root), " + PATH_NOTE, True),
        Column("kind", str, "file, dir, symlink, char, block, fifo or socket", True),
        Column("mode", int, "permission bits incl. setuid/setgid/sticky (st_mode & 07777)", True),
        Column("uid", int, "owner uid", True),
        Column("gid", int, "owner gid", True),
        Column("size", int, "st_size (a tar gives 0 for directories and symlinks: NULL then)"),
        Column("atime_ns", int, "access time, ns since the epoch (NULL when the source lacks it)"),
        Column("mtime_ns", int, "modification time, ns since the epoch"),
        Column("ctime_ns", int, "status change time, ns (NULL when the source lacks it)"),
        Column("inode", int, "inode number (NULL from a tar)"),
        Column(
            "dev",
            int,
            "st_dev of the filesystem holding the entry (NULL from a tar); with `inode` it names the file "
            "on the collecting host only, and is what `o2f collect --reuse` matches",
        ),
        Column("nlink", int, "link count (NULL from a tar)"),
        Column("rdev_major", int, "device major number (char and block devices)"),
        Column("rdev_minor", int, "device minor number"),
        Column("target", str, "symlink target, " + PATH_NOTE),
        Column("xattrs", str, "JSON object {name: hex value}, NULL when none"),
        Column("blake3", str, "BLAKE3-256 of a regular file's content, lowercase hex"),
        Column(
            "head",
            bytes,
            "a regular file's first 16 bytes (fewer if it is shorter), read with the content: its magic "
            "(`7f454c46` ELF, `2321` #!); NULL when the content was not read",
        ),
        Column(
            "hash_reused",
            int,
            "1 when `blake3` and `xattrs` were copied from the baseline snapshot of `o2f collect --reuse` "
            "(layer, path, dev, inode, size, mtime_ns and ctime_ns all unchanged; the baseline is in "
            "`snapshot.options`) instead of read; 0 when they were read, or there is no hash",
            True,
        ),
        Column(
            "link_group",
            int,
            "shared by every name of one inode (hardlinks; from a directory, 56 bits of BLAKE3 over its "
            "device and inode numbers, from a tar a counter); NULL for single names",
        ),
        Column("whiteout", int, "1 for an overlay whiteout (char device 0/0)", True),
        Column("opaque", int, "1 for a directory marked opaque (trusted. or user.overlay.opaque=y)", True),
        Column("overlay_private", str, "JSON array of kernel bookkeeping xattr names present"),
    ),
    pk="id",
    foreign_keys=(("layer_id", "layers", "id"),),
    indexes=(
        Index(("layer_id", "path"), unique=True),
        Index(("blake3",), where="blake3 IS NOT NULL"),
        Index(("link_group",), where="link_group IS NOT NULL"),
    ),
    digest_order="",  # covered by entry_digests, one digest per layer
)

ENTRY_DIGESTS = Table(
    name="entry_digests",
    description=(
        "One BLAKE3-256 per layer over that layer's `entries` rows, computed as they were written. The "
        "records digest covers this table instead of every entries row, and `o2f verify` names the layers "
        "whose rows changed (docs/evidence.md#the-records-digest)."
    ),
    columns=(
        Column("layer_id", str, "layer", True),
        Column("entries", int, "number of entries rows of the layer", True),
        Column(
            "digest",
            str,
            "BLAKE3-256 hex over the layer's rows in `id` order, each the tuple of its columns after `id` "
            "in CPython `marshal` format version 2 (docs/evidence.md#the-records-digest)",
            True,
        ),
    ),
    pk="layer_id",
    digest_order="layer_id",
)

IMAGE_LAYERS = Table(
    name="image_layers",
    description="The engine's content-addressed layer records (Docker layerdb/sha256).",
    columns=(
        Column("chain_id", str, "chain id (sha256:...)", True),
        Column("diff_id", str, "diff id: sha256 of the uncompressed layer tar"),
        Column("parent", str, "chain id of the parent layer"),
        Column("layer_id", str, "storage layer (overlay2 cache id)"),
        Column("size", int, "size the engine recorded"),
        Column("has_tar_split", int, "1 when tar-split metadata exists", True),
        Column("tar_split", bytes, "raw tar-split.json.gz, kept for layer verification"),
    ),
    pk="chain_id",
    foreign_keys=(("layer_id", "layers", "id"),),
    digest_order="chain_id",
)

IMAGES = Table(
    name="images",
    description="Images (configs) and the storage layers they stack, bottom to top.",
    columns=(
        Column("id", str, "image id (sha256:...)", True),
        Column("name", str, "first tag, or the short id", True),
        Column("tags", str, "JSON array of repository tags"),
        Column("created", str, "creation time from the config"),
        Column("parent", str, "parent image id (legacy builder)"),
        Column("diff_ids", str, "JSON array of diff ids, bottom to top"),
        Column("layers", str, "JSON array of storage layer ids, bottom to top"),
        Column("config", str, "image config JSON, verbatim"),
        Column("problem", str, "what is missing or damaged in its metadata"),
    ),
    pk="id",
    digest_order="id",
    label_column="name",
)

CONTAINERS = Table(
    name="containers",
    description="Containers with their layers and engine state.",
    columns=(
        Column("id", str, "container id", True),
        Column("name", str, "container name (the id when unknown)", True),
        Column("image", str, "image reference as given at creation"),
        Column("image_id", str, "image id"),
        Column("created", str, "creation time"),
        Column("state", str, "running, paused, restarting, exited, created or dead"),
        Column("exit_code", int, "last exit code"),
        Column("started_at", str, "last start"),
        Column("finished_at", str, "last exit"),
        Column("upper_layer", str, "the writable layer (upperdir)"),
        Column("init_layer", str, "the -init layer"),
        Column("chain", str, "JSON array of layer ids below the upper, nearest first"),
        Column("top_chain_id", str, "chain id of the image's top layer"),
        Column("mount_points", str, "volume and bind mount points, JSON"),
        Column("labels", str, "labels, JSON"),
        Column("config", str, "config.v2.json, verbatim"),
        Column("hostconfig", str, "hostconfig.json, verbatim"),
        Column("problem", str, "what is missing or damaged in its metadata"),
    ),
    pk="id",
    foreign_keys=(("upper_layer", "layers", "id"), ("init_layer", "layers", "id")),
    indexes=(Index(("state",)),),
    digest_order="id",
    label_column="name",
)

MOUNTS = Table(
    name="mounts",
    description="The host mount table given to or read by the collector.",
    columns=(
        Column("id", int, "row id (line order)", True),
        Column("mount_id", int, "mountinfo mount id"),
        Column("parent_id", int, "mountinfo parent id"),
        Column("major_minor", str, "st_dev of the mounted filesystem"),
        Column("root", str, "root of the mount within its filesystem, " + PATH_NOTE),
        Column("mount_point", str, "mount point, " + PATH_NOTE, True),
        Column("fs_type", str, "filesystem type", True),
        Column("source", str, "mount source, " + PATH_NOTE),
        Column("options", str, "mount options"),
        Column("super_options", str, "super block options (mountinfo)"),
        Column("lowerdirs", str, "overlay lowerdirs, JSON array in the text form"),
        Column("upperdir", str, "overlay upperdir"),
        Column("workdir", str, "overlay workdir"),
        Column("line", str, "the original line, verbatim", True),
    ),
    pk="id",
    indexes=(Index(("fs_type",)),),
    digest_order="id",
)

METADATA_FILES = Table(
    name="metadata_files",
    description="Engine metadata files kept verbatim (configs, layerdb records, link files).",
    columns=(
        Column("path", str, "path relative to the data root, " + PATH_NOTE, True),
        Column("size", int, "bytes", True),
        Column("content", bytes, "raw content", True),
    ),
    pk="path",
    digest_order="path",
)

LAYER_CHECKS = Table(
    name="layer_checks",
    description=(
        "Image layers checked against the engine's own records (diff id, tar-split), one row per layer."
    ),
    columns=(
        Column("layer_id", str, "storage layer checked", True),
        Column("chain_id", str, "its content address (layerdb chain id)"),
        Column("diff_id", str, "the diff id the engine recorded"),
        Column("verdict", str, "verified, tampered, unverifiable or error", True),
        Column(
            "method",
            str,
            "how: tar-split-stream (diff id recomputed), tar-split-files (per-file CRC-64), none",
        ),
        Column("computed_diff_id", str, "sha256 of the rebuilt layer tar stream, when it could be rebuilt"),
        Column("files_checked", int, "file entries of the layer's tar compared with the disk"),
        Column("findings", int, "rows of layer_findings for this layer", True),
        Column("detail", str, "why, in one sentence"),
    ),
    pk="layer_id",
    foreign_keys=(("layer_id", "layers", "id"),),
    indexes=(Index(("verdict",)),),
    digest_order="layer_id",
)

LAYER_FINDINGS = Table(
    name="layer_findings",
    description="Per-file differences between an image layer on disk and the layer tar the engine recorded.",
    columns=(
        Column("id", int, "row id", True),
        Column("layer_id", str, "storage layer", True),
        Column("path", str, "path inside the layer, " + PATH_NOTE, True),
        Column(
            "kind",
            str,
            "content, metadata, added (on disk, not in the tar) or missing (in the tar, not on disk)",
            True,
        ),
        Column("detail", str, "JSON: the recorded and the found values of each field that differs"),
    ),
    pk="id",
    foreign_keys=(("layer_id", "layers", "id"),),
    indexes=(Index(("layer_id",)), Index(("kind",))),
    digest_order="id",
)

ERRORS = Table(
    name="errors",
    description="Entries and files that could not be read; the capture went on.",
    columns=(
        Column("id", int, "row id", True),
        Column("path", str, "path relative to the data root, " + PATH_NOTE, True),
        Column("layer_id", str, "layer, when known"),
        Column("operation", str, "lstat, open, read, readlink, xattr, list, metadata, ...", True),
        Column("errno", int, "errno, when the system reported one"),
        Column("message", str, "what went wrong", True),
    ),
    pk="id",
    indexes=(Index(("operation",)),),
    digest_order="id",
)

TABLES: tuple[Table, ...] = (
    META,
    SNAPSHOT,
    LAYERS,
    LINKS,
    ENTRIES,
    ENTRY_DIGESTS,
    IMAGE_LAYERS,
    IMAGES,
    CONTAINERS,
    MOUNTS,
    METADATA_FILES,
    LAYER_CHECKS,
    LAYER_FINDINGS,
    ERRORS,
)

_ISO = "strftime('%Y-%m-%dT%H:%M:%SZ', {col} / 1000000000, 'unixepoch')"

VIEWS: tuple[View, ...] = (
    View(
        "layer_entries",
        "One readable row per layer entry: layer name and role, type letter, octal mode, ISO mtime.",
        f"""SELECT e.id, l.name AS layer, l.role AS layer_role, e.path,
  CASE e.kind WHEN 'file' THEN 'f' WHEN 'dir' THEN 'd' WHEN 'symlink' THEN 'l' WHEN 'char' THEN 'c'
    WHEN 'block' THEN 'b' WHEN 'fifo' THEN 'p' ELSE 's' END AS type,
  printf('%04o', e.mode) AS mode, e.uid, e.gid, e.size,
  {_ISO.format(col="e.mtime_ns")} AS mtime, e.target, e.blake3, e.whiteout, e.opaque, e.xattrs,
  e.layer_id
FROM entries e JOIN layers l ON l.id = e.layer_id""",
    ),
    View(
        "whiteouts",
        "Overlay whiteouts (deletions) per layer.",
        """SELECT l.name AS layer, l.role AS layer_role, e.path, e.layer_id
FROM entries e JOIN layers l ON l.id = e.layer_id WHERE e.whiteout = 1""",
    ),
    View(
        "opaque_dirs",
        "Directories that hide everything below them in lower layers.",
        """SELECT l.name AS layer, l.role AS layer_role, e.path, e.layer_id
FROM entries e JOIN layers l ON l.id = e.layer_id WHERE e.opaque = 1""",
    ),
    View(
        "setuid_files",
        "Regular files with the setuid or setgid bit, per layer.",
        """SELECT l.name AS layer, l.role AS layer_role, e.path, printf('%04o', e.mode) AS mode, e.uid, e.gid,
  e.blake3, e.layer_id
FROM entries e JOIN layers l ON l.id = e.layer_id WHERE e.kind = 'file' AND (e.mode & 3072) != 0""",
    ),
    View(
        "container_layers",
        "Each container's upper, init and image layers, one row per layer, nearest first (0 = upper).",
        """SELECT c.name AS container, c.id AS container_id, 0 AS depth, c.upper_layer AS layer_id
FROM containers c WHERE c.upper_layer IS NOT NULL
UNION ALL
SELECT c.name, c.id, CAST(j.key AS INTEGER) + 1, j.value
FROM containers c, json_each(c.chain) j""",
    ),
    View(
        "capture_errors",
        "Errors with the layer name, for review.",
        """SELECT e.id, e.path, l.name AS layer, e.operation, e.errno, e.message
FROM errors e LEFT JOIN layers l ON l.id = e.layer_id""",
    ),
)


def table(name: str) -> Table:
    for candidate in TABLES:
        if candidate.name == name:
            return candidate
    raise KeyError(name)


def _type_name(column: Column) -> str:
    return {int: "INTEGER", str: "TEXT", bytes: "BLOB", float: "FLOAT"}[column.type]


def create_statements() -> list[str]:
    """The DDL of a new, empty snapshot: every table, then every view (indexes come with the rows)."""
    statements = []
    for t in TABLES:
        pk = (t.pk,) if isinstance(t.pk, str) else t.pk
        references = {column: (ref, refcol) for column, ref, refcol in t.foreign_keys}
        lines = []
        for c in t.columns:
            line = f'   "{c.name}" {_type_name(c)}'
            if len(pk) == 1 and c.name == pk[0]:
                line += " PRIMARY KEY"
            if c.not_null:
                line += " NOT NULL"
            if c.name in references:
                line += ' REFERENCES "{}"("{}")'.format(*references[c.name])
            lines.append(line)
        if len(pk) > 1:
            lines.append("   PRIMARY KEY (" + ", ".join(f'"{c}"' for c in pk) + ")")
        statements.append(f'CREATE TABLE "{t.name}" (\n' + ",\n".join(lines) + "\n)")
    statements += [f'CREATE VIEW "{v.name}" AS {v.sql}' for v in VIEWS]
    return statements


def index_statements() -> list[str]:
    """The DDL of every index, run once the rows are written (one sorted build is cheaper than upkeep)."""
    statements = []
    for t in TABLES:
        for index in t.indexes:
            name = "idx_" + t.name + "_" + "_".join(index.columns)
            columns = ", ".join(f'"{c}"' for c in index.columns)
            unique = "UNIQUE " if index.unique else ""
            where = f" WHERE {index.where}" if index.where else ""
            statements.append(f'CREATE {unique}INDEX "{name}"\n    ON "{t.name}" ({columns}){where}')
    return statements


def markdown() -> str:
    """The table and view reference in docs/schema.md (generated with cog from this module)."""
    lines = [
        f"Schema version **{SCHEMA_VERSION}** (`_o2f_meta.schema_version`, also `PRAGMA user_version`).",
        "",
    ]
    for t in TABLES:
        lines += [f"### `{t.name}`", "", t.description, ""]
        pk = t.pk if isinstance(t.pk, str) else ", ".join(t.pk)
        extra = [f"primary key `{pk}`"]
        extra += [f"`{col}` → `{ref}.{refcol}`" for col, ref, refcol in t.foreign_keys]
        for index in t.indexes:
            kind = "unique" if index.unique else "index"
            where = f" where `{index.where}`" if index.where else ""
            extra.append(f"{kind} (" + ", ".join(f"`{c}`" for c in index.columns) + ")" + where)
        lines += ["; ".join(extra) + ".", "", "| column | type | description |", "| --- | --- | --- |"]
        for c in t.columns:
            null = " NOT NULL" if c.not_null else ""
            description = c.description.replace("|", "\\|")
            lines.append(f"| `{c.name}` | {_type_name(c)}{null} | {description} |")
        lines.append("")
    lines += ["## Views", ""]
    for v in VIEWS:
        lines += [f"### `{v.name}`", "", v.description, "", "```sql", v.sql, "```", ""]
    return "\n".join(lines)
