"""A second host from one data root: the same images and containers under new local names.

Two hosts that pulled the same images share the content (image ids, chain ids,
diff ids, every layer's files) but none of the names a host makes up for
itself: overlay2 cache ids, ``l/`` link names, container ids and mount ids.
:func:`second_host` copies a Docker ``overlay2`` data root and renames all of
those, consistently, the way a second host would have them:

- every ``overlay2/<cache-id>`` directory (``-init`` layers follow their
  container layer), its ``link`` file and ``l/`` symlink, every ``lower`` file;
- every layerdb reference: ``layerdb/sha256/*/cache-id``,
  ``layerdb/mounts/<container-id>/{mount-id,init-id}``;
- every container id: ``containers/<id>/`` (and its ``<id>-json.log``),
  ``layerdb/mounts/<id>/``, and the id inside ``config.v2.json`` (and the
  12-character hostname in it and in ``hostname``/``hosts``);
- the same ids inside the daemon's bolt databases (``*.db``), replaced byte for
  byte (ids keep their length, so the files stay valid).

Content-addressed records (image configs, layerdb chain directories,
``diff``/``parent``/``size``/``tar-split.json.gz``) are left alone. Needs root
(``cp -a`` keeps owners, devices, whiteouts and ``trusted.*`` xattrs).

The helpers below then change one host the way a test needs it:
:func:`add_upper_file`, :func:`edit_layer_file` (same size, mtime restored),
:func:`remove_container`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

_HEX = set("0123456789abcdef")


def _is_id(name: str) -> bool:
    return len(name) == 64 and set(name) <= _HEX


def _new_id(seed: str, old: str) -> str:
    return hashlib.sha256(f"{seed}:{old}".encode()).hexdigest()


def _new_link(seed: str, old: str) -> str:
    digest = hashlib.sha256(f"{seed}:link:{old}".encode()).digest()
    return base64.b32encode(digest).decode()[:26]


@dataclass
class Host:
    """A data root and the renaming that made it (old name -> new name)."""

    root: Path
    layers: dict[str, str] = field(default_factory=dict)  # cache ids, -init ones included
    links: dict[str, str] = field(default_factory=dict)  # l/ short names
    containers: dict[str, str] = field(default_factory=dict)  # container ids

    def container_id(self, name: str) -> str:
        """The container id of *name* in this data root."""
        for config in (self.root / "containers").glob("*/config.v2.json"):
            if json.loads(config.read_bytes()).get("Name") == "/" + name:
                return config.parent.name
        raise KeyError(f"no container {name!r} in {self.root}")

    def mount_id(self, name: str) -> str:
        cid = self.container_id(name)
        return (self.root / "image/overlay2/layerdb/mounts" / cid / "mount-id").read_text().strip()

    def upper(self, name: str) -> Path:
        return self.root / "overlay2" / self.mount_id(name) / "diff"

    def image_layer(self, chain_id: str) -> Path:
        """The ``diff/`` directory of the image layer with this chain id."""
        chain = chain_id.removeprefix("sha256:")
        cache = (self.root / "image/overlay2/layerdb/sha256" / chain / "cache-id").read_text().strip()
        return self.root / "overlay2" / cache / "diff"


def second_host(source: Path, dest: Path, seed: str = "host-b") -> Host:
    """Copy the data root *source* to *dest* and rename every host-local id (see the module text)."""
    subprocess.run(["cp", "-a", str(source), str(dest)], check=True)
    host = Host(dest)
    overlay2 = dest / "overlay2"
    layer_dirs = sorted(p.name for p in overlay2.iterdir() if p.name != "l")
    for name in layer_dirs:
        base = name.removesuffix("-init")
        if _is_id(base):
            host.layers[name] = _new_id(seed, base) + ("-init" if name.endswith("-init") else "")
    for name in layer_dirs:
        link_file = overlay2 / name / "link"
        if link_file.is_file():
            old = link_file.read_text().strip()
            host.links[old] = _new_link(seed, old)
    mounts = dest / "image/overlay2/layerdb/mounts"
    for path in sorted(mounts.iterdir()) if mounts.is_dir() else []:
        if _is_id(path.name):
            host.containers[path.name] = _new_id(seed, path.name)
    containers = dest / "containers"
    for path in sorted(containers.iterdir()) if containers.is_dir() else []:
        if _is_id(path.name):
            host.containers.setdefault(path.name, _new_id(seed, path.name))

    # overlay2: link, lower, l/ symlinks, the layer directories themselves
    for name in layer_dirs:
        layer = overlay2 / name
        _rewrite(layer / "link", lambda text: host.links.get(text.strip(), text.strip()))
        _rewrite(
            layer / "lower",
            lambda text: ":".join(
                "l/" + host.links.get(part.removeprefix("l/"), part.removeprefix("l/"))
                for part in text.strip().split(":")
            ),
        )
    links_dir = overlay2 / "l"
    for old, new in host.links.items():
        target = os.readlink(links_dir / old)
        layer = target.removeprefix("../").removesuffix("/diff")
        (links_dir / old).unlink()
        os.symlink(f"../{host.layers.get(layer, layer)}/diff", links_dir / new)
    for old, new in host.layers.items():
        (overlay2 / old).rename(overlay2 / new)

    # layerdb: cache ids of image layers, mount and init ids of containers
    for cache_id in (dest / "image/overlay2/layerdb/sha256").glob("*/cache-id"):
        _rewrite(cache_id, lambda text: host.layers.get(text.strip(), text.strip()))
    for old, new in host.containers.items():
        record = mounts / old
        if record.is_dir():
            for name in ("mount-id", "init-id"):
                _rewrite(record / name, lambda text: host.layers.get(text.strip(), text.strip()))
            record.rename(mounts / new)

    # containers/<id>: the directory, its log file, the id inside its files
    for old, new in host.containers.items():
        cdir = containers / old
        if not cdir.is_dir():
            continue
        for name in ("config.v2.json", "hostconfig.json", "hostname", "hosts"):
            _rewrite(cdir / name, lambda text, o=old, n=new: text.replace(o, n).replace(o[:12], n[:12]))
        log = cdir / f"{old}-json.log"
        if log.exists():
            log.rename(cdir / f"{new}-json.log")
        cdir.rename(containers / new)

    # the daemon's bolt databases name containers and layers too (same length: a byte-for-byte swap)
    swaps = [(o.encode(), n.encode()) for o, n in (*host.containers.items(), *host.layers.items())]
    for db in dest.rglob("*.db"):
        if db.is_file() and not db.is_symlink() and "/overlay2/" not in str(db.relative_to(dest)):
            data = original = db.read_bytes()
            for o, n in swaps:
                data = data.replace(o, n)
            if data != original:
                _write_keeping_times(db, data)
    return host


def _rewrite(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    """Replace a small metadata file's text, keeping its mode, owner and times."""
    if not path.is_file():
        return
    text = path.read_text()
    new = change(text)
    if new != text:
        _write_keeping_times(path, new.encode())


