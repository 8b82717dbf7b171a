"""``neokd-bench leaderboard build``: result files in, a static site out (glob, sort, render; no torch).

The site is offline (no CDN, no remote font, no JavaScript), deterministic (no clock: the same inputs give the
same bytes) and escapes every string that comes from a result file or a plugin (Jinja autoescape; no ``|safe``
on data; figures are SVG files shown through ``<img>``, where no script runs). Pages:

* ``index.html`` - per (dataset, preset), the headline table ranked by the per-exit worst case ("not
  measured" where a result lacks it), the paper's protocol beside it, then one table per attack; ranks follow
  Chatbot Arena's rule (1 + the entries significantly better, Holm-corrected; :mod:`.aggregate`), and an entry
  whose masking checks failed is flagged;
* ``<dataset>.html`` - budgeted curves of every defense on one plot per attack (``policy-pgd`` included when
  it ran), mean over training seeds with a min-max band, transferability heatmaps, the budget each defense needs
  to reach a target accuracy with its interval over seeds and against ``adv`` (tie when the saving is not
  significant), and the paper's reported numbers beside the measured ones;
* ``entry/<id>.html`` - an entry's resolved config, assumptions and provenance;
* ``summary.json`` and ``SUMMARY.md`` - the same aggregation as the pages.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .aggregate import (
    BASELINE,
    HEADLINE_NOTE,
    RANK_RULE,
    WORST,
    budget_text,
    budgets,
    curve_labels,
    diff_text,
    dumps,
    headline_tables,
    load_results,
    make_entries,
    markdown,
    saving_text,
    summarize,
    tables,
)
from .reported import REPORTED_DIR, load_reported

HERE = Path(__file__).resolve().parent


def slug(*parts: str) -> str:
    """A file-name-safe id: lowercase letters, digits and dashes, plus a short hash of the original text
    (so two hostile names never collide and none can leave the site folder)."""
    text = "/".join(parts)
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "x"
    return f"{base}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:8]}"


def pct(ms: dict | None) -> str:
    return "n/a" if not ms or ms.get("mean") is None else f"{100 * ms['mean']:.2f}"


def interval_text(c: dict | None) -> str:
    """``+1.23 points [-0.40, +2.86]`` (95% Welch), with no verdict (used where the verdict is Holm's)."""
    if not c:
        return "n/a"
    if not c.get("ci"):
        return f"{100 * c['diff']:+.2f} points (no interval)"
    return f"{100 * c['diff']:+.2f} points [{100 * c['ci'][0]:+.2f}, {100 * c['ci'][1]:+.2f}]"


def _env():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["pct"] = pct
    env.filters["sd"] = lambda ms: "" if not ms or ms.get("std") is None else f"{100 * ms['std']:.2f}"
    env.filters["f2"] = lambda v: "n/a" if v is None else f"{v:.2f}"
    env.filters["diff"] = diff_text
    env.filters["interval"] = interval_text
    env.filters["pretty"] = _pretty
    return env


def _pretty(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def _write(path: Path, text: str) -> None:
    from neokd_bench.contract import atomic_write

    atomic_write(path, text)


def _mean_matrix(runs: list[dict]) -> dict | None:
    trs = [r["evaluation"].get("transfer") for r in runs]
    if not all(t and t.get("n", 0) > 0 for t in trs):
        return None
    n = len(trs[0]["matrix"])
    m = [[sum(t["matrix"][i][j] for t in trs) / len(trs) for j in range(n)] for i in range(n)]
    off = [m[i][j] for i in range(n) for j in range(n) if i != j]
    return {"evaluation": {"transfer": {"matrix": m, "n": sum(t["n"] for t in trs) // len(trs),
                                        "offdiag_mean": sum(off) / len(off) if off else None}}}


def _dataset_pages(entries: list[dict], reported: list[dict], tabs: list[dict], out: Path,
                   baseline: str = BASELINE) -> list[dict]:
    from neokd_bench.plots import BAND, plot_budgeted_seeds, plot_transfer

    datasets = sorted({e["dataset"] for e in entries} | {r["dataset"] for r in reported})
    pages = []
    for ds in datasets:
        es = [e for e in entries if e["dataset"] == ds]
        page: dict[str, Any] = {"dataset": ds, "file": f"{slug(ds)}.html", "presets": [], "reported": [],
                                "measured_defenses": sorted({e["defense"] for e in es})}
        for preset in sorted({e["preset"] for e in es}):
            pes = [e for e in es if e["preset"] == preset]
            block: dict[str, Any] = {"preset": preset, "curves": [], "transfer": [], "budgets": []}
            for label in curve_labels(pes):
                have = {e["defense"]: [r["evaluation"]["budgeted"]["curves"][label] for r in e["_runs"]]
                        for e in pes if all(label in (r["evaluation"].get("budgeted") or {}).get("curves", {})
                                            for r in e["_runs"])}
                if have:
                    name = f"plots/{slug(ds, preset, label, 'budgeted')}"
                    plot_budgeted_seeds(have, out / name, curve=label, formats=("svg",))
                    block["curves"].append({"attack": label, "svg": f"{name}.svg", "band": BAND,
                                            "seeds": {d: len(c) for d, c in have.items()}})
                b = budgets(pes, label, baseline=baseline)
                if b:
                    ref = b["mflops_to_reach"].get(baseline)
                    rows = []
                    for name_, v in sorted(b["mflops_to_reach"].items()):
                        vs = saving_text(name_, v, ref, baseline) if ref and ref.get("mean") else ""
                        rows.append({"defense": name_, "mflops": v, "text": budget_text(v), "vs_baseline": vs,
                                     "verdict": (v.get("vs_baseline") or {}).get("verdict")})
                    block["budgets"].append({"attack": label, "target": b["target_accuracy"], "rows": rows})
            for e in pes:
                mean = _mean_matrix(e["_runs"])
                if mean:
                    name = f"plots/{slug(ds, preset, e['model'], e['defense'], 'transfer')}"
                    plot_transfer(mean, out / name, title=f"{e['defense']} (mean of {len(e['seeds'])} seeds)",
                                  formats=("svg",))
                    block["transfer"].append({"defense": e["defense"], "svg": f"{name}.svg",
                                              "offdiag": mean["evaluation"]["transfer"]["offdiag_mean"]})
            block["tables"] = [t for t in tabs if t["dataset"] == ds and t["preset"] == preset]
            page["presets"].append(block)
        for r in [r for r in reported if r["dataset"] == ds]:
            measured = [e for e in es if e["defense"] == r["defense"]]
            label = r["attack"] or "clean"
            page["reported"].append({**r, "measured": [
                {"preset": e["preset"], "model": e["model"], "acc": e["accuracy"].get(label),
                 "n": len(e["seeds"])} for e in measured if label in e["accuracy"]]})
        pages.append(page)
    return pages


#: The file every build writes into its site, listing the files it wrote: a later build replaces only a folder
#: that holds it and no other file.
MARKER = ".neokd-bench-site"


def _site_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir() or p.is_symlink())


def _previous_build(final: Path, shown: Path) -> bool:
    """Whether ``final`` exists (a folder this command may replace); a file, or a folder holding anything a
    build did not write, is a one-line error: the build never deletes a file it did not write."""
    from neokd_bench.errors import UsageError
    from neokd_bench.safe_io import InputFileError, read_text

    if not final.exists():
        return False
    if not final.is_dir():
        raise UsageError(f"--out {shown} is a file; give a folder path with --out")
    present = list(final.rglob("*"))
    if not present:
        return True
    marker = final / MARKER
    if not marker.is_file():
        raise UsageError(f"--out {shown} is not empty and is not a site this command built (no {MARKER} file); "
                         f"choose a new or empty folder with --out")
    try:
        written = set(read_text(marker, "").splitlines()[1:])
    except InputFileError as exc:
        raise UsageError(f"--out {shown}: {exc}; choose a new or empty folder with --out") from None
    kept = written | {MARKER}
    parents = {q.as_posix() for w in kept for q in Path(w).parents if q != Path(".")}
    for p in sorted(present):
        rel = p.relative_to(final).as_posix()
        if rel not in kept and not (p.is_dir() and not p.is_symlink() and rel in parents):
            raise UsageError(f"--out {shown} holds {rel}, which no build wrote; move it away or choose another "
                             f"folder with --out (a build replaces the whole folder)")
    return True


def build(result_dirs: Iterable[str | Path], out: str | Path, reported_dir: str | Path = REPORTED_DIR,
          efficiency_dirs: Iterable[str | Path] = (), baseline: str = BASELINE) -> dict:
    """Build the site into ``out``; returns ``{"pages": [...], "entries": n, "files": n}``.

    The site is written into a fresh folder beside ``out`` and swapped in when complete, so a failed build
    leaves ``out`` as it was. ``out`` must be new, empty or a previous build holding only what that build
    wrote (listed in its :data:`MARKER` file); anything else is refused before any work, never deleted."""
    from neokd_bench.utils import check_output_dir

    shown = Path(out)
    check_output_dir(shown, "--out")
    final = shown.resolve()
    replace = _previous_build(final, shown)
    final.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = final.parent / f".{final.name}.building-{secrets.token_hex(4)}"
        try:
            os.mkdir(tmp)
            break
        except FileExistsError:
            continue
    try:
        info = _build_into(result_dirs, tmp, reported_dir, efficiency_dirs, baseline)
        _write(tmp / MARKER, "neokd-bench leaderboard build: the files it wrote\n"
               + "".join(f + "\n" for f in _site_files(tmp)))
        if replace:  # two renames: out is the old site, absent for an instant, then the new one; never a mix
            old = final.parent / f".{final.name}.old-{secrets.token_hex(4)}"
            os.rename(final, old)
            try:
                os.rename(tmp, final)
            except OSError:
                os.rename(old, final)
                raise
            shutil.rmtree(old)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def _build_into(result_dirs: Iterable[str | Path], out: str | Path, reported_dir: str | Path = REPORTED_DIR,
                efficiency_dirs: Iterable[str | Path] = (), baseline: str = BASELINE) -> dict:
    """Build the site into the fresh folder ``out`` (see :func:`build`).

    ``efficiency_dirs``: folders of efficiency eval files (``neokd-bench eval --metrics efficiency``), joined
    to the result of the same weights (same ``training.checkpoint_sha256``) when it has no efficiency of its
    own; they are shown in the efficiency columns, with their protocol, and are not entries of their own."""
    out = Path(out)
    loaded = load_results(result_dirs)
    eff_loaded = load_results(efficiency_dirs) if efficiency_dirs else []
    entries = make_entries(loaded, eff_loaded)
    reported = load_reported(reported_dir)
    tabs = tables(entries, baseline)
    heads = headline_tables(entries, baseline)
    summary = summarize(entries, baseline=baseline)
    digest = hashlib.sha256()
    for path, _ in sorted(loaded, key=lambda pd: pd[0].name) + sorted(eff_loaded, key=lambda pd: str(pd[0])):
        digest.update(path.name.encode("utf-8") + b"\0" + path.read_bytes())
    (out / "static").mkdir(parents=True, exist_ok=True)
    for f in sorted((HERE / "static").iterdir()):
        _write(out / "static" / f.name, f.read_text(encoding="utf-8"))
    for e in entries:
        e["page"] = f"entry/{slug(e['dataset'], e['preset'], e['model'], e['defense'])}.html"
    pages = _dataset_pages(entries, reported, tabs, out, baseline)
    env = _env()
    common = {"n_files": len(loaded), "inputs_sha256": digest.hexdigest(), "datasets": pages}
    _write(out / "index.html", env.get_template("index.html.j2").render(
        tables=tabs, headlines=heads, worst=WORST, headline_note=HEADLINE_NOTE, rank_rule=RANK_RULE,
        baseline=baseline, root="", **common))
    for page in pages:
        _write(out / page["file"], env.get_template("dataset.html.j2").render(page=page, root="", baseline=baseline,
                                                                              **common))
    for e in entries:
        rep = [r for r in reported if r["dataset"] == e["dataset"] and r["defense"] == e["defense"]]
        _write(out / e["page"], env.get_template("entry.html.j2").render(
            e=e, reported=rep, root="../", dataset_page=slug(e["dataset"]) + ".html", **common))
    _write(out / "summary.json", dumps(summary))
    _write(out / "SUMMARY.md", markdown(summary, "leaderboard") + "\n")
    return {"pages": 1 + len(pages) + len(entries), "entries": len(entries), "files": len(loaded)}
