"""Random starts keyed by sample index (attacks/base.py, AttackRNG): different from batch to batch, the same on a
rerun, and the same for a sample whichever batch or batch position it lands in."""

from __future__ import annotations

import neokd_bench as nb
import pytest
import torch
from neokd_bench.errors import UsageError

from .tiny_models import make_batch, make_model, tiny_attack


def start_only(objective: str = "exit:0", **kw):
    """PGD whose steps do not move (step 0): it returns its random start, projected."""
    return nb.create_attack("pgd", eps=0.1, step_size=0.0, steps=1, objective=objective, seed=3, **kw)


def test_two_batches_get_different_starts_and_a_rerun_the_same() -> None:
    model = make_model(3)
    x, y = make_batch(model, 8)
    attack = start_only()
    first = attack(model, x, y, index=torch.arange(0, 8))
    second = attack(model, x, y, index=torch.arange(8, 16))  # the same images as the next batch
    assert not torch.equal(first, second)
    assert ((first - second).flatten(1).abs().amax(1) > 0).all(), "every sample's start must differ"
    assert torch.equal(first, attack(model, x, y, index=torch.arange(0, 8)))
    assert torch.equal(first, start_only()(model, x, y, index=list(range(8))))


@pytest.mark.parametrize("objective", ["exit:0", "max-average"])
def test_a_sample_gets_the_same_start_in_any_batch_and_position(objective: str) -> None:
    model = make_model(3)
    x, y = make_batch(model, 8)
    attack = start_only(objective)
    index = torch.arange(100, 108)
    whole = (attack.candidates(model, x, y, index=index) if objective == "max-average"
             else attack(model, x, y, index=index))
    perm = torch.tensor([5, 2, 7, 0, 1, 6, 3, 4])
    shuffled = (attack.candidates(model, x[perm], y[perm], index=index[perm]) if objective == "max-average"
                else attack(model, x[perm], y[perm], index=index[perm]))
    alone = (attack.candidates(model, x[3:4], y[3:4], index=index[3:4]) if objective == "max-average"
             else attack(model, x[3:4], y[3:4], index=index[3:4]))
    if objective == "max-average":
        assert torch.equal(shuffled, whole[:, perm]) and torch.equal(alone, whole[:, 3:4])
        assert not torch.equal(whole[0], whole[1]), "the L starts of max-average are distinct draws"
    else:
        assert torch.equal(shuffled, whole[perm]) and torch.equal(alone, whole[3:4])


def test_trades_start_is_keyed_too() -> None:
    model = make_model(3)
    x, y = make_batch(model, 6)
    attack = start_only(start="trades")
    a = attack(model, x, y, index=torch.arange(6))
    assert torch.equal(a[2:3], attack(model, x[2:3], y[2:3], index=[2]))
    assert not torch.equal(a, attack(model, x, y, index=torch.arange(6, 12)))


@pytest.mark.parametrize("name", ["apgd-ce", "square", "cw"])
def test_other_attacks_differ_between_batches_and_repeat_on_rerun(name: str) -> None:
    model = make_model(3)
    x, y = make_batch(model, 8)
    kw = {"random_start": True} if name == "cw" else {}
    attack = tiny_attack(name, eps=0.1, seed=0, **kw)
    first = attack(model, x, y, index=torch.arange(8))
    assert torch.equal(first, attack(model, x, y, index=torch.arange(8)))
    assert not torch.equal(first, attack(model, x, y, index=torch.arange(8, 16)))


@pytest.mark.parametrize("index", [torch.arange(5), torch.zeros(8), [[0] * 8], "01234567"])
def test_bad_index_is_usage_error(index) -> None:
    model = make_model(3)
    x, y = make_batch(model, 8)
    with pytest.raises(UsageError, match="index"):
        start_only()(model, x, y, index=index)
