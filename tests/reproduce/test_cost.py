"""The cost estimate of `reproduce --dry-run` counts every part of the evaluation protocol."""

from __future__ import annotations

import dataclasses

import pytest
from neokd_bench.presets import train_preset
from neokd_bench.reproduce.cost import eval_parts, passes
from neokd_bench.reproduce.grids import SIZES, get_grid

SINGLE_EXITS = 1.7  # the cost of a step on every exit alone, in whole passes (any value: the counts are linear)


@pytest.fixture
def cpu():
    grid = get_grid("cpu")
    return grid, train_preset(grid.dataset, grid.preset)


def test_the_per_exit_attacks_and_policy_pgd_are_counted(cpu):
    grid, preset = cpu
    ev = preset.eval
    parts = eval_parts(grid, preset, SINGLE_EXITS)
    n_test = min(SIZES[grid.dataset][1], ev.test_limit or SIZES[grid.dataset][1])
    n_lim = min(n_test, ev.per_exit_limit)
    seeds = len(ev.attack_seeds)
    assert ev.per_exit_attacks == ("apgd-dlr", "square") and ev.budgeted_policy_pgd  # the reference protocol
    assert parts["per_exit"] == pytest.approx(n_lim * seeds * (3 * ev.apgd_steps + ev.square_queries) * SINGLE_EXITS)
    assert parts["policy_pgd"] == pytest.approx(n_test * seeds * ev.policy_budgets * 3 * ev.steps)
    assert passes(grid, preset, SINGLE_EXITS)[1] == pytest.approx(sum(parts.values()))


def test_a_protocol_without_them_counts_none(cpu):
    grid, preset = cpu
    bare = dataclasses.replace(preset, eval=dataclasses.replace(preset.eval, per_exit_attacks=(),
                                                                budgeted_policy_pgd=False))
    parts, full = eval_parts(grid, bare, SINGLE_EXITS), eval_parts(grid, preset, SINGLE_EXITS)
    assert parts["per_exit"] == parts["policy_pgd"] == 0
    assert parts["anytime"] == full["anytime"] and parts["transfer"] == full["transfer"]
