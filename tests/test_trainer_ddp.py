"""Training under torchrun: DistributedDataParallel is exact, and the ranks share the one-process order.

Set-up where W ranks with B samples each must equal one process with W*B samples: SmallCNN without dropout
(it has no BatchNorm), random starts keyed by sample index (``keyed_starts``), the per-rank loss a batch mean
(so DDP's gradient average over equal shards is the full-batch mean) and every rank's step ``k`` holding its
share of the one-process batch ``k`` (:class:`~neokd_bench.trainer.RankShard`).
"""

from __future__ import annotations

import neokd_bench as nb
import pytest
import torch
from neokd_bench.errors import UsageError
from neokd_bench.trainer import RankShard, TrainConfig, load_checkpoint, train
from torch.utils.data import DataLoader

from .conftest import run_ranks

N, B = 48, 8  # one epoch: 3 steps of 16 images for one process, of 8 per rank for two


def _train(out: str, batch_size: int, keyed: bool = True) -> None:
    data = nb.load_dataset("fashion-mnist", source="bundled")
    torch.manual_seed(0)
    model = nb.create_model("smallcnn", dropout=0.0, mean=list(data.mean), std=list(data.std))
    defense = nb.create_defense("adv", steps=2, keyed_starts=keyed)
    defense.setup(dataset="fashion-mnist", num_exits=3, num_classes=10, seed=0)
    cfg = TrainConfig(epochs=1, batch_size=batch_size, lr=0.05, device="cpu")
    train(model, defense, torch.utils.data.Subset(data.train, range(N)), cfg, out_dir=out, progress=False)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "one"
    run_ranks(_train, 1, str(out), 2 * B)
    return load_checkpoint(out / "checkpoint.pt")


def test_two_gloo_ranks_give_the_weights_of_one_process_with_the_whole_batch(one_process, tmp_path):
    run_ranks(_train, 2, str(tmp_path), B)
    two = load_checkpoint(tmp_path / "checkpoint.pt")
    assert two["model"].keys() == one_process["model"].keys()  # the plain module's keys, no "module." prefix
    assert len(two["history"]) == 1 and two["epoch"] == 0
    start = nb.create_model("smallcnn", dropout=0.0).state_dict()
    moved = max((one_process["model"][k] - start[k]).abs().max().item() for k in start)
    assert moved > 1e-3  # the 3 steps changed the weights, so equal weights say something
    for k, v in one_process["model"].items():
        torch.testing.assert_close(two["model"][k], v, rtol=1e-4, atol=1e-6, msg=k)


def test_unkeyed_starts_under_two_ranks_differ_from_one_process(one_process, tmp_path):
    """Without keyed starts rank 1's samples take the starts of batch positions 0..B-1, not their own: the
    exact test above depends on keying (and so can fail)."""
    run_ranks(_train, 2, str(tmp_path), B, False)
    two = load_checkpoint(tmp_path / "checkpoint.pt")
    diff = max((two["model"][k] - v).abs().max().item() for k, v in one_process["model"].items())
    assert diff > 1e-5


def test_rank_shards_cover_the_one_process_batches_and_world_1_is_its_order():
    n, seed = 22, 7
    one = [b.tolist() for b in DataLoader(torch.arange(n), batch_size=4, shuffle=True,
                                          generator=torch.Generator().manual_seed(seed))]

    def order(rank: int, world: int, batch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(seed)
        return [b.tolist() for b in DataLoader(torch.arange(n), batch_size=batch, generator=g,
                                               sampler=RankShard(n, g, rank, world))]

    assert order(0, 1, 4) == one  # a one-process run keeps the order of DataLoader(shuffle=True)
    ranks = [order(r, 3, 2) for r in range(3)]  # 3 ranks of 2: steps of 6; 22 padded to 24 from the start
    flat = [i for b in one for i in b]
    padded = flat + flat[:2]
    assert [len(r) for r in ranks] == [4, 4, 4]
    for k in range(4):
        assert sorted(i for r in ranks for i in r[k]) == sorted(padded[6 * k:6 * k + 6])


@pytest.mark.slow
def test_a_defense_without_loss_model_is_refused_under_torchrun(tmp_path):
    with pytest.raises(torch.multiprocessing.ProcessRaisedException, match="takes no loss_model"):
        run_ranks(_train_plugin_style, 2, str(tmp_path))


def _train_plugin_style(out: str) -> None:
    class OldStyle(type(nb.create_defense("adv"))):
        def training_step(self, model, x, y, index=None):
            return super().training_step(model, x, y, index=index)

    defense = OldStyle(steps=1)
    defense.setup(dataset="fashion-mnist", num_exits=3, num_classes=10, seed=0)
    data = nb.load_dataset("fashion-mnist", source="bundled")
    model = nb.create_model("smallcnn")
    train(model, defense, torch.utils.data.Subset(data.train, range(8)), TrainConfig(epochs=1, batch_size=4,
                                                                                     device="cpu"),
          out_dir=out, progress=False)


def test_sync_bn_on_cpu_is_one_line():
    from neokd_bench.trainer import wrap_for_ranks

    with pytest.raises(UsageError, match="--sync-bn needs CUDA"):
        wrap_for_ranks(nb.create_model("msdnet_cifar10"), torch.device("cpu"), sync_bn=True)
