"""Anytime prediction (paper Sec. 4 "Inference scenarios", Result 1, Tables 1-5 and A1).

For every exit: clean and adversarial test accuracy, top-1 and (when there are more than 5 classes) top-5,
and the average over exits. Adversarial numbers are repeated over attack seeds (App. A.2: 3 seeds for
PGD-50) and reported as mean, standard deviation (sample std, ddof=1; 0 for a single seed) and every
individual value.

One pass over the data (:func:`collect_outcomes`) makes the adversarial batch once per (attack, seed) batch,
then a single forward under :func:`torch.inference_mode` gives every exit's logits; from them it keeps
compact per-sample tables (top-1/top-5 correctness, ensemble confidence/correctness for budgeted prediction),
so all later metrics are computed without running the model again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..attacks.base import attack_batch
from ..distributed import sharded_map
from .budgeted import ensemble_tables
from .policies import ensemble_probs, entropy

AttackFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class ExitOutcomes:
    """Per-sample, per-exit outcomes of one pass over a dataset; every array is (N, L)."""

    top1: np.ndarray  # bool: exit k's own top-1 prediction is right
    top5: np.ndarray | None  # bool, None when num_classes <= 5
    conf: np.ndarray  # float: max softmax of exit k alone
    ens_conf: np.ndarray  # float: max of the mean softmax of exits 0..k
    ens_correct: np.ndarray  # bool: argmax of that mean is right
    pred: np.ndarray | None = None  # int: exit k's own top-1 class (exit policies: patience)
    entropy: np.ndarray | None = None  # float: softmax entropy of exit k alone (exit policies: entropy)
    ens_entropy: np.ndarray | None = None  # float: entropy of the mean softmax of exits 0..k
    cand_top1: np.ndarray | None = None  # bool (N, C, L): a max-average attack's candidate c, exit k right

    @property
    def n(self) -> int:
        return int(self.top1.shape[0])

    @property
    def num_exits(self) -> int:
        return int(self.top1.shape[1])

    @staticmethod
    def concat(parts: Sequence[ExitOutcomes]) -> ExitOutcomes:
        def cat(name: str):
            vals = [getattr(p, name) for p in parts]
            return None if vals[0] is None else np.concatenate(vals, axis=0)

        return ExitOutcomes(**{f.name: cat(f.name) for f in fields(ExitOutcomes)})

    def subset(self, idx: np.ndarray) -> ExitOutcomes:
        return ExitOutcomes(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[idx]
                               for f in fields(ExitOutcomes)})


def outcomes_from_logits(logits: Sequence[torch.Tensor], y: torch.Tensor) -> ExitOutcomes:
    """Tables for one batch from the list of per-exit logits (shallowest first)."""
    stacked = torch.stack([lg.float() for lg in logits], dim=1)  # (N, L, C)
    num_classes = stacked.shape[2]
    y = y.to(stacked.device)
    probs = F.softmax(stacked, dim=2)
    conf = probs.max(dim=2).values
    top1 = stacked.argmax(dim=2).eq(y.view(-1, 1))
    top5 = None
    if num_classes > 5:
        top5 = stacked.topk(5, dim=2).indices.eq(y.view(-1, 1, 1)).any(dim=2)
    ens_conf, _, ens_correct = ensemble_tables(probs, y, ensemble=True)
    ens_probs = ensemble_probs(probs)
    to = lambda t: None if t is None else t.cpu().numpy()  # noqa: E731
    return ExitOutcomes(to(top1), to(top5), to(conf), to(ens_conf), to(ens_correct), pred=to(stacked.argmax(dim=2)),
                        entropy=to(entropy(probs)), ens_entropy=to(entropy(ens_probs)))


def collect_outcomes(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, device: torch.device | str,
                     batch_size: int = 256, attack: AttackFn | None = None,
                     on_batch: Callable[[int], None] | None = None, candidates: bool = False) -> ExitOutcomes:
    """Run ``model`` (in eval mode) over ``(x, y)``, optionally attacked, and return the outcome tables.

    ``attack(model, xb, yb, index=idx) -> xb_adv`` is called once per batch (it may need gradients), ``idx``
    being the samples' positions in ``x`` (:func:`~neokd_bench.attacks.base.attack_batch`); the forward that
    scores the batch runs under :func:`torch.inference_mode` and yields all exits at once. Under torchrun the
    batches are shared among the ranks and every rank gets all the tables (:func:`~neokd_bench.distributed.
    sharded_map`): the same tables as one process. ``candidates=True`` and a ``max-average`` attack of the
    package (:meth:`~neokd_bench.attacks.base.Attack.with_candidates`): ``cand_top1`` also holds, per sample,
    whether each exit is right on each candidate the attack selected from (one forward pass per candidate).
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()

    def batch(start: int) -> ExitOutcomes:
        xb = x[start:start + batch_size].to(device)
        yb = y[start:start + batch_size].to(device)
        cands = None
        if attack is not None:
            idx = torch.arange(start, start + len(yb), device=device)
            if candidates and hasattr(attack, "with_candidates"):
                xb, cands = attack.with_candidates(model, xb, yb, index=idx)
            else:
                xb = attack_batch(attack, model, xb, yb, idx)
            xb = xb.detach()
            model.eval()
        with torch.inference_mode():
            out = outcomes_from_logits(model(xb), yb)
            if cands is not None:
                out.cand_top1 = torch.stack([torch.stack([o.argmax(1).eq(yb) for o in model(c)], dim=1)
                                             for c in cands], dim=1).cpu().numpy()
        if on_batch is not None:
            on_batch(len(yb))
        return out

    try:
        parts = sharded_map(batch, range(0, len(y), batch_size))
    finally:
        model.train(was_training)
    return ExitOutcomes.concat(parts)


def _acc(table: np.ndarray) -> list[float]:
    return [float(v) for v in table.mean(axis=0)]


def accuracy_summary(out: ExitOutcomes) -> dict[str, Any]:
    """Clean-style summary of one pass: ``{"top1": {"per_exit", "avg"}, "top5": {...} | None}``."""
    res: dict[str, Any] = {}
    for name, table in (("top1", out.top1), ("top5", out.top5)):
        if table is None:
            res[name] = None
            continue
        per_exit = _acc(table)
        res[name] = {"per_exit": per_exit, "avg": float(np.mean(per_exit))}
    return res


def _std(values: np.ndarray, axis: int = 0) -> np.ndarray:
    if values.shape[axis] < 2:
        return np.zeros(np.delete(values.shape, axis))
    return values.std(axis=axis, ddof=1)


def seeded_summary(outs: Sequence[ExitOutcomes], seeds: Sequence[int]) -> dict[str, Any]:
    """Adversarial summary over attack seeds: mean, std and every seed's per-exit and average accuracy."""
    if len(outs) != len(seeds) or not outs:
        raise ValueError("one ExitOutcomes per seed is needed")
    res: dict[str, Any] = {"seeds": [int(s) for s in seeds]}
    for name in ("top1", "top5"):
        tables = [getattr(o, name) for o in outs]
        if tables[0] is None:
            res[name] = None
            continue
        per_seed = np.array([t.mean(axis=0) for t in tables])  # (S, L)
        avg = per_seed.mean(axis=1)  # (S,)
        res[name] = {
            "mean": [float(v) for v in per_seed.mean(axis=0)],
            "std": [float(v) for v in _std(per_seed)],
            "per_seed": [[float(v) for v in row] for row in per_seed],
            "avg": {"mean": float(avg.mean()), "std": float(_std(avg)), "per_seed": [float(v) for v in avg]},
        }
    return res
