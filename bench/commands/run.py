"""`neokd-bench run --defense NAME --dataset NAME [--preset paper|smoke]`: train, evaluate, write a result.

The pipeline: resolve the preset (bench/presets.py) -> load the dataset -> build the model and the defense
-> train with the shared trainer (checkpoint each epoch; ``--resume`` continues) -> evaluate with the
preset's protocol (anytime, budgeted, transferability) -> write one schema-validated JSON result and its
plots -> print the per-exit table.
"""

from __future__ import annotations

import argparse
import math
import re
import time
from pathlib import Path
from typing import Any

from ..errors import UsageError, check
from ..safe_io import NotJSONError, loads_json


def add_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="train a defense on a dataset, evaluate it, write a result file")
    p.add_argument("--defense", required=True, help="a registered defense, e.g. neokd, adv (see `list defenses`)")
    p.add_argument("--dataset", required=True, help="a registered dataset, e.g. fashion-mnist, cifar100")
    p.add_argument("--preset", default="paper", help="protocol preset: paper (App. A.1), smoke (CPU minutes) "
                                                      "or cpu (fashion-mnist reproduction)")
    p.add_argument("--model", help="override the preset's model (see `list models`)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--train-limit", type=int, help="train on the first N training images")
    p.add_argument("--grad-clip", type=float, help="clip the global gradient norm (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu or cuda[:N]")
    p.add_argument("--amp", choices=["none", "bf16", "auto"],
                   help="bf16 autocast for training; auto: bf16 where the device computes it natively (default: "
                        "the preset's: auto for the GPU presets, none for smoke and cpu)")
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader worker processes (default 0: batches made in the training process); the "
                        "augmentation's random numbers then come from the workers' seeds, so the numbers change")
    p.add_argument("--no-cudnn-benchmark", dest="cudnn_benchmark", action="store_false",
                   help="on CUDA: keep cuDNN's default convolution algorithms instead of timing them once per shape")
    p.add_argument("--sync-bn", action="store_true", help="under torchrun on CUDA: BatchNorm statistics over "
                                                          "the global batch (SyncBatchNorm)")
    p.add_argument("--data-root", help="folder holding the dataset (else $NEOKD_DATA_ROOT, system, bundled)")
    p.add_argument("--val-size", type=int, help="validation images held out of the training set "
                                                 "(default: the dataset's)")
    p.add_argument("--data-source", choices=["auto", "folder", "system", "bundled"],
                   help="force where the data comes from (default: the preset's)")
    p.add_argument("--eps", type=float, help="override the dataset's L-inf eps for training (at most 1; more "
                                             "than 4x the dataset's threat model needs --force)")
    p.add_argument("--force", action="store_true", help="accept an --eps far above the dataset's threat model")
    p.add_argument("--step-size", type=float, help="override the PGD step size for training")
    p.add_argument("--train-attack", choices=["max-average", "average"], help="training attack objective")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="defense config field, e.g. --set alpha=2 --set gamma=[1,1,1.5] (repeatable)")
    p.add_argument("--out", help="run folder (default runs/<defense>-<dataset>-<preset>-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    p.add_argument("--init", metavar="CHECKPOINT",
                   help="start from these weights: a neokd-bench checkpoint.pt or an MSDNet-PyTorch ImageNet "
                        ".pth.tar (mapped by name, shapes checked); the result records its sha256")
    p.add_argument("--val-index", metavar="INDEX_PTH",
                   help="imagenet: MSDNet-PyTorch's index.pth; its last 50,000 training images are the "
                        "validation split (held out of the pretrained model's training)")
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
        try:  # bounded: a deep list or a huge integer is one line, not a RecursionError or ValueError
            val: Any = loads_json(raw, f"--set {key}")
        except NotJSONError:
            val = raw
        out[key.strip().replace("-", "_")] = tuple(val) if isinstance(val, list) else val
    return out


SEED_MAX = 2**63 - 1
EPS_FORCE_FACTOR = 4  # an eps more than this many times the dataset's threat model needs --force


def check_seed(seed: int, flag: str = "--seed") -> None:
    check(0 <= seed <= SEED_MAX, f"{flag} must be in 0..{SEED_MAX} (a 63-bit seed), got {seed}; e.g. {flag} 0")


