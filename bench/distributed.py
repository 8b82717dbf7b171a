"""Several processes under ``torchrun``: process group, per-rank device, and sharded batch loops.

The project has no launcher of its own: ``torchrun`` starts the processes and sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; :func:`init_distributed` joins them (NCCL on CUDA, gloo on CPU). Training wraps the model in
``DistributedDataParallel`` (:mod:`neokd_bench.trainer`). Evaluation shards its batch loops with
:func:`sharded_map`: the batches are the single-process batches (same start, same size, same samples, the
attacks keyed by the samples' indices), rank ``r`` takes batches ``r, r + W, ...``, and every rank gets all the
results back in the single-process order, so the metrics computed from them are those of one process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from .errors import UsageError

T = TypeVar("T")


def launched_world_size() -> int:
    """The ``WORLD_SIZE`` torchrun set (1 when not launched by torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as exc:
        raise UsageError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer; launch with torchrun") from exc


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialized process group, ``(0, 1)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed(device: torch.device) -> torch.device:
    """Join the process group when launched by torchrun with ``WORLD_SIZE > 1`` and return the device this
    rank uses: ``cuda:LOCAL_RANK`` when ``device`` is CUDA without an index, else ``device``."""
    if launched_world_size() <= 1:
        return device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def sharded_map(fn: Callable[[int], T], starts: Sequence[int]) -> list[T]:
    """``[fn(s) for s in starts]``, the calls shared among the ranks (rank ``r`` calls ``fn`` on
    ``starts[r::W]``) and the results gathered on every rank in the order of ``starts``. Without a process
    group it is the plain loop. ``fn``'s results must be picklable (they cross processes)."""
    rank, world = rank_and_world()
    if world == 1:
        return [fn(s) for s in starts]
    mine = [fn(s) for s in starts[rank::world]]
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, mine)
    out: list[T] = [None] * len(starts)  # type: ignore[list-item]
    for r, part in enumerate(gathered):
        out[r::world] = part
    return out


def gather_rows(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each tensor concatenated along dim 0 over the ranks, in rank order (every rank passes the same shapes:
    one step's batch of the same size); the tensors themselves without a process group."""
    _, world = rank_and_world()
    if world == 1:
        return tensors
    out = []
    for t in tensors:
        parts = [torch.empty_like(t) for _ in range(world)]
        torch.distributed.all_gather(parts, t.contiguous())
        out.append(torch.cat(parts))
    return tuple(out)
