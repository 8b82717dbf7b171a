"""On a trained model, the attack that knows the exit policy's thresholds (``policy-pgd``) is at
least as strong as max-average under the policy, at every budget of a (coarse) curve. The model is the
committed gate checkpoint (SmallCNN, ``adv``, smoke preset: real weights, nothing trained here)."""

from __future__ import annotations

from pathlib import Path

import neokd_bench as nb
import numpy as np
import pytest
from neokd_bench.evaluation.anytime import collect_outcomes
from neokd_bench.evaluation.budgeted import allocation_family
from neokd_bench.evaluation.efficiency import efficiency_point
from neokd_bench.evaluation.policies import create_policy
from neokd_bench.trainer import load_checkpoint, model_from_checkpoint

GATE_CKPT = Path(__file__).resolve().parents[2] / "leaderboard" / "gate" / "smallcnn-adv-smoke.pt"
EPS, STEP, STEPS, N = 0.1, 0.025, 10, 200  # the Fashion-MNIST threat model (presets.THREAT), PGD-10, 200 images

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gate_model(fmnist):
    model = model_from_checkpoint(load_checkpoint(GATE_CKPT), GATE_CKPT).eval()
    x, y = fmnist.test.tensors()
    xv, yv = fmnist.val.tensors()
    return model, x[:N], y[:N], xv[:N], yv[:N]


@pytest.mark.parametrize("policy_name", ["max-softmax", "patience"])
def test_policy_pgd_at_least_as_strong_as_max_average_at_every_budget(gate_model, policy_name) -> None:
    """Tolerance: one sample of 200. Both attacks are PGD-10 from the same random start, neither is exact."""
    model, x, y, xv, yv = gate_model
    policy = create_policy(policy_name)
    val_scores = policy.scores(collect_outcomes(model, xv, yv, device="cpu"))  # thresholds: validation only
    pgd = nb.create_attack("pgd", eps=EPS, step_size=STEP, steps=STEPS, objective="max-average", seed=0)
    max_avg = collect_outcomes(model, x, y, device="cpu", attack=pgd)
    costs = np.array([1.0, 2.0, 3.0])
    gaps = []
    for alloc in allocation_family(N, 3, count=6):
        t = policy.calibrate(val_scores, alloc)
        attack = nb.create_attack("policy-pgd", eps=EPS, step_size=STEP, steps=STEPS, seed=0, policy=policy_name,
                                  thresholds=[None if not np.isfinite(v) else float(v) for v in t[:-1]] + [None])
        adaptive = efficiency_point(policy, collect_outcomes(model, x, y, device="cpu", attack=attack), t, costs)
        baseline = efficiency_point(policy, max_avg, t, costs)
        gaps.append((alloc, adaptive["accuracy"], baseline["accuracy"]))
    assert all(a <= b + 1 / N + 1e-9 for _, a, b in gaps), gaps
