"""``clean``: standard (non-adversarial) training of a multi-exit network, the reference point for what
adversarial training costs in clean accuracy.

Source: the usual multi-exit objective (e.g. MSDNet, Huang et al., ICLR 2018): the cross-entropy of every
exit on clean data, summed over exits and averaged over the batch. It is not a baseline of the NEO-KD
paper; the benchmark offers it as the undefended reference.

Assumptions: no adversarial examples are made; ``x_adv`` returned by :meth:`training_step` is ``x``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .base import Defense, DefenseConfig, ce_sum


@dataclass(frozen=True)
class CleanConfig(DefenseConfig):
    """The shared attack fields are kept (and recorded) but unused: clean training makes no attack."""


class Clean(Defense):
    """No defense: CE on clean examples at every exit, summed over exits, batch mean."""

    name = "clean"
    Config = CleanConfig
    source = "Standard multi-exit training (Huang et al., MSDNet, ICLR 2018); not a NEO-KD baseline"
    assumptions = ("No adversarial training: the attack fields of the config are unused.",)

    def adversarial(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor | None = None) -> Tensor:
        return x

    def loss(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor,
             index: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        ce_clean = ce_sum(list(model(x)), y)
        return ce_clean, {"ce_clean": ce_clean.detach()}
