"""containers/storage's ``overlay`` driver: Podman, CRI-O and buildah (``/var/lib/containers/storage``).

Layers: ``overlay/<layer-id>/{diff,link,lower,work,merged}`` (the bottom layer has
``empty/`` instead of ``lower``) and ``overlay/l/<short> -> ../<layer-id>/diff``, as
Docker's overlay2 but without ``-init`` layers. Metadata:
``overlay-layers/layers.json`` (id, parent, diff digests, sizes; container layers
are named ``<container>-layer``), ``overlay-layers/<id>.tar-split.gz``,
``overlay-images/images.json`` with per-image big-data files
(``overlay-images/<id>/=<base64(key)>``; the config is key ``sha256:<image-id>``),
``overlay-containers/containers.json`` (``layer`` = the writable layer) and libpod's
``libpod/bolt_state.db`` (states, exit codes). The layout facts are documented in
the podman-a corpus README.

Damaged or missing metadata never stops discovery: each missing piece is a
warning, and the layers, chains and containers fall back to what the directory
structure shows (``lower`` files, ``l/`` links, layers named ``<name>-layer``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from forensics.capture.engine.base import Discovered, Gathered
from forensics.capture.engine.boltdb import BoltDB, BoltError, Bucket
from forensics.capture.engine.lowerchain import layer_record, resolve_lower, scan_layer_dirs
from forensics.capture.sources import NOTE, READ, SKIP, WALK, Action, Visit
from forensics.model import Container, Image, ImageLayer, Kind, LayerRole, clean_text

_HEX64 = re.compile(rb"^[0-9a-f]{64}$")
_LAYER_FILES = {b"link", b"lower"}
_LAYER_NOTES = {b"work", b"merged", b"empty"}
# What find_root accepts below overlay/<id>/: containers/storage's own layer files (Docker's
# long-gone `overlay` driver had <id>/{root,upper,lower-id} instead).
_LAYER_SHAPE = {b"diff", b"link", b"lower", b"empty"}
_METADATA_DIRS = (b"overlay-layers", b"overlay-images", b"overlay-containers")
_LAYER_METADATA = {b"layers.json", b"volatile-layers.json"}
_CONTAINER_METADATA = {b"containers.json", b"volatile-containers.json"}
_ZERO_TIME = "0001-01-01T00:00:00Z"
BOLT_STATE = b"libpod/bolt_state.db"
# libpod/define/containerstate.go ContainerState, as `podman ps` names them, in o2f's vocabulary.
_LIBPOD_STATES = {
    1: "created",  # ContainerStateConfigured
    2: "created",  # ContainerStateCreated
    3: "running",
    4: "exited",  # ContainerStateStopped
    5: "paused",
    6: "exited",
    7: "dead",  # ContainerStateRemoving
    8: "running",  # ContainerStateStopping
}


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "surrogateescape").strip()


def _time(value: object) -> str | None:
    return value if isinstance(value, str) and value and value != _ZERO_TIME else None


def _hex_id(value: object) -> str | None:
    """An image or layer id as containers/storage writes it (bare hex), without any ``sha256:``."""
    if not isinstance(value, str) or not value:
        return None
    return clean_text(value.removeprefix("sha256:"))


def big_data_name(key: str) -> bytes:
    """The file name containers/storage gives a big-data item: ``=`` + base64 of its key."""
    return b"=" + base64.b64encode(key.encode("utf-8"))


@dataclass
class _LayerRecord:
    id: str
    parent: str | None
    diff_digest: str | None
    compressed_size: int | None
    diff_size: int | None
    names: tuple[str, ...]


@dataclass
class _LibpodState:
    name: str | None = None
    image: str | None = None
    image_id: str | None = None
    created: str | None = None
    state: str | None = None
    exit_code: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    mounts_json: str | None = None
    labels_json: str | None = None
    config_json: str | None = None


class ContainersStorage:
    name = "containers-storage-overlay"

    def detect(self, exists: Callable[[bytes], bool]) -> str | None:
        if exists(b"overlay-containers"):
            return None
        if exists(b"overlay") and any(
            exists(p) for p in (b"overlay-layers/layers.json", b"overlay-layers", b"overlay-images")
        ):
            return None
        return "it has neither overlay/ with overlay-layers/layers.json nor overlay-containers/"

    def find_root(self, member: bytes) -> bytes | None:
        parts = member.rstrip(b"/").split(b"/")
        for index in range(len(parts) - 1):
            here, below = parts[index], parts[index + 1]
            if here == b"overlay":
                if below == b"l" or (
                    _HEX64.match(below) and index + 2 < len(parts) and parts[index + 2] in _LAYER_SHAPE
                ):
                    return b"/".join(parts[:index])
            elif here in _METADATA_DIRS or (here == b"libpod" and below == b"bolt_state.db"):
                return b"/".join(parts[:index])
        return None

    def classify(self, rel: bytes, kind: Kind) -> Visit:
        parts = rel.split(b"/")
        top = parts[0]
        depth = len(parts)
        is_dir = kind is Kind.DIR
        if top == b"overlay":
            return self._classify_overlay(parts, depth, is_dir)
        if depth == 1:
            return WALK if is_dir and (top in _METADATA_DIRS or top == b"libpod") else SKIP
        if top == b"overlay-layers":
            name = parts[1]
            if depth == 2 and not is_dir and (name in _LAYER_METADATA or name.endswith(b".tar-split.gz")):
                return READ
            return SKIP
        if top == b"overlay-images":
            if depth == 2:
                if is_dir:
                    return WALK
                return READ if parts[1] == b"images.json" else SKIP
            return READ if depth == 3 and kind is Kind.FILE else SKIP
        if top == b"overlay-containers":
            return READ if depth == 2 and not is_dir and parts[1] in _CONTAINER_METADATA else SKIP
        if top == b"libpod":
            return READ if rel == BOLT_STATE and not is_dir else SKIP
        return SKIP

    @staticmethod
    def _classify_overlay(parts: list[bytes], depth: int, is_dir: bool) -> Visit:
        if depth == 1:
            return WALK if is_dir else SKIP
        layer = parts[1]
        if layer == b"l":
            return WALK if depth == 2 else READ
        if depth == 2:
            return WALK if is_dir else SKIP
        part = parts[2]
        if part == b"diff":
            inner = b"/" + b"/".join(parts[3:]) if depth > 3 else b"/"
            return Visit(Action.ENTRY, layer.decode("utf-8", "surrogateescape"), inner)
        if depth == 3 and part in _LAYER_FILES and not is_dir:
            return READ
        if depth == 3 and part in _LAYER_NOTES:
            return NOTE
        return SKIP

    # -- after the walk ---------------------------------------------------------

    def discover(self, gathered: Gathered) -> Discovered:
        return _Discovery(gathered).run()


class _Discovery:
    """One discover() run: the metadata parsed once, each missing piece a warning."""

    def __init__(self, gathered: Gathered) -> None:
        self.gathered = gathered
        self.files = gathered.files
        self.warnings: list[str] = []

    # -- metadata files -----------------------------------------------------------

    def _json_list(self, path: bytes, what: str) -> list[dict[str, object]] | None:
        raw = self.files.get(path)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            self.warnings.append(f"{path.decode()} is not valid JSON; {what} are found by structure only")
            return None
        if not isinstance(data, list):
            self.warnings.append(f"{path.decode()} is not a JSON list; {what} are found by structure only")
            return None
        return [item for item in data if isinstance(item, dict) and isinstance(item.get("id"), str)]

    def _layer_records(self) -> dict[str, _LayerRecord] | None:
        """layers.json (and volatile-layers.json) by layer id; None when neither can be read."""
        main = b"overlay-layers/layers.json"
        items = self._json_list(main, "layer parents and digests")
        if items is None and main not in self.files:
            self.warnings.append(
                "overlay-layers/layers.json is missing; layer parents and digests are taken "
                "from the lower files"
            )
        volatile = self._json_list(b"overlay-layers/volatile-layers.json", "volatile layers")
        if items is None and volatile is None:
            return None
        records: dict[str, _LayerRecord] = {}
        for item in (items or []) + (volatile or []):
            layer_id = clean_text(str(item["id"]))
            names = item.get("names")
            digest = item.get("diff-digest")
            records[layer_id] = _LayerRecord(
                id=layer_id,
                parent=_hex_id(item.get("parent")),
                diff_digest=digest if isinstance(digest, str) and digest else None,
                compressed_size=_int(item.get("compressed-size")),
                diff_size=_int(item.get("diff-size")),
                names=tuple(clean_text(n) for n in names if isinstance(n, str))
                if isinstance(names, list)
                else (),
            )
        return records

    def _libpod(self) -> tuple[dict[str, _LibpodState], dict[str, str], list[str]]:
        """Per-container state from libpod's bolt_state.db; name -> id; removed containers' exit codes."""
        raw = self.files.get(BOLT_STATE)
        if raw is None:
            return {}, {}, []
        try:
            db = BoltDB.from_bytes(raw, origin=BOLT_STATE.decode())
            states: dict[str, _LibpodState] = {}
            ctr = db.walk([b"ctr"])
            if ctr is not None:
                for key, value in ctr.items():
                    if not isinstance(value, Bucket):
                        continue
                    states[clean_text(key.decode("utf-8", "surrogateescape"))] = _libpod_state(
                        value.get(b"config"), value.get(b"state")
                    )
            names: dict[str, str] = {}
            registry = db.walk([b"name-registry"])
            if registry is not None:
                for key, value in registry.items():
                    if isinstance(value, bytes):
                        names[_decode(key)] = _decode(value)
            exit_codes = db.walk([b"exit-code"])
            stamps = db.walk([b"exit-code-time-stamp"])
            removed = []
            if exit_codes is not None:
                for key, value in exit_codes.items():
                    cid = _decode(key)
                    if cid in states or not isinstance(value, bytes):
                        continue
                    stamp = stamps.get(key) if stamps is not None else None
                    when = f" at {_decode(stamp)}" if isinstance(stamp, bytes) else ""
                    removed.append(f"{cid[:12]} (exit code {_decode(value)}{when})")
                # exit codes of known containers fill in what a state record lacks
                for cid, state in states.items():
                    code = exit_codes.get(cid.encode())
                    if (
                        state.exit_code is None
                        and isinstance(code, bytes)
                        and _decode(code).lstrip("-").isdigit()
                    ):
                        state.exit_code = int(_decode(code))
        except BoltError as exc:
            self.warnings.append(f"{exc} Container states and exit codes are unknown.")
            return {}, {}, []
        return states, names, removed

    # -- layers ----------------------------------------------------------------------

    def run(self) -> Discovered:
        gathered, files = self.gathered, self.files
        dirs = scan_layer_dirs(b"overlay", gathered.layer_roots, [*files, *gathered.noted], gathered.noted)
        layer_ids, links, link_map = dirs.layer_ids, dirs.links, dirs.link_map

        records = self._layer_records()
        for layer_id in sorted(set(records or ()) - layer_ids):
            self.warnings.append(f"layers.json lists layer {layer_id}, whose directory is gone")

        chains: dict[str, tuple[str, ...]] = {}
        problems: dict[str, str | None] = {}
        for layer_id in sorted(layer_ids):
            chains[layer_id], problems[layer_id] = self._chain(layer_id, layer_ids, link_map, records)

        image_layers = self._image_layers(records, layer_ids)
        images = self._images(records, chains, layer_ids, image_layers)
        containers = self._containers(records, chains, problems, layer_ids, images, image_layers)

        referenced: set[str] = set()
        for image in images:
            referenced.update(image.layers)
        container_layers = {c.upper_layer for c in containers if c.upper_layer}
        for layer_id, chain in chains.items():
            if layer_id in container_layers or layer_id in referenced:
                referenced.update(chain)
        layers = []
        for layer_id in sorted(layer_ids):
            if layer_id in container_layers:
                role = LayerRole.CONTAINER
            elif layer_id in referenced or _is_image_layer(records, layer_id):
                role = LayerRole.IMAGE
            else:
                role = LayerRole.ORPHAN
            layers.append(
                layer_record(
                    b"overlay",
                    layer_id,
                    role,
                    files,
                    gathered.noted,
                    gathered.layer_roots,
                    chains[layer_id],
                    problems[layer_id],
                )
            )
        return Discovered(layers, image_layers, images, containers, links, self.warnings)

    def _chain(
        self,
        layer_id: str,
        layer_ids: set[str],
        link_map: dict[str, str | None],
        records: dict[str, _LayerRecord] | None,
    ) -> tuple[tuple[str, ...], str | None]:
        """The lower chain from the ``lower`` file (what the kernel mounts), else from layers.json."""
        base = b"overlay/" + layer_id.encode("utf-8", "surrogateescape")
        lower = _text(self.files.get(base + b"/lower"))
        expected = _parents(records, layer_id) if records is not None else None
        if layer_id not in self.gathered.layer_roots:
            chain = resolve_lower(layer_id, lower, link_map, layer_ids)
            return chain.layers, f"layer {layer_id} has no diff/ directory"
        if lower is None and expected:
            missing = [p for p in expected if p not in layer_ids]
            if missing:
                return (), f"layer {layer_id} has no lower file and its parent layer {missing[0]} is gone"
            self.warnings.append(f"layer {layer_id} has no lower file; its chain is taken from layers.json")
            return tuple(expected), None
        chain = resolve_lower(layer_id, lower, link_map, layer_ids)
        if chain.problem is None and expected is not None and chain.layers != tuple(expected):
            self.warnings.append(
                f"lower file of layer {layer_id} lists other layers than layers.json records; "
                "the lower file (what the kernel mounted) is used"
            )
        return chain.layers, chain.problem

    def _image_layers(self, records: dict[str, _LayerRecord] | None, layer_ids: set[str]) -> list[ImageLayer]:
        """Content-addressed records of the layers with a diff digest (OCI ChainID, as Docker's layerdb)."""
        if not records:
            return []
        chain_ids: dict[str, str | None] = {}

        def chain_of(layer_id: str, seen: tuple[str, ...] = ()) -> str | None:
            if layer_id in chain_ids:
                return chain_ids[layer_id]
            record = records.get(layer_id)
            result = None
            if record is not None and record.diff_digest and layer_id not in seen:
                if record.parent is None:
                    result = record.diff_digest
                else:
                    parent = chain_of(record.parent, (*seen, layer_id))
                    if parent is not None:
                        result = (
                            "sha256:" + hashlib.sha256(f"{parent} {record.diff_digest}".encode()).hexdigest()
                        )
            chain_ids[layer_id] = result
            return result

        out: dict[str, ImageLayer] = {}
        for layer_id in sorted(records):
            record = records[layer_id]
            chain_id = chain_of(layer_id)
            if chain_id is None:
                continue
            if chain_id in out:  # the same content stored twice: keep both, the second one marked
                self.warnings.append(f"layers {out[chain_id].layer_id} and {layer_id} hold the same content")
                chain_id = f"{chain_id}@{layer_id}"
            out[chain_id] = ImageLayer(
                chain_id=chain_id,
                diff_id=record.diff_digest,
                parent=chain_of(record.parent) if record.parent else None,
                layer_id=layer_id,
                size=record.compressed_size if record.compressed_size is not None else record.diff_size,
                tar_split=self.files.get(
                    b"overlay-layers/" + layer_id.encode("utf-8", "surrogateescape") + b".tar-split.gz"
                ),
            )
        return [out[k] for k in sorted(out)]

    # -- images ----------------------------------------------------------------------

    def _images(
        self,
        records: dict[str, _LayerRecord] | None,
        chains: dict[str, tuple[str, ...]],
        layer_ids: set[str],
        image_layers: list[ImageLayer],
    ) -> list[Image]:
        items = self._json_list(b"overlay-images/images.json", "images")
        if items is None:
            if b"overlay-images/images.json" not in self.files:
                self.warnings.append("overlay-images/images.json is missing; no images are known")
            return []
        diff_of = {il.layer_id: il.diff_id for il in image_layers}
        images = []
        for item in items:
            image_hex = clean_text(str(item["id"]))
            image_id = "sha256:" + image_hex
            problems: list[str] = []
            top = _hex_id(item.get("layer"))
            layers: tuple[str, ...] = ()
            if top is not None:
                below = _parents(records, top) if records is not None and top in records else None
                if below is None:
                    below = list(chains.get(top, ()))
                layers = tuple(reversed((top, *below)))
                gone = [layer for layer in layers if layer not in layer_ids]
                if gone:
                    problems.append(f"image {image_hex} names layer {gone[0]}, whose directory is gone")
            config_key = "sha256:" + image_hex
            config_path = (
                b"overlay-images/"
                + image_hex.encode("utf-8", "surrogateescape")
                + b"/"
                + big_data_name(config_key)
            )
            config_raw = self.files.get(config_path)
            created = item.get("created") if isinstance(item.get("created"), str) else None
            diff_ids: list[str] = []
            config_text = None
            if config_raw is None:
                problems.append(f"image {image_hex} has no config (big-data item {config_key})")
            else:
                config_text = config_raw.decode("utf-8", "surrogateescape")
                try:
                    config = json.loads(config_raw)
                    created = config.get("created") or created
                    diff_ids = [
                        d for d in (config.get("rootfs") or {}).get("diff_ids") or [] if isinstance(d, str)
                    ]
                except (ValueError, AttributeError):
                    problems.append(f"image config {image_hex} is not valid JSON")
            if diff_ids and layers and not problems:
                stored = [diff_of.get(layer) for layer in layers]
                if stored != diff_ids:
                    problems.append(
                        f"the layers of image {image_hex} do not carry the diff ids its config lists"
                    )
            names = item.get("names") or []
            images.append(
                Image(
                    id=image_id,
                    tags=tuple(sorted(clean_text(n) for n in names if isinstance(n, str)))
                    if isinstance(names, list)
                    else (),
                    created=created,
                    diff_ids=tuple(diff_ids),
                    layers=layers,
                    config_json=config_text,
                    problem="; ".join(problems) or None,
                )
            )
        return sorted(images, key=lambda i: i.id)

    # -- containers ------------------------------------------------------------------

    def _containers(
        self,
        records: dict[str, _LayerRecord] | None,
        chains: dict[str, tuple[str, ...]],
        problems: dict[str, str | None],
        layer_ids: set[str],
        images: list[Image],
        image_layers: list[ImageLayer],
    ) -> list[Container]:
        states, names, removed = self._libpod()
        if removed:
            self.warnings.append(
                f"libpod/bolt_state.db keeps the exit codes of {len(removed)} removed containers: "
                + ", ".join(removed)
            )
        items = None
        for name in (b"containers.json", b"volatile-containers.json"):
            found = self._json_list(b"overlay-containers/" + name, "containers")
            if found is not None:
                items = (items or []) + found
        if items is None and b"overlay-containers/containers.json" not in self.files:
            self.warnings.append(
                "overlay-containers/containers.json is missing; containers are found by structure only"
            )
        chain_id_of = {il.layer_id: il.chain_id for il in image_layers}
        image_layer_set = {layer for image in images for layer in image.layers}
        containers: list[Container] = []
        claimed: set[str] = set()
        for item in items or []:
            cid = clean_text(str(item["id"]))
            names_ = [n for n in item.get("names") or [] if isinstance(n, str)]
            upper = _hex_id(item.get("layer"))
            meta = _metadata(item.get("metadata"))
            problem = None
            if upper is None:
                problem = f"container {cid} has no layer in containers.json"
            else:
                claimed.add(upper)
            state = states.get(cid, _LibpodState())
            image_hex = _hex_id(item.get("image"))
            containers.append(
                self._container(
                    cid,
                    name=clean_text(names_[0]) if names_ else state.name or meta.get("name"),
                    image=state.image or meta.get("image-name"),
                    image_id="sha256:" + image_hex if image_hex else state.image_id,
                    created=item.get("created") if isinstance(item.get("created"), str) else state.created,
                    upper=upper,
                    state=state,
                    problem=problem,
                    records=records,
                    chains=chains,
                    problems=problems,
                    layer_ids=layer_ids,
                    chain_id_of=chain_id_of,
                )
            )
        # Structural fallback: a layer above others that no image uses and no record names.
        by_layer_name = {}
        for record in (records or {}).values():
            for layer_name in record.names:
                if layer_name.endswith("-layer"):
                    by_layer_name[record.id] = layer_name.removesuffix("-layer")
        for layer_id in sorted(layer_ids):
            if layer_id in claimed or layer_id in image_layer_set or _is_image_layer(records, layer_id):
                continue
            if not chains.get(layer_id) and problems.get(layer_id) is None:
                continue  # a bottom layer: no container sits directly on nothing
            if any(layer_id in chain for chain in chains.values()):
                continue  # something is stacked on it: an image layer whose records are gone
            name = by_layer_name.get(layer_id)
            cid = names.get(name, layer_id) if name else layer_id
            state = states.get(cid, _LibpodState())
            self.warnings.append(
                f"layer {layer_id} looks like a container layer that no container record names"
            )
            containers.append(
                self._container(
                    cid,
                    name=name or state.name,
                    image=state.image,
                    image_id=state.image_id,
                    created=state.created,
                    upper=layer_id,
                    state=state,
                    problem=f"container layer {layer_id} was found by structure only "
                    "(no containers.json record)",
                    records=records,
                    chains=chains,
                    problems=problems,
                    layer_ids=layer_ids,
                    chain_id_of=chain_id_of,
                )
            )
        return containers

    def _container(
        self,
        cid: str,
        *,
        name: str | None,
        image: str | None,
        image_id: str | None,
        created: str | None,
        upper: str | None,
        state: _LibpodState,
        problem: str | None,
        records: dict[str, _LayerRecord] | None,
        chains: dict[str, tuple[str, ...]],
        problems: dict[str, str | None],
        layer_ids: set[str],
        chain_id_of: dict[str | None, str],
    ) -> Container:
        chain: tuple[str, ...] = ()
        if upper and upper in layer_ids:
            chain = chains[upper]
            problem = problem or problems[upper]
        elif upper:
            problem = problem or f"container {cid} names layer {upper}, whose directory is gone"
        parent = None
        if upper and records is not None and upper in records:
            parent = records[upper].parent
        elif chain:
            parent = chain[0]
        return Container(
            id=cid,
            name=name,
            image=image,
            image_id=image_id,
            created=created,
            state=state.state,
            exit_code=state.exit_code,
            started_at=state.started_at,
            finished_at=state.finished_at,
            upper_layer=upper,
            init_layer=None,
            chain=chain,
            top_chain_id=chain_id_of.get(parent),
            mounts_json=state.mounts_json,
            labels_json=state.labels_json,
            config_json=state.config_json,
            problem=problem,
        )


# -- helpers ------------------------------------------------------------------------------


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _decode(raw: bytes) -> str:
    return clean_text(raw.decode("utf-8", "surrogateescape"))


def _metadata(value: object) -> dict[str, str]:
    """containers.json ``metadata``: a JSON string libpod writes (image-name, name, ...)."""
    if not isinstance(value, str):
        return {}
    try:
        data = json.loads(value)
    except ValueError:
        return {}
    return {k: clean_text(v) for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def _parents(records: dict[str, _LayerRecord] | None, layer_id: str) -> list[str] | None:
    """layers.json's parent chain of a layer, nearest first; None when a record is missing or loops."""
    if records is None:
        return None
    out: list[str] = []
    record = records.get(layer_id)
    if record is None:
        return None
    parent = record.parent
    while parent is not None:
        if parent in out or parent == layer_id:
            return None
        out.append(parent)
        above = records.get(parent)
        if above is None:
            return out  # the parent's own record is gone: what is known so far
        parent = above.parent
    return out


def _is_image_layer(records: dict[str, _LayerRecord] | None, layer_id: str) -> bool:
    """A layer containers/storage recorded with a diff digest (an image layer, used or not)."""
    record = (records or {}).get(layer_id)
    return record is not None and record.diff_digest is not None


def _libpod_state(config_raw: object, state_raw: object) -> _LibpodState:
    out = _LibpodState()
    if isinstance(config_raw, bytes):
        out.config_json = config_raw.decode("utf-8", "surrogateescape")
        try:
            config = json.loads(config_raw)
        except ValueError:
            config = None
        if isinstance(config, dict):
            out.name = config.get("name") if isinstance(config.get("name"), str) else None
            out.image = (
                config.get("rootfsImageName") if isinstance(config.get("rootfsImageName"), str) else None
            )
            image_hex = _hex_id(config.get("rootfsImageID"))
            out.image_id = "sha256:" + image_hex if image_hex else None
            out.created = _time(config.get("createdTime"))
            labels = config.get("labels")
            out.labels_json = json.dumps(labels if isinstance(labels, dict) else {}, sort_keys=True)
            out.mounts_json = json.dumps(_mount_points(config), sort_keys=True)
    if isinstance(state_raw, bytes):
        try:
            state = json.loads(state_raw)
        except ValueError:
            state = None
        if isinstance(state, dict):
            code = state.get("state")
            out.state = _LIBPOD_STATES.get(code) if isinstance(code, int) else None
            # libpod's ContainerState.ExitCode is `json:"exitCode,omitempty"`: absent means 0
            out.exit_code = _int(state.get("exitCode", 0))
            out.started_at = _time(state.get("startedTime"))
            out.finished_at = _time(state.get("finishedTime"))
    return out


def _mount_points(config: dict[str, object]) -> dict[str, dict[str, object]]:
    """Named volumes and bind mounts by destination (Docker's MountPoints shape)."""
    out: dict[str, dict[str, object]] = {}
    for volume in config.get("namedVolumes") or []:
        if isinstance(volume, dict) and isinstance(volume.get("dest"), str):
            out[volume["dest"]] = {
                "Type": "volume",
                "Name": volume.get("volumeName"),
                "Destination": volume["dest"],
                "Options": volume.get("options") or [],
            }
    spec = config.get("spec")
    mounts = spec.get("mounts") if isinstance(spec, dict) else None
    for mount in mounts or []:
        if (
            isinstance(mount, dict)
            and mount.get("type") == "bind"
            and isinstance(mount.get("destination"), str)
        ):
            out[mount["destination"]] = {
                "Type": "bind",
                "Source": mount.get("source"),
                "Destination": mount["destination"],
                "Options": mount.get("options") or [],
            }
    return out
