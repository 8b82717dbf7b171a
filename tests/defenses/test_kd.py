"""NEO-KD building blocks: NKD teachers (Eq. 5), EOKD orthogonal soft labels (Eq. 6, Figure 1b)."""

from __future__ import annotations

import warnings

import neokd_bench as nb
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from neokd_bench.defenses import kd
from neokd_bench.errors import UsageError


def _logits(num_exits: int, b: int = 5, c: int = 10, seed: int = 0, grad: bool = False) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, generator=g).mul(2).requires_grad_(grad) for _ in range(num_exits)]


# -- EOKD ---------------------------------------------------------------------------------------------
def test_figure_1b_toy_case():
    """C=4, L=3, ground truth class 1 (1-based): exit 1 keeps {1,2}, exit 2 {1,3}, exit 3 {1,4}."""
    logits = _logits(3, b=1, c=4)
    y = torch.tensor([0])
    perm = torch.tensor([0, 1, 2, 3])
    labels = kd.orthogonal_soft_labels(logits, y, perm)
    supports = [set((lab[0] > 0).nonzero().view(-1).add(1).tolist()) for lab in labels]
    assert supports == [{1, 2}, {1, 3}, {1, 4}]
    for z, lab in zip(logits, labels):
        p = F.softmax(z.detach(), -1)[0]
        keep = lab[0] > 0
        assert torch.allclose(lab[0][keep], p[keep] / p[keep].sum())  # the normalized p-hat of Figure 1b
        assert float(lab.sum()) == pytest.approx(1.0)


def test_figure_1b_with_a_shuffled_permutation():
    # permutation [2, 0, 3, 1]: with label 0 removed the order is 2, 3, 1 -> exits get {0,2}, {0,3}, {0,1}
    labels = kd.orthogonal_soft_labels(_logits(3, b=1, c=4), torch.tensor([0]), torch.tensor([2, 0, 3, 1]))
    assert [set((lab[0] > 0).nonzero().view(-1).tolist()) for lab in labels] == [{0, 2}, {0, 3}, {0, 1}]


@settings(max_examples=40, deadline=None)
@given(c=st.integers(2, 40), num_exits=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_orthogonal_soft_label_properties(c, num_exits, seed):
    k = (c - 1) // num_exits
    if k == 0:
        return  # covered by test_k0_warns_and_falls_back_to_one_hot
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (6,), generator=g)
    perm = kd.class_permutation(c, g)
    logits = _logits(num_exits, b=6, c=c, seed=seed)
    labels = kd.orthogonal_soft_labels(logits, y, perm)
    masks = kd.orthogonal_supports(y, perm, num_exits)
    for b in range(6):
        others = [set(masks[i, b].nonzero().view(-1).tolist()) - {int(y[b])} for i in range(num_exits)]
        assert all(len(s) == k for s in others)  # floor((C-1)/L) non-label classes each
        union = set().union(*others)
        assert len(union) == k * num_exits  # pairwise disjoint
        assert int(y[b]) not in union
        for i in range(num_exits):
            assert bool(masks[i, b, y[b]])  # the label is always kept
            assert labels[i][b, y[b]] > 0
            assert float(labels[i][b].sum()) == pytest.approx(1.0, abs=1e-5)
            assert torch.all(labels[i][b][~masks[i, b]] == 0)
    assert all(not lab.requires_grad for lab in labels)


def test_supports_follow_the_permutation_order():
    # C=10, L=3, k=3: with y removed, exit 0 gets remainder positions 0..2, exit 1 3..5, exit 2 6..8.
    perm = torch.tensor([7, 3, 9, 0, 5, 1, 8, 2, 6, 4])
    y = torch.tensor([0])
    masks = kd.orthogonal_supports(y, perm, 3)
    rest = [c for c in perm.tolist() if c != 0]
    for i in range(3):
        assert set(masks[i, 0].nonzero().view(-1).tolist()) == {0, *rest[3 * i : 3 * i + 3]}


