"""Exit-to-exit adversarial transferability (paper Result 3, Fig. 4; App. A.2).

As in the paper (after its reference [29]):

1. keep the clean test samples that *every* exit classifies correctly (the first ``limit`` of them);
2. for each target exit ``i``, make adversarial examples with a PGD single-exit attack on exit ``i``
   (objective ``exit:i``; PGD-50 with the dataset's eps and step, e.g. 8/255 and 2/255 on CIFAR);
3. cell ``(i, j)`` is the attack success rate at exit ``j``: the fraction of those examples exit ``j``
   misclassifies. The summary is the mean of the off-diagonal cells ("Avg. w/o Diag." in Fig. 4).

The diagonal is each single-exit attack's own success rate at the exit it targets. One attack seed is used
(the paper does not repeat this over seeds); it is recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..attacks.base import attack_batch
from ..distributed import sharded_map

AttackFactory = Callable[[int], Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]]


def all_exits_correct(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, device: torch.device | str,
                      batch_size: int = 256) -> np.ndarray:
    """Boolean mask of the samples every exit classifies correctly (clean, eval mode, no autograd)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    masks = []
    try:
        with torch.inference_mode():
            for s in range(0, len(y), batch_size):
                xb, yb = x[s:s + batch_size].to(device), y[s:s + batch_size].to(device)
                preds = torch.stack([lg.argmax(1) for lg in model(xb)], dim=1)
                masks.append(preds.eq(yb.view(-1, 1)).all(dim=1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(masks).numpy() if masks else np.zeros(0, dtype=bool)


def success_rates(model: torch.nn.Module, x_adv: torch.Tensor, y: torch.Tensor, *, device: torch.device | str,
                  batch_size: int = 256) -> np.ndarray:
    """Fraction of ``x_adv`` each exit misclassifies (one forward per batch gives all exits)."""
    device = torch.device(device)
    wrong = None
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for s in range(0, len(y), batch_size):
                xb, yb = x_adv[s:s + batch_size].to(device), y[s:s + batch_size].to(device)
                w = torch.stack([lg.argmax(1).ne(yb) for lg in model(xb)], dim=1).sum(0).cpu()
                wrong = w if wrong is None else wrong + w
    finally:
        model.train(was_training)
    return (wrong.double() / len(y)).numpy()


def offdiag_mean(matrix) -> float | None:
    """Mean of the off-diagonal cells (None for a 1x1 matrix)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape[0] < 2:
        return None
    mask = ~np.eye(m.shape[0], dtype=bool)
    return float(m[mask].mean())


def transfer_matrix(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, attack_for_exit: AttackFactory,
                    device: torch.device | str, limit: int | None = 1000, batch_size: int = 256,
                    on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """The L x L transferability matrix on the samples every exit gets right (up to ``limit``).

    ``attack_for_exit(i)`` builds the single-exit attack on exit ``i`` (0-based). Returns
    ``{"n", "limit", "matrix", "offdiag_mean", "wall_s"}``; ``matrix`` is all zeros (and n = 0) when no
    sample is classified correctly by every exit.
    """
    t0 = time.perf_counter()
    num_exits = int(model.num_exits)
    mask = all_exits_correct(model, x, y, device=device, batch_size=batch_size)
    idx = np.flatnonzero(mask)
    if limit is not None:
        idx = idx[:limit]
    xs, ys = x[torch.as_tensor(idx, dtype=torch.long)], y[torch.as_tensor(idx, dtype=torch.long)]
    matrix = np.zeros((num_exits, num_exits))
    if len(idx):
        was_training = model.training
        model.eval()
        try:
            for i in range(num_exits):
                attack = attack_for_exit(i)

                def adversarial(s: int, attack=attack) -> torch.Tensor:
                    xb = xs[s:s + batch_size].to(torch.device(device))
                    yb = ys[s:s + batch_size].to(torch.device(device))
                    index = torch.as_tensor(idx[s:s + batch_size], dtype=torch.long)  # positions in x
                    adv = attack_batch(attack, model, xb, yb, index).detach().cpu()
                    model.eval()
                    if on_batch is not None:
                        on_batch(len(yb))
                    return adv

                advs = sharded_map(adversarial, range(0, len(ys), batch_size))  # torchrun: shared among ranks
                matrix[i] = success_rates(model, torch.cat(advs), ys, device=device, batch_size=batch_size)
        finally:
            model.train(was_training)
    return {
        "n": int(len(idx)),
        "limit": None if limit is None else int(limit),
        "matrix": [[float(v) for v in row] for row in matrix],
        "offdiag_mean": offdiag_mean(matrix) if len(idx) else None,
        "wall_s": time.perf_counter() - t0,
    }
