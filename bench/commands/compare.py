"""`neokd-bench compare A.json B.json [...] [--target ACC] [--curve LABEL] [--plot out.png]`.

Compares result files as the paper's Result 2 does: the budget (mean MFLOPs per test sample) each needs to
reach a target accuracy on a budgeted curve, by linear interpolation on the curve's upper envelope, and the
saving of the first file against each other one ("neokd: 10.59 vs adv: 20.46 MFLOPs, 48.24% saved").
The default target is the smallest of the files' best accuracies on that curve (with two files where the
first is better, that is the other's maximum accuracy, as in the paper). Also prints the anytime
accuracy of every file side by side.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UsageError, check
from ..leaderboard.aggregate import PAPER_PROTOCOL, WORST


def add_parser(sub: Any) -> None:
    p = sub.add_parser("compare", help="compare result files: budget savings and anytime accuracy")
    p.add_argument("results", nargs="+", metavar="RESULT", help="result JSON files; the first is compared "
                                                                "against each of the others")
    p.add_argument("--target", type=float, help="target accuracy, as a fraction (0.4121) or percent (41.21); "
                                                "default: the smallest best accuracy among the files")
    p.add_argument("--curve", help="budgeted curve: an attack label such as pgd:average, or clean "
                                   "(default: the first attack curve every file has)")
    p.add_argument("--plot", help="also write the budgeted curves to this PNG (and an SVG beside it)")
    p.set_defaults(func=run_compare)


def _labels(results: Sequence[dict[str, Any]], paths: Sequence[Path]) -> list[str]:
    from ..plots import result_label

    labels = [result_label(r, p.stem) for r, p in zip(results, paths)]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} ({p.stem})" for lab, p in zip(labels, paths)]
    return labels


def budget_report(results: Sequence[dict[str, Any]], labels: Sequence[str], curve: str,
                  target: float | None = None) -> tuple[float, list[str]]:
    """The target used and one line per comparison (first result against each other one)."""
    from ..evaluation.budgeted import budget_to_reach, format_savings

    curves = []
    for r, lab in zip(results, labels):
        b = r["evaluation"].get("budgeted")
        check(b is not None, f"{lab} has no budgeted evaluation; re-run `neokd-bench eval` with --metrics budgeted")
        check(curve in b["curves"], f"{lab} has no budgeted curve {curve!r}; it has {', '.join(b['curves'])}; "
                                    f"pick one with --curve")
        curves.append(b["curves"][curve])
    if target is None:
        target = min(max(c["accuracy"]) for c in curves)
    budgets = [budget_to_reach(c["mflops"], c["accuracy"], target) for c in curves]
    note = ""
    if curve.startswith("pgd:") and all("policy-pgd" in r["evaluation"]["budgeted"]["curves"] for r in results):
        note = " (the paper's protocol; `--curve policy-pgd`: the attacker who knows the exit thresholds)"
    lines = [f"target accuracy {100 * target:.2f}% on curve {curve}{note}"]
    for lab, b in zip(labels, budgets):
        lines.append(f"  {lab}: " + (f"{b:.2f} MFLOPs" if b is not None else "does not reach the target"))
    a, a_lab = budgets[0], labels[0]
    for b, b_lab in zip(budgets[1:], labels[1:]):
        if a is None or b is None:
            who = a_lab if a is None else b_lab
            lines.append(f"{a_lab} vs {b_lab}: {who} does not reach {100 * target:.2f}%; no saving to report")
        else:
            lines.append(format_savings(a, b, a_lab, b_lab))
    return target, lines


def anytime_comparison(results: Sequence[dict[str, Any]], labels: Sequence[str], attack: str | None):
    """A rich table: one row per result, per-exit top-1 accuracy (%) for ``attack`` (or clean; ``WORST``: the
    worst case per exit) and the average."""
    from rich.table import Table

    num_exits = max(r["model"]["num_exits"] for r in results)
    title = {None: "clean", WORST: "worst case per exit (every attack, seed and candidate)"}.get(
        attack, f"{attack} (the paper's protocol)" if attack in PAPER_PROTOCOL else attack)
    table = Table(title=f"anytime top-1 accuracy (%), {title}")
    table.add_column("result")
    for k in range(num_exits):
        table.add_column(f"exit {k + 1}", justify="right")
    table.add_column("avg", justify="right")
    for r, lab in zip(results, labels):
        a = r["evaluation"]["anytime"]
        if attack is None:
            per_exit, avg = a["clean"]["top1"]["per_exit"], a["clean"]["top1"]["avg"]
        elif attack == WORST and "worst_case" in a:
            per_exit, avg = a["worst_case"]["top1"]["mean"], a["worst_case"]["top1"]["avg"]["mean"]
        elif attack in a["adversarial"]:
            per_exit, avg = a["adversarial"][attack]["top1"]["mean"], a["adversarial"][attack]["top1"]["avg"]["mean"]
        else:
            table.add_row(lab, *["-"] * num_exits, "-")
            continue
        cells = [f"{100 * v:.2f}" for v in per_exit] + ["-"] * (num_exits - len(per_exit))
        table.add_row(lab, *cells, f"{100 * avg:.2f}")
    return table


def run_compare(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..plots import default_curve, plot_budgeted
    from ..results import load_result

    check(len(args.results) >= 2, "compare needs at least two result files, e.g. "
                                  "`neokd-bench compare neokd.json adv.json --target 41.21`")
    target = args.target
    if target is not None:
        check(math.isfinite(target) and 0 < target <= 100, f"--target must be an accuracy in (0, 1] or (1, 100], "
                                                           f"got {target}; e.g. --target 41.21")
        target = target / 100 if target > 1 else target
    if args.plot:
        from ..utils import check_output_file

        check_output_file(args.plot, "--plot")
    paths = [Path(p) for p in args.results]
    results = [load_result(p) for p in paths]
    labels = _labels(results, paths)
    curve = args.curve or default_curve(results)
    console = Console()
    has_budget = all(r["evaluation"].get("budgeted") for r in results)
    if has_budget:
        _, lines = budget_report(results, labels, curve, target)
        for line in lines:
            console.print(line, highlight=False)
    elif args.target is not None or args.plot:
        raise UsageError("not every file has a budgeted evaluation; re-run `neokd-bench eval` with --metrics budgeted")
    console.print(anytime_comparison(results, labels, None))
    lacking = [lab for r, lab in zip(results, labels) if "worst_case" not in r["evaluation"]["anytime"]]
    console.print(anytime_comparison(results, labels, WORST))
    if lacking:
        console.print(f"worst case: not recorded in {', '.join(lacking)} (made before results kept per-sample "
                      f"outcomes); the per-attack tables below can be optimistic", highlight=False)
    common = [k for k in results[0]["evaluation"]["anytime"]["adversarial"]
              if all(k in r["evaluation"]["anytime"]["adversarial"] for r in results)]
    for attack in common:
        console.print(anytime_comparison(results, labels, attack))
    if args.plot:
        written = plot_budgeted(results, args.plot, curve=curve, labels=labels)
        console.print(f"plot: {', '.join(str(p) for p in written)}", highlight=False)
    return 0
