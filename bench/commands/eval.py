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
    p.add_argument("--policy-budgets", help="efficiency: how many budgets of the curve, spread evenly, policy-pgd "
                                            "is run at, or 'all' for every one (default 5)")
    p.add_argument("--budget-allocations", type=int, help="allocations on the budgeted curve (default 100, "
                                                          "App. A.3); fewer make a coarser curve")
    p.add_argument("--reference", action="store_true",
                   help="also run the reference protocol of the smoke/cpu/paper presets: APGD-DLR and Square on each "
                        "exit on the first --per-exit-limit test images (joining the worst case there), the masking "
                        "verdict and the budgeted curve under policy-pgd")
    p.add_argument("--per-exit-limit", type=int, help="with --reference: test images the per-exit attacks run on "
                                                      "(default 500)")
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
    p.add_argument("--val-size", type=int, help="validation images held out of the training set "
                                                "(default: as recorded in the checkpoint, else the dataset's)")
    p.add_argument("--out", help="result JSON path (default: <checkpoint folder>/eval.json)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu or cuda[:N]")
    p.add_argument("--no-plots", action="store_true", help="do not write figures")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:

    from ..distributed import init_distributed, rank_and_world
    from ..evaluation import anytime_table, describe_model, evaluate
    from ..evaluation.options import (
        DEFAULT_METRICS,
        check_attacks,
        check_metric_options,
        check_policy,
        parse_attack_list,
        parse_ints,
        parse_metrics,
        parse_policy_budgets,
    )
    from ..presets import EvalProtocol
    from ..results import make_result, write_result
    from ..trainer import load_checkpoint, model_from_checkpoint, resolve_device
    from ..utils import check_output_file, file_sha256

    for flag, val in (("--steps", args.steps), ("--test-limit", args.test_limit), ("--val-limit", args.val_limit),
                      ("--transfer-limit", args.transfer_limit), ("--batch-size", args.batch_size),
                      ("--val-size", args.val_size), ("--per-exit-limit", args.per_exit_limit)):
        check(val is None or val >= 1, f"{flag} must be at least 1, got {val}")
    policy_budgets = parse_policy_budgets(args.policy_budgets)
    check(args.budget_allocations is None or args.budget_allocations >= 2,
          f"--budget-allocations must be at least 2, got {args.budget_allocations}")
    n_alloc = args.budget_allocations or EvalProtocol().budget_allocations
    check(args.budget_index is None or 0 <= args.budget_index < n_alloc,
          f"--budget-index must be in 0..{n_alloc - 1}, got {args.budget_index}")
    check_policy(args.policy)
    metrics = parse_metrics(args.metrics) or DEFAULT_METRICS
    check_metric_options(metrics, {"--policy": args.policy, "--budget-index": args.budget_index,
                                   "--policy-budgets": policy_budgets}, n_alloc)
    attacks = parse_attack_list(args.attacks) if args.attacks is not None else None
    if attacks is not None:
        check_attacks(attacks)
    seeds = parse_ints(args.seeds, "--seeds")
    device = init_distributed(resolve_device(args.device))  # torchrun: join the ranks, one device each
    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent / "eval.json"
    check_output_file(out, "--out")

    t_start = time.perf_counter()
    state = load_checkpoint(args.checkpoint)
    for key in ("model_name", "dataset", "model"):
        check(key in state, f"{args.checkpoint} has no {key!r}; pass a checkpoint.pt written by `neokd-bench run`")
    check(isinstance(state["dataset"], str), f"{args.checkpoint}: dataset is not a name; pass a checkpoint.pt "
                                             f"written by `neokd-bench run`")
    model = model_from_checkpoint(state, args.checkpoint)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    bundle = load_checkpoint_data(state, args.data_root, args.val_size, args.checkpoint)
    timings["data_s"] = time.perf_counter() - t
    n_cls = getattr(model, "num_classes", bundle.num_classes)
    check(tuple(model.input_size) == tuple(bundle.input_size) and n_cls == bundle.num_classes,
          f"{args.checkpoint}: the model takes {tuple(model.input_size)} inputs and {n_cls} classes, "
          f"but the data gives {tuple(bundle.input_size)} and {bundle.num_classes}; check --data-root")

    proto = EvalProtocol()
    if args.reference:
        from ..presets import REFERENCE_PROTOCOL

        proto = dataclasses.replace(proto, **REFERENCE_PROTOCOL)
        if args.per_exit_limit is not None:
            proto = dataclasses.replace(proto, per_exit_limit=args.per_exit_limit)
    check(args.per_exit_limit is None or args.reference, "--per-exit-limit needs --reference")
    proto = dataclasses.replace(proto, **{k: v for k, v in {
        "steps": args.steps, "attack_seeds": seeds, "test_limit": args.test_limit, "metrics": metrics,
        "transfer_limit": args.transfer_limit, "policy": args.policy, "budget_index": args.budget_index,
        "policy_budgets": policy_budgets, "budget_allocations": args.budget_allocations}.items() if v is not None})
    t = time.perf_counter()
    evaluation = evaluate(model, bundle, dataset_key=state["dataset"], protocol=proto, device=device,
                          metrics=metrics, attacks=attacks, thresholds_on=args.thresholds_on,
                          progress=not args.quiet and rank_and_world()[0] == 0, batch_size=args.batch_size,
                          val_limit=args.val_limit)
    timings["eval_s"] = time.perf_counter() - t
    if rank_and_world()[0] != 0:  # torchrun: every rank has the whole evaluation; rank 0 writes it
        return 0
    model = model.cpu()
    config = state.get("train_config") or state.get("config") or {}
    config = config if isinstance(config, dict) else {}
    training = {"config": dict(config), "history": state.get("history"),
                "wall_s": _history_wall(state.get("history")), "checkpoint": str(args.checkpoint),
                "checkpoint_sha256": file_sha256(args.checkpoint)}
    train_seed = config.get("seed") if isinstance(config, dict) else None
    timings["total_s"] = time.perf_counter() - t_start
    result = make_result(
        model=describe_model(model, state["model_name"], dict(state.get("model_kwargs") or {})),
        dataset=bundle.describe(), defense=state.get("defense"), training=training, evaluation=evaluation,
        seeds={"train": train_seed if isinstance(train_seed, int) else None, "split": bundle.split_seed,
               "attack": list(proto.attack_seeds)},
        timings=timings, kind="eval", device=device)
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


def load_checkpoint_data(state: dict[str, Any], data_root: str | None, val_size: int | None, name: Any) -> Any:
    """The dataset a checkpoint was trained on: from ``--data-root`` when given (any source), else where the
    checkpoint says. A source the dataset does not have is named with the checkpoint."""
    import neokd_bench as nb

    from ..data.common import SOURCES

    source = "auto" if data_root else state.get("data_source") or "auto"
    check(source in SOURCES, f"{name} records data source {source!r}; pass --data-root DIR")
    root = data_root or state.get("data_root")
    vs = val_size if val_size is not None else state.get("val_size")
    try:
        return nb.load_dataset(state["dataset"], root=root, source=source, val_size=vs)
    except UsageError as exc:
        if data_root or source == "auto":
            raise
        raise UsageError(f"{name} was trained on {state['dataset']} from source {source!r}: {exc}") from exc
