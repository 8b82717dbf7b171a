"""Figures from result files (matplotlib, Agg backend; nothing here runs a model).

* :func:`plot_budgeted` - budgeted prediction (paper Figs. 2-3): accuracy against mean MFLOPs per test
  sample, one line per result (defense) for one curve (an attack label, or ``clean``); markers on the
  upper (Pareto) envelope's points.
* :func:`plot_transfer` - the transferability map (paper Fig. 4): rows are the exit attacked, columns the
  exit measured, cells annotated with the success rate in %, exits labelled 1-based, and the mean of the
  off-diagonal cells in the title ("Avg. w/o Diag.").
* :func:`plot_budgeted_seeds` - the same under one attack, one line per entry: the mean over its training seeds
  of the accuracy each seed's envelope reaches at each budget, with a band (min-max over the seeds);
* :func:`plot_result` - both, beside a result JSON.

No text on a figure is parsed as mathtext or TeX (``text.parse_math`` and ``text.usetex`` off while a figure is
drawn): a name with ``$`` in it is shown as typed, never interpreted.

Every figure is written as PNG and SVG (or the ``formats`` asked for), without dates or random ids,
atomically (rendered to memory, then temp file + ``os.replace``).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .errors import UsageError
from .leaderboard.budget import accuracy_at, pareto_envelope
from .results import atomic_write

FORMATS = ("png", "svg")
#: No clock and no random ids in the files: the same result gives the same bytes (the leaderboard relies on it).
_METADATA = {"svg": {"Date": None}, "png": {"Software": None}}
#: Every figure is drawn under these settings: text from a result file is never parsed as mathtext or TeX.
PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}
#: The band drawn around the mean over training seeds in :func:`plot_budgeted_seeds` (said on the figure).
BAND = "min-max over training seeds"


def plain_text(func):
    """Run a plotting function with :data:`PLAIN_TEXT` (texts take ``parse_math`` when they are created)."""
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(PLAIN_TEXT):
            return func(*args, **kwargs)
    return wrapper


def _save(fig: Any, base: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    paths = []
    for fmt in formats:
        buf = io.BytesIO()
        with matplotlib.rc_context({"svg.hashsalt": "neokd-bench"}):
            fig.savefig(buf, format=fmt, dpi=150, bbox_inches="tight", metadata=_METADATA.get(fmt))
        paths.append(atomic_write(base.with_name(f"{base.name}.{fmt}"), buf.getvalue()))
    plt.close(fig)
    return paths


def _base(out: str | os.PathLike) -> Path:
    p = Path(out)
    return p.with_suffix("") if p.suffix.lower() in (".png", ".svg", ".pdf") else p


def result_label(result: dict[str, Any], fallback: str = "model") -> str:
    """A short name for a result: its defense's name, else the fallback."""
    d = result.get("defense")
    return d["name"] if isinstance(d, dict) and d.get("name") else fallback


def default_curve(results: Sequence[dict[str, Any]]) -> str:
    """The first attack curve present in every result, else ``clean``."""
    common = None
    for r in results:
        labels = [k for k in r["evaluation"].get("budgeted", {}).get("curves", {}) if k != "clean"]
        common = labels if common is None else [k for k in common if k in labels]
    return common[0] if common else "clean"


@plain_text
def plot_budgeted(results: dict[str, Any] | Sequence[dict[str, Any]], out: str | os.PathLike, *,
                  curve: str | None = None, labels: Sequence[str] | None = None,
                  formats: Sequence[str] = FORMATS) -> list[Path]:
    """Budgeted accuracy against MFLOPs, one line per result; writes ``out``.png and ``out``.svg."""
    results = [results] if isinstance(results, dict) else list(results)
    if not results:
        raise UsageError("no result to plot; pass at least one result JSON")
    for i, r in enumerate(results):
        if "budgeted" not in r["evaluation"]:
            raise UsageError(f"result {i + 1} has no budgeted evaluation; re-run eval with --metrics budgeted")
    curve = curve or default_curve(results)
    labels = list(labels) if labels else [result_label(r, f"result {i + 1}") for i, r in enumerate(results)]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for r, lab in zip(results, labels):
        curves = r["evaluation"]["budgeted"]["curves"]
        if curve not in curves:
            raise UsageError(f"result {lab!r} has no budgeted curve {curve!r}; it has {', '.join(curves)}")
        c = curves[curve]
        xs, ys = pareto_envelope(c["mflops"], c["accuracy"])
        line, = ax.plot(xs, 100 * ys, "-o", ms=3, label=lab)
        ax.plot(c["mflops"], [100 * a for a in c["accuracy"]], ".", ms=2, alpha=0.4, color=line.get_color())
    ax.set_xlabel("average budget per test sample (MFLOPs, fvcore)")
    ax.set_ylabel(f"{'clean' if curve == 'clean' else 'adversarial'} test accuracy (%)")
    ax.set_title(f"budgeted prediction: {curve}")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, _base(out), formats)


