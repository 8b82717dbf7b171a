"""The example plugin end to end: installed on its own, listed, trained, validated, and on the board."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import REFERENCE, ROOT

PLUGIN = ROOT / "submissions" / "example-defense"


def _cli(args: list[str], env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neokd_bench.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout, check=False)


@pytest.mark.slow
def test_example_plugin_installs_lists_trains_validates_and_enters_the_board(tmp_path):
    site_packages = tmp_path / "site-packages"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(site_packages), str(PLUGIN)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site_packages), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1"}

    listed = _cli(["--strict", "list", "defenses"], env)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "alp" in listed.stdout and "neokd-example-defense" in listed.stdout

    run_dir = tmp_path / "runs" / "alp-s0"
    run = _cli(["--strict", "run", "--defense", "alp", "--dataset", "fashion-mnist", "--preset", "smoke",
                "--epochs", "1", "--train-limit", "256", "--test-limit", "64", "--eval-steps", "2",
                "--attack-seeds", "0", "--metrics", "anytime,budgeted", "--seed", "0", "--out", str(run_dir),
                "--quiet"], env)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    result = run_dir / "result.json"

    val = _cli(["validate", str(result)], env)
    assert val.returncode == 0 and f"ok {result}" in val.stdout, val.stdout + val.stderr

    site = tmp_path / "site"
    built = _cli(["leaderboard", "build", "--results", str(REFERENCE), "--results", str(run_dir), "--out", str(site)],
                 env)
    assert built.returncode == 0, built.stderr[-2000:]
    index = (site / "index.html").read_text()
    row = index.split('data-defense="alp"')[1].split("</tr>")[0]
    assert ">alp</a>" in row and "smallcnn" in row
    entry = next((site / "entry").glob("fashion-mnist-smoke-smallcnn-alp-*.html")).read_text()
    assert "Adversarial Logit Pairing" in entry and "&#34;weight&#34;: 0.5" in entry.replace("&quot;", "&#34;")
