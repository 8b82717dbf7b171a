"""Budgeted-prediction arithmetic on curves that are already measured (no torch).

* :func:`pareto_envelope` - the upper envelope of (cost, accuracy) points;
* :func:`budget_to_reach` - the budget needed for a target accuracy, linearly interpolated on that envelope;
* :func:`accuracy_at` - the accuracy that envelope reaches at given budgets (the best of the points that cost no
  more, linearly interpolated between envelope points; NaN below the cheapest point);
* :func:`savings` / :func:`format_savings` - "10.59 vs 20.46 MFLOPs, 48.24% saved" as the paper writes it
  (saving = 1 - a / b).
"""

from __future__ import annotations

import numpy as np


def pareto_envelope(costs, accuracies) -> tuple[np.ndarray, np.ndarray]:
    """The upper envelope: points, sorted by cost, whose accuracy beats every cheaper point's."""
    c = np.asarray(costs, dtype=np.float64)
    a = np.asarray(accuracies, dtype=np.float64)
    order = np.lexsort((-a, c))  # by cost, then best accuracy first
    env_c, env_a = [], []
    best = -np.inf
    for i in order:
        if a[i] > best:
            if env_c and c[i] == env_c[-1]:
                env_a[-1] = a[i]
            else:
                env_c.append(c[i])
                env_a.append(a[i])
            best = a[i]
    return np.array(env_c), np.array(env_a)


def budget_to_reach(costs, accuracies, target: float) -> float | None:
    """Smallest budget at which the piecewise-linear upper envelope reaches ``target`` accuracy.

    ``None`` when the curve never reaches it (the paper's "unable to achieve this target accuracy").
    """
    env_c, env_a = pareto_envelope(costs, accuracies)
    if env_a.size == 0 or env_a[-1] < target:
        return None
    j = int(np.argmax(env_a >= target))
    if j == 0:
        return float(env_c[0])
    c0, c1, a0, a1 = env_c[j - 1], env_c[j], env_a[j - 1], env_a[j]
    return float(c0 + (target - a0) * (c1 - c0) / (a1 - a0))


def accuracy_at(costs, accuracies, budgets) -> np.ndarray:
    """Accuracy reachable at each of ``budgets`` on the piecewise-linear upper envelope (the last point's
    accuracy beyond the most expensive point; NaN below the cheapest)."""
    env_c, env_a = pareto_envelope(costs, accuracies)
    b = np.asarray(budgets, dtype=np.float64)
    out = np.interp(b, env_c, env_a)
    return np.where(b < env_c[0], np.nan, out)


def savings(budget: float, reference: float) -> float:
    """Fraction of the reference budget saved: ``1 - budget / reference``."""
    if reference <= 0:
        raise ValueError("reference budget must be positive")
    return 1.0 - budget / reference


def format_savings(budget: float, reference: float, name: str | None = None, reference_name: str | None = None
                   ) -> str:
    """``"10.59 vs 20.46 MFLOPs, 48.24% saved"`` (names prefix each budget when given)."""
    a = f"{name}: {budget:.2f}" if name else f"{budget:.2f}"
    b = f"{reference_name}: {reference:.2f}" if reference_name else f"{reference:.2f}"
    return f"{a} vs {b} MFLOPs, {100 * savings(budget, reference):.2f}% saved"
