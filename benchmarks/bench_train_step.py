"""Benchmark: the whole adversarial training step of ``neokd`` and ``adv`` against a naive reference step.

Run from the repository root (it prints figures; it is not a test)::

    python benchmarks/bench_train_step.py                              # 3 models x neokd, adv; batch 128
    python benchmarks/bench_train_step.py --models smallcnn --defenses neokd --reps 1 --min-seconds 0
    python benchmarks/bench_train_step.py --models msdnet_cifar100 --defenses neokd --profile

The step is everything the trainer does per batch: max-average PGD-7 (eval mode, as the defenses attack),
the clean and adversarial forward passes in train mode, the defense's loss, the backward pass and the SGD
step. Random data of the model's input shape, batch 128. Per row (model x defense), in the same process,
calls interleaved, median after one warm-up:

* ``naive`` - the reference step, fp32: the Triple-Wins-style attack (``benchlib.naive_max_average``: a full
  forward pass per attack step, the L single attacks one after another, L full forward passes for the
  selection), then the same loss, backward and SGD step;
* ``fp32`` / ``bf16`` - ``defense.training_step`` exactly as the trainer runs it (channels_last on a CPU,
  ``neokd_bench.trainer.memory_format``), without or with bf16 autocast over the whole step (fp32 master
  weights);
* optional variants (``--variants``): ``+nchw`` the contiguous layout instead (the naive step's), ``+cl``
  channels_last (the CPU default; on a GPU the model's own layout is the default),
  ``+compile`` the model compiled with ``torch.compile`` (attack without BatchNorm folding, which would copy,
  and so recompile, the model every step), ``+nograph`` the step without CUDA-graph replay (GPU; by default the
  training attack is replayed, ``attack_cuda_graph``, and so are the loss, backward and optimizer step, as the
  trainer runs them, ``neokd_bench.step_graph``), e.g. ``--variants naive,fp32,fp32+nchw,fp32+compile``.

Beside images per second and the speed-up over ``naive`` it prints:

* ``pred`` - the speed-up that fvcore's multiply-add counts predict (``benchlib.attack_flops`` with
  ``beta = 2``, plus the loss passes, the same in both: two forward passes and their weight-and-input
  backward, ``6 F``), and the fp32 speed-up as a fraction of it;
* ``floor`` - the time the passes the step truly needs would take at the machine's peak: multiply-adds of
  the harness attack with an input-gradient backward costing one forward (``beta = 1``) plus ``6 F``,
  divided by the multiply-adds per second of a large matmul measured in this run (fp32 for fp32 columns,
  bf16 for bf16 ones); ``of floor`` is that time over the measured one;
* ``peak MB`` - peak memory of one step: resident set on a CPU (Linux: peak reset through
  ``/proc/self/clear_refs``), ``torch.cuda.max_memory_allocated`` on a GPU.
"""

from __future__ import annotations

import argparse
import copy
import resource
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import neokd_bench as nb
import torch
from benchlib import add_common_args, attack_flops, hardware_line, interleaved, naive_max_average, peak_macs
from neokd_bench.flops import exit_flops, exit_path_flops
from neokd_bench.step_graph import WARMUP, GraphedLossStep, defense_graph_safe
from neokd_bench.trainer import memory_format
from torch import nn

DATASET = {"smallcnn": "mnist", "msdnet_cifar10": "cifar10", "msdnet_cifar100": "cifar100"}


