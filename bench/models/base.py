"""The multi-exit model contract (see docs/design.md, "Contracts").

* ``forward(x)`` returns a list of logits tensors, one per exit, shallowest first.
* ``forward(x, upto=k)`` computes only exits ``0..k`` (0-based) and returns ``k + 1`` tensors; no block
  deeper than exit ``k`` runs. Attacks on a shallow exit rely on this for speed.
* ``forward(x, upto=k, last_only=True)`` returns ``[logits of exit k]`` alone: the blocks up to exit
  ``k`` and head ``k``; the heads of exits ``0..k-1`` need not run. Single-exit attacks use it (their loss
  reads exit ``k`` only) when the model's ``forward`` takes ``last_only``, else ``forward(x, upto=k)[k]``.
  The base class answers it with ``forward_exits(x, k)[k]``; a model makes it cheaper by overriding
  :meth:`MultiExitModel.forward_last`. A subclass that overrides ``forward`` keeps its own behaviour:
  the attacks see that its ``forward`` has no ``last_only`` and do not use it.
* ``forward_cascade([x_0, ..., x_{G-1}])`` returns ``[exit 0 of x_0, ..., exit G-1 of x_{G-1}]``: group
  ``k`` is meant for exit ``k`` alone. A model whose class sets ``cascades = True`` computes it as one
  batched pass in which all groups enter the first block together and group ``k`` leaves the batch after
  exit ``k`` (fewer, larger kernel launches than ``G`` separate passes; what the max-average attack
  wants on a GPU). The base class computes the groups one after another (``forward_last`` each). In
  eval mode the result is the same as the separate passes up to float rounding; in train mode
  BatchNorm would pool the groups' statistics, so attacks use it in eval mode only.
* ``num_exits``, ``num_classes`` and ``input_size`` (C, H, W) are attributes.
* Inputs are pixels in [0, 1]; normalization is the model's first layer, so attacks never see
  normalized space.

Exit indices are 0-based in code and configs (``exit:0`` is the shallowest exit); tables print them
1-based ("exit 1") as the paper does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..errors import UsageError


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as the model's first layer."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class MultiExitModel(nn.Module):
    """Base class: subclasses implement :meth:`forward_exits` on normalized input."""

    cascades: bool = False  # True: forward_cascade shares the early blocks between groups (one batched pass)
    num_exits: int
    num_classes: int
    input_size: tuple[int, int, int]

    def __init__(self, *, num_exits: int, num_classes: int, input_size: Sequence[int],
                 mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.num_exits = int(num_exits)
        self.num_classes = int(num_classes)
        self.input_size = tuple(int(v) for v in input_size)  # type: ignore[assignment]
        self.normalize = Normalize(mean, std)

    def check_upto(self, upto: int | None) -> int:
        if upto is None:
            return self.num_exits - 1
        upto = int(upto)
        if not 0 <= upto < self.num_exits:
            raise UsageError(
                f"exit index {upto} is out of range for a {self.num_exits}-exit model; "
                f"use 0..{self.num_exits - 1} (0-based)"
            )
        return upto

    def forward(self, x: torch.Tensor, upto: int | None = None, last_only: bool = False) -> list[torch.Tensor]:
        if last_only:
            return [self.forward_last(self.normalize(x), self.check_upto(upto))]
        return self.forward_exits(self.normalize(x), self.check_upto(upto))

    def forward_exits(self, x: torch.Tensor, upto: int) -> list[torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def forward_cascade(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Exit ``k``'s logits of group ``xs[k]`` (pixels) for ``k = 0..len(xs)-1`` (see the module docstring).
        Base: one ``forward_last`` per group; models with ``cascades = True`` override it."""
        self.check_groups(xs)
        return [self.forward_last(self.normalize(x), k) for k, x in enumerate(xs)]

    def check_groups(self, xs: Sequence[torch.Tensor]) -> int:
        if not 1 <= len(xs) <= self.num_exits:
            raise UsageError(f"forward_cascade takes 1..{self.num_exits} groups (one per exit, shallowest first), "
                             f"got {len(xs)}")
        return len(xs)

    def sequential_cascade(self, xs: Sequence[torch.Tensor], block: Callable[[int, torch.Tensor], torch.Tensor],
                           head: Callable[[int, torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
        """:meth:`forward_cascade` for a chain of blocks: ``block(k, h)`` maps the features before exit ``k``'s
        block to those at exit ``k``, ``head(k, h)`` is exit ``k``'s head. All groups run block 0; after
        block ``k`` the rows of group ``k`` go to head ``k`` and leave the batch."""
        self.check_groups(xs)
        sizes = [len(x) for x in xs]
        h = self.normalize(torch.cat(list(xs)))
        outs = []
        for k, n in enumerate(sizes):
            h = block(k, h)
            if not isinstance(h, torch.Tensor):
                raise UsageError(f"{type(self).__name__}: block {k} returns {type(h).__name__}, not a tensor, so the "
                                 "cascade cannot split it by rows; use the attack option cascade='off'")
            outs.append(head(k, h[:n]))
            h = h[n:]
        return outs

    def forward_last(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Exit ``k``'s logits on normalized input. Default: ``forward_exits(x, k)[k]`` (runs every head up
        to ``k``); built-in models override it to skip the heads of exits ``0..k-1``."""
        return self.forward_exits(x, k)[k]


class ExitForward(nn.Module):
    """Adapter: a single-output view of one exit (or of the exit-mean logits) for libraries such as
    torchattacks, pyautoattack and fvcore that expect ``model(x) -> Tensor``."""

    def __init__(self, model: MultiExitModel, exit: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.exit = model.num_exits - 1 if exit is None else model.check_upto(exit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, upto=self.exit)[self.exit]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
