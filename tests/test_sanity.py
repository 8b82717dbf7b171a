"""Real-data sanity: clean training of SmallCNN on the bundled Fashion-MNIST learns (chance is 10%)."""

from __future__ import annotations

import neokd_bench as nb
import pytest
import torch
from neokd_bench.trainer import TrainConfig, train


@pytest.mark.slow
def test_clean_smallcnn_two_epochs_reaches_70_percent_at_every_exit(fmnist, tmp_path):
    torch.manual_seed(0)  # initial weights
    model = nb.create_model("smallcnn", mean=list(fmnist.mean), std=list(fmnist.std))
    defense = nb.create_defense("clean")
    defense.setup(dataset="fashion-mnist", num_exits=3, num_classes=10, seed=0)
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05, seed=0, device="cpu")
    train(model, defense, fmnist.train, cfg, out_dir=tmp_path, progress=False)
    x, y = fmnist.test.tensors()
    with torch.inference_mode():
        outs = model.eval()(x)
    accs = [(o.argmax(1) == y).float().mean().item() for o in outs]
    print(f"clean SmallCNN, 2 epochs, bundled F-MNIST ({len(y)} test images): per-exit accuracy {accs}")
    # 2 epochs at lr 0.05 is noisy: float rounding alone (channels_last) moved the last exit from 75.7%
    # to 74.7% and the first from 78.7% to 79.8%, so the bar sits 5 points below that, at every exit
    assert min(accs) >= 0.70, accs
