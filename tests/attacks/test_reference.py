"""The adapted AutoAttack parts against pyautoattack's own classes on a ONE-exit model, where the multi-exit
adaptation must reduce to the original: same robust accuracy within 1 sample in 200."""

from __future__ import annotations

import neokd_bench as nb
import pytest
import torch
from neokd_bench.attacks.autoattack import set_apgd_iterations
from neokd_bench.models.base import ExitForward
from pyautoattack import AutoAttack
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
from pyautoattack.fab_pt import FABAttack_PT
from pyautoattack.square import SquareAttack

from .tiny_models import make_batch, make_model

N = 200
EPS = 0.03
SEED = 4


@pytest.fixture(scope="module")
def setup(one_thread):
    model = make_model(1, seed=2)
    x, _ = make_batch(model, N, seed=9)
    g = torch.Generator().manual_seed(0)
    # Labels: the clean prediction for 90%, a random one for 10% (so some samples start misclassified).
    with torch.no_grad():
        y = model(x)[0].argmax(1)
    flip = torch.rand(N, generator=g) < 0.1
    y[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=g)
    return model, x, y


def accuracy(model, x_adv, y) -> float:
    with torch.no_grad():
        return float((model(x_adv)[0].argmax(1) == y).float().mean())


def reference(engine, x, y) -> torch.Tensor:
    with torch.random.fork_rng():
        return engine.perturb(x, y)


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_matches_pyautoattack(setup, loss) -> None:
    model, x, y = setup
    ref = APGDAttack(ExitForward(model, 0), n_iter=10, norm="Linf", n_restarts=1, eps=EPS, seed=SEED, loss=loss)
    ours = nb.create_attack(f"apgd-{loss}", eps=EPS, steps=10, objective="exit:0", seed=SEED)
    a_ref, a_ours = accuracy(model, reference(ref, x, y), y), accuracy(model, ours(model, x, y), y)
    assert a_ref < accuracy(model, x, y)  # the reference attack does something
    assert abs(a_ref - a_ours) <= 1 / N + 1e-9


def test_apgd_t_matches_pyautoattack(setup) -> None:
    model, x, y = setup
    ref = APGDAttack_targeted(ExitForward(model, 0), n_iter=5, norm="Linf", n_restarts=1, eps=EPS, seed=SEED,
                              n_target_classes=3)
    ours = nb.create_attack("apgd-t", eps=EPS, steps=5, n_target_classes=3, objective="exit:0", seed=SEED)
    a_ref = accuracy(model, reference(ref, x, y), y)
    assert a_ref < accuracy(model, x, y)
    assert abs(a_ref - accuracy(model, ours(model, x, y), y)) <= 1 / N + 1e-9


def test_fab_t_matches_pyautoattack(setup) -> None:
    model, x, y = setup
    xs, ys = x[:60], y[:60]  # FAB takes one backward pass per class: keep it short
    ref = FABAttack_PT(ExitForward(model, 0), norm="Linf", n_restarts=1, n_iter=5, eps=EPS, seed=SEED,
                       targeted=True, n_target_classes=2)
    ours = nb.create_attack("fab", eps=EPS, steps=5, n_target_classes=2, objective="exit:0", seed=SEED)
    a_ref = accuracy(model, reference(ref, xs, ys), ys)
    assert a_ref < accuracy(model, xs, ys)
    assert abs(a_ref - accuracy(model, ours(model, xs, ys), ys)) <= 1 / 60 + 1e-9


def test_square_matches_pyautoattack(setup) -> None:
    model, x, y = setup
    ref = SquareAttack(ExitForward(model, 0), norm="Linf", n_queries=100, eps=EPS, p_init=0.8, n_restarts=1,
                       seed=SEED, resc_schedule=False)
    ours = nb.create_attack("square", eps=EPS, n_queries=100, objective="exit:0", seed=SEED)
    with torch.no_grad():
        a_ref = accuracy(model, reference(ref, x, y), y)
        a_ours = accuracy(model, ours(model, x, y), y)
    assert a_ref < accuracy(model, x, y)
    assert abs(a_ref - a_ours) <= 1 / N + 1e-9


def test_standard_autoattack_is_pyautoattack_on_one_exit(setup) -> None:
    model3 = make_model(3, seed=5)
    x, _ = make_batch(model3, 40, seed=3)
    with torch.no_grad():
        y = model3(x)[1].argmax(1)
    ours = nb.create_attack("autoattack-standard", eps=EPS, objective="exit:1", seed=SEED, steps=3, n_queries=20)
    aa = AutoAttack(ExitForward(model3, 1), eps=EPS, seed=SEED, version="standard")
    set_apgd_iterations(aa.apgd, 3)
    set_apgd_iterations(aa.apgd_targeted, 3)
    aa.fab.n_iter = 3
    aa.square.n_queries = 20
    with torch.random.fork_rng():
        ref, _ = aa.run_standard_evaluation(x, y, batch_size=250)
    torch.testing.assert_close(ours(model3, x, y), ref, rtol=0, atol=1e-6)


def test_multi_exit_autoattack_on_one_exit_is_no_weaker_than_its_parts(setup) -> None:
    model, x, y = setup
    xs, ys = x[:60], y[:60]
    common = {"eps": EPS, "objective": "exit:0", "seed": SEED}
    full = accuracy(model, nb.create_attack("autoattack", steps=5, n_queries=50, n_target_classes=2,
                                            **common)(model, xs, ys), ys)
    apgd = accuracy(model, nb.create_attack("apgd-ce", steps=5, **common)(model, xs, ys), ys)
    square = accuracy(model, nb.create_attack("square", n_queries=50, **common)(model, xs, ys), ys)
    assert full <= min(apgd, square) + 1e-9
