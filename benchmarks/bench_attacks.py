"""Benchmark: max-average PGD-7 (the training attack of NEO-KD) in the harness against the naive algorithm.

Run from the repository root (it prints figures; it is not a test)::

    python benchmarks/bench_attacks.py                      # smallcnn and msdnet_cifar100, batch 128
    python benchmarks/bench_attacks.py --models smallcnn --reps 5 --threads 2

For each model, in the same process and on the same random weights (BatchNorm running statistics set by one
training-mode pass) and inputs, it times:

* ``naive`` - the reference algorithm kept here (Triple-Wins' ``pgd_max`` as NEO-KD describes it), fp32:
  L single attacks one after another; every step runs the FULL network forward and takes the gradient of the
  target exit's cross-entropy w.r.t. the input only (``torch.autograd.grad``); then selection with L full
  forward passes, one per candidate;
* ``train fp32`` - the training attack exactly as the defenses build it (``Defense.attack``, max-average
  PGD-7): candidate group k computes exit k alone (``model(x, upto=k, last_only=True)``: no deeper block,
  no earlier head); the L groups run as one cascade per step on a GPU (``model.forward_cascade``: all
  groups enter block 1, group k leaves after exit k) and one after another in lock-step on a CPU
  (``cascade="auto"``); the attack runs on a BatchNorm-folded copy of the model (``attack_fold_bn``, on by
  default for training); selection is a full forward per candidate group on a CPU, one pass on a GPU;
* ``train bf16`` - the same under bf16 autocast (``attack_amp="bfloat16"``; training attacks only);
* ``no-fold fp32`` - ``create_attack("pgd", steps=7, objective="max-average")`` with its defaults, as
  evaluation attacks run: the same without BatchNorm folding;
* ``no-fold cascade`` / ``no-fold loop`` - the same with the other way of running the L single attacks than
  ``cascade="auto"`` picks on this device (the cascade on a CPU, the lock-step loop on a GPU);
* ``train 1-pass`` (CPU only) - the training attack over the whole batch in each pass, instead of the
  automatic slices of ``MICRO_BATCH_CPU`` samples (``micro_batch`` and ``select_batch`` set to the batch).

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
from collections.abc import Callable
from typing import Any

import neokd_bench as nb
import torch
from benchlib import add_common_args, hardware_line, interleaved, naive_max_average, predicted
from neokd_bench.flops import exit_flops, exit_path_flops
from torch import nn


def variants(eps: float, step: float, steps: int, device: torch.device, batch: int) -> dict[str, Any]:
    """name -> the attack to time (None: the naive reference). ``train`` is the training attack exactly as
    the defenses build it (``Defense.attack``: BatchNorm folded, ``cascade="auto"``); ``no-fold`` is
    ``create_attack("pgd")`` with its defaults (how evaluation attacks run); the last one runs the L single
    attacks the other way than ``cascade="auto"`` picks on this device (cascade on CPU, loop on GPU); on a
    CPU, ``train 1-pass`` is the training attack over the whole batch at once instead of the automatic slices
    of ``MICRO_BATCH_CPU`` samples (attack passes and selection)."""
    def train(**kw: Any) -> Any:
        return nb.create_defense("adv", eps=eps, step_size=step, steps=steps, **kw).attack(seed=0)

    def plain(**kw: Any) -> Any:
        return nb.create_attack("pgd", eps=eps, step_size=step, steps=steps, objective="max-average", seed=0, **kw)

    other = "loop" if device.type == "cuda" else "cascade"
    out = {"naive": None, "train fp32": train(), "train bf16": train(attack_amp="bfloat16"),
           "no-fold fp32": plain(), f"no-fold {other}": plain(cascade="off" if other == "loop" else "on")}
    if device.type == "cpu":
        options = nb.create_defense("adv", eps=eps, step_size=step, steps=steps).attack_options(seed=0)
        out["train 1-pass"] = nb.create_attack("pgd", **options, micro_batch=batch, select_batch=batch)
    return out


def bench(name: str, batch: int, reps: int, steps: int, min_seconds: float, device: torch.device
          ) -> dict[str, Any]:
    torch.manual_seed(0)
    model = nb.create_model(name).to(device).eval()
    if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        with torch.no_grad():  # running statistics that are not the identity, so folding does real work
            model.train()
            model(torch.rand(batch, *model.input_size, device=device))
            model.eval()
    x = torch.rand(batch, *model.input_size, device=device)
    y = torch.randint(0, model.num_classes, (batch,), device=device)
    eps, step = 8 / 255, 2 / 255
    full, path = exit_flops(model)[-1], exit_path_flops(model)
    gen = torch.Generator(device=device).manual_seed(0)
    fns: dict[str, Callable[[], object]] = {}
    for variant, attack in variants(eps, step, steps, device, batch).items():
        if attack is None:
            fns[variant] = lambda: naive_max_average(model, x, y, eps=eps, step_size=step, steps=steps, generator=gen)
        else:
            fns[variant] = lambda a=attack: a(model, x, y)
    if device.type == "cuda":
        fns = {k: (lambda f=f: (f(), torch.cuda.synchronize())) for k, f in fns.items()}
    return {"exits": model.num_exits, "times": interleaved(fns, reps, min_seconds),
            "predicted": predicted(full, path, steps, 2.0), "pred_b1": predicted(full, path, steps, 1.0)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p, "smallcnn,msdnet_cifar100", "at least this much naive time per model")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"{hardware_line(device)}, batch {args.batch}, PGD-{args.steps} max-average, "
          f"median of >= {args.reps} interleaved reps")
    rows = [(name.strip(), bench(name.strip(), args.batch, args.reps, args.steps, args.min_seconds, device))
            for name in args.models.split(",")]
    names = list(rows[0][1]["times"])
    print("\nseconds per call")
    print(f"{'model':<16} {'L':>2}" + "".join(f" {v:>14}" for v in names))
    for name, r in rows:
        print(f"{name:<16} {r['exits']:>2}" + "".join(f" {r['times'][v]:>14.2f}" for v in names))
    print("\nspeed-up over naive fp32; fp32 speed-ups against the FLOP prediction (beta = 2; pred_b1: beta = 1)")
    print(f"{'model':<16}" + "".join(f" {v:>14}" for v in names[1:]) + f" {'predicted':>9} {'pred_b1':>7}"
          + "".join(f" {v + '/pred':>17} {v + '/b1':>15}" for v in names[1:] if "fp32" in v))
    for name, r in rows:
        t = r["times"]
        sp = {v: t["naive"] / t[v] for v in names[1:]}
        print(f"{name:<16}" + "".join(f" {sp[v]:>13.2f}x" for v in names[1:])
              + f" {r['predicted']:>8.2f}x {r['pred_b1']:>6.2f}x"
              + "".join(f" {sp[v] / r['predicted']:>17.0%} {sp[v] / r['pred_b1']:>15.0%}"
                        for v in names[1:] if "fp32" in v),
              flush=True)


if __name__ == "__main__":
    main()
