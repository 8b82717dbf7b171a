"""Where an attack's iterations run: the executor of the attack base (:mod:`neokd_bench.attacks.base`).

An iterative gradient attack is its config, its step and its loop. The step is the attack's own (PGD: one
signed-gradient step, then projection); what this module owns is how the loop runs on a device, the same for
every attack that hands it a step:

* **the loop**: ``steps`` times, each attack takes the input gradient of its batch-mean loss
  (``objective_loss`` with the attack's ``exit_loss``; ``torch.autograd.grad`` on the input only: no
  parameter ``.grad`` is ever written) and the attack's step maps (iterate, gradient, clean ``x``) to the next
  iterate. Forward passes run under ``torch.autocast`` when the attack has an ``amp_dtype``; losses are
  float32;
* **lock-step** (``batched=True``): several attacks (max-average's L single attacks, one per exit) advance
  together: in each step attack ``k`` computes exit ``k``'s logits alone (``model(x_k, upto=k,
  last_only=True)``), so no block deeper than exit ``k`` and no head of an earlier exit runs for it, and takes
  its input gradient. The attacks are separate forward calls (each the batch size of ``x``), which keeps
  BatchNorm batch statistics, and therefore results, identical to running them one after another
  (``batched=False``). On a CPU one graph alive at a time is faster than one ``autograd.grad`` over all L
  graphs (measured: 9% on the 7-exit MSDNet), and batching the groups into one larger batch is slower (the
  larger batch falls out of the caches);
* **the cascade** (max-average's per-exit attacks only): on a GPU the opposite holds, because small kernels
  leave it idle between launches: there (``cascade="auto"``, for models with ``cascades = True``) the L
  groups run as one cascade per step (``model.forward_cascade``: all groups enter the first block as one
  batch, group ``k`` leaves after exit ``k``; eval mode only, so the groups share no batch statistics).
  Measured on an NVIDIA H200 (``benchmarks/gpu_figures.sh``, batch 128, PGD-7 max-average): 0.20 s against
  0.74 s for the lock-step loop on the 7-exit MSDNet, 0.12 s against 0.21 s on the 3-exit one. On a CPU it
  ran at 0.84-0.96x the naive reference (7-exit MSDNet), so ``auto`` keeps the loop there. If the device runs
  out of memory the remaining steps run in lock-step, with a warning;
* **slices** (``micro_batch``): an eval-mode attack on a CPU runs the batch in slices of
  ``MICRO_BATCH_CPU`` samples (see there), elsewhere the whole batch at once;
* **CUDA-graph replay** (``cuda_graph="auto"``, eval mode, on a GPU, an attack class and a model that both
  declare ``graph_safe``): the attack's computation after its random starts, selection included, is recorded
  once as a CUDA graph and replayed (:mod:`neokd_bench.attacks.graphs`): the same computation without the
  host's launch overhead (3-exit MSDNet NEO-KD step on an H200: 0.24 s -> 0.07 s with the loss step replayed
  too).

An attack gets its executor with :meth:`Executor.of`, which reads the execution fields of its config where it
has them (``steps`` and ``mode`` always; ``amp_dtype``, ``batched``, ``cascade``, ``micro_batch`` and
``cuda_graph`` when present, else their defaults below); :func:`check_execution` validates those fields.

Example (PGD's single-objective attack, :mod:`neokd_bench.attacks.pgd`)::

    ex = Executor.of(attack)
    x_adv = ex.replay(model, "exit:0", lambda x, y, s: ex.run(model, x, y, [s], [objective])[0], (x, y, start))
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import graphs
from .base import (
    AMP_DTYPES,
    MICRO_BATCH_CPU,
    ExitLossFn,
    Objective,
    _fail,
    autocast,
    cascade_is_safe,
    check_positive_int,
    objective_loss,
)

CASCADE = ("auto", "on", "off")
CUDA_GRAPH = ("auto", "on", "off")

StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""One update of an attack: ``(iterate [N, ...] detached, its input gradient, clean x) -> next iterate``."""


