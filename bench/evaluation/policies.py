"""Exit policies: where a deployed multi-exit network lets a sample leave.

A policy turns the outputs of every exit into a per-exit *score* (higher means readier to leave); a
sample leaves at the first exit whose score is ``>=`` that exit's threshold, and the last exit takes
every sample left (:func:`neokd_bench.evaluation.budgeted.exit_indices`). Each policy's thresholds are
calibrated on validation scores only, by the App. A.3 allocation procedure
(:func:`~neokd_bench.evaluation.budgeted.thresholds_for_allocation`) applied to that policy's own score:
an allocation of validation samples to exits gives one threshold per exit. :meth:`ExitPolicy.calibrate`
takes validation scores and an allocation and nothing else.

Registered policies (entry-point group ``neokd_bench.policies``):

* ``max-softmax`` - today's budgeted evaluation (MSDNet, NEO-KD App. A.3): the score is the maximum of
  the prediction's softmax (with the ensemble strategy, the mean softmax of exits ``0..k``);
* ``entropy`` - Triple-Wins / BranchyNet: the score is minus the entropy of the prediction's softmax, so
  "entropy at most e" is "score at least -e";
* ``patience`` - PABEE (Zhou et al. 2020): a sample leaves at exit ``k`` when the last ``t`` exits' own
  top-1 predictions agree. The score at exit ``k`` is the number of consecutive exits ending at ``k`` whose
  predictions agree (1 at exit 0), *plus a tie-break*: ``TIE_BREAK`` (0.5) times the prediction's maximum
  softmax (the ensemble's with the ensemble strategy), a number in (0, 0.5]. Run lengths are integers and
  tie heavily (every sample has run length 1 at exit 0), so without a tie-break no threshold could let
  exactly ``n_k`` validation samples leave; with it, samples are ordered by run length first and by
  confidence among equal run lengths, and the App. A.3 rule meets every allocation exactly (up to exact
  ties of confidence). A threshold ``r + c`` (``r`` integer, ``0 <= c < 1``) means "leave when the last
  ``r + 1`` exits agree, or the last ``r`` agree and ``TIE_BREAK * confidence >= c``". PABEE's single
  patience ``p`` is the integer threshold ``p + 1`` at every exit (the tie-break never reaches 1).

Every policy also has a differentiable surrogate of its score (:meth:`ExitPolicy.soft_scores`, on
softmax probabilities), which the adaptive attack ``policy-pgd`` uses. For ``patience`` the agreement of
exits ``k-1`` and ``k`` is relaxed to the inner product of their softmax vectors, and the run length to
``r_k = 1 + a_k * r_{k-1}`` (:func:`relaxed_run_lengths`); the tie-break term is smooth already.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from ..registry import POLICIES
from .budgeted import exit_indices, thresholds_for_allocation

#: Weight of the confidence that breaks ties between equal run lengths in the ``patience`` score (< 1).
TIE_BREAK = 0.5


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Softmax entropy (nats) over the last dimension."""
    return -(p * p.clamp_min(1e-12).log()).sum(-1)


class ExitPolicy:
    """Base: scores from outcome tables, thresholds from validation scores, exits from scores."""

    name: ClassVar[str] = "policy"

    def scores(self, outcomes: Any, ensemble: bool = True) -> np.ndarray:
        """Per-sample, per-exit score ``(N, L)`` from an :class:`~neokd_bench.evaluation.anytime.ExitOutcomes`."""
        raise NotImplementedError

    def soft_scores(self, probs: torch.Tensor, ensemble: bool = True) -> torch.Tensor:
        """Differentiable surrogate of :meth:`scores` from softmax probabilities ``(N, L, C)``."""
        raise NotImplementedError

    def hard_scores(self, probs: torch.Tensor, ensemble: bool = True) -> torch.Tensor:
        """:meth:`scores` from softmax probabilities ``(N, L, C)`` (torch). Default: :meth:`soft_scores`,
        which is exact for scores that are smooth functions of the softmax."""
        return self.soft_scores(probs, ensemble)

    def calibrate(self, val_scores: np.ndarray, allocation: Sequence[int]) -> np.ndarray:
        """Thresholds (L,) from validation scores only (App. A.3 allocation on this policy's score)."""
        return thresholds_for_allocation(val_scores, allocation)

    def exits(self, scores: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
        """0-based exit of each sample: the first ``k`` with ``scores[:, k] >= thresholds[k]``."""
        return exit_indices(scores, thresholds)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "doc": (type(self).__doc__ or "").strip().splitlines()[0]}


