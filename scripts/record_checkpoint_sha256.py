"""One-off: record in committed result files the sha256 of the checkpoint each one evaluated.

    python scripts/record_checkpoint_sha256.py leaderboard/results/fashion-mnist-smoke runs/reference

For ``D-sS.json`` in the results folder, the checkpoint is ``RUNS/D-<folder name>-sS/checkpoint.pt`` (the run
folders of ``scripts/reference_results.py``). The sha256 is written to ``training.checkpoint_sha256`` (what
``neokd-bench run`` and ``eval`` now record themselves) only when the checkpoint is the result's own: its
training config and per-epoch history (losses, wall times) must equal the result's. The board joins an
efficiency eval file to a result by this hash. Nothing else in the file changes.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from neokd_bench.results import dumps_result, write_result
from neokd_bench.trainer import load_checkpoint
from neokd_bench.utils import file_sha256


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def main(results: str, runs: str) -> int:
    folder, failed = Path(results), 0
    for path in sorted(folder.glob("*-s*.json")):
        m = re.fullmatch(r"(.+)-s(\d+)\.json", path.name)
        ckpt = Path(runs) / f"{m.group(1)}-{folder.name}-s{m.group(2)}" / "checkpoint.pt"
        doc = json.loads(path.read_text(encoding="utf-8"))
        training = doc.get("training") or {}
        state = load_checkpoint(ckpt)
        # round-trip through JSON so that tuples and lists compare equal
        own = json.loads(json.dumps({"config": state.get("train_config"), "history": state.get("history")}))
        if not (_same(own["config"], training.get("config")) and _same(own["history"], training.get("history"))):
            print(f"{path}: {ckpt} is not this result's checkpoint (config or history differ); left alone")
            failed = 1
            continue
        before = dumps_result(doc)
        training["checkpoint_sha256"] = file_sha256(ckpt)
        if dumps_result(doc) != before:
            write_result(path, doc)
        print(f"{path.name}: {training['checkpoint_sha256']}")
    return failed


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
