"""Fixtures for the leaderboard tests: the committed reference results, copied so a test may edit them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "leaderboard" / "results" / "fashion-mnist-smoke"


def reference_files() -> list[Path]:
    return sorted(p for p in REFERENCE.glob("*.json") if p.name != "summary.json")


@pytest.fixture
def one_result() -> dict:
    """A real committed result (the first reference file), as a fresh dict."""
    return json.loads(reference_files()[0].read_text())


@pytest.fixture
def reference_copy(tmp_path) -> Path:
    """The committed reference result files, copied into a temporary folder."""
    dest = tmp_path / "reference"
    dest.mkdir()
    for p in reference_files():
        shutil.copy(p, dest / p.name)
    return dest


def write_json(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    return path
