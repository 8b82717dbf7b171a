"""`neokd-bench run --defense NAME --dataset NAME [--preset paper|smoke]`: train, evaluate, write a result.

The pipeline: parse and check the command line once (:class:`RunSpec`: the preset (bench/presets.py), the
defense, the run folder, a resumed checkpoint; all before any data loads) -> load the dataset -> build the
model and set the defense up -> train with the shared trainer (checkpoint each epoch; ``--resume`` continues)
-> evaluate with the preset's protocol (anytime, budgeted, transferability) -> write one schema-validated JSON
result and its plots -> print the per-exit table.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import time
from pathlib import Path
from typing import Any

from ..errors import UsageError, check
from .common import check_eps, check_seed, parse_sets


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


def _check_values(args: argparse.Namespace) -> None:
    """The numeric options: counts at least 1, step size and eps in range, positive lr and clip, the seed."""
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


_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def run_folder(defense: str, dataset: str, preset: str, seed: int) -> Path:
    """The default run folder, built from resolved registry names only: one component under runs/."""
    name = f"{defense}-{dataset}-{preset}-s{seed}"
    if not _SAFE.fullmatch(name) or ".." in name:
        raise UsageError(f"cannot name a run folder {name!r}; pass --out DIR")
    return Path("runs") / name


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """A `run` command line, parsed and checked once by :meth:`from_args`: every check `run` makes before any
    data loads, in that order, so a typo never costs a data load or a training run. Field names follow the
    flags (:func:`train_config` reads them); ``defense`` is built and checked here and set up once the model
    exists; ``resumed_init`` is the ``--init`` record of the checkpoint ``--resume`` continues."""

    defense: Any
    dataset: str
    preset_name: str
    preset: Any
    model_name: str
    out: Path
    seed: int
    device: str
    epochs: int | None
    batch_size: int | None
    lr: float | None
    train_limit: int | None
    grad_clip: float | None
    amp: str | None
    workers: int
    cudnn_benchmark: bool
    sync_bn: bool
    data_root: str | None
    data_source: str
    val_size: int | None
    val_index: str | None
    init: str | None
    resume: bool
    no_eval: bool
    quiet: bool
    test_limit: int | None
    eval_steps: int | None
    attack_seeds: tuple[int, ...] | None
    metrics: tuple[str, ...] | None
    resumed_init: dict[str, Any] | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunSpec:
        from .. import presets
        from ..evaluation.options import parse_ints, parse_metrics  # here: the CLI's import stays torch-free
        from ..registry import DATASETS, MODELS
        from ..trainer import resolve_device
        from ..utils import check_output_dir

        _check_values(args)
        attack_seeds, metrics = parse_ints(args.attack_seeds, "--attack-seeds"), parse_metrics(args.metrics)
        resolve_device(args.device)
        DATASETS.get(args.dataset)  # unknown names fail first, with a "did you mean"
        preset = presets.train_preset(args.dataset, args.preset)
        _check_init_files(args, presets.NEEDS_INIT.get((args.dataset, args.preset)))
        check_eps(args.eps, args.dataset, args.force)
        defense = _build_defense(args)
        model_name = args.model or preset.model
        MODELS.get(model_name)
        defense_name = getattr(defense, "name", None) or args.defense.split(".", 1)[0]
        out = Path(args.out) if args.out else run_folder(defense_name, args.dataset, args.preset, args.seed)
        check_output_dir(out, "--out")
        spec = cls(
            defense=defense, dataset=args.dataset, preset_name=args.preset, preset=preset, model_name=model_name,
            out=out, seed=args.seed, device=args.device, epochs=args.epochs, batch_size=args.batch_size,
            lr=args.lr, train_limit=args.train_limit, grad_clip=args.grad_clip, amp=args.amp,
            workers=int(args.workers or 0), cudnn_benchmark=bool(args.cudnn_benchmark), sync_bn=bool(args.sync_bn),
            data_root=args.data_root, data_source=args.data_source or preset.data_source, val_size=args.val_size,
            val_index=args.val_index, init=args.init, resume=args.resume, no_eval=args.no_eval, quiet=args.quiet,
            test_limit=args.test_limit, eval_steps=args.eval_steps, attack_seeds=attack_seeds, metrics=metrics)
        return dataclasses.replace(spec, resumed_init=_resumed_init(spec))

    @property
    def preset_tag(self) -> str:
        return f"{self.dataset}.{self.preset_name}"

    def meta(self) -> dict[str, Any]:
        """What a checkpoint records of the run and ``--resume`` compares (the defense's config is compared once
        set up)."""
        return {"model_name": self.model_name, "dataset": self.dataset,
                "defense": {"name": self.defense.describe()["name"]}, "preset": self.preset_tag}

    def eval_protocol(self) -> Any:
        """The preset's evaluation protocol with the evaluation flags given."""
        return dataclasses.replace(self.preset.eval, **{k: v for k, v in {
            "test_limit": self.test_limit, "steps": self.eval_steps, "attack_seeds": self.attack_seeds,
            "metrics": self.metrics}.items() if v is not None})


