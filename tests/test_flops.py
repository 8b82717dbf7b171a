"""fvcore FLOPs per exit (docs/design.md, "Budgeted prediction": cumulative cost, earlier heads included)."""

from __future__ import annotations

import os

import neokd_bench as nb
import pytest
import torch
from neokd_bench.flops import exit_flops, exit_path_flops, full_forward_flops

os.environ.setdefault("HF_HUB_OFFLINE", "1")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def counts() -> dict[str, tuple[list[int], int]]:
    """Per-model (exit_flops, full_forward_flops), computed once per test module (tracing is slow)."""
    return {}


def measured(counts: dict, name: str, **kw) -> tuple[list[int], int]:
    key = name + repr(sorted(kw.items()))
    if key not in counts:
        model = nb.create_model(name, **kw)
        counts[key] = (exit_flops(model), full_forward_flops(model))
    return counts[key]


def test_msdnet_cifar100_exit_costs(counts) -> None:
    flops, full = measured(counts, "msdnet_cifar100")
    assert len(flops) == 7
    assert all(b > a for a, b in zip(flops, flops[1:]))
    assert flops[0] < 0.5 * full
    # the last exit computes everything, heads included, so it costs exactly the full forward
    assert flops[-1] == full
    # MSDNet with nChannels 8 on CIFAR: tens of MFLOPs (the paper's budgets are 10-20 MFLOPs on CIFAR-10)
    assert 5e6 < flops[0] < full < 2e8


def test_fvcore_counts_only_what_an_exit_needs(counts) -> None:
    """fvcore traces the graph and drops work whose result is unused, so the eager MSDNet (whole blocks)
    and the lazy one (only the scales each exit needs) get the same counts."""
    lazy, _ = measured(counts, "msdnet_cifar10")
    eager, _ = measured(counts, "msdnet_cifar10", lazy_scales=False)
    assert lazy == eager


def test_flops_restore_mode_and_do_not_touch_parameters() -> None:
    model = nb.create_model("smallcnn").train()
    before = [p.detach().clone() for p in model.parameters()]
    exit_flops(model)
    assert model.training
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_smallcnn_first_exit_count_by_hand() -> None:
    """Exit 1 of SmallCNN: conv 1->32 (26x26x32x9) + conv 32->16 stride 2 (12x12x16x288) + fc 576*200
    + 200*200 + 200*10 multiply-adds (pooling and ReLU are not counted by fvcore)."""
    model = nb.create_model("smallcnn")
    expected = 26 * 26 * 32 * 9 + 12 * 12 * 16 * 288 + 576 * 200 + 200 * 200 + 200 * 10
    assert exit_flops(model)[0] == expected


@pytest.mark.parametrize("name", nb.list_models())
def test_exit_flops_rise_for_every_model(counts, name: str) -> None:
    flops, full = measured(counts, name)
    assert len(flops) == nb.create_model(name).num_exits
    assert all(isinstance(f, int) and f > 0 for f in flops)
    assert all(b > a for a, b in zip(flops, flops[1:]))
    assert flops[-1] == full


@pytest.mark.parametrize("name", ["smallcnn", "msdnet_cifar10"])
def test_exit_path_skips_earlier_heads(counts, name: str) -> None:
    """Exit k alone costs its cumulative count minus the heads of exits 0..k-1: the same at exit 0, strictly
    less after it, and rising with k."""
    cum, _ = measured(counts, name)
    path = exit_path_flops(nb.create_model(name))
    assert path[0] == cum[0]
    assert all(p < c for p, c in zip(path[1:], cum[1:]))
    assert all(b > a for a, b in zip(path, path[1:]))


class _Cascade(torch.nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.forward_cascade(list(x.split(1))))


@pytest.mark.parametrize("name", ["smallcnn", "msdnet_cifar10"])
def test_cascade_costs_the_sum_of_the_exit_paths(name: str) -> None:
    """One sample per group through ``forward_cascade`` costs exactly what the L separate single-exit passes
    cost: sharing the batch adds no work (the cascade only saves launches)."""
    from fvcore.nn import FlopCountAnalysis
    from neokd_bench.flops import _quiet

    model = nb.create_model(name).eval()
    with _quiet(), torch.no_grad():
        fca = FlopCountAnalysis(_Cascade(model), torch.rand(model.num_exits, *model.input_size))
        fca.unsupported_ops_warnings(False)
        fca.uncalled_modules_warnings(False)
        total = int(fca.total())
    assert total == sum(exit_path_flops(model))
