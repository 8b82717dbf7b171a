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


def test_a_defense_name_cannot_put_the_run_folder_outside_the_working_folder(tmp_path, monkeypatch, capsys):
    """`--defense 'adv./../../../escaped'`: the default run folder is built from the
    resolved name only, so it stays under ./runs/ (or the name is refused in one line)."""
    work = tmp_path / "a" / "b" / "c" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    rc = main(["run", "--defense", "adv./../../../escaped", "--dataset", "fashion-mnist", "--preset", "smoke",
               "--epochs", "1", "--train-limit", "64", "--batch-size", "64", "--set", "steps=1", "--no-eval",
               "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    outside = [p for p in tmp_path.rglob("*") if work not in (p, *p.parents) and p not in work.parents]
    assert outside == [], outside
    if rc == 0:
        assert sorted(p.name for p in (work / "runs").iterdir()) == ["adv-fashion-mnist-smoke-s0"]
    else:
        assert rc == 2 and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("defense", ["../x", "a/b", "..", ""])
def test_run_folder_refuses_names_that_are_not_one_component(defense):
    from neokd_bench.commands.run import run_folder
    from neokd_bench.errors import UsageError

    with pytest.raises(UsageError, match="pass --out DIR"):
        run_folder(defense, "fashion-mnist", "smoke", 0)
    assert run_folder("adv", "fashion-mnist", "smoke", 3).as_posix() == "runs/adv-fashion-mnist-smoke-s3"
