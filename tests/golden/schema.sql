CREATE TABLE "_o2f_meta" (
   "key" TEXT PRIMARY KEY NOT NULL,
   "value" TEXT
);
CREATE VIEW "capture_errors" AS SELECT e.id, e.path, l.name AS layer, e.operation, e.errno, e.message
FROM errors e LEFT JOIN layers l ON l.id = e.layer_id;
CREATE VIEW "container_layers" AS SELECT c.name AS container, c.id AS container_id, 0 AS depth, c.upper_layer AS layer_id
FROM containers c WHERE c.upper_layer IS NOT NULL
UNION ALL
SELECT c.name, c.id, CAST(j.key AS INTEGER) + 1, j.value
FROM containers c, json_each(c.chain) j;
CREATE TABLE "containers" (
   "id" TEXT PRIMARY KEY NOT NULL,
   "name" TEXT NOT NULL,
   "image" TEXT,
   "image_id" TEXT,
   "created" TEXT,
   "state" TEXT,
   "exit_code" INTEGER,
   "started_at" TEXT,
   "finished_at" TEXT,
   "upper_layer" TEXT REFERENCES "layers"("id"),
   "init_layer" TEXT REFERENCES "layers"("id"),
   "chain" TEXT,
   "top_chain_id" TEXT,
   "mount_points" TEXT,
   "labels" TEXT,
   "config" TEXT,
   "hostconfig" TEXT,
   "problem" TEXT
);
CREATE TABLE "entries" (
   "id" INTEGER PRIMARY KEY NOT NULL,
   "layer_id" TEXT NOT NULL REFERENCES "layers"("id"),
   "path" TEXT NOT NULL,
   "kind" TEXT NOT NULL,
   "mode" INTEGER NOT NULL,
   "uid" INTEGER NOT NULL,
   "gid" INTEGER NOT NULL,
   "size" INTEGER,
   "atime_ns" INTEGER,
   "mtime_ns" INTEGER,
   "ctime_ns" INTEGER,
   "inode" INTEGER,
   "dev" INTEGER,
   "nlink" INTEGER,
   "rdev_major" INTEGER,
   "rdev_minor" INTEGER,
   "target" TEXT,
   "xattrs" TEXT,
   "blake3" TEXT,
   "head" BLOB,
   "hash_reused" INTEGER NOT NULL,
   "link_group" INTEGER,
   "whiteout" INTEGER NOT NULL,
   "opaque" INTEGER NOT NULL,
   "overlay_private" TEXT
);
CREATE TABLE "entry_digests" (
   "layer_id" TEXT PRIMARY KEY NOT NULL,
   "entries" INTEGER NOT NULL,
   "digest" TEXT NOT NULL
);
CREATE TABLE "errors" (
   "id" INTEGER PRIMARY KEY NOT NULL,
   "path" TEXT NOT NULL,
   "layer_id" TEXT,
   "operation" TEXT NOT NULL,
   "errno" INTEGER,
   "message" TEXT NOT NULL
);
CREATE INDEX "idx_containers_state"
    ON "containers" ("state");
CREATE INDEX "idx_entries_blake3"
    ON "entries" ("blake3") WHERE blake3 IS NOT NULL;
CREATE UNIQUE INDEX "idx_entries_layer_id_path"
    ON "entries" ("layer_id", "path");
CREATE INDEX "idx_entries_link_group"
    ON "entries" ("link_group") WHERE link_group IS NOT NULL;
CREATE INDEX "idx_errors_operation"
    ON "errors" ("operation");
CREATE INDEX "idx_layer_checks_verdict"
    ON "layer_checks" ("verdict");
CREATE INDEX "idx_layer_findings_kind"
    ON "layer_findings" ("kind");
CREATE INDEX "idx_layer_findings_layer_id"
    ON "layer_findings" ("layer_id");
CREATE INDEX "idx_layers_role"
    ON "layers" ("role");
CREATE INDEX "idx_mounts_fs_type"
    ON "mounts" ("fs_type");
