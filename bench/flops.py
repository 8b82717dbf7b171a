"""FLOPs per exit, counted with fvcore (one per multiply-add, as MSDNet and NEO-KD report them).

The cost of a sample that leaves at exit ``k`` is the fvcore count of ``model(x, upto=k)`` on one input
of ``model.input_size``: every block up to exit ``k`` plus the heads of exits ``0..k`` (docs/design.md,
"Budgeted prediction"). fvcore skips operators it has no counter for (pooling, activations,
normalisation's elementwise work); its "unsupported operator" log lines and warnings are silenced here.
fvcore counts the traced graph, from which work whose result no output uses is dropped; so the count
of ``upto=k`` is the cost of exactly what exit ``k``'s logits depend on.
Nothing is cached: each call traces the model afresh.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from .models.base import MultiExitModel


class _UptoForward(nn.Module):
    """``x -> model(x, upto=k)`` as a tuple of tensors (with ``alone``, ``model(x, upto=k, last_only=True)``:
    exit ``k``'s logits only), for fvcore's tracer."""

    def __init__(self, model: MultiExitModel, upto: int | None, alone: bool = False) -> None:
        super().__init__()
        self.model, self.upto, self.alone = model, upto, alone

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.alone:
            return tuple(self.model(x, upto=self.upto, last_only=True))
        return tuple(self.model(x, upto=self.upto))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in ("fvcore", "fvcore.nn.jit_analysis", "iopath")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _count(model: MultiExitModel, upto: int | None, input_size: Sequence[int] | None, alone: bool = False) -> int:
    with _quiet():
        from fvcore.nn import FlopCountAnalysis

        size = tuple(input_size) if input_size is not None else tuple(model.input_size)
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        x = torch.rand(1, *size, device=device)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                fca = FlopCountAnalysis(_UptoForward(model, upto, alone), x)
                fca.unsupported_ops_warnings(False)
                fca.uncalled_modules_warnings(False)
                fca.tracer_warnings("none")
                return int(fca.total())
        finally:
            model.train(was_training)


def exit_flops(model: MultiExitModel, input_size: Sequence[int] | None = None) -> list[int]:
    """Cumulative fvcore FLOPs (multiply-adds) of ``model(x, upto=k)`` for ``k = 0..num_exits-1``.

    ``input_size`` (C, H, W) defaults to ``model.input_size``; batch size 1. Exit ``k``'s count includes
    the heads of all earlier exits. The model's train/eval mode is restored.
    """
    return [_count(model, k, input_size) for k in range(model.num_exits)]


def full_forward_flops(model: MultiExitModel, input_size: Sequence[int] | None = None) -> int:
    """fvcore FLOPs of the full forward ``model(x)`` (all exits), batch size 1."""
    return _count(model, None, input_size)


def exit_path_flops(model: MultiExitModel, input_size: Sequence[int] | None = None) -> list[int]:
    """fvcore FLOPs of exit ``k``'s logits alone, ``model(x, upto=k, last_only=True)``, for each ``k``: the blocks up
    to exit ``k`` and head ``k``, without the heads of earlier exits. This is what a single attack on
    exit ``k`` computes per forward pass (and differentiates per backward pass); batch size 1."""
    return [_count(model, k, input_size, alone=True) for k in range(model.num_exits)]
