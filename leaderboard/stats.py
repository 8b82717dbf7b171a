"""Statistics over training seeds: when is a lead real?

* :func:`mean_std` - mean, sample standard deviation (ddof=1; 0 for one value) and the values;
* :func:`welch_diff` - mean difference ``a - b`` of two independent samples with its 95% Welch-t confidence
  interval (``scipy.stats``); ``significant`` is true only when the interval excludes zero. With fewer than
  two values on a side, or no spread at all, there is no interval and the difference is never significant.
* :func:`verdict` - ``"win"``, ``"loss"`` or ``"tie"`` from such a difference: a lead whose interval straddles
  zero is a tie.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

CONFIDENCE = 0.95


def mean_std(values: Sequence[float]) -> dict:
    vals = [float(v) for v in values]
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "n": len(vals), "values": vals}


def welch_diff(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """Difference of means ``mean(a) - mean(b)`` with its Welch-t interval at ``confidence``.

    Returns ``{"diff", "ci": [lo, hi] or None, "df", "significant", "n_a", "n_b"}``.
    """
    from scipy import stats

    a, b = [float(v) for v in a], [float(v) for v in b]
    diff = statistics.fmean(a) - statistics.fmean(b)
    out = {"diff": diff, "ci": None, "df": None, "significant": False, "n_a": len(a), "n_b": len(b)}
    if len(a) < 2 or len(b) < 2:
        return out
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:
        return out
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    lo, hi = diff - half, diff + half
    out.update(ci=[lo, hi], df=df, significant=bool(lo > 0 or hi < 0))
    return out


def verdict(d: dict) -> str:
    """``win`` / ``loss`` when the interval excludes zero, else ``tie``."""
    if not d["significant"]:
        return "tie"
    return "win" if d["diff"] > 0 else "loss"
