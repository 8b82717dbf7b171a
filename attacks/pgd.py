"""PGD (Madry et al., ICLR 2018) on a multi-exit network: the attacker algorithm of NEO-KD (paper Sec. 4.1,
App. A.2; PGD-7 for training, PGD-50 for testing).

L-inf; random start uniform in the eps-ball; ``steps`` sign-gradient steps of ``step_size``, each followed by
projection onto the eps-ball and a clamp to [0, 1]. Gradients are taken with ``torch.autograd.grad`` on the
input only: no parameter ``.grad`` is ever written. The loss is the per-sample cross-entropy, batch-mean, as
in torchattacks' PGD (with ``random_start=False`` and objective ``exit:0`` on a one-exit model it gives the
same ``x_adv`` as ``torchattacks.PGD``).

Max-average (Eq. 2), how it is computed. With ``batched=True`` the L single attacks advance in lock-step: in
each step, group ``k`` (the candidates for exit ``k``) computes exit ``k``'s logits alone
(``model(x_k, upto=k, last_only=True)``), so no block deeper than exit ``k`` and no head of an earlier exit runs for
it, and takes its input gradient. Groups are separate forward calls (each the batch size of ``x``), which
keeps BatchNorm batch statistics, and therefore results, identical to the looped form; ``batched=False``
runs the L single attacks one after another. All random starts are drawn first, in exit order, so both forms
give the same ``x_adv`` for the same seed. Selection is a no-grad forward pass over the ``L * N`` candidates
(one group at a time on CPU; see ``select_batch`` in :mod:`neokd_bench.attacks.base`). On a CPU one graph
alive at a time is faster than one ``autograd.grad`` over all L graphs (measured: 9% on the 7-exit MSDNet),
and batching the groups into one larger batch is slower (the larger batch falls out of the caches). On a
GPU the opposite holds, because small kernels leave it idle between launches: there (``cascade="auto"``, for
models with ``cascades = True``) the L groups run as one cascade per step (``model.forward_cascade``: all
groups enter the first block as one batch, group ``k`` leaves after exit ``k``; eval mode only, so the
groups share no batch statistics). Measured on an NVIDIA H200 (``benchmarks/gpu_figures.sh``, batch 128,
PGD-7 max-average): 0.20 s against 0.74 s for the lock-step loop on the 7-exit MSDNet, 0.12 s against
0.21 s on the 3-exit one. On a CPU it ran at 0.84-0.96x the naive reference (7-exit MSDNet), so ``auto``
keeps the loop there.

On a GPU (``cuda_graph="auto"``, eval mode, a model that declares ``graph_safe``) the attack after its random
starts, selection included, is recorded once as a CUDA graph and replayed (:mod:`neokd_bench.attacks.graphs`):
the same computation without the host's launch overhead (3-exit MSDNet NEO-KD step on an H200: 0.24 s ->
0.07 s with the loss step replayed too).

``amp_dtype`` (``"bfloat16"`` or ``"float16"``) runs the forward passes under ``torch.autocast``; meant
for training-time attacks. Evaluation attacks stay float32 unless asked. Losses are always float32.

Shapes: ``x`` ``[N, C, H, W]`` in [0, 1], ``y`` ``[N]`` int64; returns ``x_adv`` like ``x``.

Example::

    attack = neokd_bench.create_attack("pgd", eps=8/255, step_size=2/255, steps=7, objective="max-average")
    x_adv = attack(model, x, y)
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from . import graphs
from .base import (
    AMP_DTYPES,
    MICRO_BATCH_CPU,
    Attack,
    AttackConfig,
    AttackRNG,
    Objective,
    _fail,
    autocast,
    cascade_is_safe,
    check_non_negative,
    check_positive_int,
    num_exits,
    objective_loss,
    project,
    random_start,
    select_max_average,
)

CASCADE = ("auto", "on", "off")
CUDA_GRAPH = ("auto", "on", "off")
STARTS = ("uniform", "trades")


def _joined(parts: list[torch.Tensor], dim: int = 0) -> torch.Tensor:
    """The slices' results as one tensor (one slice, the usual case off a CPU: no copy)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)


