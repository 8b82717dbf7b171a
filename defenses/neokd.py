"""``neokd``: Neighbor Exit-wise Orthogonal Knowledge Distillation (Ham et al., NeurIPS 2023), and its ablations.

Source: paper Sec. 3.2, Eq. 5-7; defaults from App. A.2; decisions on what the paper leaves open from
docs/design.md ("NEO-KD loss", "NKD", "EOKD"). Eq. 7, averaged over the batch and summed over exits:

    CE(f_i(x), y) + CE(f_i(x_adv), y) + gamma_i * (alpha * NKD_i + beta * EOKD_i)

* NKD_i (Eq. 5) = soft CE between the neighbour teacher of exit i (mean clean softmax of exits i-1, i, i+1
  that exist; temperature 1; detached) and the adversarial output of exit i
  (:func:`neokd_bench.defenses.kd.neighbour_teachers`).
* EOKD_i (Eq. 6) = soft CE between the orthogonal soft label of exit i (clean softmax of exit i kept on the
  true class plus the exit's floor((C-1)/L) classes of the epoch's permutation, renormalized; detached)
  and the adversarial output of exit i (:func:`neokd_bench.defenses.kd.orthogonal_soft_labels`).
* One adversarial batch (max-average by default, average for App. C) serves every exit.

Ablations (this class, other fields; named presets in :mod:`neokd_bench.defenses.variants`): ``nkd``
(beta=0) and ``eokd`` (alpha=0) for Table 6; ``nkd-no-ensemble`` (neighbourhood="self") and
``nkd-ensemble-all`` (neighbourhood="all") for Table 7. The Table 7 rows are NEO-KD with another NKD
neighbourhood, so EOKD stays on (beta=1) there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import UsageError
from .base import Defense, DefenseConfig, ce_sum, forward_both
from .kd import (
    class_permutation,
    neighbour_teachers,
    neighbourhood_radius,
    orthogonal_soft_labels,
    soft_cross_entropy,
)

_SOURCE = "Ham et al., NEO-KD, NeurIPS 2023, Sec. 3.2 Eq. 5-7, App. A.2; docs/design.md (NKD, EOKD)"


@dataclass(frozen=True)
class NEOKDConfig(DefenseConfig):
    """alpha: NKD weight (App. A.2: 3). beta: EOKD weight (1). gamma: per-exit KD weight (None ->
    ``presets.gamma_for(dataset, num_exits)``: [1,1,1] MNIST/CIFAR-10, [1,1,1,1.5,1.5,1.5,1.5] CIFAR-100,
    [1,1,1,1.5,1.5] Tiny-ImageNet/ImageNet). neighbourhood: NKD teacher ensemble, ``neighbours`` (Eq. 5),
    ``self`` or ``all`` (Table 7), or a radius."""

    alpha: float = 3.0
    beta: float = 1.0
    gamma: tuple[float, ...] | None = None
    neighbourhood: str | int = "neighbours"


class NEOKD(Defense):
    """NEO-KD, paper Eq. 7. See the module docstring for the exact loss."""

    name = "neokd"
    # The loss runs no host sync and reads only its arguments, the model and per-epoch state kept on the device:
    # the trainer may replay it as a CUDA graph (neokd_bench.step_graph). Not inherited.
    graph_safe = True
    Config = NEOKDConfig
    source = _SOURCE
    assumptions = (
        (
            "NKD and EOKD use the soft-label cross-entropy (teacher entropy included; same gradient as KL), "
            "temperature 1, teachers and soft labels detached (no gradient through the clean pass into them)."
        ),
        "The NKD teacher of exit i averages the clean softmax probabilities (not logits) of its neighbourhood.",
        (
            "EOKD permutation: drawn at the start of every epoch from a torch.Generator seeded by "
            "numpy SeedSequence([seed, epoch]); it is fixed within an epoch and identical on resume."
        ),
        (
            "EOKD class split: remove y from the permutation, exit i takes positions [i*k,(i+1)*k), "
            "k = floor((C-1)/L); leftover classes go to no exit; if k == 0 the soft label is one-hot (warned)."
        ),
        "gamma defaults to presets.gamma_for(dataset, num_exits) (all ones for datasets not in the paper).",
    )

    def normalize_kwargs(self, kw: dict[str, Any]) -> dict[str, Any]:
        nb = kw.get("neighbourhood")
        if isinstance(nb, str) and nb.strip().isdigit():
            kw["neighbourhood"] = int(nb)
        return kw

    def validate(self, cfg: NEOKDConfig) -> None:
        if not cfg.alpha >= 0:
            raise UsageError(f"alpha must be >= 0 (got {cfg.alpha}); the paper uses alpha=3")
        if not cfg.beta >= 0:
            raise UsageError(f"beta must be >= 0 (got {cfg.beta}); the paper uses beta=1")
        if cfg.gamma is not None and any(not g >= 0 for g in cfg.gamma):
            raise UsageError(f"gamma values must be >= 0 (got {list(cfg.gamma)})")
        neighbourhood_radius(cfg.neighbourhood, 1)  # raises UsageError on a bad value

    def resolve(self, cfg: NEOKDConfig) -> NEOKDConfig:
        from .. import presets

        assert self.num_exits is not None and self.dataset is not None
        if cfg.gamma is None:
            cfg = dataclasses.replace(cfg, gamma=presets.gamma_for(self.dataset, self.num_exits))
        if len(cfg.gamma) != self.num_exits:
            raise UsageError(
                f"gamma has {len(cfg.gamma)} values but the model has {self.num_exits} exits; "
                f"pass one value per exit, e.g. gamma={[1.0] * self.num_exits}"
            )
        return cfg

    def start_epoch(self, epoch: int) -> None:
        super().start_epoch(epoch)
        n = self.num_classes
        self._perm = None if n is None else self.permutation_for(epoch, n)
        for buf in getattr(self, "_perm_on", {}).values():  # the device copies, updated in place
            if self._perm is not None and buf.shape == self._perm.shape:
                buf.copy_(self._perm)

    def permutation_on(self, device: torch.device) -> Tensor:
        """The current epoch's permutation on ``device``: one buffer per device, made on first use and updated in
        place by :meth:`start_epoch`. So the loss makes no host-to-device copy per step, and a CUDA graph of the
        step (``neokd_bench.step_graph``) reads each epoch's permutation without being recorded again."""
        perm = self.permutation
        cache = self.__dict__.setdefault("_perm_on", {})
        buf = cache.get(device)
        if buf is None or buf.shape != perm.shape:
            buf = cache[device] = perm.to(device, copy=True)
        return buf

    def graph_key(self) -> Any:
        """Nothing per epoch is baked into a CUDA graph of the loss: the permutation is read from its device
        buffer (:meth:`permutation_on`)."""
        return None

    def permutation_for(self, epoch: int, num_classes: int) -> Tensor:
        """The EOKD class permutation of ``epoch``: a function of (seed, epoch) only."""
        state = np.random.SeedSequence([int(self.seed), int(epoch)]).generate_state(2, dtype=np.uint32)
        g = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        return class_permutation(num_classes, g)

    @property
    def permutation(self) -> Tensor:
        """The current epoch's permutation (CPU LongTensor)."""
        if self.epoch is None:
            self.start_epoch(0)
        if getattr(self, "_perm", None) is None:
            raise UsageError(
                f"defense {self.name!r}: call setup(...) before training (num_classes is unknown)"
            )
        return self._perm

    def _gamma(self, num_exits: int) -> tuple[float, ...]:
        g = self.config.gamma
        if g is None:
            raise UsageError(f"defense {self.name!r}: gamma is unresolved; call setup(dataset=...) first")
        if len(g) != num_exits:
            raise UsageError(f"gamma has {len(g)} values but the model returned {num_exits} exits")
        return g

    def loss(
        self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.config
        clean, adv = forward_both(model, x, x_adv)
        num_exits = len(clean)
        gamma = self._gamma(num_exits)
        ce_clean, ce_adv = ce_sum(clean, y), ce_sum(adv, y)
        zero = ce_clean.new_zeros(())
        nkd_w, eokd_w = zero, zero  # gamma-weighted sums over exits
        nkd_raw, eokd_raw = zero, zero
        if cfg.alpha > 0:
            teachers = neighbour_teachers(clean, cfg.neighbourhood)
            terms = [soft_cross_entropy(a, t) for a, t in zip(adv, teachers)]
            nkd_w = sum(g * v for g, v in zip(gamma, terms))
            nkd_raw = torch.stack(terms).sum()
        if cfg.beta > 0:
            labels = orthogonal_soft_labels(clean, y, self.permutation_on(y.device))
            terms = [soft_cross_entropy(a, t) for a, t in zip(adv, labels)]
            eokd_w = sum(g * v for g, v in zip(gamma, terms))
            eokd_raw = torch.stack(terms).sum()
        loss = ce_clean + ce_adv + cfg.alpha * nkd_w + cfg.beta * eokd_w
        parts = {"ce_clean": ce_clean.detach(), "ce_adv": ce_adv.detach()}
        if cfg.alpha > 0:
            parts["nkd"] = nkd_raw.detach()
        if cfg.beta > 0:
            parts["eokd"] = eokd_raw.detach()
        return loss, parts