def ensemble_probs(probs: torch.Tensor, ensemble: bool = True) -> torch.Tensor:
    """``(N, L, C)``: with ``ensemble``, exit ``k`` holds the mean softmax of exits ``0..k``."""
    if not ensemble:
        return probs
    counts = torch.arange(1, probs.shape[1] + 1, dtype=probs.dtype, device=probs.device).view(1, -1, 1)
    return probs.cumsum(dim=1) / counts


class MaxSoftmax(ExitPolicy):
    """Leave when the prediction's maximum softmax reaches the threshold (MSDNet; NEO-KD App. A.3)."""

    name = "max-softmax"

    def scores(self, outcomes: Any, ensemble: bool = True) -> np.ndarray:
        return np.asarray(outcomes.ens_conf if ensemble else outcomes.conf, dtype=np.float64)

    def soft_scores(self, probs: torch.Tensor, ensemble: bool = True) -> torch.Tensor:
        return ensemble_probs(probs, ensemble).max(dim=2).values


class Entropy(ExitPolicy):
    """Leave when the prediction's softmax entropy falls to the threshold (score = minus the entropy)."""

    name = "entropy"

    def scores(self, outcomes: Any, ensemble: bool = True) -> np.ndarray:
        return -np.asarray(outcomes.ens_entropy if ensemble else outcomes.entropy, dtype=np.float64)

    def soft_scores(self, probs: torch.Tensor, ensemble: bool = True) -> torch.Tensor:
        return -entropy(ensemble_probs(probs, ensemble))


class Patience(ExitPolicy):
    """Leave when the last t exits' own top-1 predictions agree (PABEE; score = agreeing run length, ties
    broken by confidence)."""

    name = "patience"

    def scores(self, outcomes: Any, ensemble: bool = True) -> np.ndarray:
        conf = np.asarray(outcomes.ens_conf if ensemble else outcomes.conf, dtype=np.float64)
        return run_lengths(outcomes.pred) + TIE_BREAK * conf

    def soft_scores(self, probs: torch.Tensor, ensemble: bool = True) -> torch.Tensor:
        return relaxed_run_lengths(probs) + TIE_BREAK * ensemble_probs(probs, ensemble).max(dim=2).values

    def hard_scores(self, probs: torch.Tensor, ensemble: bool = True) -> torch.Tensor:
        onehot = torch.nn.functional.one_hot(probs.argmax(dim=2), probs.shape[2]).to(probs.dtype)
        # with one-hot rows the relaxed run length is the exact one
        return relaxed_run_lengths(onehot) + TIE_BREAK * ensemble_probs(probs, ensemble).max(dim=2).values


def relaxed_run_lengths(probs: torch.Tensor) -> torch.Tensor:
    """``(N, L)``: ``r_0 = 1``, ``r_k = 1 + <p_k, p_{k-1}> * r_{k-1}`` from softmax rows ``(N, L, C)``; the
    exact run length of agreeing top-1 predictions when the rows are one-hot."""
    runs = [torch.ones_like(probs[:, 0, 0])]
    for k in range(1, probs.shape[1]):
        runs.append(1 + (probs[:, k] * probs[:, k - 1]).sum(-1) * runs[-1])
    return torch.stack(runs, dim=1)


def run_lengths(pred: np.ndarray) -> np.ndarray:
    """``(N, L)`` int: how many consecutive exits ending at ``k`` share exit ``k``'s prediction."""
    pred = np.asarray(pred)
    runs = np.ones(pred.shape, dtype=np.int64)
    for k in range(1, pred.shape[1]):
        runs[:, k] = np.where(pred[:, k] == pred[:, k - 1], runs[:, k - 1] + 1, 1)
    return runs


def create_policy(name: str) -> ExitPolicy:
    """The registered policy ``name`` (``max-softmax``, ``entropy``, ``patience`` or a plugin's)."""
    return POLICIES.get(name)()


def list_policies(pattern: str = "*") -> list[str]:
    return POLICIES.names(pattern)
