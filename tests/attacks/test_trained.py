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
