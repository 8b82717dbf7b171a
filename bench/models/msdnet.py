"""MSDNet: Multi-Scale Dense Networks (Huang, Chen, Li, Wu, van der Maaten & Weinberger, ICLR 2018),
the multi-exit backbone of the NEO-KD paper on CIFAR-10/100, Tiny-ImageNet and ImageNet.

Written for this project from the paper; the reference implementation
(github.com/kalviny/MSDNet-PyTorch, the one NEO-KD cites) was read for facts only. Facts taken from it:

* the number of scales is ``len(gr_factor)``; scale ``s`` carries ``c * gr_factor[s]`` channels where
  ``c`` is the running channel count (``n_channels``, grown by ``growth_rate`` per layer, halved by
  transitions);
* a layer's output at scale ``s`` is ``cat(x_s, down(x_{s-1}), normal(x_s))`` (each new half of
  ``growth_rate * gr_factor[s]`` channels) or, at the finest scale still alive, ``cat(x_s, normal(x_s))``;
  each conv is ``[1x1 bottleneck (width min(c_in, bn_factor[s] * c_out)) BN ReLU] 3x3 BN ReLU``, no biases;
* pruning "max" (the reference's default): with ``T`` layers in all and ``interval = ceil(T / S)``,
  layer ``n`` (1-based) reads ``S - floor(max(0, n-2) / interval)`` scales and writes
  ``S - floor((n-1) / interval)``, always dropping the finest; after a layer that drops a scale, a
  transition (1x1 conv BN ReLU per scale) compresses the channels by ``reduction`` = 0.5;
* blocks: ``base`` layers then ``step`` layers per block (stepmode "even") or ``step * i + 1``
  ("lin_grow"); one classifier after each block reads the coarsest scale;
* CIFAR stem: 3x3 conv BN ReLU at full resolution; ImageNet stem: 7x7/2 conv (with bias) BN ReLU,
  3x3/2 max-pool; each coarser scale: 3x3/2 conv BN ReLU of the previous one;
* CIFAR classifier: two 3x3/2 conv BN ReLU to 128 channels, average pool, linear; ImageNet classifier:
  the same two convs keeping the channel count;
* initialisation: conv weights N(0, 2 / (k*k*out)), BN weight 1 bias 0, linear bias 0.

Departures, all behind :class:`MSDNetConfig`: the classifier pools with ``AdaptiveAvgPool2d(1)``
instead of ``AvgPool2d(2)``: identical at the sizes the presets use (the feature map is 2x2 there), and
it also works for other input sizes. Inputs are [0, 1] pixels, normalised by the model's first layer.

Early exit: ``forward(x, upto=k)`` runs only blocks ``0..k`` and, inside them, only the scales that
exits ``0..k`` depend on. The coarse classifier of block ``k`` needs just a cone of scales from the
last layers of block ``k``; the finer scales those layers would also write are left for exit ``k+1``
(which computes them when asked). So the cost of ``upto=k`` (see ``neokd_bench.flops``) is exactly
what a sample leaving at exit ``k`` needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from ..errors import UsageError
from .base import MultiExitModel

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
TINY_MEAN, TINY_STD = (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class MSDNetConfig:
    """Architecture of an MSDNet. Defaults: NEO-KD's CIFAR-100 network (7 exits, nChannels 8)."""

    num_exits: int = 7           # nBlocks
    num_classes: int = 100
    input_size: tuple[int, int, int] = (3, 32, 32)
    stem: str = "cifar"          # "cifar" (3x3/1) or "imagenet" (7x7/2 + max-pool)
    head: str = "cifar"          # "cifar" (128-channel convs) or "imagenet" (convs keep the width)
    n_channels: int = 8          # nChannels (NEO-KD: 8 on CIFAR; MSDNet's own CIFAR runs use 16)
    growth_rate: int = 6
    gr_factor: tuple[int, ...] = (1, 2, 4)
    bn_factor: tuple[int, ...] = (1, 2, 4)
    step: int = 2
    base: int = 4
    stepmode: str = "even"       # "even" or "lin_grow"
    prune: str = "max"           # "max" (reference default) or "min"
    reduction: float = 0.5
    bottleneck: bool = True
    head_channels: int = 128     # width of the "cifar" head's convs
    lazy_scales: bool = True     # upto=k skips the scales exit k does not need (False: whole blocks, as
                                 # the reference's op counter assumes)

    def __post_init__(self) -> None:
        S = len(self.gr_factor)
        if self.num_exits < 1 or S < 1 or len(self.bn_factor) != S:
            raise UsageError("MSDNet needs num_exits >= 1 and gr_factor/bn_factor of the same length, e.g. 1-2-4")
        if self.stem not in ("cifar", "imagenet") or self.head not in ("cifar", "imagenet"):
            raise UsageError("MSDNet stem and head are 'cifar' or 'imagenet'")
        if self.stepmode not in ("even", "lin_grow") or self.prune not in ("max", "min"):
            raise UsageError("MSDNet stepmode is 'even' or 'lin_grow'; prune is 'max' or 'min'")
        if any(self.growth_rate * g % 2 for g in self.gr_factor[1:]):
            raise UsageError("MSDNet growth_rate * gr_factor[s] must be even for every scale s >= 1")

    @property
    def num_scales(self) -> int:
        return len(self.gr_factor)

    def steps(self) -> list[int]:
        return [self.base] + [self.step if self.stepmode == "even" else self.step * i + 1
                              for i in range(1, self.num_exits)]