def _check_init_files(args: argparse.Namespace, needs: str | None) -> None:
    """``--init`` where the preset fine-tunes (unless resuming), and the files ``--init``/``--val-index`` name."""
    check(not needs or bool(args.init) or args.resume,
          f"--preset {args.preset} on {args.dataset} fine-tunes pretrained weights: {needs}")
    check(not args.init or Path(args.init).is_file(),
          f"--init {args.init}: no such file; pass the pretrained checkpoint's path")
    check(not args.val_index or args.dataset == "imagenet",
          f"--val-index is MSDNet-PyTorch's ImageNet index file; drop it for {args.dataset}")
    check(not args.val_index or Path(args.val_index).is_file(), f"--val-index {args.val_index}: no such file")


def _build_defense(args: argparse.Namespace) -> Any:
    """The defense from ``--defense``, ``--set`` and the training-attack flags; a bad name or value is one line
    here, before any data loads."""
    import neokd_bench as nb

    from ..registry import DEFENSES

    sets = parse_sets(args.set)
    defense_kw = {**sets, **{k: v for k, v in (("eps", args.eps), ("step_size", args.step_size),
                                                 ("train_attack", args.train_attack)) if v is not None}}
    DEFENSES.get(args.defense)
    try:
        return nb.create_defense(args.defense, **defense_kw)
    except (TypeError, ValueError) as exc:
        given = ", ".join(f"{k}={v!r}" for k, v in sets.items()) or "(none)"
        raise UsageError(f"--set {given}: a value has the wrong type for defense {args.defense!r} "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                         f"e.g. --set alpha=3 --set gamma=[1,1,1]") from exc


def _resumed_init(spec: RunSpec) -> dict[str, Any] | None:
    """With ``--resume``: the run folder must exist, and a checkpoint in it must match the run (checked now,
    before the data loads); returns the ``--init`` record it carries."""
    from ..trainer import CHECKPOINT_NAME, check_resume, load_checkpoint

    check(not spec.resume or spec.out.is_dir(),
          f"--resume: no run folder {spec.out}; run without --resume to start fresh")
    if not (spec.resume and (spec.out / CHECKPOINT_NAME).is_file()):
        return None
    state = load_checkpoint(spec.out / CHECKPOINT_NAME)
    check_resume(state, spec.meta(), None, spec.out / CHECKPOINT_NAME)
    return state.get("init")


def run(args: argparse.Namespace) -> int:
    """`neokd-bench run`: the command line checked once (:class:`RunSpec`), then set up, train, evaluate, write."""
    from ..distributed import rank_and_world

    spec = RunSpec.from_args(args)
    timings: dict[str, float] = {}
    bundle, model, meta = set_up(spec, timings)
    training = train_run(spec, model, bundle, meta, timings)
    if spec.no_eval:
        return 0
    proto = spec.eval_protocol()
    evaluation = evaluate_run(spec, model, bundle, proto, device=training["device"], timings=timings)
    if rank_and_world()[0] != 0:  # torchrun: every rank evaluated its shard and has the whole evaluation
        return 0
    write_run(spec, model, meta["model_kwargs"], bundle, training, evaluation, proto, timings)
    return 0


def set_up(spec: RunSpec, timings: dict[str, float]) -> tuple[Any, Any, dict[str, Any]]:
    """Load the data (timed as ``data_s``), build the model (initial weights from the training seed, then
    ``--init``'s) and set the defense up; returns the bundle, the model and the checkpoint's ``meta``."""
    import neokd_bench as nb

    t = time.perf_counter()
    extra = {"val_index": spec.val_index} if spec.val_index else {}
    bundle = nb.load_dataset(spec.dataset, root=spec.data_root, source=spec.data_source, val_size=spec.val_size,
                             **extra)
    timings["data_s"] = time.perf_counter() - t
    model_kwargs = {**dict(spec.preset.model_kwargs), "num_classes": bundle.num_classes,
                    "mean": list(bundle.mean), "std": list(bundle.std)}
    import torch

    torch.manual_seed(spec.seed)  # the initial weights follow the training seed: a run is reproducible
    model = nb.create_model(spec.model_name, **model_kwargs)
    check(tuple(model.input_size) == tuple(bundle.input_size),
          f"model {spec.model_name} takes {model.input_size} inputs but {spec.dataset} gives {bundle.input_size}; "
          f"pick a matching --model")
    meta = spec.meta()
    if spec.init:
        from ..init_weights import load_init

        meta["init"] = load_init(model, spec.init)  # in every checkpoint: a resumed run records where it started
    spec.defense.setup(dataset=spec.dataset, num_exits=model.num_exits, num_classes=bundle.num_classes,
                       seed=spec.seed)
    meta.update(model_kwargs=model_kwargs, data_source=spec.data_source, data_root=spec.data_root,
                val_size=spec.val_size, defense=spec.defense.describe())
    return bundle, model, meta