def check_execution(cfg: Any) -> None:
    """Validate the execution fields of an attack config (``batched``, ``micro_batch``, ``cascade``,
    ``cuda_graph``, ``amp_dtype``); one-line :class:`~neokd_bench.errors.UsageError` otherwise."""
    if not isinstance(cfg.batched, bool):
        _fail("batched", cfg.batched, "use batched=True or batched=False")
    check_positive_int("micro_batch", cfg.micro_batch, 0, "micro_batch=0 (automatic) or micro_batch=64")
    if cfg.micro_batch and cfg.mode != "eval":
        _fail("micro_batch", cfg.micro_batch, "in train mode BatchNorm pools the batch, so it cannot be split; "
              "use micro_batch=0 with mode='train'")
    if cfg.cascade not in CASCADE:
        _fail("cascade", cfg.cascade, "use cascade='auto' (GPU only), 'on' or 'off'")
    if cfg.cascade == "on" and (cfg.mode != "eval" or not cfg.batched):
        _fail("cascade", cfg.cascade, "the cascade needs mode='eval' and batched=True; use cascade='off'")
    if cfg.cuda_graph not in CUDA_GRAPH:
        _fail("cuda_graph", cfg.cuda_graph, "use cuda_graph='auto' (GPU, graph-safe models), 'on' (GPU, any "
              "model) or 'off'")
    if cfg.amp_dtype is not None and cfg.amp_dtype not in AMP_DTYPES:
        _fail("amp_dtype", cfg.amp_dtype, "use amp_dtype=None (float32), 'bfloat16' or 'float16'")


