"""The paper's ablation and teacher-exit variants: named presets of a base defense, one line each.

A variant is a registered name that builds its base defense with some config fields set: ``nkd`` is
``neokd`` with ``beta=0``. It is not a class of its own; the loss is the base's. A user's options still
apply on top (``create_defense("nkd", alpha=2)``). The built defense reports the variant's name, and its
``describe()`` (so every checkpoint and result file) records ``variant: {base, overrides, source}``.

Every row registers itself: the built-in table (``bench/builtins.py``) adds each row's name with the lazy
target ``neokd_bench.defenses.variants:<name with - as _>`` (:func:`target`), the same kind of entry a plugin's
entry point makes, so a new variant is one row here and nothing else. Exit indices are 0-based, like every
config (``skd-exit0`` is the paper's "SKD (exit 1)").
"""

from __future__ import annotations

from typing import Any

_TABLE7 = (
    "Table 7 variants keep EOKD (beta=1): its 'Ensemble neighbors (NKD)' row (44.20% avg.) equals "
    "full NEO-KD in Table 6, so the rows are NEO-KD with another NKD neighbourhood."
)


class Variant:
    """A named preset of the registered defense ``base``: ``base`` built with ``overrides``."""

    def __init__(self, name: str, base: str, overrides: dict[str, Any], source: str,
                 assumptions: tuple[str, ...] = ()) -> None:
        self.name, self.base, self.source = name, base, source
        self.overrides = dict(overrides)
        self.assumptions = tuple(assumptions)
        self.__doc__ = f"{source}: {base} with {', '.join(f'{k}={v!r}' for k, v in self.overrides.items())}"

    @property
    def builds(self) -> type:
        """The base defense class (the registry checks it is a Defense)."""
        from ..registry import DEFENSES

        return DEFENSES.get(self.base)

    @property
    def presets(self) -> dict[str, dict[str, Any]]:
        """A variant takes its base's tags (``nkd.paper``)."""
        return dict(getattr(self.builds, "presets", None) or {})

    def __call__(self, **config: Any) -> Any:
        cls = self.builds
        defense = cls.__new__(cls)
        defense.name, defense.variant = self.name, self  # before __init__, so that its errors name the variant
        defense.__init__(**{**self.overrides, **config})
        return defense

    def describe(self) -> dict[str, Any]:
        return {"base": self.base, "overrides": dict(self.overrides), "source": self.source}

    def __repr__(self) -> str:
        return f"Variant({self.name!r}, {self.base!r}, {self.overrides!r})"


VARIANTS: tuple[Variant, ...] = (
    Variant("nkd", "neokd", {"beta": 0.0}, "Table 6 (NKD only)"),
    Variant("eokd", "neokd", {"alpha": 0.0}, "Table 6 (EOKD only)"),
    Variant("nkd-no-ensemble", "neokd", {"neighbourhood": "self"}, "Table 7 (no ensembling)", (_TABLE7,)),
    Variant("nkd-ensemble-all", "neokd", {"neighbourhood": "all"}, "Table 7 (ensemble all exits)", (_TABLE7,)),
    Variant("skd-exit0", "skd", {"teacher": 0}, "Table A4 (SKD, exit 1 teaches)"),
    Variant("skd-exit1", "skd", {"teacher": 1}, "Table A4 (SKD, exit 2 teaches)"),
    Variant("skd-exit2", "skd", {"teacher": 2}, "Table A4 (SKD, exit 3 teaches)"),
    Variant("skd-ensemble", "skd", {"teacher": "ensemble"}, "Table A4 (SKD, ensemble teaches)"),
    Variant("ard-exit0", "ard", {"teacher": 0}, "Table A4 (ARD, exit 1 teaches)"),
    Variant("ard-exit1", "ard", {"teacher": 1}, "Table A4 (ARD, exit 2 teaches)"),
    Variant("ard-exit2", "ard", {"teacher": 2}, "Table A4 (ARD, exit 3 teaches)"),
    Variant("ard-ensemble", "ard", {"teacher": "ensemble"}, "Table A4 (ARD, ensemble teaches)"),
)
BY_ATTR: dict[str, Variant] = {v.name.replace("-", "_"): v for v in VARIANTS}


def target(variant: Variant) -> str:
    """The registry target of a row: ``neokd_bench.defenses.variants:<name with - as _>``."""
    return f"{__name__}:{variant.name.replace('-', '_')}"


def __getattr__(attr: str) -> Variant:
    """``variants:nkd_no_ensemble`` (an entry point's target) is the row named ``nkd-no-ensemble``."""
    try:
        return BY_ATTR[attr]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no variant {attr!r}") from None
