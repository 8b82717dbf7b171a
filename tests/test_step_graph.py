"""The loss step replayed as a CUDA graph (neokd_bench.step_graph): which defenses, the config, and, on a GPU,
that training with it ends with the weights of training without it."""

from __future__ import annotations

import neokd_bench as nb
import pytest
import torch
from neokd_bench.defenses.adv import Adv
from neokd_bench.errors import UsageError
from neokd_bench.step_graph import defense_graph_safe
from neokd_bench.trainer import TrainConfig, train
from torch.utils.data import TensorDataset

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="CUDA graphs need a GPU")


@pytest.mark.parametrize("name", ["adv", "neokd", "nkd", "eokd"])
def test_adv_and_neokd_declare_their_loss_safe(name: str) -> None:
    assert defense_graph_safe(nb.create_defense(name))


@pytest.mark.parametrize("name", ["pgd-te", "trades-te", "lw", "skd", "ard", "clean"])
def test_other_defenses_stay_eager(name: str) -> None:
    assert not defense_graph_safe(nb.create_defense(name))


def test_a_subclass_says_it_again() -> None:
    class MyAdv(Adv):
        def loss(self, model, x, x_adv, y, index=None):
            loss, parts = super().loss(model, x, x_adv, y)
            return loss * float(x.sum() > 0), parts  # a host sync: not safe

    class OwnStep(Adv):
        graph_safe = True

        def training_step(self, model, x, y, index=None, loss_model=None):
            return super().training_step(model, x, y, index=index, loss_model=loss_model)

    assert not defense_graph_safe(MyAdv())
    assert not defense_graph_safe(OwnStep())  # the trainer would skip its own training_step


def test_neokd_updates_its_device_permutation_in_place_each_epoch() -> None:
    d = nb.create_defense("neokd", eps=0.1, step_size=0.02)
    d.setup(dataset="cifar100", num_exits=7, num_classes=100, seed=0)
    d.start_epoch(0)
    buf = d.permutation_on(torch.device("cpu"))
    assert torch.equal(buf, d.permutation_for(0, 100)) and buf is not d.permutation
    d.start_epoch(1)
    assert d.permutation_on(torch.device("cpu")) is buf
    assert torch.equal(buf, d.permutation_for(1, 100)) and not torch.equal(buf, d.permutation_for(0, 100))
    assert d.graph_key() is None and nb.create_defense("adv").graph_key() is None
    assert nb.create_defense("pgd-te").graph_key() is None  # no epoch started yet; then the epoch
    t = nb.create_defense("pgd-te")
    t.start_epoch(3)
    assert t.graph_key() == 3


def test_cuda_graph_field_is_checked() -> None:
    assert TrainConfig(epochs=1).cuda_graph == "auto"
    with pytest.raises(UsageError, match="cuda_graph"):
        TrainConfig(epochs=1, cuda_graph="on")


def test_a_cpu_run_records_nothing(tmp_path) -> None:
    torch.manual_seed(0)
    data = TensorDataset(torch.rand(24, 1, 28, 28), torch.randint(0, 10, (24,)))
    model = nb.create_model("smallcnn")
    defense = nb.create_defense("adv", eps=0.1, step_size=0.05, steps=1)
    defense.setup(dataset="mnist", num_exits=3, num_classes=10, seed=0)
    out = train(model, defense, data, TrainConfig(epochs=1, batch_size=8, lr=0.01, device="cpu"), out_dir=tmp_path,
                progress=False)
    assert out["cuda_graph"] is None


# ------------------------------------------------------------------------------------------------ GPU only
def _train(tmp_path, name: str, mode: str, amp: str = "none", clip: float | None = None):
    torch.manual_seed(0)
    n = 88  # batches of 16: five full ones and a last one of 8 (eager, the recording kept)
    data = TensorDataset(torch.rand(n, 3, 32, 32), torch.randint(0, 10, (n,)))
    model = nb.create_model("msdnet_cifar10")
    defense = nb.create_defense(name, eps=8 / 255, step_size=2 / 255, steps=2)
    defense.setup(dataset="cifar10", num_exits=3, num_classes=10, seed=0)
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.05, milestones=(2,), device="cuda", amp=amp,
                      grad_clip_norm=clip, cuda_graph=mode, cudnn_benchmark=False)
    out = train(model, defense, data, cfg, out_dir=tmp_path / f"{name}-{mode}-{amp}", progress=False)
    return model, out


@needs_cuda
@pytest.mark.parametrize("name,clip", [("neokd", None), ("adv", 5.0)])
def test_graphed_training_ends_with_the_eager_weights(tmp_path, name, clip) -> None:
    """Three epochs (an lr milestone after the second, a short last batch each epoch): the weights and every
    epoch's mean loss match training without graphs, to float tolerance, and the graph was replayed."""
    was = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        graphed, out_g = _train(tmp_path, name, "auto", clip=clip)
        eager, out_e = _train(tmp_path, name, "off", clip=clip)
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = was
    assert out_e["cuda_graph"] is None
    info = out_g["cuda_graph"]
    # epoch 1: two warm-up steps after the optimizer's state appears (steps 2, 3), recorded at step 4; epoch 2:
    # replayed throughout (neither defense bakes in per-epoch state: NEO-KD's permutation is updated in place, so
    # the weights below also show it was read); epoch 3 (new lr): two warm-up steps, recorded at step 3. The
    # short last batches run eagerly.
    assert not info["failed"] and info["recordings"] == 2 and info["replays"] == 2 + 5 + 3, info
    for a, b in zip(out_g["history"], out_e["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    for (k, a), b in zip(graphed.state_dict().items(), eager.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)


@needs_cuda
def test_graphed_bf16_training_stays_close_to_eager_bf16(tmp_path) -> None:
    graphed, out_g = _train(tmp_path, "neokd", "auto", amp="bf16")
    eager, out_e = _train(tmp_path, "neokd", "off", amp="bf16")
    assert out_g["cuda_graph"]["replays"] > 0 and not out_g["cuda_graph"]["failed"]
    for a, b in zip(out_g["history"], out_e["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=2e-2)


@needs_cuda
def test_training_restores_cudnn_benchmark(tmp_path) -> None:
    was = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        torch.manual_seed(0)
        data = TensorDataset(torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,)))
        defense = nb.create_defense("adv", eps=0.1, step_size=0.05, steps=1)
        defense.setup(dataset="mnist", num_exits=3, num_classes=10, seed=0)
        train(nb.create_model("smallcnn"), defense, data, TrainConfig(epochs=1, batch_size=8, device="cuda"),
              out_dir=tmp_path, progress=False)
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = was
