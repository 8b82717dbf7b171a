"""Wall-clock latency per exit, beside the FLOPs.

For each exit ``k`` and batch size, the time of ``model(x, upto=k)`` (every block up to exit ``k`` and the
heads of exits ``0..k``: what a sample leaving at ``k`` costs, as the FLOPs count it) on random inputs of
``model.input_size``, in eval mode under :func:`torch.inference_mode`. ``warmup`` untimed calls, then the
median of ``repeats`` timed calls (CUDA is synchronised around each). The device is named: its CUDA name,
or the CPU model and the number of torch threads.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

BATCH_SIZES = (1, 128)


def device_name(device: torch.device) -> str:
    if device.type == "cuda" and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(device)}"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"cpu: {model} ({torch.get_num_threads()} torch threads, {os.cpu_count()} logical cores)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall time (s) of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def latency_section(model: torch.nn.Module, device: torch.device | str, batch_sizes: Sequence[int] = BATCH_SIZES,
                    warmup: int = 5, repeats: int = 20) -> dict[str, Any]:
    """``evaluation.latency``: median ms per exit for each batch size, on ``device`` (named)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    out: dict[str, Any] = {"device": device_name(device), "statistic": "median", "warmup": int(warmup),
                           "repeats": int(repeats), "unit": "ms per batch", "batch_sizes": {}}
    g = torch.Generator().manual_seed(0)
    try:
        with torch.inference_mode():
            for bs in batch_sizes:
                x = torch.rand(int(bs), *model.input_size, generator=g).to(device)
                ms = [1e3 * time_call(lambda k=k, x=x: model(x, upto=k), device, warmup, repeats)
                      for k in range(int(model.num_exits))]
                out["batch_sizes"][str(int(bs))] = {"per_exit_ms": ms,
                                                    "per_sample_ms": [m / int(bs) for m in ms]}
    finally:
        model.train(was_training)
    return out
