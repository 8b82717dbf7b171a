"""Seeds grouped into leaderboard entries, and the summary of a set of result files (no torch).

An *entry* is one (dataset, preset, model, defense): the result files of its training seeds. For each entry
and exit it holds the mean ± std over seeds of clean accuracy, of the per-exit worst case
(``evaluation.anytime.worst_case``: a sample is robust at exit k only if exit k is correct on every adversarial
example the evaluation made for it) and of every attack's adversarial accuracy (a run's own value is its mean
over attack seeds), the FLOPs per exit, the budget needed to reach a target accuracy, the transferability
summary, the masking verdict and, when measured, the efficiency figures.

:func:`headline_tables` ranks the entries of each (dataset, preset) by the worst case; :func:`tables` ranks them
under each attack of the paper's protocol (and any other attack). A rank is 1 + the number of entries whose lead
over it is significant (:func:`neokd_bench.leaderboard.stats.significance_ranks`: 95% Welch over training seeds,
Holm-corrected over every pair of the table). An entry whose result lacks the worst case is "not measured" under
that heading: no weaker number stands in for it.

:func:`summarize` adds, for every (dataset, preset, attack) and exit (and the mean over exits), the mean
difference over seeds of each defense against the baseline ``adv`` (adversarial training, the reference every
table of the paper compares with), with its 95% Welch interval (:mod:`.stats`). No defense is special-cased by
name beyond that baseline. :func:`markdown` writes ``SUMMARY.md`` (every string from a result escaped);
``summary.json`` is the same dict. A lead whose interval straddles zero is printed as a tie, never as a win.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from neokd_bench.contract import name_problem
from neokd_bench.errors import UsageError

from .budget import budget_to_reach
from .stats import mean_std, significance_ranks, t_interval, verdict, welch_diff
from .validate import check_file
from .verified import VERIFIED, is_record, status

#: The default reference defense differences are taken against: adversarial training, as in every table of the
#: paper; `leaderboard build --baseline NAME` picks another (nothing else on the board depends on a defense's name).
BASELINE = "adv"
#: The headline metric: the per-sample worst case over every adversarial example of the evaluation, per exit.
WORST = "worst-case"
#: The attacks of the paper's protocol (Sec. 4.1), shown beside the headline and labelled as the paper's.
PAPER_PROTOCOL = ("pgd:max-average", "pgd:average")
NOT_RESULTS = ("summary.json",)
#: Entry fields shown on the site's entry pages but left out of ``summary.json`` (the result files hold them).
DETAIL_KEYS = ("config", "assumptions", "training_config", "attacks", "provenance", "class", "page")


def result_files(folders: Iterable[str | Path]) -> list[Path]:
    """Every result JSON under ``folders`` (recursively, sorted), ``summary.json`` files excluded."""
    from neokd_bench.safe_io import kind_of

    files: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if folder.is_file():
            files.append(folder)
            continue
        if not folder.is_dir():
            if folder.exists():  # a fifo or a device: never opened (reading one could block forever)
                raise UsageError(f"{folder} is {kind_of(folder.stat().st_mode)}, not a result file or folder; "
                                 f"pass result JSON files or folders of them")
            raise UsageError(f"no result file or folder at {folder}; pass result JSON files or folders of them")
        for p in sorted(folder.rglob("*.json")):
            if p.name in NOT_RESULTS or p.is_dir() or is_record(p):
                continue
            if not p.is_file():  # a fifo named *.json would block the reader: refused, never opened
                kind = kind_of(p.stat().st_mode) if p.exists() else "a broken link"
                raise UsageError(f"{p} is {kind}, not a result file; remove it from {folder} or pass the result "
                                 f"files one by one")
            files.append(p)
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


def _attack_entry(doc: dict, label: str) -> dict | None:
    """``evaluation.anytime.adversarial[label]``, or the worst case for :data:`WORST` (None when absent)."""
    anytime = doc["evaluation"]["anytime"]
    return anytime.get("worst_case") if label == WORST else anytime["adversarial"].get(label)


def _adv_values(doc: dict, label: str, k: int | None) -> float | None:
    entry = _attack_entry(doc, label)
    if not entry or not isinstance(entry.get("top1"), dict):
        return None
    return entry["top1"]["avg"]["mean"] if k is None else entry["top1"]["mean"][k]


def _clean_values(doc: dict, k: int | None) -> float:
    clean = doc["evaluation"]["anytime"]["clean"]["top1"]
    return clean["avg"] if k is None else clean["per_exit"][k]


def metric_values(runs: list[dict], metric: str, k: int | None) -> list[float]:
    """One value per training seed: ``metric`` is ``clean``, :data:`WORST` or an attack label; ``k`` an exit or
    None (mean). Runs that lack the metric are left out (callers check that every seed has it)."""
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


def worst_case_parts(runs: list[dict]) -> list[dict] | None:
    """What the worst case of an entry was taken over: ``[{"label", "n": [test images per seed...]}]`` in the
    order of the first run; None unless every run has a worst case."""
    cases = [r["evaluation"]["anytime"].get("worst_case") for r in runs]
    if not runs or not all(isinstance(c, dict) for c in cases):
        return None
    parts: dict[str, list[int]] = {}
    for c in cases:
        for part in c.get("parts") or []:
            parts.setdefault(str(part.get("label")), []).append(part.get("n"))
    return [{"label": label, "n": ns} for label, ns in parts.items()]


def parts_text(parts: list[dict] | None) -> str:
    """``pgd:max-average on 2000 images; square:exit:0 on 500`` (per-seed counts listed when they differ)."""
    if not parts:
        return "no parts recorded"
    out = []
    for p in parts:
        ns = sorted(set(p["n"]), key=str)
        out.append(f"{p['label']} on {ns[0] if len(ns) == 1 else ', '.join(str(n) for n in p['n'])} images")
    return "; ".join(out)


def masking_status(runs: list[dict]) -> dict:
    """The masking verdict of an entry over its seeds: ``failed`` when any seed's checks failed (the names of
    the failed checks are kept), ``passed`` when every seed was checked and passed, else ``not checked``."""
    records = [r["evaluation"].get("masking") for r in runs]
    checked = [m for m in records if isinstance(m, dict)]
    failed = sorted({str(c.get("name")) for m in checked for c in m.get("checks") or [] if not c.get("passed")})
    if any(not m.get("passed") for m in checked) or failed:
        status = "failed"
    elif checked and len(checked) == len(runs):
        status = "passed"
    else:
        status = "not checked"
    details = sorted({f"{c.get('name')}: {c.get('detail')}" for m in checked for c in m.get("checks") or []
                      if not c.get("passed")})
    return {"status": status, "seeds_checked": len(checked), "failed_checks": failed, "details": details}


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
        parts = worst_case_parts(runs)
        metrics = {"clean": None, **({WORST: None} if parts is not None else {}), **{lab: None for lab in labels}}
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
            "worst_case_parts": parts, "masking": masking_status(runs),
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


def budgets(entries: list[dict], label: str, target: float | None = None, baseline: str = BASELINE) -> dict | None:
    """MFLOPs each entry needs to reach ``target`` adversarial accuracy (``label``'s budgeted curve), over its
    training seeds: mean ± std, the 95% t-interval of the mean, and against ``baseline`` the Welch interval
    of the difference (a saving whose interval straddles zero is a tie).

    The default target is the paper's choice: a level every seed of every entry reaches (the lowest best
    accuracy).
    """
    curves = {e["defense"]: [r["evaluation"].get("budgeted", {}).get("curves", {}).get(label)
                             for r in e["_runs"]] for e in entries}
    if not curves or not all(c for cs in curves.values() for c in cs):
        return None
    if target is None:
        target = min(max(c["accuracy"]) for cs in curves.values() for c in cs)
    reach, values = {}, {}
    for name, cs in curves.items():
        values[name] = [b for c in cs if (b := budget_to_reach(c["mflops"], c["accuracy"], target)) is not None]
        vals = values[name]
        reach[name] = ({**mean_std(vals), "ci": t_interval(vals), "seeds": len(cs)} if vals else
                       {"mean": None, "std": None, "n": 0, "values": [], "ci": None, "seeds": len(cs)})
    for name, v in reach.items():
        base = values.get(baseline)
        v["vs_baseline"] = None
        if name != baseline and base and values[name]:
            d = welch_diff(values[name], base)
            # fewer MFLOPs is better: a significant negative difference is a saving ("win")
            v["vs_baseline"] = {**d, "verdict": {"win": "loss", "loss": "win"}.get(verdict(d), "tie"),
                                "saved": 1.0 - v["mean"] / reach[baseline]["mean"]}
    return {"attack": label, "target_accuracy": target, "baseline": baseline, "mflops_to_reach": reach}


def _comparisons(entries: list[dict], metric: str, baseline: str = BASELINE) -> list[dict]:
    """Each defense against ``baseline``, per exit and on the mean over exits (95% Welch interval)."""
    by_name = {e["defense"]: e for e in entries}
    L = max(e["num_exits"] for e in entries)
    rows = []
    for k in [*range(L), None]:
        where = "avg" if k is None else k
        vals = {n: metric_values(e["_runs"], metric, k) for n, e in by_name.items()
                if k is None or k < e["num_exits"]}
        if baseline not in vals or not vals[baseline]:
            continue
        for a in vals:
            if a == baseline or not vals[a]:
                continue
            d = welch_diff(vals[a], vals[baseline])
            rows.append({"exit": where, "defense": a, "against": baseline, **d, "verdict": verdict(d)})
    return rows


def _ranked(rows: list[dict], metric: str) -> tuple[list[dict], list[dict]]:
    """Rows (entries that have ``metric``) ranked by Chatbot Arena's rule on the mean over exits (and, shown
    beside each exit's number, on that exit alone); returns the ranked rows (sorted by rank, then mean) and
    every pair's test on the mean."""
    samples = {i: metric_values(e["_runs"], metric, None) for i, e in enumerate(rows)}
    if not samples:
        return [], []
    sig = significance_ranks(samples)
    L = min(e["num_exits"] for e in rows)
    per_exit = [significance_ranks({i: metric_values(e["_runs"], metric, k) for i, e in enumerate(rows)})["rank"]
                for k in range(L)]
    order = sorted(samples, key=lambda i: (sig["rank"][i], -rows[i]["accuracy"][metric]["avg"]["mean"],
                                           rows[i]["defense"], rows[i]["model"]))
    ranked = []
    for pos, i in enumerate(order):
        above = order[pos - 1] if pos else None
        ranked.append({
            "rank": sig["rank"][i], "entry": rows[i], "measured": True, "exit_ranks": [r[i] for r in per_exit],
            "tied_with_above": above is not None and sig["rank"][above] == sig["rank"][i],
            "shares_rank": sum(sig["rank"][j] == sig["rank"][i] for j in order) > 1,
            "vs_above": welch_diff(samples[above], samples[i]) if above is not None else None,
            "beaten_by": sorted(rows[j]["defense"] for j in sig["beaten_by"][i]),
        })

    def name(i: int) -> str:
        return rows[i]["defense"]

    pairs = [{"defense": name(p["a"]), "against": name(p["b"]),
              **{k: v for k, v in p.items() if k not in ("a", "b")}} for p in sig["pairs"]]
    return ranked, pairs


