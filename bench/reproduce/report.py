"""A grid's results in the paper's layout, and on the leaderboard (no torch).

:func:`publish` copies every finished run's ``result.json`` to ``<board>/<defense>-s<seed>.json`` (paths
made portable, as on every write), writes the folder's ``SUMMARY.md`` / ``summary.json`` / budgeted plot with
the leaderboard layer (:func:`write_summary`, the code of the site),
and :func:`paper_table` writes the table as the paper lays it out: per row, the measured mean ± std over
training seeds, the paper's reported number, and the 95% Welch interval of the difference against ``adv`` (a
lead whose interval straddles zero is a tie). Reported numbers come from ``leaderboard/reported/``. Measured
minus reported is printed only when the grid runs on the paper's own dataset: when it runs on another (the CPU
reproduction on Fashion-MNIST beside Table 2's CIFAR-10), the reported rows show the paper's numbers for the
layout only, and no difference across datasets is ever computed; the header says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..leaderboard.aggregate import (
    WORST,
    diff_text,
    dumps,
    load_results,
    make_entries,
    markdown,
    metric_values,
    summarize,
)
from ..leaderboard.reported import load_reported
from ..leaderboard.stats import welch_diff
from ..safe_io import load_json
from ..utils import atomic_write_text
from .grids import Grid, Run


def write_summary(folder: Path, title: str, target: float | None = None) -> str:
    """``summary.json``, ``SUMMARY.md`` and the seed-0 budgeted plot (of the results that have a budgeted
    evaluation) of a folder of result files; returns the markdown."""
    from ..plots import plot_budgeted
    from ..results import load_result

    summary = summarize(make_entries(load_results([folder])), target)
    text = markdown(summary, title)
    atomic_write_text(folder / "summary.json", dumps(summary))
    atomic_write_text(folder / "SUMMARY.md", text + "\n")
    seed0 = [doc for p in sorted(folder.glob("*-s0.json")) if "budgeted" in (doc := load_result(p))["evaluation"]]
    if seed0:
        plot_budgeted(seed0, folder / "budgeted-s0")
    return text


def copy_results(runs: Sequence[Run], board: Path) -> list[Path]:
    """Each finished run's result file as ``<board>/<defense>-s<seed>.json``, with portable paths."""
    from ..results import load_result, portable_paths, write_result

    board.mkdir(parents=True, exist_ok=True)
    out = []
    for r in runs:
        if r.result.is_file():
            out.append(write_result(board / f"{r.defense}-s{r.seed}.json", portable_paths(load_result(r.result))))
    return out


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


def _cell(ms: dict | None, n: int) -> str:
    """mean ± std over seeds; the mean alone from one seed (a std of 0.00 would claim a spread never measured)"""
    if not ms or ms.get("mean") is None:
        return "n/a"
    return f"{100 * ms['mean']:.2f}" + (f" ± {100 * ms['std']:.2f}" if n >= 2 else "")


def _measured(paths: list[Path]) -> dict[str, dict]:
    """defense -> leaderboard entry (mean ± std over seeds) of the given result files."""
    loaded = []
    for p in paths:
        loaded.append((p, load_json(p, "result file")))
    return {e["defense"]: e for e in make_entries(loaded)} if loaded else {}


def paper_table(grid: Grid, runs: Sequence[Run]) -> str:
    """The grid's table in the paper's layout, as markdown: first the per-exit worst case (the board's headline,
    which the paper does not report), then each attack of the paper's protocol, measured beside reported."""
    files = [r.eval_result if r.eval_result is not None else r.result for r in runs]
    entries = _measured([p for p in files if p is not None and p.is_file()])
    reported = {(e["table"], e["part"], e["defense"]): e for e in load_reported()}
    paper_ds = {e["dataset"] for key, e in reported.items() if (key[0], key[1]) in grid.reported}
    same_data = not paper_ds or paper_ds == {grid.dataset}
    paper_names = ", ".join(sorted(paper_ds))
    what_reported = ("the paper's number; `difference` is measured minus reported" if same_data else
                     f"the paper's number on {paper_names}, shown for the layout only (no difference "
                     f"is computed across datasets)")
    lines = [f"# {grid.title}", "",
             f"Measured here: dataset `{grid.dataset}`, preset `{grid.preset}`, trained with the {grid.train_attack} "
             f"attack; top-1 accuracy (%) as mean ± std over training seeds (n = seeds finished). `reported` is "
             f"{what_reported}; `vs adv` is the mean difference "
             f"against `adv` over seeds with its 95% Welch interval (tie: the interval straddles zero); `NEO-KD vs "
             f"this` is NEO-KD minus the row, the same way (on the ablation rows NKD and EOKD: what the component "
             f"the row lacks adds, the question of the paper's Table 6).",
             ""]
    if not same_data:
        lines += [f"The reported numbers are the paper's on {paper_names}, not on "
                  f"{grid.dataset}: compare the layout and the ordering of rows, not the values.", ""]
    if grid.note:
        lines += [f"Note: {grid.note}.", ""]
    if grid.metric in ("budgeted", "transfer"):
        lines += ["This is a figure of the paper; its measured numbers (budgets to reach a target accuracy, "
                  "transferability) are in `SUMMARY.md` beside the copied results.", ""]
        return "\n".join(lines)
    parts = grid.attacks or ("clean",)
    if parts != ("clean",) and any(WORST in e["accuracy"] for e in entries.values()):
        lines += [f"## {WORST_TITLE}", "", WORST_NOTE, ""]
        lines += _part_rows(grid, entries, WORST, None, None)
    for i, label in enumerate(parts):
        metric = "clean" if label == "clean" else label
        where = grid.reported[i] if i < len(grid.reported) else None
        head = f"({where[1]}) " if where else ""
        lines += [f"## {head}{'clean accuracy' if metric == 'clean' else metric}"
                  + (f" (paper Table {where[0]}{where[1]})" if where else ""), ""]
        rep = {d: reported.get((*where, d)) for d, _ in grid.rows()} if where else None
        lines += _part_rows(grid, entries, metric, rep, None if same_data else paper_names)
    return "\n".join(lines)


