"""App. H: CW and the AutoAttack parts average their loss over exits and count a sample as adversarial only
when EVERY exit is fooled."""

from __future__ import annotations

import neokd_bench as nb
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from neokd_bench.attacks.autoattack import ExitSet, any_correct, decision_scores, multi_exit_label
from neokd_bench.attacks.base import Objective
from neokd_bench.attacks.cw import cw_margin

from .tiny_models import make_batch, make_model, tiny_attack

H_ATTACKS = ["cw", "apgd-ce", "apgd-dlr", "apgd-t", "fab", "square", "autoattack"]


@settings(max_examples=25, deadline=None)
@given(data=st.data(), n=st.integers(1, 6), c=st.integers(2, 6), e=st.integers(1, 4))
def test_decision_scores_argmax_is_label_iff_some_exit_correct(data, n: int, c: int, e: int) -> None:
    logits = data.draw(st.lists(st.lists(st.lists(st.floats(-5, 5), min_size=c, max_size=c), min_size=n, max_size=n),
                                min_size=e, max_size=e))
    outs = [torch.tensor(o) for o in logits]
    y = torch.tensor(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    some_correct = torch.stack([o.argmax(1) == y for o in outs]).any(0)
    assert torch.equal(decision_scores(outs, y).argmax(1) == y, some_correct)
    assert torch.equal(multi_exit_label(outs, y) == y, some_correct)
    assert torch.equal(any_correct(outs, y), some_correct)


@pytest.mark.parametrize("name", H_ATTACKS)
def test_changed_samples_fool_every_exit(name: str) -> None:
    """Under App. H's rule (``not_fooled="clean"``) whatever an attack returns different from x fools every
    exit."""
    model = make_model(3, seed=1)
    x, y = make_batch(model, 40, seed=2)
    x_adv = tiny_attack(name, eps=0.15, objective="average", seed=0, not_fooled="clean",
                        **({"steps": 10, "step_size": 0.03} if name == "cw" else {}))(model, x, y)
    with torch.no_grad():
        fooled_all = ~any_correct(model(x_adv), y)
    changed = (x_adv != x).flatten(1).any(1)
    assert torch.equal(changed, changed & fooled_all)
    assert fooled_all.any(), "the tiny attack should fool some samples at eps 0.15"


def _mixed_batch():
    """A batch whose labels are exit 0's prediction: the mean logits over exits often rank another class first."""
    model = make_model(3, seed=1)
    x, _ = make_batch(model, 40, seed=2)
    with torch.no_grad():
        y = model(x)[0].argmax(1)
        mean_top = torch.stack(model(x)).mean(0).argmax(1)
    assert (mean_top != y).sum() >= 5, "the test needs samples whose mean-logit argmax is wrong"
    return model, x, y


def test_wrong_classes_exclude_the_label_and_follow_the_mean_logits() -> None:
    model, x, y = _mixed_batch()
    exits = ExitSet(model, Objective("average"))
    ranked = exits.wrong_classes(x, y)
    assert ranked.shape == (len(y), 9)
    assert not (ranked == y[:, None]).any()
    with torch.no_grad():
        z = torch.stack(model(x)).mean(0)
    scores = z.gather(1, ranked)
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # most likely wrong class first
    assert torch.equal(ranked[:, 0], z.scatter(1, y[:, None], float("-inf")).argmax(1))


@pytest.mark.parametrize("name", ["apgd-t", "fab"])
def test_targets_are_never_the_true_class(name: str, monkeypatch) -> None:
    """APGD-T and FAB-T target the top wrong classes of the mean logits, also on samples whose mean-logit argmax
    is already wrong (there, upstream's ranks 2.. would include y and skip the most likely wrong class)."""
    from neokd_bench.attacks.autoattack import MultiExitAPGDT, MultiExitFAB

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    if name == "apgd-t":
        run = MultiExitAPGDT.attack_single_run

        def spy(self, x, y, *a, **kw):
            seen.append((y.clone(), self.y_target.clone()))
            return run(self, x, y, *a, **kw)

        monkeypatch.setattr(MultiExitAPGDT, "attack_single_run", spy)
    else:
        grads = MultiExitFAB.get_diff_logits_grads_batch_targeted

        def spy(self, imgs, la, la_target):
            seen.append((la.clone(), la_target.clone()))
            return grads(self, imgs, la, la_target)

        monkeypatch.setattr(MultiExitFAB, "get_diff_logits_grads_batch_targeted", spy)
    model, x, y = _mixed_batch()
    nb.create_attack(name, eps=0.05, steps=1, n_target_classes=9, seed=0)(model, x, y)
    assert seen
    assert all(not (label == target).any() for label, target in seen)
    # The first target of every attacked sample is its most likely wrong class.
    exits = ExitSet(model, Objective("average"))
    robust = exits.robust(x, y)
    label, target = seen[0]
    assert torch.equal(label, y[robust])
    assert torch.equal(target, exits.wrong_classes(x[robust], y[robust])[:, 0])


def test_cw_keeps_the_fooling_iterate_and_beats_nothing() -> None:
    model = make_model(3, seed=1)
    x, y = make_batch(model, 40, seed=2)
    cw = nb.create_attack("cw", eps=0.15, step_size=0.03, steps=10, seed=0)
    x_adv = cw(model, x, y)
    with torch.no_grad():
        clean_margin = torch.stack([cw_margin(o, y) for o in model(x)]).mean(0)
        adv_margin = torch.stack([cw_margin(o, y) for o in model(x_adv)]).mean(0)
    assert (adv_margin <= clean_margin + 1e-5).float().mean() > 0.9  # the mean margin goes down
    # More steps never un-fool a sample: the first all-fooling iterate is kept.
    longer = nb.create_attack("cw", eps=0.15, step_size=0.03, steps=20, seed=0)(model, x, y)
    with torch.no_grad():
        f10 = ~any_correct(model(x_adv), y)
        f20 = ~any_correct(model(longer), y)
    assert (f20 | ~f10).all()


def test_cw_margin() -> None:
    z = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    y = torch.tensor([0, 0])
    torch.testing.assert_close(cw_margin(z, y), torch.tensor([2.0, 0.0]))  # second clamped at -kappa = 0
    torch.testing.assert_close(cw_margin(z, y, kappa=5.0), torch.tensor([2.0, -2.0]))


def test_square_loss_is_mean_over_exits_and_margin_is_worst_exit() -> None:
    from neokd_bench.attacks.autoattack import MultiExitSquare

    model = make_model(3)
    x, y = make_batch(model, 6)
    sq = MultiExitSquare(ExitSet(model, Objective("average")), eps=0.1, n_queries=1)
    with torch.no_grad():
        outs = model(x)
        margin, loss = sq.margin_and_loss(x, y)
        per = torch.stack([o.gather(1, y[:, None]).squeeze(1)
                           - o.masked_fill(F.one_hot(y, 10).bool(), -1e9).amax(1) for o in outs])
    torch.testing.assert_close(loss, per.mean(0))
    torch.testing.assert_close(margin, per.amax(0))


def test_apgd_loss_is_mean_ce_over_exits() -> None:
    from neokd_bench.attacks.autoattack import MultiExitAPGDCE

    model = make_model(3)
    x, y = make_batch(model, 6)
    eng = MultiExitAPGDCE(ExitSet(model, Objective("average")), n_iter=1, eps=0.1)
    with eng.labelled(y), torch.no_grad():
        z = eng.model(x)
        loss = eng.ce_loss_targeted(z, y)
        ref = torch.stack([F.cross_entropy(o, y, reduction="none") for o in model(x)]).mean(0)
    torch.testing.assert_close(loss, ref)


def test_autoattack_at_least_as_strong_as_each_part() -> None:
    model = make_model(3, seed=1)
    x, y = make_batch(model, 40, seed=2)
    common = {"eps": 0.08, "seed": 0}

    def fooled(a) -> int:
        with torch.no_grad():
            return int((~any_correct(model(a(model, x, y)), y)).sum())

    full = fooled(tiny_attack("autoattack", **common))
    for part in ("apgd-ce", "apgd-t", "fab", "square"):
        assert full >= fooled(tiny_attack(part, **common))


def test_n_target_classes_defaults_to_all_pairs() -> None:
    model = make_model(3, num_classes=6)
    exits = ExitSet(model, Objective("average"))
    assert nb.create_attack("apgd-t").n_targets(exits) == 5
    assert nb.create_attack("fab").n_targets(exits) == 5
    with pytest.raises(nb.UsageError, match="n_target_classes"):
        nb.create_attack("apgd-t", n_target_classes=7).n_targets(exits)


def test_paper_budgets_are_the_defaults() -> None:
    assert nb.create_attack("apgd-ce").describe()["config"]["steps"] == 50
    assert nb.create_attack("apgd-t").describe()["config"]["n_target_classes"] is None
    assert nb.create_attack("square").describe()["config"]["n_queries"] == 5000
    aa = nb.create_attack("autoattack").describe()["config"]
    assert aa["attacks"] == ["apgd-ce", "apgd-t", "fab", "square"] and aa["objective"] == "average"
    assert aa["steps"] == 50 and aa["n_queries"] == 5000
    assert nb.create_attack("cw").describe()["config"]["objective"] == "average"
