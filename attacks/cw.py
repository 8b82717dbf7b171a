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
  returns the last iterate;
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
    exit_logits,
    Attack,
    AttackConfig,
    Objective,
    _fail,
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


def all_fooled(outputs: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """``[N]`` bool: every given exit predicts (argmax) a class other than ``y``."""
    return torch.stack([o.detach().argmax(1) != y for o in outputs]).all(0)


def targeted_exits(model: nn.Module, x: torch.Tensor, objective: Objective) -> list[torch.Tensor]:
    """Logits of the exits an objective attacks: exit ``k`` alone (computed alone, :func:`~neokd_bench.attacks.base.exit_logits`) or all."""
    if objective.kind == "exit":
        k = int(objective.exit)  # type: ignore[arg-type]
        return [exit_logits(model, x, k)]
    return list(model(x))


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
            generator: torch.Generator) -> torch.Tensor:
        cfg = self.config
        adv = random_start(x, cfg.eps, generator) if cfg.random_start else x.clone()
        kept = torch.zeros_like(x)
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(cfg.steps):
            adv.requires_grad_(True)
            outs = targeted_exits(model, adv, objective)
            margins = torch.stack([cw_margin(o, y, cfg.kappa) for o in outs])  # [E, N]
            # Fooled-everywhere test of the current iterate (before its step), kept at first success.
            fooled = all_fooled(outs, y) & ~done
            kept[fooled] = adv.detach()[fooled]
            done |= fooled
            if bool(done.all()):
                break
            (grad,) = torch.autograd.grad(-margins.mean(0).sum(), [adv])
            adv = project(adv.detach() + cfg.step_size * grad.sign(), x, cfg.eps)
        else:
            with torch.no_grad():
                outs = targeted_exits(model, adv, objective)
                fooled = all_fooled(outs, y) & ~done
            kept[fooled] = adv[fooled]
            done |= fooled
        kept[~done] = adv.detach()[~done]
        return kept