def _by_protocol(entries: list[dict]) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for e in entries:
        groups.setdefault((e["dataset"], e["preset"]), []).append(e)
    return dict(sorted(groups.items()))


def attack_labels(entries: list[dict]) -> list[str]:
    """The attacks measured on some entry: the paper's protocol first, then the others, sorted."""
    labels = {m for e in entries for m in e["accuracy"] if m not in ("clean", WORST)}
    return [lab for lab in PAPER_PROTOCOL if lab in labels] + sorted(labels - set(PAPER_PROTOCOL))


def tables(entries: list[dict], baseline: str = BASELINE) -> list[dict]:
    """One table per (dataset, preset, attack label), rows ranked by mean adversarial accuracy over exits with
    Chatbot Arena's rule (:func:`_ranked`); a row that shares its rank with the row above is tied with it."""
    out = []
    for (ds, preset), es in _by_protocol(entries).items():
        for label in attack_labels(es):
            rows = [e for e in es if label in e["accuracy"]]
            ranked, pairs = _ranked(rows, label)
            out.append({"dataset": ds, "preset": preset, "attack": label, "paper": label in PAPER_PROTOCOL,
                        "rows": ranked, "pairs": pairs, "comparisons": _comparisons(rows, label, baseline)})
    return out


def headline_tables(entries: list[dict], baseline: str = BASELINE) -> list[dict]:
    """One table per (dataset, preset), ranked by the per-exit worst case (:data:`WORST`, mean over exits).
    Entries whose results lack it follow, unranked, as "not measured"."""
    out = []
    for (ds, preset), es in _by_protocol(entries).items():
        have = [e for e in es if WORST in e["accuracy"]]
        ranked, pairs = _ranked(have, WORST)
        missing = [{"rank": None, "entry": e, "measured": False, "tied_with_above": False, "shares_rank": False,
                    "vs_above": None, "beaten_by": [], "exit_ranks": None}
                   for e in sorted((e for e in es if WORST not in e["accuracy"]),
                                   key=lambda e: (e["defense"], e["model"]))]
        by_parts: dict[str, list[str]] = {}
        for r in ranked:
            by_parts.setdefault(parts_text(r["entry"]["worst_case_parts"]), []).append(r["entry"]["defense"])
        out.append({"dataset": ds, "preset": preset, "attack": WORST, "paper": False, "headline": True,
                    "parts": [{"defenses": names, "text": text} for text, names in by_parts.items()],
                    "rows": ranked + missing, "pairs": pairs,
                    "comparisons": _comparisons(have, WORST, baseline) if have else [],
                    "paper_protocol": [lab for lab in PAPER_PROTOCOL if any(lab in e["accuracy"] for e in es)]})
    return out


