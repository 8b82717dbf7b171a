"""What the benchmarks share: the naive max-average reference, interleaved timing, the FLOP model of the
max-average attack, the machine's measured peak, and the hardware line every benchmark prints.

Imported by the scripts in this folder (run from the repository root: ``python benchmarks/bench_....py``,
which puts this folder on ``sys.path``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from neokd_bench.attacks.base import project, random_start
from neokd_bench.precision import describe_hardware
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


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
"""``wall``: elapsed time. ``cpu``: this process's CPU time (all its threads), for a shared, loaded machine:
with one thread it is the wall time the call would take on an idle core, and other jobs barely move it."""


def interleaved(fns: dict[str, Callable[[], object]], reps: int, min_seconds: float, clock: str = "wall",
                warmup: bool = True) -> dict[str, float]:
    """Median time of each function; the calls are interleaved so that drift in machine load hits all.
    ``warmup``: one untimed call of each first."""
    now = CLOCKS[clock]
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values() if warmup else ():
        fn()
    while True:
        for k, fn in fns.items():
            t = now()
            fn()
            times[k].append(now() - t)
        first = next(iter(times.values()))
        if len(first) >= reps and sum(first) >= min_seconds:
            return {k: statistics.median(v) for k, v in times.items()}


def attack_flops(full: float, path: list[int], steps: int, beta: float, naive: bool) -> float:
    """Multiply-adds of max-average PGD-``steps`` (see bench_attacks.py's docstring): ``full`` the full forward,
    ``path[k]`` exit k alone, an input-gradient backward costing ``beta`` forwards of the path it differentiates.
    ``naive``: every step a full forward (Triple-Wins); else exit k's path alone. Selection: L full forwards."""
    L = len(path)
    per_step = sum(full + beta * p for p in path) if naive else (1 + beta) * sum(path)
    return steps * per_step + L * full


def predicted(full: float, path: list[int], steps: int, beta: float) -> float:
    """Speed-up of the harness's max-average attack over the naive one that the FLOP counts predict."""
    return attack_flops(full, path, steps, beta, True) / attack_flops(full, path, steps, beta, False)


def peak_macs(dtype: torch.dtype, device: torch.device, n: int = 2048, reps: int = 3, clock: str = "wall"
              ) -> float:
    """Multiply-adds per second of a large ``n x n`` matmul in ``dtype`` (best of ``reps``): the machine's peak.
    With ``clock="cpu"``: per second of CPU time, i.e. per core-second times the thread count."""
    now = CLOCKS[clock]
    inner = 1
    if device.type == "cuda":  # one 2048^3 product is microseconds on a GPU: take a larger one, ten per timing
        n, inner = max(n, 8192), 10
    a = torch.rand(n, n, device=device).to(dtype)
    b = torch.rand(n, n, device=device).to(dtype)
    best = float("inf")
    for _ in range(reps + 1):  # the first call warms up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = now()
        for _ in range(inner):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (now() - t) / inner)
    return n**3 / best


def hardware_line(device: torch.device) -> str:
    """torch version, and the GPU's name or the CPU's name, instruction sets and thread count."""
    threads = "" if device.type == "cuda" else f", {torch.get_num_threads()} threads"
    return f"torch {torch.__version__}, {describe_hardware(device)}{threads}"


def add_common_args(p: argparse.ArgumentParser, models: str, min_seconds_help: str) -> None:
    """The options every benchmark takes: models, batch, repetitions, PGD steps, threads, device."""
    p.add_argument("--models", default=models)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--min-seconds", type=float, default=5.0, help=min_seconds_help)
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
