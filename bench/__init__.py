"""neokd-bench: adversarial robustness of multi-exit networks (NEO-KD and its baselines).

Public API, timm style::

    import neokd_bench as nb
    model = nb.create_model("smallcnn")
    data = nb.load_dataset("fashion-mnist", source="bundled")
    attack = nb.create_attack("pgd", eps=0.1, step_size=0.025, steps=50, objective="max-average")
    defense = nb.create_defense("neokd", alpha=3.0, beta=1.0)
    nb.list_models("msdnet*")
"""

from __future__ import annotations

from typing import Any

from .errors import UsageError
from .registry import ATTACKS, DATASETS, DEFENSES, MODELS

__version__ = "0.1.0"

__all__ = [
    "create_model", "create_attack", "create_defense", "load_dataset",
    "list_models", "list_datasets", "list_attacks", "list_defenses", "UsageError", "__version__",
]


def create_model(name: str, **kw: Any):
    """Build a registered multi-exit model (``forward(x, upto=None) -> list[Tensor]``)."""
    return MODELS.build(name, kw)


def create_attack(name: str, **kw: Any):
    """Build a registered attack; call it as ``attack(model, x, y) -> x_adv``."""
    return ATTACKS.build(name, kw)


def create_defense(name: str, **kw: Any):
    """Build a registered defense from its config fields (defaults are the paper's)."""
    return DEFENSES.build(name, kw)


def load_dataset(name: str, root: str | None = None, **kw: Any):
    """Resolve a dataset: the folder given (or ``$NEOKD_DATA_ROOT``), the system location, the bundled subset."""
    return DATASETS.build(name, {"root": root, **kw})


def list_models(pattern: str = "*") -> list[str]:
    return MODELS.names(pattern)


def list_datasets(pattern: str = "*") -> list[str]:
    return DATASETS.names(pattern)


def list_attacks(pattern: str = "*") -> list[str]:
    return ATTACKS.names(pattern)


def list_defenses(pattern: str = "*") -> list[str]:
    return DEFENSES.names(pattern)
