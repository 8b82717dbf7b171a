"""PGD: agreement with torchattacks on one exit, the objectives over exits, max-average selection."""

from __future__ import annotations

import neokd_bench as nb
import pytest
import torch
import torch.nn.functional as F
import torchattacks
from neokd_bench.attacks.base import Objective, fold_batchnorm, objective_loss, select_max_average
from neokd_bench.attacks.executor import Executor
from neokd_bench.errors import UsageError
from neokd_bench.models.base import ExitForward

from .tiny_models import make_batch, make_model


@pytest.mark.parametrize("steps", [1, 5])
def test_matches_torchattacks_without_random_start(steps: int) -> None:
    model = make_model(1)
    x, y = make_batch(model, 32)
    ours = nb.create_attack("pgd", eps=0.06, step_size=0.01, steps=steps, random_start=False, objective="exit:0")
    ref = torchattacks.PGD(ExitForward(model, 0), eps=0.06, alpha=0.01, steps=steps, random_start=False)
    torch.testing.assert_close(ours(model, x, y), ref(x, y), rtol=0, atol=1e-6)


def test_matches_torchattacks_with_the_same_random_start() -> None:
    # torchattacks draws its start from the global RNG with uniform_(-eps, eps); ours draws the same formula
    # from a local generator, so the same seed gives the same start.
    model = make_model(1)
    x, y = make_batch(model, 32)
    ours = nb.create_attack("pgd", eps=0.06, step_size=0.01, steps=4, random_start=True, objective="exit:0", seed=7)
    ref = torchattacks.PGD(ExitForward(model, 0), eps=0.06, alpha=0.01, steps=4, random_start=True)
    torch.manual_seed(7)
    torch.testing.assert_close(ours(model, x, y), ref(x, y), rtol=0, atol=1e-6)


def test_average_objective_is_mean_of_per_exit_ce() -> None:
    model = make_model(3)
    x, y = make_batch(model, 8)
    per_exit = torch.stack([F.cross_entropy(o, y, reduction="none") for o in model(x)]).mean(0)
    torch.testing.assert_close(objective_loss(model, x, y, Objective.parse("average")), per_exit)
    # ... which is not the CE of the averaged logits
    avg_logits = torch.stack(model(x)).mean(0)
    assert not torch.allclose(per_exit, F.cross_entropy(avg_logits, y, reduction="none"))
    # One step without random start moves along the sign of that loss's input gradient.
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(objective_loss(model, xr, y, Objective("average")).mean(), [xr])
    expected = torch.clamp(x + 0.01 * g.sign(), 0, 1)
    attack = nb.create_attack("pgd", eps=0.05, step_size=0.01, steps=1, random_start=False, objective="average")
    got = attack(model, x, y)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_max_average_selects_the_candidate_with_largest_mean_loss() -> None:
    model = make_model(3)
    x, y = make_batch(model, 24)
    attack = nb.create_attack("pgd", eps=0.1, step_size=0.02, steps=4, objective="max-average", seed=5)
    cands = attack.candidates(model, x, y)
    assert cands.shape == (3, *x.shape)
    x_adv = attack(model, x, y)
    with torch.no_grad():
        def mean_loss(z: torch.Tensor) -> torch.Tensor:
            return torch.stack([F.cross_entropy(o, y, reduction="none") for o in model(z)]).mean(0)

        chosen = mean_loss(x_adv)
        for k in range(3):
            assert (chosen >= mean_loss(cands[k]) - 1e-6).all()
    # Each chosen sample is one of its candidates.
    match = torch.stack([(cands[k] == x_adv).flatten(1).all(1) for k in range(3)]).any(0)
    assert match.all()


