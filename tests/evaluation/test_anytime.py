"""Anytime prediction: per-exit top-1/top-5, seeds, no autograd graph, one forward for all exits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from neokd_bench.evaluation.anytime import collect_outcomes, outcomes_from_logits, seeded_summary


def test_top1_top5_and_ensemble_tables_by_hand():
    y = torch.tensor([0, 3])
    e0 = torch.tensor([[5.0, 1, 0, 0, 0, 0, 0], [0, 1, 2, 3.5, 4, 5, 6]])  # sample 1: class 3 is 4th -> top-5
    e1 = torch.tensor([[0.0, 1, 0, 0, 0, 0, 0], [0, 0, 0, 9, 0, 0, 0]])
    out = outcomes_from_logits([e0, e1], y)
    assert out.top1.tolist() == [[True, False], [False, True]]
    assert out.top5.tolist() == [[True, True], [True, True]]
    assert out.conf.shape == (2, 2) and np.all(out.ens_conf[:, 0] == out.conf[:, 0])


def test_top5_is_omitted_with_five_classes_or_fewer():
    out = outcomes_from_logits([torch.randn(4, 5)], torch.tensor([0, 1, 2, 3]))
    assert out.top5 is None


def test_seeded_summary_mean_std_and_every_value():
    a = outcomes_from_logits([torch.eye(4)[[0, 1, 2, 3]], torch.eye(4)[[0, 0, 0, 0]]], torch.arange(4))
    b = outcomes_from_logits([torch.eye(4)[[0, 1, 0, 0]], torch.eye(4)[[0, 1, 0, 0]]], torch.arange(4))
    s = seeded_summary([a, b], [0, 7])
    assert s["seeds"] == [0, 7]
    assert s["top1"]["per_seed"] == [[1.0, 0.25], [0.5, 0.5]]
    assert s["top1"]["mean"] == pytest.approx([0.75, 0.375])
    assert s["top1"]["std"] == pytest.approx([np.std([1, 0.5], ddof=1), np.std([0.25, 0.5], ddof=1)])
    assert s["top1"]["avg"]["per_seed"] == pytest.approx([0.625, 0.5])
    assert s["top1"]["avg"]["mean"] == pytest.approx(0.5625)
    assert s["top5"] is None
    single = seeded_summary([a], [0])
    assert single["top1"]["std"] == [0.0, 0.0] and single["top1"]["avg"]["std"] == 0.0


class _Spy(torch.nn.Module):
    """Wraps a multi-exit model; records each forward call's grad/inference mode."""

    def __init__(self, model):
        super().__init__()
        self.model, self.num_exits, self.calls = model, model.num_exits, []

    def forward(self, x, upto=None):
        self.calls.append((torch.is_grad_enabled(), torch.is_inference_mode_enabled(), upto, len(x)))
        return self.model(x, upto=upto)


def test_clean_pass_builds_no_graph_and_one_forward_gives_all_exits(clean_smallcnn):
    model, x, y = clean_smallcnn
    spy = _Spy(model).eval()
    out = collect_outcomes(spy, x[:100], y[:100], device="cpu", batch_size=40)
    assert [c[3] for c in spy.calls] == [40, 40, 20]  # one forward per batch ...
    assert all(c[2] is None for c in spy.calls)  # ... of the full model, giving every exit
    assert all(not grad and inf for grad, inf, _, _ in spy.calls)
    with torch.no_grad():
        ref = [lg.argmax(1).eq(y[:100]).float().mean().item() for lg in model(x[:100])]
    assert out.top1.mean(0).tolist() == pytest.approx(ref)
    assert min(ref) > 0.4  # the fixture model has learned something


def test_attack_runs_once_per_batch_then_one_scoring_forward(clean_smallcnn):
    model, x, y = clean_smallcnn
    spy = _Spy(model).eval()
    seen = []

    def attack(m, xb, yb):
        seen.append(len(xb))
        return (xb + 0.05).clamp(0, 1)

    out = collect_outcomes(spy, x[:50], y[:50], device="cpu", batch_size=32, attack=attack)
    assert seen == [32, 18] and len(spy.calls) == 2 and all(c[1] for c in spy.calls)
    with torch.no_grad():
        ref = model((x[:50] + 0.05).clamp(0, 1))[2].argmax(1).eq(y[:50]).float().mean().item()
    assert out.top1[:, 2].mean() == pytest.approx(ref)


def _start_only_pgd():
    import neokd_bench as nb

    return nb.create_attack("pgd", eps=0.1, step_size=0.0, steps=1, objective="average", seed=0)


def test_each_batch_gets_its_own_random_start():
    """The attack is called once per batch with the attack seed; the samples' positions key the starts, so two
    batches holding the same images are not attacked from the same start."""
    from ..attacks.tiny_models import make_batch, make_model

    model = make_model(3)
    x4, y4 = make_batch(model, 4)
    out = collect_outcomes(model, torch.cat([x4, x4]), torch.cat([y4, y4]), device="cpu", batch_size=4,
                           attack=_start_only_pgd())
    assert not np.allclose(out.conf[:4], out.conf[4:], rtol=1e-4, atol=0)


def test_a_sample_is_attacked_the_same_whatever_the_batch_size():
    from ..attacks.tiny_models import make_batch, make_model

    model = make_model(3)
    x, y = make_batch(model, 12)
    a = collect_outcomes(model, x, y, device="cpu", batch_size=4, attack=_start_only_pgd())
    b = collect_outcomes(model, x, y, device="cpu", batch_size=12, attack=_start_only_pgd())
    np.testing.assert_allclose(a.conf, b.conf, rtol=1e-5, atol=1e-6)
    assert np.array_equal(a.top1, b.top1)
