"""``pgd-te`` and ``trades-te``: Temporal Ensembling Adversarial Training (TEAT) adapted to multi-exit networks.

Source: Dong, Xu, Yang, Pang, Deng, Su & Zhu, "Exploring Memorization in Adversarial Training", ICLR 2022
(arXiv:2106.01606); settings from its released code (github.com/dongyp13/memorization-AT, ``train_te.py``
and ``loss.py``); the multi-exit adaptation from NEO-KD (Ham et al., NeurIPS 2023) App. F: "we modify TEAT
to generate adversarial examples that maximizes the average loss of all exits".

TEAT keeps, for every training sample j, a temporal ensemble (an exponential moving average) of the model's
predictions ``s_j`` and adds ``w(t) * mean_c (p_c - s_{j,c})^2`` to both the attack objective and the
training loss. Here there is one ensemble per sample *and per exit* (a buffer ``[N_train, L, C]``), and:

* **PGD-TE**, exit i:  attack loss ``CE(f_i(x'), y) + w * MSE(softmax f_i(x'), s_{j,i})``;
  training loss ``sum_i [CE(f_i(x_adv), y) + w * MSE(softmax f_i(x_adv), s_{j,i})]`` (adversarial only, as
  in TEAT's PGD-AT base: no clean cross-entropy).
* **TRADES-TE**, exit i:  attack loss ``beta * KL(softmax f_i(x) || softmax f_i(x')) + w * MSE(softmax
  f_i(x'), s_{j,i})``, started at ``x + 0.001 * N(0, 1)`` as in TRADES;
  training loss ``sum_i [CE(f_i(x), y) + beta * KL(softmax f_i(x) || softmax f_i(x_adv)) + w * MSE(softmax
  f_i(x), s_{j,i})]`` (KL summed over classes, batch mean; gradient flows through both sides, as in TRADES).
* The attack objective over exits is ``train_attack``: ``average`` (default; App. F: the mean of the
  per-exit attack losses), ``max-average`` (one single-exit attack per exit on its own attack loss, then per
  sample the candidate with the largest mean attack loss) or ``exit:K``. PGD-7 with the dataset's eps/step.

TEAT settings (released code): EMA momentum 0.9 (``--te-alpha``); weight 300 (``--reg-weight``) ramped in
with TEAT's sigmoid schedule ``exp(-5 (1 - (t - t0)/(t1 - t0))^2)`` from epoch t0 = 90 to t1 = 150 (1-based
epochs; TEAT trains 200 epochs with lr decays at 100 and 150); TRADES beta 6. The ensemble starts at zero,
is updated only from epoch t0 on, with the softmax of the clean input computed in ``attack_mode`` (eval),
before the attack, and is renormalized to sum to 1 when read. Before t0 the defenses are plain multi-exit
PGD-AT / TRADES.

What the trainer must pass: ``training_step(model, x, y, index=...)`` with the dataset indices of the batch
(``neokd_bench.trainer`` does), and it must checkpoint :meth:`state_dict` (the ensemble buffer) for an exact
resume. Without ``index``, training fails with a one-line error once the ensemble is active. Under torchrun
each step's ensemble update is gathered over the ranks, so every rank keeps the whole buffer (as one process).
Memory: the buffer holds ``N_train * L * C`` float32 values on the model's device (CIFAR-100, 7 exits:
140 MB).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attacks.base import autocast, model_mode
from ..attacks.pgd import PGD
from ..distributed import gather_rows
from ..errors import UsageError
from .base import Defense, DefenseConfig

_SOURCE = (
    "Dong et al., Exploring Memorization in Adversarial Training, ICLR 2022 (TEAT; settings from "
    "github.com/dongyp13/memorization-AT); multi-exit adaptation per NEO-KD (Ham et al., NeurIPS 2023) "
    "App. F / Table A3"
)


def sigmoid_rampup(epoch1: int, start: int, end: int) -> float:
    """TEAT's ramp (after Laine & Aila 2017): 0 before ``start``, 1 after ``end``, else
    ``exp(-5 (1 - (epoch1 - start) / (end - start))^2)``; ``epoch1`` counts from 1."""
    if epoch1 < start:
        return 0.0
    if epoch1 > end or end <= start:
        return 1.0
    phase = 1.0 - (epoch1 - start) / (end - start)
    return math.exp(-5.0 * phase * phase)


@dataclass(frozen=True)
class TEATConfig(DefenseConfig):
    """te_momentum: EMA momentum (0.9). te_weight: weight of the TE term (300). te_start_epoch, te_end_epoch:
    1-based epochs where the ramp starts and ends (90, 150). beta: TRADES weight (6; TRADES-TE only)."""

    train_attack: str = "average"
    te_momentum: float = 0.9
    te_weight: float = 300.0
    te_start_epoch: int = 90
    te_end_epoch: int = 150
    beta: float = 6.0



class _TEATAttack(PGD):
    """The shared PGD with TEAT's attack loss, which differs per exit: ``exit_loss(logits, y, k)`` is bound
    per training batch (it reads that batch's clean logits and ensemble targets). Not registered."""

    def __init__(self, exit_loss: Callable[[Tensor, Tensor, int], Tensor], **config: Any) -> None:
        super().__init__(**config)
        self._exit_loss = exit_loss

    def exit_loss(self, logits: Tensor, y: Tensor, k: int) -> Tensor:
        return self._exit_loss(logits, y, k)

class _TEAT(Defense):
    """Shared machinery of PGD-TE and TRADES-TE (see the module docstring)."""

    Config = TEATConfig
    source = _SOURCE
    trades: bool = False
    assumptions = (
        (
            "One temporal ensemble per training sample and per exit (buffer [N_train, L, C]); each exit is "
            "regularized toward its own ensemble."
        ),
        (
            "TEAT settings from its released code: momentum 0.9, weight 300, sigmoid ramp from epoch 90 to 150 "
            "(1-based), TRADES beta 6; the ensemble starts at zero and is renormalized when read."
        ),
        (
            "Ensemble update: softmax of the clean input in attack_mode (eval), before the attack, from "
            "te_start_epoch on; the attack and the loss read the updated value."
        ),
        (
            "Multi-exit attack (App. F): PGD on the mean over exits of the per-exit TEAT attack loss (train_attack="
            "average, default); max-average selects per sample by the mean attack loss."
        ),
        (
            "MSE term = mean over classes of the squared difference, batch mean (TEAT's .mean()), per exit, summed "
            "over exits."
        ),
    )

    common_assumptions = (
        (
            "Training adversarial examples: the shared PGD (neokd_bench.attacks.pgd) with TEAT's per-exit attack "
            "loss in place of the cross-entropy (also in max-average selection): PGD-TE starts uniformly in the "
            "eps-ball, TRADES-TE at x + 0.001*N(0,1); sign-gradient steps, projection and [0,1] clamping, in "
            "attack_mode (eval), mode restored; the start is seeded from torch's global RNG, which the trainer "
            "seeds per epoch."
        ),
        "Losses are averaged over the batch and summed over exits.",
        "Forward passes for the loss run in train mode; PGD-TE uses only the adversarial pass (as TEAT's PGD-AT).",
    )

    def __init__(self, **config_kwargs: Any) -> None:
        super().__init__(**config_kwargs)
        self.soft_labels: Tensor | None = None  # [N_train, L, C] float32

    def validate(self, cfg: TEATConfig) -> None:
        if not 0.0 <= cfg.te_momentum < 1.0:
            raise UsageError(f"te_momentum must be in [0, 1) (got {cfg.te_momentum}); TEAT uses 0.9")
        if not cfg.te_weight >= 0:
            raise UsageError(f"te_weight must be >= 0 (got {cfg.te_weight}); TEAT uses 300")
        if not isinstance(cfg.te_start_epoch, int) or cfg.te_start_epoch < 1:
            raise UsageError(f"te_start_epoch must be an integer >= 1 (1-based; got {cfg.te_start_epoch!r})")
        if not isinstance(cfg.te_end_epoch, int) or cfg.te_end_epoch < cfg.te_start_epoch:
            raise UsageError(f"te_end_epoch must be an integer >= te_start_epoch (got {cfg.te_end_epoch!r})")
        if not cfg.beta >= 0:
            raise UsageError(f"beta must be >= 0 (got {cfg.beta}); TRADES-TE uses beta=6")

    # -- schedule ----------------------------------------------------------------------------------
    @property
    def te_active(self) -> bool:
        """True from ``te_start_epoch`` (1-based) on: the ensemble is updated and the TE term is on."""
        epoch1 = (self.epoch or 0) + 1
        return epoch1 >= self.config.te_start_epoch and self.config.te_weight > 0

    @property
    def te_weight(self) -> float:
        if not self.te_active:
            return 0.0
        cfg = self.config
        return cfg.te_weight * sigmoid_rampup((self.epoch or 0) + 1, cfg.te_start_epoch, cfg.te_end_epoch)

    # -- per-run state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {} if self.soft_labels is None else {"soft_labels": self.soft_labels.detach().cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        t = state.get("soft_labels") if state else None
        self.soft_labels = None if t is None else t.float().clone()

    def _buffer(self, index: Tensor, num_exits: int, num_classes: int, device: torch.device) -> Tensor:
        need = int(index.max()) + 1
        buf = self.soft_labels
        if buf is not None and buf.shape[1:] != (num_exits, num_classes):
            raise UsageError(
                f"{self.name}: the ensemble buffer is for {tuple(buf.shape[1:])} (exits, classes), "
                f"the model has ({num_exits}, {num_classes}); use a fresh run"
            )
        if buf is None:
            buf = torch.zeros(need, num_exits, num_classes, device=device)
        elif buf.device != device:
            buf = buf.to(device)
        if buf.shape[0] < need:
            buf = torch.cat([buf, buf.new_zeros(need - buf.shape[0], num_exits, num_classes)])
        self.soft_labels = buf
        return buf

    def _check_index(self, index: Tensor | None, n: int) -> Tensor:
        if index is None:
            raise UsageError(
                f"defense {self.name!r} keeps a per-sample ensemble and needs the dataset indices; "
                "call training_step(model, x, y, index=indices)"
            )
        index = torch.as_tensor(index).long().view(-1)
        if index.numel() != n or int(index.min()) < 0:
            raise UsageError(f"{self.name}: index must hold one non-negative dataset index per sample")
        return index

    @torch.no_grad()
    def update_ensemble(self, clean_logits: list[Tensor], index: Tensor) -> None:
        """``s_j <- m * s_j + (1 - m) * softmax(f(x_j))`` for every exit (TEAT Eq., momentum m)."""
        probs = torch.stack([F.softmax(z.float(), -1) for z in clean_logits], 1)  # [B, L, C]
        probs, index = gather_rows(probs, index.to(probs.device))  # torchrun: every rank's samples
        buf = self._buffer(index, probs.shape[1], probs.shape[2], probs.device)
        idx = index.to(buf.device)
        m = self.config.te_momentum
        buf[idx] = m * buf[idx] + (1.0 - m) * probs

    def targets(self, index: Tensor, device: torch.device) -> Tensor:
        """The batch's ensemble targets ``[B, L, C]``, each renormalized to sum to 1."""
        assert self.soft_labels is not None
        s = self.soft_labels[index.to(self.soft_labels.device)].to(device)
        return s / s.sum(-1, keepdim=True).clamp_min(torch.finfo(s.dtype).tiny)

    # -- attack ----------------------------------------------------------------------------------------
    def attack_loss(self, logits: Tensor, k: int, y: Tensor, ctx: dict[str, Any]) -> Tensor:
        """Per-sample attack loss ``[B]`` of exit ``k`` (larger is better for the attacker)."""
        raise NotImplementedError

    def adversarial(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor | None = None) -> Tensor:
        """The shared PGD (:class:`~neokd_bench.attacks.pgd.PGD`) on TEAT's per-exit attack loss, objective
        ``train_attack``, started as TEAT's base method starts (TRADES: ``x + 0.001 N(0, 1)``)."""
        cfg = self.config
        options = self.attack_options(seed=self.draw_seed())  # checks that eps and step_size are resolved
        x, y = x.detach(), y.detach()
        with model_mode(model, cfg.attack_mode), torch.no_grad(), autocast(x.device, cfg.attack_amp):
            clean = [z.float() for z in model(x)]
        ctx: dict[str, Any] = {"clean": clean, "w": self.te_weight}
        if self.te_active:
            idx = self._check_index(index, x.shape[0])
            self.update_ensemble(clean, idx)
            ctx["targets"] = self.targets(idx, x.device)
        attack = _TEATAttack(lambda logits, y_, k: self.attack_loss(logits, k, y_, ctx),
                             start="trades" if self.trades else "uniform", **options)
        return attack(model, x, y, index=self.start_keys(index))

    @staticmethod
    def mse(logits: Tensor, target: Tensor) -> Tensor:
        """Per-sample mean over classes of ``(softmax(logits) - target)^2``."""
        return (F.softmax(logits.float(), -1) - target).pow(2).mean(-1)


class PGDTE(_TEAT):
    """PGD-TE (TEAT on PGD-AT), multi-exit: adversarial CE + TE term at every exit (module docstring)."""

    name = "pgd-te"

    def attack_loss(self, logits: Tensor, k: int, y: Tensor, ctx: dict[str, Any]) -> Tensor:
        loss = F.cross_entropy(logits.float(), y, reduction="none")
        if "targets" in ctx:
            loss = loss + ctx["w"] * self.mse(logits, ctx["targets"][:, k])
        return loss

    def loss(
        self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        adv = list(model(x_adv))
        ce_adv = torch.stack([F.cross_entropy(z.float(), y) for z in adv]).sum()
        te = ce_adv.new_zeros(())
        if self.te_active:
            tg = self.targets(self._check_index(index, x.shape[0]), x.device)
            te = torch.stack([self.mse(z, tg[:, k]).mean() for k, z in enumerate(adv)]).sum()
        loss = ce_adv + self.te_weight * te
        return loss, {"ce_adv": ce_adv.detach(), "te": te.detach()}


class TRADESTE(_TEAT):
    """TRADES-TE (TEAT on TRADES), multi-exit: clean CE + beta * KL + TE term at every exit (module docstring)."""

    name = "trades-te"
    trades = True

    def attack_loss(self, logits: Tensor, k: int, y: Tensor, ctx: dict[str, Any]) -> Tensor:
        p_clean = F.softmax(ctx["clean"][k], -1)
        kl = F.kl_div(F.log_softmax(logits.float(), -1), p_clean, reduction="none").sum(-1)
        loss = self.config.beta * kl
        if "targets" in ctx:
            loss = loss + ctx["w"] * self.mse(logits, ctx["targets"][:, k])
        return loss

    def loss(
        self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        clean = list(model(x))
        adv = list(model(x_adv))
        ce_clean = torch.stack([F.cross_entropy(z.float(), y) for z in clean]).sum()
        kl = torch.stack(
            [
                F.kl_div(F.log_softmax(a.float(), -1), F.softmax(c.float(), -1), reduction="batchmean")
                for c, a in zip(clean, adv)
            ]
        ).sum()
        te = ce_clean.new_zeros(())
        if self.te_active:
            tg = self.targets(self._check_index(index, x.shape[0]), x.device)
            te = torch.stack([self.mse(z, tg[:, k]).mean() for k, z in enumerate(clean)]).sum()
        loss = ce_clean + self.config.beta * kl + self.te_weight * te
        return loss, {"ce_clean": ce_clean.detach(), "kl": kl.detach(), "te": te.detach()}
