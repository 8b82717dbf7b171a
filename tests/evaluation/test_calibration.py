"""Calibration per exit: ECE against a hand computation on fixed numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from neokd_bench.evaluation.anytime import outcomes_from_logits
from neokd_bench.evaluation.calibration import calibration_section, ece, reliability

CONF = [0.95, 0.85, 0.65, 0.62, 0.20]
CORRECT = [True, False, True, True, False]


def test_ece_by_hand():
    # 5 bins of width .2: (0,.2] holds .20 (wrong): |0 - .20| = .20, weight 1/5;
    # (.6,.8] holds .65, .62 (both right): |1 - .635| = .365, weight 2/5;
    # (.8,1] holds .95 (right), .85 (wrong): |.5 - .90| = .40, weight 2/5.
    expected = 0.2 * 0.20 + 0.4 * 0.365 + 0.4 * 0.40
    assert ece(CONF, CORRECT, bins=5) == pytest.approx(expected, abs=1e-12)
    r = reliability(CONF, CORRECT, bins=5)
    assert r["count"] == [1, 0, 0, 2, 2]
    assert r["confidence"][1] is None and r["accuracy"][3] == 1.0
    assert r["confidence"][4] == pytest.approx(0.90)


def test_perfectly_calibrated_and_overconfident():
    assert ece([0.5, 0.5, 0.5, 0.5], [True, False, True, False], bins=10) == pytest.approx(0.0)
    assert ece([1.0, 1.0], [False, False], bins=15) == pytest.approx(1.0)


def test_section_per_exit_and_per_seed():
    probs = torch.tensor([[[0.9, 0.1], [0.6, 0.4]], [[0.7, 0.3], [0.2, 0.8]]])  # (sample, exit, class)
    out = outcomes_from_logits([probs[:, k].log() for k in range(2)], torch.tensor([0, 0]))
    sec = calibration_section(out, {"pgd:max-average": [out, out]}, {"pgd:max-average": [0, 1]}, bins=10)
    # exit 0: both right, conf .9 and .7 -> ECE = (.1 + .3) / 2; exit 1: .6 right, .8 wrong -> (.4 + .8) / 2
    np.testing.assert_allclose(sec["clean"]["ece"], [0.2, 0.6])
    adv = sec["adversarial"]["pgd:max-average"]
    np.testing.assert_allclose(adv["ece"], [0.2, 0.6])
    assert adv["ece_std"] == [0.0, 0.0] and [p["seed"] for p in adv["per_seed"]] == [0, 1]
