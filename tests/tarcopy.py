"""Copies of corpus tarballs with members dropped or replaced: damaged evidence for the engines.

Used by tests/test_podman.py and tests/test_containerd.py. The corpus itself is only read.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path


def rewrite_tar(
    archive: Path,
    dest: Path,
    root: str,
    *,
    drop: Callable[[str], bool] = lambda rel: False,
    replace: dict[str, bytes] | None = None,
) -> Path:
    """A copy of *archive* at *dest* (uncompressed PAX; sparse members expanded) in which the members
    below *root* (``"var/lib/containerd/"``) whose data-root path *drop* accepts are left out and
    those named in *replace* get new content."""
    replace = replace or {}
    with tarfile.open(archive, "r|gz") as src, tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as out:
        for member in src:
            name = member.name
            rel = name[len(root) :] if name.startswith(root) else None
            if rel is not None and drop(rel):
                continue
            data = src.extractfile(member) if member.isreg() else None
            if rel in replace:
                content = replace[rel]
                member.size = len(content)
                data = io.BytesIO(content)
            member.pax_headers = {
                k: v
                for k, v in member.pax_headers.items()
                if not k.startswith("GNU.sparse") and k not in ("path", "size", "linkpath")
            }
            out.addfile(member, data)
    return dest


def read_member(archive: Path, name: str) -> bytes:
    """The content of one regular member of a (compressed) tarball, read as a stream."""
    with tarfile.open(archive, "r|*") as src:
        for member in src:
            if member.name == name:
                handle = src.extractfile(member)
                assert handle is not None
                return handle.read()
    raise KeyError(f"no member {name} in {archive}")
