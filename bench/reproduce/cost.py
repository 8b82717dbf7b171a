"""The cost of a grid before it runs: fvcore FLOPs x forward passes / a throughput measured on the spot.

A run's work is counted in *forward passes of the whole network per image* (a backward pass counts as two):

* training: ``epochs x train images x 3 x (train_steps x A + 2)``, where ``A`` is the work of one step of the
  training attack: for max-average, one single-exit PGD per exit, each computing only up to its exit, so
  ``A`` = (sum over exits of fvcore's count of exit k's path) / (the whole network's count); for average,
  one whole pass (``A = 1``); ``+ 2`` are the clean and adversarial passes of the training step;
* evaluation: per test image, attack and attack seed, ``3 x steps x A + 1``; plus the transferability matrix,
  ``3 x steps x A`` per sample (its single-exit attacks); Table 8's extra ``eval`` adds PGD-100 and CW at
  their steps, and AutoAttack at about :data:`AUTOATTACK_PASSES` passes per image (APGD, APGD-T, FAB and
  Square's 5,000 queries; a rough figure).

The FLOPs of one pass are fvcore's count for the preset's model (:func:`neokd_bench.flops.full_forward_flops`).
The throughput is measured here: the best of 5 timed forward passes (after 2 untimed ones) of that model on
a batch of random inputs, on the device given (CPU when no GPU); the batch is the preset's, cut so that one
pass is at most :data:`MAX_BATCH_FLOPS`. On a shared, loaded machine the figure is low, and the estimate high.
Defense-specific extra work (distillation losses) is a few passes and left out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .grids import SIZES, Grid

MAX_BATCH_FLOPS = 3e9
AUTOATTACK_PASSES = 6000
NUM_CLASSES = {"mnist": 10, "fashion-mnist": 10, "cifar10": 10, "cifar100": 100, "tiny-imagenet": 200,
               "imagenet": 1000}


@dataclass(frozen=True)
class Cost:
    model: str
    flops: int  # one forward pass of one image
    train_passes: float  # per run
    eval_passes: float  # per run
    flops_per_s: float  # measured
    device: str
    batch: int

    @property
    def seconds_per_run(self) -> float:
        return (self.train_passes + self.eval_passes) * self.flops / self.flops_per_s


def passes(grid: Grid, preset, single_exits: float) -> tuple[float, float]:
    """(training, evaluation) whole-network forward passes summed over a run of ``grid`` under ``preset``;
    ``single_exits`` is the cost of one single-exit attack step on every exit, in whole passes."""
    n_train, n_test = SIZES[grid.dataset]
    n_train = min(n_train, preset.train_limit or n_train)
    ev = preset.eval
    n_test = min(n_test, ev.test_limit or n_test)
    a_train = single_exits if grid.train_attack == "max-average" else 1
    train = preset.epochs * n_train * 3 * (preset.train_steps * a_train + 2)
    per_attack = sum(single_exits if o == "max-average" else 1 for o in ev.attacks)
    evaluate = n_test * len(ev.attack_seeds) * (3 * ev.steps * per_attack + 1)
    if "transfer" in ev.metrics:
        evaluate += min(n_test, ev.transfer_limit or n_test) * single_exits * ev.steps * 3
    for attack in grid.eval_attacks:  # Table 8's `eval` (one attack seed each)
        name = attack.split(":")[0]
        steps = 100 if name == "pgd" else 50
        evaluate += n_test * (AUTOATTACK_PASSES if name == "autoattack" else 3 * steps)
    # the reference protocol's per-exit attacks on the first images (Square: one forward per query, an upper
    # bound: fooled samples leave) and the policy-pgd curve (one average-objective PGD per budget)
    n_lim = min(n_test, getattr(ev, "per_exit_limit", None) or n_test)
    for name in getattr(ev, "per_exit_attacks", ()):
        per = ev.square_queries if name == "square" else 3 * ev.apgd_steps
        evaluate += n_lim * len(ev.attack_seeds) * per * single_exits
    if getattr(ev, "budgeted_policy_pgd", False) and "budgeted" in ev.metrics:
        n_budgets = 100 if ev.policy_budgets == "all" else int(ev.policy_budgets)
        evaluate += n_test * len(ev.attack_seeds) * n_budgets * 3 * ev.steps
    return float(train), float(evaluate)


def measure(grid: Grid, device: str = "cpu") -> Cost:
    """fvcore FLOPs of the preset's model and its measured forward throughput on ``device``."""
    import neokd_bench as nb
    import torch

    from ..flops import exit_path_flops, full_forward_flops
    from ..presets import train_preset

    preset = train_preset(grid.dataset, grid.preset)
    model = nb.create_model(preset.model, num_classes=NUM_CLASSES[grid.dataset], **dict(preset.model_kwargs))
    model.eval()
    flops = full_forward_flops(model)
    single_exits = sum(exit_path_flops(model)) / flops
    model.to(device)
    batch = max(1, min(preset.batch_size, int(MAX_BATCH_FLOPS // max(flops, 1))))
    x = torch.rand(batch, *model.input_size, device=device)
    best = float("inf")
    with torch.inference_mode():
        model(x)  # warm-up (allocations, kernel selection)
        model(x)
        for _ in range(5):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            model(x)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
    train, evaluate = passes(grid, preset, single_exits)
    return Cost(preset.model, flops, train, evaluate, flops * batch / best, device, batch)
