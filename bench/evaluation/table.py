"""The per-exit accuracy table printed after `run` and `eval` (rich; reads a result dict only)."""

from __future__ import annotations

from typing import Any


def anytime_table(result: dict[str, Any], title: str | None = None):
    """A rich table of per-exit accuracy (%): clean, each attack's mean ± std over seeds (an attack run on the first
    images only says on how many), and the worst case per exit over every adversarial example made."""
    from rich.table import Table

    ev = result.get("evaluation", result)
    any_ = ev["anytime"]
    num_exits = len(any_["clean"]["top1"]["per_exit"])
    name = (result.get("defense") or {}).get("name") if "evaluation" in result else None
    table = Table(title=title or f"anytime accuracy (%), {name or 'model'}, n={any_['n']}")
    table.add_column("data")
    table.add_column("acc")
    for k in range(num_exits):
        table.add_column(f"exit {k + 1}", justify="right")
    table.add_column("avg", justify="right")
    for acc in ("top1", "top5"):
        c = any_["clean"].get(acc)
        if c:
            table.add_row("clean", acc, *[f"{100 * v:.2f}" for v in c["per_exit"]], f"{100 * c['avg']:.2f}")
    rows = [(label, entry, ("top1", "top5")) for label, entry in any_["adversarial"].items()]
    limited = any_.get("limited") or {}
    rows += [(f"{label} (first {entry['n']})", entry, ("top1",)) for label, entry in limited.items()]
    if any_.get("worst_case"):  # one value over every seed at once: no spread to show
        rows.append(("worst case", {**any_["worst_case"], "seeds": [0]}, ("top1",)))
    for label, entry, accs in rows:
        for acc in accs:
            a = entry.get(acc)
            if not a:
                continue
            multi = len(entry["seeds"]) > 1
            cells = [f"{100 * m:.2f}" + (f"±{100 * s:.2f}" if multi else "") for m, s in zip(a["mean"], a["std"])]
            avg = f"{100 * a['avg']['mean']:.2f}" + (f"±{100 * a['avg']['std']:.2f}" if multi else "")
            table.add_row(label, acc, *cells, avg)
    return table
