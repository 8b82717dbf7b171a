"""Contract tests run on EVERY registered defense: a 3-exit SmallCNN and a real Fashion-MNIST batch."""

from __future__ import annotations

import dataclasses
import json

import neokd_bench as nb
import pytest
import torch
from neokd_bench.defenses.base import check_parts
from neokd_bench.errors import UsageError
from neokd_bench.registry import DEFENSES as DEFENSES_REGISTRY

DEFENSES = nb.list_defenses()
# TEAT's temporal-ensemble term starts at epoch 90 by default; start it at once so its path is exercised.
EXTRA = {"pgd-te": {"te_start_epoch": 1}, "trades-te": {"te_start_epoch": 1}}


@pytest.fixture(scope="module")
def batch(fmnist):
    xs, ys = zip(*(fmnist.train[i] for i in range(12)))
    return torch.stack(xs), torch.tensor(ys), torch.arange(12)


def make(name: str, **kw):
    d = nb.create_defense(name, steps=2, **{**EXTRA.get(name, {}), **kw})
    d.setup(dataset="fashion-mnist", num_exits=3, num_classes=10, seed=0)
    d.start_epoch(0)
    return d


def test_core_defenses_registered():
    expected = {
        "adv",
        "skd",
        "ard",
        "lw",
        "pgd-te",
        "trades-te",
        "neokd",
        "nkd",
        "eokd",
        "nkd-no-ensemble",
        "nkd-ensemble-all",
        "skd-exit0",
        "skd-exit1",
        "skd-exit2",
        "skd-ensemble",
        "ard-exit0",
        "ard-exit1",
        "ard-exit2",
        "ard-ensemble",
    }
    assert expected <= set(DEFENSES)


@pytest.mark.parametrize("name", DEFENSES)
def test_training_step_contract(name, batch):
    x, y, idx = batch
    torch.manual_seed(0)
    model = nb.create_model("smallcnn").train()
    d = make(name)
    loss, parts, x_adv = d.training_step(model, x, y, index=idx)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert model.training, "training_step must leave a train-mode model in train mode"
    assert all(m.training for m in model.modules())
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters the loss never reaches: {missing}"
    assert any(float(p.grad.abs().sum()) > 0 for p in model.parameters())
    eps = d.config.eps
    assert x_adv.shape == x.shape
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert not x_adv.requires_grad
    for k, v in parts.items():
        assert isinstance(k, str) and v.dim() == 0 and not v.requires_grad and torch.isfinite(v)
    check_parts(d, parts)  # no part takes a name the trainer's log reserves ("loss", ...)


def test_the_guides_defense_is_covered():
    """``my-defense`` is the defense of submissions/README.md, run from the guide's own code blocks and
    registered through entry points by the test-only distribution in tests/plugin_dist."""
    assert "my-defense" in DEFENSES
    assert DEFENSES_REGISTRY.entry("my-defense").source == "neokd-test-plugins"


@pytest.mark.parametrize("name", DEFENSES)
def test_describe_is_json_and_resolved(name):
    d = make(name)
    desc = json.loads(json.dumps(d.describe()))
    assert desc["name"] == name
    assert desc["source"] and isinstance(desc["assumptions"], list) and desc["assumptions"]
    cfg = desc["config"]
    assert cfg["eps"] == pytest.approx(0.1) and cfg["step_size"] == pytest.approx(0.025)
    assert cfg["steps"] == 2 and cfg["attack_mode"] == "eval"
    assert all(v is not None for k, v in cfg.items() if k not in ("attack_amp",)), cfg
    json.dumps(nb.create_defense(name).describe())  # also before setup


@pytest.mark.parametrize("name", DEFENSES)
def test_config_is_frozen_with_paper_defaults(name):
    d = nb.create_defense(name)
    assert d.config.steps == 7 and d.config.attack_mode == "eval" and d.config.attack_amp is None
    assert d.config.attack_fold_bn is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.config.steps = 3  # type: ignore[misc]