@plain_text
def plot_transfer(result: dict[str, Any], out: str | os.PathLike, *, title: str | None = None,
                  formats: Sequence[str] = FORMATS) -> list[Path]:
    """The transferability heatmap of one result, annotated like the paper's Fig. 4."""
    tr = result["evaluation"].get("transfer")
    if not tr:
        raise UsageError("the result has no transfer evaluation; re-run eval with --metrics transfer")
    m = [[100 * v for v in row] for row in tr["matrix"]]
    n = len(m)
    fig, ax = plt.subplots(figsize=(1.1 * n + 2, 1.0 * n + 1.5))
    im = ax.imshow(m, cmap="viridis", vmin=0, vmax=100)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{m[i][j]:.2f}", ha="center", va="center", color="black" if m[i][j] > 60 else "white",
                    fontsize=9)
    ticks = list(range(n))
    ax.set_xticks(ticks, [str(k + 1) for k in ticks])
    ax.set_yticks(ticks, [str(k + 1) for k in ticks])
    ax.set_xlabel("exit where success rate is measured")
    ax.set_ylabel("target exit")
    off = tr.get("offdiag_mean")
    summary = f"Avg. w/o Diag.: {100 * off:.2f}%" if off is not None else "Avg. w/o Diag.: n/a"
    ax.set_title(f"{title or result_label(result)} ({summary}, n={tr['n']})", fontsize=10)
    fig.colorbar(im, ax=ax, label="attack success rate (%)")
    return _save(fig, _base(out), formats)


def seed_band(curves: Sequence[dict[str, Any]], points: int = 60) -> tuple[list[float], list[float], list[float],
                                                                           list[float]]:
    """``(mflops, mean, low, high)`` of several seeds' curves of one attack: each seed's upper envelope,
    interpolated on a shared grid of budgets (where every seed has a point), averaged; the band is the min and
    max over the seeds."""
    import numpy as np

    lo = max(min(c["mflops"]) for c in curves)
    hi = min(max(c["mflops"]) for c in curves)
    grid = np.linspace(lo, hi, points) if hi > lo else np.array([lo])
    acc = np.array([accuracy_at(c["mflops"], c["accuracy"], grid) for c in curves])
    return grid.tolist(), acc.mean(axis=0).tolist(), acc.min(axis=0).tolist(), acc.max(axis=0).tolist()


@plain_text
def plot_budgeted_seeds(groups: dict[str, Sequence[dict[str, Any]]], out: str | os.PathLike, *, curve: str,
                        formats: Sequence[str] = FORMATS) -> list[Path]:
    """Budgeted accuracy against MFLOPs under ``curve``, one line per name of ``groups`` (name -> the budgeted
    curves of its training seeds): the mean over seeds with a band, min-max over the seeds (:func:`seed_band`)."""
    if not groups:
        raise UsageError("no result to plot; pass at least one result JSON")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, curves in groups.items():
        xs, mean, low, high = seed_band(curves)
        line, = ax.plot(xs, [100 * v for v in mean], "-", label=f"{name} (n={len(curves)})")
        ax.fill_between(xs, [100 * v for v in low], [100 * v for v in high], color=line.get_color(), alpha=0.2,
                        linewidth=0)
    ax.set_xlabel("average budget per test sample (MFLOPs, fvcore)")
    ax.set_ylabel(f"{'clean' if curve == 'clean' else 'adversarial'} test accuracy (%)")
    ax.set_title(f"budgeted prediction: {curve}\nline: mean over training seeds; band: {BAND.split(' over')[0]}",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, _base(out), formats)


def plot_result(result: dict[str, Any], dest: str | os.PathLike) -> list[Path]:
    """Every figure the result supports, beside it: ``dest`` is the result JSON path or its folder
    (then the figures are named ``result.*``). Returns the paths written."""
    dest = Path(dest)
    base = dest.with_suffix("") if dest.suffix == ".json" else dest / "result"
    paths: list[Path] = []
    if result["evaluation"].get("budgeted"):
        paths += plot_budgeted(result, base.with_name(base.name + ".budgeted"))
    if result["evaluation"].get("transfer") and result["evaluation"]["transfer"]["n"] > 0:
        paths += plot_transfer(result, base.with_name(base.name + ".transfer"))
    return paths
