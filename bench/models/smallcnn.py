"""SmallCNN with 3 exits, the MNIST network of Triple-Wins (Hu et al., ICLR 2020), as used by NEO-KD.

Architecture (DESIGN.md, "Models"); 1x28x28 input:

* trunk: conv(1->32,3) ReLU | exit 1 | conv(32->32,3) ReLU maxpool conv(32->64,3) ReLU | exit 2 |
  conv(64->64,3) ReLU maxpool | fc 1024->200 ReLU dropout(0.5) fc 200->200 ReLU fc 200->10 (exit 3);
* exit 1 head: conv(32->16,3,stride 2) ReLU maxpool | fc 576->200 ReLU dropout fc 200->200 ReLU fc 200->10;
* exit 2 head: maxpool | fc 1600->200 ReLU dropout fc 200->200 ReLU fc 200->10.

Assumption: the design card lists no activation inside the heads; we put a ReLU after every hidden
conv/fc layer of a head, as in the trunk. Normalization defaults to identity (mean 0, std 1), as
Triple-Wins feeds raw [0, 1] MNIST pixels; a dataset may pass its own statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import MultiExitModel


def _mlp_head(in_features: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, 200), nn.ReLU(inplace=True), nn.Dropout(dropout),
        nn.Linear(200, 200), nn.ReLU(inplace=True),
        nn.Linear(200, num_classes),
    )


class SmallCNN(MultiExitModel):
    def __init__(self, num_classes: int = 10, in_chans: int = 1, dropout: float = 0.5,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__(num_exits=3, num_classes=num_classes, input_size=(in_chans, 28, 28),
                         mean=mean or [0.0] * in_chans, std=std or [1.0] * in_chans)
        self.block1 = nn.Sequential(nn.Conv2d(in_chans, 32, 3), nn.ReLU(inplace=True))
        self.block2 = nn.Sequential(
            nn.Conv2d(32, 32, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(inplace=True),
        )
        self.block3 = nn.Sequential(nn.Conv2d(64, 64, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.exit1 = nn.Sequential(
            nn.Conv2d(32, 16, 3, stride=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            _mlp_head(576, num_classes, dropout),
        )
        self.exit2 = nn.Sequential(nn.MaxPool2d(2), _mlp_head(1600, num_classes, dropout))
        self.exit3 = _mlp_head(1024, num_classes, dropout)

    def forward_exits(self, x: torch.Tensor, upto: int) -> list[torch.Tensor]:
        return self._run(x, upto, last_only=False)

    def forward_last(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return self._run(x, k, last_only=True)[0]

    cascades = True

    def forward_cascade(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        blocks, heads = (self.block1, self.block2, self.block3), (self.exit1, self.exit2, self.exit3)
        return self.sequential_cascade(xs, lambda k, h: blocks[k](h), lambda k, h: heads[k](h))

    def _run(self, x: torch.Tensor, upto: int, last_only: bool) -> list[torch.Tensor]:
        heads = (self.exit1, self.exit2)
        outs = []
        h = x
        for k, block in enumerate((self.block1, self.block2)):
            h = block(h)
            if k == upto or not last_only:
                outs.append(heads[k](h))
            if k == upto:
                return outs
        outs.append(self.exit3(self.block3(h)))
        return outs


def smallcnn(**kw) -> SmallCNN:
    """SmallCNN, 3 exits (Triple-Wins' MNIST network); 1x28x28 input."""
    return SmallCNN(**kw)
