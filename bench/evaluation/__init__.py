"""Evaluation of a trained multi-exit model: anytime accuracy, budgeted accuracy against FLOPs, and
exit-to-exit adversarial transferability (paper Sec. 4, Results 1-3; App. A.2-A.3; DESIGN.md).

:func:`evaluate` returns the ``evaluation`` section of a result file (plain JSON types). The pipeline:

1. the clean test set (first ``protocol.test_limit`` images) and, for budgeted prediction, the validation
   split (held out of the training set; first ``val_limit`` images, default ``protocol.test_limit``);
2. one clean pass (no autograd, all exits from one forward);
3. for every attack and attack seed: ``x_adv`` is made once per batch, then one forward under
   ``torch.inference_mode`` scores all exits; the per-sample tables it keeps serve both anytime and
   budgeted metrics, so no attack runs twice;
4. anytime summary (mean, std and every seed), budgeted curves (thresholds from the validation split only),
   and the transferability matrix (PGD single-exit attacks on the samples every exit gets right).

Attacks. An attack is a dict ``{"name": "pgd", "objective": "average", ...}`` of registry name and config
fields; optional ``"label"`` (default ``name:objective``) and ``"seeds"`` (default
``protocol.attack_seeds``). Every attack gets the dataset's ``eps`` (:func:`neokd_bench.presets.attack_settings`)
unless it gives its own; PGD also gets the preset ``step_size``, ``random_start=True`` and
``steps=protocol.steps``; other attacks keep their own defaults for everything else. Attacks run with the model
in eval mode (``mode="eval"``), which is recorded with each attack's resolved config.

A batch's attack is seeded with the attack seed (the attack's own ``torch.Generator``), so results are
reproducible for a given ``batch_size``, which is recorded.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..errors import UsageError
from .anytime import ExitOutcomes, accuracy_summary, collect_outcomes, seeded_summary
from .budgeted import allocation_family, budgeted_curve, thresholds_to_json
from .transfer import transfer_matrix

DEFAULT_METRICS = ("anytime", "budgeted", "transfer")
METRICS = DEFAULT_METRICS + ("efficiency", "calibration", "latency")  # the last three only when asked (issue 13)
THRESHOLDS_ON = ("clean", "adversarial")

__all__ = ["evaluate", "default_attacks", "parse_attack_list", "describe_model", "anytime_table",
           "dataset_tensors", "METRICS", "DEFAULT_METRICS", "THRESHOLDS_ON"]


# --------------------------------------------------------------------------------------------------
# attacks
# --------------------------------------------------------------------------------------------------
def default_attacks(protocol: Any) -> list[dict[str, Any]]:
    """PGD-``protocol.steps`` with each objective of ``protocol.attacks`` (e.g. max-average, average)."""
    return [{"name": "pgd", "objective": obj} for obj in protocol.attacks]


def parse_attack_list(text: str) -> list[dict[str, Any]]:
    """``"pgd:max-average,pgd:average,cw,autoattack"`` -> attack dicts (``name[:objective]``)."""
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, sep, objective = item.partition(":")
        spec: dict[str, Any] = {"name": name}
        if sep:
            if not objective:
                raise UsageError(f"attack {item!r} has an empty objective; write e.g. pgd:average or pgd:exit:0")
            spec["objective"] = objective
        out.append(spec)
    if not out:
        raise UsageError("no attack given; write e.g. --attacks pgd:max-average,pgd:average")
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
        if not seeds:
            raise UsageError(f"attack {name!r} has no seeds; pass e.g. --seeds 0,1,2")
        if "seed" in spec:
            raise UsageError(f"attack {name!r}: give seeds as 'seeds' (a list), not 'seed'")
        accepted = _accepted_fields(ATTACKS.get(name))
        defaults: dict[str, Any] = {"eps": settings["eps"], "mode": "eval"}
        if isinstance(builder := ATTACKS.get(name), type) and issubclass(builder, PGD):  # pgd, slowdown, policy-pgd
            defaults.update(step_size=settings["step_size"], steps=int(protocol.steps),
                            random_start=bool(settings["random_start"]))
        kwargs = {k: v for k, v in defaults.items() if accepted is None or k in accepted}
        kwargs.update(spec)
        if label is None:
            label = f"{name}:{kwargs['objective']}" if "objective" in kwargs else name
        if label in labels:
            raise UsageError(f"attack {label!r} is given twice; give each attack once or a distinct 'label'")
        labels.add(label)
        out.append(_ResolvedAttack(label, name, kwargs, seeds))
    return out


# --------------------------------------------------------------------------------------------------
# data and model helpers
# --------------------------------------------------------------------------------------------------
def dataset_tensors(ds: Any, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` samples of a split as float [0,1] images and int64 labels (no augmentation)."""
    if hasattr(ds, "subset") and hasattr(ds, "tensors"):
        return ds.subset(limit).tensors()
    n = len(ds) if limit is None else min(limit, len(ds))
    xs, ys = zip(*(ds[i] for i in range(n))) if n else ((), ())
    if not n:
        raise UsageError("the evaluation split is empty; check the dataset folder")
    return torch.stack(list(xs)).float(), torch.as_tensor(ys, dtype=torch.long)


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


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._p = None

    @contextmanager
    def running(self) -> Iterator["_Progress"]:
        if not self.enabled:
            yield self
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=Console(stderr=True)) as p:
            self._p = p
            yield self
        self._p = None

    def task(self, description: str, total: int):
        if self._p is None:
            return lambda n: None
        tid = self._p.add_task(description, total=total)
        return lambda n: self._p.update(tid, advance=n)  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------------
