"""The one interface between a storage layout and everything else.

An engine knows where a layout keeps layers and metadata. It classifies paths
for the source, and afterwards turns what was read into layout-neutral
records (layers with resolved chains, images, containers). Merge, diff and
report code only ever sees those records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from forensics.capture.sources import Noted, Visit
from forensics.model import Container, Image, ImageLayer, Kind, Layer, MetadataFile


@dataclass
class Gathered:
    """What the walk saw besides layer entries, for the engine to interpret."""

    files: dict[bytes, bytes] = field(default_factory=dict)  # metadata path -> content
    noted: dict[bytes, Noted] = field(default_factory=dict)
    layer_roots: set[str] = field(default_factory=set)  # layers whose diff/ root was seen

    def add_file(self, item: MetadataFile) -> None:
        self.files[item.path] = item.content

    def add_noted(self, item: Noted) -> None:
        self.noted[item.path] = item


@dataclass
class Discovered:
    """An engine's layout-neutral account of a data root."""

    layers: list[Layer]
    image_layers: list[ImageLayer]
    images: list[Image]
    containers: list[Container]
    links: list[tuple[str, bytes, str | None]]  # (short name, raw target, layer id)
    warnings: list[str] = field(default_factory=list)


class Engine(Protocol):
    name: str  # stored in snapshot.layout, e.g. "docker-overlay2"

    def detect(self, exists: Callable[[bytes], bool]) -> str | None:
        """None when this layout is present under the root; else why not."""
        ...

    def find_root(self, member: bytes) -> bytes | None:
        """For a tar member path, the data-root prefix its shape reveals (b"" for the top)."""
        ...

    def classify(self, rel: bytes, kind: Kind) -> Visit: ...

    def discover(self, gathered: Gathered) -> Discovered: ...
