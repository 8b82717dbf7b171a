"""Contract tests for every registered multi-exit model (docs/design.md, "Multi-exit model")."""

from __future__ import annotations

import copy
import os

import neokd_bench as nb
import pytest
import torch
from neokd_bench.errors import UsageError
from neokd_bench.models.base import MultiExitModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL_NAMES = nb.list_models()
BATCH = 2


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def built() -> dict[str, MultiExitModel]:
    return {}


def get(built: dict[str, MultiExitModel], name: str) -> MultiExitModel:
    if name not in built:
        torch.manual_seed(0)
        built[name] = nb.create_model(name)
    return built[name]


BUILTINS = ("smallcnn", "msdnet", "msdnet_cifar10", "msdnet_cifar100", "msdnet_tinyimagenet", "msdnet_imagenet",
            "timm_exits")


def declares_forward_last(model: MultiExitModel) -> bool:
    """The model overrides ``forward_last`` (exit k alone without the earlier heads): optional, for speed."""
    return type(model).forward_last is not MultiExitModel.forward_last


def test_every_builtin_is_registered_and_declares_the_fast_paths(built) -> None:
    for name in BUILTINS:
        assert name in MODEL_NAMES
    for name in ("smallcnn", "msdnet_cifar10"):
        model = get(built, name)
        assert declares_forward_last(model) and model.cascades, f"{name} lost its fast paths"


