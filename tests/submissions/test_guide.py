"""The plugin guide (submissions/README.md) works as written: its code blocks run, the defense registers,
trains through the shared trainer, and the loss the trainer logs is the loss the defense returns."""

from __future__ import annotations

import neokd_bench as nb
import pytest
import torch
from neokd_bench.defenses.adv import Adv
from neokd_bench.registry import DEFENSES
from neokd_bench.trainer import TrainConfig, train
from neokd_test_plugins import guide_modules  # tests/plugin_dist, on sys.path from tests/conftest.py


def _train(defense, fmnist, tmp_path, limit=64):
    torch.manual_seed(0)
    model = nb.create_model("smallcnn", mean=list(fmnist.mean), std=list(fmnist.std))
    defense.setup(dataset="fashion-mnist", num_exits=model.num_exits, num_classes=10, seed=0)
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.01, seed=0, device="cpu", train_limit=limit)
    return train(model, defense, fmnist.train, cfg, out_dir=tmp_path, progress=False)


def test_the_guides_code_runs_registers_and_logs_the_loss_it_returns(fmnist, tmp_path):
    modules = guide_modules()  # every ```python block of the guide that starts with "# path/module.py"
    guide_cls = modules["my_package.my_defense"].MyDefense
    # registered the guide's way, through the entry point of a (test-only) distribution
    registered = DEFENSES.get("my-defense")
    assert registered.__module__ == guide_cls.__module__ == "my_package.my_defense"
    assert DEFENSES.entry("my-defense").source == "neokd-test-plugins"

    defense = nb.create_defense("my-defense", steps=1)
    returned: list[tuple[float, dict[str, float], int]] = []
    loss_fn = defense.loss

    def recording_loss(model, x, x_adv, y, index=None):
        loss, parts = loss_fn(model, x, x_adv, y, index=index)
        returned.append((float(loss.detach()), {k: float(v) for k, v in parts.items()}, len(y)))
        return loss, parts

    defense.loss = recording_loss
    history = _train(defense, fmnist, tmp_path)["history"]
    assert len(returned) == 2 and len(history) == 1  # two steps of 32 images
    n = sum(k for _, _, k in returned)
    assert history[0]["loss"] == pytest.approx(sum(v * k for v, _, k in returned) / n, rel=1e-9)
    for part in returned[0][1]:
        assert history[0][part] == pytest.approx(sum(p[part] * k for _, p, k in returned) / n, rel=1e-9)


def test_a_loss_part_named_loss_is_refused_in_one_line(fmnist, tmp_path):
    class LogsLoss(Adv):
        name = "logs-loss"

        def loss(self, model, x, x_adv, y, index=None):
            loss, parts = super().loss(model, x, x_adv, y, index=index)
            return loss, {**parts, "loss": loss.detach()}

    with pytest.raises(nb.UsageError) as info:
        _train(LogsLoss(steps=1), fmnist, tmp_path, limit=32)
    msg = str(info.value)
    assert "\n" not in msg and "loss part named 'loss'" in msg and "reserves" in msg
