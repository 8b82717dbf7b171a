"""Tiny multi-exit models and tiny attack budgets for the attack tests (imported by the test modules)."""

from __future__ import annotations

import dataclasses
from typing import Any

import neokd_bench as nb
import torch
from neokd_bench.models.base import MultiExitModel
from neokd_bench.registry import ATTACKS
from torch import nn


class TinyExits(MultiExitModel):
    """``num_exits`` conv blocks on 1x12x12 input, a linear head after each; with BatchNorm and Dropout
    (so train/eval mode matters) and a ``calls`` counter per block."""

    def __init__(self, num_exits: int = 3, num_classes: int = 10, width: int = 8) -> None:
        super().__init__(num_exits=num_exits, num_classes=num_classes, input_size=(1, 12, 12),
                         mean=[0.5], std=[0.25])
        self.blocks = nn.ModuleList()
        self.heads = nn.ModuleList()
        c = 1
        for _ in range(num_exits):
            self.blocks.append(nn.Sequential(nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()))
            self.heads.append(nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(width * 144, num_classes)))
            c = width

    def forward_exits(self, x: torch.Tensor, upto: int) -> list[torch.Tensor]:
        outs = []
        for k in range(upto + 1):
            x = self.blocks[k](x)
            outs.append(self.heads[k](x))
        return outs

    def forward_last(self, x: torch.Tensor, k: int) -> torch.Tensor:
        for block in self.blocks[: k + 1]:
            x = block(x)
        return self.heads[k](x)

    cascades = True

    def forward_cascade(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.sequential_cascade(xs, lambda k, h: self.blocks[k](h), lambda k, h: self.heads[k](h))


def make_model(num_exits: int = 3, seed: int = 0, num_classes: int = 10) -> TinyExits:
    torch.manual_seed(seed)
    model = TinyExits(num_exits, num_classes)
    # Non-trivial BatchNorm statistics so eval and train modes differ.
    with torch.no_grad():
        model.train()
        model(torch.rand(64, 1, 12, 12))
    return model.eval()


def make_batch(model: nn.Module, n: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0, 1] and labels = the last exit's clean prediction (so every sample starts correct)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *model.input_size, generator=g)
    with torch.no_grad():
        was = model.training
        model.eval()
        y = model(x)[-1].argmax(1)
        model.train(was)
    return x, y


def tiny_config(name: str) -> dict[str, Any]:
    """The budget the contract tests run an attack with: its ``tiny`` preset (``pgd.tiny``) when it declares
    one, else a generic fallback: its defaults, with ``steps`` and ``n_queries`` cut where it has them."""
    presets = ATTACKS.presets(name)
    if "tiny" in presets:
        return presets["tiny"]
    fields = {f.name for f in dataclasses.fields(ATTACKS.get(name).Config)}
    return {k: v for k, v in {"steps": 2, "n_queries": 10}.items() if k in fields}


def tiny_attack(name: str, **kw: Any):
    return nb.create_attack(name, **{**tiny_config(name), **kw})
