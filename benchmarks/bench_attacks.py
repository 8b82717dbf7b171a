"""Benchmark: max-average PGD-7 (the training attack of NEO-KD) in the harness against the naive algorithm.

Run from the repository root (it prints figures; it is not a test)::

    python benchmarks/bench_attacks.py                      # smallcnn and msdnet_cifar100, batch 128
    python benchmarks/bench_attacks.py --models smallcnn --reps 5 --threads 2

For each model, in the same process and on the same random weights and inputs, it times:

* ``naive fp32`` - the reference algorithm kept here (Triple-Wins' ``pgd_max`` as NEO-KD describes it):
  L single attacks one after another; every step runs the FULL network forward and takes the gradient of the
  target exit's cross-entropy w.r.t. the input only (``torch.autograd.grad``); then selection with L full
  forward passes, one per candidate;
* ``harness fp32`` - ``create_attack("pgd", steps=7, objective="max-average")``: group k only runs up to exit
  k (``model(x, upto=k)``), the L groups advance in lock-step with one ``autograd.grad`` per step, and the
  selection is one forward pass over all candidates;
* ``harness bf16`` - the same with ``amp_dtype="bfloat16"`` (autocast; as for training attacks).

Beside the measured speed-up ``naive / harness`` it prints what fvcore's FLOP counts predict for skipping the
blocks deeper than the attacked exit, ``predicted = L * full / sum_k cumulative_k`` (forward FLOPs; the
cost of exit k is the cumulative count up to exit k, earlier heads included, ``neokd_bench.flops``), and,
because the naive algorithm's backward pass is already truncated by autograd (the loss of exit k does not
depend on deeper blocks), a second figure that counts the backward too, assuming an input-gradient backward
costs about one forward: ``predicted_fb = (L * full + S) / (2 * S)`` with ``S = sum_k cumulative_k``.
Times are the median of ``--reps`` repetitions after one warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import neokd_bench as nb
import torch
import torch.nn.functional as F
from neokd_bench.attacks.base import project, random_start
from neokd_bench.flops import exit_flops
from torch import nn


def naive_max_average(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float,
                      steps: int, generator: torch.Generator) -> torch.Tensor:
    """Reference: L sequential single attacks on the full network; selection by L full forward passes."""
    L = model.num_exits
    cands = []
    for k in range(L):
        adv = random_start(x, eps, generator)
        for _ in range(steps):
            adv.requires_grad_(True)
            loss = F.cross_entropy(model(adv)[k], y)  # full forward, every exit computed
            (g,) = torch.autograd.grad(loss, [adv])
            adv = project(adv.detach() + step_size * g.sign(), x, eps)
        cands.append(adv.detach())
    with torch.no_grad():
        mean_losses = torch.stack([
            torch.stack([F.cross_entropy(o, y, reduction="none") for o in model(c)]).mean(0) for c in cands])
    best = mean_losses.argmax(0)
    return torch.stack(cands)[best, torch.arange(len(x))]


def timed(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench(name: str, batch: int, reps: int, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = nb.create_model(name).eval()
    x = torch.rand(batch, *model.input_size)
    y = torch.randint(0, model.num_classes, (batch,))
    eps, step = 8 / 255, 2 / 255
    cum = exit_flops(model)
    L, full, S = model.num_exits, cum[-1], sum(cum)
    harness = nb.create_attack("pgd", eps=eps, step_size=step, steps=steps, objective="max-average", seed=0)
    harness_bf16 = nb.create_attack("pgd", eps=eps, step_size=step, steps=steps, objective="max-average", seed=0,
                                    amp_dtype="bfloat16")
    gen = torch.Generator().manual_seed(0)
    t_naive = timed(lambda: naive_max_average(model, x, y, eps=eps, step_size=step, steps=steps, generator=gen), reps)
    t_h = timed(lambda: harness(model, x, y), reps)
    t_b = timed(lambda: harness_bf16(model, x, y), reps)
    return {"exits": L, "full_mflops": full / 1e6, "sum_cum_mflops": S / 1e6, "naive_s": t_naive, "harness_s": t_h,
            "bf16_s": t_b, "predicted": L * full / S, "predicted_fb": (L * full + S) / (2 * S)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="smallcnn,msdnet_cifar100")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"PGD-{args.steps} max-average, median of {args.reps} reps")
    head = (f"{'model':<16} {'L':>2} {'naive fp32 s':>12} {'harness fp32 s':>14} {'harness bf16 s':>14} "
            f"{'measured':>8} {'predicted':>9} {'meas/pred':>9} {'pred_fb':>7} {'meas/pred_fb':>12} {'bf16 vs naive':>13}")
    print(head)
    for name in args.models.split(","):
        r = bench(name.strip(), args.batch, args.reps, args.steps)
        measured = r["naive_s"] / r["harness_s"]
        print(f"{name:<16} {r['exits']:>2} {r['naive_s']:>12.2f} {r['harness_s']:>14.2f} {r['bf16_s']:>14.2f} "
              f"{measured:>8.2f} {r['predicted']:>9.2f} {measured / r['predicted']:>9.0%} {r['predicted_fb']:>7.2f} "
              f"{measured / r['predicted_fb']:>12.0%} {r['naive_s'] / r['bf16_s']:>12.2f}x", flush=True)


if __name__ == "__main__":
    main()
