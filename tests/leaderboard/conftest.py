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


def attack_row(html: str, defense: str, attack: str = "pgd:max-average") -> str:
    """The cells of ``defense``'s row in the index table of ``attack`` (the worst-case headline table comes
    first, so a bare search for the defense would find its headline row)."""
    table = html.split(f'data-attack="{attack}"')[1].split("</table>")[0]
    return table.split(f'data-defense="{defense}"')[1].split("</tr>")[0]


def attack_rows(html: str) -> list[str]:
    """The entry rows of every per-attack table of the index (the worst-case headline table left out)."""
    tables = [t.split("</table>")[0] for t in html.split('<table class="leaderboard"')[1:]]
    return [r.split("</tr>")[0] for t in tables if 'data-attack="worst-case"' not in t.split(">")[0]
            for r in t.split('<tr class="entry"')[1:]]