def test_candidate_k_is_the_single_attack_on_exit_k() -> None:
    model = make_model(3)
    x, y = make_batch(model, 8)
    kw = {"eps": 0.1, "step_size": 0.02, "steps": 3, "random_start": False}
    cands = nb.create_attack("pgd", objective="max-average", **kw).candidates(model, x, y)
    for k in range(3):
        single = nb.create_attack("pgd", objective=f"exit:{k}", **kw)(model, x, y)
        torch.testing.assert_close(cands[k], single, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_batched_and_looped_max_average_are_identical(mode: str) -> None:
    model = make_model(3)
    x, y = make_batch(model, 16)
    kw = {"eps": 0.1, "step_size": 0.02, "steps": 4, "objective": "max-average", "seed": 11}
    if mode == "train":  # dropout would draw from the global RNG in a different order; BatchNorm still matters
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    batched = nb.create_attack("pgd", batched=True, mode=mode, **kw)
    looped = nb.create_attack("pgd", batched=False, mode=mode, **kw)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    a = batched(model, x, y)
    model.load_state_dict(state)
    b = looped(model, x, y)
    assert torch.equal(a, b)


@pytest.mark.parametrize("select_batch, expected", [(0, [5, 5, 5]), (15, [15]), (100, [15]), (4, [4, 4, 4, 3])])
def test_selection_forward_passes(select_batch: int, expected: list[int]) -> None:
    """On CPU, automatic selection runs one forward pass per candidate group; ``select_batch`` caps the
    samples per pass (15 = all candidates in one pass). The choice does not depend on the chunking."""
    model = make_model(3)
    x, y = make_batch(model, 5)
    cands = torch.stack([x, torch.clamp(x + 0.05, 0, 1), torch.clamp(x - 0.05, 0, 1)])
    calls: list[int] = []
    h = model.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    x_sel, idx, losses = select_max_average(model, cands, y, select_batch=select_batch)
    h.remove()
    assert calls == expected
    assert losses.shape == (3, 5) and torch.equal(idx, losses.argmax(0))
    assert torch.equal(x_sel, cands[idx, torch.arange(5)])
    _, idx_one, losses_one = select_max_average(model, cands, y, select_batch=15)
    torch.testing.assert_close(losses, losses_one)


def test_single_exit_attack_runs_no_earlier_head_and_no_deeper_block() -> None:
    """A single attack on exit k computes exit k alone: neither a deeper block nor an earlier head runs."""
    model = make_model(3)
    x, y = make_batch(model, 4)
    blocks: list[int] = []
    heads: list[int] = []
    hooks = [b.register_forward_hook(lambda m, i, o, j=j: blocks.append(j)) for j, b in enumerate(model.blocks)]
    hooks += [h.register_forward_hook(lambda m, i, o, j=j: heads.append(j)) for j, h in enumerate(model.heads)]
    nb.create_attack("pgd", eps=0.05, step_size=0.02, steps=2, objective="exit:1", seed=0)(model, x, y)
    for h in hooks:
        h.remove()
    assert set(blocks) == {0, 1} and set(heads) == {1}


def overridden_forward_model() -> tuple[torch.nn.Module, list[int | None]]:
    """A tiny model whose class overrides ``forward`` (without ``last_only``), recording each call's ``upto``."""
    calls: list[int | None] = []

    class Wrapped(type(make_model(3))):  # type: ignore[misc]
        def forward(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
            calls.append(upto)
            return super().forward(x, upto)

    model = make_model(3)
    model.__class__ = Wrapped
    return model, calls


def test_a_model_that_overrides_forward_is_attacked_through_its_forward() -> None:
    """``last_only`` is used only when the model's ``forward`` takes it; an override without it is honoured."""
    model, calls = overridden_forward_model()
    x, y = make_batch(model, 4)
    calls.clear()
    nb.create_attack("pgd", eps=0.05, step_size=0.02, steps=2, objective="exit:1", seed=0)(model, x, y)
    assert calls == [1, 1]


def test_bfloat16_autocast_runs_and_stays_in_ball() -> None:
    model = make_model(3)
    x, y = make_batch(model, 8)
    x_adv = nb.create_attack("pgd", eps=0.05, step_size=0.02, steps=3, amp_dtype="bfloat16", seed=0)(model, x, y)
    assert x_adv.dtype == torch.float32
    assert (x_adv - x).abs().max() <= 0.05 + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1


def test_pgd_raises_the_loss() -> None:
    model = make_model(3)
    x, y = make_batch(model, 32)
    for obj in ("exit:0", "exit:2", "average"):
        adv = nb.create_attack("pgd", eps=0.1, step_size=0.02, steps=5, objective=obj, seed=0)(model, x, y)
        o = Objective.parse(obj)
        with torch.no_grad():
            assert objective_loss(model, adv, y, o).mean() > objective_loss(model, x, y, o).mean()


def test_defaults_are_the_papers() -> None:
    d = nb.create_attack("pgd").describe()["config"]
    assert d["eps"] == pytest.approx(8 / 255) and d["step_size"] == pytest.approx(2 / 255)
    assert d["steps"] == 50 and d["random_start"] is True and d["objective"] == "max-average"
    assert d["mode"] == "eval" and d["amp_dtype"] is None


def test_fold_batchnorm_is_the_same_function_and_leaves_the_model_alone() -> None:
    model = nb.create_model("msdnet_cifar10")
    with torch.no_grad():  # non-trivial running statistics
        model.train()
        model(torch.rand(16, *model.input_size))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert all(not p.requires_grad for p in folded.parameters())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    x = torch.rand(8, *model.input_size)
    with torch.no_grad():
        for a, b in zip(model(x), folded(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_fold_bn_attack_matches_the_unfolded_attack() -> None:
    """Same function, other rounding: the folded attack's x_adv agrees on almost every pixel, its loss is
    as high, and the model keeps its BatchNorm and mode."""
    model = make_model(3)
    x, y = make_batch(model, 32)
    kw = {"eps": 0.1, "step_size": 0.02, "steps": 5, "objective": "max-average", "seed": 3}
    plain = nb.create_attack("pgd", **kw)(model, x, y)
    folded = nb.create_attack("pgd", fold_bn=True, **kw)(model, x, y)
    assert (folded - x).abs().max() <= 0.1 + 1e-6
    assert (plain == folded).float().mean() > 0.95
    with torch.no_grad():
        loss = objective_loss(model, plain, y, Objective("average")).mean()
        loss_f = objective_loss(model, folded, y, Objective("average")).mean()
    assert abs(float(loss - loss_f)) < 0.05 * float(loss)
    assert not model.training and any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_fold_bn_needs_eval_mode() -> None:
    with pytest.raises(UsageError, match="fold_bn"):
        nb.create_attack("pgd", fold_bn=True, mode="train")


@pytest.mark.parametrize("name", ["tiny", "msdnet_cifar10"])
def test_cascade_gives_the_lockstep_result(name: str) -> None:
    """``cascade='on'`` (one batched pass per step, groups leaving after their exit) makes the same
    candidates as the lock-step loop, hence the same x_adv."""
    if name == "tiny":
        model = make_model(3)
    else:
        torch.manual_seed(0)
        model = nb.create_model(name, num_classes=10, input_size=(1, 28, 28), mean=[0.0], std=[1.0]).eval()
    x, y = make_batch(model, 6)
    kw = {"eps": 0.1, "step_size": 0.02, "steps": 3, "objective": "max-average", "seed": 4}
    on = nb.create_attack("pgd", cascade="on", **kw)
    off = nb.create_attack("pgd", cascade="off", **kw)
    # one batched convolution may round differently from separate ones, and a sign step on a gradient
    # component near 0 can then flip: allow that for 1 pixel in 100 (it has not happened on this CPU)
    for a, b in [(on.candidates(model, x, y), off.candidates(model, x, y)), (on(model, x, y), off(model, x, y))]:
        assert ((a - b).abs() <= 1e-6).float().mean() >= 0.99


def test_cascade_runs_one_batched_pass_per_step() -> None:
    model = make_model(3)
    x, y = make_batch(model, 5)
    calls: list[int] = []
    h = model.blocks[0].register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    nb.create_attack("pgd", eps=0.1, step_size=0.02, steps=2, cascade="on", seed=0)(model, x, y)
    h.remove()
    assert calls[:2] == [15, 15]  # two steps, all three groups in block 0 together; then selection


def test_cascade_is_not_used_through_an_overridden_forward_or_in_train_mode() -> None:
    model, calls = overridden_forward_model()
    x, y = make_batch(model, 4)
    calls.clear()
    nb.create_attack("pgd", eps=0.05, step_size=0.02, steps=1, cascade="on", seed=0)(model, x, y)
    assert calls[:3] == [0, 1, 2]  # the single attacks went through the override
    with pytest.raises(UsageError, match="cascade"):
        nb.create_attack("pgd", cascade="on", mode="train")


def test_cascade_falls_back_to_the_loop_when_memory_runs_out(monkeypatch) -> None:
    model = make_model(3)
    x, y = make_batch(model, 6)
    kw = {"eps": 0.1, "step_size": 0.02, "steps": 3, "objective": "max-average", "seed": 4}
    expected = nb.create_attack("pgd", cascade="off", **kw)(model, x, y)

    def out_of_memory(xs):
        raise torch.OutOfMemoryError("simulated")

    monkeypatch.setattr(model, "forward_cascade", out_of_memory)
    with pytest.warns(UserWarning, match="out of device memory"):
        got = nb.create_attack("pgd", cascade="on", **kw)(model, x, y)
    assert torch.equal(got, expected)


def test_trades_start_is_a_small_gaussian() -> None:
    """``start='trades'``: x + 0.001 N(0, 1) (Zhang et al. 2019); with a zero step the attack returns it."""
    model = make_model(3)
    x, y = make_batch(model, 64)
    x = x.clamp(0.1, 0.9)  # keep the clamp to [0, 1] out of the way
    attack = nb.create_attack("pgd", eps=0.1, step_size=0.0, steps=1, start="trades", objective="exit:0", seed=0)
    adv = attack(model, x, y)
    delta = adv - x
    assert 0.0008 < float(delta.std()) < 0.0012 and abs(float(delta.mean())) < 1e-4
    with pytest.raises(UsageError, match="start"):
        nb.create_attack("pgd", start="gaussian")


@pytest.mark.parametrize("objective", ["max-average", "average", "exit:1"])
def test_micro_batches_give_the_whole_batch_attack(objective: str) -> None:
    """Eval-mode PGD in slices of ``micro_batch`` samples is the whole-batch attack: bit for bit when the
    slices divide the batch by a power of two (the batch-mean loss only rescales each sample's gradient, whose
    sign is the step), up to float rounding otherwise."""
    model = make_model(3)
    x, y = make_batch(model, 128)
    kw = dict(eps=0.06, step_size=0.01, steps=4, objective=objective, seed=3, select_batch=384)
    whole = nb.create_attack("pgd", micro_batch=128, **kw)(model, x, y)
    assert torch.equal(nb.create_attack("pgd", micro_batch=32, **kw)(model, x, y), whole)
    assert torch.equal(nb.create_attack("pgd", **kw)(model, x, y), whole)  # automatic: 64 on a CPU
    odd = nb.create_attack("pgd", micro_batch=48, **kw)(model, x, y)  # slices of 48, 48, 32
    assert float((odd - whole).abs().gt(1e-4).float().mean()) < 0.01


def test_micro_batch_slices_eval_mode_on_a_cpu_only() -> None:
    x = torch.rand(130, 1, 4, 4)
    sizes = lambda atk: [len(x[s]) for s in Executor.of(atk).slices(x)]  # noqa: E731
    assert sizes(nb.create_attack("pgd")) == [64, 64, 2]  # eval mode on a CPU: MICRO_BATCH_CPU
    assert sizes(nb.create_attack("pgd", mode="train")) == [130]  # batch statistics: never split
    assert sizes(nb.create_attack("pgd", micro_batch=100)) == [100, 30]
    assert sizes(nb.create_attack("pgd", micro_batch=500)) == [130]
    with pytest.raises(UsageError, match="micro_batch"):
        nb.create_attack("pgd", micro_batch=32, mode="train")
    with pytest.raises(UsageError, match="micro_batch"):
        nb.create_attack("pgd", micro_batch=-1)


def test_selection_on_a_cpu_runs_passes_of_at_most_64() -> None:
    model = make_model(3)
    x, y = make_batch(model, 100)
    cands = torch.stack([x, torch.clamp(x + 0.05, 0, 1), torch.clamp(x - 0.05, 0, 1)])
    calls: list[int] = []
    h = model.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    _, idx, losses = select_max_average(model, cands, y)
    h.remove()
    assert calls == [64, 64, 64, 64, 44]  # the 300 candidates, 64 at a time
    _, idx_one, losses_one = select_max_average(model, cands, y, select_batch=300)
    assert torch.equal(idx, idx_one)
    torch.testing.assert_close(losses, losses_one)
