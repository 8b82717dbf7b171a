"""Result files: one JSON file per run, validated against the versioned schema on every write.

The schema lives in ``leaderboard/schema/result-<version>.schema.json`` (JSON Schema draft 2020-12). It is
found next to the source tree (``Path(__file__).resolve().parents[1] / "leaderboard" / "schema"``), or in
``neokd_bench/schema/`` for an installed wheel that ships it as package data.

:func:`validate_result` runs in four steps, each raising :class:`ResultValidationError` with a one-line
message that names the offending field path:

1. ``schema_version`` must be one this package reads (an unknown version is named in the message);
2. every value must be plain JSON (dict with str keys, list, str, int, float, bool, None) and every number
   finite; a numpy scalar or a NaN is reported with its path (convert with :func:`to_jsonable`);
3. the JSON Schema;
4. a semantic check the schema cannot express: JSON Schema cannot compare an array's length with a value
   stored elsewhere in the document, so every per-exit array must have ``model.num_exits`` entries (the
   transfer matrix is ``num_exits x num_exits``), every budgeted curve one entry per allocation, and every
   ``per_seed`` list one entry per seed.

:func:`write_result` validates first and writes atomically (a temporary file in the same folder, then
``os.replace``), so a file that would not validate is never written and a crash never leaves half a file.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from .errors import UsageError
from .utils import atomic_write as _atomic_write

SCHEMA_VERSION = "3"  # written by this version; 2 adds efficiency, calibration and latency to 1; 3 adds per-sample
# outcomes, the worst case per exit, attacks on the first images only and the masking verdict
_REPO_ROOT = Path(__file__).resolve().parents[1]
_SCHEMA_DIRS = (_REPO_ROOT / "leaderboard" / "schema", Path(__file__).resolve().parent / "schema")


def supported_schema_versions() -> tuple[str, ...]:
    """Every version with a ``result-<version>.schema.json`` in the schema folder: a new file is all it takes."""
    for folder in _SCHEMA_DIRS:
        found = sorted(p.name[len("result-"):-len(".schema.json")] for p in folder.glob("result-*.schema.json"))
        if found:
            return tuple(found)
    return (SCHEMA_VERSION,)


SUPPORTED_SCHEMA_VERSIONS = supported_schema_versions()


class ResultValidationError(UsageError):
    """A result document does not validate; the message names the field path."""


# --------------------------------------------------------------------------------------------------
# schema loading
# --------------------------------------------------------------------------------------------------
def schema_path(version: str = SCHEMA_VERSION) -> Path:
    """Path of the JSON Schema file for ``version``."""
    name = f"result-{version}.schema.json"
    candidates = [folder / name for folder in _SCHEMA_DIRS]
    for p in candidates:
        if p.is_file():
            return p
    raise ResultValidationError(
        f"result schema {name} not found (looked in {candidates[0].parent}); reinstall neokd-bench from its source tree"
    )


@cache
def load_schema(version: str = SCHEMA_VERSION) -> dict[str, Any]:
    """The parsed JSON Schema of ``version``."""
    return json.loads(schema_path(version).read_text())


@cache
def _validator(version: str):
    from jsonschema import Draft202012Validator

    schema = load_schema(version)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


# --------------------------------------------------------------------------------------------------
# JSON conversion
# --------------------------------------------------------------------------------------------------
def to_jsonable(obj: Any) -> Any:
    """Plain JSON types from numpy/torch scalars and arrays, tuples, Paths and dataclass-free mappings.

    Non-finite floats are kept (validation reports them with their path rather than hiding them).
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    tolist = getattr(obj, "tolist", None)  # numpy arrays/scalars, torch tensors
    if callable(tolist):
        return to_jsonable(tolist())
    item = getattr(obj, "item", None)
    if callable(item):
        return to_jsonable(item())
    raise TypeError(f"cannot convert {type(obj).__name__} to JSON")


