"""Evaluation of a trained multi-exit model: anytime accuracy, budgeted accuracy against FLOPs, and
exit-to-exit adversarial transferability (paper Sec. 4, Results 1-3; App. A.2-A.3; docs/design.md).

:func:`evaluate` returns the ``evaluation`` section of a result file (plain JSON types). The pipeline:

1. the clean test set (first ``protocol.test_limit`` images) and, for budgeted prediction, the validation
   split (held out of the training set; first ``val_limit`` images, default ``protocol.test_limit``);
2. one clean pass (no autograd, all exits from one forward);
3. for every attack and attack seed: ``x_adv`` is made once per batch, then one forward under
   ``torch.inference_mode`` scores all exits; the per-sample tables it keeps serve both anytime and
   budgeted metrics, so no attack runs twice;
4. anytime summary (mean, std and every seed), budgeted curves (thresholds from the validation split only,
   by the exit policy ``protocol.policy``, :mod:`.policies`), and the transferability matrix (PGD single-exit
   attacks on the samples every exit gets right);
5. only when asked: efficiency (:mod:`.efficiency`), calibration (:mod:`.calibration`) and latency
   (:mod:`.latency`).

Attacks and their defaults: :mod:`neokd_bench.evaluation.attacks`.

A batch's attack is seeded with the attack seed (the attack's own ``torch.Generator``), so results are
reproducible for a given ``batch_size``, which is recorded.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import UsageError
from ..progress import Progress
from .anytime import ExitOutcomes, accuracy_summary, collect_outcomes, seeded_summary
from .attacks import default_attacks, per_exit_attacks, resolve_attacks
from .budgeted import allocation_family, budgeted_curve, thresholds_to_json
from .options import DEFAULT_METRICS, METRICS, THRESHOLDS_ON
from .outcomes import outcomes_section, record, worst_case
from .transfer import transfer_matrix


def dataset_tensors(ds: Any, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` samples of a split as float [0,1] images and int64 labels (no augmentation)."""
    if hasattr(ds, "subset") and hasattr(ds, "tensors"):
        return ds.subset(limit).tensors()
    n = len(ds) if limit is None else min(limit, len(ds))
    xs, ys = zip(*(ds[i] for i in range(n))) if n else ((), ())
    if not n:
        raise UsageError("the evaluation split is empty; check the dataset folder")
    return torch.stack(list(xs)).float(), torch.as_tensor(ys, dtype=torch.long)