@pytest.mark.parametrize("name", DEFENSES)
@pytest.mark.parametrize(
    "kw",
    [
        {"no_such_option": 1},
        {"eps": -0.1},
        {"train_attack": "maximum"},
        {"steps": 0},
        {"attack_mode": "test"},
        {"attack_fold_bn": "yes"},
    ],
)
def test_bad_config_is_a_usage_error(name, kw):
    with pytest.raises(UsageError) as exc:
        nb.create_defense(name, **kw)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("name", DEFENSES)
def test_eval_mode_is_restored_by_adversarial(name, batch):
    x, y, idx = batch
    model = nb.create_model("smallcnn").train()
    model.exit1.train(False)  # a mixed state must come back exactly
    d = make(name)
    d.adversarial(model, x, y, index=idx)
    assert model.training and not model.exit1.training and model.exit2.training


@pytest.mark.parametrize("name", ["adv", "pgd-te"])
def test_attack_fold_bn_reaches_the_training_attack(name, batch):
    """``attack_fold_bn`` (default on) folds BatchNorm for an eval-mode training attack (PGD or TEAT's own);
    not in train mode. The model keeps its BatchNorm, weights and mode; the examples stay in the ball."""
    x, y, idx = batch
    model = nb.create_model("msdnet_cifar10", num_classes=10, input_size=(1, 28, 28), mean=[0.0], std=[1.0])
    model.train()
    d = make(name)  # folding is the default for training attacks
    if name == "adv":
        assert d.attack().config.fold_bn == "cpu"  # folds on a CPU; a GPU attacks the model itself
        assert make(name, attack_mode="train").attack().config.fold_bn is False
        assert make(name, attack_fold_bn=False).attack().config.fold_bn is False
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x_adv = d.adversarial(model, x, y, index=idx)
    assert model.training and float((x_adv - x).abs().max()) <= d.config.eps + 1e-6
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_teat_attacks_with_the_shared_pgd(batch):
    """Before its ensemble starts, PGD-TE's attack loss is the cross-entropy, and its attack (the shared PGD
    with a per-exit loss) makes exactly the examples of plain adversarial training's attack."""
    x, y, idx = batch
    model = nb.create_model("smallcnn").train()
    for objective in ("average", "max-average"):
        te = make("pgd-te", te_start_epoch=90, train_attack=objective)
        adv = make("adv", train_attack=objective)
        torch.manual_seed(3)
        a = te.adversarial(model, x, y, index=idx)
        torch.manual_seed(3)
        b = adv.adversarial(model, x, y)
        assert torch.equal(a, b)


def test_training_attack_is_reproducible_from_the_global_seed(batch):
    x, y, _idx = batch
    model = nb.create_model("smallcnn")
    d = make("adv")
    torch.manual_seed(3)
    a = d.adversarial(model, x, y)
    torch.manual_seed(3)
    b = d.adversarial(model, x, y)
    torch.manual_seed(4)
    c = d.adversarial(model, x, y)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_train_attack_exit_out_of_range_is_a_usage_error():
    d = nb.create_defense("adv", train_attack="exit:3")
    with pytest.raises(UsageError):
        d.setup(dataset="fashion-mnist", num_exits=3, num_classes=10, seed=0)


def test_alpha_negative_and_gamma_length():
    with pytest.raises(UsageError):
        nb.create_defense("neokd", alpha=-1)
    d = nb.create_defense("neokd", gamma=[1, 1])
    with pytest.raises(UsageError):
        d.setup(dataset="cifar10", num_exits=3, num_classes=10, seed=0)


def test_gamma_resolves_from_presets():
    d = nb.create_defense("neokd")
    d.setup(dataset="cifar100", num_exits=7, num_classes=100, seed=0)
    assert d.config.gamma == (1, 1, 1, 1.5, 1.5, 1.5, 1.5)
    assert d.config.eps == pytest.approx(8 / 255) and d.config.step_size == pytest.approx(2 / 255)


@pytest.mark.parametrize("name", ["pgd-te", "trades-te"])
@pytest.mark.parametrize("objective", ["max-average", "exit:0"])
def test_teat_attack_objectives(name, objective, batch):
    x, y, idx = batch
    model = nb.create_model("smallcnn").train()
    d = make(name, train_attack=objective)
    x_adv = d.adversarial(model, x, y, index=idx)
    assert model.training
    assert float((x_adv - x).abs().max()) <= d.config.eps + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
