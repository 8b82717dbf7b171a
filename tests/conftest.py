"""Shared fixtures. Nothing downloads: the data is the bundled real Fashion-MNIST subset."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Test-only plugins (a model with only forward_exits, an attack without a tiny preset, the guide's
# defense) as a distribution with entry points, found by the registries like any installed plugin, so
# every registry-parametrized contract test runs on them too. Put on sys.path before any registry is read.
PLUGIN_DIST = Path(__file__).resolve().parent / "plugin_dist"
if str(PLUGIN_DIST) not in sys.path:
    sys.path.insert(0, str(PLUGIN_DIST))


@pytest.fixture(scope="session")
def fmnist():
    """The bundled Fashion-MNIST subset (train/val/test), real data."""
    import neokd_bench as nb

    return nb.load_dataset("fashion-mnist", source="bundled")


@pytest.fixture(scope="session")
def trained_smallcnn(fmnist, tmp_path_factory):
    """A SmallCNN adversarially trained (PGD-7 max-average, eps 0.1) on the bundled Fashion-MNIST with
    the shared trainer: 3 epochs on 2,048 images, seed 0. Returns ``(model in eval mode, x_test, y_test)``
    with the first 500 test images."""
    import neokd_bench as nb
    from neokd_bench.trainer import TrainConfig, train

    torch.manual_seed(0)
    model = nb.create_model("smallcnn", mean=list(fmnist.mean), std=list(fmnist.std))
    defense = nb.create_defense("adv")
    defense.setup(dataset="fashion-mnist", num_exits=model.num_exits, num_classes=10, seed=0)
    cfg = TrainConfig(epochs=3, batch_size=128, lr=0.05, milestones=(), seed=0, device="cpu",
                      train_limit=2048)
    train(model, defense, fmnist.train, cfg, out_dir=tmp_path_factory.mktemp("trained"), progress=False)
    x, y = fmnist.test.tensors()
    return model.eval(), x[:500], y[:500]


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory):
    """A checkpoint written by `neokd-bench run` (1 short epoch, smoke preset), for CLI tests."""
    from neokd_bench.cli import main

    out = tmp_path_factory.mktemp("ckpt")
    rc = main(["run", "--defense", "adv", "--dataset", "fashion-mnist", "--preset", "smoke", "--epochs", "1",
               "--train-limit", "256", "--set", "steps=1", "--no-eval", "--quiet", "--device", "cpu",
               "--out", str(out)])
    assert rc == 0
    return out / "checkpoint.pt"