def evaluate(model: torch.nn.Module, bundle: Any, *, dataset_key: str, protocol: Any,
             device: torch.device | str, metrics: Sequence[str] = METRICS,
             attacks: list[dict[str, Any]] | None = None, thresholds_on: str = "clean", progress: bool = True,
             batch_size: int = 256, val_limit: int | None = None, ensemble: bool = True,
             exit_costs: Sequence[int] | None = None) -> dict[str, Any]:
    """Evaluate ``model`` on ``bundle`` and return the ``evaluation`` section of a result (JSON-ready).

    ``metrics`` is a subset of :data:`METRICS`: ``anytime``, ``budgeted``, ``transfer`` (the default) and, only
    when asked, ``efficiency`` (:mod:`.efficiency`), ``calibration`` (:mod:`.calibration`) and ``latency``
    (:mod:`.latency`); the clean anytime numbers are always reported. ``protocol.policy`` is the exit policy
    of budgeted prediction (:mod:`.policies`). ``thresholds_on`` is ``"clean"`` (default) or ``"adversarial"`` (thresholds from validation
    data attacked by the same attack and seed). ``exit_costs`` are the cumulative fvcore counts per exit
    (default :func:`neokd_bench.flops.exit_flops`).
    """
    t_total = time.perf_counter()
    metrics = tuple(metrics)
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise UsageError(f"unknown metric {bad[0]!r}; use any of {','.join(METRICS)}")
    if thresholds_on not in THRESHOLDS_ON:
        raise UsageError(f"thresholds_on={thresholds_on!r}; use clean or adversarial")
    device = torch.device(device)
    resolved = resolve_attacks(attacks if attacks is not None else default_attacks(protocol),
                               dataset_key=dataset_key, protocol=protocol)
    model = model.to(device).eval()
    num_exits = int(model.num_exits)
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
        "n_test": int(len(y_test)),
        "attacks": {},
    }
    if want_val:
        ev["n_val"] = int(len(y_val))

    adv_test: dict[str, list[ExitOutcomes]] = {}
    adv_val: dict[str, list[ExitOutcomes]] = {}
    attack_wall: dict[str, float] = {}
    prog = _Progress(progress)
    with prog.running():
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
            for seed in ra.seeds:
                attack = ra.build(seed)
                if described is None:
                    described = attack.describe() if hasattr(attack, "describe") else {
                        "name": ra.name, "config": dict(ra.kwargs), "model_mode": None}
                if want_adv:
                    outs.append(collect_outcomes(model, x_test, y_test, device=device, batch_size=batch_size,
                                                 attack=attack,
                                                 on_batch=prog.task(f"{ra.label} seed {seed} test", len(y_test))))
                if want_budget and thresholds_on == "adversarial":
                    vals.append(collect_outcomes(model, x_val, y_val, device=device, batch_size=batch_size,
                                                 attack=attack,
                                                 on_batch=prog.task(f"{ra.label} seed {seed} val", len(y_val))))
            cfg = {k: v for k, v in dict(described.get("config", {})).items() if k != "seed"}
            ev["attacks"][ra.label] = {"name": described.get("name", ra.name), "config": cfg,
                                       "model_mode": described.get("model_mode"), "seeds": list(ra.seeds)}
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
        ev["anytime"] = {"n": int(len(y_test)), "clean": clean_sum, "adversarial": adversarial}

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
            wall["budgeted_s"] = time.perf_counter() - t
        # efficiency, calibration, latency (issue 13) ----------------------------------------------
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
                     device: torch.device, batch_size: int = 256, prog: _Progress | None = None,
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


# --------------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------------
def anytime_table(result: dict[str, Any], title: str | None = None):
    """A rich table of per-exit accuracy (%): clean, and each attack's mean ± std over seeds."""
    from rich.table import Table

    ev = result["evaluation"] if "evaluation" in result else result
    any_ = ev["anytime"]
    num_exits = len(any_["clean"]["top1"]["per_exit"])
    name = (result.get("defense") or {}).get("name") if "evaluation" in result else None
    table = Table(title=title or f"anytime accuracy (%), {name or 'model'}, n={any_['n']}")
    table.add_column("data")
    table.add_column("acc")
    for k in range(num_exits):
        table.add_column(f"exit {k + 1}", justify="right")
    table.add_column("avg", justify="right")
    for acc in ("top1", "top5"):
        c = any_["clean"].get(acc)
        if c:
            table.add_row("clean", acc, *[f"{100 * v:.2f}" for v in c["per_exit"]], f"{100 * c['avg']:.2f}")
    for label, entry in any_["adversarial"].items():
        for acc in ("top1", "top5"):
            a = entry.get(acc)
            if not a:
                continue
            multi = len(entry["seeds"]) > 1
            cells = [f"{100 * m:.2f}" + (f"±{100 * s:.2f}" if multi else "") for m, s in zip(a["mean"], a["std"])]
            avg = f"{100 * a['avg']['mean']:.2f}" + (f"±{100 * a['avg']['std']:.2f}" if multi else "")
            table.add_row(label, acc, *cells, avg)
    return table
