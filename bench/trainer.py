"""The one shared trainer. A defense owns its adversarial examples and its loss; the trainer owns
everything generic: data order, optimizer, schedule, autocast, checkpoints, seeds, progress, devices.

Guarantees
* **Determinism / resume.** Every epoch starts from ``torch.manual_seed(derive_seed(seed, epoch))`` and a
  data order drawn from a generator seeded the same way, so an epoch's computation depends only on the
  weights and optimizer state at its start. A checkpoint is written atomically after every epoch;
  ``resume=True`` continues from the last one and, on a deterministic CPU, ends with the same weights as
  an uninterrupted run (tested by killing a run with SIGKILL mid-epoch).
* **Divergence.** A NaN or infinite loss stops training with :class:`TrainingDivergedError`; the last
  good checkpoint on disk is left untouched.
* **Data parallel.** Under ``torchrun`` (``WORLD_SIZE > 1``) each rank trains on its share of the
  one-process order (:class:`RankShard`, global dataset indices; ``batch_size`` is per rank, so the global
  batch is ``WORLD_SIZE * batch_size``) and the model is wrapped in
  ``torch.nn.parallel.DistributedDataParallel``, which averages the gradients in its backward pass.
  The defense gets both: ``training_step(module, x, y, index=..., loss_model=ddp)``. The attack passes run
  on the plain ``module`` (no gradient sync, no reducer bookkeeping; they take input gradients only, with
  ``torch.autograd.grad``); only the loss passes go through the wrapper. The loss runs two forward passes
  (clean, adversarial) before one backward: with ``find_unused_parameters=False`` and no ``static_graph``
  that is exact, because each forward only re-arms the reducer and autograd sums a parameter's gradient over
  both passes before its one accumulation hook fires (a parameter marked ready once per backward). Every
  parameter must take part in the loss; ``find_unused_parameters`` (which would mark parameters of the first
  pass unused after the second) and one forward over the concatenated clean+adversarial batch (which would
  change BatchNorm's batch statistics, see the defenses' assumptions) are not used. BatchNorm statistics
  are per rank (DDP broadcasts rank 0's running statistics at each forward), unless ``sync_bn`` converts
  BatchNorm to ``SyncBatchNorm`` (CUDA only, as PyTorch's SyncBatchNorm). Checkpoints hold the plain
  module's ``state_dict`` (the same keys as one process). Exactness: with the random starts keyed by sample
  index (defense config ``keyed_starts``) and no batch statistics, W ranks with B samples each end with the
  weights of one process with the W*B batch (tested).
* **Devices and precision.** ``device="auto"`` picks CUDA when present, else CPU; on a CPU the model and
  the batches are channels_last (:func:`memory_format`). ``amp="bf16"`` runs the
  defense's whole training step (attack and loss) under bf16 autocast, with fp32 master weights;
  ``amp="auto"`` does so only where the device computes bf16 natively (:mod:`neokd_bench.precision`), and
  the result's training section records the choice (``amp``).
* **One GPU.** The step is replayed as CUDA graphs: the training attack (``attack_cuda_graph`` of the
  defense, :mod:`neokd_bench.attacks.graphs`) and, for defenses that declare ``graph_safe``, the loss,
  backward, clipping and SGD step (``cuda_graph``, :mod:`neokd_bench.step_graph`); the result's training
  section records the recordings and replays (``cuda_graph``). cuDNN times its algorithms once per shape
  (``cudnn_benchmark``; the previous setting is restored after). Batches come through pinned memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .defenses.base import check_parts
from .distributed import init_distributed, rank_and_world
from .errors import TrainingDivergedError, UsageError, check
from .precision import AMP_CHOICES, resolve_amp
from .progress import Progress
from .step_graph import CUDA_GRAPH_CHOICES, GraphedLossStep, defense_graph_safe
from .utils import atomic_torch_save, derive_seed, file_sha256, remove_stale_temp_files

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9  # paper App. A.1
    weight_decay: float = 5e-4  # paper App. A.1
    milestones: tuple[int, ...] = ()  # lr /= 10 at these epochs (paper App. A.1)
    seed: int = 0
    device: str = "auto"
    amp: str = "none"  # "none" | "bf16" | "auto" (bf16 where the device computes it natively)
    num_workers: int = 0
    train_limit: int | None = None
    grad_clip_norm: float | None = None  # clip the global gradient norm (None: no clipping, as the paper)
    sync_bn: bool = False  # under torchrun on CUDA: BatchNorm statistics over the global batch (SyncBatchNorm)
    # One GPU, one process: replay the loss, backward and optimizer step as a CUDA graph ("auto", for defenses
    # that declare graph_safe; neokd_bench.step_graph) or never ("off"). No effect on a CPU or under torchrun.
    cuda_graph: str = "auto"
    # On CUDA: cuDNN times its convolution algorithms once per shape and keeps the fastest (training's shapes are
    # fixed, so that is paid in the first steps); the previous setting is restored when training ends.
    cudnn_benchmark: bool = True

    def __post_init__(self) -> None:
        check(self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}; e.g. --epochs 2")
        check(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")
        check(self.lr > 0 and math.isfinite(self.lr), f"--lr must be a positive number, got {self.lr}")
        check(self.amp in AMP_CHOICES, f"--amp must be none, bf16 or auto, got {self.amp!r}")
        check(self.grad_clip_norm is None or self.grad_clip_norm > 0,
              f"--grad-clip must be positive, got {self.grad_clip_norm}")
        check(self.cuda_graph in CUDA_GRAPH_CHOICES, f"cuda_graph must be auto or off, got {self.cuda_graph!r}")
        check(self.num_workers >= 0, f"--workers must be 0 or more, got {self.num_workers}; e.g. --workers 4")
        check(self.train_limit is None or self.train_limit >= 1,
              f"--train-limit must be at least 1, got {self.train_limit}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"--device {name!r} is not a device; use auto, cpu or cuda") from exc


def memory_format(device: torch.device) -> torch.memory_format:
    """The layout training runs in: channels_last on a CPU, where it pays (the whole NEO-KD step with
    PGD-7 max-average, 1 thread, AVX-512 AMD EPYC: 1.33x on SmallCNN, 1.24x on the 3-exit MSDNet;
    ``benchmarks/bench_train_step.py --variants naive,fp32,fp32+cl``); the model's own layout elsewhere
    (not measured on a GPU). Only the float rounding differs."""
    return torch.channels_last if device.type == "cpu" else torch.preserve_format


class _Indexed(Dataset):
    """Yields ``(x, y, index)`` so defenses with per-sample state (TEAT) can key it."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return x, y, i


