"""Efficiency robustness: what an attacker does to the *cost* of budgeted prediction,
and how an attacker who knows the exit policy does against its accuracy.

At one budget of the budgeted evaluation (an allocation of the App. A.3 family; thresholds from the clean
validation split only, by the chosen exit policy), :func:`efficiency_point` gives the mean FLOPs per test
sample, the exit histogram (fraction of samples leaving at each exit), the mean exit and the accuracy:

* clean;
* under ``slowdown`` (DeepSloth-style, :mod:`neokd_bench.attacks.slowdown`);
* under max-average PGD (Eq. 2).

The *slowdown factor* is the attacked mean cost over the clean mean cost (1 = no effect; the largest
possible is the last exit's cost over the clean mean). Attacks are repeated over the protocol's attack
seeds; the factor is reported as the mean over seeds with its std and every seed's value.

The same figures are given for every registered exit policy (``policies``), each at its own thresholds
for the same allocation. ``policy-pgd`` (:mod:`neokd_bench.attacks.policy_pgd`) is run at a few budgets
spread over the curve (``protocol.policy_budgets``; ``"all"``: every budget), each with that budget's
thresholds, and compared with max-average at the same budget and thresholds: ``gap`` is max-average's accuracy minus
policy-pgd's (positive: the adaptive attack is stronger).

The default budget (``budget_index``) is the allocation of the family closest to an equal share of
validation samples per exit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .anytime import ExitOutcomes
from .budgeted import thresholds_to_json
from .policies import ExitPolicy, create_policy, list_policies

SLOWDOWN = "slowdown"
MAX_AVERAGE = "pgd:max-average"


def correct_table(out: ExitOutcomes, ensemble: bool = True) -> np.ndarray:
    """(N, L) bool: the prediction returned at exit k is right (ensemble or the exit's own)."""
    return np.asarray(out.ens_correct if ensemble else out.top1, dtype=bool)


def efficiency_point(policy: ExitPolicy, out: ExitOutcomes, thresholds: Sequence[float], exit_mflops: np.ndarray,
                     ensemble: bool = True) -> dict[str, Any]:
    """Mean MFLOPs, exit histogram (fractions), mean exit (0-based) and accuracy of ``out`` under the policy."""
    exits = policy.exits(policy.scores(out, ensemble), thresholds)
    n, num_exits = len(exits), len(exit_mflops)
    hist = np.bincount(exits, minlength=num_exits) / max(n, 1)
    corr = correct_table(out, ensemble)
    return {"mflops_mean": float(np.asarray(exit_mflops)[exits].mean()) if n else 0.0,
            "exit_histogram": [float(v) for v in hist],
            "mean_exit": float(exits.mean()) if n else 0.0,
            "accuracy": float(corr[np.arange(n), exits].mean()) if n else 0.0}


def _std(v: np.ndarray) -> float:
    return float(v.std(ddof=1)) if len(v) > 1 else 0.0


def attacked_point(policy: ExitPolicy, outs: Sequence[ExitOutcomes], seeds: Sequence[int], thresholds,
                   exit_mflops: np.ndarray, clean_mflops: float, ensemble: bool = True) -> dict[str, Any]:
    """:func:`efficiency_point` averaged over attack seeds, with the slowdown factor and every seed's value."""
    per_seed = [{"seed": int(s), **efficiency_point(policy, o, thresholds, exit_mflops, ensemble)}
                for s, o in zip(seeds, outs)]
    for e in per_seed:
        e["factor"] = e["mflops_mean"] / clean_mflops if clean_mflops > 0 else 0.0
    mean = lambda key: float(np.mean([e[key] for e in per_seed]))
    factors = np.array([e["factor"] for e in per_seed])
    return {"mflops_mean": mean("mflops_mean"),
            "exit_histogram": [float(v) for v in np.mean([e["exit_histogram"] for e in per_seed], axis=0)],
            "mean_exit": mean("mean_exit"), "accuracy": mean("accuracy"),
            "factor": float(factors.mean()), "factor_std": _std(factors), "per_seed": per_seed}


def default_budget_index(allocations: Sequence[Sequence[int]]) -> int:
    """The allocation closest (L1) to an equal share of validation samples per exit."""
    a = np.asarray(allocations, dtype=np.float64)
    share = a.sum(axis=1, keepdims=True) / a.shape[1]
    return int(np.abs(a - share).sum(axis=1).argmin())


def policy_budget_indices(num_allocations: int, count: int | str) -> list[int]:
    """``count`` allocation indices spread evenly over the curve, both ends included; ``"all"``: every one."""
    if count == "all":
        return list(range(num_allocations))
    return sorted({int(v + 0.5) for v in np.linspace(0, num_allocations - 1, max(count, 1))})  # v >= 0


def policy_block(policy: ExitPolicy, *, clean_val: ExitOutcomes, clean_test: ExitOutcomes,
                 attacked: dict[str, list[ExitOutcomes]], seeds: dict[str, Sequence[int]], allocation,
                 exit_mflops: np.ndarray, ensemble: bool = True) -> dict[str, Any]:
    """Clean and attacked figures for one policy at the thresholds it calibrates on ``clean_val`` only."""
    thresholds = policy.calibrate(policy.scores(clean_val, ensemble), allocation)
    clean = efficiency_point(policy, clean_test, thresholds, exit_mflops, ensemble)
    block: dict[str, Any] = {"thresholds": thresholds_to_json(thresholds), "clean": clean}
    for label, outs in attacked.items():
        if outs:
            block[label] = attacked_point(policy, outs, seeds[label], thresholds, exit_mflops,
                                          clean["mflops_mean"], ensemble)
    return block


def efficiency_section(*, policy: str, clean_val: ExitOutcomes, clean_test: ExitOutcomes,
                       attacked: dict[str, list[ExitOutcomes]], seeds: dict[str, Sequence[int]],
                       allocations: Sequence[Sequence[int]], exit_mflops: Sequence[float],
                       budget_index: int | None = None, ensemble: bool = True,
                       policy_pgd: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``evaluation.efficiency`` section: the chosen policy's figures at the top level (``clean``,
    ``slowdown``, ``pgd:max-average``), every registered policy under ``policies``, and ``policy-pgd``."""
    mflops = np.asarray(exit_mflops, dtype=np.float64)
    idx = default_budget_index(allocations) if budget_index is None else int(budget_index)
    if not 0 <= idx < len(allocations):
        from ..errors import UsageError

        raise UsageError(f"budget index {idx} is out of range; use 0 .. {len(allocations) - 1}")
    alloc = allocations[idx]
    blocks = {name: policy_block(create_policy(name), clean_val=clean_val, clean_test=clean_test, attacked=attacked,
                                 seeds=seeds, allocation=alloc, exit_mflops=mflops, ensemble=ensemble)
              for name in sorted(set(list_policies()) | {policy})}
    chosen = blocks[policy]
    section: dict[str, Any] = {"policy": policy, "budget_index": idx, "allocation": [int(v) for v in alloc],
                               "ensemble": bool(ensemble), "thresholds_on": "clean", "exit_mflops": mflops.tolist(),
                               **{k: v for k, v in chosen.items()}, "policies": blocks}
    if policy_pgd is not None:
        section["policy-pgd"] = policy_pgd
    return section


def policy_pgd_block(policy: ExitPolicy, *, budget_indices: Sequence[int], thresholds: Sequence[Sequence[float]],
                     adaptive: Sequence[list[ExitOutcomes]], max_average: list[ExitOutcomes], seeds: Sequence[int],
                     exit_mflops: np.ndarray, ensemble: bool = True) -> dict[str, Any]:
    """Accuracy and cost under the policy of ``policy-pgd`` (one run per budget) against max-average, per budget.

    ``adaptive[i]`` holds one :class:`ExitOutcomes` per seed for ``budget_indices[i]``."""
    rows = {"budget_index": [], "mflops": [], "accuracy": [], "accuracy_std": [], "max_average_mflops": [],
            "max_average_accuracy": [], "max_average_accuracy_std": [], "gap": [], "per_seed": []}
    for b, t, outs in zip(budget_indices, thresholds, adaptive):
        ad = [efficiency_point(policy, o, t, exit_mflops, ensemble) for o in outs]
        ma = [efficiency_point(policy, o, t, exit_mflops, ensemble) for o in max_average]
        acc, ma_acc = np.array([p["accuracy"] for p in ad]), np.array([p["accuracy"] for p in ma])
        rows["budget_index"].append(int(b))
        rows["mflops"].append(float(np.mean([p["mflops_mean"] for p in ad])))
        rows["accuracy"].append(float(acc.mean()))
        rows["accuracy_std"].append(_std(acc))
        rows["max_average_mflops"].append(float(np.mean([p["mflops_mean"] for p in ma])))
        rows["max_average_accuracy"].append(float(ma_acc.mean()))
        rows["max_average_accuracy_std"].append(_std(ma_acc))
        rows["gap"].append(float(ma_acc.mean() - acc.mean()))
        rows["per_seed"].append([{"seed": int(s), "accuracy": p["accuracy"], "max_average_accuracy": q["accuracy"]}
                                 for s, p, q in zip(seeds, ad, ma)])
    rows["thresholds"] = [thresholds_to_json(np.asarray(t, dtype=np.float64)) for t in thresholds]
    rows["policy"] = policy.name
    return rows


def summary_line(section: dict[str, Any]) -> str:
    """One line: clean MFLOPs per sample and each attack's slowdown factor at the section's budget."""
    parts = [f"{label} x{entry['factor']:.3f}" + (f"±{entry['factor_std']:.3f}" if entry.get("factor_std") else "")
             for label, entry in section.items() if isinstance(entry, dict) and "factor" in entry]
    return (f"efficiency ({section['policy']}, budget {section['budget_index']}): clean "
            f"{section['clean']['mflops_mean']:.3f} MFLOPs/sample; slowdown factor " + ", ".join(parts))


def run_efficiency(model: Any, x_test, y_test, *, clean_val: ExitOutcomes, clean_test: ExitOutcomes,
                   adv_test: dict[str, list[ExitOutcomes]], attacks_out: dict[str, Any], dataset_key: str,
                   protocol: Any, device: Any, exit_costs: Sequence[float], batch_size: int = 256,
                   ensemble: bool = True, task: Any = None) -> dict[str, Any]:
    """Run what the section needs that the other metrics did not (slowdown, max-average if absent, policy-pgd
    at ``protocol.policy_budgets`` budgets) and build it. Each attack run is recorded in ``attacks_out``."""
    from .anytime import collect_outcomes
    from .attacks import resolve_attacks
    from .budgeted import allocation_family

    policy_name = str(getattr(protocol, "policy", "max-softmax"))
    policy = create_policy(policy_name)
    allocations = allocation_family(clean_val.n, clean_test.num_exits,
                                    count=int(getattr(protocol, "budget_allocations", 100)))
    mflops = np.asarray(exit_costs, dtype=np.float64) / 1e6
    specs = [s for s in ({"name": "slowdown"}, {"name": "pgd", "objective": "max-average"})
             if not adv_test.get(s["name"] + (":" + s["objective"] if "objective" in s else ""))]
    resolved = resolve_attacks(specs, dataset_key=dataset_key, protocol=protocol)
    attacked = {label: adv_test[label] for label in (SLOWDOWN, MAX_AVERAGE) if adv_test.get(label)}
    seeds: dict[str, Sequence[int]] = {label: attacks_out[label]["seeds"] for label in attacked}

    def run(ra, **extra) -> list[ExitOutcomes]:
        outs = []
        for seed in ra.seeds:
            attack = ra.build(seed, **extra)
            outs.append(collect_outcomes(model, x_test, y_test, device=device, batch_size=batch_size, attack=attack,
                                         on_batch=task(f"{ra.label} seed {seed}", len(y_test)) if task else None))
        desc = attack.describe()
        cfg = {k: v for k, v in desc["config"].items() if k not in ("seed", "thresholds")}
        attacks_out.setdefault(ra.label, {"name": desc["name"], "config": cfg, "model_mode": desc.get("model_mode"),
                                          "seeds": list(ra.seeds)})
        return outs

    for ra in resolved:
        attacked[ra.label] = run(ra)
        seeds[ra.label] = ra.seeds

    count = getattr(protocol, "policy_budgets", 5)
    budgets = policy_budget_indices(len(allocations), count if count == "all" else int(count))
    block = None
    if budgets:
        (pp,) = resolve_attacks([{"name": "policy-pgd", "policy": policy_name, "ensemble": bool(ensemble)}],
                                dataset_key=dataset_key, protocol=protocol)
        val_scores = policy.scores(clean_val, ensemble)
        ths = [policy.calibrate(val_scores, allocations[b]) for b in budgets]
        # the attack depends on the budget only through its thresholds (the last one plays no part: the last
        # exit takes every sample left); budgets that share them share one run
        done: dict[tuple, list[ExitOutcomes]] = {}
        adaptive = []
        for t in ths:
            key = tuple(None if not np.isfinite(v) else float(v) for v in t[:-1]) + (None,)
            if key not in done:
                done[key] = run(pp, thresholds=key)
            adaptive.append(done[key])
        block = policy_pgd_block(policy, budget_indices=budgets, thresholds=ths, adaptive=adaptive,
                                 max_average=attacked[MAX_AVERAGE], seeds=seeds[MAX_AVERAGE], exit_mflops=mflops,
                                 ensemble=ensemble)
    return efficiency_section(policy=policy_name, clean_val=clean_val, clean_test=clean_test, attacked=attacked,
                              seeds=seeds, allocations=allocations, exit_mflops=mflops,
                              budget_index=getattr(protocol, "budget_index", None), ensemble=ensemble,
                              policy_pgd=block)


def budgeted_policy_pgd(model: Any, x_test, y_test, *, clean_val: ExitOutcomes, protocol: Any, dataset_key: str,
                        device: Any, exit_costs: Sequence[float], attacks_out: dict[str, Any], batch_size: int = 256,
                        ensemble: bool = True, task: Any = None
                        ) -> tuple[dict[str, Any], list[tuple[int, int, ExitOutcomes]]]:
    """The budgeted curve under ``policy-pgd`` (the attacker who knows the exit policy's thresholds) at
    ``protocol.policy_budgets`` budgets of the allocation family, each attacked with that budget's thresholds
    (from the clean validation split), for every attack seed.

    Returns ``(curve, runs)``. ``curve`` has the shape of the other ``budgeted.curves`` entries (``mflops``,
    ``accuracy``, ``accuracy_std``, ``max_accuracy``, ``per_seed`` with each seed's ``mflops`` and ``accuracy``)
    at the budgets listed in ``budget_index`` (indices into ``budgeted.allocations``) instead of at every
    allocation. ``runs``: ``(budget index, seed, outcomes)`` for the per-sample record."""
    from .anytime import collect_outcomes
    from .attacks import resolve_attacks
    from .budgeted import allocation_family

    policy_name = str(getattr(protocol, "policy", "max-softmax"))
    policy = create_policy(policy_name)
    allocations = allocation_family(clean_val.n, clean_val.num_exits,
                                    count=int(getattr(protocol, "budget_allocations", 100)))
    mflops = np.asarray(exit_costs, dtype=np.float64) / 1e6
    count = getattr(protocol, "policy_budgets", 5)
    budgets = policy_budget_indices(len(allocations), count if count == "all" else int(count))
    (pp,) = resolve_attacks([{"name": "policy-pgd", "policy": policy_name, "ensemble": bool(ensemble)}],
                            dataset_key=dataset_key, protocol=protocol)
    val_scores = policy.scores(clean_val, ensemble)
    per_seed = {int(s): {"seed": int(s), "mflops": [], "accuracy": []} for s in pp.seeds}
    done: dict[tuple, list[ExitOutcomes]] = {}
    runs: list[tuple[int, int, ExitOutcomes]] = []
    attack = None
    for b in budgets:
        t = policy.calibrate(val_scores, allocations[b])
        # the last threshold plays no part (the last exit takes every sample left): budgets may share a run
        key = tuple(None if not np.isfinite(v) else float(v) for v in t[:-1]) + (None,)
        if key not in done:
            outs = []
            for seed in pp.seeds:
                attack = pp.build(seed, thresholds=key)
                outs.append(collect_outcomes(model, x_test, y_test, device=device, batch_size=batch_size,
                                             attack=attack, on_batch=task(f"policy-pgd budget {b} seed {seed}",
                                                                          len(y_test)) if task else None))
            done[key] = outs
        for seed, o in zip(pp.seeds, done[key]):
            pt = efficiency_point(policy, o, t, mflops, ensemble)
            per_seed[int(seed)]["mflops"].append(pt["mflops_mean"])
            per_seed[int(seed)]["accuracy"].append(pt["accuracy"])
            runs.append((int(b), int(seed), o))
    if attack is not None:
        desc = attack.describe()
        cfg = {k: v for k, v in desc["config"].items() if k not in ("seed", "thresholds")}
        attacks_out.setdefault(pp.label, {"name": desc["name"], "config": cfg, "model_mode": desc.get("model_mode"),
                                          "seeds": list(pp.seeds)})
    acc = np.array([e["accuracy"] for e in per_seed.values()])
    cost = np.array([e["mflops"] for e in per_seed.values()])
    std = acc.std(axis=0, ddof=1) if len(acc) > 1 else np.zeros(acc.shape[1])
    curve = {"budget_index": [int(b) for b in budgets], "mflops": cost.mean(axis=0).tolist(),
             "accuracy": acc.mean(axis=0).tolist(), "accuracy_std": std.tolist(),
             "max_accuracy": float(acc.mean(axis=0).max()) if len(budgets) else 0.0,
             "policy": policy_name, "per_seed": list(per_seed.values())}
    return curve, runs
