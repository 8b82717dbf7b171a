"""``ard``: Adversarially Robust Distillation (Goldblum et al., AAAI 2020) adapted to a multi-exit network.

Source: Goldblum, Fowl, Feizi & Goldstein, "Adversarially Robust Distillation", AAAI 2020; its released code
(github.com/goldblum/AdversariallyRobustDistillation, ``main.py``: ``--temp 30``, ``--alpha 1.0``, loss
``alpha * T^2 * KL(student(x_adv)/T, teacher(x)/T) + (1 - alpha) * CE(student(x), y)``). NEO-KD (Ham et
al., NeurIPS 2023) Sec. 4.1: "As in [8], we distill the last output of clean data to the last output of
adversarial data"; App. G / Table A4 for other teacher exits.

Loss, averaged over the batch::

    sum_i [CE(f_i(x), y) + CE(f_i(x_adv), y)]                              (Eq. 4, as ``adv``)
    + weight * sum_{s in S} T^2 * KL(softmax(f_t(x) / T) || softmax(f_s(x_adv) / T))

What is kept from ARD and what is not:
* Kept: the distillation direction (the teacher's clean prediction -> the student's adversarial prediction),
  the KD form ``T^2 * KL`` with the teacher detached, ARD's temperature T = 30 and its KD weight
  alpha = 1 (``weight``).
* Not kept: ARD's separate, pre-trained robust teacher network (here the teacher is the model's own clean
  exit, as the NEO-KD paper describes) and ARD's ``(1 - alpha) * CE(clean)`` term, which is 0 at alpha = 1;
  instead the Eq. 4 CE terms of every exit are kept at weight 1 (without them no exit would see a label).
* KL reduction: summed over classes and averaged over the batch (the KL as ARD's paper writes it). ARD's code
  uses ``nn.KLDivLoss()``'s element-wise mean, which divides by the number of classes C as well; our weight 1
  therefore equals C times ARD's code weight. Recorded here so the choice is explicit.
* ``teacher`` (Table A4): ``last`` (default), a 0-based exit k (clean exit k teaches adversarial exit k) or
  ``ensemble`` (the mean of every exit's tempered clean softmax teaches every adversarial exit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from .base import DefenseConfig, TeacherKDDefense, ce_sum, forward_both, resolve_teacher
from .kd import kd_kl
from .skd import tempered_teacher

_SOURCE = (
    "Goldblum et al., Adversarially Robust Distillation, AAAI 2020 (code defaults T=30, alpha=1); "
    "NEO-KD (Ham et al., NeurIPS 2023) Sec. 4.1 and App. G / Table A4"
)


@dataclass(frozen=True)
class ARDConfig(DefenseConfig):
    """temperature: ARD's T (30). weight: ARD's alpha on the KD term (1). teacher: ``last``, a 0-based exit
    or ``ensemble`` (Table A4)."""

    temperature: float = 30.0
    weight: float = 1.0
    teacher: Any = "last"


class ARD(TeacherKDDefense):
    """Adv (Eq. 4) + the clean last exit teaching the adversarial last exit (ARD's KD term)."""

    name = "ard"
    paper_temperature = 30
    paper_weight = 1.0
    Config = ARDConfig
    source = _SOURCE
    assumptions = (
        "ARD teacher = the model's own clean exit (detached), not a separate pre-trained robust network.",
        (
            "ARD temperature T=30 and KD weight alpha=1 from ARD's released code; ARD's (1-alpha)*CE(clean) term "
            "vanishes at alpha=1 and is replaced by the Eq. 4 CE terms of every exit at weight 1."
        ),
        (
            "KD term = weight * T^2 * KL(teacher_T || student_T), KL summed over classes and batch-averaged "
            "(ARD's code averages over classes too, i.e. a further 1/C)."
        ),
        (
            "Exit teacher k: clean exit k teaches adversarial exit k only; ensemble teacher: the mean of all exits' "
            "tempered clean softmaxes teaches every adversarial exit."
        ),
    )

    def students(self, num_exits: int) -> tuple[int | str, list[int]]:
        t = resolve_teacher(self.config.teacher, num_exits)
        return t, (list(range(num_exits)) if t == "ensemble" else [int(t)])

    def loss(
        self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.config
        clean, adv = forward_both(model, x, x_adv)
        ce_clean, ce_adv = ce_sum(clean, y), ce_sum(adv, y)
        teacher, students = self.students(len(clean))
        q = tempered_teacher(clean, teacher, cfg.temperature)
        kd = ce_clean.new_zeros(())
        for s in students:
            kd = kd + kd_kl(adv[s], q, cfg.temperature)
        loss = ce_clean + ce_adv + cfg.weight * kd
        return loss, {"ce_clean": ce_clean.detach(), "ce_adv": ce_adv.detach(), "kd": kd.detach()}