def _path_str(parts: list[Any] | tuple[Any, ...]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _check_plain_json(obj: Any, parts: list[Any]) -> None:
    if obj is None or isinstance(obj, (bool, str)):
        return
    if isinstance(obj, int):
        return
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ResultValidationError(
                f"result field {_path_str(parts)}: {obj} is not a finite number (JSON has no NaN/Infinity; use null)"
            )
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ResultValidationError(f"result field {_path_str(parts)}: key {k!r} is not a string")
            _check_plain_json(v, parts + [k])
        return
    if isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_plain_json(v, parts + [i])
        return
    raise ResultValidationError(
        f"result field {_path_str(parts)}: value of type {type(obj).__name__} is not plain JSON; "
        "convert it with neokd_bench.results.to_jsonable"
    )


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------
def _glob(obj: Any, parts: list[str], prefix: list[Any]) -> Iterator[tuple[list[Any], Any]]:
    """Yield (path, value) for a dotted pattern with ``*`` wildcards over dict values / list items."""
    if not parts:
        yield prefix, obj
        return
    head, rest = parts[0], parts[1:]
    if head == "*":
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield from _glob(v, rest, prefix + [k])
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                yield from _glob(v, rest, prefix + [i])
        return
    if isinstance(obj, dict) and head in obj and obj[head] is not None:
        yield from _glob(obj[head], rest, prefix + [head])


def _expect_len(doc: dict, pattern: str, expected: int, what: str) -> None:
    for path, value in _glob(doc, pattern.split("."), []):
        if isinstance(value, list) and len(value) != expected:
            raise ResultValidationError(
                f"result field {_path_str(path)}: expected {expected} entries ({what}), got {len(value)}"
            )


# Arrays with one entry per exit (see the schema's description).
PER_EXIT_FIELDS: tuple[str, ...] = (
    "model.flops_per_exit",
    "evaluation.anytime.clean.top1.per_exit",
    "evaluation.anytime.clean.top5.per_exit",
    "evaluation.anytime.adversarial.*.top1.mean",
    "evaluation.anytime.adversarial.*.top1.std",
    "evaluation.anytime.adversarial.*.top1.per_seed.*",
    "evaluation.anytime.adversarial.*.top5.mean",
    "evaluation.anytime.adversarial.*.top5.std",
    "evaluation.anytime.adversarial.*.top5.per_seed.*",
    "evaluation.anytime.limited.*.top1.mean",
    "evaluation.anytime.limited.*.top1.std",
    "evaluation.anytime.limited.*.top1.per_seed.*",
    "evaluation.anytime.worst_case.top1.mean",
    "evaluation.anytime.worst_case.top1.std",
    "evaluation.anytime.worst_case.top1.per_seed.*",
    "evaluation.budgeted.allocations.*",
    "evaluation.budgeted.thresholds.*",
    "evaluation.budgeted.exit_mflops",
    "evaluation.budgeted.curves.*.per_seed.*.thresholds.*",
    "evaluation.transfer.matrix",
    "evaluation.transfer.matrix.*",
    "evaluation.efficiency.exit_mflops",
    "evaluation.efficiency.thresholds",
    "evaluation.efficiency.allocation",
    "evaluation.efficiency.*.exit_histogram",
    "evaluation.efficiency.*.per_seed.*.exit_histogram",
    "evaluation.efficiency.policies.*.thresholds",
    "evaluation.efficiency.policies.*.*.exit_histogram",
    "evaluation.efficiency.policy-pgd.thresholds.*",
    "evaluation.calibration.clean.ece",
    "evaluation.calibration.adversarial.*.ece",
    "evaluation.latency.batch_sizes.*.per_exit_ms",
)


def _semantic_checks(doc: dict) -> None:
    num_exits = doc["model"]["num_exits"]
    for pattern in PER_EXIT_FIELDS:
        _expect_len(doc, pattern, num_exits, f"model.num_exits = {num_exits}")
    ev = doc["evaluation"]
    budgeted = ev.get("budgeted")
    if budgeted:
        n_alloc = len(budgeted["allocations"])
        _expect_len(doc, "evaluation.budgeted.thresholds", n_alloc, f"one per allocation, {n_alloc} allocations")
        for name, curve in budgeted["curves"].items():
            # a curve at a few budgets only (policy-pgd) lists them in budget_index
            n_pts = len(curve["budget_index"]) if isinstance(curve.get("budget_index"), list) else n_alloc
            what = "one per budget_index" if "budget_index" in curve else f"one per allocation, {n_alloc} allocations"
            for pattern in ("mflops", "accuracy", "accuracy_std", "per_seed.*.mflops", "per_seed.*.accuracy",
                            "per_seed.*.thresholds"):
                for path, value in _glob(curve, pattern.split("."), ["evaluation", "budgeted", "curves", name]):
                    if isinstance(value, list) and len(value) != n_pts:
                        raise ResultValidationError(f"result field {_path_str(path)}: expected {n_pts} entries "
                                                    f"({what}), got {len(value)}")
            if any(not 0 <= int(b) < n_alloc for b in curve.get("budget_index") or []):
                raise ResultValidationError(f"result field evaluation.budgeted.curves.{name}.budget_index: an "
                                            f"index outside 0..{n_alloc - 1}")
    out = ev.get("outcomes")
    if isinstance(out, dict) and out["num_exits"] != num_exits:
        raise ResultValidationError(f"result field evaluation.outcomes.num_exits: {out['num_exits']}, but "
                                    f"model.num_exits = {num_exits}")
    for label, entry in ev["anytime"]["adversarial"].items():
        n_seeds = len(entry["seeds"])
        for acc in ("top1", "top5"):
            field = entry.get(acc)
            if isinstance(field, dict):
                if len(field["per_seed"]) != n_seeds:
                    raise ResultValidationError(
                        f"result field evaluation.anytime.adversarial.{label}.{acc}.per_seed: expected "
                        f"{n_seeds} entries (one per seed), got {len(field['per_seed'])}"
                    )
                if len(field["avg"]["per_seed"]) != n_seeds:
                    raise ResultValidationError(
                        f"result field evaluation.anytime.adversarial.{label}.{acc}.avg.per_seed: expected "
                        f"{n_seeds} entries (one per seed), got {len(field['avg']['per_seed'])}"
                    )


def _schema_error_message(err, version: str = SCHEMA_VERSION) -> str:
    parts = list(err.absolute_path)
    if err.validator == "required" and isinstance(err.instance, dict):
        missing = [k for k in err.validator_value if k not in err.instance]
        if missing:
            return f"result field {_path_str(parts + [missing[0]])}: required field is missing"
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = set(err.schema.get("properties", {}))
        extra = [k for k in err.instance if k not in allowed]
        if extra:
            return f"result field {_path_str(parts + [extra[0]])}: unknown field (not in schema {version})"
    msg = err.message
    if isinstance(err.instance, str) and err.validator in ("type", "oneOf") and _looks_numeric(err.instance):
        msg = f"{err.instance!r} is a string; numbers must be stored as JSON numbers"
    if len(msg) > 200:
        msg = msg[:197] + "..."
    return f"result field {_path_str(parts)}: {msg}"


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def validate_result(obj: Any) -> None:
    """Raise :class:`ResultValidationError` (one line, naming the field path) unless ``obj`` is a valid result."""
    if not isinstance(obj, dict):
        raise ResultValidationError(f"a result must be a JSON object, got {type(obj).__name__}")
    if "schema_version" not in obj:
        raise ResultValidationError("result field schema_version: required field is missing")
    version = obj["schema_version"]
    supported = supported_schema_versions()
    if version not in supported:
        raise ResultValidationError(
            f"result field schema_version: unknown schema version {version!r}; this neokd-bench reads "
            f"{', '.join(repr(v) for v in supported)} (upgrade neokd-bench or re-run the evaluation)"
        )
    _check_plain_json(obj, [])
    from jsonschema.exceptions import best_match

    err = best_match(_validator(version).iter_errors(obj), key=lambda e: (-len(e.absolute_path),))
    if err is not None:
        raise ResultValidationError(_schema_error_message(err, version))
    _semantic_checks(obj)


# --------------------------------------------------------------------------------------------------
# provenance and assembly
# --------------------------------------------------------------------------------------------------
def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(_REPO_ROOT), *args], capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def provenance(device: Any = None) -> dict[str, Any]:
    """What produced a result: package version, git commit and dirty flag, torch/CUDA, device, python, platform.

    ``git_commit``/``git_dirty`` are null outside a git checkout (or without git). ``git_dirty`` counts
    changes to tracked files only, so result files written into the tree do not flip it. No host name is
    recorded. ``device`` is the torch device evaluated on (its CUDA name when it is a GPU).
    """
    import torch

    from . import __version__

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        dev_name = f"cuda: {torch.cuda.get_device_name(dev)}"
    else:
        dev_name = f"{dev.type}: {platform.processor() or platform.machine()} ({os.cpu_count()} logical cores)"
    return {
        "package": "neokd-bench",
        "version": __version__,
        "git_commit": commit or None,
        "git_dirty": (bool(status) if status is not None else None),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": dev_name,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def make_result(*, model: dict, dataset: dict, defense: dict | None, training: dict | None,
                evaluation: dict, seeds: dict, timings: dict, kind: str = "eval",
                provenance_info: dict | None = None, device: Any = None, notes: str | None = None) -> dict:
    """Assemble and validate a result document (numpy/torch values are converted to plain JSON)."""
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "model": model,
        "dataset": dataset,
        "defense": defense,
        "training": training,
        "evaluation": evaluation,
        "seeds": seeds,
        "provenance": provenance_info if provenance_info is not None else provenance(device),
        "timings": timings,
    }
    if notes:
        doc["notes"] = notes
    doc = portable_paths(to_jsonable(doc))
    validate_result(doc)
    return doc


