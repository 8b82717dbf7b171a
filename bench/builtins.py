"""What neokd-bench itself registers: one table, the only place a built-in name is declared.

Each registry (``bench/registry.py``) reads its row of :data:`BUILTINS` first, then the entry-point group
``neokd_bench.<kind>`` of every other installed distribution (the plugins). Both kinds of entry end up the same:
a name and a lazy ``"module:attr"`` target, added through ``Registry.add`` with the same naming rules, the same
duplicate check and the same kind check when it loads. The table is Python, so the built-ins do not depend on
installed metadata (a new one needs no reinstall of an editable install); nothing reads ``pyproject.toml``
at run time.

The paper's ablation and teacher-exit variants are not listed here by hand: their rows live in
``defenses/variants.py`` (``VARIANTS``) and each row adds its name, targeting
``neokd_bench.defenses.variants:<name with - as _>``.

This module imports no torch (the board lists names too).
"""

from __future__ import annotations

#: kind -> {name: "module:attr"}. Order is irrelevant; `neokd-bench list` sorts.
_TABLE: dict[str, dict[str, str]] = {
    "models": {
        "smallcnn": "neokd_bench.models.smallcnn:smallcnn",
        "msdnet": "neokd_bench.models.msdnet:msdnet",
        "msdnet_cifar10": "neokd_bench.models.msdnet:msdnet_cifar10",
        "msdnet_cifar100": "neokd_bench.models.msdnet:msdnet_cifar100",
        "msdnet_tinyimagenet": "neokd_bench.models.msdnet:msdnet_tinyimagenet",
        "msdnet_imagenet": "neokd_bench.models.msdnet:msdnet_imagenet",
        "timm_exits": "neokd_bench.models.timm_exits:timm_exits",
    },
    "datasets": {
        "fashion-mnist": "neokd_bench.data.fashion_mnist:fashion_mnist",
        "mnist": "neokd_bench.data.mnist:mnist",
        "cifar10": "neokd_bench.data.cifar:cifar10",
        "cifar100": "neokd_bench.data.cifar:cifar100",
        "tiny-imagenet": "neokd_bench.data.imagenet:tiny_imagenet",
        "imagenet": "neokd_bench.data.imagenet:imagenet",
    },
    "attacks": {
        "pgd": "neokd_bench.attacks.pgd:PGD",
        "cw": "neokd_bench.attacks.cw:CW",
        "apgd-ce": "neokd_bench.attacks.autoattack:APGDCE",
        "apgd-t": "neokd_bench.attacks.autoattack:APGDT",
        "apgd-dlr": "neokd_bench.attacks.autoattack:APGDDLR",
        "fab": "neokd_bench.attacks.autoattack:FAB",
        "square": "neokd_bench.attacks.autoattack:Square",
        "autoattack": "neokd_bench.attacks.autoattack:MultiExitAutoAttack",
        "autoattack-standard": "neokd_bench.attacks.autoattack:StandardAutoAttack",
        "slowdown": "neokd_bench.attacks.slowdown:Slowdown",
        "policy-pgd": "neokd_bench.attacks.policy_pgd:PolicyPGD",
    },
    # exit policies of budgeted prediction (`eval --policy NAME`)
    "policies": {
        "max-softmax": "neokd_bench.evaluation.policies:MaxSoftmax",
        "entropy": "neokd_bench.evaluation.policies:Entropy",
        "patience": "neokd_bench.evaluation.policies:Patience",
    },
    "defenses": {
        "clean": "neokd_bench.defenses.clean:Clean",
        "adv": "neokd_bench.defenses.adv:Adv",
        "skd": "neokd_bench.defenses.skd:SKD",
        "ard": "neokd_bench.defenses.ard:ARD",
        "lw": "neokd_bench.defenses.lw:LW",
        "pgd-te": "neokd_bench.defenses.teat:PGDTE",
        "trades-te": "neokd_bench.defenses.teat:TRADESTE",
        "neokd": "neokd_bench.defenses.neokd:NEOKD",
    },
}


def builtin_targets(kind: str) -> dict[str, str]:
    """The built-in entries of registry ``kind`` (``"models"``, ..., ``"defenses"``): name -> ``module:attr``.
    An unknown kind (a registry made for a test) has none."""
    table = dict(_TABLE.get(kind, {}))
    if kind == "defenses":
        from neokd_bench.defenses.variants import VARIANTS, target

        table.update({v.name: target(v) for v in VARIANTS})
    return table
