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

Steps 2-5 are the rows of :data:`SECTIONS`, each a function of one :class:`EvalContext` (model, data,
protocol, the :class:`OutcomeStore` of per-sample tables, the result being built and its timings); a new
metric is a new row.

Attacks and their defaults: :mod:`neokd_bench.evaluation.attacks`.

A batch's attack is seeded with the attack seed (the attack's own ``torch.Generator``), so results are
reproducible for a given ``batch_size``, which is recorded.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

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


@dataclasses.dataclass
class OutcomeStore:
    """The per-sample outcome tables of one evaluation, filled by the clean and attack sections and read by the
    later ones (so no attack runs twice), with each attack's wall time and the exit costs once resolved."""

    exit_costs: Sequence[int] | None = None
    clean: ExitOutcomes | None = None
    clean_val: ExitOutcomes | None = None
    adv_test: dict[str, list[ExitOutcomes]] = dataclasses.field(default_factory=dict)
    adv_val: dict[str, list[ExitOutcomes]] = dataclasses.field(default_factory=dict)
    limited: dict[str, list[ExitOutcomes]] = dataclasses.field(default_factory=dict)  # first test images only
    policy_runs: list[tuple[int, int, ExitOutcomes]] = dataclasses.field(default_factory=list)  # policy-pgd
    attack_wall: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class EvalContext:
    """What every metric section of one :func:`evaluate` call shares: the model on its device, the data, the
    protocol and options, the resolved attacks, the progress display, the outcome store, the ``evaluation``
    section being built (``ev``) and its timings (``wall``, in the order the sections ran)."""

    model: torch.nn.Module
    device: torch.device
    dataset_key: str
    protocol: Any
    metrics: tuple[str, ...]
    thresholds_on: str
    batch_size: int
    ensemble: bool
    resolved: list[Any]
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_val: torch.Tensor | None
    y_val: torch.Tensor | None
    prog: Progress
    ev: dict[str, Any]
    wall: dict[str, float]
    store: OutcomeStore

    @property
    def num_exits(self) -> int:
        return int(self.model.num_exits)

    @property
    def want_adv(self) -> bool:
        """Whether the attacks run on the whole test set (anytime, budgeted and calibration read them)."""
        return "anytime" in self.metrics or "budgeted" in self.metrics or "calibration" in self.metrics

    @property
    def want_budget(self) -> bool:
        return "budgeted" in self.metrics

    @property
    def want_val(self) -> bool:
        """Whether the validation split is loaded (budgeted thresholds, efficiency)."""
        return self.want_budget or "efficiency" in self.metrics


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

    Every option is checked and the data loaded before any work starts; then the sections of
    :data:`SECTIONS` run in order, each when its condition holds, and add their keys to the result in that
    order; ``wall_s`` ends it.
    """
    t_total = time.perf_counter()
    metrics = tuple(metrics)
    _check_options(metrics, thresholds_on)
    device = torch.device(device)
    model = model.to(device).eval()
    resolved = _resolved_attacks(model, attacks, dataset_key=dataset_key, protocol=protocol)
    ctx = _context(model, bundle, dataset_key=dataset_key, protocol=protocol, device=device, metrics=metrics,
                   resolved=resolved, thresholds_on=thresholds_on, prog=Progress(progress),
                   batch_size=batch_size, val_limit=protocol.test_limit if val_limit is None else val_limit,
                   ensemble=ensemble, exit_costs=exit_costs)
    with ctx.prog:
        for section in SECTIONS:
            if section.when(ctx):
                t = time.perf_counter()
                section.run(ctx)
                if section.timing is not None:
                    ctx.wall[section.timing] = time.perf_counter() - t
    ctx.wall["total_s"] = time.perf_counter() - t_total
    ctx.ev["wall_s"] = ctx.wall
    return ctx.ev


def _check_options(metrics: tuple[str, ...], thresholds_on: str) -> None:
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise UsageError(f"unknown metric {bad[0]!r}; use any of {','.join(METRICS)}")
    if thresholds_on not in THRESHOLDS_ON:
        raise UsageError(f"thresholds_on={thresholds_on!r}; use clean or adversarial")


def _resolved_attacks(model: torch.nn.Module, attacks: list[dict[str, Any]] | None, *, dataset_key: str,
                      protocol: Any) -> list[Any]:
    """The attacks to run (given, else the protocol's defaults, then its per-exit attacks), resolved; a bad
    objective (e.g. an exit index out of range) fails here, before any work starts."""
    specs = list(attacks if attacks is not None else default_attacks(protocol))
    specs += per_exit_attacks(protocol, int(model.num_exits))
    resolved = resolve_attacks(specs, dataset_key=dataset_key, protocol=protocol)
    for ra in resolved:
        if "objective" in ra.kwargs:
            from ..attacks.base import Objective

            Objective.parse(ra.kwargs["objective"]).check(model)
    return resolved


def _context(model: torch.nn.Module, bundle: Any, *, dataset_key: str, protocol: Any, device: torch.device,
             metrics: tuple[str, ...], resolved: list[Any], thresholds_on: str, prog: Progress, batch_size: int,
             val_limit: int | None, ensemble: bool, exit_costs: Sequence[int] | None) -> EvalContext:
    """The shared context: the test split (and the validation split when a section needs it) loaded, and the
    head of the ``evaluation`` section (protocol, device, sample counts, an empty ``attacks`` table)."""
    x_test, y_test = dataset_tensors(bundle.test, protocol.test_limit)
    ctx = EvalContext(model=model, device=device, dataset_key=dataset_key, protocol=protocol, metrics=metrics,
                      thresholds_on=thresholds_on, batch_size=batch_size, ensemble=ensemble, resolved=resolved,
                      x_test=x_test, y_test=y_test, x_val=None, y_val=None, prog=prog, ev={}, wall={},
                      store=OutcomeStore(exit_costs=exit_costs))
    if ctx.want_val:
        x_val, y_val = dataset_tensors(bundle.val, val_limit)
        ctx = dataclasses.replace(ctx, x_val=x_val, y_val=y_val)
    ctx.ev.update({
        "protocol": {**_jsonable_protocol(protocol), "metrics": list(metrics), "batch_size": int(batch_size),
                     "val_limit": val_limit, "thresholds_on": thresholds_on, "ensemble": bool(ensemble)},
        "device": str(device),
        "n_test": len(y_test),
        "attacks": {},
    })
    if ctx.want_val:
        ctx.ev["n_val"] = len(ctx.y_val)
    return ctx


# The sections ------------------------------------------------------------------------------------------------

def clean_outcomes(ctx: EvalContext) -> None:
    """One clean pass over the test split, and over the validation split when it is loaded."""
    ctx.store.clean = collect_outcomes(ctx.model, ctx.x_test, ctx.y_test, device=ctx.device,
                                       batch_size=ctx.batch_size, on_batch=ctx.prog.task("clean test", len(ctx.y_test)))
    if ctx.want_val:
        ctx.store.clean_val = collect_outcomes(ctx.model, ctx.x_val, ctx.y_val, device=ctx.device,
                                               batch_size=ctx.batch_size,
                                               on_batch=ctx.prog.task("clean val", len(ctx.y_val)))


def attack_outcomes(ctx: EvalContext) -> None:
    """Every resolved attack, each timed on its own (``attacks_s`` is their sum)."""
    for ra in ctx.resolved:
        t = time.perf_counter()
        _run_attack(ctx, ra)
        ctx.store.attack_wall[ra.label] = time.perf_counter() - t
    ctx.wall["attacks_s"] = float(sum(ctx.store.attack_wall.values()))


def _run_attack(ctx: EvalContext, ra: Any) -> None:
    """One attack over its seeds: ``x_adv`` made once per batch, every exit scored from one forward; records the
    attack in ``ev["attacks"]`` and its outcome tables in the store (``limited`` for the first images only)."""
    outs, vals = [], []
    described = None
    n_att = len(ctx.y_test) if ra.limit is None else min(ra.limit, len(ctx.y_test))
    for seed in ra.seeds:
        attack = ra.build(seed)
        if described is None:
            described = attack.describe() if hasattr(attack, "describe") else {
                "name": ra.name, "config": dict(ra.kwargs), "model_mode": None}
        if ctx.want_adv or ra.limit is not None:
            outs.append(collect_outcomes(ctx.model, ctx.x_test[:n_att], ctx.y_test[:n_att], device=ctx.device,
                                         batch_size=ctx.batch_size, attack=attack, candidates=True,
                                         on_batch=ctx.prog.task(f"{ra.label} seed {seed} test", n_att)))
        if ra.limit is not None:
            continue  # an attack on the first images only: anytime.limited and the worst case
        if ctx.want_budget and ctx.thresholds_on == "adversarial":
            vals.append(collect_outcomes(ctx.model, ctx.x_val, ctx.y_val, device=ctx.device,
                                         batch_size=ctx.batch_size, attack=attack,
                                         on_batch=ctx.prog.task(f"{ra.label} seed {seed} val", len(ctx.y_val))))
    cfg = {k: v for k, v in dict(described.get("config", {})).items() if k != "seed"}
    ctx.ev["attacks"][ra.label] = {"name": described.get("name", ra.name), "config": cfg,
                                   "model_mode": described.get("model_mode"), "seeds": list(ra.seeds)}
    if ra.limit is not None:
        ctx.ev["attacks"][ra.label]["n"] = n_att
        ctx.store.limited[ra.label] = outs
    else:
        ctx.store.adv_test[ra.label], ctx.store.adv_val[ra.label] = outs, vals


def anytime_metric(ctx: EvalContext) -> None:
    """Result 1: per-exit accuracy, clean, under each attack (summary over seeds) and under the limited ones."""
    s = ctx.store
    adversarial = {ra.label: {**seeded_summary(s.adv_test[ra.label], ra.seeds), "wall_s": s.attack_wall[ra.label]}
                   for ra in ctx.resolved if s.adv_test.get(ra.label)}
    ctx.ev["anytime"] = {"n": len(ctx.y_test), "clean": accuracy_summary(s.clean), "adversarial": adversarial}
    if s.limited:
        ctx.ev["anytime"]["limited"] = {
            ra.label: {**seeded_summary(s.limited[ra.label], ra.seeds), "n": ctx.ev["attacks"][ra.label]["n"],
                       "wall_s": s.attack_wall[ra.label]}
            for ra in ctx.resolved if ra.label in s.limited}


def resolve_exit_costs(ctx: EvalContext) -> None:
    """The cumulative cost of each exit (given, else fvcore's count); one per exit."""
    if ctx.store.exit_costs is None:
        from ..flops import exit_flops

        ctx.store.exit_costs = exit_flops(ctx.model)
    if len(ctx.store.exit_costs) != ctx.num_exits:
        raise UsageError(f"exit_costs has {len(ctx.store.exit_costs)} entries for a {ctx.num_exits}-exit model")


def budgeted_metric(ctx: EvalContext) -> None:
    """Result 2: budgeted curves from the stored tables, plus the policy-pgd curve when the protocol asks."""
    s, proto = ctx.store, ctx.protocol
    ctx.ev["budgeted"] = budgeted_section(
        clean_val=s.clean_val, clean_test=s.clean, adv_test=s.adv_test, adv_val=s.adv_val,
        seeds={ra.label: ra.seeds for ra in ctx.resolved}, exit_costs=s.exit_costs,
        thresholds_on=ctx.thresholds_on, count=int(getattr(proto, "budget_allocations", 100)),
        ensemble=ctx.ensemble, policy=str(getattr(proto, "policy", "max-softmax")))
    if getattr(proto, "budgeted_policy_pgd", False):
        from .efficiency import budgeted_policy_pgd

        ctx.ev["budgeted"]["curves"]["policy-pgd"], s.policy_runs = budgeted_policy_pgd(
            ctx.model, ctx.x_test, ctx.y_test, clean_val=s.clean_val, protocol=proto, dataset_key=ctx.dataset_key,
            device=ctx.device, exit_costs=s.exit_costs, attacks_out=ctx.ev["attacks"], batch_size=ctx.batch_size,
            ensemble=ctx.ensemble, task=ctx.prog.task)


def outcome_records(ctx: EvalContext) -> None:
    """The per-sample outcomes of every attack (policy-pgd included) and the worst case per exit over them."""
    s, ev, n = ctx.store, ctx.ev, len(ctx.y_test)
    ev["outcomes"] = outcomes_section(
        n=n, num_exits=ctx.num_exits, eps=_threat_eps(ctx.dataset_key), clean_top1=s.clean.top1,
        attacks=[(ra.label, ra.seeds, s.adv_test.get(ra.label) or s.limited.get(ra.label) or [],
                  np.arange(n if ra.limit is None else ev["attacks"][ra.label]["n"]))
                 for ra in ctx.resolved])
    ev["outcomes"]["records"] += [record(o.top1, np.arange(n), label="policy-pgd", seed=seed, candidate=None,
                                         budget_index=b) for b, seed, o in s.policy_runs]
    ev["anytime"]["worst_case"] = worst_case(ev["outcomes"], ev["attacks"])


def masking_metric(ctx: EvalContext) -> None:
    """The gradient-masking verdict of the reference protocol (:mod:`.masking`)."""
    from .masking import protocol_masking

    ctx.ev["masking"] = protocol_masking(ctx.model, ctx.x_test, ctx.y_test, ctx.ev, device=ctx.device)


def efficiency_metric(ctx: EvalContext) -> None:
    """Mean cost and exit histogram clean, under a slowdown attack and under PGD (:mod:`.efficiency`)."""
    from .efficiency import run_efficiency

    s = ctx.store
    ctx.ev["efficiency"] = run_efficiency(
        ctx.model, ctx.x_test, ctx.y_test, clean_val=s.clean_val, clean_test=s.clean, adv_test=s.adv_test,
        attacks_out=ctx.ev["attacks"], dataset_key=ctx.dataset_key, protocol=ctx.protocol, device=ctx.device,
        exit_costs=s.exit_costs, batch_size=ctx.batch_size, ensemble=ctx.ensemble, task=ctx.prog.task)


def calibration_metric(ctx: EvalContext) -> None:
    """Per-exit calibration from the stored tables (:mod:`.calibration`)."""
    from .calibration import calibration_section

    ctx.ev["calibration"] = calibration_section(ctx.store.clean, ctx.store.adv_test,
                                                {ra.label: ra.seeds for ra in ctx.resolved})


def latency_metric(ctx: EvalContext) -> None:
    """Median milliseconds per exit (:mod:`.latency`)."""
    from .latency import latency_section

    ctx.ev["latency"] = latency_section(ctx.model, ctx.device)


def transfer_metric(ctx: EvalContext) -> None:
    """Result 3: the exit-to-exit transferability matrix (:func:`transfer_section`)."""
    ctx.ev["transfer"] = transfer_section(ctx.model, ctx.x_test, ctx.y_test, dataset_key=ctx.dataset_key,
                                          protocol=ctx.protocol, device=ctx.device, batch_size=ctx.batch_size,
                                          prog=ctx.prog)


class Section(NamedTuple):
    """One row of :data:`SECTIONS`: its name, when it runs, what it does, and the ``wall_s`` key it is timed
    under (None: not timed as a whole)."""

    name: str
    when: Callable[[EvalContext], bool]
    run: Callable[[EvalContext], None]
    timing: str | None = None


def _always(ctx: EvalContext) -> bool:
    return True


#: The sections of :func:`evaluate`, in the order they run and their keys appear in the result.
SECTIONS: tuple[Section, ...] = (
    Section("clean", _always, clean_outcomes, "clean_s"),
    Section("attacks", _always, attack_outcomes),
    Section("anytime", _always, anytime_metric),
    Section("exit costs", lambda c: c.want_val, resolve_exit_costs),
    Section("budgeted", lambda c: c.want_budget, budgeted_metric, "budgeted_s"),
    Section("outcomes", lambda c: c.want_adv or bool(c.store.limited), outcome_records),
    Section("masking", lambda c: bool(getattr(c.protocol, "masking", False)) and "outcomes" in c.ev,
            masking_metric, "masking_s"),
    Section("efficiency", lambda c: "efficiency" in c.metrics, efficiency_metric, "efficiency_s"),
    Section("calibration", lambda c: "calibration" in c.metrics, calibration_metric),
    Section("latency", lambda c: "latency" in c.metrics, latency_metric, "latency_s"),
    Section("transfer", lambda c: "transfer" in c.metrics, transfer_metric, "transfer_s"),
)


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
