"""A real-engine corpus collected once per session per source (its tar, its extracted directory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from forensics import api
from forensics.analyze.containers import Analysis


class SessionSnapshots:
    """Snapshots and analyses of one corpus, made once and shared by every test of a session."""

    def __init__(self, label: str, mounts: Path) -> None:
        self.label = label
        self.mounts = mounts
        self.snapshots: dict[str, tuple[Path, tuple[str, ...]]] = {}
        self.analyses: dict[str, Analysis] = {}

    def collect_once(self, key: str, source: Path, factory: pytest.TempPathFactory) -> Path:
        if key not in self.snapshots:
            out = factory.mktemp(f"{self.label}-{key}") / f"{key}.o2f"
            result = api.collect(str(source), str(out), force=True, mounts_file=str(self.mounts))
            self.snapshots[key] = (out, result.warnings)
        return self.snapshots[key][0]

    def warnings(self, key: str) -> tuple[str, ...]:
        return self.snapshots[key][1]

    def analysis(self, key: str, snapshot: Path) -> Analysis:
        """The analysis of a collected snapshot; it must open without a warning."""
        if key not in self.analyses:
            analysis, warnings = api.open_analysis(str(snapshot))
            assert warnings == []
            self.analyses[key] = analysis
        return self.analyses[key]