def train_run(spec: RunSpec, model: Any, bundle: Any, meta: dict[str, Any], timings: dict[str, float]) -> dict:
    """Train with the shared trainer (timed as ``train_s``); the ``training`` section, with the ``--init``
    record of this run or of the run it resumes."""
    from ..trainer import train

    cfg = train_config(spec, spec.preset)
    t = time.perf_counter()
    training = train(model, spec.defense, bundle.train, cfg, out_dir=spec.out, meta=meta, resume=spec.resume,
                     progress=not spec.quiet)
    timings["train_s"] = time.perf_counter() - t
    init = meta.get("init") or spec.resumed_init
    if init is not None:
        training["init"] = init
    return training


def evaluate_run(spec: RunSpec, model: Any, bundle: Any, proto: Any, *, device: Any,
                 timings: dict[str, float]) -> dict[str, Any]:
    """Evaluate with the run's protocol (timed as ``eval_s``); progress bars on rank 0 only."""
    from ..distributed import rank_and_world
    from ..evaluation import evaluate

    model.eval()
    t = time.perf_counter()
    evaluation = evaluate(model, bundle, dataset_key=spec.dataset, protocol=proto, device=device,
                          metrics=proto.metrics, progress=not spec.quiet and rank_and_world()[0] == 0)
    timings["eval_s"] = time.perf_counter() - t
    return evaluation


def write_run(spec: RunSpec, model: Any, model_kwargs: dict[str, Any], bundle: Any, training: dict[str, Any],
              evaluation: dict[str, Any], proto: Any, timings: dict[str, float]) -> None:
    """Write the result (schema-validated) and its plots into the run folder; print the per-exit table."""
    from ..evaluation import describe_model
    from ..results import make_result, write_result

    result = make_result(
        model=describe_model(model.cpu(), spec.model_name, model_kwargs),
        dataset=bundle.describe(), defense=spec.defense.describe(),
        training={**training, "preset": {"name": spec.preset_tag, **spec.preset.to_dict()}},
        evaluation=evaluation,
        seeds={"train": spec.seed, "split": bundle.split_seed, "attack": list(proto.attack_seeds)},
        timings=timings)
    path = write_result(spec.out / "result.json", result)
    _plots(result, spec.out)
    print_anytime(result)
    print(f"result: {path}")


def train_config(spec: RunSpec | argparse.Namespace, preset: Any) -> Any:
    """The :class:`~neokd_bench.trainer.TrainConfig` of a run: the preset's values, overridden by the flags given
    (``spec`` is a :class:`RunSpec`, or `run`'s parsed command line: the field names are the same).
    ``run --resume`` compares its ``to_dict()`` with the checkpoint's, so a preset's dict must not change."""
    from ..trainer import TrainConfig

    return TrainConfig(
        epochs=spec.epochs or preset.epochs, batch_size=spec.batch_size or preset.batch_size,
        lr=spec.lr or preset.lr, momentum=preset.momentum, weight_decay=preset.weight_decay,
        milestones=preset.milestones, seed=spec.seed, device=spec.device, amp=spec.amp or preset.amp,
        train_limit=spec.train_limit or preset.train_limit,
        grad_clip_norm=spec.grad_clip if spec.grad_clip is not None else preset.grad_clip_norm,
        sync_bn=bool(spec.sync_bn), num_workers=int(spec.workers or 0), cudnn_benchmark=bool(spec.cudnn_benchmark))


def _plots(result: dict[str, Any], out: Path) -> None:
    from .. import plots

    plots.plot_result(result, out)


def print_anytime(result: dict[str, Any]) -> None:
    """The per-exit table of clean and adversarial accuracy (mean over attack seeds)."""
    from rich.console import Console

    from ..evaluation import anytime_table

    Console().print(anytime_table(result))
