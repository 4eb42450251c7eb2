"""The kernel is the oracle: random layer stacks, changed through real overlay mounts, rebuilt offline.

Each example builds a Docker data root (image layers written as Docker
extracts them, including whiteouts and opaque directories), runs a random
sequence of operations inside a container through a real kernel overlay
mount, unmounts, collects a snapshot, and then compares o2f's offline merged
view entry by entry with what the kernel shows when it mounts the same layers
read-only.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forensics import api
from tests import layerlang as ll
from tests.conftest import needs_root
from tests.kernel_oracle import (
    BASE,
    FIXED_SCENARIO,
    IMAGE_STEPS,
    kernel_view,
    o2f_view,
    op_strategy,
    run_op,
    scoped_report_equals_full_report,
)

pytestmark = needs_root


def _compare(root: Path, tmp: Path, image_step: str, ops: list) -> None:  # type: ignore[type-arg]
    def run(merged: Path) -> None:
        for op in ops:
            run_op(merged, op)

    data_root = ll.make_data_root(
        root, images={"app:1": [BASE, IMAGE_STEPS[image_step]]}, containers={"c": ("app:1", None, run)}
    )
    record = data_root.containers["c"]
    snapshot = tmp / "snap.o2f"
    api.collect(str(root), str(snapshot), force=True)
    lower = (root / "overlay2" / record.mount_id / "lower").read_text()
    kernel = kernel_view(root, record.mount_id, lower)
    mine = o2f_view(snapshot, "c")
    scoped_report_equals_full_report(snapshot)
    assert set(mine) == set(kernel), {
        "only o2f": sorted(set(mine) - set(kernel)),
        "only kernel": sorted(set(kernel) - set(mine)),
    }
    for path in sorted(kernel):
        assert mine[path] == kernel[path], (path, ops)


@settings(
    max_examples=int(os.environ.get("O2F_KERNEL_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(image_step=st.sampled_from(sorted(IMAGE_STEPS)), ops=st.lists(op_strategy, min_size=1, max_size=12))
def test_offline_view_equals_kernel_view(
    tmp_path_factory: pytest.TempPathFactory, image_step: str, ops: list
) -> None:  # type: ignore[type-arg]
    tmp = tmp_path_factory.mktemp("kdiff")
    _compare(tmp / "docker", tmp, image_step, ops)


@pytest.mark.parametrize("image_step", sorted(IMAGE_STEPS))
def test_every_image_step_with_a_fixed_scenario(tmp_path: Path, image_step: str) -> None:
    """Each image-level marker under the same container scenario (a deterministic floor under hypothesis)."""
    ops = FIXED_SCENARIO
    _compare(tmp_path / "docker", tmp_path, image_step, ops)
