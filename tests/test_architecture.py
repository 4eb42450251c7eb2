"""The package's shape is a contract: tiers import downwards, third-party libraries stay in place."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    """import-linter contracts in pyproject.toml (a broken tier fails CI)."""
    command = shutil.which("lint-imports") or sys.executable.replace("python", "lint-imports")
    result = subprocess.run([command], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout


def test_overlay_core_has_no_io_imports() -> None:
    """The overlay package is pure: it imports only the model and the standard library's pure parts."""
    for module in (REPO / "forensics" / "overlay").glob("*.py"):
        text = module.read_text()
        for banned in (
            "import os",
            "import sqlite3",
            "from forensics.store",
            "from forensics.capture",
            "open(",
        ):
            assert banned not in text, f"{module.name} uses {banned!r}"
