"""Each defense's loss equals its formula, checked against a hand computation on a real SmallCNN.

The model is put in eval mode here only so that dropout is off and two forward passes agree."""

from __future__ import annotations

import math

import neokd_bench as nb
import pytest
import torch
import torch.nn.functional as F
from neokd_bench.defenses import kd
from neokd_bench.defenses.lw import find_exit_classifiers
from neokd_bench.defenses.teat import sigmoid_rampup
from neokd_bench.errors import UsageError


@pytest.fixture(scope="module")
def setup_data(fmnist):
    xs, ys = zip(*(fmnist.train[i] for i in range(8)))
    x, y = torch.stack(xs), torch.tensor(ys)
    torch.manual_seed(0)
    model = nb.create_model("smallcnn").eval()
    x_adv = (x + 0.1 * torch.randn_like(x).sign()).clamp(0, 1)
    with torch.no_grad():
        clean, adv = model(x), model(x_adv)
    return model, x, x_adv, y, clean, adv


def make(name, **kw):
    d = nb.create_defense(name, **kw)
    d.setup(dataset="fashion-mnist", num_exits=3, num_classes=10, seed=0)
    d.start_epoch(0)
    return d


def ce(zs, y):
    return sum(F.cross_entropy(z, y) for z in zs)


def test_adv_is_eq4(setup_data):
    model, x, xa, y, clean, adv = setup_data
    loss, parts = make("adv").loss(model, x, xa, y)
    assert torch.allclose(loss, ce(clean, y) + ce(adv, y), atol=1e-5)
    assert set(parts) == {"ce_clean", "ce_adv"}


@pytest.mark.parametrize("alpha,beta,gamma", [(3.0, 1.0, (1.0, 1.0, 1.0)), (0.5, 2.0, (1.0, 1.5, 2.0))])
def test_neokd_is_eq7(setup_data, alpha, beta, gamma):
    model, x, xa, y, clean, adv = setup_data
    d = make("neokd", alpha=alpha, beta=beta, gamma=list(gamma))
    teachers = kd.neighbour_teachers(clean)
    labels = kd.orthogonal_soft_labels(clean, y, d.permutation)
    kd_terms = sum(
        g * (alpha * kd.soft_cross_entropy(a, t) + beta * kd.soft_cross_entropy(a, o))
        for g, a, t, o in zip(gamma, adv, teachers, labels)
    )
    loss, parts = d.loss(model, x, xa, y)
    assert torch.allclose(loss, ce(clean, y) + ce(adv, y) + kd_terms, atol=1e-4)
    assert {"ce_clean", "ce_adv", "nkd", "eokd"} <= set(parts)


def test_ablations_are_neokd_with_other_fields():
    assert make("nkd").config.beta == 0 and make("nkd").config.alpha == 3
    assert make("eokd").config.alpha == 0 and make("eokd").config.beta == 1
    assert make("nkd-no-ensemble").config.neighbourhood == "self"
    assert make("nkd-ensemble-all").config.neighbourhood == "all"
    assert "eokd" not in make("nkd").describe()["config"] or make("nkd").describe()["config"]["beta"] == 0


@pytest.mark.parametrize(
    "name,teacher,students",
    [
        ("skd", 2, [0, 1]),
        ("skd-exit0", 0, [1, 2]),
        ("skd-exit1", 1, [0, 2]),
        ("skd-ensemble", "ensemble", [0, 1, 2]),
    ],
)
def test_skd_formula(setup_data, name, teacher, students):
    model, x, xa, y, clean, adv = setup_data
    d = make(name)
    t, w = d.config.temperature, d.config.weight
    assert (t, w) == (2.5, 0.35)

    def teacher_probs(zs):
        if teacher == "ensemble":
            return torch.stack([F.softmax(z / t, -1) for z in zs]).mean(0)
        return F.softmax(zs[teacher] / t, -1)

    kd_sum = sum(kd.kd_kl(zs[i], teacher_probs(zs), t) for zs in (clean, adv) for i in students)
    loss, parts = d.loss(model, x, xa, y)
    assert torch.allclose(loss, ce(clean, y) + ce(adv, y) + w * kd_sum, atol=1e-4)
    assert torch.allclose(parts["kd"], kd_sum, atol=1e-4)


@pytest.mark.parametrize(
    "name,teacher,students",
    [
        ("ard", 2, [2]),
        ("ard-exit0", 0, [0]),
        ("ard-exit1", 1, [1]),
        ("ard-ensemble", "ensemble", [0, 1, 2]),
    ],
)
def test_ard_formula(setup_data, name, teacher, students):
    model, x, xa, y, clean, adv = setup_data
    d = make(name)
    t = d.config.temperature
    assert (t, d.config.weight) == (30.0, 1.0)
    q = (
        torch.stack([F.softmax(z / t, -1) for z in clean]).mean(0)
        if teacher == "ensemble"
        else F.softmax(clean[teacher] / t, -1)
    )
    kd_sum = sum(kd.kd_kl(adv[s], q, t) for s in students)
    loss, _ = d.loss(model, x, xa, y)
    assert torch.allclose(loss, ce(clean, y) + ce(adv, y) + kd_sum, atol=1e-4)