def test_a_model_with_only_forward_exits_is_covered(built) -> None:
    """The test-only plugin ``exits-only-mlp`` (tests/plugin_dist, registered through entry points) writes
    only ``forward_exits``, as the README allows; every contract test here runs on it."""
    assert "exits-only-mlp" in MODEL_NAMES
    model = get(built, "exits-only-mlp")
    assert not declares_forward_last(model) and not model.cascades


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_shapes(built, name: str) -> None:
    model = get(built, name).train()
    assert isinstance(model, MultiExitModel)
    x = torch.rand(BATCH, *model.input_size)
    outs = model(x)
    assert isinstance(outs, list) and len(outs) == model.num_exits
    for o in outs:
        assert o.shape == (BATCH, model.num_classes)
        assert torch.isfinite(o).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_upto_matches_full_forward(built, name: str) -> None:
    model = get(built, name).eval()
    torch.manual_seed(1)
    x = torch.rand(BATCH, *model.input_size)
    with torch.no_grad():
        full = model(x)
        for k in range(model.num_exits):
            part = model(x, upto=k)
            assert len(part) == k + 1
            for a, b in zip(part, full[: k + 1]):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
            (alone,) = model(x, upto=k, last_only=True)  # exit k's logits alone
            torch.testing.assert_close(alone, full[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_last_only_runs_no_earlier_head(built, name: str) -> None:
    """``forward(x, upto=k, last_only=True)`` (its logits: ``test_upto_matches_full_forward``) runs a subset
    of ``upto=k``'s modules, and strictly fewer after exit 0: no head of an earlier exit."""
    model = get(built, name).eval()
    if not declares_forward_last(model):
        pytest.skip(f"{name} does not override forward_last (optional; its last_only logits are still tested)")
    for k in range(model.num_exits):
        ran, upto = _called_modules(model, k, last_only=True), _called_modules(model, k)
        assert ran <= upto
        if k > 0:  # the earlier heads own weights that exit k alone must not touch
            assert ran < upto, f"last_only at exit {k} ran every module of upto={k}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_cascade_is_the_separate_passes_in_one(built, name: str) -> None:
    """``forward_cascade`` (all groups enter block 1 together, group k leaves after exit k) gives each group
    exit k's logits and input gradient as its own ``last_only`` pass does, for every group count. In float64:
    in float32 a max-pool tie can send a gradient to another pixel of the window after a rounding change.
    A model without its own batched cascade (``cascades = False``) gets the base class's one-pass-per-group
    cascade, which must satisfy the same contract."""
    model = copy.deepcopy(get(built, name)).eval().double()
    torch.manual_seed(3)
    xs = [torch.rand(1 + k % 2, *model.input_size, dtype=torch.float64) for k in range(model.num_exits)]
    for groups in range(1, model.num_exits + 1):
        ins = [x.clone().requires_grad_(True) for x in xs[:groups]]
        outs = model.forward_cascade(ins)
        assert len(outs) == groups
        grads = torch.autograd.grad(sum(o.square().sum() for o in outs), ins)
        for k, (x, o, g) in enumerate(zip(xs, outs, grads)):
            xr = x.clone().requires_grad_(True)
            (ref,) = model(xr, upto=k, last_only=True)
            (gr,) = torch.autograd.grad(ref.square().sum(), [xr])
            torch.testing.assert_close(o, ref, rtol=1e-9, atol=1e-9 * float(ref.detach().abs().max()))
            torch.testing.assert_close(g, gr, rtol=1e-9, atol=1e-9 * float(gr.abs().max()))
    with pytest.raises(UsageError):
        model.forward_cascade(xs + xs[:1])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_gradients_reach_input_and_every_parameter(built, name: str) -> None:
    model = get(built, name).train()
    model.zero_grad(set_to_none=True)
    x = torch.rand(BATCH, *model.input_size, requires_grad=True)
    y = torch.arange(BATCH) % model.num_classes
    loss = sum(torch.nn.functional.cross_entropy(o, y) for o in model(x))
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"


def _called_modules(model: MultiExitModel, upto: int, last_only: bool = False) -> set[str]:
    called: set[str] = set()
    handles = []
    for mname, mod in model.named_modules():
        if mname and next(mod.parameters(recurse=False), None) is not None:  # modules that own weights
            handles.append(mod.register_forward_hook(lambda m, i, o, n=mname: called.add(n)))
    try:
        with torch.no_grad():
            model(torch.rand(1, *model.input_size), upto=upto, last_only=last_only)
    finally:
        for h in handles:
            h.remove()
    return called


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_early_exit_skips_deeper_blocks(built, name: str) -> None:
    model = get(built, name).eval()
    all_weighted = {n for n, m in model.named_modules() if n and next(m.parameters(recurse=False), None) is not None}
    prev = _called_modules(model, 0)
    assert prev < all_weighted, "upto=0 ran every weighted module"
    for k in range(1, model.num_exits):
        cur = _called_modules(model, k)
        assert prev < cur, f"upto={k} did not run strictly more than upto={k - 1}"
        prev = cur
    assert prev == all_weighted, "the full forward leaves weighted modules unused"


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("bad", [-1, "num_exits"])
def test_upto_out_of_range_is_a_usage_error(built, name: str, bad) -> None:
    model = get(built, name)
    upto = model.num_exits if bad == "num_exits" else bad
    with pytest.raises(UsageError):
        model(torch.rand(1, *model.input_size), upto=upto)


# ------------------------------------------------------------------------------------------------
# model-specific structure
# ------------------------------------------------------------------------------------------------
def test_msdnet_configs_match_the_paper() -> None:
    c10, c100 = nb.create_model("msdnet_cifar10"), nb.create_model("msdnet_cifar100")
    tiny, inet = nb.create_model("msdnet_tinyimagenet"), nb.create_model("msdnet_imagenet")
    assert (c10.num_exits, c10.num_classes, c10.input_size) == (3, 10, (3, 32, 32))
    assert (c100.num_exits, c100.num_classes, c100.input_size) == (7, 100, (3, 32, 32))
    assert (tiny.num_exits, tiny.num_classes, tiny.input_size) == (5, 200, (3, 64, 64))
    assert (inet.num_exits, inet.num_classes, inet.input_size) == (5, 1000, (3, 224, 224))
    for m in (c10, c100):
        cfg = m.config
        assert (cfg.n_channels, cfg.growth_rate, cfg.step, cfg.base, cfg.stepmode) == (8, 6, 2, 4, "even")
        assert cfg.gr_factor == cfg.bn_factor == (1, 2, 4)
    cfg = inet.config
    assert (cfg.n_channels, cfg.growth_rate, cfg.step, cfg.base, cfg.stem) == (32, 16, 4, 4, "imagenet")
    assert cfg.gr_factor == cfg.bn_factor == (1, 2, 4, 4)
    # 4 + 2 * 6 layers for CIFAR-100: the first convolution of each layer sees the running width
    assert c100.config.steps() == [4, 2, 2, 2, 2, 2, 2]
    assert nb.create_model("msdnet_cifar100", num_classes=7).num_classes == 7
    assert nb.create_model("msdnet", gr_factor="1-2-4-4", bn_factor="1-2-4-4").config.num_scales == 4


def test_msdnet_first_exit_skips_fine_scales_it_does_not_need() -> None:
    """Exit 0 reads the coarsest scale only: the finest scale of block 0's last layer is not computed."""
    model = nb.create_model("msdnet_cifar10").eval()
    last = model.units[model.exit_units[0] - 1]  # block 0 ends with layer 4 then its transition
    finest = min(int(s) for s in last.scales)
    called = _called_modules(model, 0)
    prefix = f"units.{model.exit_units[0] - 1}.scales.{finest}."
    assert not any(n.startswith(prefix) for n in called)
    assert any(n.startswith(prefix) for n in _called_modules(model, 1))
    eager = nb.create_model("msdnet_cifar10", lazy_scales=False).eval()
    assert any(n.startswith(prefix) for n in _called_modules(eager, 0))


def test_timm_exits_truncates_the_backbone() -> None:
    model = nb.create_model("timm_exits", backbone="resnet18", exit_stages=[1, 2, 3, 4]).eval()
    assert model.num_exits == 4
    called = _called_modules(model, 0)
    assert not any(n.startswith(("body.layer2", "body.layer4")) for n in called)
    assert any(n.startswith("body.layer1") for n in called)


def test_timm_exits_rejects_untruncatable_wrappers() -> None:
    with pytest.raises(UsageError, match="cannot stop early"):
        nb.create_model("timm_exits", backbone="efficientnet_b0")
    with pytest.raises(UsageError, match="unknown timm backbone"):
        nb.create_model("timm_exits", backbone="no_such_net")
