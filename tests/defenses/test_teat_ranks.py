"""TEAT's per-sample ensemble under torchrun: every rank keeps the buffer one process would keep."""

from __future__ import annotations

from pathlib import Path

import neokd_bench as nb
import torch

from ..conftest import run_ranks

N, L, C = 8, 3, 10


def _logits() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(N, C, generator=g) for _ in range(L)]


def _update(out: str) -> None:
    from neokd_bench.distributed import init_distributed, rank_and_world

    init_distributed(torch.device("cpu"))
    rank, world = rank_and_world()
    d = nb.create_defense("pgd-te")
    d.setup(dataset="fashion-mnist", num_exits=L, num_classes=C, seed=0)
    index = torch.tensor([5, 0, 7, 2, 6, 1, 4, 3])
    share = slice(rank * N // world, (rank + 1) * N // world)  # this rank's half of the one-process batch
    for _ in range(2):
        d.update_ensemble([z[share] for z in _logits()], index[share])
    torch.save(d.soft_labels, Path(out) / f"buf{world}.{rank}.pt")


def test_two_ranks_keep_the_ensemble_of_one_process(tmp_path):
    run_ranks(_update, 1, str(tmp_path))
    run_ranks(_update, 2, str(tmp_path))
    one = torch.load(tmp_path / "buf1.0.pt", weights_only=True)
    assert one.shape == (N, L, C) and (one.sum(-1) > 0).all()
    for rank in (0, 1):
        torch.testing.assert_close(torch.load(tmp_path / f"buf2.{rank}.pt", weights_only=True), one)