@dataclass(frozen=True, kw_only=True)
class PGDConfig(AttackConfig):
    """Defaults: CIFAR threat model and PGD-50 of the paper (Sec. 4.1, App. A.2)."""

    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 50
    random_start: bool = True
    start: str = "uniform"  # "uniform" in the eps-ball (Madry et al.) or "trades": x + 0.001 * N(0, 1)
    objective: str = "max-average"
    amp_dtype: str | None = None
    batched: bool = True
    cascade: str = "auto"
    micro_batch: int = 0  # samples per attack pass in eval mode; 0: automatic (MICRO_BATCH_CPU on a CPU, all on a GPU)
    cuda_graph: str = "auto"  # eval mode on a GPU: replay the attack as a CUDA graph; "auto": for graph-safe models

    def validate(self) -> None:
        super().validate()
        check_non_negative("step_size", self.step_size, "step_size=2/255")
        check_positive_int("steps", self.steps, 1, "steps=50")
        if not isinstance(self.random_start, bool):
            _fail("random_start", self.random_start, "use random_start=True or random_start=False")
        if self.start not in STARTS:
            _fail("start", self.start, "use start='uniform' (in the eps-ball) or start='trades' (x + 0.001 N(0, 1))")
        if not isinstance(self.batched, bool):
            _fail("batched", self.batched, "use batched=True or batched=False")
        check_positive_int("micro_batch", self.micro_batch, 0, "micro_batch=0 (automatic) or micro_batch=64")
        if self.micro_batch and self.mode != "eval":
            _fail("micro_batch", self.micro_batch, "in train mode BatchNorm pools the batch, so it cannot be split; "
                  "use micro_batch=0 with mode='train'")
        if self.cascade not in CASCADE:
            _fail("cascade", self.cascade, "use cascade='auto' (GPU only), 'on' or 'off'")
        if self.cascade == "on" and (self.mode != "eval" or not self.batched):
            _fail("cascade", self.cascade, "the cascade needs mode='eval' and batched=True; use cascade='off'")
        if self.cuda_graph not in CUDA_GRAPH:
            _fail("cuda_graph", self.cuda_graph, "use cuda_graph='auto' (GPU, graph-safe models), 'on' (GPU, any "
                  "model) or 'off'")
        if self.amp_dtype is not None and self.amp_dtype not in AMP_DTYPES:
            _fail("amp_dtype", self.amp_dtype, "use amp_dtype=None (float32), 'bfloat16' or 'float16'")


