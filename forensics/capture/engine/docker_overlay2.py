"""Docker's classic ``overlay2`` graph driver layout (``/var/lib/docker``).

Layers: ``overlay2/<cache-id>/{diff,link,lower,committed,work,merged}`` and
``overlay2/l/<short> -> ../<cache-id>/diff``. Images and containers:
``image/overlay2/{layerdb,imagedb,repositories.json}`` and
``containers/<id>/{config.v2.json,hostconfig.json}``. The layout facts are
documented in the docker-a corpus README.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable

from forensics.capture.engine.base import Discovered, Gathered
from forensics.capture.engine.lowerchain import layer_record, resolve_lower, scan_layer_dirs
from forensics.capture.sources import NOTE, READ, SKIP, WALK, Action, Visit
from forensics.model import Container, Image, ImageLayer, Kind, Layer, LayerRole

_HEX64 = re.compile(rb"^[0-9a-f]{64}$")
_LAYER_DIR = re.compile(rb"^[0-9a-f]{64}(-init)?$")
_LAYER_FILES = {b"link", b"lower", b"committed"}
_CONTAINER_FILES = {b"config.v2.json", b"hostconfig.json", b"hostname", b"hosts", b"resolv.conf"}
_ZERO_TIME = "0001-01-01T00:00:00Z"


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "surrogateescape").strip()


class DockerOverlay2:
    name = "docker-overlay2"

    def detect(self, exists: Callable[[bytes], bool]) -> str | None:
        if exists(b"overlay2"):
            return None
        return "it has no overlay2/ directory"

    def find_root(self, member: bytes) -> bytes | None:
        parts = member.rstrip(b"/").split(b"/")
        for index in range(len(parts) - 1):
            here, below = parts[index], parts[index + 1]
            if here == b"overlay2" and (below == b"l" or _LAYER_DIR.match(below)):
                if index >= 1 and parts[index - 1] == b"image":
                    continue
                return b"/".join(parts[:index])
            if here == b"image" and below == b"overlay2":
                return b"/".join(parts[:index])
            if (
                here == b"containers"
                and _HEX64.match(below)
                and index + 2 < len(parts)
                and parts[index + 2] == b"config.v2.json"
            ):
                return b"/".join(parts[:index])
        return None

    def classify(self, rel: bytes, kind: Kind) -> Visit:
        parts = rel.split(b"/")
        top = parts[0]
        depth = len(parts)
        if top == b"overlay2":
            return self._classify_overlay2(rel, parts, depth, kind)
        if top == b"image":
            if depth >= 2 and parts[1] != b"overlay2":
                return SKIP
            return WALK if kind is Kind.DIR else READ
        if top == b"containers":
            if depth <= 2:
                return WALK if kind is Kind.DIR else SKIP
            if depth == 3 and parts[2] in _CONTAINER_FILES:
                return READ
            return SKIP
        return SKIP

    def _classify_overlay2(self, rel: bytes, parts: list[bytes], depth: int, kind: Kind) -> Visit:
        if depth == 1:
            return WALK
        layer = parts[1]
        if layer == b"l":
            return WALK if depth == 2 else READ
        if depth == 2:
            return WALK if kind is Kind.DIR else NOTE
        part = parts[2]
        layer_id = layer.decode("utf-8", "surrogateescape")
        if part == b"diff":
            inner = b"/" + b"/".join(parts[3:]) if depth > 3 else b"/"
            return Visit(Action.ENTRY, layer_id, inner)
        if depth == 3 and part in _LAYER_FILES:
            return READ
        return NOTE if depth == 3 else SKIP

    # -- after the walk ---------------------------------------------------------

    def discover(self, gathered: Gathered) -> Discovered:
        files = gathered.files
        warnings: list[str] = []

        dirs = scan_layer_dirs(b"overlay2", gathered.layer_roots, [*files, *gathered.noted], gathered.noted)
        layer_ids, links, link_map = dirs.layer_ids, dirs.links, dirs.link_map

        image_layers = self._image_layers(files, warnings)
        cache_ids = {il.layer_id for il in image_layers if il.layer_id}
        containers = self._containers(files, gathered, layer_ids, warnings)

        layers: list[Layer] = []
        chains: dict[str, tuple[str, ...]] = {}
        problems: dict[str, str | None] = {}
        for layer_id in sorted(layer_ids):
            base = b"overlay2/" + layer_id.encode("utf-8", "surrogateescape")
            lower = _text(files.get(base + b"/lower"))
            chain = resolve_lower(layer_id, lower, link_map, layer_ids)
            chains[layer_id] = chain.layers
            problems[layer_id] = chain.problem
            if layer_id not in gathered.layer_roots:
                problems[layer_id] = f"layer {layer_id} has no diff/ directory"

        referenced = set(cache_ids)
        for chain in chains.values():
            referenced.update(chain)
        container_layers = {c.upper_layer for c in containers if c.upper_layer}
        init_layers = {c.init_layer for c in containers if c.init_layer}
        for layer_id in sorted(layer_ids):
            if layer_id in container_layers:
                role = LayerRole.CONTAINER
            elif layer_id in init_layers or layer_id.endswith("-init"):
                role = LayerRole.INIT
            elif layer_id in referenced:
                role = LayerRole.IMAGE
            else:
                role = LayerRole.ORPHAN
            layers.append(
                layer_record(
                    b"overlay2",
                    layer_id,
                    role,
                    files,
                    gathered.noted,
                    gathered.layer_roots,
                    chains[layer_id],
                    problems[layer_id],
                )
            )

        # A container's chain is its upper layer's lower file, cross-checked with layerdb.
        resolved: list[Container] = []
        by_chain = {il.chain_id: il for il in image_layers}
        for container in containers:
            problem = container.problem
            chain: tuple[str, ...] = ()
            upper = container.upper_layer
            if upper and upper in layer_ids:
                chain = chains[upper]
                problem = problem or problems[upper]
                expected = self._expected_chain(container, by_chain)
                if expected is not None and problem is None and chain != expected:
                    problem = (
                        f"lower file of layer {upper} lists other layers than layerdb records "
                        f"for container {container.id}"
                    )
            elif upper:
                problem = problem or f"container {container.id} names layer {upper}, which does not exist"
            resolved.append(_replace_container(container, chain=chain, problem=problem))

        images = self._images(files, by_chain, warnings)
        return Discovered(layers, image_layers, images, resolved, links, warnings)

    @staticmethod
    def _expected_chain(container: Container, by_chain: dict[str, ImageLayer]) -> tuple[str, ...] | None:
        """init layer + image layers top to bottom, as layerdb records them."""
        parent = container.top_chain_id
        out: list[str] = []
        if container.init_layer:
            out.append(container.init_layer)
        seen: set[str] = set()
        while parent:
            if parent in seen:
                return None
            seen.add(parent)
            record = by_chain.get(parent)
            if record is None or record.layer_id is None:
                return None
            out.append(record.layer_id)
            parent = record.parent
        return tuple(out)

    def _image_layers(self, files: dict[bytes, bytes], warnings: list[str]) -> list[ImageLayer]:
        prefix = b"image/overlay2/layerdb/sha256/"
        chain_dirs: dict[bytes, dict[bytes, bytes]] = {}
        for path, content in files.items():
            if path.startswith(prefix):
                rest = path[len(prefix) :].split(b"/")
                if len(rest) == 2:
                    chain_dirs.setdefault(rest[0], {})[rest[1]] = content
        out = []
        for chain_hex, parts in sorted(chain_dirs.items()):
            size_text = _text(parts.get(b"size"))
            out.append(
                ImageLayer(
                    chain_id="sha256:" + chain_hex.decode("ascii", "replace"),
                    diff_id=_text(parts.get(b"diff")),
                    parent=_text(parts.get(b"parent")) or None,
                    layer_id=_text(parts.get(b"cache-id")),
                    size=int(size_text) if size_text and size_text.isdigit() else None,
                    tar_split=parts.get(b"tar-split.json.gz"),
                )
            )
        return out

    def _images(
        self, files: dict[bytes, bytes], by_chain: dict[str, ImageLayer], warnings: list[str]
    ) -> list[Image]:
        tags: dict[str, list[str]] = {}
        repositories = files.get(b"image/overlay2/repositories.json")
        if repositories is not None:
            try:
                for repo in json.loads(repositories).get("Repositories", {}).values():
                    for tag, image_id in repo.items():
                        tags.setdefault(image_id, []).append(tag)
            except (ValueError, AttributeError):
                warnings.append("image/overlay2/repositories.json is not valid JSON; image tags are unknown")
        prefix = b"image/overlay2/imagedb/content/sha256/"
        images = []
        for path, content in sorted(files.items()):
            if not path.startswith(prefix) or b"/" in path[len(prefix) :]:
                continue
            image_id = "sha256:" + path[len(prefix) :].decode("ascii", "replace")
            parent = _text(
                files.get(b"image/overlay2/imagedb/metadata/sha256/" + path[len(prefix) :] + b"/parent")
            )
            problem = None
            created = None
            diff_ids: list[str] = []
            try:
                config = json.loads(content)
                created = config.get("created")
                diff_ids = list(config.get("rootfs", {}).get("diff_ids") or [])
            except (ValueError, AttributeError):
                problem = f"image config {image_id} is not valid JSON"
            layers: list[str] = []
            chain_id = None
            for diff_id in diff_ids:
                chain_id = diff_id if chain_id is None else _chain_id(chain_id, diff_id)
                record = by_chain.get(chain_id)
                if record is None or record.layer_id is None:
                    problem = (
                        problem or f"image {image_id} names layer {chain_id}, which layerdb does not hold"
                    )
                    break
                layers.append(record.layer_id)
            images.append(
                Image(
                    id=image_id,
                    tags=tuple(sorted(tags.get(image_id, ()))),
                    created=created,
                    parent=parent or None,
                    diff_ids=tuple(diff_ids),
                    layers=tuple(layers),
                    config_json=content.decode("utf-8", "surrogateescape"),
                    problem=problem,
                )
            )
        return images

    def _containers(
        self, files: dict[bytes, bytes], gathered: Gathered, layer_ids: set[str], warnings: list[str]
    ) -> list[Container]:
        mounts: dict[str, dict[bytes, bytes]] = {}
        prefix = b"image/overlay2/layerdb/mounts/"
        for path, content in files.items():
            if path.startswith(prefix):
                rest = path[len(prefix) :].split(b"/")
                if len(rest) == 2:
                    mounts.setdefault(rest[0].decode("utf-8", "surrogateescape"), {})[rest[1]] = content
        configs: dict[str, dict[bytes, bytes]] = {}
        for path, content in files.items():
            parts = path.split(b"/")
            if len(parts) == 3 and parts[0] == b"containers":
                configs.setdefault(parts[1].decode("utf-8", "surrogateescape"), {})[parts[2]] = content
        for path in gathered.noted:
            parts = path.split(b"/")
            if len(parts) == 2 and parts[0] == b"containers" and _HEX64.match(parts[1]):
                configs.setdefault(parts[1].decode(), {})

        containers = []
        claimed: set[str] = set()
        for container_id in sorted(set(mounts) | set(configs)):
            record = mounts.get(container_id, {})
            files_of = configs.get(container_id, {})
            problems = []
            upper = _text(record.get(b"mount-id"))
            init = _text(record.get(b"init-id"))
            parent = _text(record.get(b"parent"))
            if container_id not in mounts:
                problems.append(f"container {container_id} has no layerdb/mounts record")
            elif not upper:
                problems.append(f"container {container_id} has no mount-id")
            if upper:
                claimed.add(upper)
                init = init or (upper + "-init" if upper + "-init" in layer_ids else None)
            if init:
                claimed.add(init)
            fields = _parse_config(files_of.get(b"config.v2.json"), container_id, problems)
            hostconfig = files_of.get(b"hostconfig.json")
            containers.append(
                Container(
                    id=container_id,
                    upper_layer=upper or None,
                    init_layer=init,
                    hostconfig_json=None
                    if hostconfig is None
                    else hostconfig.decode("utf-8", "surrogateescape"),
                    problem="; ".join(problems) or None,
                    top_chain_id=parent or None,
                    **fields,
                )
            )
        # Structural fallback: a layer with an -init sibling that no record claims.
        for layer_id in sorted(layer_ids):
            if layer_id.endswith("-init") or layer_id in claimed or layer_id + "-init" not in layer_ids:
                continue
            warnings.append(f"layer {layer_id} looks like a container layer that no container record names")
            containers.append(
                Container(
                    id=layer_id,
                    upper_layer=layer_id,
                    init_layer=layer_id + "-init",
                    problem=f"container layer {layer_id} was found by structure only (no engine record)",
                )
            )
        return containers


def _chain_id(parent: str, diff_id: str) -> str:
    return "sha256:" + hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()


def _parse_config(raw: bytes | None, container_id: str, problems: list[str]) -> dict[str, object]:
    if raw is None:
        problems.append(f"container {container_id} has no config.v2.json")
        return {}
    text = raw.decode("utf-8", "surrogateescape")
    try:
        config = json.loads(text)
        state = config.get("State") or {}
        inner = config.get("Config") or {}
    except (ValueError, AttributeError):
        problems.append(f"config.v2.json of container {container_id} is not valid JSON")
        return {"config_json": text}
    started = state.get("StartedAt")
    if state.get("Running"):
        status = "paused" if state.get("Paused") else "running"
    elif state.get("Restarting"):
        status = "restarting"
    elif state.get("Dead"):
        status = "dead"
    elif started in (None, "", _ZERO_TIME):
        status = "created"
    else:
        status = "exited"
    name = config.get("Name")
    return {
        "name": name.lstrip("/") if isinstance(name, str) else None,
        "image": inner.get("Image"),
        "image_id": config.get("Image"),
        "created": config.get("Created"),
        "state": status,
        "exit_code": state.get("ExitCode"),
        "started_at": None if started == _ZERO_TIME else started,
        "finished_at": None if state.get("FinishedAt") == _ZERO_TIME else state.get("FinishedAt"),
        "mounts_json": json.dumps(config.get("MountPoints") or {}, sort_keys=True),
        "labels_json": json.dumps(inner.get("Labels") or {}, sort_keys=True),
        "config_json": text,
    }


def _replace_container(container: Container, **changes: object) -> Container:
    from dataclasses import replace

    return replace(container, **changes)
