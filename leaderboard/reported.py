"""Numbers that papers report, as data (``leaderboard/reported/*.json``, validated by ``reported.schema.json``).

They are shown beside the measured numbers of the same (dataset, defense) and never ranked with them.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from neokd_bench.errors import UsageError
from neokd_bench.safe_io import load_json

REPORTED_DIR = Path(__file__).resolve().parent / "reported"
SCHEMA_NAME = "reported.schema.json"
#: How far a printed Avg. may sit from the mean of the printed exits (points). Rounding alone allows 0.01; the
#: paper's Table 1(b) SKD row prints 92.82 for exits whose mean is 92.80, so the check allows 0.03: a
#: transcription slip (a swapped or mistyped digit) moves the mean by far more.
AVG_TOL = 0.03


@cache
def _validator():
    from jsonschema import Draft202012Validator

    schema = json.loads((REPORTED_DIR / SCHEMA_NAME).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def check_reported(doc: dict, source: str) -> None:
    """Raise a one-line :class:`UsageError` naming the file and field unless ``doc`` validates; per-exit
    arrays agree across top-1 and top-5, and each ``avg`` is the mean of its exits up to the paper's rounding."""
    from jsonschema.exceptions import best_match

    err = best_match(_validator().iter_errors(doc))
    if err is not None:
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise UsageError(f"{source}: field {where}: {err.message[:200]}")
    for i, e in enumerate(doc["entries"]):
        for acc in ("top1", "top5"):
            if acc in e:
                vals = e[acc]["per_exit"]
                if acc == "top5" and len(vals) != len(e["top1"]["per_exit"]):
                    raise UsageError(f"{source}: field entries.{i}.top5.per_exit: {len(vals)} exits, top1 has "
                                     f"{len(e['top1']['per_exit'])}")
                if abs(sum(vals) / len(vals) - e[acc]["avg"]) > AVG_TOL:
                    raise UsageError(f"{source}: field entries.{i}.{acc}.avg: {e[acc]['avg']} is not the mean of "
                                     f"its exits ({sum(vals) / len(vals):.3f}); check the transcription")


def load_reported(folder: str | Path = REPORTED_DIR) -> list[dict]:
    """Every reported entry, each with ``paper`` and ``file`` added; sorted by dataset, table, part, row order."""
    out = []
    for path in sorted(Path(folder).glob("*.json")):
        if path.name == SCHEMA_NAME:
            continue
        doc = load_json(path, "reported-number file")  # bounded: regular files, size, nesting, digits
        check_reported(doc, str(path))
        out += [{**e, "paper": doc["paper"], "file": path.name, "order": i} for i, e in enumerate(doc["entries"])]
    return sorted(out, key=lambda e: (e["dataset"], e["file"], e["order"]))
