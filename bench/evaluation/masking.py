"""Gradient-masking checks for multi-exit models (Athalye et al., ICML 2018, Sec. 3.1 "characteristic
behaviours"; Croce & Hein's AutoAttack flags), adapted so each number is a per-exit accuracy.

A defense whose robustness comes from obfuscated gradients shows tell-tale signs; each check below tests
one. ``run_masking_checks`` returns, for each, a ``passed`` flag and the numbers behind it:

* ``eps_monotone`` - robust accuracy does not rise as eps grows (PGD on a sweep of eps multiples);
* ``large_eps`` - at a very large eps (default 1.0: the whole [0, 1] image space) accuracy falls to ~0;
* ``more_steps`` - more PGD steps are at least as strong as fewer;
* ``black_box`` - black-box Square does not beat white-box PGD, by a paired test on the same samples
  (:func:`paired_black_box`): only the samples on which the two attacks disagree carry information, and
  Square winning more of them than chance allows (exact one-sided binomial test, scipy) fails the check. A
  Square advantage within that noise passes (Square's examples join the worst case per exit anyway);
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

import numpy as np
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
    return [float(v) for v in attacked_table(model, attack, x, y, batch_size).mean(axis=0)]


def attacked_table(model: nn.Module, attack: Any, x: torch.Tensor, y: torch.Tensor, batch_size: int = 250
                   ) -> np.ndarray:
    """``[n, L]`` bool: exit ``k`` is right on ``attack``'s ``x_adv`` of sample ``i`` (made batch by batch with the
    samples' positions as ``index``)."""
    adv = torch.cat([attack_batch(attack, model, x[i:i + batch_size], y[i:i + batch_size],
                                  torch.arange(i, min(i + batch_size, len(x)), device=x.device))
                     for i in range(0, len(x), batch_size)]) if len(x) else x
    return correct_table(model, adv, y)


@torch.no_grad()
def correct_table(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """``[n, L]`` bool: exit ``k`` predicts ``y[i]`` on ``x[i]`` (eval mode, restored afterwards)."""
    rows = []
    with model_mode(model, "eval"):
        for i in range(0, len(x), batch_size):
            outs = model(x[i:i + batch_size])
            rows.append(torch.stack([o.argmax(1) == y[i:i + batch_size] for o in outs], dim=1).cpu())
    return torch.cat(rows).numpy() if rows else np.zeros((0, num_exits(model)), dtype=bool)


ALPHA = 0.01  # one-sided level of the paired black-box test, per exit


def paired_black_box(square: np.ndarray, white: np.ndarray, alpha: float = ALPHA) -> dict[str, Any]:
    """Paired comparison of a black-box and a white-box attack on the same samples, per exit.

    ``square``, ``white``: ``[n, L]`` bool, exit ``k`` right after each attack. Per exit, ``b`` samples only
    Square fools and ``c`` only the white-box attack fools; without masking Square wins a discordant sample
    with probability at most 1/2, so the exact one-sided binomial test (McNemar's exact test,
    :func:`scipy.stats.binomtest`) of ``b`` successes in ``b + c`` at 1/2 gives the chance of a Square lead at
    least this large from noise alone. An exit fails when that p-value is below ``alpha``: a small lead (within
    the noise of the discordant pairs) passes, a large one is flagged. Returns per-exit ``b``, ``c``, ``p`` and
    ``passed``."""
    from scipy.stats import binomtest

    square, white = np.asarray(square, dtype=bool), np.asarray(white, dtype=bool)
    b = (~square & white).sum(axis=0)
    c = (square & ~white).sum(axis=0)
    p = [float(binomtest(int(bi), int(bi + ci), 0.5, alternative="greater").pvalue) if bi + ci else 1.0
         for bi, ci in zip(b, c)]
    return {"square_only": [int(v) for v in b], "white_only": [int(v) for v in c], "p_value": p,
            "alpha": float(alpha), "passed_per_exit": [bool(v >= alpha) for v in p],
            "passed": all(v >= alpha for v in p)}


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

    tables: dict[tuple[float, float, int], np.ndarray] = {}

    def pgd(e: float, s: float, k: int) -> list[float]:
        atk = ATTACKS.get("pgd")(eps=e, step_size=s, steps=k, objective=objective, seed=seed, not_fooled=not_fooled)
        tables[(e, s, k)] = attacked_table(model, atk, x, y, batch_size)
        return [float(v) for v in tables[(e, s, k)].mean(axis=0)]

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
    sq_table = attacked_table(model, square, x, y, batch_size)
    sq = [float(v) for v in sq_table.mean(axis=0)]
    base_table = tables[(eps, step_size, steps)]
    paired = paired_black_box(sq_table, base_table)
    checks["black_box"] = {"passed": paired["passed"], "square_accuracy": sq,
                           "pgd_accuracy": [float(v) for v in base_table.mean(axis=0)], "n_queries": square_queries,
                           "paired": paired}

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


def protocol_masking(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ev: dict[str, Any], *,
                     device: Any = "cpu", alpha: float = ALPHA) -> dict[str, Any]:
    """``evaluation.masking`` of the reference protocol, from what evaluation already stored (no attack runs
    again): for every Square attack on one exit (``exit:k``), the paired black-box test
    (:func:`paired_black_box`) at exit ``k`` against the worst case of the white-box attacks (every attack
    but Square, every max-average candidate, every seed) on the same samples; and the zero-gradient check
    per exit on those samples. Returns ``{"passed", "checks": [{"name", "passed", "detail"}]}``."""
    from ..attacks.base import Objective
    from .outcomes import joins, record_table

    out = ev["outcomes"]
    L = int(out["num_exits"])
    attacks = ev["attacks"]
    white = np.ones((int(out["n"]), L), dtype=bool)
    for rec in out["records"]:
        a = attacks.get(rec["label"], {})
        if a.get("name") != "square" and joins(a, out.get("eps")):
            idx, table = record_table(rec, L)
            white[idx] &= table
    checks = []
    for label, a in attacks.items():
        obj = Objective.parse(str((a.get("config") or {}).get("objective", "average")))
        if a.get("name") != "square" or obj.kind != "exit":
            continue
        k = int(obj.exit)  # type: ignore[arg-type]
        for rec in (r for r in out["records"] if r["label"] == label):
            idx, table = record_table(rec, L)
            res = paired_black_box(table[:, k:k + 1], white[idx, k:k + 1], alpha)
            b, c, p = res["square_only"][0], res["white_only"][0], res["p_value"][0]
            checks.append({"name": f"black_box exit {k + 1} ({label}, seed {rec['seed']})", "passed": res["passed"],
                           "detail": f"on {len(idx)} images Square alone fooled exit {k + 1} on {b}, the white-box "
                                     f"attacks alone on {c}; exact one-sided binomial p = {p:.3g} "
                                     f"(fails below {alpha})"})
    n_grad = max((int(a["n"]) for a in attacks.values() if isinstance(a.get("n"), int)), default=len(y))
    xs, ys = x[:n_grad].to(device), y[:n_grad].to(device)
    zero = zero_gradient_fraction(model, xs, ys)
    checks.append({"name": "nonzero_gradients", "passed": all(z < 1.0 for z in zero),
                   "detail": f"fraction of the first {len(ys)} images with an all-zero input gradient, per exit: "
                             + ", ".join(f"{z:.3f}" for z in zero)})
    return {"passed": all(c["passed"] for c in checks), "checks": checks}