def _write_keeping_times(path: Path, data: bytes) -> None:
    st = path.lstat()
    with open(path, "r+b") as handle:
        handle.write(data)
        handle.truncate()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


# -- what a test then does to one host -----------------------------------------------------


def add_upper_file(host: Host, container: str, path: str, data: bytes, mode: int = 0o644) -> Path:
    """Write a new file into a container's upperdir, keeping the parent directory's times."""
    target = host.upper(container) / path.lstrip("/")
    parent = target.parent
    st = parent.lstat()
    target.write_bytes(data)
    target.chmod(mode)
    os.utime(parent, ns=(st.st_atime_ns, st.st_mtime_ns))
    return target


def edit_layer_file(host: Host, chain_id: str, path: str) -> tuple[bytes, bytes]:
    """A same-size edit of a file inside an image layer, with its mtime put back (only ctime tells).

    Returns (old content, new content).
    """
    target = host.image_layer(chain_id) / path.lstrip("/")
    st = target.lstat()
    old = target.read_bytes()
    assert old, f"{path} is empty: a same-size edit needs a byte to change"
    new = bytes([old[0] ^ 0x20]) + old[1:]
    _write_keeping_times(target, new)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    return old, new


def remove_container(host: Host, container: str) -> str:
    """Remove a container as `docker rm` does: its layerdb record, its directory, its two layers and links."""
    cid = host.container_id(container)
    record = host.root / "image/overlay2/layerdb/mounts" / cid
    mount_id = (record / "mount-id").read_text().strip()
    overlay2 = host.root / "overlay2"
    for layer in (mount_id, mount_id + "-init"):
        link = overlay2 / layer / "link"
        if link.is_file():
            (overlay2 / "l" / link.read_text().strip()).unlink(missing_ok=True)
        shutil.rmtree(overlay2 / layer)
    shutil.rmtree(record)
    shutil.rmtree(host.root / "containers" / cid)
    return cid


# -- the issue-4 scenario: one corpus, two hosts, three differences ------------------------

B0_CHAIN = "sha256:71c7e7b8b27440d533fa443a038bed1981bae2f30b48179381db033917e39448"  # docker-a base layer
ADDED_CONTAINER = "a-web"
ADDED_PATH = "/srv/data/drift-added.txt"
EDITED_PATH = "/etc/os-release"
REMOVED_CONTAINER = "a-batch"


@dataclass(frozen=True)
class TwoHosts:
    """Snapshots of the docker-a corpus as host A and as a second host B.

    ``a``: the corpus; ``a_again``: the same tree collected a second time;
    ``b_same``: host B (every local name changed, nothing else); ``b``: host B
    after the three changes: a file added to a-web's upperdir, a same-size edit
    of ``/etc/os-release`` in the shared base layer with its mtime put back,
    and a-batch removed.
    """

    a: Path
    a_again: Path
    b_same: Path
    b: Path
    host_b: Host


def two_hosts(corpus: Path, workdir: Path) -> TwoHosts:
    """Build and collect the scenario under *workdir* (about two seconds)."""
    from forensics import api

    def collect(source: Path, name: str) -> Path:
        out = workdir / name
        api.collect(str(source), str(out), force=True)
        return out

    a = collect(corpus, "host-a.o2f")
    a_again = collect(corpus, "host-a-again.o2f")
    host_b = second_host(corpus, workdir / "host-b")
    b_same = collect(host_b.root, "host-b-same.o2f")
    add_upper_file(host_b, ADDED_CONTAINER, ADDED_PATH, b"written on host B\n")
    edit_layer_file(host_b, B0_CHAIN, EDITED_PATH)
    remove_container(host_b, REMOVED_CONTAINER)
    b = collect(host_b.root, "host-b.o2f")
    return TwoHosts(a, a_again, b_same, b, host_b)


__all__ = [
    "B0_CHAIN",
    "Host",
    "TwoHosts",
    "add_upper_file",
    "edit_layer_file",
    "remove_container",
    "second_host",
    "two_hosts",
]
