"""`evaluate` end to end on real data, the result it makes, and the eval/compare commands."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from neokd_bench.evaluation import describe_model, evaluate, parse_attack_list
from neokd_bench.presets import EvalProtocol
from neokd_bench.results import make_result, validate_result

PROTO = EvalProtocol(attacks=("max-average",), steps=2, attack_seeds=(0, 1), test_limit=64, transfer_limit=16,
                     budget_allocations=10)


@pytest.fixture(scope="module")
def evaluation(clean_smallcnn, fmnist):
    model, _, _ = clean_smallcnn
    return evaluate(model, fmnist, dataset_key="fashion-mnist", protocol=PROTO, device="cpu", progress=False,
                    batch_size=32)


def test_evaluation_section_is_a_valid_result(evaluation, clean_smallcnn, fmnist):
    model, _, _ = clean_smallcnn
    doc = make_result(model=describe_model(model, "smallcnn", {}), dataset=fmnist.describe(), defense=None,
                      training=None, evaluation=evaluation, seeds={"attack": [0, 1]}, timings={"eval_s": 1.0})
    validate_result(doc)
    json.dumps(doc, allow_nan=False)
    assert set(evaluation["wall_s"]) >= {"clean_s", "attacks_s", "budgeted_s", "transfer_s", "total_s"}


def test_anytime_numbers(evaluation, clean_smallcnn):
    model, x, y = clean_smallcnn
    with torch.no_grad():
        ref = [lg.argmax(1).eq(y[:64]).float().mean().item() for lg in model(x[:64])]
    assert evaluation["anytime"]["n"] == 64
    assert evaluation["anytime"]["clean"]["top1"]["per_exit"] == pytest.approx(ref)
    adv = evaluation["anytime"]["adversarial"]["pgd:max-average"]
    assert adv["seeds"] == [0, 1] and len(adv["top1"]["per_seed"]) == 2 and adv["top5"] is not None
    assert adv["top1"]["avg"]["mean"] < evaluation["anytime"]["clean"]["top1"]["avg"]
    att = evaluation["attacks"]["pgd:max-average"]
    assert att["config"]["eps"] == pytest.approx(0.1) and att["config"]["steps"] == 2
    assert att["model_mode"] == "eval" and att["seeds"] == [0, 1]


def test_budgeted_section(evaluation, clean_smallcnn):
    from neokd_bench.flops import exit_flops

    model, _, _ = clean_smallcnn
    b = evaluation["budgeted"]
    assert b["thresholds_on"] == "clean" and b["ensemble"] is True
    assert b["exit_mflops"] == pytest.approx(np.array(exit_flops(model)) / 1e6)
    assert set(b["curves"]) == {"clean", "pgd:max-average"}
    for c in b["curves"].values():
        assert len(c["mflops"]) == len(c["accuracy"]) == len(b["allocations"]) <= 10
        assert min(c["mflops"]) >= b["exit_mflops"][0] - 1e-9 and max(c["mflops"]) <= b["exit_mflops"][-1] + 1e-9


def test_transfer_section(evaluation):
    t = evaluation["transfer"]
    assert 0 < t["n"] <= 16 and len(t["matrix"]) == 3 and t["seed"] == 0
    assert t["attack"]["config"]["steps"] == 2


def test_thresholds_on_adversarial_validation_data(clean_smallcnn, fmnist):
    model, _, _ = clean_smallcnn
    ev = evaluate(model, fmnist, dataset_key="fashion-mnist", protocol=PROTO, device="cpu", progress=False,
                  metrics=("budgeted",), thresholds_on="adversarial",
                  attacks=[{"name": "pgd", "objective": "average", "seeds": [5]}])
    b = ev["budgeted"]
    assert b["thresholds_on"] == "adversarial"
    entry = b["curves"]["pgd:average"]["per_seed"][0]
    assert entry["seed"] == 5 and len(entry["thresholds"]) == len(b["allocations"])
    assert entry["thresholds"] != b["thresholds"]  # set on attacked, not clean, validation data
    assert "transfer" not in ev


def test_parse_attack_list():
    assert parse_attack_list("pgd:max-average, pgd:exit:0,cw") == [
        {"name": "pgd", "objective": "max-average"}, {"name": "pgd", "objective": "exit:0"}, {"name": "cw"}]


def test_eval_and_compare_commands(trained_checkpoint, tmp_path, capsys):
    from neokd_bench.cli import main

    out = tmp_path / "a.json"
    rc = main(["eval", str(trained_checkpoint), "--seeds", "0", "--steps", "1", "--test-limit", "32",
               "--transfer-limit", "8", "--attacks", "pgd:average", "--quiet", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    validate_result(doc)
    assert doc["kind"] == "eval" and doc["defense"]["name"] == "adv"
    assert (tmp_path / "a.budgeted.png").exists() and (tmp_path / "a.budgeted.svg").exists()
    assert "exit 1" in capsys.readouterr().out
    shutil.copy(out, tmp_path / "b.json")
    rc = main(["compare", str(out), str(tmp_path / "b.json"), "--plot", str(tmp_path / "cmp.png")])
    text = capsys.readouterr().out
    assert rc == 0 and "0.00% saved" in text and "MFLOPs" in text
    assert (tmp_path / "cmp.png").exists() and (tmp_path / "cmp.svg").exists()


def test_compare_rejects_bad_input_with_one_line(tmp_path, capsys):
    from neokd_bench.cli import main

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema_version": "7"}))
    assert main(["compare", str(bad), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "schema_version" in err and "'7'" in err
    assert main(["compare", str(tmp_path / "missing.json"), str(bad)]) == 2


@pytest.mark.parametrize("dataset", sorted(__import__("neokd_bench.presets", fromlist=["THREAT"]).THREAT))
def test_cw_gets_the_dataset_pgd_step_size(dataset):
    """CW's step size is the dataset's PGD step size (presets.THREAT), not a fixed 2/255."""
    from neokd_bench.evaluation import resolve_attacks
    from neokd_bench.presets import THREAT

    (cw,) = resolve_attacks([{"name": "cw"}], dataset_key=dataset, protocol=EvalProtocol())
    config = cw.build(0).describe()["config"]
    assert config["step_size"] == pytest.approx(THREAT[dataset].step_size)
    assert config["eps"] == pytest.approx(THREAT[dataset].eps)
