"""``adv``: adversarial training of a multi-exit network without distillation ("Adv. w/o Distill").

Source: Hu et al., "Triple Wins", ICLR 2020, as written in NEO-KD (Ham et al., NeurIPS 2023) Eq. 4:

    L = 1/N sum_j sum_i [ CE(f_i(x_j), y_j) + CE(f_i(x_j^adv), y_j) ]

with x^adv from the max-average attack (Eq. 2; PGD-7), or the average attack (Eq. 3) for Appendix C.

Assumptions: none beyond the shared ones (see :meth:`Defense.all_assumptions`): the clean and the
adversarial term have equal weight 1, and both are summed over exits and averaged over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .base import Defense, DefenseConfig, ce_sum, forward_both


@dataclass(frozen=True)
class AdvConfig(DefenseConfig):
    """Adv. w/o Distill has only the shared attack fields (paper defaults: max-average PGD-7)."""


class Adv(Defense):
    """Eq. 4: CE on clean and adversarial examples at every exit, summed over exits, batch mean."""

    name = "adv"
    graph_safe = True  # the loss may be replayed as a CUDA graph (neokd_bench.step_graph); not inherited
    Config = AdvConfig
    source = "Hu et al., Triple Wins, ICLR 2020; NEO-KD (Ham et al., NeurIPS 2023) Eq. 4"
    assumptions = ("Clean and adversarial cross-entropies have equal weight 1 (Eq. 4).",)

    def graph_key(self) -> None:
        """No per-epoch state: a CUDA graph of the loss step is recorded once."""
        return None

    def loss(
        self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        clean, adv = forward_both(model, x, x_adv)
        ce_clean, ce_adv = ce_sum(clean, y), ce_sum(adv, y)
        loss = ce_clean + ce_adv
        return loss, {"ce_clean": ce_clean.detach(), "ce_adv": ce_adv.detach()}
