"""Which attacks an evaluation runs, and with what settings.

An attack is a dict ``{"name": "pgd", "objective": "average", ...}`` of registry name and config fields;
optional ``"label"`` (default ``name:objective``) and ``"seeds"`` (default ``protocol.attack_seeds``). Every
attack gets the dataset's ``eps`` (:func:`neokd_bench.presets.attack_settings`) unless it gives its own, and
every attack with a ``step_size`` (PGD, CW) the dataset's PGD step size; PGD and its subclasses (``slowdown``,
``policy-pgd``) also get ``random_start=True`` and ``steps=protocol.steps``; other attacks keep their own
defaults for everything else. Attacks run with the model in eval mode (``mode="eval"``), which is recorded
with each attack's resolved config.

Each batch is attacked with the attack seed and the samples' positions in the evaluated split
(``attack(model, x, y, index=...)``, see :func:`.anytime.collect_outcomes`), so random starts differ from batch
to batch and a sample's start does not depend on the batch size (:class:`neokd_bench.attacks.base.AttackRNG`).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from typing import Any

from ..errors import UsageError


def default_attacks(protocol: Any) -> list[dict[str, Any]]:
    """PGD-``protocol.steps`` with each objective of ``protocol.attacks`` (e.g. max-average, average)."""
    return [{"name": "pgd", "objective": obj} for obj in protocol.attacks]


def per_exit_attacks(protocol: Any, num_exits: int) -> list[dict[str, Any]]:
    """The protocol's attacks of other kinds (``protocol.per_exit_attacks``, e.g. APGD-DLR and Square as in
    AutoAttack), each on every exit alone (``exit:k``), on the first ``protocol.per_exit_limit`` test images, with
    the protocol's budgets (``apgd_steps``, ``square_queries``)."""
    budgets = {"apgd-dlr": {"steps": int(getattr(protocol, "apgd_steps", 100))},
               "apgd-ce": {"steps": int(getattr(protocol, "apgd_steps", 100))},
               "square": {"n_queries": int(getattr(protocol, "square_queries", 5000))}}
    limit = getattr(protocol, "per_exit_limit", None)
    out = []
    for name in getattr(protocol, "per_exit_attacks", ()) or ():
        for k in range(num_exits):
            spec = {"name": name, "objective": f"exit:{k}", **budgets.get(name, {})}
            if limit is not None:
                spec["limit"] = int(limit)
            out.append(spec)
    return out


def _accepted_fields(builder: Any) -> set[str] | None:
    """Config fields a registered attack accepts (None: any)."""
    cfg = getattr(builder, "Config", None)
    if cfg is not None and dataclasses.is_dataclass(cfg):
        return {f.name for f in dataclasses.fields(cfg)}
    try:
        sig = inspect.signature(builder)
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return set(sig.parameters)


@dataclasses.dataclass
class _ResolvedAttack:
    label: str
    name: str
    kwargs: dict[str, Any]  # without seed
    seeds: tuple[int, ...]
    limit: int | None = None  # run on the first ``limit`` test images only (None: all)

    def build(self, seed: int, **extra: Any):
        import neokd_bench as nb

        return nb.create_attack(self.name, **{**self.kwargs, **extra}, seed=int(seed))


def resolve_attacks(specs: Sequence[dict[str, Any]], *, dataset_key: str, protocol: Any) -> list[_ResolvedAttack]:
    """Fill each attack dict with the dataset's threat model and the protocol's steps and seeds."""
    from ..attacks.pgd import PGD
    from ..presets import attack_settings
    from ..registry import ATTACKS

    settings = attack_settings(dataset_key, "test")
    out: list[_ResolvedAttack] = []
    labels: set[str] = set()
    for spec in specs:
        spec = dict(spec)
        name = spec.pop("name", None)
        if not isinstance(name, str):
            raise UsageError(f"attack {spec!r} has no name; write e.g. {{'name': 'pgd', 'objective': 'average'}}")
        label = spec.pop("label", None)
        seeds = tuple(int(s) for s in spec.pop("seeds", protocol.attack_seeds))
        limit = spec.pop("limit", None)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise UsageError(f"attack {name!r}: limit={limit!r}; give the number of test images, e.g. 500")
        if not seeds:
            raise UsageError(f"attack {name!r} has no seeds; pass e.g. --seeds 0,1,2")
        if "seed" in spec:
            raise UsageError(f"attack {name!r}: give seeds as 'seeds' (a list), not 'seed'")
        builder = ATTACKS.get(name)
        accepted = _accepted_fields(builder)
        # Any attack with a step size (PGD, CW) takes the dataset's PGD step size (presets.THREAT).
        defaults: dict[str, Any] = {"eps": settings["eps"], "step_size": settings["step_size"], "mode": "eval"}
        if isinstance(builder, type) and issubclass(builder, PGD):  # pgd and its kin: slowdown, policy-pgd
            defaults.update(steps=int(protocol.steps), random_start=bool(settings["random_start"]))
        kwargs = {k: v for k, v in defaults.items() if accepted is None or k in accepted}
        kwargs.update(spec)
        if label is None:
            label = f"{name}:{kwargs['objective']}" if "objective" in kwargs else name
        if label in labels:
            raise UsageError(f"attack {label!r} is given twice; give each attack once or a distinct 'label'")
        labels.add(label)
        out.append(_ResolvedAttack(label, name, kwargs, seeds, limit))
    return out
