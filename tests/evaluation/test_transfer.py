"""Exit-to-exit transferability (Result 3, Fig. 4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neokd_bench as nb
from neokd_bench.evaluation.transfer import all_exits_correct, offdiag_mean, transfer_matrix

KW = dict(eps=0.1, step_size=0.025, steps=5, random_start=True, seed=3, mode="eval")


def test_offdiag_mean_by_hand():
    assert offdiag_mean([[1.0, 0.2], [0.4, 1.0]]) == pytest.approx(0.3)
    assert offdiag_mean([[0.5]]) is None


def test_diagonal_equals_each_single_exit_attack_success_rate(clean_smallcnn):
    model, x, y = clean_smallcnn
    res = transfer_matrix(model, x, y, attack_for_exit=lambda i: nb.create_attack("pgd", objective=f"exit:{i}", **KW),
                          device="cpu", limit=48, batch_size=32)
    m = np.array(res["matrix"])
    assert res["n"] == 48 and m.shape == (3, 3) and ((m >= 0) & (m <= 1)).all()
    mask = all_exits_correct(model, x, y, device="cpu")
    idx = torch.as_tensor(np.flatnonzero(mask)[:48])
    xs, ys = x[idx], y[idx]
    with torch.no_grad():
        assert all(lg.argmax(1).eq(ys).all() for lg in model(xs))  # every exit right on the chosen samples
    for i in range(3):
        attack = nb.create_attack("pgd", objective=f"exit:{i}", **KW)
        adv = torch.cat([attack(model, xs[s:s + 32], ys[s:s + 32]) for s in range(0, 48, 32)])
        with torch.no_grad():
            own = model(adv)[i].argmax(1).ne(ys).double().mean().item()
        assert m[i, i] == pytest.approx(own)
    assert m.diagonal().mean() > 0.5  # a single-exit attack mostly fools the exit it targets
    assert res["offdiag_mean"] == pytest.approx(m[~np.eye(3, dtype=bool)].mean())


def test_no_sample_correct_everywhere_gives_empty_matrix(clean_smallcnn):
    model, x, y = clean_smallcnn
    with torch.no_grad():
        wrong = (model(x[:10])[0].argmax(1) + 1) % 10  # labels exit 1 always gets wrong
    res = transfer_matrix(model, x[:10], wrong, device="cpu", limit=None,
                          attack_for_exit=lambda i: nb.create_attack("pgd", objective=f"exit:{i}", **KW))
    assert res["n"] == 0 and res["offdiag_mean"] is None and res["matrix"] == [[0.0] * 3] * 3
