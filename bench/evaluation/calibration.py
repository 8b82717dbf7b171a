"""Calibration per exit: expected calibration error, clean and adversarial, with the
reliability diagram's bins, as Zero-Time-Waste (Wołczyk et al., NeurIPS 2021) reports it.

Each exit is scored on its own softmax: confidence = its maximum, correct = its top-1 is the label. The
confidences are split into ``bins`` equal-width bins on [0, 1] (bin ``b`` is ``(b/B, (b+1)/B]``, the
first one also holds 0); ECE is ``sum_b (n_b / N) * |accuracy_b - mean confidence_b|`` (Guo et al. 2017).
Adversarial ECE is on the attacked test tables of each attack, averaged over attack seeds (with every
seed's value).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

BINS = 15  # Guo et al. 2017 and Zero-Time-Waste use 15 equal-width bins


def reliability(conf, correct, bins: int = BINS) -> dict[str, list]:
    """Per-bin sample count, mean confidence and accuracy (``None`` for an empty bin)."""
    c = np.asarray(conf, dtype=np.float64).ravel()
    ok = np.asarray(correct, dtype=np.float64).ravel()
    idx = np.clip(np.ceil(c * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    conf_sum = np.bincount(idx, weights=c, minlength=bins)
    acc_sum = np.bincount(idx, weights=ok, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf, acc = conf_sum / count, acc_sum / count
    none = lambda v: [None if n == 0 else float(x) for x, n in zip(v, count)]
    return {"count": [int(n) for n in count], "confidence": none(mean_conf), "accuracy": none(acc)}


def ece(conf, correct, bins: int = BINS) -> float:
    """Expected calibration error of one exit: ``sum_b n_b / N * |acc_b - conf_b|``."""
    r = reliability(conf, correct, bins)
    n = sum(r["count"])
    if n == 0:
        return 0.0
    return float(sum(k / n * abs(a - c) for k, a, c in zip(r["count"], r["accuracy"], r["confidence"]) if k))


def exit_calibration(out: Any, bins: int = BINS) -> dict[str, Any]:
    """ECE per exit and the reliability bins per exit of one outcome table (own softmax of each exit)."""
    L = out.conf.shape[1]
    return {"ece": [ece(out.conf[:, k], out.top1[:, k], bins) for k in range(L)],
            "reliability": [reliability(out.conf[:, k], out.top1[:, k], bins) for k in range(L)]}


def calibration_section(clean: Any, adv_test: dict[str, list[Any]], seeds: dict[str, Sequence[int]],
                        bins: int = BINS) -> dict[str, Any]:
    """``evaluation.calibration``: clean per-exit ECE and bins, and per attack the mean (and every seed's)
    per-exit ECE with the first seed's bins."""
    adversarial = {}
    for label, outs in adv_test.items():
        if not outs:
            continue
        per_seed = [exit_calibration(o, bins) for o in outs]
        values = np.array([p["ece"] for p in per_seed])
        adversarial[label] = {"ece": [float(v) for v in values.mean(axis=0)],
                              "ece_std": [float(v) for v in (values.std(axis=0, ddof=1) if len(values) > 1
                                                              else np.zeros(values.shape[1]))],
                              "per_seed": [{"seed": int(s), "ece": p["ece"]} for s, p in zip(seeds[label], per_seed)],
                              "reliability": per_seed[0]["reliability"]}
    return {"bins": int(bins), "binning": "equal-width on [0, 1]; confidence = max softmax of each exit alone",
            "clean": exit_calibration(clean, bins), "adversarial": adversarial}


def plot_reliability(result: dict[str, Any], out) -> list:
    """Reliability diagrams (one panel per exit; clean and each attack), PNG and SVG beside ``out``."""
    from ..plots import _base, _save, plt

    cal = result["evaluation"]["calibration"]
    curves = {"clean": cal["clean"], **cal["adversarial"]}
    L = len(cal["clean"]["ece"])
    fig, axes = plt.subplots(1, L, figsize=(3.2 * L, 3.2), squeeze=False)
    for k, ax in enumerate(axes[0]):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        for label, entry in curves.items():
            r = entry["reliability"][k]
            pts = [(c, a) for c, a in zip(r["confidence"], r["accuracy"]) if c is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=f"{label} (ECE {100 * entry['ece'][k]:.1f}%)")
        ax.set_title(f"exit {k + 1}")
        ax.set_xlabel("confidence")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("accuracy")
    return _save(fig, _base(out))
