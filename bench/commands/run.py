"""`neokd-bench run --defense NAME --dataset NAME [--preset paper|smoke]`: train, evaluate, write a result.

The pipeline: resolve the preset (bench/presets.py) -> load the dataset -> build the model and the defense
-> train with the shared trainer (checkpoint each epoch; ``--resume`` continues) -> evaluate with the
preset's protocol (anytime, budgeted, transferability) -> write one schema-validated JSON result and its
plots -> print the per-exit table.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from ..errors import UsageError, check


def add_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="train a defense on a dataset, evaluate it, write a result file")
    p.add_argument("--defense", required=True, help="a registered defense, e.g. neokd, adv (see `list defenses`)")
    p.add_argument("--dataset", required=True, help="a registered dataset, e.g. fashion-mnist, cifar100")
    p.add_argument("--preset", default="paper", help="protocol preset: paper (App. A.1) or smoke (CPU minutes)")
    p.add_argument("--model", help="override the preset's model (see `list models`)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--train-limit", type=int, help="train on the first N training images")
    p.add_argument("--grad-clip", type=float, help="clip the global gradient norm (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu or cuda[:N]")
    p.add_argument("--amp", default="none", choices=["none", "bf16"], help="bf16 autocast for training")
    p.add_argument("--data-root", help="folder holding the dataset (else $NEOKD_DATA_ROOT, system, bundled)")
    p.add_argument("--data-source", choices=["auto", "folder", "system", "bundled"],
                   help="force where the data comes from (default: the preset's)")
    p.add_argument("--eps", type=float, help="override the dataset's L-inf eps for training")
    p.add_argument("--step-size", type=float, help="override the PGD step size for training")
    p.add_argument("--train-attack", choices=["max-average", "average"], help="training attack objective")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="defense config field, e.g. --set alpha=2 --set gamma=[1,1,1.5] (repeatable)")
    p.add_argument("--out", help="run folder (default runs/<defense>-<dataset>-<preset>-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    p.add_argument("--no-eval", action="store_true", help="train only")
    p.add_argument("--test-limit", type=int, help="evaluate on the first N test images")
    p.add_argument("--attack-seeds", help="comma-separated evaluation attack seeds, e.g. 0,1,2")
    p.add_argument("--eval-steps", type=int, help="PGD steps at evaluation (paper: 50)")
    p.add_argument("--metrics", help="comma-separated: anytime,budgeted,transfer")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def parse_sets(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        check(bool(sep and key), f"--set expects KEY=VALUE, got {item!r}; e.g. --set alpha=3")
        try:
            val: Any = json.loads(raw)
        except json.JSONDecodeError:
            val = raw
        out[key.strip().replace("-", "_")] = tuple(val) if isinstance(val, list) else val
    return out


def _ints(text: str | None, flag: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError as exc:
        raise UsageError(f"{flag} expects comma-separated integers, e.g. {flag} 0,1,2") from exc


def validate_args(args: argparse.Namespace) -> None:
    for flag, val in (("--epochs", args.epochs), ("--batch-size", args.batch_size),
                      ("--train-limit", args.train_limit), ("--test-limit", args.test_limit),
                      ("--eval-steps", args.eval_steps)):
        check(val is None or val >= 1, f"{flag} must be at least 1, got {val}")
    for flag, val in (("--eps", args.eps), ("--step-size", args.step_size)):
        check(val is None or (val >= 0 and math.isfinite(val)), f"{flag} must be >= 0, got {val}; e.g. {flag} 0.1")
    check(args.lr is None or args.lr > 0, f"--lr must be positive, got {args.lr}")
    _ints(args.attack_seeds, "--attack-seeds")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import neokd_bench as nb

    from .. import presets
    from ..registry import DATASETS, MODELS
    from ..trainer import TrainConfig, train

    validate_args(args)
    DATASETS.get(args.dataset)  # unknown names fail first, with a "did you mean"
    preset = presets.train_preset(args.dataset, args.preset)
    defense_kw = parse_sets(args.set)
    defense_kw.update({k: v for k, v in (("eps", args.eps), ("step_size", args.step_size),
                                         ("train_attack", args.train_attack)) if v is not None})
    defense = nb.create_defense(args.defense, **defense_kw)  # bad names fail before any data loads
    model_name = args.model or preset.model
    MODELS.get(model_name)

    timings: dict[str, float] = {}
    t = time.perf_counter()
    source = args.data_source or preset.data_source
    bundle = nb.load_dataset(args.dataset, root=args.data_root, source=source)
    timings["data_s"] = time.perf_counter() - t
    model_kwargs = {**dict(preset.model_kwargs), "num_classes": bundle.num_classes,
                    "mean": list(bundle.mean), "std": list(bundle.std)}
    import torch

    torch.manual_seed(args.seed)  # the initial weights follow the training seed: a run is reproducible
    model = nb.create_model(model_name, **model_kwargs)
    check(tuple(model.input_size) == tuple(bundle.input_size),
          f"model {model_name} takes {model.input_size} inputs but {args.dataset} gives {bundle.input_size}; "
          f"pick a matching --model")
    defense.setup(dataset=args.dataset, num_exits=model.num_exits, num_classes=bundle.num_classes, seed=args.seed)

    cfg = TrainConfig(
        epochs=args.epochs or preset.epochs, batch_size=args.batch_size or preset.batch_size,
        lr=args.lr or preset.lr, momentum=preset.momentum, weight_decay=preset.weight_decay,
        milestones=preset.milestones, seed=args.seed, device=args.device, amp=args.amp,
        train_limit=args.train_limit or preset.train_limit,
        grad_clip_norm=args.grad_clip if args.grad_clip is not None else preset.grad_clip_norm)
    out = Path(args.out or f"runs/{args.defense}-{args.dataset}-{args.preset}-s{args.seed}")
    meta = {"model_name": model_name, "model_kwargs": model_kwargs, "dataset": args.dataset,
            "data_source": source, "data_root": args.data_root, "defense": defense.describe(),
            "preset": f"{args.dataset}.{args.preset}"}
    t = time.perf_counter()
    training = train(model, defense, bundle.train, cfg, out_dir=out, meta=meta, resume=args.resume,
                     progress=not args.quiet)
    timings["train_s"] = time.perf_counter() - t
    if args.no_eval or _rank() != 0:
        return 0

    proto = preset.eval
    proto = dataclasses.replace(proto, **{k: v for k, v in {
        "test_limit": args.test_limit, "steps": args.eval_steps,
        "attack_seeds": _ints(args.attack_seeds, "--attack-seeds"),
        "metrics": tuple(args.metrics.split(",")) if args.metrics else None}.items() if v is not None})
    from ..evaluation import evaluate
    from ..results import make_result, write_result

    model.eval()
    t = time.perf_counter()
    evaluation = evaluate(model, bundle, dataset_key=args.dataset, protocol=proto,
                          device=training["device"], metrics=proto.metrics, progress=not args.quiet)
    timings["eval_s"] = time.perf_counter() - t
    from ..flops import exit_flops
    from ..models.base import count_params

    result = make_result(
        model={"name": model_name, "kwargs": model_kwargs, "num_exits": model.num_exits,
               "params": count_params(model), "flops_per_exit": exit_flops(model.cpu())},
        dataset=bundle.describe(), defense=defense.describe(),
        training={**training, "preset": {"name": f"{args.dataset}.{args.preset}", **preset.to_dict()}},
        evaluation=evaluation,
        seeds={"train": args.seed, "split": bundle.split_seed, "attack": list(proto.attack_seeds)},
        timings=timings)
    path = write_result(out / "result.json", result)
    _plots(result, out)
    print_anytime(result)
    print(f"result: {path}")
    return 0


def _rank() -> int:
    import torch

    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _plots(result: dict[str, Any], out: Path) -> None:
    from .. import plots

    plots.plot_result(result, out)


def print_anytime(result: dict[str, Any]) -> None:
    """The per-exit table of clean and adversarial accuracy (mean over attack seeds)."""
    from ..evaluation import anytime_table

    from rich.console import Console

    Console().print(anytime_table(result))
