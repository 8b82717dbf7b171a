"""Seeds grouped into leaderboard entries, and the summary of a set of result files (no torch).

An *entry* is one (dataset, preset, model, defense): the result files of its training seeds. For each entry
and exit it holds the mean ± std over seeds of clean accuracy and of every attack's adversarial accuracy (a
run's own value is its mean over attack seeds), the FLOPs per exit, the budget needed to reach a target
accuracy, the transferability summary and, when measured, the efficiency figures.

:func:`summarize` adds, for every (dataset, preset, attack) and exit (and the mean over exits), the mean
difference over seeds of each defense against ``adv`` and of ``neokd`` against the best other defense, with
its 95% Welch interval (:mod:`.stats`). :func:`markdown` writes ``SUMMARY.md``; ``summary.json`` is the same
dict. A lead whose interval straddles zero is printed as a tie, never as a win.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from neokd_bench.errors import UsageError

from .budget import budget_to_reach
from .stats import mean_std, verdict, welch_diff
from .validate import check_file
from .verified import VERIFIED, is_record, status

BASELINE = "adv"
OURS = "neokd"
NOT_RESULTS = ("summary.json",)
#: Entry fields shown on the site's entry pages but left out of ``summary.json`` (the result files hold them).
DETAIL_KEYS = ("config", "assumptions", "training_config", "attacks", "provenance", "class", "page")


def result_files(folders: Iterable[str | Path]) -> list[Path]:
    """Every result JSON under ``folders`` (recursively, sorted), ``summary.json`` files excluded."""
    files: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if folder.is_file():
            files.append(folder)
            continue
        if not folder.is_dir():
            raise UsageError(f"no result file or folder at {folder}; pass result JSON files or folders of them")
        files += [p for p in sorted(folder.rglob("*.json")) if p.name not in NOT_RESULTS and not is_record(p)]
    return files


def load_results(folders: Iterable[str | Path]) -> list[tuple[Path, dict]]:
    """Validated results; any invalid file stops the build with every problem, one line each."""
    loaded, problems = [], []
    for path in result_files(folders):
        doc, probs = check_file(path)
        problems += probs
        if doc is not None and not probs:
            loaded.append((path, doc))
    if problems:
        raise UsageError("invalid result files (fix them or run `neokd-bench validate FILE`):\n  "
                         + "\n  ".join(problems))
    return loaded


def preset_of(doc: dict) -> str:
    preset = ((doc.get("training") or {}).get("preset") or {}).get("name")
    return preset.split(".")[-1] if isinstance(preset, str) else "custom"


def entry_key(doc: dict) -> tuple[str, str, str, str]:
    defense = (doc.get("defense") or {}).get("name") or "(no defense)"
    return doc["dataset"]["name"], preset_of(doc), doc["model"]["name"], defense


def _adv_values(doc: dict, label: str, k: int | None) -> float | None:
    entry = doc["evaluation"]["anytime"]["adversarial"].get(label)
    if not entry or not isinstance(entry.get("top1"), dict):
        return None
    return entry["top1"]["avg"]["mean"] if k is None else entry["top1"]["mean"][k]


def _clean_values(doc: dict, k: int | None) -> float:
    clean = doc["evaluation"]["anytime"]["clean"]["top1"]
    return clean["avg"] if k is None else clean["per_exit"][k]


def metric_values(runs: list[dict], metric: str, k: int | None) -> list[float]:
    """One value per training seed: ``metric`` is ``clean`` or an attack label; ``k`` an exit or None (mean)."""
    vals = [_clean_values(r, k) if metric == "clean" else _adv_values(r, metric, k) for r in runs]
    return [v for v in vals if v is not None]


def efficiency_protocol(doc: dict) -> str:
    """How an efficiency section was measured, in a few words: ``PGD-20, 500 test images, 1 attack seed,
    max-softmax policy``."""
    ev = doc["evaluation"]
    proto = ev.get("protocol") if isinstance(ev.get("protocol"), dict) else {}
    steps, seeds = proto.get("steps"), proto.get("attack_seeds")
    n_seeds = len(seeds) if isinstance(seeds, list) else None
    parts = [f"PGD-{steps}" if isinstance(steps, int) else "PGD (steps not recorded)",
             f"{ev.get('n_test')} test images" if isinstance(ev.get("n_test"), int) else "test images not recorded"]
    if n_seeds:
        parts.append(f"{n_seeds} attack seed{'s' if n_seeds > 1 else ''}")
    parts.append(f"{ev['efficiency'].get('policy')} policy")
    return ", ".join(str(p) for p in parts)


def efficiency_by_checkpoint(loaded: list[tuple[Path, dict]]) -> dict[str, tuple[Path, dict]]:
    """Efficiency eval files (results with ``evaluation.efficiency``) by the sha256 of the checkpoint they
    evaluated (``training.checkpoint_sha256``); files without one are left out (they cannot be joined)."""
    index: dict[str, tuple[Path, dict]] = {}
    for path, doc in loaded:
        sha = (doc.get("training") or {}).get("checkpoint_sha256")
        if not isinstance(doc["evaluation"].get("efficiency"), dict) or not isinstance(sha, str):
            continue
        if sha in index:
            raise UsageError(f"two efficiency files evaluate the same checkpoint ({index[sha][0]} and {path}); "
                             "keep one of them in the efficiency folders")
        index[sha] = (path, doc)
    return index


def _efficiency_doc(run: dict, joined: dict[str, tuple[Path, dict]]) -> tuple[dict | None, str | None]:
    """The result that holds ``run``'s efficiency: itself, else the efficiency file of the same weights (same
    checkpoint sha256), else None; with that file's name when joined."""
    if isinstance(run["evaluation"].get("efficiency"), dict):
        return run, None
    sha = (run.get("training") or {}).get("checkpoint_sha256")
    if isinstance(sha, str) and sha in joined:
        path, doc = joined[sha]
        return doc, path.name
    return None, None


