"""Produce and aggregate the committed reference results.

    python scripts/reference_results.py                     # train + evaluate every (defense, seed) missing
    python scripts/reference_results.py --aggregate-only    # rebuild summary.json / SUMMARY.md / plots

Each run is ``neokd-bench run --defense D --dataset fashion-mnist --preset smoke --seed S`` (real data: the
bundled Fashion-MNIST subset). Its result file is copied to ``leaderboard/results/<dataset>-<preset>/D-sS.json``.
The summary (``summary.json``, ``SUMMARY.md``) is made by the leaderboard layer (:mod:`neokd_bench.leaderboard`),
the same code as the site: per defense and exit, the mean and standard deviation over training seeds of clean
and adversarial accuracy, the differences against ``adv`` with their 95% Welch intervals (a lead whose interval
straddles zero is a tie), and the budgeted and transferability figures. Nothing here is tuned toward a winner:
the protocol is the preset's, identical for all defenses.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFENSES = ("adv", "skd", "ard", "lw", "neokd")
SEEDS = (0, 1, 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--defenses", default=",".join(DEFENSES))
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--aggregate-only", action="store_true")
    ap.add_argument("--shard", default="0/1", help="i/n: run only every n-th (defense, seed) pair, from the i-th")
    ap.add_argument("--target", type=float, help="budgeted target accuracy (fraction)")
    args = ap.parse_args()
    folder = ROOT / "leaderboard" / "results" / f"{args.dataset}-{args.preset}"
    folder.mkdir(parents=True, exist_ok=True)
    if not args.aggregate_only:
        shard, n_shards = (int(v) for v in args.shard.split("/"))
        pairs = [(d, int(s)) for s in args.seeds.split(",") for d in args.defenses.split(",")]
        for d, s in pairs[shard::n_shards]:
            dest = folder / f"{d}-s{s}.json"
            if dest.exists():
                continue
            run_dir = ROOT / "runs" / "reference" / f"{d}-{args.dataset}-{args.preset}-s{s}"
            t = time.time()
            cmd = [sys.executable, "-m", "neokd_bench.cli", "run", "--defense", d, "--dataset", args.dataset,
                   "--preset", args.preset, "--seed", str(s), "--out", str(run_dir), "--quiet"]
            if (run_dir / "checkpoint.pt").exists():
                cmd.append("--resume")
            proc = subprocess.run(cmd, check=False)
            if proc.returncode != 0:  # e.g. diverged (exit 3): reported, never hidden
                print(f"{d} seed {s}: FAILED with exit code {proc.returncode}", flush=True)
                continue
            shutil.copyfile(run_dir / "result.json", dest)
            print(f"{d} seed {s}: {time.time() - t:.0f} s -> {dest.relative_to(ROOT)}", flush=True)
    from neokd_bench.reproduce.report import write_summary

    print(write_summary(folder, str(folder.relative_to(ROOT)), args.target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
