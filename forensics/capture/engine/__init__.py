"""Storage layouts o2f understands, one module each, behind the Engine protocol."""

from __future__ import annotations

from forensics.capture.engine.base import Discovered, Engine, Gathered
from forensics.capture.engine.containerd import Containerd
from forensics.capture.engine.containers_storage import ContainersStorage
from forensics.capture.engine.docker_overlay2 import DockerOverlay2


def all_engines() -> list[Engine]:
    """Every layout, in the order detection tries them.

    Docker's overlay2 comes first: a Docker 20.10 data root also holds an unused containerd tree
    (``containerd/daemon/``), which the containerd layout never takes for its own (see
    :meth:`Containerd.find_root`).
    """
    return [DockerOverlay2(), ContainersStorage(), Containerd()]


__all__ = [
    "Containerd",
    "ContainersStorage",
    "Discovered",
    "DockerOverlay2",
    "Engine",
    "Gathered",
    "all_engines",
]
