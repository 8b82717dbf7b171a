"""`neokd-bench check`: the gate passes a run like the reference, fails a 3-point drop at one exit, passes a
fresh smoke run with another training seed, and fails an attack cut to one step."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from neokd_bench.cli import main
from neokd_bench.leaderboard.aggregate import load_results, make_entries
from neokd_bench.leaderboard.gate import defense_rows

from .conftest import ROOT, write_json

GATE = ROOT / "leaderboard" / "gate" / "attack-gate.json"


def _typical_run(reference: Path, defense: str = "adv") -> tuple[dict, dict]:
    """A reference file of ``defense`` whose per-exit numbers are set to the reference means, and the entry."""
    entry = next(e for e in make_entries(load_results([reference])) if e["defense"] == defense)
    doc = copy.deepcopy(entry["_runs"][0])
    acc = entry["accuracy"]
    doc["evaluation"]["anytime"]["clean"]["top1"]["per_exit"] = [c["mean"] for c in acc["clean"]["per_exit"]]
    for label, e in doc["evaluation"]["anytime"]["adversarial"].items():
        e["top1"]["mean"] = [c["mean"] for c in acc[label]["per_exit"]]
        e["top1"]["per_seed"] = [e["top1"]["mean"]]
    return doc, entry


def test_a_run_at_the_reference_passes_and_three_points_lower_at_one_exit_fails(reference_copy, tmp_path, capsys):
    doc, entry = _typical_run(reference_copy)
    ok = write_json(tmp_path / "typical.json", doc)
    assert main(["check", str(ok), "--against", str(reference_copy)]) == 0
    out = capsys.readouterr().out
    assert "rule:" in out and "gate: passed" in out and "REGRESSION" not in out

    rows = defense_rows(doc, entry)
    target = min((r for r in rows if r["what"] != "clean"), key=lambda r: r["tolerance"])
    assert target["tolerance"] < 0.03  # the gate resolves a 3-point drop at this exit
    bad = copy.deepcopy(doc)
    bad["evaluation"]["anytime"]["adversarial"][target["what"]]["top1"]["mean"][target["exit"] - 1] -= 0.03
    path = write_json(tmp_path / "doctored.json", bad)
    assert main(["check", str(path), "--against", str(reference_copy)]) == 1
    out = capsys.readouterr().out
    assert f"regression: adv {target['what']} exit {target['exit']} fell 3.00 points" in out
    assert out.count("REGRESSION") == 1 and "gate: FAILED" in out


def test_a_result_without_reference_is_a_usage_error(reference_copy, tmp_path, capsys):
    doc, _ = _typical_run(reference_copy)
    doc["defense"]["name"] = "unheard-of"
    path = write_json(tmp_path / "x.json", doc)
    assert main(["check", str(path), "--against", str(reference_copy)]) == 2
    assert "no reference for dataset fashion-mnist, preset smoke" in capsys.readouterr().err


@pytest.mark.slow
def test_a_fresh_smoke_run_with_another_training_seed_passes(reference_copy, tmp_path):
    """CI trains the run once and passes it in $NEOKD_SMOKE_RESULT; alone, the test trains it (minutes)."""
    result = os.environ.get("NEOKD_SMOKE_RESULT")
    if not result:
        out = tmp_path / "adv-s3"
        proc = subprocess.run([sys.executable, "-m", "neokd_bench.cli", "run", "--defense", "adv", "--dataset",
                               "fashion-mnist", "--preset", "smoke", "--seed", "3", "--out", str(out), "--quiet"],
                              cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        result = str(out / "result.json")
    seeds = {json.loads(p.read_text())["seeds"]["train"] for p in reference_copy.glob("adv-*.json")}
    assert json.loads(Path(result).read_text())["seeds"]["train"] not in seeds
    proc = subprocess.run([sys.executable, "-m", "neokd_bench.cli", "check", result, "--against", str(reference_copy)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0 and "gate: passed" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.slow
def test_the_attack_gate_passes_as_committed_and_fails_an_attack_cut_to_one_step(capsys):
    assert main(["check", "--attack-gate", str(GATE)]) == 0
    out = capsys.readouterr().out
    assert "gate: passed" in out and "ATTACK WEAKER" not in out
    assert main(["check", "--attack-gate", str(GATE), "--set", "steps=1"]) == 1
    out = capsys.readouterr().out
    assert "ATTACK WEAKER" in out and "gate: FAILED" in out
    assert "attack regression: pgd:max-average is weaker at exit" in out
