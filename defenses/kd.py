"""Building blocks of NEO-KD (Ham et al., NeurIPS 2023, Sec. 3.2), public so that plugins can reuse them.

* :func:`neighbour_teachers` - NKD's teacher for each exit (Eq. 5): the detached mean of the clean softmax
  over the exit's neighbourhood (exits i-1, i, i+1 that exist; temperature 1).
* :func:`class_permutation` - the per-epoch random permutation of the classes used by EOKD.
* :func:`orthogonal_soft_labels` - EOKD's orthogonal labelling ``O(.)`` (Eq. 6, Figure 1b).
* :func:`soft_cross_entropy` - the soft-label cross-entropy ``l(f(x_adv), p)`` both use.
* :func:`kd_kl` - Hinton-style ``T^2 * KL(teacher_T || student_T)``, used by the SKD and ARD baselines.

Exit indices are 0-based. All teachers and soft labels are detached (they carry no gradient).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UsageError

__all__ = [
    "EOKDWarning",
    "class_permutation",
    "kd_kl",
    "neighbour_teachers",
    "neighbourhood_radius",
    "orthogonal_soft_labels",
    "orthogonal_supports",
    "soft_cross_entropy",
]


class EOKDWarning(UserWarning):
    """EOKD cannot give any exit a non-label class (floor((C-1)/L) == 0): soft labels fall back to one-hot."""


def neighbourhood_radius(neighbourhood: str | int, num_exits: int) -> int:
    """``"neighbours"`` -> 1 (NKD), ``"self"`` -> 0 (Table 7 "no ensembling"), ``"all"`` -> L (Table 7
    "ensemble all exits"), an int ``r >= 0`` -> exits ``i-r .. i+r``."""
    if neighbourhood == "neighbours":
        return 1
    if neighbourhood == "self":
        return 0
    if neighbourhood == "all":
        return max(int(num_exits), 1)
    if isinstance(neighbourhood, int) and not isinstance(neighbourhood, bool) and neighbourhood >= 0:
        return neighbourhood
    raise UsageError(
        f"neighbourhood {neighbourhood!r} is not valid; use neighbours, self, all or a radius such as 1"
    )


@torch.no_grad()
def neighbour_teachers(
    clean_logits: Sequence[Tensor], neighbourhood: str | int = "neighbours"
) -> list[Tensor]:
    """NKD teachers (paper Eq. 5): for exit i, the mean of ``softmax(clean_logits[j])`` over the exits j of
    its neighbourhood that exist. With ``"neighbours"`` that is {0,1} for the first exit, {L-2,L-1} for the
    last and {i-1,i,i+1} in between. Temperature 1; the result is detached (float32)."""
    num_exits = len(clean_logits)
    r = neighbourhood_radius(neighbourhood, num_exits)
    probs = [F.softmax(z.detach().float(), dim=-1) for z in clean_logits]
    out = []
    for i in range(num_exits):
        lo, hi = max(0, i - r), min(num_exits - 1, i + r)
        out.append(torch.stack(probs[lo : hi + 1]).mean(0))
    return out


def class_permutation(num_classes: int, generator: torch.Generator | None = None) -> Tensor:
    """A random permutation of ``0..C-1`` (CPU LongTensor), drawn once per epoch by EOKD."""
    return torch.randperm(int(num_classes), generator=generator)


_warned_k0: set[tuple[int, int]] = set()


def orthogonal_supports(y: Tensor, perm: Tensor, num_exits: int) -> Tensor:
    """Boolean masks ``(L, B, C)``: the classes exit i keeps for each sample, ``{y} U S_i``.

    docs/design.md, EOKD: remove y from the permutation; exit i takes positions ``[i*k, (i+1)*k)`` of what
    remains, with ``k = floor((C-1)/L)``; leftover classes go to no exit. If ``k == 0`` every exit keeps only
    ``{y}`` (one-hot soft labels) and an :class:`EOKDWarning` is issued once per (C, L).
    """
    num_classes = int(perm.numel())
    perm = perm.to(y.device)
    k = (num_classes - 1) // int(num_exits)
    classes = torch.arange(num_classes, device=y.device)
    label = classes.unsqueeze(0) == y.unsqueeze(1)  # (B, C)
    if k == 0:
        if (num_classes, num_exits) not in _warned_k0:
            _warned_k0.add((num_classes, num_exits))
            warnings.warn(
                f"EOKD: floor((C-1)/L) = floor({num_classes - 1}/{num_exits}) = 0, so no exit gets a non-label "
                "class; the orthogonal soft labels are one-hot on the true class",
                EOKDWarning,
                stacklevel=3,
            )
        return label.unsqueeze(0).expand(num_exits, -1, -1).clone()
    rank = torch.empty_like(perm)
    rank[perm] = torch.arange(num_classes, device=y.device)  # rank[c] = position of class c in perm
    rank_c = rank.unsqueeze(0)  # (1, C)
    rank_y = rank[y].unsqueeze(1)  # (B, 1)
    pos = rank_c - (rank_c > rank_y).long()  # position in the permutation with y removed
    owner = torch.div(pos, k, rounding_mode="floor")  # exit that owns class c (>= L: none)
    owner = torch.where(label, torch.full_like(owner, -1), owner)
    exits = torch.arange(num_exits, device=y.device).view(-1, 1, 1)
    return (owner.unsqueeze(0) == exits) | label.unsqueeze(0)


@torch.no_grad()
def orthogonal_soft_labels(clean_logits: Sequence[Tensor], y: Tensor, perm: Tensor) -> list[Tensor]:
    """EOKD soft labels ``O(f_i(x))`` (paper Eq. 6, Figure 1b): the detached clean softmax of exit i, kept
    on ``{y} U S_i`` only and renormalized to sum to 1 (float32, one ``(B, C)`` tensor per exit)."""
    num_exits = len(clean_logits)
    if num_exits == 0:
        return []
    if clean_logits[0].shape[-1] != perm.numel():
        raise UsageError(
            f"EOKD permutation has {perm.numel()} classes but the model has {clean_logits[0].shape[-1]}"
        )
    masks = orthogonal_supports(y, perm, num_exits)
    out = []
    for i, z in enumerate(clean_logits):
        p = F.softmax(z.detach().float(), dim=-1) * masks[i]
        out.append(p / p.sum(-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny))
    return out


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """Batch mean of ``-sum_c target_c * log_softmax(logits)_c`` (the paper's l(., .) with a soft label)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(target_probs.detach().float() * logp).sum(-1).mean()


def kd_kl(student_logits: Tensor, teacher_probs_T: Tensor, temperature: float) -> Tensor:
    """``T^2 * KL(teacher_T || softmax(student/T))``, summed over classes, averaged over the batch
    ("batchmean"). ``teacher_probs_T`` is the (detached) teacher distribution at temperature T."""
    t = float(temperature)
    logq = F.log_softmax(student_logits.float() / t, dim=-1)
    return F.kl_div(logq, teacher_probs_T.detach().float(), reduction="batchmean") * (t * t)
