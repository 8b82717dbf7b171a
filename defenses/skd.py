"""``skd``: adversarial training plus self-distillation from the last exit (the paper's "SKD" baseline).

Source: Phuong & Lampert, "Distillation-based training for multi-exit architectures", ICCV 2019 (and Li et
al., ICCV 2019), combined with adversarial training as NEO-KD describes it (Ham et al., NeurIPS 2023,
Sec. 4.1 "Baselines"; App. G, Table A4): "the prediction of the last exit for a given clean/adversarial data
is distilled to the predictions of all the previous exits for the same clean/adversarial data".

Loss, averaged over the batch::

    sum_i [CE(f_i(x), y) + CE(f_i(x_adv), y)]                                      (Eq. 4, as ``adv``)
    + weight * sum_{i in S} T^2 * [ KL(q_T(x) || p_{i,T}(x)) + KL(q_T(x_adv) || p_{i,T}(x_adv)) ]

where ``p_{i,T} = softmax(f_i / T)``, ``q_T`` is the teacher's tempered distribution (detached) and ``S`` the
student exits.

Assumptions (the paper gives neither T nor the weight):
* T = 2.5 and weight = 0.35 (docs/design.md: the values of a co-author's multi-exit self-distillation code).
* KD form: Hinton's ``T^2 * KL(teacher_T || student_T)``, KL summed over classes and averaged over the batch;
  the teacher is detached; T is fixed (Phuong & Lampert anneal T; we do not).
* The KD term is added on top of Eq. 4 with the CE terms kept at weight 1 (not a (1-w)/w convex mix).
* ``teacher`` (Table A4): ``last`` (default; the paper's SKD), a 0-based exit index, or ``ensemble``
  (the mean of every exit's tempered softmax). Students are every exit except an exit teacher; with the
  ensemble teacher every exit is a student. Clean teaches clean and adversarial teaches adversarial.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import DefenseConfig, TeacherKDDefense, ce_sum, forward_both, resolve_teacher
from .kd import kd_kl

_SOURCE = (
    "Phuong & Lampert, ICCV 2019 (self-distillation for multi-exit networks) + adversarial training; "
    "NEO-KD (Ham et al., NeurIPS 2023) Sec. 4.1 and App. G / Table A4"
)


def tempered_teacher(logits: list[Tensor], teacher: int | str, temperature: float) -> Tensor:
    """Detached teacher distribution at temperature T: one exit's, or the mean over all exits (``ensemble``)."""
    with torch.no_grad():
        if teacher == "ensemble":
            return torch.stack([F.softmax(z.detach().float() / temperature, -1) for z in logits]).mean(0)
        return F.softmax(logits[int(teacher)].detach().float() / temperature, -1)


@dataclass(frozen=True)
class SKDConfig(DefenseConfig):
    """temperature, weight: KD temperature and weight (docs/design.md: 2.5, 0.35). teacher: ``last``, a 0-based exit
    or ``ensemble`` (Table A4)."""

    temperature: float = 2.5
    weight: float = 0.35
    teacher: Any = "last"


class SKD(TeacherKDDefense):
    """Adv (Eq. 4) + last-exit self-distillation, clean->clean and adversarial->adversarial."""

    name = "skd"
    paper_temperature = 2.5
    paper_weight = 0.35
    Config = SKDConfig
    source = _SOURCE
    assumptions = (
        "SKD temperature T=2.5 and weight 0.35 are not in the paper (docs/design.md: a co-author's multi-exit code).",
        (
            "KD term = weight * T^2 * KL(teacher_T || student_T), KL summed over classes and batch-averaged; "
            "teacher detached; T fixed (no annealing)."
        ),
        "The KD term is added to Eq. 4 (CE terms keep weight 1).",
        (
            "Students: every exit except an exit teacher; all exits for the ensemble teacher (mean of tempered "
            "softmaxes). Clean teaches clean, adversarial teaches adversarial."
        ),
    )

    def students(self, num_exits: int) -> tuple[int | str, list[int]]:
        t = resolve_teacher(self.config.teacher, num_exits)
        return t, [i for i in range(num_exits) if i != t]

    def loss(
        self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.config
        clean, adv = forward_both(model, x, x_adv)
        ce_clean, ce_adv = ce_sum(clean, y), ce_sum(adv, y)
        teacher, students = self.students(len(clean))
        t = cfg.temperature
        kd = ce_clean.new_zeros(())
        for logits in (clean, adv):
            q = tempered_teacher(logits, teacher, t)
            for i in students:
                kd = kd + kd_kl(logits[i], q, t)
        loss = ce_clean + ce_adv + cfg.weight * kd
        return loss, {"ce_clean": ce_clean.detach(), "ce_adv": ce_adv.detach(), "kd": kd.detach()}

