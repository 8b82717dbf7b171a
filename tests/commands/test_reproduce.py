"""`neokd-bench reproduce`: the dry run, resume after a kill (local executor), and Slurm through submitit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from neokd_bench.cli import main
from neokd_bench.reproduce.executors import LOG_NAME, SlurmOptions, exclusive, load_slurm_options, sbatch_script
from neokd_bench.reproduce.grids import get_grid, plan

ROOT = Path(__file__).resolve().parents[2]
# The cheapest real runs: the smoke preset on 64 bundled training images for 2 epochs, evaluated with PGD-2 on
# 32 test images (anytime only). Two epochs, so that a kill can fall between two checkpoints.
TINY = ["--run-arg=--train-limit=64", "--run-arg=--epochs=2", "--run-arg=--test-limit=32",
        "--run-arg=--eval-steps=2", "--run-arg=--metrics=anytime"]
GRID = ["cpu", "--preset", "smoke", "--defenses", "adv,neokd", "--seeds", "0,1"]


@pytest.mark.slow  # the estimate times real MSDNet training steps and an evaluation batch (tens of seconds idle)
def test_dry_run_prints_the_cifar10_grid_and_its_cost(tmp_path, capsys):
    assert main(["reproduce", "table2", "--dry-run", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    runs = [line for line in out.splitlines() if line.strip().startswith("[todo] neokd-bench run")]
    assert len(runs) == 25  # 5 defenses x 5 seeds
    assert f"--defense lw --dataset cifar10 --preset paper --seed 4 --out {tmp_path}/lw-cifar10-paper-s4" in out
    assert f"-> {tmp_path}/neokd-cifar10-paper-s0/result.json" in out
    assert "model msdnet_cifar10" in out and "MFLOPs per forward pass (fvcore)" in out
    assert "timed now (cpu): training" in out and "for the 25 runs not done" in out
    assert not any(tmp_path.iterdir())  # nothing ran, nothing was written


def test_bad_input_is_one_line(tmp_path, capsys):
    assert main(["reproduce", "table2", "--seeds", "a", "--dry-run", "--runs-dir", str(tmp_path)]) == 2
    assert main(["reproduce", "cpu", "--preset", "paperr", "--dry-run", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "--seeds expects comma-separated integers" in err[0] and "--preset" in err[1]


def test_two_grids_on_one_runs_dir_are_refused(tmp_path, capsys):
    with exclusive(tmp_path):  # as a running `reproduce` holds it
        assert main(["reproduce", *GRID, *TINY, "--runs-dir", str(tmp_path), "--no-board"]) == 2
    assert "another `neokd-bench reproduce` is running on" in capsys.readouterr().err
    assert not (tmp_path / LOG_NAME).exists()  # nothing started


def test_report_only_publishes_what_has_finished_and_starts_nothing(tmp_path, capsys):
    smoke = ROOT / "leaderboard" / "results" / "fashion-mnist-smoke"
    runs_dir, board = tmp_path / "runs", tmp_path / "board"
    (runs_dir / "adv-fashion-mnist-smoke-s0").mkdir(parents=True)
    (runs_dir / "adv-fashion-mnist-smoke-s0" / "result.json").write_bytes((smoke / "adv-s0.json").read_bytes())
    with exclusive(runs_dir):  # a grid still running on the folder does not stop a report
        assert main(["reproduce", *GRID, "--runs-dir", str(runs_dir), "--board", str(board), "--report-only"]) == 0
    assert "1/4 runs finished" in capsys.readouterr().out
    assert sorted(p.name for p in board.glob("*-s*.json")) == ["adv-s0.json"]
    assert sorted(p.name for p in runs_dir.iterdir() if p.name != ".reproduce.lock") == [
        "TABLE.md", "adv-fashion-mnist-smoke-s0"]  # no run began


def _log(runs_dir: Path) -> list[str]:
    path = runs_dir / LOG_NAME
    return path.read_text().splitlines() if path.exists() else []


def _command(runs_dir: Path) -> list[str]:
    return [sys.executable, "-m", "neokd_bench.cli", "reproduce", *GRID, *TINY, "--jobs", "2",
            "--runs-dir", str(runs_dir), "--no-board"]


@pytest.mark.slow
def test_killed_grid_resumes_without_doing_a_run_twice(tmp_path):
    runs_dir = tmp_path / "runs"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(_command(runs_dir), cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 400
    runs = plan(get_grid("cpu", preset="smoke", seeds=(0, 1), defenses=("adv", "neokd")), runs_dir)

    def midway() -> bool:  # a run is done, and another has a checkpoint but no result yet
        return (any(" done " in line for line in _log(runs_dir))
                and any((r.folder / "checkpoint.pt").exists() and not r.result.exists() for r in runs))

    try:  # SIGKILL the whole process group (the command and its runs) in the middle of the grid
        while not midway():
            assert proc.poll() is None and time.time() < deadline, "the grid ended before it could be killed"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = _log(runs_dir)
    done_before = {line.split()[-1] for line in before if " done " in line}
    assert 1 <= len(done_before) < 4

    rerun = subprocess.run(_command(runs_dir), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    after = _log(runs_dir)[len(before):]
    assert any(line.endswith("resume=1") for line in after), "no killed run was resumed from its checkpoint"
    for r in runs:
        doc = json.loads(r.result.read_text())
        assert [h["epoch"] for h in doc["training"]["history"]] == [0, 1]  # every epoch trained, once in the record
        started = [line for line in after if f"start {r.name} " in line]
        if r.name in done_before:
            assert not started, f"{r.name} was finished and ran again"
        else:
            assert len(started) == 1
            resumed = started[0].endswith("resume=1")
            # a resumed run continues after its last checkpoint: at most the epoch in progress is redone
            assert resumed == (doc["training"]["resumed_from_epoch"] is not None)
    assert sorted(line.split()[-1] for line in _log(runs_dir) if " done " in line) == sorted(r.name for r in runs)
    assert (runs_dir / "TABLE.md").is_file()


@pytest.mark.slow
def test_slurm_path_through_submitits_local_cluster(tmp_path, capsys):
    """`--executor slurm --slurm-cluster local`: the same submitit job array as on Slurm, run here; then the
    table and the board folder, which `leaderboard build` accepts."""
    runs_dir, board = tmp_path / "runs", tmp_path / "board"
    argv = ["reproduce", "cpu", "--preset", "smoke", "--defenses", "adv,neokd", "--seeds", "0", *TINY,
            "--executor", "slurm", "--slurm-cluster", "local", "--cpus-per-job", "1", "--runs-dir", str(runs_dir),
            "--board", str(board)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "submitted 2 runs as job array" in out
    assert sorted(p.name for p in board.glob("*-s0.json")) == ["adv-s0.json", "neokd-s0.json"]
    table = (board / "cpu.md").read_text()
    assert "| NEO-KD (ours) | measured (n=1) |" in table
    assert "| | reported (cifar10, layout only) | 46.53 | 47.65 | 50.71 | 48.30 |" in table
    for name in ("adv", "neokd"):  # portable paths only
        doc = json.loads((board / f"{name}-s0.json").read_text())
        assert not Path(doc["training"]["checkpoint"]).is_absolute()
    assert main(["leaderboard", "build", "--results", str(board), "--out", str(tmp_path / "site")]) == 0
    assert main(argv) == 0  # everything done: nothing submitted again
    assert "every run is done; nothing submitted" in capsys.readouterr().out


def test_sbatch_script_array_resources_and_commands(tmp_path):
    runs = plan(get_grid("table2"), tmp_path)
    opts = SlurmOptions(partition="gpu", gpus_per_job=2, time_min=600, cpus_per_job=16, mem_gb=64)
    text = sbatch_script(runs, opts, tmp_path / "slurm")
    lines = text.splitlines()
    for flag in ("--array=0-24%25", "--partition=gpu", "--gpus-per-node=2", "--time=600", "--cpus-per-task=16",
                 "--mem=64GB", "--nodes=1", "--ntasks-per-node=1"):
        assert f"#SBATCH {flag}" in lines
    first = (f"# task 0: torchrun --nproc_per_node=2 -m neokd_bench.cli run --defense adv --dataset cifar10 "
             f"--preset paper --seed 0 --out {tmp_path}/adv-cifar10-paper-s0 --quiet")
    assert first in lines and sum(line.startswith("# task ") for line in lines) == 25
    assert lines[-1].endswith(f"-m submitit.core._submit {tmp_path / 'slurm'}") and lines[-1].startswith("srun ")


def test_slurm_options_from_a_config_file_and_flags(tmp_path, capsys):
    cfg = tmp_path / "slurm.toml"
    cfg.write_text('[slurm]\npartition = "a100"\ngpus_per_job = 1\ntime_min = 120\naccount = "lab"\n')
    opts = load_slurm_options(cfg, time_min=30)
    assert (opts.partition, opts.gpus_per_job, opts.time_min, opts.account) == ("a100", 1, 30, "lab")
    assert main(["reproduce", "a1", "--executor", "slurm", "--slurm-config", str(cfg), "--print-sbatch",
                 "--runs-dir", str(tmp_path / "runs")]) == 0
    text = capsys.readouterr().out
    assert "#SBATCH --array=0-9%10" in text and "#SBATCH --account=lab" in text and "#SBATCH --time=120" in text
    assert "# task 0: neokd-bench run --defense adv --dataset mnist --preset paper --seed 0" in text
    (tmp_path / "bad.json").write_text('{"partiton": "x"}')
    assert main(["reproduce", "a1", "--executor", "slurm", "--slurm-config", str(tmp_path / "bad.json"),
                 "--print-sbatch"]) == 2
    assert "unknown key(s) partiton" in capsys.readouterr().err
