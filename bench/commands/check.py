"""`neokd-bench check`: the CI regression gate, in both directions.

* ``neokd-bench check RESULT... --against REFERENCE_DIR`` - a fresh run must not fall below the reference
  entry of the same (dataset, preset, model, defense) by more than the tolerance (rule in
  :mod:`neokd_bench.leaderboard.gate`; it is printed).
* ``neokd-bench check --attack-gate GATE.json`` - the committed checkpoint named in GATE.json, attacked with the
  committed attacks at their seed and a fixed thread count, must not become more robust (a weaker attack).
  ``--set KEY=VALUE`` changes every attack's config (e.g. ``--set steps=1`` shows the gate failing);
  ``--write`` records the measured numbers as the new reference (after an intended change to an attack).

Prints a table of what moved (reference, now, delta, tolerance, verdict); exits 1 on a regression.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import UsageError, check
from ..utils import file_sha256


def add_parser(sub: Any) -> None:
    p = sub.add_parser("check", help="regression gate: fresh results against a reference; attacks against a "
                                     "committed checkpoint")
    p.add_argument("results", nargs="*", metavar="RESULT", help="fresh result JSON files")
    p.add_argument("--against", metavar="REFERENCE_DIR", help="folder of reference result files")
    p.add_argument("--attack-gate", metavar="GATE.json", help="attack-regression reference (committed checkpoint)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field of every gate attack, e.g. --set steps=1")
    p.add_argument("--write", action="store_true", help="write the measured attack numbers into GATE.json")
    p.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    check(bool(args.results) or bool(args.attack_gate),
          "nothing to check; type `neokd-bench check RESULT --against DIR` or `neokd-bench check --attack-gate "
          "leaderboard/gate/attack-gate.json`")
    check(not args.results or bool(args.against),
          "fresh results need a reference; add --against leaderboard/results/<dataset>-<preset>")
    failed = False
    if args.results:
        failed |= _check_defenses(args.results, args.against)
    if args.attack_gate:
        failed |= _check_attacks(Path(args.attack_gate), args.set, args.write)
    print("gate: FAILED" if failed else "gate: passed")
    return 1 if failed else 0


def _check_defenses(results: list[str], against: str) -> bool:
    from ..leaderboard.aggregate import WORST, entry_key, load_results, make_entries
    from ..leaderboard.gate import DEFENSE_RULE, defense_rows, format_rows

    refs = {(e["dataset"], e["preset"], e["model"], e["defense"]): e for e in make_entries(load_results([against]))}
    failed = False
    print(DEFENSE_RULE)
    for path, doc in load_results(results):
        key = entry_key(doc)
        if key not in refs:
            raise UsageError(f"{path}: no reference for dataset {key[0]}, preset {key[1]}, model {key[2]}, defense "
                             f"{key[3]} in {against}; pass the reference folder of that protocol")
        rows = defense_rows(doc, refs[key])
        fresh_worst, ref_worst = bool(doc["evaluation"]["anytime"].get("worst_case")), WORST in refs[key]["accuracy"]
        if fresh_worst and not ref_worst:
            print(f"{path}: the reference of {key[3]} records no worst case per exit (made before it was recorded); "
                  "compared the rest")
        elif ref_worst and not fresh_worst:
            print(f"{path}: this result records no worst case per exit (made before it was recorded; rerun its "
                  "evaluation to gate it); compared the rest")
        bad = [r for r in rows if r["verdict"] != "ok"]
        print(f"{path} against {len(refs[key]['seeds'])} reference seeds of {key[3]} ({key[0]}/{key[1]}):")
        for line in format_rows(rows):
            print("  " + line)
        for r in bad:
            print(f"  regression: {key[3]} {r['what']} exit {r['exit']} fell {100 * -r['delta']:.2f} points "
                  f"(tolerance {100 * r['tolerance']:.2f})")
        failed |= bool(bad)
    return failed


def measure_attacks(gate: dict, folder: Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Attack the gate's checkpoint as the gate says; per-exit adversarial accuracy per attack label."""
    import neokd_bench as nb
    import torch

    from ..evaluation import evaluate
    from ..presets import EvalProtocol
    from ..trainer import load_checkpoint, model_from_checkpoint

    ckpt = folder / gate["checkpoint"]
    check(ckpt.is_file(), f"gate checkpoint {ckpt} not found; restore it with `git checkout -- {ckpt}`")
    check(file_sha256(ckpt) == gate["checkpoint_sha256"],
          f"gate checkpoint {ckpt} does not match its sha256 in the gate file; restore it from git")
    state = load_checkpoint(ckpt)
    model = model_from_checkpoint(state)
    bundle = nb.load_dataset(gate["dataset"], source=gate["source"])
    attacks = [{**a, **_accepted(a["name"], overrides or {})} for a in gate["attacks"]]
    threads = torch.get_num_threads()
    torch.set_num_threads(int(gate["threads"]))
    try:
        ev = evaluate(model, bundle, dataset_key=gate["dataset"], device="cpu", metrics=("anytime",),
                      protocol=EvalProtocol(test_limit=int(gate["test_limit"]), metrics=("anytime",)),
                      attacks=attacks, progress=False)
    finally:
        torch.set_num_threads(threads)
    adv = ev["anytime"]["adversarial"]
    out = {"n": ev["anytime"]["n"], "clean": ev["anytime"]["clean"]["top1"]["per_exit"],
           "adversarial": {label: adv[label]["top1"]["mean"] for label in adv}}
    if ev["anytime"].get("worst_case"):
        out["worst_case"] = ev["anytime"]["worst_case"]["top1"]["mean"]
    return out


