"""Shared fixtures: the real-engine corpora, extracted once per session, never modified."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
if not SHARED.is_dir():  # CI lays shared/ beside the clone
    SHARED = Path(os.environ.get("O2F_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
CORPORA = SHARED / "corpora"
DOCKER_A = CORPORA / "docker-a"
DOCKER_A_TAR = DOCKER_A / "data-root.tar.gz"
PODMAN_A = CORPORA / "podman-a"
PODMAN_A_TAR = PODMAN_A / "data-root.tar.gz"
CONTAINERD_A = CORPORA / "containerd-a"
CONTAINERD_A_TAR = CONTAINERD_A / "data-root.tar.gz"
REPO = Path(__file__).resolve().parents[1]
SAMPLE_TAR = REPO / "samples" / "docker-sample.tar.gz"

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not IS_ROOT, reason="needs root (device nodes, trusted.* xattrs, overlay mounts)"
)
needs_corpus = pytest.mark.skipif(not DOCKER_A_TAR.exists(), reason=f"corpus not found at {DOCKER_A}")
needs_podman_corpus = pytest.mark.skipif(not PODMAN_A_TAR.exists(), reason=f"corpus not found at {PODMAN_A}")
needs_containerd_corpus = pytest.mark.skipif(
    not CONTAINERD_A_TAR.exists(), reason=f"corpus not found at {CONTAINERD_A}"
)


def extract_tar(archive: Path, dest: Path) -> None:
    """GNU tar as root, keeping xattrs, owners, devices and whiteouts exactly."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "tar",
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "-p",
            "-xf",
            str(archive),
            "-C",
            str(dest),
        ],
        check=True,
    )


def _extracted(factory: pytest.TempPathFactory, archive: Path, root: str) -> Path:
    """A corpus tar extracted once into a session directory; *root* is its member prefix."""
    if not archive.exists():
        pytest.skip(f"corpus not found at {archive.parent}")
    if not IS_ROOT:
        pytest.skip("extracting the corpus needs root (device nodes, trusted.* xattrs)")
    dest = factory.mktemp(archive.parent.name)
    extract_tar(archive, dest)
    return dest / root


@pytest.fixture(scope="session")
def docker_a_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An extracted copy of the docker-a data root (read-only use: tests must not modify it)."""
    return _extracted(tmp_path_factory, DOCKER_A_TAR, "var/lib/docker")


@pytest.fixture(scope="session")
def podman_a_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An extracted copy of the podman-a graph root (tar members var/lib/containers/storage/...).

    Read-only use: tests must not modify it.
    """
    return _extracted(tmp_path_factory, PODMAN_A_TAR, "var/lib/containers/storage")


@pytest.fixture(scope="session")
def containerd_a_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An extracted copy of the containerd-a root (tar members var/lib/containerd/...).

    Read-only use: tests must not modify it.
    """
    return _extracted(tmp_path_factory, CONTAINERD_A_TAR, "var/lib/containerd")


@pytest.fixture()
def docker_a_copy(docker_a_root: Path, tmp_path: Path) -> Path:
    """A private, modifiable copy of the docker-a data root."""
    dest = tmp_path / "docker"
    subprocess.run(["cp", "-a", str(docker_a_root), str(dest)], check=True)
    return dest


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SAMPLE_TAR.exists():
        pytest.skip("samples/docker-sample.tar.gz is missing")
    if not IS_ROOT:
        pytest.skip("extracting the sample needs root")
    dest = tmp_path_factory.mktemp("sample")
    extract_tar(SAMPLE_TAR, dest)
    return dest / "var" / "lib" / "docker"


def copy_tree(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True)
    return dest
