"""The slowdown attack: in the ball, and on a model with known confidences it moves
samples to later exits; policy-pgd's surrogate agrees with the hard cascade it relaxes."""

from __future__ import annotations

import math

import neokd_bench as nb
import numpy as np
import pytest
import torch
from neokd_bench.attacks.policy_pgd import soft_exit_loss
from neokd_bench.evaluation.anytime import collect_outcomes
from neokd_bench.evaluation.efficiency import efficiency_point
from neokd_bench.evaluation.policies import create_policy
from neokd_bench.models.base import MultiExitModel

from .tiny_models import make_batch, make_model


class RegionVotes(MultiExitModel):
    """Known confidences: 1x4x4 input; the logit of class c is ``scale_k`` times the mean of pixel region c
    (rows 0, 1 and 2 of the image: 4 pixels each), at every exit k. An image whose row 0 is ``a`` and whose
    other rows are ``b`` has, at exit k, softmax confidence ``1 / (1 + 2 exp(-scale_k (a - b)))``."""

    def __init__(self, scales=(6.0, 8.0, 10.0)) -> None:
        super().__init__(num_exits=len(scales), num_classes=3, input_size=(1, 4, 4), mean=[0.0], std=[1.0])
        self.register_buffer("scales", torch.tensor(scales))

    def forward_exits(self, x: torch.Tensor, upto: int) -> list[torch.Tensor]:
        votes = x[:, 0, :3, :].mean(dim=2)  # (N, 3): mean of rows 0, 1, 2
        return [self.scales[k] * votes for k in range(upto + 1)]


def images(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.full((n, 1, 4, 4), 0.2)
    x[:, 0, 0, :] = 0.8  # row 0 bright: class 0, a - b = 0.6
    return x, torch.zeros(n, dtype=torch.long)


def test_known_confidences():
    model = RegionVotes()
    x, _ = images(1)
    conf = [torch.softmax(z, 1).max().item() for z in model(x)]
    np.testing.assert_allclose(conf, [1 / (1 + 2 * math.exp(-s * 0.6)) for s in (6, 8, 10)], rtol=1e-5)


@pytest.mark.parametrize("objective", ["average", "max-average", "exit:0"])
def test_slowdown_stays_in_the_ball_and_moves_samples_to_later_exits(objective):
    model = RegionVotes()
    x, y = images()
    eps = 0.3  # enough to equalise rows (0.8 - 0.3 = 0.2 + 0.3): every exit's softmax can become uniform
    attack = nb.create_attack("slowdown", eps=eps, step_size=0.05, steps=20, objective=objective, seed=0)
    x_adv = attack(model, x, y)
    assert (x_adv - x).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    policy = create_policy("max-softmax")
    thresholds = [0.9, 0.9, -math.inf]  # clean confidences are .948, .98, .99: everyone leaves at exit 0
    costs = np.array([1.0, 2.0, 3.0])
    clean = efficiency_point(policy, collect_outcomes(model, x, y, device="cpu"), thresholds, costs)
    adv = efficiency_point(policy, collect_outcomes(model, x_adv, y, device="cpu"), thresholds, costs)
    assert clean["exit_histogram"] == [1.0, 0.0, 0.0] and clean["mflops_mean"] == 1.0
    assert adv["exit_histogram"] == [0.0, 0.0, 1.0] and adv["mflops_mean"] == 3.0
    probs = torch.softmax(torch.stack(model(x_adv), 1), 2)
    assert probs.max(2).values.max() < 0.5  # pushed toward uniform (1/3) at every exit


@pytest.mark.parametrize("policy_name", ["max-softmax", "entropy"])
def test_policy_pgd_surrogate_is_the_hard_cascade_at_low_temperature(policy_name):
    torch.manual_seed(0)
    logits = [torch.randn(64, 5, dtype=torch.float64) * 3 for _ in range(3)]
    y = torch.randint(0, 5, (64,))
    policy = create_policy(policy_name)
    probs = torch.softmax(torch.stack(logits, 1), 2)
    scores = policy.soft_scores(probs)
    thresholds = torch.stack([scores[:, 0].median(), scores[:, 1].median(), torch.tensor(-math.inf).double()])
    exits = policy.exits(scores.numpy(), thresholds.numpy())
    ens = probs.cumsum(1) / torch.arange(1, 4).view(1, -1, 1)
    hard = -ens[torch.arange(64), torch.as_tensor(exits), y].log()
    soft = soft_exit_loss(logits, y, policy, thresholds, temperature=1e-6)
    far = (scores[:, :2] - thresholds[:2]).abs().min(1).values > 1e-3  # not on a threshold
    torch.testing.assert_close(soft[far], hard[far], rtol=1e-4, atol=1e-5)  # the surrogate runs in float32


def test_policy_pgd_needs_one_threshold_per_exit():
    model = RegionVotes()
    x, y = images(2)
    with pytest.raises(nb.UsageError, match="one threshold per exit"):
        nb.create_attack("policy-pgd", thresholds=[0.5], steps=1)(model, x, y)


@pytest.mark.parametrize("policy_name", ["max-softmax", "entropy", "patience"])
def test_policy_pgd_hard_scores_are_the_policy_scores(policy_name):
    """The attack ranks its iterates by the same scores the evaluation uses."""
    from neokd_bench.evaluation.anytime import outcomes_from_logits

    torch.manual_seed(1)
    logits = [torch.randn(32, 4, dtype=torch.float64) * 2 for _ in range(3)]
    out = outcomes_from_logits(logits, torch.zeros(32, dtype=torch.long))
    policy = create_policy(policy_name)
    probs = torch.softmax(torch.stack(logits, 1), 2)
    for ensemble in (False, True):
        np.testing.assert_allclose(policy.hard_scores(probs, ensemble).numpy(), policy.scores(out, ensemble),
                                   atol=1e-6)


def test_policy_pgd_is_in_the_ball_and_fools_the_known_model():
    model = RegionVotes()
    x, y = images()
    attack = nb.create_attack("policy-pgd", eps=0.35, step_size=0.05, steps=20, thresholds=[0.9, 0.9, None], seed=0)
    x_adv = attack(model, x, y)
    assert (x_adv - x).abs().max() <= 0.35 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    out = collect_outcomes(model, x_adv, y, device="cpu")
    point = efficiency_point(create_policy("max-softmax"), out, [0.9, 0.9, -math.inf], np.array([1.0, 2.0, 3.0]))
    assert point["accuracy"] == 0.0


@pytest.mark.parametrize("name, extra", [("slowdown", {}), ("policy-pgd", {"thresholds": [0.5, 0.5, None]})])
def test_slowdown_and_policy_pgd_key_random_starts_by_sample_index(name, extra):
    """As PGD (attacks/base.py, AttackRNG): a sample's start is the same alone or in a batch, and differs
    between batches (step_size 0: the attack returns its projected random start)."""
    model = make_model(3)
    x, y = make_batch(model, 6)
    attack = nb.create_attack(name, eps=0.1, step_size=0.0, steps=1, seed=3, **extra)
    whole = attack(model, x, y, index=torch.arange(6))
    assert torch.equal(whole[2:3], attack(model, x[2:3], y[2:3], index=[2]))
    other = attack(model, x, y, index=torch.arange(6, 12))
    assert ((whole - other).flatten(1).abs().amax(1) > 0).all()
    assert (whole - x).abs().max() <= 0.1 + 1e-6 and not torch.equal(whole, x)
