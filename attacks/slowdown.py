"""Slowdown attack (after DeepSloth, Hong et al., ICLR 2021): an L-inf attack on the *cost* of a
multi-exit network rather than on its accuracy.

It pushes every exit's softmax toward the uniform distribution, so that confidence-threshold exit
policies (max-softmax, entropy) do not let a sample leave early and it runs deeper. The loss of exit
``k`` that the attack raises is ``mean_c log softmax(z_k)_c + log C``: minus the cross-entropy between
the uniform distribution and the exit's softmax, shifted so that it is 0 at the uniform softmax and
negative elsewhere. The label is not used (DeepSloth's untargeted slowdown).

Same threat model and loop as :class:`~neokd_bench.attacks.pgd.PGD` (random start in the eps-ball,
``steps`` sign-gradient steps of ``step_size``, projection onto the eps-ball and [0, 1]); only the loss
differs. Objective ``average`` (default, DeepSloth's sum over all internal classifiers) raises the mean
of the per-exit losses; ``exit:k`` only exit ``k``'s; ``max-average`` runs one attack per exit and keeps,
per sample, the candidate whose loss averaged over all exits is largest.

Shapes: ``x`` ``[N, C, H, W]`` in [0, 1], ``y`` ``[N]`` (ignored); returns ``x_adv`` like ``x``.

Example::

    attack = neokd_bench.create_attack("slowdown", eps=0.1, step_size=0.025, steps=50)
    x_adv = attack(model, x, y)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .pgd import PGD, PGDConfig


@dataclass(frozen=True, kw_only=True)
class SlowdownConfig(PGDConfig):
    """PGD's fields; the objective defaults to ``average`` (all exits at once, as DeepSloth)."""

    objective: str = "average"


def uniformity(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample ``mean_c log softmax(logits)_c + log C`` (<= 0, 0 exactly at the uniform softmax)."""
    logp = F.log_softmax(logits.float(), dim=1)
    return logp.mean(dim=1) + math.log(logits.shape[1])


class Slowdown(PGD):
    """L-inf slowdown attack: every exit's softmax toward uniform (DeepSloth, Hong et al. 2021)."""

    name = "slowdown"
    presets = {"paper": {}, "tiny": {"steps": 3, "step_size": 0.02}}
    Config = SlowdownConfig
    config: SlowdownConfig

    def exit_loss(self, logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
        return uniformity(logits)
