"""Any timm CNN as a multi-exit network: an exit head on each feature stage of ``features_only``.

Goes beyond the NEO-KD paper (docs/design.md, "Models"). The backbone is
``timm.create_model(backbone, features_only=True, pretrained=False, out_indices=exit_stages)``; timm wraps
the network's top-level children in a ``FeatureListNet`` (a ``FeatureDictNet``: an ordered module dict
whose ``return_layers`` names the modules whose outputs are the feature stages). This module walks
that dict itself, so ``forward(x, upto=k)`` stops right after the module that yields the stage of exit
``k``; deeper stages never run.

Each exit head is global average pooling then one linear layer (no hidden layer, no dropout: the
lightest head that makes a stage's features a classifier, as in "linear probe" heads). The number of
exits is the number of stages selected (all by default; timm's ResNets give 5, the first being the
stem at stride 2).

Assumptions and limits:

* only backbones whose ``features_only`` wrapper is a ``FeatureDictNet``/``FeatureListNet`` (timm's
  default ``feature_cls``) can be truncated; hook-based (``FeatureHookNet``) and getter-based
  (``FeatureGetterNet``, most ViTs) wrappers raise :class:`UsageError`;
* random initialisation only (``pretrained=False``): nothing downloads;
* mean/std default to the backbone's ``pretrained_cfg`` statistics when the channel count matches,
  else identity; datasets pass their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import UsageError
from .base import MultiExitModel


class TimmExits(MultiExitModel):
    """A timm ``features_only`` backbone with a global-average-pool + linear head per selected stage."""

    def __init__(self, backbone: str = "resnet18", num_classes: int = 10, in_chans: int = 3,
                 input_size: Sequence[int] = (3, 32, 32), exit_stages: Sequence[int] | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 **timm_kw: Any) -> None:
        import timm
        from timm.models._features import FeatureDictNet

        input_size = tuple(int(v) for v in input_size)
        if len(input_size) != 3 or input_size[0] != in_chans:
            raise UsageError(f"timm_exits: input_size {input_size} must be (C, H, W) with C = in_chans = {in_chans}")
        if "features_only" in timm_kw or "pretrained" in timm_kw:
            raise UsageError("timm_exits sets features_only=True and pretrained=False itself; drop those options")
        if exit_stages is not None:
            exit_stages = [int(i) for i in exit_stages]
            if not exit_stages or sorted(set(exit_stages)) != exit_stages:
                raise UsageError("timm_exits: exit_stages must be increasing stage indices, e.g. 1,2,3,4")
            timm_kw["out_indices"] = tuple(exit_stages)
        if not timm.is_model(backbone):
            raise UsageError(f"unknown timm backbone {backbone!r}; see timm.list_models() for the names")
        try:
            body = timm.create_model(backbone, features_only=True, pretrained=False, in_chans=in_chans,
                                     num_classes=0, **timm_kw)
        except (RuntimeError, ValueError, AssertionError, TypeError) as exc:
            raise UsageError(f"timm_exits: timm could not build {backbone!r} with features_only=True: {exc}") from exc
        if not isinstance(body, FeatureDictNet):
            raise UsageError(
                f"timm_exits: {backbone!r} has a {type(body).__name__} feature wrapper, which cannot stop early; "
                "choose a CNN whose features_only wrapper is FeatureListNet "
                "(e.g. resnet18, resnet50, regnety_002, convnext_atto)"
            )
        cfg = getattr(body, "pretrained_cfg", None) or {}
        c = in_chans
        if mean is None:
            m = cfg.get("mean")
            mean = list(m) if m is not None and len(m) == c else [0.0] * c
        if std is None:
            s = cfg.get("std")
            std = list(s) if s is not None and len(s) == c else [1.0] * c
        channels = body.feature_info.channels()
        super().__init__(num_exits=len(channels), num_classes=num_classes, input_size=input_size,
                         mean=mean, std=std)
        self.backbone_name = backbone
        self.body = body
        self.exit_stages = list(exit_stages) if exit_stages is not None else list(range(len(channels)))
        self.stage_reduction = body.feature_info.reduction()
        # names of the wrapper's modules, and for each exit the position of the module that yields it
        self._names = list(body.keys())
        order = {name: i for i, name in enumerate(self._names)}
        taps = sorted(body.return_layers.items(), key=lambda kv: order[kv[0]])
        self._tap_pos = [order[name] for name, _ in taps]
        self._concat = bool(getattr(body, "concat", False))
        self.heads = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch, num_classes)) for ch in channels
        )

    def forward_exits(self, x: torch.Tensor, upto: int) -> list[torch.Tensor]:
        return self._run(x, upto, last_only=False)

    def forward_last(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return self._run(x, k, last_only=True)[0]

    @property
    def cascades(self) -> bool:  # type: ignore[override]
        return not self._concat  # concatenated multi-tensor stages are not sliced by rows here

    def forward_cascade(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if self._concat:
            return super().forward_cascade(xs)

        def block(k: int, h: torch.Tensor) -> torch.Tensor:
            first = self._tap_pos[k - 1] + 1 if k else 0
            for name in self._names[first: self._tap_pos[k] + 1]:
                h = self.body[name](h)
            return h

        def head(k: int, h: torch.Tensor) -> torch.Tensor:
            return self.heads[k](h[0] if isinstance(h, (tuple, list)) else h)

        return self.sequential_cascade(xs, block, head)

    def _run(self, x: torch.Tensor, upto: int, last_only: bool) -> list[torch.Tensor]:
        outs: list[torch.Tensor] = []
        k = 0
        for i, name in enumerate(self._names[: self._tap_pos[upto] + 1]):
            x = self.body[name](x)
            if i == self._tap_pos[k]:
                if k == upto or not last_only:
                    feat = x
                    if isinstance(feat, (tuple, list)):
                        feat = torch.cat(list(feat), 1) if self._concat else feat[0]
                    outs.append(self.heads[k](feat))
                k += 1
        return outs

    def describe(self) -> dict[str, Any]:
        return {"arch": "timm_exits", "backbone": self.backbone_name, "exit_stages": self.exit_stages,
                "stage_reduction": self.stage_reduction, "head": "global-avg-pool + linear"}


def timm_exits(backbone: str = "resnet18", num_classes: int = 10, in_chans: int = 3,
               input_size: Sequence[int] = (3, 32, 32), exit_stages: Sequence[int] | None = None,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
               **timm_kw: Any) -> TimmExits:
    """A timm CNN (random init) with a global-average-pool + linear exit on each feature stage, or on
    ``exit_stages`` only. Beyond the paper; see the module docstring for the assumptions."""
    return TimmExits(backbone, num_classes, in_chans, input_size, exit_stages, mean, std, **timm_kw)