def _public_table(t: dict) -> dict:
    return {"dataset": t["dataset"], "preset": t["preset"], "attack": t["attack"],
            "ranking": [{"rank": r["rank"], "defense": r["entry"]["defense"], "model": r["entry"]["model"],
                         "tied_with_above": r["tied_with_above"], "beaten_by": r["beaten_by"],
                         "exit_ranks": r["exit_ranks"], "measured": r["measured"]} for r in t["rows"]],
            "pairs": t["pairs"], "comparisons": t["comparisons"]}


def curve_labels(entries: list[dict]) -> list[str]:
    """The attack curves of the budgeted evaluation (``policy-pgd`` included when it ran), in a stable order."""
    labels = {lab for e in entries for r in e["_runs"]
              for lab in (r["evaluation"].get("budgeted") or {}).get("curves", {}) if lab != "clean"}
    return [lab for lab in PAPER_PROTOCOL if lab in labels] + sorted(labels - set(PAPER_PROTOCOL))


def summarize(entries: list[dict], target: float | None = None, baseline: str = BASELINE) -> dict:
    """The JSON summary: entries (numbers only), the worst-case headline tables and the per-attack tables with
    ranks (Chatbot Arena's rule, Holm-corrected), every pair's test, comparisons against the baseline, budgets."""
    problem = name_problem("baseline", baseline)
    if problem:
        raise UsageError(problem)
    budget = {}
    for (ds, preset), es in _by_protocol(entries).items():
        budget[f"{ds}/{preset}"] = {lab: budgets(es, lab, target, baseline) for lab in curve_labels(es)}
    public = [{k: v for k, v in e.items() if not k.startswith("_") and k not in DETAIL_KEYS} for e in entries]
    return {
        "entries": public,
        "rank_rule": RANK_RULE,
        "baseline": baseline,
        "headline": [_public_table(t) for t in headline_tables(entries, baseline)],
        "tables": [_public_table(t) for t in tables(entries, baseline)],
        "budgeted": budget,
    }