def test_k0_warns_and_falls_back_to_one_hot():
    kd._warned_k0.discard((3, 3))
    logits = _logits(3, b=4, c=3)
    y = torch.tensor([0, 1, 2, 1])
    with pytest.warns(kd.EOKDWarning, match="one-hot"):
        labels = kd.orthogonal_soft_labels(logits, y, torch.arange(3))
    for lab in labels:
        assert torch.equal(lab, F.one_hot(y, 3).float())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        kd.orthogonal_soft_labels(logits, y, torch.arange(3))


def test_permutation_fixed_within_epoch_and_changes_between_epochs():
    d = nb.create_defense("neokd")
    d.setup(dataset="cifar10", num_exits=3, num_classes=10, seed=0)
    d.start_epoch(0)
    p0 = d.permutation.clone()
    y = torch.arange(10)
    m0 = kd.orthogonal_supports(y, d.permutation, 3)
    assert torch.equal(kd.orthogonal_supports(y, d.permutation, 3), m0)  # same within the epoch
    d.start_epoch(1)
    assert not torch.equal(d.permutation, p0)
    assert not torch.equal(kd.orthogonal_supports(y, d.permutation, 3), m0)
    d.start_epoch(0)
    assert torch.equal(d.permutation, p0)  # a function of (seed, epoch): exact on resume
    e = nb.create_defense("neokd")
    e.setup(dataset="cifar10", num_exits=3, num_classes=10, seed=1)
    e.start_epoch(0)
    assert not torch.equal(e.permutation, p0)
    assert sorted(p0.tolist()) == list(range(10))


# -- NKD ----------------------------------------------------------------------------------------------
def test_neighbour_teachers_numerically():
    logits = _logits(5, grad=True)
    p = [F.softmax(z.detach(), -1) for z in logits]
    t = kd.neighbour_teachers(logits)
    assert torch.allclose(t[0], (p[0] + p[1]) / 2)
    assert torch.allclose(t[2], (p[1] + p[2] + p[3]) / 3)
    assert torch.allclose(t[4], (p[3] + p[4]) / 2)
    assert all(not x.requires_grad and x.grad_fn is None for x in t)
    three = kd.neighbour_teachers(logits[:3])
    assert torch.allclose(three[1], (p[0] + p[1] + p[2]) / 3)


def test_neighbourhood_variants():
    logits = _logits(3)
    p = [F.softmax(z, -1) for z in logits]
    assert all(torch.allclose(a, b) for a, b in zip(kd.neighbour_teachers(logits, "self"), p))
    mean = (p[0] + p[1] + p[2]) / 3
    assert all(torch.allclose(a, mean) for a in kd.neighbour_teachers(logits, "all"))
    assert torch.allclose(kd.neighbour_teachers(logits, 1)[0], kd.neighbour_teachers(logits)[0])
    with pytest.raises(UsageError):
        kd.neighbour_teachers(logits, "everyone")


# -- losses ---------------------------------------------------------------------------------------------
def test_soft_cross_entropy_matches_torch():
    z = torch.randn(6, 10)
    y = torch.randint(0, 10, (6,))
    assert torch.allclose(kd.soft_cross_entropy(z, F.one_hot(y, 10).float()), F.cross_entropy(z, y))
    q = F.softmax(torch.randn(6, 10), -1)
    assert torch.allclose(kd.soft_cross_entropy(z, q), F.cross_entropy(z, q))


def test_kd_kl_is_scaled_kl_and_zero_at_the_teacher():
    z = torch.randn(6, 10)
    t = 2.5
    assert float(kd.kd_kl(z, F.softmax(z / t, -1), t)) == pytest.approx(0.0, abs=1e-6)
    q = F.softmax(torch.randn(6, 10) / t, -1)
    p = F.softmax(z / t, -1)
    manual = (q * (q.log() - p.log())).sum(-1).mean() * t * t
    assert torch.allclose(kd.kd_kl(z, q, t), manual, atol=1e-6)