def evaluate(model: torch.nn.Module, bundle: Any, *, dataset_key: str, protocol: Any,
             device: torch.device | str, metrics: Sequence[str] = DEFAULT_METRICS,
             attacks: list[dict[str, Any]] | None = None, thresholds_on: str = "clean", progress: bool = True,
             batch_size: int = 256, val_limit: int | None = None, ensemble: bool = True,
             exit_costs: Sequence[int] | None = None) -> dict[str, Any]:
    """Evaluate ``model`` on ``bundle`` and return the ``evaluation`` section of a result (JSON-ready).

    ``metrics`` is a subset of :data:`~.options.METRICS`: ``anytime``, ``budgeted``, ``transfer`` (the default)
    and, only when asked, ``efficiency`` (:mod:`.efficiency`), ``calibration`` (:mod:`.calibration`) and
    ``latency`` (:mod:`.latency`); the clean anytime numbers are always reported. ``protocol.policy`` is the
    exit policy of budgeted prediction (:mod:`.policies`). ``thresholds_on`` is ``"clean"`` (default) or
    ``"adversarial"`` (thresholds from validation data attacked by the same attack and seed). ``exit_costs``
    are the cumulative fvcore counts per exit (default :func:`neokd_bench.flops.exit_flops`).
    """
    t_total = time.perf_counter()
    metrics = tuple(metrics)
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise UsageError(f"unknown metric {bad[0]!r}; use any of {','.join(METRICS)}")
    if thresholds_on not in THRESHOLDS_ON:
        raise UsageError(f"thresholds_on={thresholds_on!r}; use clean or adversarial")
    device = torch.device(device)
    model = model.to(device).eval()
    num_exits = int(model.num_exits)
    specs = list(attacks if attacks is not None else default_attacks(protocol)) + per_exit_attacks(protocol, num_exits)
    resolved = resolve_attacks(specs, dataset_key=dataset_key, protocol=protocol)
    for ra in resolved:  # fail on a bad objective (e.g. exit index out of range) before any work starts
        if "objective" in ra.kwargs:
            from ..attacks.base import Objective

            Objective.parse(ra.kwargs["objective"]).check(model)
    want_adv = "anytime" in metrics or "budgeted" in metrics or "calibration" in metrics
    want_budget = "budgeted" in metrics
    want_val = want_budget or "efficiency" in metrics
    if val_limit is None:
        val_limit = protocol.test_limit

    x_test, y_test = dataset_tensors(bundle.test, protocol.test_limit)
    if want_val:
        x_val, y_val = dataset_tensors(bundle.val, val_limit)
    wall: dict[str, float] = {}
    ev: dict[str, Any] = {
        "protocol": {**_jsonable_protocol(protocol), "metrics": list(metrics), "batch_size": int(batch_size),
                     "val_limit": val_limit, "thresholds_on": thresholds_on, "ensemble": bool(ensemble)},
        "device": str(device),
        "n_test": len(y_test),
        "attacks": {},
    }
    if want_val:
        ev["n_val"] = len(y_val)

    adv_test: dict[str, list[ExitOutcomes]] = {}
    adv_val: dict[str, list[ExitOutcomes]] = {}
    limited: dict[str, list[ExitOutcomes]] = {}  # attacks on the first test images only
    policy_runs: list[tuple[int, int, ExitOutcomes]] = []  # policy-pgd on the budgeted curve
    attack_wall: dict[str, float] = {}
    with Progress(progress) as prog:
        t = time.perf_counter()
        clean = collect_outcomes(model, x_test, y_test, device=device, batch_size=batch_size,
                                 on_batch=prog.task("clean test", len(y_test)))
        clean_val = None
        if want_val:
            clean_val = collect_outcomes(model, x_val, y_val, device=device, batch_size=batch_size,
                                         on_batch=prog.task("clean val", len(y_val)))
        wall["clean_s"] = time.perf_counter() - t

        for ra in resolved:
            t = time.perf_counter()
            outs, vals = [], []
            described = None
            n_att = len(y_test) if ra.limit is None else min(ra.limit, len(y_test))
            for seed in ra.seeds:
                attack = ra.build(seed)
                if described is None:
                    described = attack.describe() if hasattr(attack, "describe") else {
                        "name": ra.name, "config": dict(ra.kwargs), "model_mode": None}
                if want_adv or ra.limit is not None:
                    outs.append(collect_outcomes(model, x_test[:n_att], y_test[:n_att], device=device,
                                                 batch_size=batch_size, attack=attack, candidates=True,
                                                 on_batch=prog.task(f"{ra.label} seed {seed} test", n_att)))
                if ra.limit is not None:
                    continue  # an attack on the first images only: anytime.limited and the worst case
                if want_budget and thresholds_on == "adversarial":
                    vals.append(collect_outcomes(model, x_val, y_val, device=device, batch_size=batch_size,
                                                 attack=attack,
                                                 on_batch=prog.task(f"{ra.label} seed {seed} val", len(y_val))))
            cfg = {k: v for k, v in dict(described.get("config", {})).items() if k != "seed"}
            ev["attacks"][ra.label] = {"name": described.get("name", ra.name), "config": cfg,
                                       "model_mode": described.get("model_mode"), "seeds": list(ra.seeds)}
            if ra.limit is not None:
                ev["attacks"][ra.label]["n"] = n_att
                limited[ra.label] = outs
            else:
                adv_test[ra.label], adv_val[ra.label] = outs, vals
            attack_wall[ra.label] = time.perf_counter() - t
        wall["attacks_s"] = float(sum(attack_wall.values()))

        # anytime ---------------------------------------------------------------------------------
        clean_sum = accuracy_summary(clean)
        adversarial = {}
        for ra in resolved:
            if adv_test.get(ra.label):
                adversarial[ra.label] = {**seeded_summary(adv_test[ra.label], ra.seeds),
                                         "wall_s": attack_wall[ra.label]}
        ev["anytime"] = {"n": len(y_test), "clean": clean_sum, "adversarial": adversarial}
        if limited:
            ev["anytime"]["limited"] = {
                ra.label: {**seeded_summary(limited[ra.label], ra.seeds), "n": ev["attacks"][ra.label]["n"],
                           "wall_s": attack_wall[ra.label]}
                for ra in resolved if ra.label in limited}

        if want_val and exit_costs is None:
            from ..flops import exit_flops

            exit_costs = exit_flops(model)
        if want_val and len(exit_costs) != num_exits:
            raise UsageError(f"exit_costs has {len(exit_costs)} entries for a {num_exits}-exit model")
        # budgeted --------------------------------------------------------------------------------
        if want_budget:
            t = time.perf_counter()
            ev["budgeted"] = budgeted_section(
                clean_val=clean_val, clean_test=clean, adv_test=adv_test, adv_val=adv_val,
                seeds={ra.label: ra.seeds for ra in resolved}, exit_costs=exit_costs,
                thresholds_on=thresholds_on, count=int(getattr(protocol, "budget_allocations", 100)),
                ensemble=ensemble, policy=str(getattr(protocol, "policy", "max-softmax")))
            if getattr(protocol, "budgeted_policy_pgd", False):
                from .efficiency import budgeted_policy_pgd

                ev["budgeted"]["curves"]["policy-pgd"], policy_runs = budgeted_policy_pgd(
                    model, x_test, y_test, clean_val=clean_val, protocol=protocol, dataset_key=dataset_key,
                    device=device, exit_costs=exit_costs, attacks_out=ev["attacks"], batch_size=batch_size,
                    ensemble=ensemble, task=prog.task)
            wall["budgeted_s"] = time.perf_counter() - t
        # per-sample outcomes, the worst case per exit and the masking verdict ------------------------
        if want_adv or limited:
            ev["outcomes"] = outcomes_section(
                n=len(y_test), num_exits=num_exits, eps=_threat_eps(dataset_key), clean_top1=clean.top1,
                attacks=[(ra.label, ra.seeds, adv_test.get(ra.label) or limited.get(ra.label) or [],
                          np.arange(len(y_test) if ra.limit is None else ev["attacks"][ra.label]["n"]))
                         for ra in resolved])
            ev["outcomes"]["records"] += [record(o.top1, np.arange(len(y_test)), label="policy-pgd", seed=seed,
                                                 candidate=None, budget_index=b) for b, seed, o in policy_runs]
            ev["anytime"]["worst_case"] = worst_case(ev["outcomes"], ev["attacks"])
        if getattr(protocol, "masking", False) and "outcomes" in ev:
            from .masking import protocol_masking

            t = time.perf_counter()
            ev["masking"] = protocol_masking(model, x_test, y_test, ev, device=device)
            wall["masking_s"] = time.perf_counter() - t
        # efficiency, calibration, latency ----------------------------------------------
        if "efficiency" in metrics:
            from .efficiency import run_efficiency

            t = time.perf_counter()
            ev["efficiency"] = run_efficiency(
                model, x_test, y_test, clean_val=clean_val, clean_test=clean, adv_test=adv_test,
                attacks_out=ev["attacks"], dataset_key=dataset_key, protocol=protocol, device=device,
                exit_costs=exit_costs, batch_size=batch_size, ensemble=ensemble, task=prog.task)
            wall["efficiency_s"] = time.perf_counter() - t
        if "calibration" in metrics:
            from .calibration import calibration_section

            ev["calibration"] = calibration_section(clean, adv_test, {ra.label: ra.seeds for ra in resolved})
        if "latency" in metrics:
            from .latency import latency_section

            t = time.perf_counter()
            ev["latency"] = latency_section(model, device)
            wall["latency_s"] = time.perf_counter() - t

        # transfer --------------------------------------------------------------------------------
        if "transfer" in metrics:
            t = time.perf_counter()
            ev["transfer"] = transfer_section(model, x_test, y_test, dataset_key=dataset_key, protocol=protocol,
                                              device=device, batch_size=batch_size, prog=prog)
            wall["transfer_s"] = time.perf_counter() - t
    wall["total_s"] = time.perf_counter() - t_total
    ev["wall_s"] = wall
    return ev


