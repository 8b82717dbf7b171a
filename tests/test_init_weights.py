"""`run --init`: our own checkpoints, MSDNet-PyTorch's official ImageNet layout (mapped by name, shapes checked),
the imagenet paper preset's refusal without weights, and MSDNet-PyTorch's validation index file."""

from __future__ import annotations

import math

import neokd_bench as nb
import numpy as np
import pytest
import torch
from neokd_bench.cli import main
from neokd_bench.errors import UsageError
from neokd_bench.init_weights import load_init
from neokd_bench.results import load_result
from neokd_bench.utils import file_sha256
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_thread")


def official_layout(n_blocks=5, step=4, base=4, n_channels=32, growth=16, gr=(1, 2, 4, 4), bn=(1, 2, 4, 4),
                    classes=1000, seed=0, module_prefix="module.", trainable=False):
    """A state dict named and shaped as MSDNet-PyTorch's ImageNet MSDNet saved from DataParallel, derived here
    from that repository's naming (blocks.B.J: the first layer, MSDNLayers with ConvNormal/ConvDownNormal of
    ConvBN nets, ParallelModule transitions; classifier.H.m of ConvBasic nets plus linear), random values
    (``trainable``: scaled as MSDNet initialises, so that a network built from them trains without overflow)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(name, cin, cout, k, bias=False):
        scale = math.sqrt(2.0 / (k * k * cout)) if trainable else 1.0
        sd[f"{module_prefix}{name}.weight"] = torch.randn(cout, cin, k, k, generator=g) * scale
        if bias:
            sd[f"{module_prefix}{name}.bias"] = torch.randn(cout, generator=g) * (0.0 if trainable else 1.0)

    def bnorm(name, c):
        for leaf in ("weight", "bias", "running_mean"):
            sd[f"{module_prefix}{name}.{leaf}"] = torch.randn(c, generator=g) * (0.1 if trainable else 1.0) + \
                (1.0 if trainable and leaf == "weight" else 0.0)
        sd[f"{module_prefix}{name}.running_var"] = torch.rand(c, generator=g) + 0.5
        sd[f"{module_prefix}{name}.num_batches_tracked"] = torch.tensor(7)

    def basic(name, cin, cout, k):
        conv(f"{name}.net.0", cin, cout, k)
        bnorm(f"{name}.net.1", cout)

    def conv_bn(name, cin, cout, width):
        inner = min(cin, width * cout)
        conv(f"{name}.net.0", cin, inner, 1)
        bnorm(f"{name}.net.1", inner)
        conv(f"{name}.net.3", inner, cout, 3)
        bnorm(f"{name}.net.4", cout)

    S = len(gr)
    steps = [base] + [step] * (n_blocks - 1)
    interval = math.ceil(sum(steps) / S)
    conv("blocks.0.0.layers.0.0", 3, n_channels * gr[0], 7, bias=True)
    bnorm("blocks.0.0.layers.0.1", n_channels * gr[0])
    for s in range(1, S):
        basic(f"blocks.0.0.layers.{s}", n_channels * gr[s - 1], n_channels * gr[s], 3)
    c, n = n_channels, 0
    for b in range(n_blocks):
        j = 1 if b == 0 else 0
        for _ in range(steps[b]):
            n += 1
            n_in = S - math.floor(max(0, n - 2) / interval)
            n_out = S - math.floor((n - 1) / interval)
            off = S - n_out
            for i in range(n_out):
                s, pre = off + i, f"blocks.{b}.{j}.layers.{i}"
                if i == 0 and n_in == n_out:
                    conv_bn(f"{pre}.conv_normal", c * gr[s], growth * gr[s], bn[s])
                else:
                    conv_bn(f"{pre}.conv_down", c * gr[s - 1], growth * gr[s] // 2, bn[s - 1])
                    conv_bn(f"{pre}.conv_normal", c * gr[s], growth * gr[s] // 2, bn[s])
            j, c = j + 1, c + growth
            if n_in > n_out:
                new = math.floor(0.5 * c)
                for i in range(n_out):
                    basic(f"blocks.{b}.{j}.m.{i}", c * gr[off + i], new * gr[off + i], 1)
                j, c = j + 1, new
        width = c * gr[-1]
        basic(f"classifier.{b}.m.0", width, width, 3)
        basic(f"classifier.{b}.m.1", width, width, 3)
        sd[f"{module_prefix}classifier.{b}.linear.weight"] = torch.randn(classes, width, generator=g) * \
            (1 / math.sqrt(width) if trainable else 1.0)
        sd[f"{module_prefix}classifier.{b}.linear.bias"] = torch.randn(classes, generator=g)
    return sd


@pytest.fixture(scope="module")
def official_sd():
    return official_layout()


def test_official_layout_loads_strictly_by_name(official_sd, tmp_path):
    path = tmp_path / "msdnet-step4-block5.pth.tar"
    torch.save({"epoch": 89, "arch": "msdnet", "state_dict": official_sd, "best_prec1": torch.tensor(74.2)}, path)
    model = nb.create_model("msdnet_imagenet")
    info = load_init(model, path)
    assert info == {"path": str(path), "sha256": file_sha256(path), "format": "msdnet-pytorch"}
    ours = model.state_dict()
    assert len(ours) == len(official_sd) + 2  # + normalize.mean/std, which the official model does not hold
    # positions worked out by hand from the two constructions: block 1 = layers 5-8 (units 5-9), layer 6 drops scale 0
    # (20 layers over 4 scales: interval 5) and is followed by block 1's transition, our unit 7
    for mine, theirs in [("units.0.scales.0.0.bias", "blocks.0.0.layers.0.0.bias"),
                         ("units.0.scales.3.1.running_var", "blocks.0.0.layers.3.net.1.running_var"),
                         ("units.1.scales.0.normal.3.weight", "blocks.0.1.layers.0.conv_normal.net.3.weight"),
                         ("units.1.scales.2.down.0.weight", "blocks.0.1.layers.2.conv_down.net.0.weight"),
                         ("units.6.scales.1.down.4.bias", "blocks.1.1.layers.0.conv_down.net.4.bias"),
                         ("units.7.scales.1.0.weight", "blocks.1.2.m.0.net.0.weight"),
                         ("units.8.scales.1.normal.0.weight", "blocks.1.3.layers.0.conv_normal.net.0.weight"),
                         ("units.10.scales.1.normal.0.weight", "blocks.2.0.layers.0.conv_normal.net.0.weight"),
                         ("heads.4.features.1.0.weight", "classifier.4.m.1.net.0.weight"),
                         ("heads.2.linear.bias", "classifier.2.linear.bias")]:
        assert torch.equal(ours[mine], official_sd["module." + theirs]), (mine, theirs)
    for key, val in ours.items():  # every tensor came from the checkpoint (random values: no collisions)
        if not key.startswith("normalize."):
            assert any(val.shape == v.shape and torch.equal(val, v) for v in official_sd.values()), key


def test_official_layout_without_module_prefix_and_old_bn_buffers(official_sd, tmp_path):
    """PyTorch 0.4-era files: no num_batches_tracked, the legacy (non-zip) serialization, no DataParallel."""
    sd = {k[len("module."):]: v for k, v in official_sd.items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": sd, "arch": "msdnet", "best_prec1": 74.2}, tmp_path / "plain.pth",
               _use_new_zipfile_serialization=False)
    assert load_init(nb.create_model("msdnet_imagenet"), tmp_path / "plain.pth")["format"] == "msdnet-pytorch"


@pytest.mark.parametrize("damage,named", [
    ("drop", "module.classifier.3.linear.weight"),
    ("extra", "module.classifier.9.linear.weight"),
    ("shape", "module.blocks.1.2.m.0.net.0.weight"),
])
def test_official_layout_mismatch_is_one_line_naming_the_key(official_sd, tmp_path, damage, named):
    sd = dict(official_sd)
    if damage == "drop":
        del sd[named]
    elif damage == "extra":
        sd[named] = torch.zeros(3)
    else:
        sd[named] = torch.zeros(1, 1, 1, 1)
    torch.save({"state_dict": sd}, tmp_path / "bad.pth")
    with pytest.raises(UsageError) as err:
        load_init(nb.create_model("msdnet_imagenet"), tmp_path / "bad.pth")
    assert named in str(err.value) and "\n" not in str(err.value)


def test_official_layout_of_another_msdnet_is_refused(tmp_path):
    torch.save({"state_dict": official_layout(n_blocks=4)}, tmp_path / "four.pth")
    with pytest.raises(UsageError, match="has shape .* our units"):
        load_init(nb.create_model("msdnet_imagenet"), tmp_path / "four.pth")


def test_our_checkpoint_loads_and_a_foreign_file_is_one_line(trained_checkpoint, tmp_path):
    model = nb.create_model("smallcnn")
    assert load_init(model, trained_checkpoint)["format"] == "neokd-bench"
    saved = torch.load(trained_checkpoint, weights_only=True)["model"]
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    with pytest.raises(UsageError, match="normalize.mean has shape"):
        load_init(nb.create_model("msdnet_cifar10"), trained_checkpoint)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(UsageError, match="holds neither"):
        load_init(model, tmp_path / "list.pt")


def test_run_starts_from_our_checkpoint_and_records_its_sha256(trained_checkpoint, tmp_path):
    out = tmp_path / "ft"
    rc = main(["run", "--defense", "adv", "--dataset", "fashion-mnist", "--preset", "smoke", "--epochs", "1",
               "--train-limit", "64", "--lr", "1e-12", "--set", "steps=1", "--test-limit", "20", "--eval-steps", "1",
               "--metrics", "anytime", "--quiet", "--device", "cpu", "--init", str(trained_checkpoint),
               "--out", str(out)])
    assert rc == 0
    res = load_result(out / "result.json")
    assert res["training"]["init"]["sha256"] == file_sha256(trained_checkpoint)
    assert res["training"]["init"]["format"] == "neokd-bench"
    before = torch.load(trained_checkpoint, weights_only=True)["model"]
    after = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    convs = [k for k, v in before.items() if k.endswith("weight") and v.dim() == 4]
    assert convs and all(torch.allclose(before[k], after[k], atol=1e-6) for k in convs)  # lr 1e-12: unchanged


def test_imagenet_paper_preset_refuses_without_init(capsys, tmp_path):
    rc = main(["run", "--defense", "neokd", "--dataset", "imagenet", "--preset", "paper", "--device", "cpu",
               "--data-root", str(tmp_path), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "--init" in err and "github.com/kalviny/MSDNet-PyTorch" in err


def _imagenet_tree(root, classes=("n01440764", "n01443537"), per_class=4):
    rng = np.random.default_rng(0)
    for w in classes:
        for j in range(per_class):
            (root / "train" / w).mkdir(parents=True, exist_ok=True)
            img = Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
            img.save(root / "train" / w / f"{w}_{j}.JPEG")
        (root / "val" / w).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / "val" / w / f"v_{w}.JPEG")


def test_imagenet_val_index_file_is_honoured(tmp_path):
    _imagenet_tree(tmp_path)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(5))
    torch.save(perm, tmp_path / "index.pth")  # as MSDNet-PyTorch's dataloader writes it
    b = nb.load_dataset("imagenet", root=str(tmp_path), val_size=3, val_index=str(tmp_path / "index.pth"))
    in_order = sorted(str(p) for p in (tmp_path / "train").rglob("*.JPEG"))  # ImageFolder's order
    assert b.val.paths == [in_order[i] for i in perm[-3:].tolist()]
    assert b.train.paths == [in_order[i] for i in perm[:-3].tolist()]
    assert "index file" in b.info["val_from"] and file_sha256(tmp_path / "index.pth") in b.info["val_from"]
    torch.save(torch.arange(7), tmp_path / "short.pth")
    with pytest.raises(UsageError, match="not a permutation of the 8 training images"):
        nb.load_dataset("imagenet", root=str(tmp_path), val_size=3, val_index=str(tmp_path / "short.pth"))