def _accepted(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides an attack's config has a field for (``--set steps=1`` cuts PGD and APGD, not Square)."""
    from ..evaluation.attacks import _accepted_fields
    from ..registry import ATTACKS

    fields = _accepted_fields(ATTACKS.get(name))
    return {k: v for k, v in overrides.items() if fields is None or k in fields}


def _check_attacks(gate_path: Path, sets: list[str], write: bool) -> bool:
    from ..leaderboard.gate import ATTACK_RULE, attack_rows, check_gate, format_rows
    from ..safe_io import load_json
    from .common import parse_sets

    check(gate_path.exists(), f"attack gate file {gate_path} not found; the committed one is "
                              "leaderboard/gate/attack-gate.json")
    gate = check_gate(load_json(gate_path, "attack gate file"), str(gate_path), need_reference=not write)
    overrides = parse_sets(sets)
    measured = measure_attacks(gate, gate_path.parent, overrides)
    if write:
        check(not overrides, "--write records the committed attacks only; drop --set")
        from ..results import atomic_write

        gate["reference"] = measured
        atomic_write(gate_path, json.dumps(gate, indent=2) + "\n")
        print(f"wrote the measured numbers into {gate_path}")
        return False
    missing = sorted(set(gate["reference"]["adversarial"]) - set(measured["adversarial"]))
    check(not missing, f"attack gate file {gate_path}: reference label(s) {', '.join(missing)} match no gate attack; "
                       f"rerun with --write to record the attacks' numbers")
    rows = attack_rows(gate["reference"], measured)
    print(ATTACK_RULE)
    if measured.get("worst_case") and not gate["reference"].get("worst_case"):
        print(f"{gate_path} records no worst case per exit; compared the attacks (re-record with --write)")
    desc = ", ".join(f"{k}={v}" for k, v in overrides.items())
    print(f"{gate['checkpoint']} ({gate['dataset']}, first {gate['test_limit']} test images, "
          f"{gate['threads']} threads{'; overrides: ' + desc if desc else ''}):")
    for line in format_rows(rows):
        print("  " + line)
    bad = [r for r in rows if r["verdict"] != "ok"]
    for r in bad:
        print(f"  attack regression: {r['what']} is weaker at exit {r['exit']}: adversarial accuracy rose "
              f"{100 * r['delta']:.2f} points")
    return bool(bad)
