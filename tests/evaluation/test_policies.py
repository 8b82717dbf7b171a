"""Exit policies: a hand-built table of the exits each policy takes, thresholds from
validation data only, and the policy registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from neokd_bench.errors import UsageError
from neokd_bench.evaluation.anytime import outcomes_from_logits
from neokd_bench.evaluation.efficiency import efficiency_section
from neokd_bench.evaluation.policies import create_policy, list_policies, relaxed_run_lengths, run_lengths

# Softmax probabilities (sample, exit, class) chosen by hand; logits = log(probs) reproduce them exactly.
PROBS = [
    [[0.90, 0.05, 0.05], [0.80, 0.10, 0.10], [0.70, 0.20, 0.10]],  # confident at once, always class 0
    [[0.50, 0.30, 0.20], [0.20, 0.70, 0.10], [0.10, 0.80, 0.10]],  # changes its mind at exit 1
    [[0.40, 0.35, 0.25], [0.45, 0.30, 0.25], [0.50, 0.25, 0.25]],  # never confident, always class 0
    [[0.34, 0.33, 0.33], [0.10, 0.10, 0.80], [0.10, 0.10, 0.80]],  # confident from exit 1, class 2
]
LABELS = [0, 1, 0, 2]


def table(probs=PROBS, labels=LABELS):
    p = torch.tensor(probs, dtype=torch.float64)
    return outcomes_from_logits([p[:, k].log() for k in range(p.shape[1])], torch.tensor(labels))


def test_builtin_policies_registered():
    assert {"max-softmax", "entropy", "patience"} <= set(list_policies())


def test_unknown_policy_is_one_line_usage_error():
    with pytest.raises(UsageError, match="unknown policy 'max-sofmax'") as info:
        create_policy("max-sofmax")
    assert "\n" not in str(info.value)


# (policy, ensemble, thresholds, exits taken), worked out by hand from PROBS:
# * max-softmax, own softmax: 0.90 >= .85 leaves at exit 0; sample 1 (0.50, 0.70) and sample 2 (0.40, 0.45)
#   reach the last exit; sample 3 has 0.80 >= .75 at exit 1.
# * max-softmax, ensemble: exit 1 of sample 1 is mean([.5,.3,.2], [.2,.7,.1]) = [.35,.5,.15], max .5 < .55;
#   of sample 3, mean = [.22,.215,.565], max .565 >= .55.
# * entropy (nats), own softmax, leave when H <= (0.5, 0.85): H(.9,.05,.05) = .394; sample 1 at exit 1
#   H(.2,.7,.1) = .802 (leaves, unlike max-softmax at .75); sample 2 H(.45,.3,.25) = 1.067; sample 3
#   H(.1,.1,.8) = .639. With the ensemble, exit 1's mean softmax has H = .999 (sample 1), 1.08 (sample 2)
#   and .986 (sample 3): all three reach the last exit.
# * patience (own top-1): runs are [1,2,3], [1,1,2], [1,2,3], [1,1,2]; PABEE patience 1 = "the last 2 exits
#   agree" = threshold 2 from exit 1 on (the confidence tie-break, at most 0.5, never lifts a run length
#   of 1 to 2).
HAND = [
    ("max-softmax", False, [0.85, 0.75, -math.inf], [0, 2, 2, 1]),
    ("max-softmax", True, [0.85, 0.55, -math.inf], [0, 2, 2, 1]),
    ("entropy", False, [-0.5, -0.85, -math.inf], [0, 1, 2, 1]),
    ("entropy", True, [-0.5, -0.85, -math.inf], [0, 2, 2, 2]),
    ("patience", False, [math.inf, 2, -math.inf], [1, 2, 1, 2]),
    ("patience", True, [3, 2, 3], [1, 2, 1, 2]),  # ensemble does not change patience; the last exit takes all
]


@pytest.mark.parametrize("name,ensemble,thresholds,expected", HAND)
def test_hand_built_table_of_exits(name, ensemble, thresholds, expected):
    policy = create_policy(name)
    exits = policy.exits(policy.scores(table(), ensemble), thresholds)
    assert exits.tolist() == expected


def test_patience_run_lengths_by_hand():
    assert run_lengths(np.array([[0, 0, 0], [0, 1, 1], [3, 1, 3], [2, 2, 1]])).tolist() == [
        [1, 2, 3], [1, 1, 2], [1, 1, 1], [1, 2, 1]]


@pytest.mark.parametrize("name,allocation,expected", [
    # exit 0: the largest own max-softmax (.90) lets 1 sample leave; exit 1 among the 3 left: (.70, .45, .80),
    # the largest is .80.
    ("max-softmax", (1, 1, 2), [0.90, 0.80, -math.inf]),
    # exit 0: -H of the 2 most certain: .394 and 1.030 -> -1.030; exit 1 among samples 2, 3: H .639 ->-.639.
    ("entropy", (2, 1, 1), [-1.0297, -0.6390, -math.inf]),
    # patience scores (own softmax) = run length + 0.5 * max softmax:
    #   exit 0: 1.45, 1.25, 1.20, 1.17;  exit 1: 2.40, 1.35, 2.225, 1.40.
    # nobody at exit 0 (+inf); exit 1: the 2nd largest of all four is 2.225 (samples 0 and 2, run length 2).
    ("patience", (0, 2, 2), [math.inf, 2.225, -math.inf]),
    # every run length at exit 0 is 1: the confidence breaks the tie, so exactly 1 sample (0, 1.45) leaves
    # there; at exit 1, among samples 1, 2, 3 (1.35, 2.225, 1.40), the 2nd largest is 1.40: samples 2 and 3
    # leave (run length 2, then run length 1 with the higher confidence); sample 1 goes on to the last exit.
    # (Before the tie-break, "at most 1 leaves" gave +inf at exit 0 and the allocation was not met.)
    ("patience", (1, 2, 1), [1.45, 1.40, -math.inf]),
])
def test_thresholds_calibrated_by_hand(name, allocation, expected):
    policy = create_policy(name)
    scores = policy.scores(table(), ensemble=False)
    th = policy.calibrate(scores, allocation)
    np.testing.assert_allclose(th, expected, atol=1e-4)
    assert np.bincount(policy.exits(scores, th), minlength=3).tolist() == list(allocation)  # met exactly


def test_patience_meets_every_allocation_on_tied_run_lengths():
    """Integer run lengths tie for most samples; with the confidence tie-break every allocation of a
    random validation table is met exactly (the old "at most n_k" rule sent most samples to the last exit)."""
    from neokd_bench.evaluation.budgeted import allocation_family

    r = np.random.default_rng(0)
    logits = [torch.tensor(r.normal(size=(200, 4)) * 2) for _ in range(3)]
    out = outcomes_from_logits(logits, torch.tensor(r.integers(0, 4, 200)))
    policy = create_policy("patience")
    scores = policy.scores(out, ensemble=True)
    assert len(np.unique(run_lengths(out.pred))) == 3  # heavily tied integers
    for alloc in allocation_family(200, 3, count=20):
        th = policy.calibrate(scores, alloc)
        assert np.bincount(policy.exits(scores, th), minlength=3).tolist() == list(alloc)


@pytest.mark.parametrize("name", ["max-softmax", "entropy", "patience"])
def test_thresholds_come_from_validation_data_only(name):
    """The efficiency section's thresholds do not move when the test data changes, and do when the
    validation data changes."""
    def random_table(n, seed):
        r = np.random.default_rng(seed)
        logits = [torch.tensor(r.normal(size=(n, 5)) * 3) for _ in range(3)]
        return outcomes_from_logits(logits, torch.tensor(r.integers(0, 5, n)))

    val = random_table(60, 1)
    allocs = [(20, 20, 20), (40, 10, 10)]
    common = {"policy": name, "clean_val": val, "attacked": {}, "seeds": {}, "allocations": allocs,
              "exit_mflops": [1, 2, 3], "budget_index": 0}
    a = efficiency_section(clean_test=random_table(50, 2), **common)
    b = efficiency_section(clean_test=random_table(70, 3), **common)
    assert a["thresholds"] == b["thresholds"]
    assert all(a["policies"][p]["thresholds"] == b["policies"][p]["thresholds"] for p in a["policies"])
    c = efficiency_section(clean_test=random_table(50, 2), **{**common, "clean_val": random_table(60, 4)})
    assert c["thresholds"] != a["thresholds"]


def test_soft_scores_match_hard_scores():
    """The differentiable surrogate equals the hard score where the hard score is smooth."""
    p = torch.tensor(PROBS, dtype=torch.float64)
    out = table()
    for ensemble in (False, True):
        for name in ("max-softmax", "entropy"):
            policy = create_policy(name)
            np.testing.assert_allclose(policy.soft_scores(p, ensemble).numpy(), policy.scores(out, ensemble),
                                       atol=1e-6)
    onehot = torch.nn.functional.one_hot(p.argmax(2), 3).double()
    np.testing.assert_allclose(relaxed_run_lengths(onehot).numpy(), run_lengths(out.pred))


@pytest.mark.parametrize("name", ["max-softmax", "entropy", "patience"])
def test_budgeted_curve_uses_the_policy_and_its_calibration(name):
    from neokd_bench.evaluation import budgeted_section
    from neokd_bench.evaluation.budgeted import thresholds_to_json

    out = table()
    sec = budgeted_section(clean_val=out, clean_test=out, adv_test={}, adv_val={}, seeds={}, exit_costs=[1e6, 2e6, 3e6],
                           count=6, ensemble=False, policy=name)
    policy = create_policy(name)
    assert sec["policy"] == name
    expected = [thresholds_to_json(policy.calibrate(policy.scores(out, False), a)) for a in sec["allocations"]]
    assert sec["thresholds"] == expected
