"""`neokd-bench eval --metrics efficiency,calibration` end to end: the result is schema
version 2 with the efficiency field in the shape the leaderboard reads, and bad input is one line."""

from __future__ import annotations

import json

import pytest
from neokd_bench.cli import main
from neokd_bench.results import SCHEMA_VERSION, validate_result
from neokd_bench.utils import file_sha256


def test_eval_efficiency_and_calibration(trained_checkpoint, tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["eval", str(trained_checkpoint), "--metrics", "efficiency,calibration", "--steps", "2",
               "--seeds", "0,1", "--test-limit", "64", "--val-limit", "64", "--policy-budgets", "2", "--quiet",
               "--device", "cpu", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert doc["schema_version"] == SCHEMA_VERSION == "3"
    validate_result(doc)
    eff = doc["evaluation"]["efficiency"]
    L = doc["model"]["num_exits"]
    assert eff["policy"] == "max-softmax" and isinstance(eff["budget_index"], int)
    for key in ("clean", "slowdown", "pgd:max-average"):
        assert isinstance(eff[key]["mflops_mean"], float) and len(eff[key]["exit_histogram"]) == L
        assert sum(eff[key]["exit_histogram"]) == pytest.approx(1.0)
    for key in ("slowdown", "pgd:max-average"):
        assert eff[key]["factor"] == pytest.approx(eff[key]["mflops_mean"] / eff["clean"]["mflops_mean"], rel=1e-9)
        assert [e["seed"] for e in eff[key]["per_seed"]] == [0, 1]
    assert set(eff["policies"]) >= {"max-softmax", "entropy", "patience"}
    assert eff["policies"]["max-softmax"]["thresholds"] == eff["thresholds"]
    pp = eff["policy-pgd"]
    assert len(pp["budget_index"]) == 2 and pp["budget_index"][0] == 0
    assert len(pp["accuracy"]) == len(pp["max_average_accuracy"]) == 2
    cal = doc["evaluation"]["calibration"]
    assert len(cal["clean"]["ece"]) == L and "pgd:max-average" in cal["adversarial"]
    assert (tmp_path / "r.reliability.png").is_file()
    assert doc["training"]["checkpoint_sha256"] == file_sha256(trained_checkpoint)


def test_policy_pgd_at_every_budget_of_a_coarse_curve(trained_checkpoint, tmp_path, capsys):
    """``--policy-budgets all`` attacks every allocation of the curve (here a 5-allocation one)."""
    out = tmp_path / "r.json"
    rc = main(["eval", str(trained_checkpoint), "--metrics", "efficiency", "--steps", "1", "--seeds", "0",
               "--test-limit", "32", "--val-limit", "32", "--budget-allocations", "5", "--policy-budgets", "all",
               "--quiet", "--no-plots", "--device", "cpu", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    validate_result(doc)
    assert doc["evaluation"]["protocol"]["policy_budgets"] == "all"
    pp = doc["evaluation"]["efficiency"]["policy-pgd"]
    assert pp["budget_index"] == [0, 1, 2, 3, 4] and len(pp["gap"]) == len(pp["thresholds"]) == 5


def test_v1_and_v2_results_stay_valid():
    """Schema 3 added per-sample outcomes; a file written by an earlier version still validates. The schema-1
    file is the smoke reference adv seed 0 as the project committed it before outcomes were recorded."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    files = [root / "tests" / "fixtures" / "result-schema1-adv-smoke-s0.json",
             *(f for folder in ("results", "efficiency", "gate") for f in sorted((root / "leaderboard" / folder)
                                                                               .rglob("*-s*.json")))]
    docs = [json.loads(f.read_text()) for f in files]
    assert {d["schema_version"] for d in docs} == {"1", "2", "3"}
    for doc in docs:
        validate_result(doc)


@pytest.mark.parametrize("argv, needle", [
    (["--policy", "max-sofmax"], "unknown policy 'max-sofmax'"),
    (["--metrics", "efficency"], "unknown metric 'efficency'"),
    (["--budget-index", "-1"], "--budget-index must be in 0..99, got -1"),
    (["--budget-index", "100"], "--budget-index must be in 0..99, got 100"),
    (["--policy-budgets", "0"], "--policy-budgets must be at least 1 or 'all', got '0'"),
    (["--policy-budgets", "every"], "--policy-budgets must be at least 1 or 'all', got 'every'"),
    (["--budget-allocations", "1"], "--budget-allocations must be at least 2, got 1"),
    (["--budget-allocations", "10", "--budget-index", "10"], "--budget-index must be in 0..9, got 10"),
])
def test_bad_efficiency_arguments(argv, needle, tmp_path, capsys):
    rc = main(["eval", str(tmp_path / "none.pt")] + argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err, err
