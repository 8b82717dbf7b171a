"""One rule for samples an attack does not fool at every exit (docs/design.md; attacks/base.py, ``not_fooled``):
by default the attack's best iterate, never the clean x; ``not_fooled="clean"`` is the paper's App. H rule."""

from __future__ import annotations

import neokd_bench as nb
import pytest
import torch
from neokd_bench.attacks.base import any_correct
from neokd_bench.errors import UsageError

from .tiny_models import make_batch, make_model, tiny_attack

RULED = ["pgd", "cw", "apgd-ce", "apgd-dlr", "apgd-t", "fab", "square", "autoattack"]


def _attack(name: str, rule: str | None):
    model = make_model(3, seed=1)
    x, y = make_batch(model, 40, seed=2)
    kw = {} if rule is None else {"not_fooled": rule}
    x_adv = tiny_attack(name, eps=0.05, objective="average", seed=0, **kw)(model, x, y)
    with torch.no_grad():
        outs = model(x_adv)
    return x, y, x_adv, outs


@pytest.mark.parametrize("name", RULED)
def test_default_is_best_and_recorded(name: str) -> None:
    assert nb.create_attack(name).describe()["config"]["not_fooled"] == "best"
    assert nb.create_attack(name, not_fooled="clean").describe()["config"]["not_fooled"] == "clean"


@pytest.mark.parametrize("name", RULED)
def test_default_never_returns_clean_x_for_a_sample_not_fooled_everywhere(name: str) -> None:
    x, y, x_adv, outs = _attack(name, None)
    not_fooled = any_correct(outs, y)
    some_exit_fooled = torch.stack([o.argmax(1) != y for o in outs]).any(0)
    moved = (x_adv != x).flatten(1).any(1)
    assert (not_fooled & some_exit_fooled).any(), "the tiny budget should leave samples fooled at some exits only"
    assert moved[not_fooled].all(), "a sample not fooled at every exit must keep the attack's best iterate"


@pytest.mark.parametrize("name", RULED)
def test_clean_rule_returns_clean_x_unless_every_exit_is_fooled(name: str) -> None:
    x, y, x_clean_rule, outs = _attack(name, "clean")
    fooled = ~any_correct(outs, y)
    moved = (x_clean_rule != x).flatten(1).any(1)
    assert fooled.any() and (~fooled).any()
    assert not moved[~fooled].any()
    # The fooled samples are the same points under both rules.
    _, _, x_best_rule, _ = _attack(name, "best")
    assert torch.equal(x_best_rule[moved], x_clean_rule[moved])


def test_cw_keeps_its_lowest_margin_iterate() -> None:
    from neokd_bench.attacks.cw import cw_margin

    model = make_model(3, seed=1)
    x, y = make_batch(model, 40, seed=2)
    x_adv = nb.create_attack("cw", eps=0.05, step_size=0.01, steps=6, seed=0)(model, x, y)
    with torch.no_grad():
        outs = model(x_adv)
        margin = torch.stack([cw_margin(o, y) for o in outs]).mean(0)
        clean = torch.stack([cw_margin(o, y) for o in model(x)]).mean(0)
    not_fooled = any_correct(outs, y)
    assert not_fooled.any()
    assert (margin[not_fooled] <= clean[not_fooled] + 1e-6).all()


def test_bad_rule_is_usage_error() -> None:
    with pytest.raises(UsageError, match="not_fooled"):
        nb.create_attack("pgd", not_fooled="last")
    with pytest.raises(UsageError, match="not_fooled='clean'"):
        nb.create_attack("autoattack-standard", not_fooled="best")
    assert nb.create_attack("autoattack-standard").describe()["config"]["not_fooled"] == "clean"
