"""Summarise efficiency eval files (``neokd-bench eval --metrics efficiency``) as Markdown tables.

    python scripts/efficiency_summary.py leaderboard/efficiency/fashion-mnist-smoke

Files are named ``DEFENSE-sSEED.json``. Printed: per defense, the mean ± std over training seeds of the clean
cost and the slowdown factors (each policy at its own thresholds); per budget of the policy-pgd curve, the
accuracy under the policy of policy-pgd minus that of max-average (mean over seeds, with the smallest and
largest seed); and NEO-KD against adv (factor ratio, difference with its 95% Welch interval over seeds).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
from neokd_bench.leaderboard.stats import mean_std, welch_diff


def load(folder: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for p in sorted(folder.glob("*-s*.json")):
        m = re.fullmatch(r"(.+)-s(\d+)\.json", p.name)
        if m:
            runs.setdefault(m.group(1), []).append(json.loads(p.read_text())["evaluation"]["efficiency"])
    return runs


def ms(values, digits: int = 3) -> str:
    s = mean_std(values)
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def policy_factors(effs: list[dict], policy: str) -> list[float]:
    return [e["policies"][policy]["slowdown"]["factor"] for e in effs]


def main(folder: str) -> int:
    runs = load(Path(folder))
    print("| defense | seeds | budget (allocation) | clean MFLOPs/sample | mean exit clean -> slowdown "
          "| slowdown factor | max-average factor | slowdown factor, entropy | slowdown factor, patience |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, effs in sorted(runs.items()):
        print(f"| {name} | {len(effs)} | {effs[0]['budget_index']} {tuple(effs[0]['allocation'])} "
              f"| {ms([e['clean']['mflops_mean'] for e in effs])} "
              f"| {np.mean([e['clean']['mean_exit'] for e in effs]):.2f} -> "
              f"{np.mean([e['slowdown']['mean_exit'] for e in effs]):.2f} "
              f"| {ms([e['slowdown']['factor'] for e in effs])} | {ms([e['pgd:max-average']['factor'] for e in effs])} "
              f"| {ms(policy_factors(effs, 'entropy'))} | {ms(policy_factors(effs, 'patience'))} |")
    print()
    names = sorted(runs)
    budgets = runs[names[0]][0]["policy-pgd"]["budget_index"]
    print("policy-pgd minus max-average accuracy under the policy (points; mean over seeds, [min, max] seed):")
    print()
    print("| budget | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(names))
    worst = {}
    for i, b in enumerate(budgets):
        cells = []
        for n in names:
            d = np.array([-100 * e["policy-pgd"]["gap"][i] for e in runs[n]])
            worst[n] = max(worst.get(n, -np.inf), d.max())
            cells.append(f"{d.mean():+.1f} [{d.min():+.1f}, {d.max():+.1f}]")
        mf = np.mean([e["policy-pgd"]["max_average_mflops"][i] for n in names for e in runs[n]])
        print(f"| {b} ({mf:.2f} MFLOPs) | " + " | ".join(cells) + " |")
    print()
    print("largest (least negative) difference over budgets and seeds: "
          + ", ".join(f"{n} {worst[n]:+.1f}" for n in names))
    if "adv" in runs and "neokd" in runs:
        a = [e["slowdown"]["factor"] for e in runs["neokd"]]
        b = [e["slowdown"]["factor"] for e in runs["adv"]]
        d = welch_diff(a, b)
        ci = f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]" if d["ci"] else "(no interval)"
        print(f"\nslowdown factor, neokd {ms(a)} vs adv {ms(b)}: ratio {np.mean(a) / np.mean(b):.3f}, "
              f"difference {d['diff']:+.3f}, 95% Welch interval {ci}, "
              f"{'significant' if d['significant'] else 'a tie'}")
        for key in ("pgd:max-average",):
            a = [e[key]["factor"] for e in runs["neokd"]]
            b = [e[key]["factor"] for e in runs["adv"]]
            d = welch_diff(a, b)
            ci = f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]" if d["ci"] else "(no interval)"
            print(f"{key} factor, neokd {ms(a)} vs adv {ms(b)}: difference {d['diff']:+.3f}, 95% Welch {ci}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
