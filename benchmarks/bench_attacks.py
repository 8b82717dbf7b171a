"""Benchmark: max-average PGD-7 (the training attack of NEO-KD) in the harness against the naive algorithm.

Run from the repository root (it prints figures; it is not a test)::

    python benchmarks/bench_attacks.py                      # smallcnn and msdnet_cifar100, batch 128
    python benchmarks/bench_attacks.py --models smallcnn --reps 5 --threads 2

For each model, in the same process and on the same random weights and inputs, it times:

* ``naive fp32`` - the reference algorithm kept here (Triple-Wins' ``pgd_max`` as NEO-KD describes it):
  L single attacks one after another; every step runs the FULL network forward and takes the gradient of the
  target exit's cross-entropy w.r.t. the input only (``torch.autograd.grad``); then selection with L full
  forward passes, one per candidate;
* ``harness fp32`` - ``create_attack("pgd", steps=7, objective="max-average")``: group k computes exit k
  alone (``model(x, upto=k, last_only=True)``: no deeper block, no earlier head), the L groups advance in lock-step
  with one ``autograd.grad`` per step, and the selection is a full forward per candidate group (on CPU;
  one pass over all candidates on a GPU);
* ``harness bf16`` - the same with ``amp_dtype="bfloat16"`` (autocast; as for training attacks);
* ``+fold`` - the same two with ``fold_bn=True``: the attack runs on a copy of the model with each
  BatchNorm folded into the convolution before it (eval mode; the copy is made inside every timed call).

Beside the measured speed-up ``naive / harness`` it prints the speed-up that fvcore's FLOP counts predict
for computing only what each single attack needs. The FLOP model counts what each algorithm computes:
with ``F`` the full forward (every exit and head), ``P_k`` exit ``k`` alone (blocks up to exit ``k`` and
head ``k``: ``neokd_bench.flops.exit_path_flops``), ``T`` steps and an input-gradient backward that costs
``beta`` times the forward FLOPs of the path it differentiates (autograd only differentiates the path to
the attacked exit, in both algorithms)::

    naive   = T * sum_k (F + beta * P_k) + L * F         (selection: L full forwards)
    harness = T * (1 + beta) * sum_k P_k + L * F         (selection: one full forward per candidate)

``predicted`` uses ``beta = 2``, the usual "backward costs two forwards" count (it gives the issue's
1.25x for an even-cost 7-exit CNN); ``pred_b1`` uses ``beta = 1``, the strict count of a backward that
computes no weight gradients. Timed calls are interleaved (naive, harness, bf16, naive, ...) and each
figure is the median of its repetitions after one warm-up; a model runs at least ``--reps`` repetitions
and at least ``--min-seconds`` of naive time.
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
from neokd_bench.flops import exit_flops, exit_path_flops
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


def interleaved(fns: dict[str, Callable[[], object]], reps: int, min_seconds: float) -> dict[str, float]:
    """Median time of each function; the calls are interleaved so that drift in machine load hits all."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    while True:
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
        first = next(iter(times.values()))
        if len(first) >= reps and sum(first) >= min_seconds:
            return {k: statistics.median(v) for k, v in times.items()}


def predicted(full: float, path: list[int], steps: int, beta: float) -> float:
    L, S = len(path), sum(path)
    naive = steps * sum(full + beta * p for p in path) + L * full
    harness = steps * (1 + beta) * S + L * full
    return naive / harness


VARIANTS = {  # name -> extra attack config (None: the naive reference)
    "naive": None,
    "fp32": {},
    "fp32+fold": {"fold_bn": True},
    "bf16": {"amp_dtype": "bfloat16"},
    "bf16+fold": {"amp_dtype": "bfloat16", "fold_bn": True},
}


def bench(name: str, batch: int, reps: int, steps: int, min_seconds: float) -> dict[str, float]:
    torch.manual_seed(0)
    model = nb.create_model(name).eval()
    if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        with torch.no_grad():  # running statistics that are not the identity, so folding does real work
            model.train()
            model(torch.rand(batch, *model.input_size))
            model.eval()
    x = torch.rand(batch, *model.input_size)
    y = torch.randint(0, model.num_classes, (batch,))
    eps, step = 8 / 255, 2 / 255
    full, path = exit_flops(model)[-1], exit_path_flops(model)
    gen = torch.Generator().manual_seed(0)
    fns: dict[str, Callable[[], object]] = {}
    for variant, extra in VARIANTS.items():
        if extra is None:
            fns[variant] = lambda: naive_max_average(model, x, y, eps=eps, step_size=step, steps=steps, generator=gen)
        else:
            attack = nb.create_attack("pgd", eps=eps, step_size=step, steps=steps, objective="max-average", seed=0,
                                      **extra)
            fns[variant] = lambda a=attack: a(model, x, y)
    return {"exits": model.num_exits, **interleaved(fns, reps, min_seconds),
            "predicted": predicted(full, path, steps, 2.0), "pred_b1": predicted(full, path, steps, 1.0)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="smallcnn,msdnet_cifar100")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--min-seconds", type=float, default=5.0, help="at least this much naive time per model")
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"PGD-{args.steps} max-average, median of >= {args.reps} interleaved reps")
    rows = [(name.strip(), bench(name.strip(), args.batch, args.reps, args.steps, args.min_seconds))
            for name in args.models.split(",")]
    print("\nseconds per call")
    print(f"{'model':<16} {'L':>2}" + "".join(f" {v:>10}" for v in VARIANTS))
    for name, r in rows:
        print(f"{name:<16} {r['exits']:>2}" + "".join(f" {r[v]:>10.2f}" for v in VARIANTS))
    print("\nspeed-up over naive fp32, and fp32 against the FLOP prediction (beta = 2; pred_b1: beta = 1)")
    print(f"{'model':<16} {'fp32':>6} {'+fold':>6} {'bf16':>6} {'bf16+fold':>9} {'predicted':>9} {'fp32/pred':>9} "
          f"{'+fold/pred':>10} {'pred_b1':>7} {'fp32/b1':>7} {'+fold/b1':>8}")
    for name, r in rows:
        sp = {v: r["naive"] / r[v] for v in VARIANTS if v != "naive"}
        print(f"{name:<16} {sp['fp32']:>5.2f}x {sp['fp32+fold']:>5.2f}x {sp['bf16']:>5.2f}x {sp['bf16+fold']:>8.2f}x "
              f"{r['predicted']:>8.2f}x {sp['fp32'] / r['predicted']:>9.0%} {sp['fp32+fold'] / r['predicted']:>10.0%} "
              f"{r['pred_b1']:>6.2f}x {sp['fp32'] / r['pred_b1']:>7.0%} {sp['fp32+fold'] / r['pred_b1']:>8.0%}",
              flush=True)


if __name__ == "__main__":
    main()
