"""`neokd-bench eval CHECKPOINT`: evaluate a trained checkpoint, write a result JSON and its figures.

The checkpoint is the dict written by the trainer (``torch.save``; loaded with ``weights_only=True``):
``model_name``, ``model_kwargs``, ``dataset``, ``data_source``, ``defense`` (its ``describe()``),
``config``/``train_config``, ``history`` and ``model`` (the state dict).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

from ..errors import UsageError, check


def add_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: anytime, budgeted and transferability metrics")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint.pt written by `neokd-bench run`")
    p.add_argument("--attacks", "--attack", dest="attacks",
                   help="comma-separated NAME[:OBJECTIVE], e.g. pgd:max-average,pgd:average,cw,autoattack "
                        "(default: PGD with the protocol's objectives)")
    p.add_argument("--metrics", help="comma-separated subset of anytime,budgeted,transfer,efficiency,calibration,"
                                     "latency (default: anytime,budgeted,transfer)")
    p.add_argument("--policy", help="exit policy of budgeted prediction: max-softmax (default), entropy or patience")
    p.add_argument("--budget-index", type=int, help="efficiency: the allocation (0-based) of the budgeted family "
                                                    "to measure at (default: the one closest to an equal share)")
    p.add_argument("--policy-budgets", type=int, help="efficiency: budgets at which policy-pgd runs (default 5)")
    p.add_argument("--seeds", help="comma-separated attack seeds (default 0,1,2)")
    p.add_argument("--steps", type=int, help="PGD steps (default 50, paper Sec. 4.1)")
    p.add_argument("--test-limit", type=int, help="evaluate on the first N test images (default: all)")
    p.add_argument("--val-limit", type=int, help="budgeted thresholds from the first N validation images "
                                                  "(default: the test limit)")
    p.add_argument("--transfer-limit", type=int, help="samples for the transferability matrix (default 1000)")
    p.add_argument("--thresholds-on", choices=["clean", "adversarial"], default="clean",
                   help="set budgeted thresholds on clean (default) or adversarial validation data")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--data-root", help="folder holding the dataset (default: as recorded in the checkpoint)")
    p.add_argument("--out", help="result JSON path (default: <checkpoint folder>/eval.json)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu or cuda[:N]")
    p.add_argument("--no-plots", action="store_true", help="do not write figures")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_eval)


def _ints(text: str | None, flag: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        vals = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError as exc:
        raise UsageError(f"{flag} expects comma-separated integers, e.g. {flag} 0,1,2") from exc
    check(bool(vals), f"{flag} is empty; e.g. {flag} 0,1,2")
    return vals


def run_eval(args: argparse.Namespace) -> int:
    import neokd_bench as nb

    from ..evaluation import (
        DEFAULT_METRICS,
        METRICS,
        anytime_table,
        describe_model,
        evaluate,
        parse_attack_list,
    )
    from ..evaluation.policies import POLICIES
    from ..presets import EvalProtocol
    from ..results import make_result, write_result
    from ..trainer import load_checkpoint, model_from_checkpoint, resolve_device

    for flag, val in (("--steps", args.steps), ("--test-limit", args.test_limit), ("--val-limit", args.val_limit),
                      ("--transfer-limit", args.transfer_limit), ("--batch-size", args.batch_size),
                      ("--policy-budgets", args.policy_budgets)):
        check(val is None or val >= 1, f"{flag} must be at least 1, got {val}")
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip()) if args.metrics else DEFAULT_METRICS
    for m in metrics:
        check(m in METRICS, f"unknown metric {m!r}; use --metrics with any of {','.join(METRICS)}")
    check(args.budget_index is None or args.budget_index >= 0,
          f"--budget-index must be 0 or more, got {args.budget_index}")
    if args.policy is not None:
        check(args.policy in POLICIES, f"unknown policy {args.policy!r}; use --policy with one of "
                                       f"{','.join(POLICIES.names())}")
    attacks = parse_attack_list(args.attacks) if args.attacks else None
    seeds = _ints(args.seeds, "--seeds")

    t_start = time.perf_counter()
    state = load_checkpoint(args.checkpoint)
    for key in ("model_name", "dataset", "model"):
        check(key in state, f"{args.checkpoint} has no {key!r}; pass a checkpoint.pt written by `neokd-bench run`")
    timings: dict[str, float] = {}
    t = time.perf_counter()
    bundle = nb.load_dataset(state["dataset"], root=args.data_root or state.get("data_root"),
                             source=state.get("data_source") or "auto")
    timings["data_s"] = time.perf_counter() - t
    model = model_from_checkpoint(state)
    device = resolve_device(args.device)

    proto = EvalProtocol()
    proto = dataclasses.replace(proto, **{k: v for k, v in {
        "steps": args.steps, "attack_seeds": seeds, "test_limit": args.test_limit, "metrics": metrics,
        "transfer_limit": args.transfer_limit, "policy": args.policy, "budget_index": args.budget_index,
        "policy_budgets": args.policy_budgets}.items() if v is not None})
    t = time.perf_counter()
    evaluation = evaluate(model, bundle, dataset_key=state["dataset"], protocol=proto, device=device,
                          metrics=metrics, attacks=attacks, thresholds_on=args.thresholds_on,
                          progress=not args.quiet, batch_size=args.batch_size, val_limit=args.val_limit)
    timings["eval_s"] = time.perf_counter() - t
    model = model.cpu()
    config = state.get("train_config") or state.get("config") or {}
    training = {"config": dict(config), "history": state.get("history"),
                "wall_s": _history_wall(state.get("history")), "checkpoint": str(args.checkpoint)}
    train_seed = config.get("seed") if isinstance(config, dict) else None
    timings["total_s"] = time.perf_counter() - t_start
    result = make_result(
        model=describe_model(model, state["model_name"], dict(state.get("model_kwargs") or {})),
        dataset=bundle.describe(), defense=state.get("defense"), training=training, evaluation=evaluation,
        seeds={"train": train_seed if isinstance(train_seed, int) else None, "split": bundle.split_seed,
               "attack": list(proto.attack_seeds)},
        timings=timings, kind="eval", device=device)
    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent / "eval.json"
    path = write_result(out, result)
    if not args.no_plots:
        from ..plots import plot_result

        plot_result(result, path)
        if evaluation.get("calibration"):
            from ..evaluation.calibration import plot_reliability

            plot_reliability(result, path.with_name(path.stem + ".reliability"))
    from rich.console import Console

    console = Console()
    console.print(anytime_table(result))
    tr = evaluation.get("transfer")
    if tr and tr.get("offdiag_mean") is not None:
        console.print(f"transferability: mean off-diagonal success rate {100 * tr['offdiag_mean']:.2f}% "
                      f"on {tr['n']} samples")
    eff = evaluation.get("efficiency")
    if eff:
        from ..evaluation.efficiency import summary_line

        console.print(summary_line(eff))
    console.print(f"result: {path}")
    return 0


def _history_wall(history: Any) -> float | None:
    if not isinstance(history, list) or not history:
        return None
    try:
        return float(sum(float(h.get("wall_s", 0.0)) for h in history))
    except (TypeError, ValueError, AttributeError):
        return None
