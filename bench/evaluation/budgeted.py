"""Budgeted prediction (paper Sec. 4 "Inference scenarios", Result 2, Figs. 2-3, App. A.3).

Everything here is a pure function on per-sample, per-exit *tables* (numpy arrays of shape ``(N, L)``), so
the procedure can be checked by hand and thresholds provably come from validation data only:

* :func:`ensemble_tables` - the *ensemble strategy* (on by default, paper Result 2): the prediction at exit
  ``k`` is the mean softmax of exits ``0..k``; its confidence is the maximum of that mean.
* :func:`thresholds_for_allocation` - App. A.3: given an allocation ``(n_1, ..., n_L)`` of validation
  samples, exit 1's threshold is the ``n_1``-th largest confidence at exit 1 over all validation samples;
  the samples that would not leave (confidence below the threshold) go on to exit 2, whose threshold is the
  ``n_2``-th largest among them; and so on. The last exit takes every sample left (threshold ``-inf``).
  An exit allocated 0 samples gets ``+inf`` (nobody leaves there). It takes validation confidences only.
* :func:`exit_indices` - a sample leaves at the first exit whose confidence is ``>=`` its threshold (the
  paper says "larger than"; ``>=`` makes exactly ``n_k`` validation samples leave at exit ``k`` when
  confidences are distinct, as in MSDNet's reference code).
* Cost: a sample leaving at exit ``k`` costs the cumulative fvcore count up to exit ``k`` (earlier heads
  included, :func:`neokd_bench.flops.exit_flops`); the budget of an allocation is the mean cost over the
  test samples.
* :func:`allocation_family` - about 100 allocations from front-heavy to back-heavy. The paper does not say
  how its 100 allocations were chosen; we use MSDNet's geometric family: exit ``k`` (1-based) gets weight
  ``p**k``, normalised, for ``p`` log-spaced from ``1/p_max`` to ``p_max`` (default 20, so the extremes put
  about 95% of the samples on the first / last exit), plus the two extreme allocations "all at exit 1" and
  "all at the last exit". Counts are rounded by largest remainder so they sum to the validation size;
  duplicate allocations (possible for tiny validation sets) are dropped, and the list is ordered by mean
  exit index (front-heavy first).
* :func:`budget_to_reach` - the budget needed for a target accuracy, by linear interpolation on the upper
  (Pareto) envelope of the curve; :func:`format_savings` writes "10.59 vs 20.46 MFLOPs, 48.24% saved" as
  the paper does (saving = 1 - a / b).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

# The budget arithmetic lives in the torch-free leaderboard layer; re-exported here for the evaluation.
from ..leaderboard.budget import budget_to_reach, format_savings, pareto_envelope, savings  # noqa: F401

# numpy only at import time: result readers (compare, plots) use this module without loading torch.
if TYPE_CHECKING:
    import torch

ArrayLike = "np.ndarray | torch.Tensor | Sequence"


def _np(a) -> np.ndarray:
    if hasattr(a, "detach"):  # a torch.Tensor
        return a.detach().cpu().numpy()
    return np.asarray(a)


# --------------------------------------------------------------------------------------------------
# ensemble strategy
# --------------------------------------------------------------------------------------------------
def ensemble_tables(probs: torch.Tensor, labels: torch.Tensor | None = None, *, ensemble: bool = True
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Confidence and prediction at every exit from softmax probabilities ``probs`` of shape (N, L, C).

    With ``ensemble`` (default), exit ``k`` uses the mean of the softmax of exits ``0..k``. Returns
    ``(confidence (N, L), prediction (N, L), correct (N, L) or None when labels is None)``.
    """
    import torch

    if probs.ndim != 3:
        raise ValueError(f"probs must be (N, L, C), got shape {tuple(probs.shape)}")
    p = probs.float()
    if ensemble:
        counts = torch.arange(1, p.shape[1] + 1, dtype=p.dtype, device=p.device).view(1, -1, 1)
        p = p.cumsum(dim=1) / counts
    conf, pred = p.max(dim=2)
    correct = pred.eq(labels.view(-1, 1)) if labels is not None else None
    return conf, pred, correct


# --------------------------------------------------------------------------------------------------
# thresholds (validation data only)
# --------------------------------------------------------------------------------------------------
def thresholds_for_allocation(val_conf, allocation: Sequence[int]) -> np.ndarray:
    """Per-exit thresholds from validation confidences ``val_conf`` (N_val, L) and an allocation (App. A.3).

    ``allocation[k]`` is the number of validation samples meant to leave at exit ``k``; the last entry is
    implied (every sample left). Returns an array of L floats: ``+inf`` for an exit allocated no sample,
    ``-inf`` for the last exit.
    """
    conf = _np(val_conf).astype(np.float64)
    if conf.ndim != 2:
        raise ValueError(f"val_conf must be (N, L), got shape {conf.shape}")
    n, num_exits = conf.shape
    alloc = [int(a) for a in allocation]
    if len(alloc) != num_exits:
        raise ValueError(f"allocation has {len(alloc)} entries for {num_exits} exits")
    if any(a < 0 for a in alloc) or sum(alloc) != n:
        raise ValueError(f"allocation {alloc} must be non-negative and sum to the {n} validation samples")
    thresholds = np.full(num_exits, -np.inf)
    remaining = np.ones(n, dtype=bool)
    for k in range(num_exits - 1):
        c = conf[remaining, k]
        if alloc[k] == 0 or c.size == 0:
            thresholds[k] = np.inf
            continue
        nk = min(alloc[k], c.size)
        thresholds[k] = np.sort(c)[::-1][nk - 1]  # the n_k-th largest
        remaining &= ~(conf[:, k] >= thresholds[k])
    return thresholds