def _efficiency(runs: list[dict], joined: dict[str, tuple[Path, dict]] | None = None) -> dict | None:
    """Mean ± std over seeds of the clean MFLOPs and the slowdown factors; None (shown as "not measured")
    unless every seed has them, in its own file or in an efficiency file of the same weights."""
    found = [_efficiency_doc(r, joined or {}) for r in runs]
    if not all(doc is not None for doc, _ in found):
        return None
    effs = [doc["evaluation"]["efficiency"] for doc, _ in found]
    out: dict[str, Any] = {"policy": effs[0].get("policy")}
    for key, values in (("clean_mflops", [e.get("clean", {}).get("mflops_mean") for e in effs]),
                        ("slowdown_factor", [e.get("slowdown", {}).get("factor") for e in effs]),
                        ("max_average_factor", [e.get("pgd:max-average", {}).get("factor") for e in effs])):
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        out[key] = mean_std(values) if ok else None
    out["protocol"] = "; ".join(sorted({efficiency_protocol(doc) for doc, _ in found}))
    out["joined_from"] = [name for _, name in found if name]
    return out


def make_entries(loaded: list[tuple[Path, dict]], efficiency: list[tuple[Path, dict]] | None = None) -> list[dict]:
    """Entries sorted by (dataset, preset, model, defense); runs inside by training seed then file name.

    ``efficiency``: separate efficiency eval files; a run without an efficiency section takes the one of the
    file that evaluated the same checkpoint (:func:`efficiency_by_checkpoint`)."""
    joined = efficiency_by_checkpoint(efficiency or [])
    groups: dict[tuple, list[tuple[Path, dict]]] = {}
    for path, doc in loaded:
        groups.setdefault(entry_key(doc), []).append((path, doc))
    entries = []
    for key in sorted(groups):
        pairs = sorted(groups[key], key=lambda pd: ((pd[1]["seeds"].get("train") or 0), pd[0].name))
        runs = [d for _, d in pairs]
        first = runs[0]
        L = first["model"]["num_exits"]
        labels = sorted({lab for r in runs for lab in r["evaluation"]["anytime"]["adversarial"]})
        metrics = {"clean": None, **{lab: None for lab in labels}}
        stats = {m: {"per_exit": [mean_std(metric_values(runs, m, k)) for k in range(L)],
                     "avg": mean_std(metric_values(runs, m, None))} for m in metrics}
        transfer = [r["evaluation"].get("transfer") for r in runs]
        defense = first.get("defense") or {}
        entries.append({
            "dataset": key[0], "preset": key[1], "model": key[2], "defense": key[3],
            "num_exits": L, "seeds": [r["seeds"].get("train") for r in runs], "n_test":
                first["evaluation"]["anytime"]["n"], "files": [p.name for p, _ in pairs],
            "flops_per_exit": first["model"]["flops_per_exit"],
            "mflops_per_exit": [f / 1e6 for f in first["model"]["flops_per_exit"]],
            "accuracy": stats,
            "transfer_offdiag": (mean_std([t["offdiag_mean"] for t in transfer])
                                 if all(t and t.get("offdiag_mean") is not None for t in transfer) else None),
            "efficiency": _efficiency(runs, joined),
            "source": defense.get("source"), "class": defense.get("class"),
            "config": defense.get("config"), "assumptions": list(defense.get("assumptions") or []),
            "training_config": (first.get("training") or {}).get("config"),
            "attacks": first["evaluation"].get("attacks"),
            "provenance": [r.get("provenance") for r in runs],
            # per run: "verified" (`neokd-bench verify` re-ran it on its checkpoint) or "self-reported"
            "verification": (marks := [status(p, d) for p, d in pairs]),
            "verified": all(m == VERIFIED for m in marks),
        })
        entries[-1]["_runs"] = runs
    return entries