#: How ranks are decided, in the words the board and SUMMARY.md print.
RANK_RULE = ("A rank is 1 + the number of entries whose lead over this one is significant: the 95% Welch interval "
             "over training seeds of the difference of the means over exits, over every pair of the table, with "
             "Holm's correction for testing all pairs at once (family-wise error at most 5%). Entries that no "
             "entry beats significantly share rank 1; a chain of ties never lifts an entry above one that beats "
             "it.")

#: What the headline is, in two sentences (the board's index and SUMMARY.md).
HEADLINE_NOTE = ("The headline is the per-exit worst case: a test image counts as robust at exit k only if exit k "
                 "is correct on every adversarial example the evaluation made for it (every attack, every "
                 "single-exit candidate of max-average, every attack seed), as an attacker who knows which exit "
                 "will answer would choose. The paper's protocol (PGD max-average and average) keeps one "
                 "adversarial example per image and attack, so its accuracy is never below the worst case; it "
                 "stays beside the headline, labelled as the paper's.")

_MD_SPECIAL = frozenset("\\`*_{}[]<>()#+!|$~&\"'")


def md_escape(text: object) -> str:
    """``text`` safe in a Markdown table cell or heading: every Markdown or HTML metacharacter is
    backslash-escaped (CommonMark escapes any ASCII punctuation), line breaks become spaces."""
    return "".join("\\" + ch if ch in _MD_SPECIAL else " " if ch in "\r\n" else ch for ch in str(text))


