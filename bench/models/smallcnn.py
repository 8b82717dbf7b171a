"""SmallCNN with 3 exits, the MNIST network of Triple-Wins (Hu et al., ICLR 2020), as used by NEO-KD.

Architecture (docs/design.md, "Models"); 1x28x28 input:

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


class _OneChannelConvFn(torch.autograd.Function):
    """``conv2d(x, weight, bias)`` (stride 1, no padding) whose input gradient is a matmul and ``kh * kw``
    shifted adds instead of a transposed convolution: with one input channel the transposed convolution
    runs far below the CPU's peak (the 1->32 3x3 convolution's input gradient took 12% of the SmallCNN
    NEO-KD training step, most of it in the attack), while ``[N*H*W, C_out] @ [C_out, kh*kw]`` runs at it.
    The weight and bias gradients are PyTorch's own. Same function and gradients up to float rounding."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return nn.functional.conv2d(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            n, c_out, h, w = grad.shape
            kh, kw = weight.shape[-2:]
            taps = weight.reshape(c_out, kh * kw).t().to(grad.dtype)  # [kh*kw, C_out]
            if grad.is_contiguous(memory_format=torch.channels_last) and not grad.is_contiguous():
                # channels_last (the CPU training layout): a 1x1 convolution reads it as it lies
                cols = nn.functional.conv2d(grad, taps.reshape(kh * kw, c_out, 1, 1).contiguous(
                    memory_format=torch.channels_last))
            else:
                cols = torch.matmul(taps, grad.reshape(n, c_out, h * w)).view(n, kh * kw, h, w)
            gx = grad.new_zeros(n, h + kh - 1, w + kw - 1)
            for i in range(kh):
                for j in range(kw):
                    gx[:, i:i + h, j:j + w] += cols[:, i * kw + j]
            gx = gx.unsqueeze(1).to(x.dtype)
        if ctx.needs_input_grad[1] or (ctx.has_bias and ctx.needs_input_grad[2]):
            mask = [False, ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
            _, gw, gb = torch.ops.aten.convolution_backward(
                grad, x.to(grad.dtype), weight.to(grad.dtype), [weight.shape[0]] if ctx.has_bias else None,
                [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask)
            gw = None if gw is None else gw.to(weight.dtype)
        return gx, gw, gb


class OneChannelConv2d(nn.Conv2d):
    """``nn.Conv2d`` with one input channel, stride 1 and no padding, with a faster input gradient
    (:class:`_OneChannelConvFn`) on a CPU where only the input gradient is wanted: an input that requires grad
    and frozen weights, as in the frozen copy that training attacks differentiate (``fold_batchnorm``).
    Elsewhere it is ``nn.Conv2d``; the same parameters and state dict."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and not self.weight.requires_grad and self.in_channels == 1 and self.groups == 1 \
                and self.stride == (1, 1) and self.padding == (0, 0) and self.dilation == (1, 1) \
                and x.device.type == "cpu":
            return _OneChannelConvFn.apply(x, self.weight, self.bias)
        return super().forward(x)


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
        conv1 = OneChannelConv2d if in_chans == 1 else nn.Conv2d
        self.block1 = nn.Sequential(conv1(in_chans, 32, 3), nn.ReLU(inplace=True))
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
    graph_safe = True  # no host sync, no data-dependent control flow: CUDA graphs (attacks.graphs)

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
