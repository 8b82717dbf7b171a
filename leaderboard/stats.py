"""Statistics over training seeds: when is a lead real?

* :func:`mean_std` - mean, sample standard deviation (ddof=1; 0 for one value) and the values;
* :func:`t_interval` - the 95% Student-t interval of one mean over seeds;
* :func:`welch_diff` - mean difference ``a - b`` of two independent samples with its 95% Welch-t confidence
  interval (``scipy.stats``); ``significant`` is true only when the interval excludes zero. With fewer than
  two values on a side, or no spread at all, there is no interval and the difference is never significant.
* :func:`verdict` - ``"win"``, ``"loss"`` or ``"tie"`` from such a difference: a lead whose interval straddles
  zero is a tie.
* :func:`holm` - Holm's step-down adjustment of a family of p-values (family-wise error rate at most alpha);
* :func:`significance_ranks` - Chatbot Arena's rank rule over every pair of a table: a rank is 1 + the number of
  entries whose lead over this one is significant (Welch, Holm-corrected over the table's pairs). Ties never
  chain: a row tied with one that is tied with a third can still rank below that third.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from itertools import combinations

CONFIDENCE = 0.95
#: How the board corrects for testing every pair of a table at once (said on the page).
CORRECTION = "holm"


def mean_std(values: Sequence[float]) -> dict:
    vals = [float(v) for v in values]
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "n": len(vals), "values": vals}


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> list[float] | None:
    """The Student-t interval of the mean of ``values`` (None with fewer than two values or no spread)."""
    from scipy import stats

    vals = [float(v) for v in values]
    if len(vals) < 2 or statistics.stdev(vals) == 0.0:
        return None
    half = float(stats.t.ppf(0.5 + confidence / 2, len(vals) - 1)) * statistics.stdev(vals) / math.sqrt(len(vals))
    mean = statistics.fmean(vals)
    return [mean - half, mean + half]


def welch_diff(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """Difference of means ``mean(a) - mean(b)`` with its Welch-t interval at ``confidence``.

    Returns ``{"diff", "ci": [lo, hi] or None, "df", "p", "significant", "n_a", "n_b"}``; ``p`` is the
    two-sided Welch-t p-value (None without an interval), so ``significant`` is ``p < 1 - confidence``.
    """
    from scipy import stats

    a, b = [float(v) for v in a], [float(v) for v in b]
    diff = statistics.fmean(a) - statistics.fmean(b)
    out = {"diff": diff, "ci": None, "df": None, "p": None, "significant": False, "n_a": len(a), "n_b": len(b)}
    if len(a) < 2 or len(b) < 2:
        return out
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:
        return out
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    lo, hi = diff - half, diff + half
    p = float(2 * stats.t.sf(abs(diff) / se, df))
    out.update(ci=[lo, hi], df=df, p=p, significant=bool(lo > 0 or hi < 0))
    return out


def holm(pvalues: Sequence[float | None]) -> list[float]:
    """Holm-adjusted p-values, in the order given (None, a test that could not be made, counts as 1.0).

    Sorted ascending, the i-th smallest of m is multiplied by ``m - i`` (i from 0), the running maximum is
    taken and capped at 1. Rejecting every adjusted p below alpha keeps the family-wise error rate at alpha.
    """
    ps = [1.0 if p is None else float(p) for p in pvalues]
    m = len(ps)
    adjusted = [1.0] * m
    running = 0.0
    for i, j in enumerate(sorted(range(m), key=lambda j: ps[j])):
        running = max(running, min(1.0, (m - i) * ps[j]))
        adjusted[j] = running
    return adjusted


def significance_ranks(samples: Mapping[str, Sequence[float]], confidence: float = CONFIDENCE) -> dict:
    """Ranks of the named samples (one value per training seed each) by their mean, Chatbot Arena's rule.

    Every pair is compared with :func:`welch_diff`; the p-values of all pairs of the table are Holm-adjusted
    (:func:`holm`), and ``a`` beats ``b`` when ``a``'s mean is higher and the adjusted p is below
    ``1 - confidence``. A name's rank is 1 + the number of names that beat it.

    Returns ``{"rank": {name: int}, "beaten_by": {name: [names]}, "pairs": [{"a", "b", **welch_diff,
    "p_holm", "significant_holm"}]}`` (pairs with ``a`` the higher mean).
    """
    names = list(samples)
    means = {n: statistics.fmean(samples[n]) for n in names}
    pairs = []
    for x, y in combinations(names, 2):
        a, b = (x, y) if means[x] >= means[y] else (y, x)
        pairs.append({"a": a, "b": b, **welch_diff(samples[a], samples[b], confidence)})
    alpha = 1.0 - confidence
    beaten_by: dict[str, list[str]] = {n: [] for n in names}
    for pair, p_adj in zip(pairs, holm([p["p"] for p in pairs])):
        pair["p_holm"] = p_adj
        pair["significant_holm"] = bool(pair["p"] is not None and p_adj < alpha and pair["diff"] > 0)
        if pair["significant_holm"]:
            beaten_by[pair["b"]].append(pair["a"])
    return {"rank": {n: 1 + len(beaten_by[n]) for n in names}, "beaten_by": {n: sorted(v) for n, v in
                                                                          beaten_by.items()}, "pairs": pairs}


def verdict(d: dict) -> str:
    """``win`` / ``loss`` when the interval excludes zero, else ``tie``."""
    if not d["significant"]:
        return "tie"
    return "win" if d["diff"] > 0 else "loss"