def _pct(ms: dict | None, digits: int = 2) -> str:
    if not ms or ms.get("mean") is None:
        return "n/a"
    return f"{100 * ms['mean']:.{digits}f} ± {100 * ms['std']:.{digits}f}"


def diff_text(c: dict) -> str:
    """``+1.23 [-0.40, 2.86] tie`` in accuracy points."""
    if not c["ci"]:  # not a tie either: nothing was measured that could decide
        return f"{100 * c['diff']:+.2f} (no interval: fewer than 2 seeds or no spread) undecided"
    return f"{100 * c['diff']:+.2f} [{100 * c['ci'][0]:+.2f}, {100 * c['ci'][1]:+.2f}] {c.get('verdict') or verdict(c)}"


def budget_text(v: dict) -> str:
    """``4.152 ± 2.678 [0.83, 7.47]`` MFLOPs over the seeds that reach the target."""
    if v.get("mean") is None:
        return "not reached"
    ci = f" [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]" if v.get("ci") else " (no interval)"
    return f"{v['mean']:.3f} ± {v['std']:.3f}{ci}"


def saving_text(name: str, v: dict, ref: dict, baseline: str = BASELINE) -> str:
    """The paper's "a vs b MFLOPs, z% saved", with the Welch interval of the difference and its verdict."""
    c = v.get("vs_baseline")
    if not c:
        return ""
    if not c["ci"]:
        interval = "no interval"
    else:
        interval = f"difference [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}] MFLOPs"
    head = f"{name}: {v['mean']:.2f} vs {baseline}: {ref['mean']:.2f} MFLOPs"
    amount = (f"{100 * c['saved']:.2f}% saved" if c["saved"] >= 0
              else f"{v['mean'] / ref['mean']:.2f}x the budget of {baseline}")
    return f"{head}, {amount} ({interval}; {c['verdict']})"


def _rank_cell(r: dict) -> str:
    if r["rank"] is None:
        return "-"
    return f"{r['rank']}" + (" (tie)" if r["tied_with_above"] else "")