def step_fn(model: nn.Module, defense: Any, x: torch.Tensor, y: torch.Tensor, variant: str,
            gen: torch.Generator) -> Callable[[], None]:
    """One training step of ``variant`` on its own copy of the model and its own optimizer."""
    layout = (torch.contiguous_format if variant == "naive" or "+nchw" in variant
              else torch.channels_last if "+cl" in variant else memory_format(x.device))
    model = copy.deepcopy(model).to(memory_format=layout)
    x = x.contiguous(memory_format=layout)
    if "+compile" in variant:
        model.compile()
        defense = copy.copy(defense)
        defense.config = type(defense.config)(**{**vars(defense.config), "attack_fold_bn": False})
    if "+nograph" in variant:
        defense = copy.copy(defense)
        defense.config = type(defense.config)(**{**vars(defense.config), "attack_cuda_graph": "off"})
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    amp = variant.startswith("bf16")
    cfg = defense.config
    graphed = None
    if x.device.type == "cuda" and variant != "naive" and "+nograph" not in variant and defense_graph_safe(defense):
        # as the trainer runs it on one GPU: the attack, then the loss step replayed (neokd_bench.step_graph)
        graphed = GraphedLossStep(model, defense, opt, list(model.parameters()), None,
                                  (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else None)

    def step() -> None:
        ctx = torch.autocast(x.device.type, dtype=torch.bfloat16) if amp else nullcontext()
        if graphed is not None:
            with ctx:
                x_adv = defense.adversarial(model, x, y)
            graphed(x, x_adv, y)
            return
        with ctx:
            if variant == "naive":
                model.eval()
                x_adv = naive_max_average(model, x, y, eps=cfg.eps, step_size=cfg.step_size, steps=cfg.steps,
                                          generator=gen)
                model.train()
                loss, _ = defense.loss(model, x, x_adv, y)
            else:
                loss, _, _ = defense.training_step(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if graphed is not None:
        for _ in range(WARMUP + 2):  # the warm-up steps and the recording, before anything is timed
            step()
    return step


def with_peak_memory(fn: Callable[[], None], device: torch.device, out: dict[str, float], key: str
                     ) -> Callable[[], None]:
    """``fn`` that also stores the peak memory of its latest call in ``out[key]`` (MB): max_memory_allocated on a
    GPU, the resident set's peak on a CPU (reset through /proc/self/clear_refs; where that fails, the process's
    peak so far)."""
    def call() -> None:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            fn()
            torch.cuda.synchronize(device)
            out[key] = torch.cuda.max_memory_allocated(device) / 2**20
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident set
        except OSError:
            pass
        fn()
        status = Path("/proc/self/status")
        lines = status.read_text().splitlines() if status.exists() else []
        hwm = [int(v.split()[1]) for v in lines if v.startswith("VmHWM:")]
        out[key] = (hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024  # kB on Linux
    return call


def bench(name: str, defense_name: str, variants: list[str], args: argparse.Namespace, device: torch.device
          ) -> dict[str, Any]:
    torch.manual_seed(0)
    model = nb.create_model(name).to(device)
    with torch.no_grad():  # running statistics that are not the identity, so BatchNorm folding does real work
        model.train()(torch.rand(args.batch, *model.input_size, device=device))
    defense = nb.create_defense(defense_name, steps=args.steps)
    defense.setup(dataset=DATASET.get(name, "cifar10"), num_exits=model.num_exits, num_classes=model.num_classes,
                  seed=0)
    defense.start_epoch(0)
    x = torch.rand(args.batch, *model.input_size, device=device)
    y = torch.randint(0, model.num_classes, (args.batch,), device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    memory: dict[str, float] = {}
    fns = {v: with_peak_memory(step_fn(model, defense, x, y, v, gen), device, memory, v) for v in variants}
    times = interleaved(fns, args.reps, args.min_seconds, args.clock, warmup=not args.no_warmup)
    full, path = exit_flops(model)[-1] * args.batch, [p * args.batch for p in exit_path_flops(model)]
    loss_passes = 6 * full
    naive = attack_flops(full, path, args.steps, 2.0, naive=True) + loss_passes
    harness = attack_flops(full, path, args.steps, 2.0, naive=False) + loss_passes
    floor = attack_flops(full, path, args.steps, 1.0, naive=False) + loss_passes
    return {"exits": model.num_exits, "times": times, "memory": memory, "predicted": naive / harness,
            "floor_macs": floor, "model": model, "defense": defense, "x": x, "y": y, "gen": gen}


def profile(row: dict[str, Any], device: torch.device, top: int) -> None:
    """Top operators of one fp32 step (torch.profiler, self time)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    fn = step_fn(row["model"], row["defense"], row["x"], row["y"], "fp32", row["gen"])
    fn()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with prof(activities=acts) as p:
        fn()
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(p.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=50))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p, "smallcnn,msdnet_cifar10,msdnet_cifar100", "at least this much naive time per row")
    p.add_argument("--defenses", default="neokd,adv")
    p.add_argument("--variants", default="naive,fp32,bf16",
                   help="naive, fp32, bf16; fp32 and bf16 optionally with +nchw (contiguous layout), +cl "
                        "(channels_last) and +compile (torch.compile)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="cpu: time this process's CPU time (use with --threads 1 on a shared, loaded machine)")
    p.add_argument("--no-warmup", action="store_true", help="time the first call too (quick runs of large rows)")
    p.add_argument("--profile", action="store_true", help="torch.profiler's top operators of the fp32 neokd step "
                                                          "of the model with the most exits")
    p.add_argument("--top", type=int, default=15, help="operators the profile prints")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    variants = [v.strip() for v in args.variants.split(",")]
    if variants[0] != "naive":
        p.error("--variants must start with naive (the reference the speed-ups are over)")
    for v in variants[1:]:
        base, *mods = v.split("+")
        if base not in ("fp32", "bf16") or not set(mods) <= {"nchw", "cl", "compile", "nograph"}:
            p.error(f"--variants: {v!r} is not a variant; use naive, fp32 or bf16, optionally with +nchw, +cl, "
                    "+compile, +nograph")
    print(f"{hardware_line(device)}, batch {args.batch}, PGD-{args.steps} max-average training step, "
          f"median of >= {args.reps} interleaved reps, {args.clock} clock")
    peak = {k: peak_macs(dt, device, clock=args.clock) for k, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    print(f"peak (large matmul): fp32 {peak['fp32'] / 1e9:.1f} GMAC/s, bf16 {peak['bf16'] / 1e9:.1f} GMAC/s")
    rows = []
    for name in (m.strip() for m in args.models.split(",")):
        for defense_name in (d.strip() for d in args.defenses.split(",")):
            r = bench(name, defense_name, variants, args, device)
            rows.append((name, defense_name, r))
            print_row(name, defense_name, r, variants, peak, args.batch)
    if args.profile:
        name, defense_name, row = max((r for r in rows if r[1] == "neokd"), key=lambda r: r[2]["exits"])
        print(f"\nprofile: {name}, neokd, fp32, one step")
        profile(row, device, args.top)


def print_row(name: str, defense_name: str, r: dict[str, Any], variants: list[str], peak: dict[str, float],
              batch: int) -> None:
    t = r["times"]
    fp32 = t["naive"] / t["fp32"] if "fp32" in t else float("nan")
    print(f"\n{name} ({r['exits']} exits), {defense_name}: predicted speed-up {r['predicted']:.2f}x, "
          f"fp32 reaches {fp32 / r['predicted']:.0%} of it")
    print(f"  {'variant':<14} {'s/step':>8} {'img/s':>8} {'vs naive':>9} {'floor s':>8} {'of floor':>9} "
          f"{'peak MB':>8}")
    for v in variants:
        kind = "bf16" if v.startswith("bf16") else "fp32"
        floor_s = r["floor_macs"] / peak[kind]
        print(f"  {v:<14} {t[v]:>8.2f} {batch / t[v]:>8.1f} {t['naive'] / t[v]:>8.2f}x {floor_s:>8.3f} "
              f"{floor_s / t[v]:>9.1%} {r['memory'][v]:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
