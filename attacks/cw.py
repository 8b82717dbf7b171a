"""Carlini-Wagner margin attack adapted to multi-exit networks (paper App. H.1, Table 8).

Source: Carlini & Wagner (S&P 2017), margin objective ``f = max(z_y - max_{c != y} z_c, -kappa)``; the
multi-exit adaptation of NEO-KD App. H.1:

* the attacker minimizes the margin **averaged over exits** (``objective="average"``, the default; ``exit:k``
  uses exit ``k`` alone; ``max-average`` runs one single-exit CW per exit and selects per Eq. 2 by the mean
  cross-entropy over exits, as every attack of this package does);
* a sample counts as adversarial only when **every** exit it targets is fooled.

Assumptions (App. H.1 gives no more detail; H.3 gives L-inf, eps 0.03 and 50 steps):

* the original CW is an L2 attack optimized with Adam in tanh space (this is torchattacks' ``CW``); here,
  as the paper's L-inf setting needs, the margin is optimized by L-inf PGD: sign-gradient steps of
  ``step_size``, projected onto the eps-ball and clamped to [0, 1]. torchattacks' CW is therefore not reused;
  only its margin function (with confidence ``kappa``, clamped per exit) is mirrored;
* ``kappa = 0``: once an exit is fooled its term stops pushing, so the steps concentrate on the exits that
  still classify correctly;
* per sample, the first iterate that fools all targeted exits is kept; a sample that is never fooled
  returns its best iterate, the one with the lowest mean margin (``not_fooled="best"``, the default), or
  the clean ``x`` (``not_fooled="clean"``, App. H's rule; see :mod:`neokd_bench.attacks.base`);
* the step size is the dataset's PGD step size: ``neokd-bench eval`` (and :func:`neokd_bench.evaluation.evaluate`)
  passes ``step_size`` from :data:`neokd_bench.presets.THREAT` (e.g. MNIST 20/255, Fashion-MNIST 0.025,
  CIFAR 2/255, Tiny-ImageNet / ImageNet 2/3 of eps), so 50 steps can cross the eps-ball on every dataset.
  The class default, 2/255, is the CIFAR step (App. A.2), beside the CIFAR default eps;
* no random start by default (CW starts from the clean input); ``random_start=True`` adds a uniform one.

Shapes: ``x`` ``[N, C, H, W]`` in [0, 1], ``y`` ``[N]``; returns ``x_adv`` like ``x``.

Example::

    x_adv = neokd_bench.create_attack("cw", eps=8/255, steps=50)(model, x, y)
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
    any_correct,
    attacked_outputs,
    check_non_negative,
    check_positive_int,
    project,
    random_start,
)


def cw_margin(logits: torch.Tensor, y: torch.Tensor, kappa: float = 0.0) -> torch.Tensor:
    """Per-sample CW margin ``max(z_y - max_{c != y} z_c, -kappa)``; <= 0 means misclassified."""
    z = logits.float()
    true = z.gather(1, y[:, None]).squeeze(1)
    other = z.masked_fill(torch.nn.functional.one_hot(y, z.shape[1]).bool(), float("-inf")).amax(1)
    return torch.clamp(true - other, min=-kappa)


@dataclass(frozen=True, kw_only=True)
class CWConfig(AttackConfig):
    """Defaults: CIFAR eps 8/255 (App. H.3 rounds it to 0.03), 50 steps (H.3), average over exits (H.1)."""

    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 50
    kappa: float = 0.0
    random_start: bool = False
    objective: str = "average"

    def validate(self) -> None:
        super().validate()
        check_non_negative("step_size", self.step_size, "step_size=2/255")
        check_positive_int("steps", self.steps, 1, "steps=50")
        check_non_negative("kappa", self.kappa, "kappa=0")
        if not isinstance(self.random_start, bool):
            _fail("random_start", self.random_start, "use random_start=True or random_start=False")


class CW(Attack):
    """L-inf CW-margin attack on the mean margin over exits; success only when every exit is fooled
    (NEO-KD App. H.1)."""

    name = "cw"
    presets = {"paper": {}, "tiny": {"steps": 3, "step_size": 0.02}}
    Config = CWConfig
    config: CWConfig

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, objective: Objective,
            rng: AttackRNG) -> torch.Tensor:
        cfg = self.config
        adv = random_start(x, cfg.eps, rng) if cfg.random_start else x.clone()
        kept = x.clone()
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        best = torch.full((len(x),), float("inf"), device=x.device)  # lowest mean margin seen (not fooled)
        for step in range(cfg.steps + 1):
            last = step == cfg.steps
            with torch.set_grad_enabled(not last):
                adv.requires_grad_(not last)
                outs = attacked_outputs(model, adv, objective)
                margin = torch.stack([cw_margin(o, y, cfg.kappa) for o in outs]).mean(0)  # [N]
            # The current iterate (before its step): kept at first success, else if its margin is the lowest.
            fooled = ~any_correct(outs, y) & ~done
            better = ~done & ~fooled & (margin.detach() <= best)
            keep = fooled | better
            kept[keep] = adv.detach()[keep]
            best = torch.where(better, margin.detach(), best)
            done |= fooled
            if last or bool(done.all()):
                break
            (grad,) = torch.autograd.grad(-margin.sum(), [adv])
            adv = project(adv.detach() + cfg.step_size * grad.sign(), x, cfg.eps)
        return kept
