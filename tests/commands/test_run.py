"""`neokd-bench run` end to end on the bundled data: train, evaluate, one validated result with plots."""

from __future__ import annotations

import json

import pytest

from neokd_bench.cli import main
from neokd_bench.results import load_result


@pytest.mark.parametrize("defense", ["adv", "neokd"])
def test_run_writes_one_valid_result(defense, tmp_path, capsys):
    out = tmp_path / defense
    rc = main(["run", "--defense", defense, "--dataset", "fashion-mnist", "--preset", "smoke", "--epochs", "1",
               "--train-limit", "256", "--batch-size", "64", "--set", "steps=2", "--test-limit", "100",
               "--eval-steps", "3", "--quiet", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "exit 1" in printed and "pgd:max-average" in printed  # the per-exit table
    res = load_result(out / "result.json")  # validates against the schema
    assert res["defense"]["name"] == defense
    assert res["model"]["num_exits"] == 3 and len(res["model"]["flops_per_exit"]) == 3
    anytime = res["evaluation"]["anytime"]
    assert len(anytime["clean"]["top1"]["per_exit"]) == 3
    assert set(anytime["adversarial"]) == {"pgd:max-average", "pgd:average"}
    assert res["training"]["config"]["epochs"] == 1 and res["seeds"]["train"] == 0
    assert res["provenance"]["torch"]
    assert (out / "checkpoint.pt").exists()
    assert (out / "result.budgeted.png").stat().st_size > 0 and (out / "result.budgeted.svg").exists()
    if res["evaluation"]["transfer"]["n"] > 0:  # one short epoch may leave no sample right at every exit
        assert (out / "result.transfer.png").stat().st_size > 0
    json.dumps(res)  # plain JSON