def _table_md(t: dict, entries: dict, metric: str, title: str) -> list[str]:
    es = [entries[(t["dataset"], t["preset"], r["model"], r["defense"])] for r in t["ranking"]]
    L = max(e["num_exits"] for e in es)
    lines = [f"## {md_escape(t['dataset'])} / {md_escape(t['preset'])}: {title}", "",
             "| rank | defense | seeds | " + " | ".join(f"exit {k + 1}" for k in range(L)) + " | avg |",
             "| --- | --- | --- |" + " --- |" * (L + 1)]
    for r, e in zip(t["ranking"], es):
        acc = e["accuracy"].get(metric)
        cells = [_pct(c) for c in acc["per_exit"]] + [_pct(acc["avg"])] if acc else ["not measured"] * (L + 1)
        rank = _rank_cell(r) if metric != "clean" else "-"
        flag = " (masking check failed)" if e.get("masking", {}).get("status") == "failed" else ""
        lines.append(f"| {rank} | {md_escape(e['defense'])}{flag} | {len(e['seeds'])} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def markdown(summary: dict, title: str) -> str:
    """``SUMMARY.md``: the worst-case headline, per-exit accuracy mean ± std over seeds under each attack,
    significance, transferability, budgets. Every string that comes from a result file is escaped."""
    lines = [f"# Reference results: `{title}`", "",
             ("Per-exit top-1 accuracy (%), mean ± std over training seeds. Generated by "
              "`neokd_bench.leaderboard` (`neokd-bench reproduce` or `neokd-bench leaderboard build`); "
              "every number comes from the result files beside this one."), "", HEADLINE_NOTE, "",
             f"Ranks: {summary.get('rank_rule', RANK_RULE)}", ""]
    entries = {(e["dataset"], e["preset"], e["model"], e["defense"]): e for e in summary["entries"]}
    for h in summary.get("headline", []):
        lines += _table_md(h, entries, WORST, "worst case per exit (headline)")
        measured = [entries[(h["dataset"], h["preset"], r["model"], r["defense"])] for r in h["ranking"]
                    if r["measured"]]
        if len(measured) < len(h["ranking"]):
            lines += ["Not measured: the results of the rows without a rank carry no worst case; re-evaluate "
                      "them to rank them here.", ""]
        for e in measured:
            lines.append(f"- worst case of {md_escape(e['defense'])} taken over: "
                         f"{md_escape(parts_text(e.get('worst_case_parts')))}")
        if measured:
            lines.append("")
    seen_clean = set()
    for t in summary["tables"]:
        where = (t["dataset"], t["preset"])
        if where not in seen_clean:
            seen_clean.add(where)
            lines += _table_md(t, entries, "clean", "clean")
        paper = " (the paper's protocol)" if t["attack"] in PAPER_PROTOCOL else ""
        lines += _table_md(t, entries, t["attack"], md_escape(t["attack"]) + paper)
        if t["comparisons"]:
            lines += [f"### {md_escape(t['attack'])}: differences over seeds (points, 95% Welch interval)", "",
                      "A difference whose interval straddles zero is a tie.", "",
                      "| exit | defense | against | difference [95% CI] verdict |", "| --- | --- | --- | --- |"]
            for c in t["comparisons"]:
                ex = "avg" if c["exit"] == "avg" else f"exit {c['exit'] + 1}"
                lines.append(f"| {ex} | {md_escape(c['defense'])} | {md_escape(c['against'])} | {diff_text(c)} |")
            lines.append("")
    with_transfer = [e for e in summary["entries"] if e["transfer_offdiag"]]
    if with_transfer:
        lines += ["## Transferability (mean off-diagonal attack success rate, %; lower is better)", "",
                  "| dataset / preset | defense | off-diagonal mean |", "| --- | --- | --- |"]
        for e in with_transfer:
            lines.append(f"| {md_escape(e['dataset'])} / {md_escape(e['preset'])} | {md_escape(e['defense'])} | "
                         f"{_pct(e['transfer_offdiag'])} |")
        lines.append("")
    for where, per_label in summary["budgeted"].items():
        for label, b in per_label.items():
            if not b:
                continue
            base = b.get("baseline", BASELINE)
            ref = b["mflops_to_reach"].get(base)
            lines += [f"## Budgeted ({md_escape(where)}): MFLOPs to reach {100 * b['target_accuracy']:.2f}% "
                      f"({md_escape(label)})", "",
                      "MFLOPs per test sample: mean ± std over the training seeds that reach the target, [95% "
                      f"t-interval of the mean]; against `{base}`: the Welch interval of the difference (a "
                      "saving whose interval straddles zero is a tie).", "",
                      f"| defense | MFLOPs | seeds that reach it | against {md_escape(base)} |",
                      "| --- | --- | --- | --- |"]
            for name, v in b["mflops_to_reach"].items():
                vs = saving_text(md_escape(name), v, ref, md_escape(base)) if ref and ref.get("mean") else ""
                lines.append(f"| {md_escape(name)} | {budget_text(v)} | {len(v['values'])} of {v.get('seeds')} | "
                             f"{vs} |")
            lines.append("")
    return "\n".join(lines)


def dumps(summary: dict) -> str:
    return json.dumps(summary, indent=2, sort_keys=True, allow_nan=False) + "\n"