def test_teacher_field_validation():
    with pytest.raises(UsageError):
        nb.create_defense("skd", teacher="middle")
    d = nb.create_defense("ard", teacher="5")
    with pytest.raises(UsageError):
        d.setup(dataset="cifar10", num_exits=3, num_classes=10, seed=0)
    assert nb.create_defense("skd", teacher="exit:1").config.teacher == 1


def test_lw_finds_exit_classifiers_and_penalizes_them(setup_data):
    model, x, xa, y, clean, adv = setup_data
    heads = find_exit_classifiers(model, x)
    assert heads == [model.exit1[-1][-1], model.exit2[-1][-1], model.exit3[-1]]
    d = make("lw")
    assert d.config.weights == (0.1, 0.1, 0.1)
    reg = sum(0.1 * h.weight.pow(2).sum() for h in heads)
    loss, parts = d.loss(model, x, xa, y)
    assert torch.allclose(loss, ce(clean, y) + ce(adv, y) + reg, atol=1e-4)
    assert torch.allclose(parts["weight_reg"], reg)
    d7 = nb.create_defense("lw")
    d7.setup(dataset="cifar100", num_exits=7, num_classes=100, seed=0)
    assert d7.config.weights == (0.1, 0.1, 0.1, 0.15, 0.15, 0.15, 0.15)


# -- TEAT -----------------------------------------------------------------------------------------------
def test_teat_ramp_matches_released_schedule():
    assert sigmoid_rampup(89, 90, 150) == 0.0
    assert sigmoid_rampup(90, 90, 150) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(120, 90, 150) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(151, 90, 150) == 1.0
    d = make("pgd-te")
    d.start_epoch(88)
    assert not d.te_active and d.te_weight == 0.0
    d.start_epoch(149)  # 1-based epoch 150
    assert d.te_active and d.te_weight == pytest.approx(300.0)


@pytest.mark.parametrize("name", ["pgd-te", "trades-te"])
def test_teat_ensemble_update_and_state(setup_data, name):
    model, x, xa, y, clean, _adv = setup_data
    d = make(name, te_start_epoch=1, steps=1)
    idx = torch.arange(100, 108)
    with pytest.raises(UsageError, match="index"):
        d.adversarial(model, x, y)
    d.adversarial(model, x, y, index=idx)
    buf = d.state_dict()["soft_labels"]
    assert buf.shape == (108, 3, 10)
    assert torch.all(buf[:100] == 0)
    probs = torch.stack([F.softmax(z, -1) for z in clean], 1)
    assert torch.allclose(buf[100:], 0.1 * probs, atol=1e-6)  # EMA from zero, momentum 0.9
    assert torch.allclose(d.targets(idx, x.device), probs, atol=1e-5)  # renormalized when read
    d.adversarial(model, x, y, index=idx)
    assert torch.allclose(d.state_dict()["soft_labels"][100:], 0.19 * probs, atol=1e-6)
    e = make(name, te_start_epoch=1)
    e.load_state_dict(d.state_dict())
    assert torch.equal(e.state_dict()["soft_labels"], d.state_dict()["soft_labels"])
    loss, parts = d.loss(model, x, xa, y, index=idx)
    assert torch.isfinite(loss) and "te" in parts


def test_pgd_te_loss_formula(setup_data):
    model, x, xa, y, _clean, adv = setup_data
    d = make("pgd-te", te_start_epoch=1)
    idx = torch.arange(8)
    d.adversarial(model, x, y, index=idx)
    s = d.targets(idx, x.device)
    w = d.te_weight
    te = sum(((F.softmax(a, -1) - s[:, k]) ** 2).mean() for k, a in enumerate(adv))
    loss, _ = d.loss(model, x, xa, y, index=idx)
    assert torch.allclose(loss, ce(adv, y) + w * te, atol=1e-4)


def test_trades_te_loss_formula(setup_data):
    model, x, xa, y, clean, adv = setup_data
    d = make("trades-te")  # before epoch 90: plain multi-exit TRADES
    kl = sum(
        F.kl_div(F.log_softmax(a, -1), F.softmax(c, -1), reduction="batchmean") for c, a in zip(clean, adv)
    )
    loss, _ = d.loss(model, x, xa, y)
    assert torch.allclose(loss, ce(clean, y) + 6.0 * kl, atol=1e-4)
