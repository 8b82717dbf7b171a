"""Does one defense's lead over another survive the worst case? Per exit and on the mean over exits, over training
seeds, with 95% Welch intervals, under every measure a result file carries.

    python scripts/lead.py --a neokd --b adv RESULT.json [RESULT.json ...]
    python scripts/lead.py --a neokd --b adv /work/runs-cpu/*/result.json --markdown

Result files are grouped by their defense name (``defense.name``); one file per training seed. Printed, for the
lead ``A - B`` in accuracy points:

* the worst case per exit (``anytime.worst_case``: every attack, seed and max-average candidate, and the per-exit
  attacks of other kinds on the images they ran on);
* each attack of the paper's protocol (``anytime.adversarial``: ``pgd:max-average``, ``pgd:average``) and each
  per-exit attack of other kinds (``anytime.limited``, at its attacked exit);
* ``policy-pgd`` along the budgeted curve (``budgeted.curves["policy-pgd"]``, per budget index: the attacker
  that knows the exit policy's thresholds), and max-average on the same budgets.

Each row: mean of A, mean of B (over the seeds each has), the difference and its 95% Welch-t interval
(``neokd_bench.leaderboard.stats.welch_diff``; none with fewer than two seeds a side), and "A leads" / "B leads"
only when the interval excludes 0, "tie" otherwise. A measure's value per seed is the mean over that result's
attack seeds. Nothing is corrected for multiple comparisons: read it as one table of intervals, not as tests.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from neokd_bench.leaderboard.stats import welch_diff

Row = tuple[str, Callable[[dict[str, Any]], float | None]]


def _top1(section: dict[str, Any] | None, k: int | None) -> float | None:
    if not section:
        return None
    top1 = section["top1"]
    return float(top1["avg"]["mean"] if k is None else top1["mean"][k])


def _budget(curve: dict[str, Any] | None, i: int) -> float | None:
    if not curve or i >= len(curve["accuracy"]):
        return None
    return float(curve["accuracy"][i])


def rows(example: dict[str, Any]) -> list[Row]:
    """The measures of ``example`` (one result's ``evaluation``), as (label, getter) pairs."""
    any_ = example["anytime"]
    exits = len(any_["clean"]["top1"]["per_exit"])
    where = [(f"exit {k + 1}", k) for k in range(exits)] + [("mean", None)]
    out: list[Row] = []
    if "worst_case" in any_:
        out += [(f"worst case, {w}", lambda e, k=k: _top1(e["anytime"].get("worst_case"), k)) for w, k in where]
    for label in any_.get("adversarial", {}):
        out += [(f"{label}, {w}", lambda e, k=k, a=label: _top1(e["anytime"]["adversarial"].get(a), k))
                for w, k in where]
    for label in any_.get("limited", {}):
        k = int(label.rsplit(":", 1)[1]) if ":exit:" in label else None
        if k is not None:
            out.append((f"{label} (first {any_['limited'][label]['n']}), exit {k + 1}",
                        lambda e, k=k, a=label: _top1(e["anytime"].get("limited", {}).get(a), k)))
    curves = example.get("budgeted", {}).get("curves", {})
    pp = curves.get("policy-pgd")
    if pp:
        for i, b in enumerate(pp["budget_index"]):
            out.append((f"policy-pgd, budget {b}",
                        lambda e, i=i: _budget(e["budgeted"]["curves"].get("policy-pgd"), i)))
    return out


def lead(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per measure present in every result: label, means, and the Welch difference in points."""
    table = []
    for label, get in rows(a[0]):
        va, vb = [get(e) for e in a], [get(e) for e in b]
        if any(v is None for v in va + vb):
            continue
        d = welch_diff([100 * v for v in va], [100 * v for v in vb])
        table.append({"label": label, "a": 100 * sum(va) / len(va), "b": 100 * sum(vb) / len(vb), **d})
    return table


def verdict(d: dict[str, Any], a: str, b: str) -> str:
    if d["ci"] is None:
        return "no interval"
    return f"{a} leads" if d["ci"][0] > 0 else f"{b} leads" if d["ci"][1] < 0 else "tie"


def load(paths: Sequence[str]) -> dict[str, list[tuple[int, dict[str, Any]]]]:
    groups: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for p in paths:
        r = json.loads(Path(p).read_text(encoding="utf-8"))
        seed = int(r["seeds"]["train"]) if isinstance(r.get("seeds"), dict) and "train" in r["seeds"] \
            else len(groups.get(r["defense"]["name"], []))
        groups.setdefault(r["defense"]["name"], []).append((seed, r["evaluation"]))
    return {k: sorted(v, key=lambda t: t[0]) for k, v in groups.items()}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+")
    ap.add_argument("--a", default="neokd", help="defense whose lead is measured (default neokd)")
    ap.add_argument("--b", default="adv", help="defense it is measured against (default adv)")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args(argv)
    groups = load(args.results)
    for name in (args.a, args.b):
        if name not in groups:
            print(f"error: no result of defense {name!r} among the files (found: {', '.join(sorted(groups))})",
                  file=sys.stderr)
            return 2
    a, b = groups[args.a], groups[args.b]
    print(f"{args.a} seeds {[s for s, _ in a]} against {args.b} seeds {[s for s, _ in b]}; top-1 accuracy in "
          f"points, lead = {args.a} - {args.b}, 95% Welch interval over training seeds")
    table = lead([e for _, e in a], [e for _, e in b])
    sep = " | " if args.markdown else "  "
    head = ["measure", args.a, args.b, "lead", "95% interval", "verdict"]
    if args.markdown:
        print("| " + " | ".join(head) + " |\n|" + " --- |" * len(head))
    else:
        print(f"{head[0]:44}{sep}{head[1]:>7}{sep}{head[2]:>7}{sep}{head[3]:>6}{sep}{head[4]:>16}{sep}{head[5]}")
    for d in table:
        ci = f"[{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]" if d["ci"] else "-"
        cells = [d["label"], f"{d['a']:.2f}", f"{d['b']:.2f}", f"{d['diff']:+.2f}", ci, verdict(d, args.a, args.b)]
        if args.markdown:
            print("| " + " | ".join(cells) + " |")
        else:
            print(f"{cells[0]:44}{sep}{cells[1]:>7}{sep}{cells[2]:>7}{sep}{cells[3]:>6}{sep}{cells[4]:>16}{sep}"
                  f"{cells[5]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