def exit_indices(conf, thresholds) -> np.ndarray:
    """0-based exit at which each sample leaves: the first ``k`` with ``conf[:, k] >= thresholds[k]``."""
    c = _np(conf).astype(np.float64)
    t = np.asarray(thresholds, dtype=np.float64).copy()
    t[-1] = -np.inf  # the last exit takes everything left
    leaves = c >= t.reshape(1, -1)
    return leaves.argmax(axis=1)


@dataclass(frozen=True)
class BudgetPoint:
    mean_cost: float  # in the unit of exit_costs
    accuracy: float
    exit_counts: tuple[int, ...]


def budgeted_point(conf, correct, thresholds, exit_costs: Sequence[float]) -> BudgetPoint:
    """Accuracy and mean cost on a (test) table under given thresholds.

    ``conf`` and ``correct`` are (N, L) (ensemble confidence and ensemble correctness); ``exit_costs[k]``
    is the cumulative cost of leaving at exit ``k``.
    """
    exits = exit_indices(conf, thresholds)
    corr = _np(correct).astype(bool)
    costs = np.asarray(exit_costs, dtype=np.float64)
    if costs.shape != (corr.shape[1],):
        raise ValueError(f"exit_costs has {costs.size} entries for {corr.shape[1]} exits")
    n = len(exits)
    counts = np.bincount(exits, minlength=corr.shape[1])
    return BudgetPoint(
        mean_cost=float(costs[exits].mean()) if n else 0.0,
        accuracy=float(corr[np.arange(n), exits].mean()) if n else 0.0,
        exit_counts=tuple(int(c) for c in counts),
    )


# --------------------------------------------------------------------------------------------------
# allocations
# --------------------------------------------------------------------------------------------------
def _round_to_total(weights: np.ndarray, total: int) -> tuple[int, ...]:
    raw = weights / weights.sum() * total
    base = np.floor(raw).astype(int)
    short = total - int(base.sum())
    order = np.argsort(-(raw - base), kind="stable")
    base[order[:short]] += 1
    return tuple(int(v) for v in base)


def allocation_family(n_val: int, num_exits: int, count: int = 100, p_max: float = 20.0) -> list[tuple[int, ...]]:
    """About ``count`` allocations of ``n_val`` validation samples to ``num_exits`` exits, front- to back-heavy.

    Exit k (1-based) gets weight ``p**k`` for ``p`` log-spaced on ``[1/p_max, p_max]`` (``count - 2``
    values), preceded by "all at exit 1" and followed by "all at the last exit". Duplicates are dropped;
    the result is ordered by mean exit index.
    """
    if n_val < 1 or num_exits < 1 or count < 2:
        raise ValueError("need n_val >= 1, num_exits >= 1 and count >= 2")
    first = tuple([n_val] + [0] * (num_exits - 1))
    last = tuple([0] * (num_exits - 1) + [n_val])
    out: list[tuple[int, ...]] = [first]
    k = np.arange(1, num_exits + 1, dtype=np.float64)
    for log_p in np.linspace(-math.log(p_max), math.log(p_max), max(count - 2, 0)):
        w = np.exp(log_p * k - (log_p * k).max())  # p**k, scaled to avoid overflow
        out.append(_round_to_total(w, n_val))
    out.append(last)
    seen: set[tuple[int, ...]] = set()
    uniq = []
    for a in out:
        if a not in seen:
            seen.add(a)
            uniq.append(a)
    # rounding can swap neighbours for small n_val: order by mean exit index, front-heavy first
    return sorted(uniq, key=lambda a: sum(k * n for k, n in enumerate(a)))


# --------------------------------------------------------------------------------------------------
# curves
# --------------------------------------------------------------------------------------------------
def budgeted_curve(val_conf, test_conf, test_correct, exit_costs: Sequence[float],
                   allocations: Sequence[Sequence[int]], calibrate=None) -> dict[str, np.ndarray]:
    """One point per allocation: thresholds from ``val_conf``, cost and accuracy on the test table.

    ``calibrate(val_conf, allocation) -> thresholds`` defaults to :func:`thresholds_for_allocation` (an exit
    policy passes its own, :meth:`neokd_bench.evaluation.policies.ExitPolicy.calibrate`).

    Returns ``{"thresholds": (A, L), "cost": (A,), "accuracy": (A,), "exit_counts": (A, L)}``.
    """
    th, cost, acc, counts = [], [], [], []
    for alloc in allocations:
        t = (calibrate or thresholds_for_allocation)(val_conf, alloc)
        pt = budgeted_point(test_conf, test_correct, t, exit_costs)
        th.append(t)
        cost.append(pt.mean_cost)
        acc.append(pt.accuracy)
        counts.append(pt.exit_counts)
    return {"thresholds": np.array(th), "cost": np.array(cost), "accuracy": np.array(acc),
            "exit_counts": np.array(counts)}


def thresholds_to_json(thresholds: np.ndarray) -> list:
    """Thresholds as JSON (``+inf``/``-inf`` -> null)."""
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim == 1:
        return [float(v) if math.isfinite(v) else None for v in t]
    return [thresholds_to_json(row) for row in t]
