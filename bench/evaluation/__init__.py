"""Evaluation of a trained multi-exit model: anytime accuracy, budgeted accuracy against FLOPs, and
exit-to-exit adversarial transferability (paper Sec. 4, Results 1-3; App. A.2-A.3; docs/design.md).

One job per module:

* :mod:`.pipeline` - :func:`evaluate`, the orchestration: a table of sections (clean pass, attacks, metrics);
* :mod:`.attacks` - which attacks run, with the dataset's threat model and the protocol's steps and seeds;
* :mod:`.options` - evaluation options as the command line gives them, checked before any work;
* :mod:`.describe` - the ``model`` section of a result;
* :mod:`.table` - the per-exit accuracy table;
* :mod:`.anytime`, :mod:`.budgeted`, :mod:`.transfer` - the metrics themselves, and, only when asked,
  :mod:`.efficiency`, :mod:`.calibration`, :mod:`.latency`;
* :mod:`.policies` - the exit policies of budgeted prediction (registry ``neokd_bench.policies``).

The names below are imported lazily, so that reading result files (``budgeted``, ``table``) never loads
torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "evaluate": "pipeline", "budgeted_section": "pipeline", "transfer_section": "pipeline",
    "dataset_tensors": "pipeline",
    "default_attacks": "attacks", "resolve_attacks": "attacks",
    "parse_attack_list": "options", "parse_metrics": "options", "parse_ints": "options",
    "METRICS": "options", "DEFAULT_METRICS": "options", "THRESHOLDS_ON": "options",
    "describe_model": "describe",
    "anytime_table": "table",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