def budgets(entries: list[dict], label: str, target: float | None = None) -> dict | None:
    """MFLOPs each entry needs to reach ``target`` adversarial accuracy (``label``'s budgeted curve).

    The default target is the paper's choice: a level every entry reaches (the lowest best accuracy).
    """
    curves = {e["defense"]: [r["evaluation"].get("budgeted", {}).get("curves", {}).get(label)
                             for r in e["_runs"]] for e in entries}
    if not curves or not all(c for cs in curves.values() for c in cs):
        return None
    if target is None:
        target = min(max(c["accuracy"]) for cs in curves.values() for c in cs)
    reach = {}
    for name, cs in curves.items():
        vals = [b for c in cs if (b := budget_to_reach(c["mflops"], c["accuracy"], target)) is not None]
        reach[name] = mean_std(vals) if vals else {"mean": None, "std": None, "n": 0, "values": []}
    return {"attack": label, "target_accuracy": target, "mflops_to_reach": reach}


def _comparisons(entries: list[dict], metric: str) -> list[dict]:
    by_name = {e["defense"]: e for e in entries}
    L = max(e["num_exits"] for e in entries)
    rows = []
    for k in [*range(L), None]:
        where = "avg" if k is None else k
        vals = {n: metric_values(e["_runs"], metric, k) for n, e in by_name.items()
                if k is None or k < e["num_exits"]}
        pairs = []
        if BASELINE in vals:
            pairs += [(n, BASELINE) for n in vals if n != BASELINE]
        others = {n: v for n, v in vals.items() if n != OURS and v}
        if OURS in vals and others:
            best = max(sorted(others), key=lambda n: sum(others[n]) / len(others[n]))
            if (OURS, best) not in pairs:
                pairs.append((OURS, best))
        for a, b in pairs:
            if not vals[a] or not vals[b]:
                continue
            d = welch_diff(vals[a], vals[b])
            rows.append({"exit": where, "defense": a, "against": b, **d, "verdict": verdict(d)})
    return rows


def tables(entries: list[dict]) -> list[dict]:
    """One table per (dataset, preset, attack label): rows sorted by mean adversarial accuracy over exits,
    a row tied with the one above when their difference is not significant over the seeds."""
    out = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for e in entries:
        groups.setdefault((e["dataset"], e["preset"]), []).append(e)
    for (ds, preset), es in sorted(groups.items()):
        labels = sorted({m for e in es for m in e["accuracy"] if m != "clean"})
        for label in labels:
            rows = [e for e in es if label in e["accuracy"]]
            rows.sort(key=lambda e: (-e["accuracy"][label]["avg"]["mean"], e["defense"], e["model"]))
            ranked = []
            rank = 0
            for i, e in enumerate(rows):
                tie = None
                if i > 0:
                    tie = welch_diff(metric_values(rows[i - 1]["_runs"], label, None),
                                     metric_values(e["_runs"], label, None))
                if i == 0 or tie["significant"]:
                    rank = i + 1
                ranked.append({"rank": rank, "tied_with_above": bool(tie and not tie["significant"]),
                               "vs_above": tie, "entry": e})
            out.append({"dataset": ds, "preset": preset, "attack": label, "rows": ranked,
                        "comparisons": _comparisons(rows, label)})
    return out


def summarize(entries: list[dict], target: float | None = None) -> dict:
    """The JSON summary: entries (numbers only), tables with ranks and ties, comparisons, budgets."""
    tabs = tables(entries)
    groups: dict[tuple[str, str], list[dict]] = {}
    for e in entries:
        groups.setdefault((e["dataset"], e["preset"]), []).append(e)
    budget = {}
    for (ds, preset), es in sorted(groups.items()):
        labels = sorted({m for e in es for m in e["accuracy"] if m != "clean"})
        budget[f"{ds}/{preset}"] = {lab: budgets(es, lab, target) for lab in labels}
    public = [{k: v for k, v in e.items() if not k.startswith("_") and k not in DETAIL_KEYS} for e in entries]
    return {
        "entries": public,
        "tables": [{"dataset": t["dataset"], "preset": t["preset"], "attack": t["attack"],
                    "ranking": [{"rank": r["rank"], "defense": r["entry"]["defense"], "model": r["entry"]["model"],
                                 "tied_with_above": r["tied_with_above"]} for r in t["rows"]],
                    "comparisons": t["comparisons"]} for t in tabs],
        "budgeted": budget,
    }


