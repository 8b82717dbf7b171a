"""The shared trainer: exact resume after SIGKILL, divergence stop, two-process gloo training."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import neokd_bench as nb
import pytest
import torch
from neokd_bench.errors import TrainingDivergedError, UsageError
from neokd_bench.trainer import TrainConfig, derive_seed, load_checkpoint, train

TINY = ["run", "--defense", "adv", "--dataset", "fashion-mnist", "--preset", "smoke", "--train-limit", "768",
        "--batch-size", "64", "--set", "steps=2", "--quiet", "--no-eval", "--device", "cpu"]


def _cli(*args: str, **popen_kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-m", "neokd_bench.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen_kw)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_train_config_rejects_bad_values():
    with pytest.raises(UsageError, match="--epochs must be at least 1"):
        TrainConfig(epochs=0)
    with pytest.raises(UsageError, match="--lr"):
        TrainConfig(epochs=1, lr=-1.0)


def test_derive_seed_is_stable():
    assert derive_seed(0, 1) == derive_seed(0, 1) != derive_seed(1, 0)


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_same_weights(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    p = _cli(*TINY, "--epochs", "3", "--out", str(full))
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    # the same run, killed with SIGKILL in the middle of its second epoch
    p = _cli(*TINY, "--epochs", "3", "--out", str(killed))
    ckpt = killed / "checkpoint.pt"
    deadline = time.time() + 600
    while not ckpt.exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    first_epoch = load_checkpoint(ckpt)["epoch"]
    time.sleep(0.5)  # an epoch of this run takes several seconds: we are now mid-epoch
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert load_checkpoint(ckpt)["epoch"] == first_epoch == 0, "killed too late to test a mid-run resume"
    p = _cli(*TINY, "--epochs", "3", "--out", str(killed), "--resume")
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    a, b = _weights(full / "checkpoint.pt"), _weights(ckpt)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    assert load_checkpoint(ckpt)["history"][-1]["epoch"] == 2


class _NaNAfter(torch.utils.data.Dataset):
    """Real images, then NaN pixels once ``n_good`` items have been fetched."""

    def __init__(self, base, n_good: int) -> None:
        self.base, self.n_good, self.calls = base, n_good, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        self.calls += 1
        x, y = self.base[i]
        return (x * float("nan") if self.calls > self.n_good else x), y


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(fmnist, tmp_path):
    base = torch.utils.data.Subset(fmnist.train, range(128))
    model = nb.create_model("smallcnn")
    defense = nb.create_defense("adv", steps=1)
    defense.setup(dataset="fashion-mnist", num_exits=3, num_classes=10, seed=0)
    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.01, device="cpu")
    data = _NaNAfter(base, n_good=128 + 64)  # epoch 1 is fine; epoch 2 hits NaN in its second batch
    with pytest.raises(TrainingDivergedError, match=r"epoch 2 step 2.*last good checkpoint kept"):
        train(model, defense, data, cfg, out_dir=tmp_path, progress=False)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.slow
def test_two_gloo_processes_train_and_write_one_result(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun, "torchrun not found beside the interpreter"
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    args = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "neokd_bench.cli", "run",
            "--defense", "adv", "--dataset", "fashion-mnist", "--preset", "smoke", "--epochs", "1",
            "--train-limit", "256", "--batch-size", "64", "--set", "steps=2", "--quiet", "--device", "cpu",
            "--test-limit", "64", "--eval-steps", "2", "--metrics", "anytime", "--out", str(out)]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted(out.glob("*.json"))
    assert [r.name for r in results] == ["result.json"]
    from neokd_bench.results import load_result

    res = load_result(results[0])
    assert res["training"]["world_size"] == 2


# ------------------------------------------------------------------------------------------------
# resume: refusals, a truncated checkpoint, a kill during the first checkpoint write
# ------------------------------------------------------------------------------------------------
SMALL = ["run", "--dataset", "fashion-mnist", "--train-limit", "64", "--batch-size", "32", "--quiet",
         "--no-eval", "--device", "cpu", "--epochs", "1"]


def _run(capsys, *argv: str) -> tuple[int, str]:
    from neokd_bench.cli import main

    capsys.readouterr()
    rc = main([*SMALL, *argv])
    return rc, capsys.readouterr().err.strip()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    from neokd_bench.cli import main

    out = tmp_path_factory.mktemp("small") / "run"
    assert main([*SMALL, "--defense", "adv", "--preset", "smoke", "--set", "steps=1", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("change, field", [
    (["--defense", "neokd", "--preset", "smoke", "--set", "steps=1"], "defense 'adv', not 'neokd'"),
    (["--defense", "adv", "--preset", "smoke", "--set", "steps=2"], "defense config steps=1"),
    (["--defense", "adv", "--preset", "paper", "--set", "steps=1", "--lr", "0.05"], "preset 'fashion-mnist.smoke'"),
])
def test_resume_under_another_defense_config_or_preset_is_refused(small_run, tmp_path, capsys, change, field):
    out = tmp_path / "run"
    shutil.copytree(small_run, out)
    before = (out / "checkpoint.pt").read_bytes()
    rc, err = _run(capsys, *change, "--out", str(out), "--resume")
    assert rc == 2 and len(err.splitlines()) == 1 and field in err, err
    assert (out / "checkpoint.pt").read_bytes() == before


def _as_written_by_older_code(folder: Path) -> None:
    """The checkpoint as the code before the fields ``keyed_starts`` (defense) and ``sync_bn`` (training)
    existed would have written it, with an assumption reworded since."""
    path = folder / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    del state["defense"]["config"]["keyed_starts"], state["train_config"]["sync_bn"]
    state["defense"]["assumptions"] = [*state["defense"]["assumptions"][:-1], "worded otherwise"]
    torch.save(state, path)


def test_resume_of_a_checkpoint_from_before_a_field_was_added(small_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(small_run, out)
    _as_written_by_older_code(out)
    rc, err = _run(capsys, "--defense", "adv", "--preset", "smoke", "--set", "steps=1", "--out", str(out),
                   "--resume")
    assert rc == 0, err  # accepted (the run had finished its one epoch, so there is nothing left to train)


def test_a_field_added_later_but_not_at_its_default_is_refused(small_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(small_run, out)
    _as_written_by_older_code(out)
    rc, err = _run(capsys, "--defense", "adv", "--preset", "smoke", "--set", "steps=1", "--set", "keyed_starts=true",
                   "--out", str(out), "--resume")
    assert rc == 2 and "keyed_starts" in err and len(err.splitlines()) == 1, err


def test_truncated_checkpoint_on_resume_is_one_line(small_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(small_run, out)
    data = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    rc, err = _run(capsys, "--defense", "adv", "--preset", "smoke", "--set", "steps=1", "--out", str(out), "--resume")
    assert rc == 2 and len(err.splitlines()) == 1 and "not a readable neokd-bench checkpoint" in err, err


def test_kill_during_the_first_checkpoint_write_is_recoverable(small_run, tmp_path, capsys):
    """What SIGKILL leaves during the first write: the run folder, a partial temporary file, no checkpoint.
    --resume starts over, removes the stale file, and ends with the uninterrupted run's weights."""
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".checkpoint.pt.0123456789abcdef.tmp"
    stale.write_bytes((small_run / "checkpoint.pt").read_bytes()[:1000])
    rc, err = _run(capsys, "--defense", "adv", "--preset", "smoke", "--set", "steps=1", "--out", str(out), "--resume")
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt"]
    a, b = _weights(small_run / "checkpoint.pt"), _weights(out / "checkpoint.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_of_a_folder_that_does_not_exist_is_refused(tmp_path, capsys):
    rc, err = _run(capsys, "--defense", "adv", "--preset", "smoke", "--out", str(tmp_path / "none"), "--resume")
    assert rc == 2 and "no run folder" in err and not (tmp_path / "none").exists()
