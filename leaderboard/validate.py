"""``neokd-bench validate FILE...``: a result file against its schema, then for consistency (no torch).

Each problem is one line ``FILE: result field FIELD: what is wrong``. The schema step is
:func:`neokd_bench.results.validate_result` (the version must have a ``result-<version>.schema.json`` in the
schema folder; per-exit array lengths agree with ``model.num_exits``; accuracies lie in [0, 1]; numbers are
numbers). The consistency step adds what a schema cannot say:

* defense, model and dataset names follow the registry's grammar (:func:`neokd_bench.contract.name_problem`:
  lowercase letters, digits, ``-``, ``_``, ``.``), so no markup, path or mathtext can arrive in a name;
* FLOPs rise from exit to exit (``model.flops_per_exit``, ``evaluation.budgeted.exit_mflops``);
* the dataset is a registered one with a threat model (:data:`neokd_bench.contract.THREAT`);
* every attack is registered, and its ``eps`` is the dataset's;
* no field holds an absolute path of the machine that made the file (``dataset.path``, ``training.checkpoint``).
"""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from neokd_bench.contract import (
    NAMED_FIELDS,
    PATH_FIELDS,
    THREAT,
    ResultValidationError,
    name_problem,
    registered_names,
    validate_result,
)
from neokd_bench.safe_io import InputFileError, loads_json, read_text

EPS_TOL = 1e-6


def consistency_problems(doc: dict[str, Any]) -> list[str]:
    """Problems (``result field F: ...``) of a schema-valid result."""
    out: list[str] = []
    for section, key in NAMED_FIELDS:
        part = doc.get(section)
        if isinstance(part, dict) and key in part and (problem := name_problem(f"{section}.{key}", part[key])):
            out.append(problem)
    if any("result field dataset.name" in p for p in out):
        return out  # one line for a hostile dataset name, not a second one for "unknown dataset"
    flops = doc["model"].get("flops_per_exit") or []
    out += _rising(flops, "model.flops_per_exit")
    budgeted = doc["evaluation"].get("budgeted") or {}
    out += _rising(budgeted.get("exit_mflops") or [], "evaluation.budgeted.exit_mflops")
    ds = doc["dataset"]["name"]
    datasets, attacks = registered_names("datasets"), registered_names("attacks")
    if ds not in datasets:
        out.append(f"result field dataset.name: unknown dataset {ds!r}; registered: {', '.join(datasets)}")
    threat = THREAT.get(ds)
    if threat is None and ds in datasets:
        out.append(f"result field dataset.name: no threat model for {ds!r} (add it to neokd_bench.contract.THREAT)")
    for label, spec in (doc["evaluation"].get("attacks") or {}).items():
        name = spec.get("name") if isinstance(spec, dict) else None
        if name not in attacks:
            out.append(f"result field evaluation.attacks.{label}.name: unknown attack {name!r}; "
                       f"registered: {', '.join(attacks)}")
        eps = (spec.get("config") or {}).get("eps") if isinstance(spec, dict) else None
        if threat is not None and isinstance(eps, (int, float)) and not math.isclose(eps, threat.eps,
                                                                                       abs_tol=EPS_TOL):
            out.append(f"result field evaluation.attacks.{label}.config.eps: {eps} contradicts the {ds} threat "
                       f"model (eps {threat.eps:.6g})")
    for label in doc["evaluation"]["anytime"].get("adversarial", {}):
        if label not in (doc["evaluation"].get("attacks") or {}):
            out.append(f"result field evaluation.anytime.adversarial.{label}: no entry for it in evaluation.attacks")
    for section, key in PATH_FIELDS:
        value = (doc.get(section) or {}).get(key)
        if isinstance(value, str) and (PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute()):
            out.append(f"result field {section}.{key}: {value!r} is an absolute machine path; store the file name "
                       "(neokd_bench.results.portable_paths)")
    return out


def _rising(values: list, field: str) -> list[str]:
    for k in range(1, len(values)):
        if not values[k] > values[k - 1]:
            return [(f"result field {field}[{k}]: {values[k]} is not above exit {k}'s {values[k - 1]} "
                     "(costs must rise from exit to exit)")]
    return []


def check_file(path: str | Path) -> tuple[dict | None, list[str]]:
    """``(document or None, problems)``; every problem is one line that starts with the file's path."""
    path = Path(path)
    try:
        text = read_text(path, "")
    except InputFileError as exc:
        return None, [str(exc)]
    try:
        doc = loads_json(text, f"{path}: (top level)")
    except InputFileError as exc:
        return None, [str(exc)]
    try:
        validate_result(doc)
    except ResultValidationError as exc:
        return None, [f"{path}: {exc}"]
    return doc, [f"{path}: {p}" for p in consistency_problems(doc)]
