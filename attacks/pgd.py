"""PGD (Madry et al., ICLR 2018) on a multi-exit network: the attacker algorithm of NEO-KD (paper Sec. 4.1,
App. A.2; PGD-7 for training, PGD-50 for testing).

L-inf; random start uniform in the eps-ball; ``steps`` sign-gradient steps of ``step_size``, each followed by
projection onto the eps-ball and a clamp to [0, 1] (:meth:`PGD.step`). Gradients are taken with
``torch.autograd.grad`` on the input only: no parameter ``.grad`` is ever written. The loss is the per-sample
cross-entropy, batch-mean, as in torchattacks' PGD (with ``random_start=False`` and objective ``exit:0`` on a
one-exit model it gives the same ``x_adv`` as ``torchattacks.PGD``).

The attack is its config, its step and its loop; where the loop runs is the attack base's executor
(:mod:`neokd_bench.attacks.executor`): the L single attacks of max-average (Eq. 2) in lock-step on a CPU
(``batched=True``; ``batched=False`` runs them one after another) and as one cascade per step on a GPU
(``cascade``), eval-mode batches in slices on a CPU (``micro_batch``), and on a GPU the attack after its random
starts, selection included, replayed as a CUDA graph (``cuda_graph``). All random starts are drawn first, in
exit order, so every way of running gives the same ``x_adv`` for the same seed. Selection is a no-grad forward
pass over the ``L * N`` candidates (one group at a time on CPU; see ``select_batch`` in
:mod:`neokd_bench.attacks.base`).

``amp_dtype`` (``"bfloat16"`` or ``"float16"``) runs the forward passes under ``torch.autocast``; meant
for training-time attacks. Evaluation attacks stay float32 unless asked. Losses are always float32.

Shapes: ``x`` ``[N, C, H, W]`` in [0, 1], ``y`` ``[N]`` int64; returns ``x_adv`` like ``x``.

Example::

    attack = neokd_bench.create_attack("pgd", eps=8/255, step_size=2/255, steps=7, objective="max-average")
    x_adv = attack(model, x, y)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import (
    Attack,
    AttackConfig,
    AttackRNG,
    Objective,
    _fail,
    check_non_negative,
    check_positive_int,
    num_exits,
    project,
    random_start,
    select_max_average,
)
from .executor import Executor, check_execution

STARTS = ("uniform", "trades")


@dataclass(frozen=True, kw_only=True)
class PGDConfig(AttackConfig):
    """Defaults: CIFAR threat model and PGD-50 of the paper (Sec. 4.1, App. A.2). The last five fields say how
    the executor runs the loop (:mod:`neokd_bench.attacks.executor`); they change no number beyond float
    rounding."""

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
        check_execution(self)


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

    def step(self, adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One signed-gradient step of ``step_size``, projected onto the eps-ball around ``x`` and [0, 1]."""
        return project(adv + self.config.step_size * grad.sign(), x, self.config.eps)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, objective: Objective,
            rng: AttackRNG) -> torch.Tensor:
        ex = Executor.of(self)

        def attack(x: torch.Tensor, y: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
            return ex.run(model, x, y, [start], [objective])[0]

        return ex.replay(model, str(objective), attack, (x, y, self._start(x, rng)))

    def max_average(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, rng: AttackRNG) -> torch.Tensor:
        """Eq. 2: the L single attacks, then selection; where the executor replays CUDA graphs
        (``cuda_graph``), both as one graph, from random starts drawn eagerly."""
        ex = Executor.of(self)
        if not ex.graphed(model, x):
            return super().max_average(model, x, y, rng)

        def attack(x: torch.Tensor, y: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
            cands = ex.per_exit(model, x, y, list(starts.unbind(0)))
            return select_max_average(model, cands, y, amp_dtype=self.amp_dtype,
                                      select_batch=self.config.select_batch, exit_loss=self.exit_loss)[0]

        starts = torch.stack([self._start(x, rng) for _ in range(num_exits(model))])
        return ex.replay(model, "max-average", attack, (x, y, starts))

    def _candidates(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, rng: AttackRNG) -> torch.Tensor:
        starts = [self._start(x, rng) for _ in range(num_exits(model))]  # drawn first: same in both forms, any slicing
        return Executor.of(self).per_exit(model, x, y, starts)

    def _start(self, x: torch.Tensor, rng: AttackRNG) -> torch.Tensor:
        if not self.config.random_start:
            return x.clone()
        if self.config.start == "trades":  # TRADES (Zhang et al. 2019): x + 0.001 * N(0, 1), clamped to [0, 1]
            return torch.clamp(x + rng.normal(x) * 1e-3, 0.0, 1.0)
        return random_start(x, self.config.eps, rng)
