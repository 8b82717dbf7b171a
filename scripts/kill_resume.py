"""Kill and resume: SIGKILL a tiny `neokd-bench run` at random moments, resume it until it finishes, and check
that every resumed run ends with the weights of the uninterrupted run and leaves no temporary file.

Each trial starts a run, then kills it (SIGKILL) and resumes it ``--kills-per-trial`` times before letting it
finish. Half of the kills land at a uniformly random moment after the run folder exists; the other half wait
for a temporary checkpoint file (``.checkpoint.pt.*.tmp``) to appear and kill at once, i.e. during a
checkpoint write. Prints one line per trial and the totals; exits 1 on any mismatch or stray file::

    .venv/bin/python scripts/kill_resume.py --kills 20

The same function runs, with fewer kills, in ``tests/test_kill_resume.py``.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

TINY = ["run", "--defense", "adv", "--dataset", "fashion-mnist", "--preset", "smoke", "--epochs", "3",
        "--train-limit", "384", "--batch-size", "64", "--set", "steps=1", "--quiet", "--no-eval", "--device", "cpu"]


def _start(out: Path, resume: bool) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    argv = [sys.executable, "-m", "neokd_bench.cli", *TINY, "--out", str(out)] + (["--resume"] if resume else [])
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(p: subprocess.Popen, timeout: float = 600) -> None:
    _, err = p.communicate(timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"run failed ({p.returncode}): {err.strip()}")


def _temp_files(out: Path) -> list[Path]:
    return [f for f in out.iterdir() if f.name.endswith(".tmp")] if out.is_dir() else []


def _kill(p: subprocess.Popen, out: Path, mode: str, rng: random.Random, span: float) -> str:
    """Kill ``p`` once ``out`` exists; ``mode`` is "random" or "write". Returns what was hit."""
    deadline = time.time() + 600
    while not out.is_dir() and p.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    if mode == "write":
        while not _temp_files(out) and p.poll() is None and time.time() < deadline:
            time.sleep(0.001)
    else:
        time.sleep(rng.uniform(0, span))
    if p.poll() is not None:
        return "finished first"
    hit = "during a write" if _temp_files(out) else "between writes"
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    return hit


def weights(path: Path) -> dict:
    from neokd_bench.trainer import load_checkpoint

    return load_checkpoint(path)["model"]


def same_weights(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def kill_and_resume(workdir: Path, kills: int, kills_per_trial: int = 2, seed: int = 0,
                    log=print) -> dict:
    """Run the experiment in ``workdir``; returns the counts (kills, kills during writes, trials, failures)."""
    rng = random.Random(seed)
    ref = workdir / "reference"
    p = _start(ref, resume=False)
    while not ref.is_dir() and p.poll() is None:
        time.sleep(0.01)
    t0 = time.time()
    _finish(p)
    span = time.time() - t0  # kill moments: uniform over the run's life once its folder exists
    ref_w = weights(ref / "checkpoint.pt")
    counts = {"kills": 0, "during_write": 0, "trials": 0, "failures": 0}
    trial = 0
    while counts["kills"] < kills:
        out = workdir / f"trial{trial}"
        p = _start(out, resume=False)
        hits = []
        for _ in range(min(kills_per_trial, kills - counts["kills"])):
            mode = "write" if (counts["kills"] % 2) else "random"
            hit = _kill(p, out, mode, rng, span)
            if hit == "finished first":
                break
            hits.append(hit)
            counts["kills"] += 1
            counts["during_write"] += hit == "during a write"
            p = _start(out, resume=True)
        _finish(p)
        ok = same_weights(ref_w, weights(out / "checkpoint.pt"))
        stray = _temp_files(out)
        counts["trials"] += 1
        counts["failures"] += (not ok) or bool(stray)
        log(f"trial {trial}: kills {hits}; weights {'identical' if ok else 'DIFFER'}; "
            f"temporary files left: {len(stray)}")
        trial += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20, help="SIGKILLs in all (default 20)")
    ap.add_argument("--kills-per-trial", type=int, default=2, help="kills before a run may finish (default 2)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments (default 0)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kill-resume-") as d:
        c = kill_and_resume(Path(d), args.kills, args.kills_per_trial, args.seed)
    print(f"{c['kills']} SIGKILLs ({c['during_write']} during a checkpoint write) in {c['trials']} runs: "
          f"{c['trials'] - c['failures']}/{c['trials']} resumed runs end with the uninterrupted run's weights "
          f"and no temporary file")
    return 1 if c["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
