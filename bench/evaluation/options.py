"""Evaluation options as the command line gives them: parsed and checked before any work starts
(`run` checks them before training, so a typo never costs a training run)."""

from __future__ import annotations

import re
from typing import Any

from ..errors import UsageError, check

DEFAULT_METRICS = ("anytime", "budgeted", "transfer")
METRICS = DEFAULT_METRICS + ("efficiency", "calibration", "latency")  # the last three only when asked
THRESHOLDS_ON = ("clean", "adversarial")


def parse_ints(text: str | None, flag: str) -> tuple[int, ...] | None:
    """``"0,1,2"`` -> ``(0, 1, 2)``; None stays None; an empty list or a non-integer is a one-line error."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",")]
    check(any(items), f"{flag} is empty; e.g. {flag} 0,1,2")
    check(all(items), f"{flag} {text!r} has an empty item (two commas, or one at an end); e.g. {flag} 0,1,2")
    for t in items:
        check(re.fullmatch(r"[+-]?[0-9]+", t) is not None,
              f"{flag} expects comma-separated integers, got {text!r}; e.g. {flag} 0,1,2")
        check(t[0] != "-" and len(t) <= 20 and int(t) < 2**63,
              f"{flag}: seed {t[:24]} is outside 0..2**63-1; e.g. {flag} 0,1,2")
    vals = tuple(int(t) for t in items)
    twice = sorted({v for v in vals if vals.count(v) > 1})
    check(not twice, f"{flag}: seed {twice[0] if twice else ''} is given twice (each seed counts once); "
                     f"e.g. {flag} 0,1,2")
    return vals


def parse_policy_budgets(text: str | None, flag: str = "--policy-budgets") -> int | str | None:
    """``"all"`` (every budget of the curve) or a count of at least 1; None stays None."""
    if text is None or text == "all":
        return text
    try:
        count = int(text)
    except ValueError:
        count = 0
    check(count >= 1, f"{flag} must be at least 1 or 'all', got {text!r}; e.g. {flag} all")
    return count


def parse_metrics(text: str | None, flag: str = "--metrics") -> tuple[str, ...] | None:
    """``"anytime,budgeted"`` -> a tuple of known metric names (None stays None)."""
    if text is None:
        return None
    metrics = tuple(m.strip() for m in text.split(",") if m.strip())
    check(bool(metrics), f"{flag} is empty; use any of {','.join(METRICS)}")
    for m in metrics:
        check(m in METRICS, f"unknown metric {m!r}; use {flag} with any of {','.join(METRICS)}")
    return metrics


def parse_attack_list(text: str, flag: str = "--attacks") -> list[dict[str, Any]]:
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
        raise UsageError(f"no attack given; write e.g. {flag} pgd:max-average,pgd:average")
    return out


def check_attacks(specs: list[dict[str, Any]]) -> None:
    """Every attack is registered and every objective parses (exit ranges are checked against the model
    later, once it is built)."""
    from ..attacks.base import Objective
    from ..registry import ATTACKS

    for spec in specs:
        ATTACKS.get(spec["name"])
        if "objective" in spec:
            Objective.parse(spec["objective"])


def check_policy(name: str | None, flag: str = "--policy") -> None:
    """``name`` (None: the default) is a registered exit policy (:mod:`.policies`)."""
    if name is None:
        return
    from .policies import POLICIES

    check(name in POLICIES, f"unknown policy {name!r}; use {flag} with one of {','.join(POLICIES.names())}")


#: Options that only a metric reads: flag -> the metrics that use it (given without any of them, they would be
#: ignored without a word).
METRIC_OPTIONS = {"--policy": ("budgeted", "efficiency"), "--budget-index": ("efficiency",),
                  "--policy-budgets": ("efficiency",)}


def check_metric_options(metrics: tuple[str, ...], given: dict[str, Any], allocations: int) -> None:
    """Each option of ``given`` (flag -> value, None: not given) has a metric in ``metrics`` that reads it, and
    ``--policy-budgets`` asks for at most the ``allocations`` budgets that the curve has."""
    for flag, value in given.items():
        users = METRIC_OPTIONS.get(flag, ())
        if value is not None and users and not set(users) & set(metrics):
            raise UsageError(f"{flag} is read by --metrics {' or '.join(users)} only, which this evaluation does "
                             f"not run; add it, e.g. --metrics {','.join(metrics)},{users[-1]}, or drop {flag}")
    count = given.get("--policy-budgets")
    if isinstance(count, int):
        check(count <= allocations, f"--policy-budgets {count} is more than the {allocations} budget allocations "
                                    f"of the curve; use at most {allocations}, or 'all', or raise --budget-allocations")