#: The section of the per-exit worst case in a grid's table, and what it is.
WORST_TITLE = "worst case per exit (the board's headline; not reported by the paper)"
WORST_NOTE = ("A test image counts at exit k only if exit k is correct on every adversarial example the evaluation "
              "made for it (every attack, every candidate of max-average, every attack seed, the per-exit attacks "
              "on the images they ran on). The paper reports no such number, so this part has no `reported` row; "
              "its protocol's attacks follow, each at or above this one.")


def _part_rows(grid: Grid, entries: dict[str, dict], metric: str, reported: dict[str, dict | None] | None,
               other_data: str | None) -> list[str]:
    """One part of the table: per row of the grid, measured (and, with ``reported``, the paper's number, and the
    difference when ``other_data`` is None), then the row against adv and NEO-KD against the row."""
    L = grid.num_exits
    lines = ["| row | | " + " | ".join(f"exit {k + 1}" for k in range(L)) + " | avg |",
             "| --- | --- |" + " --- |" * (L + 1)]
    base, full = entries.get("adv"), entries.get("neokd")
    for defense, row in grid.rows():
        e = entries.get(defense)
        acc = (e or {}).get("accuracy", {}).get(metric)
        n = len(e["seeds"]) if e and acc else 0
        meas = [*(acc["per_exit"] if acc else [None] * L), acc["avg"] if acc else None]
        rep = (reported or {}).get(defense)
        rep_vals = [*(v / 100 for v in rep["top1"]["per_exit"]), rep["top1"]["avg"] / 100] if rep else None
        lines.append(f"| {row} | measured (n={n}) | " + " | ".join(_cell(m, n) for m in meas) + " |")
        if rep_vals and len(rep_vals) == L + 1:
            where_note = f" ({other_data}, layout only)" if other_data else ""
            lines.append(f"| | reported{where_note} | " + " | ".join(_pct(v) for v in rep_vals) + " |")
            if other_data is None:
                diffs = [None if not m or m.get("mean") is None else m["mean"] - v for m, v in zip(meas, rep_vals)]
                lines.append("| | difference | " + " | ".join(
                    "n/a" if d is None else f"{100 * d:+.2f}" for d in diffs) + " |")
        if base is not None and defense != "adv" and acc and metric in base["accuracy"]:
            lines.append(_welch_line("vs adv", e, base, metric, L))
        if full is not None and defense not in ("adv", "neokd") and acc and metric in full["accuracy"]:
            # what NEO-KD's other component adds to this one (Table 6's question)
            lines.append(_welch_line("NEO-KD vs this", full, e, metric, L))
    lines.append("")
    return lines


def _welch_line(label: str, a: dict, b: dict, metric: str, L: int) -> str:
    """``| | label | ...`` : entry ``a`` minus entry ``b`` per exit and on the average, with the Welch interval."""
    cells = []
    for k in [*range(L), None]:
        va, vb = metric_values(a["_runs"], metric, k), metric_values(b["_runs"], metric, k)
        cells.append(diff_text(welch_diff(va, vb)) if va and vb else "n/a")
    return f"| | {label} | " + " | ".join(cells) + " |"


def publish(grid: Grid, runs: Sequence[Run], runs_dir: Path, board: Path | None, title: str = "") -> list[Path]:
    """Write the paper-layout table next to the runs (``<runs-dir>/TABLE.md``) and, with ``board``, copy the
    results there with their summary (titled ``title``) and the same table (``<board>/<grid>.md``). Returns
    the files written."""
    text = paper_table(grid, runs) + "\n"
    written = [atomic_write_text(runs_dir / "TABLE.md", text)]
    if board is not None and any(r.result.is_file() for r in runs):
        copy_results(runs, board)
        write_summary(board, title or board.name)
        written += [atomic_write_text(board / f"{grid.name}.md", text), board / "SUMMARY.md"]
    return written