# ---------------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------------
def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, bias: bool = False) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=bias),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def bottleneck_conv(c_in: int, c_out: int, stride: int, bottleneck: bool, bn_width: int) -> nn.Sequential:
    """[1x1 conv BN ReLU] 3x3 conv (stride 1 or 2) BN ReLU."""
    layers: list[nn.Module] = []
    c_inner = c_in
    if bottleneck:
        c_inner = min(c_in, bn_width * c_out)
        layers += list(conv_bn_relu(c_in, c_inner, kernel=1))
    layers += list(conv_bn_relu(c_inner, c_out, kernel=3, stride=stride))
    return nn.Sequential(*layers)


class ScaleUnit(nn.Module):
    """One output scale of an MSDNet layer: ``cat(x_s, [down(x_{s-1})], normal(x_s))``."""

    def __init__(self, c_fine: int | None, c_same: int, c_new: int, bottleneck: bool,
                 bn_fine: int | None, bn_same: int) -> None:
        super().__init__()
        if c_fine is None:  # the finest scale still alive: only a "normal" conv
            self.down = None
            self.normal = bottleneck_conv(c_same, c_new, 1, bottleneck, bn_same)
        else:
            self.down = bottleneck_conv(c_fine, c_new // 2, 2, bottleneck, bn_fine or 1)
            self.normal = bottleneck_conv(c_same, c_new // 2, 1, bottleneck, bn_same)

    def forward(self, fine: torch.Tensor | None, same: torch.Tensor) -> torch.Tensor:
        if self.down is None:
            return torch.cat([same, self.normal(same)], dim=1)
        return torch.cat([same, self.down(fine), self.normal(same)], dim=1)


class Stem(nn.Module):
    """First layer: the full-resolution stem, then a stride-2 conv per coarser scale."""

    kind = "stem"

    def __init__(self, cfg: MSDNetConfig) -> None:
        super().__init__()
        c0 = cfg.n_channels * cfg.gr_factor[0]
        in_chans = cfg.input_size[0]
        if cfg.stem == "cifar":
            first: nn.Module = conv_bn_relu(in_chans, c0)
        else:
            first = nn.Sequential(nn.Conv2d(in_chans, c0, 7, 2, 3), nn.BatchNorm2d(c0), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        convs = [first]
        for s in range(1, cfg.num_scales):
            convs.append(conv_bn_relu(cfg.n_channels * cfg.gr_factor[s - 1], cfg.n_channels * cfg.gr_factor[s],
                                      stride=2))
        self.scales = nn.ModuleList(convs)
        self.out_from = 0

    def inputs_needed(self, need: set[int]) -> set[int]:
        return set()

    def forward(self, x: torch.Tensor, need: frozenset[int]) -> list[torch.Tensor | None]:
        out: list[torch.Tensor | None] = []
        h = x
        for s, conv in enumerate(self.scales):  # each scale feeds the next, so all up to max(need) run
            if s > max(need):
                out.append(None)
                continue
            h = conv(h)
            out.append(h)
        return out


class MSDLayer(nn.Module):
    """One MSDNet layer: reads scales ``in_from..S-1`` and writes scales ``out_from..S-1``."""

    kind = "layer"

    def __init__(self, cfg: MSDNetConfig, c: int, in_from: int, out_from: int) -> None:
        super().__init__()
        g, gr, bn = cfg.growth_rate, cfg.gr_factor, cfg.bn_factor
        self.in_from, self.out_from = in_from, out_from
        units = {}
        for s in range(out_from, cfg.num_scales):
            fine = s > in_from
            units[str(s)] = ScaleUnit(c * gr[s - 1] if fine else None, c * gr[s], g * gr[s], cfg.bottleneck,
                                      bn[s - 1] if fine else None, bn[s])
        self.scales = nn.ModuleDict(units)

    def inputs_needed(self, need: set[int]) -> set[int]:
        out: set[int] = set()
        for s in need:
            out.add(s)
            if s > self.in_from:
                out.add(s - 1)
        return out

    def forward(self, xs: list[torch.Tensor | None], need: frozenset[int]) -> list[torch.Tensor | None]:
        out: list[torch.Tensor | None] = [None] * len(xs)
        for s in need:
            out[s] = self.scales[str(s)](xs[s - 1] if s > self.in_from else None, xs[s])  # type: ignore[arg-type]
        return out


class Transition(nn.Module):
    """Channel compression after a layer that dropped a scale: 1x1 conv BN ReLU per scale."""

    kind = "transition"

    def __init__(self, cfg: MSDNetConfig, c_in: int, c_out: int, out_from: int) -> None:
        super().__init__()
        self.out_from = out_from
        self.scales = nn.ModuleDict({
            str(s): conv_bn_relu(c_in * cfg.gr_factor[s], c_out * cfg.gr_factor[s], kernel=1)
            for s in range(out_from, cfg.num_scales)
        })

    def inputs_needed(self, need: set[int]) -> set[int]:
        return set(need)

    def forward(self, xs: list[torch.Tensor | None], need: frozenset[int]) -> list[torch.Tensor | None]:
        out: list[torch.Tensor | None] = [None] * len(xs)
        for s in need:
            out[s] = self.scales[str(s)](xs[s])
        return out


class Classifier(nn.Module):
    """Exit head on the coarsest scale: two 3x3/2 conv BN ReLU, global average pool, linear."""

    def __init__(self, c_in: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn_relu(c_in, width, stride=2), conv_bn_relu(width, width, stride=2),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.linear = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


# ---------------------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------------------
class MSDNet(MultiExitModel):
    """MSDNet with one exit per block; see the module docstring for the architecture and its sources."""

    def __init__(self, cfg: MSDNetConfig, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__(num_exits=cfg.num_exits, num_classes=cfg.num_classes, input_size=cfg.input_size,
                         mean=mean, std=std)
        self.config = cfg
        S = cfg.num_scales
        steps = cfg.steps()
        total = sum(steps)
        units: list[nn.Module] = [Stem(cfg)]
        exit_units: list[int] = []
        heads = []
        c, n = cfg.n_channels, 0
        for b in range(cfg.num_exits):
            for _ in range(steps[b]):
                n += 1
                if cfg.prune == "min":
                    n_in, n_out = min(S, total - n + 2), min(S, total - n + 1)
                else:
                    interval = math.ceil(total / S)
                    n_in = S - math.floor(max(0, n - 2) / interval)
                    n_out = S - math.floor((n - 1) / interval)
                units.append(MSDLayer(cfg, c, S - n_in, S - n_out))
                c += cfg.growth_rate
                transition = (n_in > n_out) if cfg.prune == "max" else n in (math.floor(total / 3),
                                                                            math.floor(2 * total / 3))
                if transition and cfg.reduction > 0:
                    c_new = math.floor(cfg.reduction * c)
                    units.append(Transition(cfg, c, c_new, S - n_out))
                    c = c_new
            exit_units.append(len(units) - 1)
            c_last = c * cfg.gr_factor[-1]
            width = cfg.head_channels if cfg.head == "cifar" else c_last
            heads.append(Classifier(c_last, width, cfg.num_classes))
        self.units = nn.ModuleList(units)
        self.heads = nn.ModuleList(heads)
        self.exit_units = exit_units
        self._plans = [self._plan(k) for k in range(cfg.num_exits)]
        # for the cascade: per unit, per output scale, the shallowest exit whose plan computes it (the plans
        # are nested: plan k+1 computes at every unit at least what plan k does)
        self._first_exit: list[dict[int, int]] = [{} for _ in units]
        for k, plan in enumerate(self._plans):
            for i, need in enumerate(plan):
                for s in need:
                    self._first_exit[i].setdefault(s, k)
        self._init_weights()

    def _plan(self, upto: int) -> list[frozenset[int]]:
        """For ``upto``, the output scales each unit must compute (walked backwards from the exits)."""
        S = self.config.num_scales
        last = self.exit_units[upto]
        heads_at = {self.exit_units[k] for k in range(upto + 1)}
        plan: list[frozenset[int]] = [frozenset()] * (last + 1)
        if not self.config.lazy_scales:
            return [frozenset(range(self.units[i].out_from, S)) for i in range(last + 1)]
        need: set[int] = set()
        for i in range(last, -1, -1):
            if i in heads_at:
                need.add(S - 1)
            plan[i] = frozenset(need)
            need = self.units[i].inputs_needed(need)  # type: ignore[operator]
        return plan

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_exits(self, x: torch.Tensor, upto: int) -> list[torch.Tensor]:
        return self._run(x, upto, last_only=False)

    def forward_last(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return self._run(x, k, last_only=True)[0]

    cascades = True
    graph_safe = True  # no host sync, no data-dependent control flow: CUDA graphs (attacks.graphs)

    def forward_cascade(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """One batched pass for groups ``xs[0..G-1]``, group ``k`` for exit ``k`` alone. Groups are stacked in
        exit order; a feature map at unit ``i``, scale ``s`` holds the rows of the groups ``k >= f``, ``f`` the
        shallowest exit whose plan needs it, so each unit runs once on a contiguous tail of the batch and
        group ``k`` gets exactly the scales of its own plan (the cost of ``upto=k`` without earlier heads).
        After exit ``k``'s unit, group ``k``'s rows go to head ``k`` and no deeper unit reads them."""
        G = self.check_groups(xs)
        sizes = [len(x) for x in xs]
        start = [sum(sizes[:k]) for k in range(G)]
        h = self.normalize(torch.cat(list(xs)))
        S = self.config.num_scales
        feats: list[tuple[torch.Tensor, int] | None] = [None] * S  # per scale: (rows of groups >= f, f)

        def tail(scale: int, g: int) -> torch.Tensor:
            t, f = feats[scale]  # type: ignore[misc]
            return t[start[g] - start[f]:]

        outs: list[torch.Tensor] = []
        for i, unit in enumerate(self.units[: self.exit_units[G - 1] + 1]):
            first = {s: k for s, k in self._first_exit[i].items() if k < G}
            new: list[tuple[torch.Tensor, int] | None] = [None] * S
            if unit.kind == "stem":  # each scale feeds the next: scale s runs for every group needing any s' >= s
                prev, prev_first = h, 0
                for s, conv in enumerate(unit.scales):
                    f = min((k for s2, k in first.items() if s2 >= s), default=None)
                    if f is None:
                        break
                    prev = conv(prev[start[f] - start[prev_first]:])
                    prev_first = f
                    new[s] = (prev, f)
            else:
                for s, f in sorted(first.items()):
                    if unit.kind == "layer":
                        fine = tail(s - 1, f) if s > unit.in_from else None
                        out = unit.scales[str(s)](fine, tail(s, f))
                    else:  # transition
                        out = unit.scales[str(s)](tail(s, f))
                    new[s] = (out, f)
            feats = new
            for k in range(G):
                if self.exit_units[k] == i:
                    rows = tail(S - 1, k)[: sizes[k]]
                    outs.append(self.heads[k](rows))
        return outs

    def _run(self, x: torch.Tensor, upto: int, last_only: bool) -> list[torch.Tensor]:
        # the plan of ``upto`` is also exactly what exit ``upto`` alone needs: the heads of earlier exits
        # read the coarsest scale, which the later blocks need anyway
        plan = self._plans[upto]
        outs: list[torch.Tensor] = []
        feats: Any = x
        k = 0
        for i, need in enumerate(plan):
            feats = self.units[i](feats, need)
            if i == self.exit_units[k]:
                if k == upto or not last_only:
                    outs.append(self.heads[k](feats[-1]))
                k += 1
        return outs

    def describe(self) -> dict[str, Any]:
        """JSON-ready architecture description for result files."""
        return {"arch": "msdnet", **asdict(self.config)}


def _build(defaults: MSDNetConfig, mean: Sequence[float] | None, std: Sequence[float] | None,
           default_mean: Sequence[float], default_std: Sequence[float], **kw: Any) -> MSDNet:
    for key in ("gr_factor", "bn_factor", "input_size"):
        if key in kw and kw[key] is not None:
            v = kw[key]
            kw[key] = tuple(int(t) for t in (v.split("-") if isinstance(v, str) else v))
    try:
        cfg = replace(defaults, **kw)
    except TypeError as exc:
        raise UsageError(f"msdnet: {exc}; the options are the fields of MSDNetConfig") from exc
    c = cfg.input_size[0]
    mean = list(mean) if mean is not None else (list(default_mean) if c == len(default_mean) else [0.0] * c)
    std = list(std) if std is not None else (list(default_std) if c == len(default_std) else [1.0] * c)
    return MSDNet(cfg, mean, std)


def msdnet(mean: Sequence[float] | None = None, std: Sequence[float] | None = None, **kw: Any) -> MSDNet:
    """Generic MSDNet (Huang et al., ICLR 2018); any :class:`MSDNetConfig` field is a keyword
    (``gr_factor``/``bn_factor`` also as "1-2-4"). Defaults: NEO-KD's CIFAR-100 network.
    mean/std default to the CIFAR-100 statistics for 3 channels, identity otherwise."""
    return _build(MSDNetConfig(), mean, std, CIFAR100_MEAN, CIFAR100_STD, **kw)


def msdnet_cifar10(num_classes: int = 10, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None, **kw: Any) -> MSDNet:
    """MSDNet for CIFAR-10 as in NEO-KD: 3 exits, stepmode even, step 2, base 4, growth 6, gr/bn factor
    1-2-4, nChannels 8, 32x32 input. The paper gives only "3 exits" for CIFAR-10; the remaining fields
    are its CIFAR-100 settings (which are MSDNet's anytime CIFAR settings with nChannels 8)."""
    cfg = MSDNetConfig(num_exits=3, num_classes=num_classes)
    return _build(cfg, mean, std, CIFAR10_MEAN, CIFAR10_STD, **kw)


def msdnet_cifar100(num_classes: int = 100, mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None, **kw: Any) -> MSDNet:
    """MSDNet for CIFAR-100 as in NEO-KD: 7 exits, stepmode even, step 2, base 4, growth 6, gr/bn factor
    1-2-4, nChannels 8 (the paper's stated change from MSDNet's 16), 32x32 input."""
    cfg = MSDNetConfig(num_exits=7, num_classes=num_classes)
    return _build(cfg, mean, std, CIFAR100_MEAN, CIFAR100_STD, **kw)


def msdnet_tinyimagenet(num_classes: int = 200, mean: Sequence[float] | None = None,
                        std: Sequence[float] | None = None, **kw: Any) -> MSDNet:
    """MSDNet for Tiny-ImageNet (64x64, 200 classes), 5 exits as in NEO-KD.

    The paper gives no other field; this project's choice: the CIFAR-style network extended by one
    scale, i.e. a 3x3/1 stem and four scales at 64/32/16/8 px (gr_factor and bn_factor 1-2-4-4, as in
    MSDNet's ImageNet network), stepmode even, step 2, base 4, growth 6, nChannels 8 (NEO-KD's CIFAR
    width), and the CIFAR head (128 channels; its two stride-2 convs take the 8x8 coarsest scale to 2x2).
    Reason: the scales then match CIFAR's 32/16/8 px at the three coarsest levels, the heads see the
    same 8x8 maps as on CIFAR, and no information is thrown away by an early stride; the ImageNet stem
    (/4 before the first scale) would leave a 2x2 coarsest scale at 64 px.
    """
    cfg = MSDNetConfig(num_exits=5, num_classes=num_classes, input_size=(3, 64, 64),
                       gr_factor=(1, 2, 4, 4), bn_factor=(1, 2, 4, 4))
    return _build(cfg, mean, std, TINY_MEAN, TINY_STD, **kw)


def msdnet_imagenet(num_classes: int = 1000, mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None, **kw: Any) -> MSDNet:
    """MSDNet for ImageNet as in NEO-KD and MSDNet's README: 5 exits, stepmode even, step 4, base 4,
    nChannels 32, growth 16, gr/bn factor 1-2-4-4, ImageNet stem and heads, 224x224 input."""
    cfg = MSDNetConfig(num_exits=5, num_classes=num_classes, input_size=(3, 224, 224), stem="imagenet",
                       head="imagenet", n_channels=32, growth_rate=16, gr_factor=(1, 2, 4, 4),
                       bn_factor=(1, 2, 4, 4), step=4, base=4)
    return _build(cfg, mean, std, IMAGENET_MEAN, IMAGENET_STD, **kw)