def _threat_eps(dataset_key: str) -> float | None:
    from ..presets import THREAT

    t = THREAT.get(dataset_key)
    return None if t is None else float(t.eps)


def _jsonable_protocol(protocol: Any) -> dict[str, Any]:
    d = dataclasses.asdict(protocol) if dataclasses.is_dataclass(protocol) else dict(vars(protocol))
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def budgeted_section(*, clean_val: ExitOutcomes, clean_test: ExitOutcomes, adv_test: dict[str, list[ExitOutcomes]],
                     adv_val: dict[str, list[ExitOutcomes]], seeds: dict[str, Sequence[int]],
                     exit_costs: Sequence[int], thresholds_on: str = "clean", count: int = 100,
                     ensemble: bool = True, p_max: float = 20.0, policy: str = "max-softmax") -> dict[str, Any]:
    """Budgeted curves (clean, and each attack averaged over seeds) from outcome tables; the exit policy
    (:mod:`.policies`) scores each exit and is calibrated on validation tables only."""
    from .policies import create_policy

    num_exits = clean_test.num_exits
    allocs = allocation_family(clean_val.n, num_exits, count=count, p_max=p_max)
    mflops = np.asarray(exit_costs, dtype=np.float64) / 1e6
    exit_policy = create_policy(policy)

    def tables(o: ExitOutcomes) -> tuple[np.ndarray, np.ndarray]:
        return exit_policy.scores(o, ensemble), (o.ens_correct if ensemble else o.top1)

    val_conf_clean = tables(clean_val)[0]
    base = budgeted_curve(val_conf_clean, *tables(clean_test), mflops, allocs, exit_policy.calibrate)
    curves: dict[str, Any] = {"clean": {"mflops": base["cost"].tolist(), "accuracy": base["accuracy"].tolist(),
                                        "max_accuracy": float(base["accuracy"].max())}}
    for label, outs in adv_test.items():
        if not outs:
            continue
        per_seed = []
        for i, (seed, out) in enumerate(zip(seeds[label], outs)):
            if thresholds_on == "adversarial":
                c = budgeted_curve(tables(adv_val[label][i])[0], *tables(out), mflops, allocs,
                                   exit_policy.calibrate)
                entry = {"seed": int(seed), "mflops": c["cost"].tolist(), "accuracy": c["accuracy"].tolist(),
                         "thresholds": thresholds_to_json(c["thresholds"])}
            else:
                c = budgeted_curve(val_conf_clean, *tables(out), mflops, allocs, exit_policy.calibrate)
                entry = {"seed": int(seed), "mflops": c["cost"].tolist(), "accuracy": c["accuracy"].tolist()}
            per_seed.append(entry)
        acc = np.array([e["accuracy"] for e in per_seed])
        cost = np.array([e["mflops"] for e in per_seed])
        std = acc.std(axis=0, ddof=1) if len(per_seed) > 1 else np.zeros(acc.shape[1])
        curves[label] = {"mflops": cost.mean(axis=0).tolist(), "accuracy": acc.mean(axis=0).tolist(),
                         "accuracy_std": std.tolist(), "max_accuracy": float(acc.mean(axis=0).max()),
                         "per_seed": per_seed}
    return {
        "thresholds_on": thresholds_on,
        "policy": policy,
        "ensemble": bool(ensemble),
        "n_val": int(clean_val.n),
        "n_test": int(clean_test.n),
        "allocation_family": {"kind": "geometric p**k (MSDNet), plus all-first and all-last", "count": int(count),
                              "p_min": 1.0 / p_max, "p_max": float(p_max), "spacing": "log-uniform in p"},
        "allocations": [list(a) for a in allocs],
        "thresholds": thresholds_to_json(base["thresholds"]),
        "exit_mflops": mflops.tolist(),
        "flops_unit": "fvcore count (one per multiply-add) / 1e6",
        "curves": curves,
    }


