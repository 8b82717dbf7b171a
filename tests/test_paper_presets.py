"""Every paper preset runs end to end (`run --preset paper`: load, train, evaluate, write a valid result) from its
real on-disk format, on a tiny synthetic copy written here (``neokd_bench.data.synthetic``): one short epoch on
``--train-limit`` images, PGD-1 training, PGD-1 evaluation on a few test images. The preset's model, schedule,
threat model and protocol are otherwise the paper's; imagenet starts from weights in MSDNet-PyTorch's format and
its validation index file, as the preset requires."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from neokd_bench.cli import main
from neokd_bench.data import synthetic
from neokd_bench.presets import TRAIN_PRESETS
from neokd_bench.results import load_result

from tests.test_init_weights import official_layout

# dataset -> (writer, val size, train limit, batch size, test limit)
CASES = {
    "cifar10": (lambda r: synthetic.write_cifar(r, n_train=150, n_test=40), 50, 32, 16, 16),
    "cifar100": (lambda r: synthetic.write_cifar(r, hundred=True, n_train=150, n_test=40), 50, 32, 16, 16),
    # 5 exits: at least 6 classes, so that NEO-KD's exit-wise orthogonal soft labels are not all one-hot
    "tiny-imagenet": (lambda r: synthetic.write_tiny_imagenet(r, classes=10, per_class=16, n_val=40), 40, 32, 16, 16),
    "imagenet": (lambda r: synthetic.write_imagenet(r, classes=6, per_class=8, val_per_class=2), 12, 4, 4, 4),
    "mnist": (lambda r: synthetic.write_mnist(r, n_train=300, n_test=60), 60, 64, 32, 32),
}


def test_every_paper_preset_has_a_case():
    assert {d for d, tag in TRAIN_PRESETS if tag == "paper" and d != "fashion-mnist"} == set(CASES)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", [pytest.param(d, marks=pytest.mark.timeout(1800)) if d == "imagenet" else d
                                     for d in sorted(CASES)])  # the 224 px MSDNet is heavy on a CPU
def test_paper_preset_runs_end_to_end_from_its_real_format(dataset, tmp_path, monkeypatch):
    write, val_size, train_limit, batch, test_limit = CASES[dataset]
    # The preset as it stands, with the reference protocol's per-exit attacks and policy-pgd curve at token
    # budgets: what is under test is the data format and the run end to end, not the attacks' strength (tested in
    # tests/attacks), which at 5,000 Square queries per exit would take hours on a 224 px MSDNet on a CPU.
    key = (dataset, "paper")
    preset = TRAIN_PRESETS[key]
    light = dataclasses.replace(preset.eval, apgd_steps=2, square_queries=5, policy_budgets=1)
    monkeypatch.setitem(TRAIN_PRESETS, key, dataclasses.replace(preset, eval=light))
    root = tmp_path / "data"
    write(root)
    extra = []
    if dataset == "imagenet":
        official = official_layout(classes=6, trainable=True)
        torch.save({"epoch": 89, "arch": "msdnet", "state_dict": official}, tmp_path / "init.pth")
        torch.save(torch.randperm(48, generator=torch.Generator().manual_seed(0)), tmp_path / "index.pth")
        extra = ["--init", str(tmp_path / "init.pth"), "--val-index", str(tmp_path / "index.pth")]
    out = tmp_path / "run"
    rc = main(["run", "--defense", "neokd", "--dataset", dataset, "--preset", "paper", "--epochs", "1",
               "--train-limit", str(train_limit), "--batch-size", str(batch), "--set", "steps=1",
               "--val-size", str(val_size), "--test-limit", str(test_limit), "--eval-steps", "1",
               "--metrics", "anytime,budgeted", "--data-root", str(root), "--device", "cpu", "--quiet", "--out",
               str(out), *extra])
    assert rc == 0
    res = load_result(out / "result.json")
    assert res["dataset"]["name"] == dataset and res["dataset"]["source"].startswith("folder:")
    assert res["training"]["preset"]["name"] == f"{dataset}.paper"
    assert res["evaluation"]["anytime"]["n"] == test_limit
    assert len(res["evaluation"]["anytime"]["clean"]["top1"]["per_exit"]) == res["model"]["num_exits"]
    assert res["evaluation"]["budgeted"]["n_val"] > 0
    if dataset == "imagenet":
        assert res["training"]["init"]["format"] == "msdnet-pytorch"
        assert "index file" in res["dataset"]["val_from"]
