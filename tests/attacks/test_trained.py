"""Checks that need an adversarially trained model: the session fixture ``trained_smallcnn`` (tests/conftest.py,
SmallCNN trained with PGD-7 max-average on the bundled real Fashion-MNIST; eps 0.1, step 0.025)."""

from __future__ import annotations

import neokd_bench as nb
import pytest
from neokd_bench.evaluation.masking import attacked_accuracy, run_masking_checks

EPS, STEP = 0.1, 0.025  # the Fashion-MNIST threat model (presets.THREAT)

pytestmark = pytest.mark.slow


def pgd(steps: int, **kw):
    return nb.create_attack("pgd", eps=EPS, step_size=STEP, steps=steps, objective="max-average", seed=0, **kw)


def test_gradient_masking_checks_pass(trained_smallcnn) -> None:
    model, x, y = trained_smallcnn
    report = run_masking_checks(model, x[:100], y[:100], eps=EPS, step_size=STEP, steps=10, square_queries=300,
                                seed=0)
    failed = {k: v for k, v in report["checks"].items() if not v["passed"]}
    assert not failed, failed


def test_pgd50_at_least_as_strong_as_pgd7(trained_smallcnn) -> None:
    model, x, y = trained_smallcnn
    x, y = x[:200], y[:200]
    acc7 = attacked_accuracy(model, pgd(7), x, y)
    acc50 = attacked_accuracy(model, pgd(50), x, y)
    assert all(a50 <= a7 + 1 / len(x) + 1e-9 for a7, a50 in zip(acc7, acc50)), (acc7, acc50)
    assert sum(acc50) < sum(acc7) + 1e-9


def test_bfloat16_pgd7_within_one_point_of_float32(trained_smallcnn) -> None:
    model, x, y = trained_smallcnn
    fp32 = attacked_accuracy(model, pgd(7), x, y)
    bf16 = attacked_accuracy(model, pgd(7, amp_dtype="bfloat16"), x, y)
    assert all(abs(a - b) <= 0.01 + 1e-9 for a, b in zip(fp32, bf16)), (fp32, bf16)


@pytest.mark.parametrize("policy_name", ["max-softmax", "patience"])
def test_policy_pgd_at_least_as_strong_as_max_average_at_every_budget(trained_smallcnn, fmnist, policy_name) -> None:
    """Issue 13: under the exit policy, at every budget of a (coarse) curve, the attack that knows the
    thresholds leaves no more accuracy than max-average at the same step count, within one sample of 200
    (the tolerance: both are PGD-10 from the same random start, so neither is exact)."""
    import numpy as np
    from neokd_bench.evaluation.anytime import collect_outcomes
    from neokd_bench.evaluation.budgeted import allocation_family
    from neokd_bench.evaluation.efficiency import efficiency_point
    from neokd_bench.evaluation.policies import create_policy

    model, x, y = trained_smallcnn
    x, y = x[:200], y[:200]
    xv, yv = fmnist.val.tensors()
    policy = create_policy(policy_name)
    val_scores = policy.scores(collect_outcomes(model, xv[:200], yv[:200], device="cpu"))
    max_avg = collect_outcomes(model, x, y, device="cpu", attack=pgd(10))
    costs = np.array([1.0, 2.0, 3.0])
    for alloc in allocation_family(200, 3, count=6):
        t = policy.calibrate(val_scores, alloc)
        attack = nb.create_attack("policy-pgd", eps=EPS, step_size=STEP, steps=10, seed=0, policy=policy_name,
                                  thresholds=[None if not np.isfinite(v) else float(v) for v in t[:-1]] + [None])
        adaptive = efficiency_point(policy, collect_outcomes(model, x, y, device="cpu", attack=attack), t, costs)
        baseline = efficiency_point(policy, max_avg, t, costs)
        assert adaptive["accuracy"] <= baseline["accuracy"] + 1 / len(y) + 1e-9, (alloc, adaptive, baseline)
