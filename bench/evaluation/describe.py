"""The ``model`` section of a result file: what was evaluated, with its size and cost."""

from __future__ import annotations

from typing import Any

import torch


def describe_model(model: torch.nn.Module, name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The ``model`` section of a result: name, kwargs, exits, classes, input size, params, fvcore FLOPs per exit."""
    from ..flops import exit_flops
    from ..models.base import count_params

    return {
        "name": name,
        "kwargs": dict(kwargs),
        "num_exits": int(model.num_exits),
        "num_classes": int(model.num_classes),
        "input_size": [int(v) for v in model.input_size],
        "params": int(count_params(model)),
        "flops_per_exit": [int(v) for v in exit_flops(model)],
    }