def check_eps(eps: float | None, dataset: str, force: bool, flag: str = "--eps") -> None:
    """eps is a distance between images in [0, 1]: above 1 it is meaningless; far above the dataset's
    threat model it is almost surely a typo (5 for 0.5/255), so it needs --force."""
    if eps is None:
        return
    check(math.isfinite(eps) and 0 <= eps <= 1, f"{flag} must be in [0, 1] (inputs are pixels in [0, 1]), "
                                                f"got {eps}; e.g. {flag} 0.1")
    from ..presets import THREAT

    t = THREAT.get(dataset)
    if t is not None and eps > EPS_FORCE_FACTOR * t.eps and not force:
        raise UsageError(f"{flag} {eps} is more than {EPS_FORCE_FACTOR}x {dataset}'s threat model (eps {t.eps:.4g}); "
                         f"pass --force to run it anyway")


def validate_args(args: argparse.Namespace) -> None:
    """Every option checked before any data is loaded or any training runs, evaluation options included."""
    from ..evaluation.options import parse_ints, parse_metrics  # here: the CLI's import stays torch-free
    for flag, val in (("--epochs", args.epochs), ("--batch-size", args.batch_size),
                      ("--train-limit", args.train_limit), ("--test-limit", args.test_limit),
                      ("--eval-steps", args.eval_steps), ("--val-size", args.val_size)):
        check(val is None or val >= 1, f"{flag} must be at least 1, got {val}")
    check(args.step_size is None or (math.isfinite(args.step_size) and 0 <= args.step_size <= 1),
          f"--step-size must be in [0, 1], got {args.step_size}; e.g. --step-size 0.025")
    check(args.eps is None or (math.isfinite(args.eps) and args.eps >= 0),
          f"--eps must be >= 0, got {args.eps}; e.g. --eps 0.1")
    check(args.lr is None or (args.lr > 0 and math.isfinite(args.lr)), f"--lr must be positive, got {args.lr}")
    check(args.grad_clip is None or (args.grad_clip > 0 and math.isfinite(args.grad_clip)),
          f"--grad-clip must be positive, got {args.grad_clip}")
    check_seed(args.seed)
    parse_ints(args.attack_seeds, "--attack-seeds")
    parse_metrics(args.metrics)


