"""Storage layouts o2f understands, one module each, behind the Engine protocol."""

from __future__ import annotations

from forensics.capture.engine.base import Discovered, Engine, Gathered
from forensics.capture.engine.containers_storage import ContainersStorage
from forensics.capture.engine.docker_overlay2 import DockerOverlay2


def all_engines() -> list[Engine]:
    """Every layout, in the order detection tries them."""
    return [DockerOverlay2(), ContainersStorage()]


__all__ = ["ContainersStorage", "Discovered", "DockerOverlay2", "Engine", "Gathered", "all_engines"]