def _joined(parts: list[torch.Tensor], dim: int = 0) -> torch.Tensor:
    """The slices' results as one tensor (one slice, the usual case off a CPU: no copy)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)


@dataclass(frozen=True, eq=False)
class Executor:
    """Runs an attack's loop on a model the way the device wants it (see the module docstring).

    ``step`` and ``exit_loss`` are the attack's; ``graph_key`` is what a CUDA-graph recording depends on
    besides the model and the inputs (``None``: the attack is never recorded); ``name`` labels warnings.
    """

    step: StepFn
    exit_loss: ExitLossFn
    steps: int
    mode: str = "eval"
    amp_dtype: str | None = None
    batched: bool = True
    cascade: str = "off"
    micro_batch: int = 0
    cuda_graph: str = "off"
    graph_key: Hashable | None = None
    name: str = "attack"

    @classmethod
    def of(cls, attack: Any) -> Executor:
        """The executor of ``attack`` (an :class:`~neokd_bench.attacks.base.Attack` with a ``step`` method and
        a ``steps`` config field). Its computation after the random starts may be recorded as a CUDA graph
        only if the attack's own class (not a parent) declares ``graph_safe = True``: a subclass's loss may
        read per-batch state (TEAT's). The key holds the attack's class and its config without the seed (the
        seed only picks the starts, which are inputs)."""
        cfg = attack.config
        safe = vars(type(attack)).get("graph_safe", False)
        options = {f: getattr(cfg, f) for f in ("amp_dtype", "batched", "cascade", "micro_batch", "cuda_graph")
                   if hasattr(cfg, f)}
        key = (type(attack), dataclasses.replace(cfg, seed=None)) if safe else None
        return cls(step=attack.step, exit_loss=attack.exit_loss, steps=cfg.steps, mode=cfg.mode, graph_key=key,
                   name=attack.name, **options)

    # -- entry points -------------------------------------------------------------------------
    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, starts: Sequence[torch.Tensor],
            objectives: Sequence[Objective]) -> list[torch.Tensor]:
        """The attacks ``(starts[i], objectives[i])`` (single-exit or ``average``), each from its start, in
        slices; several run in lock-step (``batched``) or one after another. Returns their last iterates."""
        parts = [self._loop(model, x[s], y[s], [a[s] for a in starts], objectives) for s in self.slices(x)]
        return [_joined([p[i] for p in parts]) for i in range(len(starts))]

    def per_exit(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, starts: Sequence[torch.Tensor]
                 ) -> torch.Tensor:
        """The single attacks on exits ``0..len(starts)-1`` (max-average's candidates), each from its start,
        as ``[L, N, ...]``: in slices, through the cascade where :meth:`cascades`, else as :meth:`run`."""
        objectives = [Objective("exit", k) for k in range(len(starts))]
        cascade = self.batched and self.cascades(model, x)
        parts = []
        for s in self.slices(x):
            xs, ys, st = x[s], y[s], [a[s] for a in starts]
            advs = self._cascade(model, xs, ys, st) if cascade else self._loop(model, xs, ys, st, objectives)
            parts.append(torch.stack(advs))
        return _joined(parts, dim=1)

    def replay(self, model: nn.Module, what: str, fn: Callable[..., torch.Tensor],
               inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """``fn(*inputs)``; recorded once as a CUDA graph and replayed where :meth:`graphed` (``inputs[0]`` is
        the batch). ``what`` names the computation (e.g. the objective) in the recording's key."""
        if self.graphed(model, inputs[0]):
            return graphs.replay(model, (self.graph_key, what), fn, inputs)
        return fn(*inputs)

    # -- decisions ------------------------------------------------------------------------------
    def graphed(self, model: nn.Module, x: torch.Tensor) -> bool:
        """Replay through a CUDA graph: eval mode on a GPU, for a graph-safe attack and a model that declares
        itself safe for capture (``cuda_graph="auto"``) or any model (``"on"``)."""
        if self.cuda_graph == "off" or self.mode != "eval" or x.device.type != "cuda" or not len(x):
            return False
        if self.graph_key is None:
            return False
        return self.cuda_graph == "on" or graphs.graph_safe(model)

    def cascades(self, model: nn.Module, x: torch.Tensor) -> bool:
        """Run the per-exit attacks as one cascade per step: eval mode, a model whose ``forward_cascade`` is
        safe (:func:`~neokd_bench.attacks.base.cascade_is_safe`), and ``cascade="on"``, or ``"auto"`` on a
        GPU for a model with ``cascades = True``."""
        if self.cascade == "off" or self.mode != "eval" or not cascade_is_safe(model):
            return False
        return self.cascade == "on" or (x.device.type == "cuda" and bool(getattr(model, "cascades", False)))

    def slices(self, x: torch.Tensor) -> list[slice]:
        """The batch in slices of ``micro_batch`` samples (automatic: ``MICRO_BATCH_CPU`` for an eval-mode
        attack on a CPU, the whole batch elsewhere)."""
        n = len(x)
        size = self.micro_batch or (MICRO_BATCH_CPU if self.mode == "eval" and x.device.type == "cpu" else n)
        size = max(1, min(size, n))
        return [slice(i, i + size) for i in range(0, n, size)] or [slice(0, 0)]

    # -- loops ----------------------------------------------------------------------------------
    def _loop(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, starts: Sequence[torch.Tensor],
              objectives: Sequence[Objective]) -> list[torch.Tensor]:
        """The attacks of one slice, in lock-step (``batched``) or one after another."""
        if self.batched:
            return self.lockstep(model, x, y, starts, objectives)
        return [self.lockstep(model, x, y, [a], [o])[0] for a, o in zip(starts, objectives)]

    def lockstep(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, starts: Sequence[torch.Tensor],
                 objectives: Sequence[Objective], steps: int | None = None) -> list[torch.Tensor]:
        """Run len(starts) independent attacks in lock-step: in each step every attack takes one
        forward/backward pass (its own graph, freed before the next attack's), in order, then its step."""
        advs = [s.detach() for s in starts]
        for _ in range(self.steps if steps is None else steps):
            stepped = []
            for a, o in zip(advs, objectives):  # one graph alive at a time: on CPU, 9% faster than one
                a.requires_grad_(True)           # autograd.grad over all L graphs (MSDNet, 7 exits)
                with autocast(x.device, self.amp_dtype):
                    loss = objective_loss(model, a, y, o, exit_loss=self.exit_loss).mean()
                (g,) = torch.autograd.grad(loss, [a])
                stepped.append(self.step(a.detach(), g, x))
            advs = stepped
        return advs

    def _cascade(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, starts: Sequence[torch.Tensor]
                 ) -> list[torch.Tensor]:
        """The L single attacks as one batched computation per step (``model.forward_cascade``): all
        candidates enter block 1 together, candidate group ``k`` leaves after exit ``k``; one
        ``autograd.grad`` returns the L input gradients. Falls back to the lock-step loop when the device
        runs out of memory."""
        advs = [s.detach() for s in starts]
        for step in range(self.steps):
            try:
                advs = [a.requires_grad_(True) for a in advs]
                with autocast(x.device, self.amp_dtype):
                    logits = model.forward_cascade(advs)
                total = sum(self.exit_loss(z, y, k).mean() for k, z in enumerate(logits))
                grads = torch.autograd.grad(total, advs)
            except torch.OutOfMemoryError:
                warnings.warn(f"{self.name}: the cascade of {len(advs)} candidate groups ran out of device memory; "
                              "running them one after another (set cascade='off' to skip the attempt)",
                              stacklevel=2)
                logits = total = None  # drop what the failed step built
                objectives = [Objective("exit", k) for k in range(len(advs))]
                return self.lockstep(model, x, y, [a.detach() for a in advs], objectives, self.steps - step)
            advs = [self.step(a.detach(), g, x) for a, g in zip(advs, grads)]
        return advs
