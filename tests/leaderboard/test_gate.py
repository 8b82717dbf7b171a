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
from neokd_bench.leaderboard.aggregate import WORST, load_results, make_entries
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
    if WORST in acc:
        doc = _with_worst_case(doc, [c["mean"] for c in acc[WORST]["per_exit"]])
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


def _with_worst_case(doc: dict, per_exit: list[float]) -> dict:
    doc = copy.deepcopy(doc)
    avg = sum(per_exit) / len(per_exit)
    doc["evaluation"]["anytime"]["worst_case"] = {
        "seeds": [0], "n": doc["evaluation"]["anytime"]["n"], "parts": [],
        "top1": {"mean": per_exit, "std": [0.0] * len(per_exit), "per_seed": [per_exit],
                 "avg": {"mean": avg, "std": 0.0, "per_seed": [avg]}}}
    return doc


def test_the_worst_case_is_gated_once_per_exit_and_a_drop_at_one_exit_fails(reference_copy, tmp_path, capsys):
    doc, entry = _typical_run(reference_copy)
    L = doc["model"]["num_exits"]
    assert WORST in entry["accuracy"]  # the committed references record it
    ok = write_json(tmp_path / "typical.json", doc)
    assert main(["check", str(ok), "--against", str(reference_copy)]) == 0
    table = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [row[1] for row in table if row and row[0] == WORST] == [str(k + 1) for k in range(L)]  # once each

    worst = next(r for r in defense_rows(doc, entry) if r["what"] == WORST and r["exit"] == L)
    bad = _with_worst_case(doc, [r["mean"] for r in entry["accuracy"][WORST]["per_exit"][:-1]]
                           + [worst["reference"] - worst["tolerance"] - 0.01])
    assert main(["check", str(write_json(tmp_path / "bad.json", bad)), "--against", str(reference_copy)]) == 1
    out = capsys.readouterr().out
    assert f"regression: adv {WORST} exit {L} fell" in out and out.count("REGRESSION") == 1


@pytest.mark.parametrize("side", ["reference", "fresh"])
def test_a_side_without_the_worst_case_is_said_in_one_line(reference_copy, tmp_path, capsys, side):
    doc, _ = _typical_run(reference_copy)
    if side == "reference":
        for p in reference_copy.glob("*.json"):
            ref = json.loads(p.read_text())
            del ref["evaluation"]["anytime"]["worst_case"]
            write_json(p, ref)
    else:
        del doc["evaluation"]["anytime"]["worst_case"]
    fresh = write_json(tmp_path / "fresh.json", doc)
    assert main(["check", str(fresh), "--against", str(reference_copy)]) == 0
    out = capsys.readouterr().out
    said = "the reference of adv records no worst case" if side == "reference" else "this result records no worst"
    assert sum(said in line for line in out.splitlines()) == 1
    assert not any(line.split()[:1] == [WORST] for line in out.splitlines())


def test_attack_gate_rows_compare_the_worst_case():
    from neokd_bench.leaderboard.gate import attack_rows

    ref = {"n": 200, "adversarial": {"pgd:max-average": [0.4, 0.4]}, "worst_case": [0.3, 0.3]}
    now = {"n": 200, "adversarial": {"pgd:max-average": [0.4, 0.4]}, "worst_case": [0.3, 0.33]}
    rows = attack_rows(ref, now)
    assert [(r["what"], r["verdict"]) for r in rows][-2:] == [("worst-case", "ok"), ("worst-case", "ATTACK WEAKER")]
    assert all(r["what"] != "worst-case" for r in attack_rows({k: v for k, v in ref.items() if k != "worst_case"},
                                                               now))
