"""`neokd-bench masking CHECKPOINT`: gradient-masking checks on a trained checkpoint (see
:mod:`neokd_bench.evaluation.masking`). Prints a table of the checks; exits 1 if any check fails."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from ..errors import check


def add_parser(sub: Any) -> None:
    p = sub.add_parser("masking", help="gradient-masking checks (eps sweep, large eps, more steps, "
                                       "black-box vs white-box, zero gradients) on a checkpoint")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint.pt written by `neokd-bench run`")
    p.add_argument("--n", type=int, default=500, help="number of test images (default 500)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu or cuda[:N]")
    p.add_argument("--eps", type=float, help="eps (default: the dataset's threat model; at most 1; more than 4x "
                                             "the threat model needs --force)")
    p.add_argument("--force", action="store_true", help="accept an --eps far above the dataset's threat model")
    p.add_argument("--step-size", type=float, help="PGD step size (default: the dataset's threat model)")
    p.add_argument("--steps", type=int, default=20, help="PGD steps of the base attack (default 20)")
    p.add_argument("--objective", default="average", help="PGD objective: average (default), max-average, exit:K")
    p.add_argument("--square-queries", type=int, default=1000, help="Square queries (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="attack seed (default 0)")
    p.add_argument("--data-root", help="folder holding the dataset (default: as recorded in the checkpoint)")
    p.add_argument("--json", dest="json_out", help="also write the full report to this JSON file")
    p.set_defaults(func=run_masking)


def run_masking(args: argparse.Namespace) -> int:
    import torch

    from ..attacks.base import Objective
    from ..evaluation.masking import run_masking_checks
    from ..presets import threat
    from ..trainer import model_from_checkpoint, resolve_device
    from ..utils import check_output_file
    from .common import check_eps, check_seed, load_checkpoint_data, load_run_checkpoint

    for flag, val in (("--n", args.n), ("--steps", args.steps), ("--square-queries", args.square_queries)):
        check(val >= 1, f"{flag} must be at least 1, got {val}")
    check_seed(args.seed)
    check(args.step_size is None or (math.isfinite(args.step_size) and 0 < args.step_size <= 1),
          f"--step-size must be in (0, 1], got {args.step_size}; e.g. --step-size 0.025")
    check(args.eps is None or args.eps > 0, f"--eps must be positive, got {args.eps}; e.g. --eps 0.1")
    Objective.parse(args.objective)
    device = resolve_device(args.device)
    if args.json_out:
        check_output_file(args.json_out, "--json")
    state = load_run_checkpoint(args.checkpoint)
    check_eps(args.eps, state["dataset"], args.force)
    model = model_from_checkpoint(state, args.checkpoint).to(device)
    Objective.parse(args.objective).check(model)
    bundle = load_checkpoint_data(state, args.data_root, None, args.checkpoint)
    x, y = bundle.test.subset(args.n).tensors()
    x, y = x.to(device), y.to(device)
    t = threat(state["dataset"]) if args.eps is None or args.step_size is None else None
    eps = args.eps if args.eps is not None else t.eps  # type: ignore[union-attr]
    step = args.step_size if args.step_size is not None else t.step_size  # type: ignore[union-attr]

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        report = run_masking_checks(model, x, y, eps=eps, step_size=step, steps=args.steps,
                                    objective=args.objective, square_queries=args.square_queries, seed=args.seed)
    _print(report, args.checkpoint)
    if args.json_out:
        from ..utils import atomic_write_text

        atomic_write_text(args.json_out, json.dumps(report, indent=2))
    return 0 if report["passed"] else 1


def _pct(v: list[float]) -> str:
    return " ".join(f"{100 * a:.1f}" for a in v)


def _paired(paired: dict[str, Any] | None) -> str:
    """The paired test per exit: samples only Square fooled / only PGD fooled, one-sided exact p-value."""
    if not paired:
        return ""
    cells = ", ".join(f"{b}/{c} p={p:.2g}" for b, c, p in zip(paired["square_only"], paired["white_only"],
                                                               paired["p_value"]))
    return f"; only Square / only PGD fooled: {cells} (fails at p < {paired['alpha']})"


def _print(report: dict[str, Any], name: str) -> None:
    from rich.console import Console
    from rich.table import Table

    c = report["checks"]
    cfg = report["config"]
    table = Table(title=f"gradient-masking checks: {name} (n={cfg['n']}, eps={cfg['eps']:.4g}, "
                        f"objective {cfg['objective']}; accuracies in % per exit 1..L)")
    table.add_column("check")
    table.add_column("result")
    table.add_column("numbers")
    ok = "[green]pass[/green]"
    bad = "[red]FAIL[/red]"
    sweep = "; ".join(f"eps {e:.3g}: {_pct(a)}"
                      for e, a in zip(c["eps_monotone"]["eps"], c["eps_monotone"]["accuracy"]))
    rows = [
        ("accuracy does not rise with eps", c["eps_monotone"], sweep),
        ("accuracy ~0 at large eps", c["large_eps"],
         (f"eps {c['large_eps']['eps']:.3g}: {_pct(c['large_eps']['accuracy'])} (max allowed "
          f"{100 * c['large_eps']['threshold']:.1f})")),
        ("more steps at least as strong", c["more_steps"],
         "; ".join(f"PGD-{s}: {_pct(a)}" for s, a in zip(c["more_steps"]["steps"], c["more_steps"]["accuracy"]))),
        ("black-box no stronger than white-box", c["black_box"],
         (f"Square-{c['black_box']['n_queries']}: {_pct(c['black_box']['square_accuracy'])}; "
          f"PGD: {_pct(c['black_box']['pgd_accuracy'])}" + _paired(c["black_box"].get("paired")))),
        ("no exit with all-zero gradients", c["nonzero_gradients"],
         f"zero-gradient fraction per exit: {_pct(c['nonzero_gradients']['zero_fraction'])} %"),
    ]
    for label, res, numbers in rows:
        table.add_row(label, ok if res["passed"] else bad, numbers)
    console = Console()
    console.print(f"clean accuracy per exit (%): {_pct(report['clean_accuracy'])}")
    console.print(table)
    console.print("all checks passed" if report["passed"] else "[red]some checks failed[/red]")
