"""CUDA-graph replay of the PGD attack (neokd_bench.attacks.graphs): when it is used, and, on a GPU, that it
computes what the eager attack computes, with the weights as they are at each call."""

from __future__ import annotations

import neokd_bench as nb
import pytest
import torch
from neokd_bench.attacks import graphs
from neokd_bench.attacks.executor import Executor
from neokd_bench.attacks.pgd import PGD
from neokd_bench.errors import UsageError
from neokd_bench.models.msdnet import MSDNet
from neokd_bench.models.smallcnn import SmallCNN

from .tiny_models import make_batch, make_model

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="CUDA graphs need a GPU")


@pytest.mark.parametrize("name", ["smallcnn", "msdnet_cifar10"])
def test_this_projects_models_declare_themselves_safe_for_capture(name: str) -> None:
    assert graphs.graph_safe(nb.create_model(name))


def test_a_subclass_that_overrides_forward_is_not_vouched_for() -> None:
    class Quantized(SmallCNN):
        def forward(self, x, upto=None, last_only=False):  # e.g. input quantization with a host-side branch
            return super().forward((x * 255).round() / 255, upto, last_only)

    class Wrapped(MSDNet):
        def forward_last(self, x, k):
            return super().forward_last(x, k)

    assert not graphs.graph_safe(Quantized())
    assert not graphs.graph_safe(Wrapped.__new__(Wrapped))
    assert not graphs.graph_safe(make_model(3))  # the test models declare nothing


def test_a_pgd_subclass_is_not_recorded_unless_it_says_so() -> None:
    class OwnLoss(PGD):
        def exit_loss(self, logits, y, k):
            return super().exit_loss(logits, y, k) * 2

    x = torch.zeros(2, 1, 28, 28)
    model = nb.create_model("smallcnn")
    assert not Executor.of(OwnLoss(cuda_graph="on")).graphed(model, x)


def test_never_recorded_on_a_cpu() -> None:
    model = nb.create_model("smallcnn").eval()
    x, y = make_batch(model, 4)
    attack = nb.create_attack("pgd", steps=2, cuda_graph="on", seed=0)
    assert not Executor.of(attack).graphed(model, x)
    attack(model, x, y)
    assert model not in graphs._CACHE


@pytest.mark.parametrize("bad", ["yes", "", "gpu"])
def test_cuda_graph_field_is_checked(bad) -> None:
    with pytest.raises(UsageError, match="cuda_graph"):
        nb.create_attack("pgd", cuda_graph=bad)
    with pytest.raises(UsageError, match="attack_cuda_graph"):
        nb.create_defense("adv", attack_cuda_graph=bad)


def test_defense_passes_its_choice_to_the_training_attack() -> None:
    assert nb.create_defense("neokd", eps=0.1, step_size=0.02).attack_options(seed=0)["cuda_graph"] == "auto"
    d = nb.create_defense("neokd", attack_cuda_graph="off", eps=0.1, step_size=0.02)
    assert d.attack(seed=0).config.cuda_graph == "off"


# ------------------------------------------------------------------------------------------------ GPU only
def _gpu_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = nb.create_model(name).cuda()
    with torch.no_grad():
        model.train()(torch.rand(32, *model.input_size, device="cuda"))  # running statistics, not the identity
    return model


@pytest.fixture
def deterministic_cudnn():
    was = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = was


@needs_cuda
@pytest.mark.parametrize("name", ["smallcnn", "msdnet_cifar10"])
@pytest.mark.parametrize("objective", ["max-average", "average", "exit:1"])
def test_replay_equals_the_eager_attack_and_sees_weight_updates(name, objective, deterministic_cudnn) -> None:
    model = _gpu_model(name)
    graphs.clear(model)
    x = torch.rand(16, *model.input_size, device="cuda")
    y = torch.randint(0, 10, (16,), device="cuda")
    opts = {"eps": 8 / 255, "step_size": 2 / 255, "steps": 3, "objective": objective}
    for round_ in range(3):  # record, replay, replay after an in-place update of every weight
        graphed = nb.create_attack("pgd", seed=round_, **opts)(model, x, y)
        eager = nb.create_attack("pgd", seed=round_, cuda_graph="off", **opts)(model, x, y)
        assert graphed.shape == x.shape
        torch.testing.assert_close(graphed, eager, rtol=0, atol=1e-6)
        assert (graphed - x).abs().max() <= 8 / 255 + 1e-6
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(0.9).add_(0.01 * torch.randn_like(p))
    assert model in graphs._CACHE and len(graphs._CACHE[model][1]) == 1  # one recording, replayed


@needs_cuda
def test_replay_under_an_outer_autocast_uses_the_current_weights(deterministic_cudnn) -> None:
    """The trainer wraps the step in bf16 autocast, whose weight-cast cache must not freeze a cast into the
    graph: after an in-place update, the replay agrees with a fresh eager call."""
    model = _gpu_model("msdnet_cifar10")
    graphs.clear(model)
    x = torch.rand(8, *model.input_size, device="cuda")
    y = torch.randint(0, 10, (8,), device="cuda")
    for round_ in range(2):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            graphed = nb.create_attack("pgd", steps=2, seed=round_)(model, x, y)
            eager = nb.create_attack("pgd", steps=2, seed=round_, cuda_graph="off")(model, x, y)
            model(x)  # an eager pass after the replay, in the same autocast region, as the loss runs
        torch.testing.assert_close(graphed, eager, rtol=0, atol=1e-6)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(-1.0)


@needs_cuda
def test_a_moved_parameter_is_recorded_again() -> None:
    model = _gpu_model("smallcnn")
    graphs.clear(model)
    x = torch.rand(4, *model.input_size, device="cuda")
    y = torch.randint(0, 10, (4,), device="cuda")
    attack = nb.create_attack("pgd", steps=2, seed=0)
    attack(model, x, y)
    first = next(model.parameters())
    first.data = first.data.clone()  # a new storage: the old recording would read the old one
    out = attack(model, x, y)
    assert len(graphs._CACHE[model][1]) == 2
    torch.testing.assert_close(out, nb.create_attack("pgd", steps=2, seed=0, cuda_graph="off")(model, x, y),
                               rtol=0, atol=1e-6)


@needs_cuda
def test_a_training_step_with_graphs_matches_one_without() -> None:
    """Three NEO-KD steps on a GPU: the weights with the graphed attack equal those without, to float tolerance."""
    torch.backends.cudnn.deterministic = True
    try:
        finals = []
        for mode in ("auto", "off"):
            model = _gpu_model("msdnet_cifar10")
            defense = nb.create_defense("neokd", eps=8 / 255, step_size=2 / 255, attack_cuda_graph=mode)
            defense.setup(dataset="cifar10", num_exits=3, num_classes=10, seed=0)
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            gen = torch.Generator().manual_seed(0)
            torch.manual_seed(1)
            for _ in range(3):
                x = torch.rand(16, 3, 32, 32, generator=gen).cuda()
                y = torch.randint(0, 10, (16,), generator=gen).cuda()
                model.train()
                loss, _, _ = defense.training_step(model, x, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            finals.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        torch.testing.assert_close(finals[0], finals[1], rtol=1e-4, atol=1e-5)
    finally:
        torch.backends.cudnn.deterministic = False
