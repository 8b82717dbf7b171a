"""Gradient-masking checks for multi-exit models (Athalye et al., ICML 2018, Sec. 3.1 "characteristic
behaviours"; Croce & Hein's AutoAttack flags), adapted so each number is a per-exit accuracy.

A defense whose robustness comes from obfuscated gradients shows tell-tale signs; each check below tests
one. ``run_masking_checks`` returns, for each, a ``passed`` flag and the numbers behind it:

* ``eps_monotone`` - robust accuracy does not rise as eps grows (PGD on a sweep of eps multiples);
* ``large_eps`` - at a very large eps (default 1.0: the whole [0, 1] image space) accuracy falls to ~0;
* ``more_steps`` - more PGD steps are at least as strong as fewer;
* ``black_box`` - black-box Square does not beat white-box PGD;
* ``nonzero_gradients`` - no exit has an all-zero input gradient on every sample (the fraction of zero
  gradients per exit is reported, as AutoAttack's zero-gradient flag does).

Accuracies are per exit (0-based list) under the same attack; a check on several exits passes when it holds
at every exit, within ``tol`` (default: one sample in ``len(x)``, so attack noise alone cannot fail it).
The white-box attack is PGD with the ``objective`` given (default ``average``, the objective the adapted
black-box Square also uses, so the comparison is like for like). Both follow one rule for the samples they do
not fool at every exit (``not_fooled``, default ``"best"``: each attack's best iterate; see
:mod:`neokd_bench.attacks.base`): were Square to return the clean x there while PGD keeps its last iterate,
Square's accuracy would credit exits it did fool and the black-box check would lean toward passing.
Assumptions, not in the paper: the eps
sweep multiples (0.25, 0.5, 1, 2), the large-eps threshold 0.05, the step counts (``steps`` and
``4 * steps``) and Square's query budget are defaults of this harness, recorded in the returned config.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.base import attack_batch, exit_logits, model_mode, num_exits
from ..registry import ATTACKS


@torch.no_grad()
def per_exit_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500
                      ) -> list[float]:
    """Accuracy of every exit on ``(x, y)`` in eval mode (mode restored afterwards)."""
    correct = torch.zeros(num_exits(model), dtype=torch.float64)
    with model_mode(model, "eval"):
        for i in range(0, len(x), batch_size):
            outs = model(x[i:i + batch_size])
            correct += torch.stack([(o.argmax(1) == y[i:i + batch_size]).sum().double() for o in outs]).cpu()
    return (correct / max(len(x), 1)).tolist()


def attacked_accuracy(model: nn.Module, attack: Any, x: torch.Tensor, y: torch.Tensor, batch_size: int = 250
                      ) -> list[float]:
    """Per-exit accuracy on ``attack``'s ``x_adv``, made batch by batch with the samples' positions as ``index``."""
    adv = torch.cat([attack_batch(attack, model, x[i:i + batch_size], y[i:i + batch_size],
                                  torch.arange(i, min(i + batch_size, len(x)), device=x.device))
                     for i in range(0, len(x), batch_size)])
    return per_exit_accuracy(model, adv, y)


def zero_gradient_fraction(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Per exit: the fraction of samples whose input gradient of that exit's cross-entropy is exactly 0."""
    fractions = []
    with model_mode(model, "eval"), torch.enable_grad():
        for k in range(num_exits(model)):
            xi = x.detach().clone().requires_grad_(True)
            loss = F.cross_entropy(exit_logits(model, xi, k).float(), y, reduction="sum")
            (g,) = torch.autograd.grad(loss, [xi])
            fractions.append(float((g.flatten(1).abs().amax(1) == 0).double().mean()))
    return fractions


def run_masking_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float,
                       steps: int = 20, objective: str = "average",
                       eps_multiples: Sequence[float] = (0.25, 0.5, 1.0, 2.0),
                       large_eps: float = 1.0, large_eps_max_acc: float = 0.05, more_steps_factor: int = 4,
                       square_queries: int = 1000, seed: int = 0, tol: float | None = None,
                       batch_size: int = 250, not_fooled: str = "best") -> dict[str, Any]:
    """Run the gradient-masking checks; returns ``{"passed", "checks": {name: {"passed", ...}}, "config"}``."""
    n = len(x)
    tol = 1.0 / max(n, 1) + 1e-9 if tol is None else float(tol)

    def pgd(e: float, s: float, k: int) -> list[float]:
        atk = ATTACKS.get("pgd")(eps=e, step_size=s, steps=k, objective=objective, seed=seed, not_fooled=not_fooled)
        return attacked_accuracy(model, atk, x, y, batch_size)

    clean = per_exit_accuracy(model, x, y)
    checks: dict[str, dict[str, Any]] = {}

    # 1. accuracy is non-increasing in eps (step size scaled with eps)
    sweep = [(m * eps, pgd(m * eps, m * step_size, steps)) for m in eps_multiples]
    rises = [max(b - a for a, b in zip(sweep[i][1], sweep[i + 1][1])) for i in range(len(sweep) - 1)]
    checks["eps_monotone"] = {"passed": all(r <= tol for r in rises), "eps": [e for e, _ in sweep],
                              "accuracy": [a for _, a in sweep], "largest_rise": max(rises, default=0.0)}
    base = next((a for m, (_, a) in zip(eps_multiples, sweep) if m == 1.0), None) or pgd(eps, step_size, steps)

    # 2. an unbounded attack reaches ~0 accuracy
    big = pgd(large_eps, large_eps / 4, steps)
    checks["large_eps"] = {"passed": max(big) <= large_eps_max_acc, "eps": large_eps, "accuracy": big,
                           "threshold": large_eps_max_acc}

    # 3. more steps are at least as strong
    longer = pgd(eps, step_size, steps * more_steps_factor)
    checks["more_steps"] = {"passed": all(b <= a + tol for a, b in zip(base, longer)),
                            "steps": [steps, steps * more_steps_factor], "accuracy": [base, longer]}

    # 4. black-box does not beat white-box
    square = ATTACKS.get("square")(eps=eps, n_queries=square_queries, objective=objective, seed=seed,
                                   not_fooled=not_fooled)
    sq = attacked_accuracy(model, square, x, y, batch_size)
    checks["black_box"] = {"passed": all(s >= w - tol for s, w in zip(sq, base)), "square_accuracy": sq,
                           "pgd_accuracy": base, "n_queries": square_queries}

    # 5. no exit has all-zero input gradients
    zero = zero_gradient_fraction(model, x, y)
    checks["nonzero_gradients"] = {"passed": all(z < 1.0 for z in zero), "zero_fraction": zero}

    return {
        "passed": all(c["passed"] for c in checks.values()),
        "clean_accuracy": clean,
        "checks": checks,
        "config": {"n": n, "eps": eps, "step_size": step_size, "steps": steps, "objective": objective,
                   "eps_multiples": list(eps_multiples), "large_eps": large_eps,
                   "large_eps_max_acc": large_eps_max_acc, "more_steps_factor": more_steps_factor,
                   "square_queries": square_queries, "seed": seed, "tol": tol, "not_fooled": not_fooled},
    }