class PGD(Attack):
    """L-inf PGD with random start; objective ``exit:k``, ``average`` (Eq. 3) or ``max-average`` (Eq. 2).

    Source: Madry et al. 2018; the multi-exit objectives follow Hu et al. 2020 (Triple-Wins) as used by
    NEO-KD (Sec. 3.1). Assumes the model contract of :mod:`neokd_bench.models.base`. Samples it does not
    fool at every attacked exit keep its last iterate (``not_fooled="best"``) or go back to the clean ``x``
    (``not_fooled="clean"``, App. H's rule).
    """

    name = "pgd"
    presets = {"paper": {}, "tiny": {"steps": 3, "step_size": 0.02}}
    # Its computation after the random starts reads only the inputs and the model: CUDA graphs may record it
    # (:mod:`neokd_bench.attacks.graphs`). Not inherited: a subclass declares it on its own class.
    graph_safe = True
    Config = PGDConfig
    config: PGDConfig

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, objective: Objective,
            rng: AttackRNG) -> torch.Tensor:
        start = self._start(x, rng)

        def attack(x: torch.Tensor, y: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
            return _joined([self._lockstep(model, x[s], y[s], [start[s]], [objective])[0] for s in self._slices(x)])

        if self._graphed(model, x):
            return graphs.replay(model, self._graph_key(str(objective)), attack, (x, y, start))
        return attack(x, y, start)

    def max_average(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, rng: AttackRNG) -> torch.Tensor:
        """Eq. 2: the L single attacks, then selection; on a GPU both replayed as one CUDA graph
        (``cuda_graph``), from random starts drawn eagerly."""
        if not self._graphed(model, x):
            return super().max_average(model, x, y, rng)

        def attack(x: torch.Tensor, y: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
            cands = self._from_starts(model, x, y, list(starts.unbind(0)))
            return select_max_average(model, cands, y, amp_dtype=self.amp_dtype,
                                      select_batch=self.config.select_batch, exit_loss=self.exit_loss)[0]

        starts = torch.stack([self._start(x, rng) for _ in range(num_exits(model))])
        return graphs.replay(model, self._graph_key("max-average"), attack, (x, y, starts))

    def _graphed(self, model: nn.Module, x: torch.Tensor) -> bool:
        """Replay through a CUDA graph (:mod:`neokd_bench.attacks.graphs`): eval mode on a GPU, for a model
        that declares itself safe for capture (``cuda_graph="auto"``) or any model (``"on"``)."""
        cfg = self.config
        if cfg.cuda_graph == "off" or cfg.mode != "eval" or x.device.type != "cuda" or not len(x):
            return False
        if not vars(type(self)).get("graph_safe", False):  # a subclass's loss may read per-batch state (TEAT's)
            return False
        return cfg.cuda_graph == "on" or graphs.graph_safe(model)

    def _graph_key(self, what: str) -> tuple:
        """What the recorded computation depends on besides the model and the inputs: the attack's class, its
        bound loss and its config (the seed only picks the starts, which are inputs)."""
        return (type(self), what, dataclasses.replace(self.config, seed=None))

    def _candidates(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, rng: AttackRNG) -> torch.Tensor:
        starts = [self._start(x, rng) for _ in range(num_exits(model))]  # drawn first: same in both forms, any slicing
        return self._from_starts(model, x, y, starts)

    def _from_starts(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, starts: list[torch.Tensor]
                     ) -> torch.Tensor:
        """The L single attacks from their random starts, as ``[L, N, ...]``."""
        objectives = [Objective("exit", k) for k in range(len(starts))]
        cascade = self.config.batched and self._use_cascade(model, x)
        parts = []
        for s in self._slices(x):
            xs, ys, st = x[s], y[s], [a[s] for a in starts]
            if cascade:
                advs = self._cascade(model, xs, ys, st)
            elif self.config.batched:
                advs = self._lockstep(model, xs, ys, st, objectives)
            else:
                advs = [self._lockstep(model, xs, ys, [a], [o])[0] for a, o in zip(st, objectives)]
            parts.append(torch.stack(advs))
        return _joined(parts, dim=1)

    def _slices(self, x: torch.Tensor) -> list[slice]:
        """The batch in slices of ``micro_batch`` samples (automatic: ``MICRO_BATCH_CPU`` for an eval-mode
        attack on a CPU, the whole batch elsewhere)."""
        cfg, n = self.config, len(x)
        size = cfg.micro_batch or (MICRO_BATCH_CPU if cfg.mode == "eval" and x.device.type == "cpu" else n)
        size = max(1, min(size, n))
        return [slice(i, i + size) for i in range(0, n, size)] or [slice(0, 0)]

    # -----------------------------------------------------------------------------------------
    def _start(self, x: torch.Tensor, rng: AttackRNG) -> torch.Tensor:
        if not self.config.random_start:
            return x.clone()
        if self.config.start == "trades":  # TRADES (Zhang et al. 2019): x + 0.001 * N(0, 1), clamped to [0, 1]
            return torch.clamp(x + rng.normal(x) * 1e-3, 0.0, 1.0)
        return random_start(x, self.config.eps, rng)

    def _use_cascade(self, model: nn.Module, x: torch.Tensor) -> bool:
        cfg = self.config
        if cfg.cascade == "off" or cfg.mode != "eval" or not cascade_is_safe(model):
            return False
        return cfg.cascade == "on" or (x.device.type == "cuda" and bool(getattr(model, "cascades", False)))

    def _cascade(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, starts: list[torch.Tensor]
                 ) -> list[torch.Tensor]:
        """The L single attacks as one batched computation per step (``model.forward_cascade``): all
        candidates enter block 1 together, candidate group ``k`` leaves after exit ``k``; one
        ``autograd.grad`` returns the L input gradients. Falls back to the lock-step loop when the device
        runs out of memory."""
        cfg = self.config
        advs = [s.detach() for s in starts]
        for step in range(cfg.steps):
            try:
                advs = [a.requires_grad_(True) for a in advs]
                with autocast(x.device, cfg.amp_dtype):
                    logits = model.forward_cascade(advs)
                total = sum(self.exit_loss(z, y, k).mean() for k, z in enumerate(logits))
                grads = torch.autograd.grad(total, advs)
            except torch.OutOfMemoryError:
                warnings.warn(f"pgd: the cascade of {len(advs)} candidate groups ran out of device memory; "
                              "running them one after another (set cascade='off' to skip the attempt)",
                              stacklevel=2)
                logits = total = None  # drop what the failed step built
                objectives = [Objective("exit", k) for k in range(len(advs))]
                return self._lockstep(model, x, y, [a.detach() for a in advs], objectives, cfg.steps - step)
            advs = [project(a.detach() + cfg.step_size * g.sign(), x, cfg.eps) for a, g in zip(advs, grads)]
        return advs

    def _lockstep(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, starts: list[torch.Tensor],
                  objectives: list[Objective], steps: int | None = None) -> list[torch.Tensor]:
        """Run len(starts) independent PGD attacks in lock-step: in each step every attack takes one
        forward/backward pass (its own graph, freed before the next attack's), in exit order."""
        cfg = self.config
        advs = [s.detach() for s in starts]
        for _ in range(cfg.steps if steps is None else steps):
            stepped = []
            for a, o in zip(advs, objectives):  # one graph alive at a time: on CPU, 9% faster than one
                a.requires_grad_(True)           # autograd.grad over all L graphs (MSDNet, 7 exits)
                with autocast(x.device, cfg.amp_dtype):
                    loss = objective_loss(model, a, y, o, exit_loss=self.exit_loss).mean()
                (g,) = torch.autograd.grad(loss, [a])
                stepped.append(project(a.detach() + cfg.step_size * g.sign(), x, cfg.eps))
            advs = stepped
        return advs
