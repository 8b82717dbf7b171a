"""`neokd-bench eval CHECKPOINT`: evaluate a trained checkpoint, write a result JSON and its figures.

The checkpoint is the dict written by the trainer (``torch.save``; loaded with ``weights_only=True``):
``model_name``, ``model_kwargs``, ``dataset``, ``data_source``, ``defense`` (its ``describe()``),
``config``/``train_config``, ``history`` and ``model`` (the state dict).

The command line is parsed and checked once (:class:`EvalSpec`) before the checkpoint loads; then the
checkpoint and its data load, the evaluation runs, and the result, its figures and a summary are written.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

from ..errors import check
from .common import load_checkpoint_data, load_run_checkpoint


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


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """An `eval` command line, parsed and checked once by :meth:`from_args`: every check `eval` makes before
    the checkpoint loads, in that order. ``device`` is resolved (torchrun's rank joins later);
    ``attacks``/``seeds``/``metrics``/``policy_budgets`` are parsed; ``out`` is the result path."""

    checkpoint: str
    device: Any
    out: Path
    metrics: tuple[str, ...]
    attacks: list[dict[str, Any]] | None
    seeds: tuple[int, ...] | None
    steps: int | None
    test_limit: int | None
    val_limit: int | None
    transfer_limit: int | None
    batch_size: int
    val_size: int | None
    thresholds_on: str
    policy: str | None
    budget_index: int | None
    policy_budgets: int | str | None
    budget_allocations: int | None
    reference: bool
    per_exit_limit: int | None
    data_root: str | None
    no_plots: bool
    quiet: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EvalSpec:
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
        from ..trainer import resolve_device
        from ..utils import check_output_file

        for flag, val in (("--steps", args.steps), ("--test-limit", args.test_limit), ("--val-limit", args.val_limit),
                          ("--transfer-limit", args.transfer_limit), ("--batch-size", args.batch_size),
                          ("--val-size", args.val_size), ("--per-exit-limit", args.per_exit_limit)):
            check(val is None or val >= 1, f"{flag} must be at least 1, got {val}")
        check(args.per_exit_limit is None or args.reference,
              "--per-exit-limit is read by the reference protocol only: add --reference, or drop --per-exit-limit")
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
        device = resolve_device(args.device)
        out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent / "eval.json"
        check_output_file(out, "--out")
        return cls(checkpoint=args.checkpoint, device=device, out=out, metrics=metrics, attacks=attacks,
                   seeds=seeds, steps=args.steps, test_limit=args.test_limit, val_limit=args.val_limit,
                   transfer_limit=args.transfer_limit, batch_size=args.batch_size, val_size=args.val_size,
                   thresholds_on=args.thresholds_on, policy=args.policy, budget_index=args.budget_index,
                   policy_budgets=policy_budgets, budget_allocations=args.budget_allocations,
                   reference=args.reference, per_exit_limit=args.per_exit_limit, data_root=args.data_root,
                   no_plots=args.no_plots, quiet=args.quiet)

    def protocol(self) -> Any:
        """The :class:`~neokd_bench.presets.EvalProtocol` to run: the defaults, the reference protocol with
        ``--reference``, then the flags given (``--per-exit-limit`` is checked by :meth:`from_args`)."""
        from ..presets import EvalProtocol

        proto = EvalProtocol()
        if self.reference:
            from ..presets import REFERENCE_PROTOCOL

            proto = dataclasses.replace(proto, **REFERENCE_PROTOCOL)
            if self.per_exit_limit is not None:
                proto = dataclasses.replace(proto, per_exit_limit=self.per_exit_limit)
        return dataclasses.replace(proto, **{k: v for k, v in {
            "steps": self.steps, "attack_seeds": self.seeds, "test_limit": self.test_limit, "metrics": self.metrics,
            "transfer_limit": self.transfer_limit, "policy": self.policy, "budget_index": self.budget_index,
            "policy_budgets": self.policy_budgets, "budget_allocations": self.budget_allocations}.items()
            if v is not None})


def run_eval(args: argparse.Namespace) -> int:
    """`neokd-bench eval`: the command line checked once (:class:`EvalSpec`), then load, evaluate, write."""
    from ..distributed import init_distributed, rank_and_world

    spec = EvalSpec.from_args(args)
    device = init_distributed(spec.device)  # torchrun: join the ranks, one device each
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    state, model, bundle = load_inputs(spec, timings)
    proto = spec.protocol()
    evaluation = evaluate_checkpoint(spec, model, bundle, state["dataset"], proto, device=device, timings=timings)
    if rank_and_world()[0] != 0:  # torchrun: every rank has the whole evaluation; rank 0 writes it
        return 0
    model = model.cpu()
    training = training_section(state, spec.checkpoint)
    timings["total_s"] = time.perf_counter() - t_start
    result, path = write_eval(spec, state, model, bundle, training, evaluation, proto, device=device,
                              timings=timings)
    print_summary(result, path)
    return 0


def load_inputs(spec: EvalSpec, timings: dict[str, float]) -> tuple[dict[str, Any], Any, Any]:
    """The checkpoint, its model and the data it was trained on (timed as ``data_s``), checked to fit."""
    from ..trainer import model_from_checkpoint

    state = load_run_checkpoint(spec.checkpoint)
    model = model_from_checkpoint(state, spec.checkpoint)
    t = time.perf_counter()
    bundle = load_checkpoint_data(state, spec.data_root, spec.val_size, spec.checkpoint)
    timings["data_s"] = time.perf_counter() - t
    n_cls = getattr(model, "num_classes", bundle.num_classes)
    check(tuple(model.input_size) == tuple(bundle.input_size) and n_cls == bundle.num_classes,
          f"{spec.checkpoint}: the model takes {tuple(model.input_size)} inputs and {n_cls} classes, "
          f"but the data gives {tuple(bundle.input_size)} and {bundle.num_classes}; check --data-root")
    return state, model, bundle


def evaluate_checkpoint(spec: EvalSpec, model: Any, bundle: Any, dataset_key: str, proto: Any, *, device: Any,
                        timings: dict[str, float]) -> dict[str, Any]:
    """The evaluation (timed as ``eval_s``); progress bars on rank 0 only."""
    from ..distributed import rank_and_world
    from ..evaluation import evaluate

    t = time.perf_counter()
    evaluation = evaluate(model, bundle, dataset_key=dataset_key, protocol=proto, device=device,
                          metrics=spec.metrics, attacks=spec.attacks, thresholds_on=spec.thresholds_on,
                          progress=not spec.quiet and rank_and_world()[0] == 0, batch_size=spec.batch_size,
                          val_limit=spec.val_limit)
    timings["eval_s"] = time.perf_counter() - t
    return evaluation


def training_section(state: dict[str, Any], checkpoint: str) -> dict[str, Any]:
    """The ``training`` section of an eval result: what the checkpoint recorded, and which checkpoint it was."""
    from ..utils import file_sha256

    config = state.get("train_config") or state.get("config") or {}
    config = config if isinstance(config, dict) else {}
    return {"config": dict(config), "history": state.get("history"), "wall_s": _history_wall(state.get("history")),
            "checkpoint": str(checkpoint), "checkpoint_sha256": file_sha256(checkpoint)}


def write_eval(spec: EvalSpec, state: dict[str, Any], model: Any, bundle: Any, training: dict[str, Any],
               evaluation: dict[str, Any], proto: Any, *, device: Any,
               timings: dict[str, float]) -> tuple[dict[str, Any], Path]:
    """Write the result (kind ``eval``) and, unless ``--no-plots``, its figures; returns the result and its path."""
    from ..evaluation import describe_model
    from ..results import make_result, write_result

    train_seed = training["config"].get("seed")
    result = make_result(
        model=describe_model(model, state["model_name"], dict(state.get("model_kwargs") or {})),
        dataset=bundle.describe(), defense=state.get("defense"), training=training, evaluation=evaluation,
        seeds={"train": train_seed if isinstance(train_seed, int) else None, "split": bundle.split_seed,
               "attack": list(proto.attack_seeds)},
        timings=timings, kind="eval", device=device)
    path = write_result(spec.out, result)
    if not spec.no_plots:
        from ..plots import plot_result

        plot_result(result, path)
        if evaluation.get("calibration"):
            from ..evaluation.calibration import plot_reliability

            plot_reliability(result, path.with_name(path.stem + ".reliability"))
    return result, path


def print_summary(result: dict[str, Any], path: Path) -> None:
    """The per-exit table, the transferability and efficiency lines when measured, and the result's path."""
    from rich.console import Console

    from ..evaluation import anytime_table

    evaluation = result["evaluation"]
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


def _history_wall(history: Any) -> float | None:
    if not isinstance(history, list) or not history:
        return None
    try:
        return float(sum(float(h.get("wall_s", 0.0)) for h in history))
    except (TypeError, ValueError, AttributeError):
        return None
