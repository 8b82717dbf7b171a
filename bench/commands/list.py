"""`neokd-bench list [models|datasets|attacks|defenses|policies] [--pattern GLOB]`: rich tables of the registries
(policies: the exit policies of budgeted prediction, ``eval --policy NAME``).

For models the table shows the number of exits, the parameters and the fvcore MFLOPs up to each exit
(cumulative, earlier exit heads included, one FLOP per multiply-add).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..registry import REGISTRIES


def add_parser(sub: Any) -> None:
    p = sub.add_parser("list", help="show what is registered (models, datasets, attacks, defenses, exit policies)")
    p.add_argument("kind", nargs="?", choices=sorted(REGISTRIES), default=None,
                   help="which registry (default: all)")
    p.add_argument("--pattern", default="*", help="glob filter on names, e.g. 'msdnet*'")
    p.add_argument("--no-flops", action="store_true", help="skip building models to count FLOPs")
    p.set_defaults(func=run)


def _doc(obj: Any) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


def model_rows(pattern: str = "*", flops: bool = True) -> list[dict[str, Any]]:
    """Name, exits, parameters and cumulative MFLOPs per exit of every registered model."""
    from ..models.base import count_params
    from ..registry import MODELS

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = []
    for name, builder in MODELS.resolve_all(pattern).items():
        row: dict[str, Any] = {"name": name, "doc": _doc(builder)}
        try:
            model = builder().eval()
            row.update(exits=model.num_exits, params=count_params(model), input=tuple(model.input_size))
            if flops:
                from ..flops import exit_flops

                row["mflops"] = [f / 1e6 for f in exit_flops(model)]
        except Exception as exc:  # a model that cannot be built with defaults still gets listed
            row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    kinds = [args.kind] if args.kind else ["models", "datasets", "attacks", "defenses", "policies"]
    for kind in kinds:
        reg = REGISTRIES[kind]
        table = Table(title=f"{kind} ({reg.group})", title_justify="left")
        table.add_column("name", style="bold")
        if kind == "models":
            for col in ("exits", "params", "input", "MFLOPs up to exit 1..L"):
                table.add_column(col, justify="right" if col != "MFLOPs up to exit 1..L" else "left")
            table.add_column("description")
            for r in model_rows(args.pattern, flops=not args.no_flops):
                if "error" in r:
                    table.add_row(r["name"], "?", "?", "?", f"[red]{r['error']}", r["doc"])
                    continue
                mf = " ".join(f"{v:.2f}" for v in r.get("mflops", []))
                table.add_row(r["name"], str(r["exits"]), f"{r['params'] / 1e6:.2f}M",
                              "x".join(map(str, r["input"])), mf, r["doc"])
        else:
            table.add_column("source")
            table.add_column("description")
            for name, obj in reg.resolve_all(args.pattern).items():
                table.add_row(name, reg.entry(name).source, _doc(obj))
        for name, msg in reg.broken.items():
            table.add_row(f"[red]{name}", "[red]broken plugin", msg)
        console.print(table)
    return 0
