"""Contract tests run on EVERY registered attack (tiny model, tiny budgets)."""

from __future__ import annotations

import dataclasses
import json

import neokd_bench as nb
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from neokd_bench.errors import UsageError
from neokd_bench.registry import ATTACKS as REGISTRY

from .tiny_models import make_batch, make_model, tiny_attack, tiny_config

ATTACKS = nb.list_attacks()
# Objectives each attack accepts; autoattack-standard is single-exit by design.
OBJECTIVES = {name: ["exit:1", "max-average"] if name == "autoattack-standard" else ["exit:1", "average", "max-average"]
              for name in ATTACKS}
CASES = [(a, o) for a in ATTACKS for o in OBJECTIVES[a]]


def test_all_builtins_registered_with_a_tiny_preset() -> None:
    builtins = {"pgd", "cw", "apgd-ce", "apgd-dlr", "apgd-t", "fab", "square", "autoattack", "autoattack-standard"}
    assert builtins <= set(ATTACKS)
    assert all("tiny" in REGISTRY.presets(name) for name in builtins)


def test_an_attack_without_a_tiny_preset_gets_the_generic_fallback() -> None:
    """The test-only plugin ``plugin-fgsm`` (tests/plugin_dist) declares no ``tiny`` preset and is in no
    table of the tests; it is registered through entry points and runs every contract test here."""
    assert "plugin-fgsm" in ATTACKS and REGISTRY.entry("plugin-fgsm").source == "neokd-test-plugins"
    assert "tiny" not in REGISTRY.presets("plugin-fgsm") and tiny_config("plugin-fgsm") == {}
    assert tiny_config("pgd") == REGISTRY.presets("pgd")["tiny"]


@pytest.mark.parametrize("name,objective", CASES)
def test_in_ball_and_range_and_clean_state(name: str, objective: str) -> None:
    model = make_model(3)
    x, y = make_batch(model, 8)
    eps = 0.05
    rng = torch.random.get_rng_state()
    x_adv = tiny_attack(name, eps=eps, objective=objective, seed=0)(model, x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad
    assert torch.equal(rng, torch.random.get_rng_state()), "the global RNG must be untouched"
    assert all(p.grad is None for p in model.parameters()), "no parameter .grad may be written"
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("name", ATTACKS)
def test_eps_zero_returns_x(name: str) -> None:
    model = make_model(3)
    x, y = make_batch(model, 6)
    obj = OBJECTIVES[name][-1]
    assert torch.equal(tiny_attack(name, eps=0.0, objective=obj, seed=0)(model, x, y), x)


@pytest.mark.parametrize("name", ATTACKS)
def test_same_seed_same_result(name: str) -> None:
    model = make_model(3)
    x, y = make_batch(model, 6)
    a = tiny_attack(name, eps=0.05, objective=OBJECTIVES[name][-1], seed=3)
    torch.manual_seed(0)
    first = a(model, x, y)
    torch.manual_seed(123)  # a different global state must not matter
    assert torch.equal(first, a(model, x, y))


@pytest.mark.parametrize("name", ATTACKS)
@pytest.mark.parametrize("start", ["train", "eval", "mixed"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_model_mode_restored(name: str, start: str, mode: str) -> None:
    model = make_model(3)
    x, y = make_batch(model, 4)
    model.train(start == "train")
    if start == "mixed":
        model.train()
        model.blocks[1].eval()
        model.heads[0][1].eval()
    before = {n: m.training for n, m in model.named_modules()}
    seen: list[bool] = []
    hook = model.blocks[0].register_forward_hook(lambda m, i, o: seen.append(m.training))
    tiny_attack(name, eps=0.05, objective=OBJECTIVES[name][0], seed=0, mode=mode)(model, x, y)
    hook.remove()
    assert seen and all(s == (mode == "train") for s in seen), "the attack must run in its configured mode"
    assert before == {n: m.training for n, m in model.named_modules()}


@pytest.mark.parametrize("name", ATTACKS)
def test_mode_restored_on_exception(name: str) -> None:
    model = make_model(3)
    model.train()
    x, y = make_batch(model, 4)

    def boom(module, inputs, output):
        raise RuntimeError("boom")

    h = model.blocks[0].register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        tiny_attack(name, eps=0.05, objective=OBJECTIVES[name][0], seed=0)(model, x, y)
    h.remove()
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("name", ATTACKS)
def test_exit0_never_runs_deeper_blocks(name: str) -> None:
    model = make_model(3)
    x, y = make_batch(model, 4)
    calls = {k: 0 for k in range(3)}
    hooks = [model.blocks[k].register_forward_hook(lambda m, i, o, k=k: calls.__setitem__(k, calls[k] + 1))
             for k in range(3)]
    tiny_attack(name, eps=0.05, objective="exit:0", seed=0)(model, x, y)
    for h in hooks:
        h.remove()
    assert calls[0] > 0 and calls[1] == 0 and calls[2] == 0


@pytest.mark.parametrize("name", ATTACKS)
def test_describe_is_json_and_complete(name: str) -> None:
    a = tiny_attack(name, eps=0.05, seed=1)
    d = a.describe()
    assert d["name"] == name and d["model_mode"] == "eval"
    json.dumps(d)
    for key, value in tiny_config(name).items():
        assert d["config"][key] == value
    assert {"eps", "objective", "seed", "mode"} <= set(d["config"])
    # Round trip: the resolved config rebuilds the same attack.
    assert nb.create_attack(name, **d["config"]).describe() == d


@pytest.mark.parametrize("name", ATTACKS)
@pytest.mark.parametrize("bad", [{"eps": -0.1}, {"objective": "exit"}, {"objective": "mean"},
                                 {"objective": "exit:-1"}, {"mode": "inference"}, {"seed": 1.5},
                                 {"no_such_option": 1}])
def test_bad_config_is_usage_error(name: str, bad: dict) -> None:
    with pytest.raises(UsageError) as info:
        nb.create_attack(name, **bad)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", [a for a in ATTACKS if "steps" in {f.name for f in
                                                                    dataclasses.fields(REGISTRY.get(a).Config)}])
def test_steps_below_one_is_usage_error(name: str) -> None:
    with pytest.raises(UsageError, match="steps"):
        nb.create_attack(name, steps=0)


@pytest.mark.parametrize("name", ATTACKS)
def test_exit_out_of_range_is_usage_error(name: str) -> None:
    model = make_model(3)
    x, y = make_batch(model, 2)
    with pytest.raises(UsageError, match="exit:0 .. exit:2"):
        tiny_attack(name, objective="exit:3")(model, x, y)


def test_unnormalized_input_is_usage_error() -> None:
    model = make_model(3)
    x, y = make_batch(model, 2)
    with pytest.raises(UsageError, match=r"\[0, 1\]"):
        tiny_attack("pgd")(model, x * 255, y)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(eps=st.floats(0.0, 0.3), seed=st.integers(0, 2**31 - 1), n=st.integers(1, 5),
       objective=st.sampled_from(["exit:0", "exit:2", "average", "max-average"]),
       random_start=st.booleans())
def test_pgd_ball_property(eps: float, seed: int, n: int, objective: str, random_start: bool) -> None:
    model = make_model(3)
    x, y = make_batch(model, n, seed=seed % 1000)
    x_adv = nb.create_attack("pgd", eps=eps, step_size=eps / 2, steps=2, objective=objective, seed=seed,
                             random_start=random_start)(model, x, y)
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert 0 <= x_adv.min() and x_adv.max() <= 1
    if eps == 0:
        assert torch.equal(x_adv, x)
