"""Budgeted prediction (App. A.3): thresholds, exits taken, FLOPs cost, envelope interpolation, savings."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from neokd_bench.evaluation.budgeted import (
    allocation_family,
    budget_to_reach,
    budgeted_curve,
    budgeted_point,
    ensemble_tables,
    exit_indices,
    format_savings,
    pareto_envelope,
    savings,
    thresholds_for_allocation,
)


def test_paper_worked_example_3000_samples_2000_500_500():
    """App. A.3: 3000 validation samples, allocation (2000, 500, 500)."""
    rng = np.random.default_rng(0)
    # distinct confidences so that "the n-th largest" is unambiguous
    val = np.stack([rng.permutation(3000) / 3000.0 + 1e-4 * k for k in range(3)], axis=1)
    th = thresholds_for_allocation(val, (2000, 500, 500))
    assert th[0] == np.sort(val[:, 0])[::-1][1999]  # the 2000-th largest at exit 1
    rest = val[val[:, 0] < th[0]]
    assert len(rest) == 1000
    assert th[1] == np.sort(rest[:, 1])[::-1][499]  # the 500-th largest among the 1000 left, at exit 2
    assert th[2] == -np.inf
    exits = exit_indices(val, th)
    assert np.bincount(exits, minlength=3).tolist() == [2000, 500, 500]
    costs = [1.0, 3.0, 6.0]
    pt = budgeted_point(val, np.ones_like(val, dtype=bool), th, costs)
    assert pt.exit_counts == (2000, 500, 500)
    assert pt.mean_cost == pytest.approx((2000 * 1 + 500 * 3 + 500 * 6) / 3000)


def test_hand_built_table_exits_and_cost():
    val = np.array([
        [0.9, 0.99, 0.1],
        [0.8, 0.99, 0.1],
        [0.7, 0.99, 0.1],
        [0.6, 0.55, 0.1],
        [0.5, 0.95, 0.1],
        [0.4, 0.65, 0.1],
    ])
    th = thresholds_for_allocation(val, (3, 2, 1))
    # exit 1: 3rd largest of all six; exit 2: 2nd largest of {0.55, 0.95, 0.65} (the samples left)
    assert th.tolist() == [0.7, 0.65, -np.inf]
    test_conf = np.array([
        [0.75, 0.0, 0.0],  # leaves at exit 1
        [0.69, 0.66, 0.0],  # exit 2
        [0.50, 0.60, 0.99],  # exit 3
        [0.70, 0.10, 0.10],  # exit 1 (confidence equal to the threshold leaves)
    ])
    assert exit_indices(test_conf, th).tolist() == [0, 1, 2, 0]
    correct = np.array([[1, 0, 0], [1, 0, 1], [0, 0, 1], [1, 1, 1]], dtype=bool)
    pt = budgeted_point(test_conf, correct, th, [1.0, 3.0, 6.0])
    assert pt.mean_cost == pytest.approx((1 + 3 + 6 + 1) / 4)
    assert pt.accuracy == pytest.approx(3 / 4)  # sample 1 is wrong at exit 2, where it left
    assert pt.exit_counts == (2, 1, 1)


def test_zero_allocation_means_no_sample_leaves_there():
    val = np.array([[0.9, 0.2], [0.8, 0.3]])
    th = thresholds_for_allocation(val, (0, 2))
    assert th[0] == np.inf
    assert exit_indices(np.array([[1.0, 0.0]]), th).tolist() == [1]


def test_ensemble_strategy_is_mean_softmax_of_exits_so_far():
    probs = torch.tensor([[[0.6, 0.3, 0.1], [0.05, 0.45, 0.5]]])  # 1 sample, 2 exits, 3 classes
    conf, pred, correct = ensemble_tables(probs, torch.tensor([1]))
    assert pred.tolist() == [[0, 1]]  # exit 2 alone says class 2, the ensemble says class 1
    assert conf[0].tolist() == pytest.approx([0.6, (0.3 + 0.45) / 2])
    assert correct.tolist() == [[False, True]]
    conf1, pred1, _ = ensemble_tables(probs, ensemble=False)
    assert pred1.tolist() == [[0, 2]] and conf1[0, 1].item() == pytest.approx(0.5)


def test_thresholds_come_from_validation_data_only():
    assert list(inspect.signature(thresholds_for_allocation).parameters) == ["val_conf", "allocation"]
    rng = np.random.default_rng(1)
    val, test = rng.random((200, 3)), rng.random((100, 3))
    correct = rng.random((100, 3)) > 0.5
    allocs = allocation_family(200, 3, count=12)
    a = budgeted_curve(val, test, correct, [1, 2, 3], allocs)
    b = budgeted_curve(val, 1 - test, ~correct, [1, 2, 3], allocs)  # other test data: same thresholds
    np.testing.assert_array_equal(a["thresholds"], b["thresholds"])
    for alloc, row in zip(allocs, a["thresholds"]):
        np.testing.assert_array_equal(row, thresholds_for_allocation(val, alloc))


@pytest.mark.parametrize("n_val,num_exits", [(3000, 3), (2000, 7), (50, 5)])
def test_allocation_family_front_to_back_heavy(n_val, num_exits):
    allocs = allocation_family(n_val, num_exits, count=100)
    assert 0 < len(allocs) <= 100 and len(set(allocs)) == len(allocs)
    assert all(sum(a) == n_val and min(a) >= 0 and len(a) == num_exits for a in allocs)
    assert allocs[0] == (n_val,) + (0,) * (num_exits - 1)
    assert allocs[-1] == (0,) * (num_exits - 1) + (n_val,)
    mean_exit = [sum(k * n for k, n in enumerate(a)) / n_val for a in allocs]
    assert all(x <= y + 1e-9 for x, y in zip(mean_exit, mean_exit[1:]))
    if n_val >= 2000:
        assert len(allocs) == 100


def test_cost_is_cumulative_fvcore_count_of_the_exit_taken():
    import neokd_bench as nb
    from neokd_bench.flops import exit_flops

    model = nb.create_model("smallcnn")
    flops = exit_flops(model)
    assert flops == sorted(flops) and len(flops) == model.num_exits
    rng = np.random.default_rng(0)
    val, test = rng.random((30, 3)), rng.random((40, 3))
    correct = np.ones((40, 3), dtype=bool)
    mflops = np.array(flops) / 1e6
    # on the validation table itself, "all at exit 1" sends every sample out at exit 1
    curve = budgeted_curve(val, val, correct[:30], mflops, [(30, 0, 0), (0, 0, 30)])
    assert curve["cost"].tolist() == pytest.approx([mflops[0], mflops[-1]])
    th = thresholds_for_allocation(val, (10, 10, 10))
    exits = exit_indices(test, th)
    assert budgeted_point(test, correct, th, mflops).mean_cost == pytest.approx(mflops[exits].mean())


def test_budget_interpolation_on_the_upper_envelope():
    costs, accs = [1.0, 2.0, 3.0, 4.0], [0.3, 0.5, 0.45, 0.7]
    env_c, env_a = pareto_envelope(costs, accs)
    assert env_c.tolist() == [1.0, 2.0, 4.0] and env_a.tolist() == [0.3, 0.5, 0.7]  # (3, 0.45) is dominated
    assert budget_to_reach(costs, accs, 0.6) == pytest.approx(3.0)  # halfway from (2, .5) to (4, .7)
    assert budget_to_reach(costs, accs, 0.5) == pytest.approx(2.0)
    assert budget_to_reach(costs, accs, 0.2) == pytest.approx(1.0)
    assert budget_to_reach(costs, accs, 0.71) is None  # never reached: "unable to achieve"
    # order of the points does not matter
    assert budget_to_reach(costs[::-1], accs[::-1], 0.6) == pytest.approx(3.0)


def test_savings_as_the_paper_reports_them():
    assert savings(10.59, 20.46) == pytest.approx(1 - 10.59 / 20.46)
    assert format_savings(10.59, 20.46) == "10.59 vs 20.46 MFLOPs, 48.24% saved"
    assert format_savings(10.59, 20.46, "neokd", "adv") == "neokd: 10.59 vs adv: 20.46 MFLOPs, 48.24% saved"