#: Fields that name a file of the machine that made the result. They are stored as a name (the checkpoint
#: sits in the run folder beside the result; the dataset file or folder is identified by its name, and the
#: bundled file also by ``npz_sha256``), never as an absolute path: committed results carry no machine path.
PATH_FIELDS: tuple[tuple[str, str], ...] = (("dataset", "path"), ("training", "checkpoint"))


def portable_paths(doc: dict) -> dict:
    """``doc`` with every :data:`PATH_FIELDS` entry reduced to its file name (in place; returned)."""
    for section, key in PATH_FIELDS:
        part = doc.get(section)
        if isinstance(part, dict) and isinstance(part.get(key), str) and part[key]:
            part[key] = Path(part[key]).name
    return doc


# --------------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------------
def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    return _atomic_write(path, lambda fh: fh.write(payload))


def dumps_result(obj: dict) -> str:
    return json.dumps(obj, indent=2, allow_nan=False) + "\n"


def write_result(path: str | os.PathLike, obj: dict) -> Path:
    """Validate ``obj`` and write it as JSON, atomically. Nothing is written when it does not validate."""
    validate_result(obj)
    return atomic_write(path, dumps_result(obj))


def load_result(path: str | os.PathLike) -> dict:
    """Read and validate a result file; errors name the file and the field."""
    from .safe_io import kind_of, loads_json, read_bytes

    path = Path(path)
    if not path.is_file():
        kind = f" as a file: it is {kind_of(path.stat().st_mode)}" if path.exists() else ""
        raise UsageError(f"result file {path} not found{kind}; pass the path of a result JSON written by "
                         f"`neokd-bench eval`")
    data = read_bytes(path, "result file")  # bounded; a fifo or a device is refused, never read
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ResultValidationError(f"{path}: a binary file, not a result JSON (a checkpoint.pt? evaluate it with "
                                    f"`neokd-bench eval` and pass the JSON it writes)") from exc
    obj = loads_json(text, str(path))  # bounded nesting and integers; "PATH: not JSON, ..." in one line
    try:
        validate_result(obj)
    except ResultValidationError as exc:
        raise ResultValidationError(f"{path}: {exc}") from exc
    return obj