def _pct(ms: dict | None, digits: int = 2) -> str:
    if not ms or ms.get("mean") is None:
        return "n/a"
    return f"{100 * ms['mean']:.{digits}f} ± {100 * ms['std']:.{digits}f}"


def diff_text(c: dict) -> str:
    """``+1.23 [-0.40, 2.86] tie`` in accuracy points."""
    if not c["ci"]:  # not a tie either: nothing was measured that could decide
        return f"{100 * c['diff']:+.2f} (no interval: <2 seeds or no spread) undecided"
    return f"{100 * c['diff']:+.2f} [{100 * c['ci'][0]:+.2f}, {100 * c['ci'][1]:+.2f}] {c.get('verdict') or verdict(c)}"


def markdown(summary: dict, title: str) -> str:
    """``SUMMARY.md``: per-exit accuracy mean ± std over seeds, significance, transferability, budgets."""
    lines = [f"# Reference results: `{title}`", "",
             ("Per-exit top-1 accuracy (%), mean ± std over training seeds. Generated by "
              "`neokd_bench.leaderboard` (`scripts/reference_results.py` or `neokd-bench leaderboard build`); "
              "every number comes from the result files beside this one."), ""]
    entries = {(e["dataset"], e["preset"], e["model"], e["defense"]): e for e in summary["entries"]}
    for t in summary["tables"]:
        es = [entries[(t["dataset"], t["preset"], r["model"], r["defense"])] for r in t["ranking"]]
        L = max(e["num_exits"] for e in es)
        for metric in ("clean", t["attack"]):
            if metric == "clean" and t is not next(x for x in summary["tables"]
                                                   if (x["dataset"], x["preset"]) == (t["dataset"], t["preset"])):
                continue
            lines += [f"## {t['dataset']} / {t['preset']}: {metric}", "",
                      "| rank | defense | seeds | " + " | ".join(f"exit {k + 1}" for k in range(L)) + " | avg |",
                      "| --- | --- | --- |" + " --- |" * (L + 1)]
            for r, e in zip(t["ranking"], es):
                cells = [_pct(c) for c in e["accuracy"][metric]["per_exit"]]
                rank = f"{r['rank']}" + (" (tie)" if r["tied_with_above"] else "")
                lines.append(f"| {rank if metric != 'clean' else '-'} | {e['defense']} | {len(e['seeds'])} | "
                             + " | ".join(cells) + f" | {_pct(e['accuracy'][metric]['avg'])} |")
            lines.append("")
        if t["comparisons"]:
            lines += [f"### {t['attack']}: differences over seeds (points, 95% Welch interval)", "",
                      "A difference whose interval straddles zero is a tie.", "",
                      "| exit | defense | against | difference [95% CI] verdict |", "| --- | --- | --- | --- |"]
            for c in t["comparisons"]:
                ex = "avg" if c["exit"] == "avg" else f"exit {c['exit'] + 1}"
                lines.append(f"| {ex} | {c['defense']} | {c['against']} | {diff_text(c)} |")
            lines.append("")
    with_transfer = [e for e in summary["entries"] if e["transfer_offdiag"]]
    if with_transfer:
        lines += ["## Transferability (mean off-diagonal attack success rate, %; lower is better)", "",
                  "| dataset / preset | defense | off-diagonal mean |", "| --- | --- | --- |"]
        for e in with_transfer:
            lines.append(f"| {e['dataset']} / {e['preset']} | {e['defense']} | {_pct(e['transfer_offdiag'])} |")
        lines.append("")
    for where, per_label in summary["budgeted"].items():
        for label, b in per_label.items():
            if not b:
                continue
            lines += [f"## Budgeted ({where}): MFLOPs to reach {100 * b['target_accuracy']:.2f}% ({label})", "",
                      "| defense | MFLOPs | seeds that reach it |", "| --- | --- | --- |"]
            for name, v in b["mflops_to_reach"].items():
                cell = f"{v['mean']:.3f} ± {v['std']:.3f}" if v["values"] else "not reached"
                lines.append(f"| {name} | {cell} | {len(v['values'])} |")
            lines.append("")
    return "\n".join(lines)


def dumps(summary: dict) -> str:
    return json.dumps(summary, indent=2, sort_keys=True, allow_nan=False) + "\n"
