"""``alp``: adversarial logit pairing at every exit of a multi-exit network.

Source: Kannan, Kurakin and Goodfellow, "Adversarial Logit Pairing", arXiv:1803.06373 (2018), adapted to
multi-exit networks for this example: the pairing term is applied at every exit.

    L = 1/N sum_j sum_i [ CE(f_i(x_j), y_j) + CE(f_i(x_j^adv), y_j) + weight * ||f_i(x_j^adv) - f_i(x_j)||^2 / C ]

with x^adv from the shared training attack (max-average PGD-7 by default) and C the number of classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from neokd_bench.defenses.base import Defense, DefenseConfig, ce_sum, forward_both
from torch import Tensor, nn


@dataclass(frozen=True)
class ALPConfig(DefenseConfig):
    weight: float = 0.5  # the pairing weight (Kannan et al. use 0.5 on ImageNet)


class ALP(Defense):
    """Adversarial training plus a squared-L2 pairing of clean and adversarial logits at every exit."""

    name = "alp"
    Config = ALPConfig
    source = "Kannan et al., Adversarial Logit Pairing, arXiv:1803.06373 (2018); multi-exit adaptation"
    assumptions = (
        ("The pairing term is the squared L2 distance between clean and adversarial logits divided by the "
         "number of classes, batch mean, applied at every exit and summed over exits."),
        "The clean logits in the pairing term are not detached (both sides are pulled together).",
    )

    def loss(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, index: Tensor | None = None
             ) -> tuple[Tensor, dict[str, Tensor]]:
        clean, adv = forward_both(model, x, x_adv)
        ce_clean, ce_adv = ce_sum(clean, y), ce_sum(adv, y)
        pairing = torch.stack([(a.float() - c.float()).pow(2).mean() for c, a in zip(clean, adv)]).sum()
        total = ce_clean + ce_adv + self.config.weight * pairing
        # The trainer records the total as "loss" itself: a part never uses that key.
        return total, {"ce_clean": ce_clean.detach(), "ce_adv": ce_adv.detach(), "pairing": pairing.detach()}