def transfer_section(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, dataset_key: str, protocol: Any,
                     device: torch.device, batch_size: int = 256, prog: Progress | None = None,
                     seed: int | None = None) -> dict[str, Any]:
    """Result 3: PGD-``protocol.steps`` single-exit attacks with the dataset's eps and step, one seed."""
    import neokd_bench as nb

    from ..presets import attack_settings

    s = attack_settings(dataset_key, "test")
    seed = int(protocol.attack_seeds[0]) if seed is None else int(seed)
    kw = {"eps": s["eps"], "step_size": s["step_size"], "steps": int(protocol.steps),
          "random_start": bool(s["random_start"]), "seed": seed, "mode": "eval"}

    def attack_for_exit(i: int):
        return nb.create_attack("pgd", objective=f"exit:{i}", **kw)

    limit = getattr(protocol, "transfer_limit", None)
    on_batch = None
    if prog is not None:
        on_batch = prog.task("transfer", int(model.num_exits) * min(len(y), limit or len(y)))
    res = transfer_matrix(model, x, y, attack_for_exit=attack_for_exit, device=device, limit=limit,
                          batch_size=batch_size, on_batch=on_batch)
    desc = attack_for_exit(0).describe()
    cfg = {k: v for k, v in desc["config"].items() if k != "objective"}
    res["seed"] = seed
    res["attack"] = {"name": desc["name"], "config": cfg, "objective": "exit:i for row i",
                     "model_mode": desc.get("model_mode")}
    return res
