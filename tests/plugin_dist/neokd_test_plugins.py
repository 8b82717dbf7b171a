"""Test-only plugins, registered through the real entry points of a distribution on ``sys.path``
(``tests/conftest.py`` puts this folder there), so the parametrized contract tests cover them like
the built-ins:

* ``exits-only-mlp``: a model that implements only ``forward_exits`` (what the README says a model needs);
* ``plugin-fgsm``: an attack with no ``tiny`` preset, so the tests use their generic fallback;
* ``my-defense``: the defense of ``submissions/README.md``, executed from the guide's own code blocks
  (:func:`guide_modules`), so the guide is what is tested.
"""

from __future__ import annotations

import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import torch
from neokd_bench.attacks.base import Attack, AttackConfig, Objective, objective_loss, project
from neokd_bench.models.base import MultiExitModel
from torch import nn

GUIDE = Path(__file__).resolve().parents[2] / "submissions" / "README.md"
_FILE_BLOCK = re.compile(r"```python\n# (?P<path>[\w/]+)\.py\n(?P<code>.*?)```", re.S)


class ExitsOnlyMLP(MultiExitModel):
    """Three linear blocks on 1x28x28, an exit after each; only ``forward_exits`` is written."""

    def __init__(self, num_classes: int = 10, mean=None, std=None, input_size=(1, 28, 28)) -> None:
        super().__init__(num_exits=3, num_classes=num_classes, input_size=input_size,
                         mean=mean or [0.0], std=std or [1.0])
        width = 32
        features = 1
        for v in input_size:
            features *= int(v)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Flatten(), nn.Linear(features, width), nn.ReLU()),
                                     nn.Sequential(nn.Linear(width, width), nn.ReLU()),
                                     nn.Sequential(nn.Linear(width, width), nn.ReLU())])
        self.heads = nn.ModuleList([nn.Linear(width, num_classes) for _ in range(3)])

    def forward_exits(self, x: torch.Tensor, upto: int) -> list[torch.Tensor]:
        feats = []
        for block in self.blocks[: upto + 1]:  # no block deeper than exit `upto` runs
            x = block(x)
            feats.append(x)
        return [head(h) for head, h in zip(self.heads, feats)]


def exits_only_mlp(**kw) -> ExitsOnlyMLP:
    """A 3-exit MLP from a plugin that writes only forward_exits."""
    return ExitsOnlyMLP(**kw)


@dataclass(frozen=True, kw_only=True)
class FGSMConfig(AttackConfig):
    """eps: the L-inf radius (one full sign step)."""


class FGSM(Attack):
    """One sign-gradient step of size eps on the objective (Goodfellow et al. 2015); a plugin attack."""

    name = "plugin-fgsm"
    Config = FGSMConfig

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, objective: Objective,
            generator: torch.Generator) -> torch.Tensor:
        x_adv = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(objective_loss(model, x_adv, y, objective).sum(), [x_adv])
        return project(x + self.config.eps * grad.sign(), x, self.config.eps)


def guide_modules() -> dict[str, types.ModuleType]:
    """Run every Python block of the guide that starts with a ``# path/to/module.py`` line, as that module
    (registered in ``sys.modules``, as an installed plugin's module would be)."""
    text = GUIDE.read_text(encoding="utf-8")
    out: dict[str, types.ModuleType] = {}
    for m in _FILE_BLOCK.finditer(text):
        name = m["path"].replace("/", ".")
        module = types.ModuleType(name)
        module.__file__ = str(GUIDE)
        sys.modules[name] = module
        exec(compile(m["code"], f"{GUIDE}:{name}", "exec"), module.__dict__)
        out[name] = module
    if not out:
        raise RuntimeError(f"{GUIDE} has no ```python block starting with '# path/module.py'")
    return out


MyDefense = guide_modules()["my_package.my_defense"].MyDefense