CREATE TABLE "image_layers" (
   "chain_id" TEXT PRIMARY KEY NOT NULL,
   "diff_id" TEXT,
   "parent" TEXT,
   "layer_id" TEXT REFERENCES "layers"("id"),
   "size" INTEGER,
   "has_tar_split" INTEGER NOT NULL,
   "tar_split" BLOB
);
CREATE TABLE "images" (
   "id" TEXT PRIMARY KEY NOT NULL,
   "name" TEXT NOT NULL,
   "tags" TEXT,
   "created" TEXT,
   "parent" TEXT,
   "diff_ids" TEXT,
   "layers" TEXT,
   "config" TEXT,
   "problem" TEXT
);
CREATE TABLE "layer_checks" (
   "layer_id" TEXT PRIMARY KEY NOT NULL REFERENCES "layers"("id"),
   "chain_id" TEXT,
   "diff_id" TEXT,
   "verdict" TEXT NOT NULL,
   "method" TEXT,
   "computed_diff_id" TEXT,
   "files_checked" INTEGER,
   "findings" INTEGER NOT NULL,
   "detail" TEXT
);
CREATE VIEW "layer_entries" AS SELECT e.id, l.name AS layer, l.role AS layer_role, e.path,
  CASE e.kind WHEN 'file' THEN 'f' WHEN 'dir' THEN 'd' WHEN 'symlink' THEN 'l' WHEN 'char' THEN 'c'
    WHEN 'block' THEN 'b' WHEN 'fifo' THEN 'p' ELSE 's' END AS type,
  printf('%04o', e.mode) AS mode, e.uid, e.gid, e.size,
  strftime('%Y-%m-%dT%H:%M:%SZ', e.mtime_ns / 1000000000, 'unixepoch') AS mtime, e.target, e.blake3, e.whiteout, e.opaque, e.xattrs,
  e.layer_id
FROM entries e JOIN layers l ON l.id = e.layer_id;
CREATE TABLE "layer_findings" (
   "id" INTEGER PRIMARY KEY NOT NULL,
   "layer_id" TEXT NOT NULL REFERENCES "layers"("id"),
   "path" TEXT NOT NULL,
   "kind" TEXT NOT NULL,
   "detail" TEXT
);
CREATE TABLE "layers" (
   "id" TEXT PRIMARY KEY NOT NULL,
   "name" TEXT NOT NULL,
   "role" TEXT NOT NULL,
   "link" TEXT,
   "lower" TEXT,
   "committed" INTEGER NOT NULL,
   "has_work" INTEGER NOT NULL,
   "has_merged" INTEGER NOT NULL,
   "has_diff" INTEGER NOT NULL,
   "diff_path" TEXT,
   "chain" TEXT,
   "problem" TEXT
);
CREATE TABLE "links" (
   "name" TEXT PRIMARY KEY NOT NULL,
   "target" TEXT NOT NULL,
   "layer_id" TEXT REFERENCES "layers"("id")
);
CREATE TABLE "metadata_files" (
   "path" TEXT PRIMARY KEY NOT NULL,
   "size" INTEGER NOT NULL,
   "content" BLOB NOT NULL
);
CREATE TABLE "mounts" (
   "id" INTEGER PRIMARY KEY NOT NULL,
   "mount_id" INTEGER,
   "parent_id" INTEGER,
   "major_minor" TEXT,
   "root" TEXT,
   "mount_point" TEXT NOT NULL,
   "fs_type" TEXT NOT NULL,
   "source" TEXT,
   "options" TEXT,
   "super_options" TEXT,
   "lowerdirs" TEXT,
   "upperdir" TEXT,
   "workdir" TEXT,
   "line" TEXT NOT NULL
);
CREATE VIEW "opaque_dirs" AS SELECT l.name AS layer, l.role AS layer_role, e.path, e.layer_id
FROM entries e JOIN layers l ON l.id = e.layer_id WHERE e.opaque = 1;
CREATE VIEW "setuid_files" AS SELECT l.name AS layer, l.role AS layer_role, e.path, printf('%04o', e.mode) AS mode, e.uid, e.gid,
  e.blake3, e.layer_id
FROM entries e JOIN layers l ON l.id = e.layer_id WHERE e.kind = 'file' AND (e.mode & 3072) != 0;
CREATE TABLE "snapshot" (
   "id" INTEGER PRIMARY KEY NOT NULL,
   "tool_version" TEXT NOT NULL,
   "schema_version" INTEGER NOT NULL,
   "started_utc" TEXT NOT NULL,
   "finished_utc" TEXT,
   "complete" INTEGER NOT NULL,
   "source" TEXT NOT NULL,
   "source_kind" TEXT NOT NULL,
   "data_root" TEXT,
   "layout" TEXT,
   "host" TEXT,
   "kernel" TEXT,
   "options" TEXT,
   "counts" TEXT,
   "capabilities" TEXT,
   "bytes_read" INTEGER,
   "hashes_reused" INTEGER,
   "digest" TEXT
);
CREATE VIEW "whiteouts" AS SELECT l.name AS layer, l.role AS layer_role, e.path, e.layer_id
FROM entries e JOIN layers l ON l.id = e.layer_id WHERE e.whiteout = 1;