class RankShard(Sampler[int]):
    """Rank ``rank``'s share of the order one process would take: ``torch.randperm(n, generator)`` (what
    ``DataLoader(shuffle=True, generator=...)`` draws, after the loader's own draw from the same generator),
    padded to a multiple of ``world`` by repeating its start, then every ``world``-th index from ``rank``.
    Step ``k`` of the W ranks with batch B then covers the samples of step ``k`` of one process with batch
    W*B (the order ``DistributedSampler`` would take is another permutation)."""

    def __init__(self, n: int, generator: torch.Generator, rank: int, world: int) -> None:
        self.n, self.generator, self.rank, self.world = n, generator, rank, world

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator).tolist()
        order += order[:(-self.n) % self.world]
        return iter(order[self.rank::self.world])

    def __len__(self) -> int:
        return -(-self.n // self.world)


@contextlib.contextmanager
def _cudnn_benchmark(device: torch.device, on: bool):
    """``torch.backends.cudnn.benchmark = on`` on CUDA for the ``with`` block; the previous value after."""
    if device.type != "cuda":
        yield
        return
    was = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = was


def _host_values(values: dict[str, Any]) -> dict[str, float]:
    """The loss and its parts as Python floats, the tensors among them copied to the host together."""
    tensors = {k: v for k, v in values.items() if isinstance(v, torch.Tensor)}
    host = dict(zip(tensors, torch.stack([v.detach().float().reshape(()) for v in tensors.values()]).tolist())) \
        if tensors else {}
    return {k: host[k] if k in host else float(v) for k, v in values.items()}


def _accepts(defense: Any, name: str) -> bool:
    try:
        return name in inspect.signature(defense.training_step).parameters
    except (TypeError, ValueError):
        return False


def wrap_for_ranks(model: nn.Module, device: torch.device, sync_bn: bool) -> nn.Module:
    """``DistributedDataParallel(model)`` (parameters and buffers broadcast from rank 0), with BatchNorm
    converted in place to ``SyncBatchNorm`` first when ``sync_bn``."""
    if sync_bn:
        if device.type != "cuda":
            raise UsageError("--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm has no CPU version); "
                             "drop --sync-bn on CPU")
        for name, child in list(model.named_children()):
            setattr(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=False)


def _state(obj: Any) -> dict[str, Any] | None:
    fn = getattr(obj, "state_dict", None)
    return fn() if callable(fn) else None


RESUME_FIELDS = (("defense", "--defense"), ("model_name", "--model"), ("model_kwargs", "the model's options"),
                 ("dataset", "--dataset"), ("preset", "--preset"))


_MISSING = object()


def _differing(was: dict[str, Any], now: dict[str, Any], defaults: dict[str, Any]) -> list[str]:
    """Keys whose values differ. A key the older checkpoint lacks counts as holding its default: a field added
    to a config after the checkpoint was written, left at its default, reproduces the older code's behaviour."""
    def get(d: dict[str, Any], k: str) -> Any:
        return d[k] if k in d else defaults.get(k, _MISSING)

    return sorted(k for k in set(was) | set(now) if get(was, k) != get(now, k))


def _field_defaults(cls: Any) -> dict[str, Any]:
    if not dataclasses.is_dataclass(cls):
        return {}
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = list(f.default) if isinstance(f.default, tuple) else f.default
    return out


def check_resume(state: dict[str, Any], meta: dict[str, Any], cfg: TrainConfig | None, path: Path,
                 defense_config: Any = None) -> None:
    """Refuse, naming the field, a resume whose defense (or its config), model, dataset, preset or training
    config differs from what the checkpoint was written with. Fields absent from ``meta`` are not compared.
    A config field the checkpoint lacks (added to the code later) matches when it holds its default;
    ``defense_config`` (the defense's config object) gives the defense's defaults."""
    for key, flag in RESUME_FIELDS:
        if key not in meta or state.get(key) == meta[key]:
            continue
        was, now = state.get(key), meta[key]
        if key == "defense" and isinstance(was, dict) and isinstance(now, dict):
            if "config" not in now and was.get("name") == now.get("name"):
                continue  # name only: the config is compared once the defense is set up
            if was.get("name") != now.get("name"):
                was, now = was.get("name"), now.get("name")
            else:
                # the name, the config and the variant decide the training; the assumptions, source and class
                # path are its documentation, which may be reworded between versions
                a, b = was.get("config") or {}, now.get("config") or {}
                diff = _differing(a, b, _field_defaults(type(defense_config)))
                if not diff and was.get("variant") == now.get("variant"):
                    continue
                field = diff[0] if diff else "variant"
                if not diff:
                    a, b = {"variant": was.get("variant")}, {"variant": now.get("variant")}
                raise UsageError(f"--resume: {path} was written with defense config {field}={a.get(field)!r}, "
                                 f"not {b.get(field)!r}; rerun with the same --set options or use a new --out")
        raise UsageError(f"--resume: {path} was written with {key} {was!r}, not {now!r}; rerun with the same "
                         f"{flag} or use a new --out folder")
    if cfg is not None and state.get("train_config") != cfg.to_dict():
        a, b = state.get("train_config") or {}, cfg.to_dict()
        diff = _differing(a, b, _field_defaults(TrainConfig))
        if not diff:
            return
        raise UsageError(f"--resume: {path} was written with another training config ({', '.join(diff)} differ); "
                         f"rerun with the same options or use a new --out folder")


def train(
    model: nn.Module,
    defense: Any,
    train_set: Dataset,
    cfg: TrainConfig,
    *,
    out_dir: str | Path,
    meta: dict[str, Any] | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``model`` with ``defense`` (already ``setup()``) and return the result's training section.

    ``meta`` is stored in every checkpoint (model name and kwargs, dataset, defense description) so that
    ``neokd-bench eval CHECKPOINT`` can rebuild the model. The parts: :func:`_restore` (``--resume``),
    :class:`_Step` (one training step, on one of three paths), :func:`_run_epoch` and :func:`_save_checkpoint`.
    """
    device = init_distributed(resolve_device(cfg.device))
    rank, world = rank_and_world()
    out_dir = Path(out_dir)
    ckpt_path = out_dir / CHECKPOINT_NAME
    if resume and not out_dir.is_dir():
        raise UsageError(f"--resume: no run folder {out_dir}; run without --resume to start fresh")
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)

    if cfg.train_limit is not None and cfg.train_limit < len(train_set):  # type: ignore[arg-type]
        train_set = torch.utils.data.Subset(train_set, range(cfg.train_limit))
    data = _Indexed(train_set)
    layout = memory_format(device)
    model.to(device, memory_format=layout)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(cfg.milestones), gamma=0.1)
    meta = dict(meta or {})

    if rank == 0:
        remove_stale_temp_files(out_dir)  # what a killed run left of an interrupted write
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume and ckpt_path.exists():
        history, start_epoch = _restore(ckpt_path, model, opt, sched, defense, meta, cfg)
    # resume without a checkpoint in an existing folder: killed before the first checkpoint; start at epoch 1

    step = _Step.build(model, defense, opt, params, cfg, device, layout, ckpt_path, world)
    t_start = time.perf_counter()
    with Progress(progress and rank == 0) as prog, _cudnn_benchmark(device, cfg.cudnn_benchmark):
        for epoch in range(start_epoch, cfg.epochs):
            history.append(_run_epoch(step, data, epoch, prog, rank, world, sched))
            if rank == 0:
                _save_checkpoint(ckpt_path, meta, model, opt, sched, defense, epoch, history, cfg)
            if world > 1:
                torch.distributed.barrier()
    graphed = step.graphed
    return {
        "config": cfg.to_dict(),
        "history": history,
        "wall_s": time.perf_counter() - t_start,
        "checkpoint": str(ckpt_path),
        "checkpoint_sha256": file_sha256(ckpt_path) if ckpt_path.is_file() else None,
        "resumed_from_epoch": start_epoch if start_epoch else None,
        "world_size": world,
        "device": str(device),
        "amp": step.amp,
        "cuda_graph": None if graphed is None else {"recordings": graphed.recordings, "replays": graphed.replays,
                                                    "failed": graphed.failed},
    }


def _restore(ckpt_path: Path, model: nn.Module, opt: torch.optim.Optimizer, sched: Any, defense: Any,
             meta: dict[str, Any], cfg: TrainConfig) -> tuple[list[dict[str, Any]], int]:
    """``--resume``: load the weights, optimizer, schedule and defense state of the last checkpoint (after
    :func:`check_resume`); the history so far and the epoch to start at."""
    state = load_checkpoint(ckpt_path)
    check_resume(state, meta, cfg, ckpt_path, getattr(defense, "config", None))
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise UsageError(f"--resume: {ckpt_path} does not match this model ({type(exc).__name__}); "
                         f"use a new --out folder") from exc
    if state.get("defense_state") is not None and hasattr(defense, "load_state_dict"):
        defense.load_state_dict(state["defense_state"])
    return list(state["history"]), int(state["epoch"]) + 1


def _save_checkpoint(ckpt_path: Path, meta: dict[str, Any], model: nn.Module, opt: torch.optim.Optimizer,
                     sched: Any, defense: Any, epoch: int, history: list[dict[str, Any]], cfg: TrainConfig) -> None:
    """The end-of-epoch checkpoint, written atomically (a kill mid-write leaves the previous one)."""
    atomic_torch_save({
        **meta,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "defense_state": _state(defense),
        "epoch": epoch,
        "history": history,
        "train_config": cfg.to_dict(),
    }, ckpt_path)


@dataclass
class _Step:
    """One training step on one of three paths: the defense's ``training_step`` in fp32 or under bf16 autocast,
    or (one GPU, a graph-safe defense) its attack followed by the loss, backward and SGD step replayed as a
    CUDA graph (:class:`GraphedLossStep`)."""

    model: nn.Module
    defense: Any
    opt: torch.optim.Optimizer
    params: list[nn.Parameter]
    cfg: TrainConfig
    device: torch.device
    layout: torch.memory_format
    ckpt_path: Path
    amp: str
    kw: dict[str, Any]  # loss_model under torchrun; index, per batch, for defenses that take it
    pass_index: bool
    autocast: Any
    graphed: GraphedLossStep | None

    @classmethod
    def build(cls, model: nn.Module, defense: Any, opt: torch.optim.Optimizer, params: list[nn.Parameter],
              cfg: TrainConfig, device: torch.device, layout: torch.memory_format, ckpt_path: Path,
              world: int) -> _Step:
        kw: dict[str, Any] = {}
        if world > 1:
            check(_accepts(defense, "loss_model"), f"defense {getattr(defense, 'name', type(defense).__name__)!r}: "
                  "its training_step takes no loss_model, which training under torchrun needs (the attack runs on "
                  "the plain module, the loss through DistributedDataParallel); derive it from Defense or add "
                  "loss_model=None to its training_step")
            kw["loss_model"] = wrap_for_ranks(model, device, cfg.sync_bn)
        amp = resolve_amp(cfg.amp, device)
        autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if amp == "bf16" else None
        graphed = None
        if device.type == "cuda" and world == 1 and cfg.cuda_graph == "auto" and defense_graph_safe(defense):
            # a factory, not ``autocast``: a torch.autocast takes the weight-cache setting in force when it is
            # built, and the loss's autocast must be built inside the recording, where that cache is off
            graphed = GraphedLossStep(model, defense, opt, params, cfg.grad_clip_norm,
                                      (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp == "bf16"
                                      else None)
        return cls(model, defense, opt, params, cfg, device, layout, ckpt_path, amp, kw,
                   _accepts(defense, "index"), autocast, graphed)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, where: str) -> dict[str, float]:
        """Train on one batch; the loss and its parts as host floats. A non-finite loss raises
        :class:`TrainingDivergedError` before the optimizer step."""
        defense, kw = self.defense, self.kw
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if x.dim() == 4:
            x = x.contiguous(memory_format=self.layout)
        if self.pass_index:
            kw["index"] = idx
        if self.graphed is not None:  # the defense's own training_step, split: attack, then the graphed rest
            with self.autocast if self.autocast is not None else contextlib.nullcontext():
                x_adv = defense.adversarial(self.model, x, y, index=kw.get("index"))
            loss, parts = self.graphed(x, x_adv, y)  # loss, backward and optimizer step
        elif self.autocast is not None:
            with self.autocast:
                loss, parts, _ = defense.training_step(self.model, x, y, **kw)
        else:
            loss, parts, _ = defense.training_step(self.model, x, y, **kw)
        check_parts(defense, parts)
        logged = _host_values({"loss": loss, **parts})  # one device-to-host copy (one sync on a GPU)
        if not math.isfinite(logged["loss"]):
            kept = (f"last good checkpoint kept at {self.ckpt_path}" if self.ckpt_path.exists()
                    else "no checkpoint yet")
            raise TrainingDivergedError(
                f"training loss became {logged['loss']} at {where}; {kept}; lower --lr or check the data")
        if self.graphed is None:
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip_norm)
            self.opt.step()
        return logged


def _run_epoch(step: _Step, data: Dataset, epoch: int, prog: Progress, rank: int, world: int,
               sched: Any) -> dict[str, Any]:
    """One epoch from its own seeds (so a resumed run repeats it exactly); its history record."""
    cfg, device = step.cfg, step.device
    torch.manual_seed(derive_seed(cfg.seed, epoch))
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, epoch, 1))
    # pinned host memory where batches go to a GPU: the copy runs asynchronously (non_blocking in the step)
    loading = {"generator": gen, "num_workers": cfg.num_workers, "pin_memory": device.type == "cuda"}
    if world > 1:
        loader = DataLoader(data, batch_size=cfg.batch_size, sampler=RankShard(len(data), gen, rank, world),
                            **loading)
    else:
        loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True, **loading)
    step.defense.start_epoch(epoch)
    step.model.train()
    sums: dict[str, float] = {}
    seen, t0 = 0, time.perf_counter()
    advance = prog.task(f"epoch {epoch + 1}/{cfg.epochs}", len(loader))
    for i, (x, y, idx) in enumerate(loader):
        logged = step(x, y, idx, f"epoch {epoch + 1} step {i + 1}")
        n = x.shape[0]
        seen += n
        for k, v in logged.items():
            sums[k] = sums.get(k, 0.0) + v * n
        if prog.enabled:
            stats = " ".join(f"{k}={v / seen:.3f}" for k, v in sums.items())
            advance(1, stats=f"{stats} {seen / (time.perf_counter() - t0):.0f} img/s")
    lr_used = step.opt.param_groups[0]["lr"]
    sched.step()
    wall = time.perf_counter() - t0
    return {"epoch": epoch, "lr": lr_used, **{k: v / max(seen, 1) for k, v in sums.items()},
            "imgs_per_s": seen * world / wall, "wall_s": wall}


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a trainer checkpoint safely (``weights_only=True``)."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"no checkpoint at {path}; pass the checkpoint.pt written by `neokd-bench run`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(f"{path} is not a readable neokd-bench checkpoint ({type(exc).__name__}); "
                         f"pass the checkpoint.pt written by `neokd-bench run`") from exc
    if not isinstance(state, dict):
        raise UsageError(f"{path} holds a {type(state).__name__}, not a neokd-bench checkpoint; "
                         f"pass the checkpoint.pt written by `neokd-bench run`")
    return state


def model_from_checkpoint(state: dict[str, Any], path: str | Path = "the checkpoint") -> nn.Module:
    """The model a checkpoint was trained as, with its weights; a mismatch is a one-line error."""
    from . import create_model

    kwargs = state.get("model_kwargs") or {}
    name = state.get("model_name")
    if not isinstance(name, str) or not isinstance(kwargs, dict) or not isinstance(state.get("model"), dict):
        raise UsageError(f"{path}: model_name, model_kwargs or model has the wrong type; pass a checkpoint.pt "
                         f"written by `neokd-bench run`")
    try:
        model = create_model(name, **kwargs)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{path}: model {name!r} cannot be built from the checkpoint's model_kwargs "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise UsageError(f"{path}: the weights do not fit model {name!r} with its model_kwargs (another model or "
                         f"number of classes); pass the checkpoint.pt of that run") from exc
    return model.eval()


__all__ = [
    "CHECKPOINT_NAME",
    "TrainConfig",
    "derive_seed",
    "load_checkpoint",
    "model_from_checkpoint",
    "resolve_device",
    "train",
]