_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def run_folder(defense: str, dataset: str, preset: str, seed: int) -> Path:
    """The default run folder, built from resolved registry names only: one component under runs/."""
    name = f"{defense}-{dataset}-{preset}-s{seed}"
    if not _SAFE.fullmatch(name) or ".." in name:
        raise UsageError(f"cannot name a run folder {name!r}; pass --out DIR")
    return Path("runs") / name


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import neokd_bench as nb

    from .. import presets
    from ..evaluation.options import parse_ints, parse_metrics
    from ..registry import DATASETS, DEFENSES, MODELS
    from ..trainer import CHECKPOINT_NAME, check_resume, load_checkpoint, resolve_device, train
    from ..utils import check_output_dir

    validate_args(args)
    resolve_device(args.device)
    DATASETS.get(args.dataset)  # unknown names fail first, with a "did you mean"
    preset = presets.train_preset(args.dataset, args.preset)
    needs = presets.NEEDS_INIT.get((args.dataset, args.preset))
    check(not needs or bool(getattr(args, "init", None)) or args.resume,
          f"--preset {args.preset} on {args.dataset} fine-tunes pretrained weights: {needs}")
    init_path = getattr(args, "init", None)
    check(not init_path or Path(init_path).is_file(),
          f"--init {init_path}: no such file; pass the pretrained checkpoint's path")
    val_index = getattr(args, "val_index", None)
    check(not val_index or args.dataset == "imagenet",
          f"--val-index is MSDNet-PyTorch's ImageNet index file; drop it for {args.dataset}")
    check(not val_index or Path(val_index).is_file(), f"--val-index {val_index}: no such file")
    check_eps(args.eps, args.dataset, args.force)
    defense_kw = parse_sets(args.set)
    defense_kw.update({k: v for k, v in (("eps", args.eps), ("step_size", args.step_size),
                                         ("train_attack", args.train_attack)) if v is not None})
    DEFENSES.get(args.defense)
    try:
        defense = nb.create_defense(args.defense, **defense_kw)  # bad names fail before any data loads
    except (TypeError, ValueError) as exc:
        given = ", ".join(f"{k}={v!r}" for k, v in parse_sets(args.set).items()) or "(none)"
        raise UsageError(f"--set {given}: a value has the wrong type for defense {args.defense!r} "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                         f"e.g. --set alpha=3 --set gamma=[1,1,1]") from exc
    model_name = args.model or preset.model
    MODELS.get(model_name)
    defense_name = getattr(defense, "name", None) or args.defense.split(".", 1)[0]
    out = Path(args.out) if args.out else run_folder(defense_name, args.dataset, args.preset, args.seed)
    check_output_dir(out, "--out")
    meta = {"model_name": model_name, "dataset": args.dataset, "defense": {"name": defense.describe()["name"]},
            "preset": f"{args.dataset}.{args.preset}"}  # the defense's config is compared once set up
    check(not args.resume or out.is_dir(), f"--resume: no run folder {out}; run without --resume to start fresh")
    resumed_init = None
    if args.resume and (out / CHECKPOINT_NAME).is_file():  # a mismatch fails before the data loads
        state = load_checkpoint(out / CHECKPOINT_NAME)
        check_resume(state, meta, None, out / CHECKPOINT_NAME)
        resumed_init = state.get("init")

    timings: dict[str, float] = {}
    t = time.perf_counter()
    source = args.data_source or preset.data_source
    extra = {"val_index": val_index} if val_index else {}
    bundle = nb.load_dataset(args.dataset, root=args.data_root, source=source, val_size=args.val_size, **extra)
    timings["data_s"] = time.perf_counter() - t
    model_kwargs = {**dict(preset.model_kwargs), "num_classes": bundle.num_classes,
                    "mean": list(bundle.mean), "std": list(bundle.std)}
    import torch

    torch.manual_seed(args.seed)  # the initial weights follow the training seed: a run is reproducible
    model = nb.create_model(model_name, **model_kwargs)
    check(tuple(model.input_size) == tuple(bundle.input_size),
          f"model {model_name} takes {model.input_size} inputs but {args.dataset} gives {bundle.input_size}; "
          f"pick a matching --model")
    init = None
    if getattr(args, "init", None):
        from ..init_weights import load_init

        init = load_init(model, args.init)
        meta["init"] = init  # kept in every checkpoint: a resumed run still records where it started
    defense.setup(dataset=args.dataset, num_exits=model.num_exits, num_classes=bundle.num_classes, seed=args.seed)

    cfg = train_config(args, preset)
    meta.update(model_kwargs=model_kwargs, data_source=source, data_root=args.data_root, val_size=args.val_size,
                defense=defense.describe())
    t = time.perf_counter()
    training = train(model, defense, bundle.train, cfg, out_dir=out, meta=meta, resume=args.resume,
                     progress=not args.quiet)
    timings["train_s"] = time.perf_counter() - t
    init = init or resumed_init
    if init is not None:
        training["init"] = init
    if args.no_eval:
        return 0

    proto = preset.eval
    proto = dataclasses.replace(proto, **{k: v for k, v in {
        "test_limit": args.test_limit, "steps": args.eval_steps,
        "attack_seeds": parse_ints(args.attack_seeds, "--attack-seeds"),
        "metrics": parse_metrics(args.metrics)}.items() if v is not None})
    from ..distributed import rank_and_world
    from ..evaluation import describe_model, evaluate
    from ..results import make_result, write_result

    model.eval()
    t = time.perf_counter()
    evaluation = evaluate(model, bundle, dataset_key=args.dataset, protocol=proto,
                          device=training["device"], metrics=proto.metrics,
                          progress=not args.quiet and rank_and_world()[0] == 0)
    timings["eval_s"] = time.perf_counter() - t
    if rank_and_world()[0] != 0:  # torchrun: every rank evaluated its shard and has the whole evaluation
        return 0
    result = make_result(
        model=describe_model(model.cpu(), model_name, model_kwargs),
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


def train_config(args: argparse.Namespace, preset: Any) -> Any:
    """The :class:`~neokd_bench.trainer.TrainConfig` of a run: the preset's values, overridden by the flags given.
    ``run --resume`` compares its ``to_dict()`` with the checkpoint's, so a preset's dict must not change."""
    from ..trainer import TrainConfig

    return TrainConfig(
        epochs=args.epochs or preset.epochs, batch_size=args.batch_size or preset.batch_size,
        lr=args.lr or preset.lr, momentum=preset.momentum, weight_decay=preset.weight_decay,
        milestones=preset.milestones, seed=args.seed, device=args.device, amp=args.amp or preset.amp,
        train_limit=args.train_limit or preset.train_limit,
        grad_clip_norm=args.grad_clip if args.grad_clip is not None else preset.grad_clip_norm,
        sync_bn=bool(getattr(args, "sync_bn", False)), num_workers=int(getattr(args, "workers", 0) or 0),
        cudnn_benchmark=bool(getattr(args, "cudnn_benchmark", True)))


def _plots(result: dict[str, Any], out: Path) -> None:
    from .. import plots

    plots.plot_result(result, out)


def print_anytime(result: dict[str, Any]) -> None:
    """The per-exit table of clean and adversarial accuracy (mean over attack seeds)."""
    from rich.console import Console

    from ..evaluation import anytime_table

    Console().print(anytime_table(result))
