"""`scripts/lead.py`: the lead of one defense over another, per measure, with Welch intervals over seeds."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CPU = ROOT / "leaderboard" / "results" / "fashion-mnist-cpu"
SMOKE = ROOT / "leaderboard" / "results" / "fashion-mnist-smoke" / "adv-s0.json"


@pytest.fixture(scope="module")
def lead():
    spec = importlib.util.spec_from_file_location("lead", ROOT / "scripts" / "lead.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_paper_protocol_lead_matches_the_per_seed_numbers(lead, capsys):
    files = sorted(str(p) for p in CPU.glob("*-s*.json"))
    assert lead.main([*files, "--a", "neokd", "--b", "adv"]) == 0
    out = capsys.readouterr().out
    per = {d: [json.loads((CPU / f"{d}-s{s}.json").read_text())["evaluation"]["anytime"]["adversarial"]
               ["pgd:max-average"]["top1"]["avg"]["mean"] for s in range(5)] for d in ("neokd", "adv")}
    diff = 100 * (sum(per["neokd"]) - sum(per["adv"])) / 5
    row = next(line for line in out.splitlines() if line.startswith("pgd:max-average, mean"))
    assert f"{diff:+.2f}" in row


def test_worst_case_rows_and_a_tie_where_the_interval_spans_zero(lead):
    base = json.loads(SMOKE.read_text())["evaluation"]
    a, b = [copy.deepcopy(base) for _ in range(2)], [copy.deepcopy(base) for _ in range(2)]
    for e, shift in zip(a + b, (0.02, -0.01, 0.0, 0.0)):  # A: +2 and -1 points at exit 1 of the worst case
        e["anytime"]["worst_case"]["top1"]["mean"][0] += shift
    table = {d["label"]: d for d in lead.lead(a, b)}
    row = table["worst case, exit 1"]
    assert row["diff"] == pytest.approx(0.5) and row["ci"][0] < 0 < row["ci"][1]
    assert lead.verdict(row, "a", "b") == "tie"
    assert "policy-pgd, budget 50" in table and "square:exit:2 (first 500), exit 3" in table
