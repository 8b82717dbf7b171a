"""Initial weights for `neokd-bench run --init CHECKPOINT`: start training from a checkpoint instead of a
random network.

Two formats are read, both with ``torch.load(weights_only=True)`` (no pickled code runs):

* this project's trainer checkpoint (``checkpoint.pt`` of `neokd-bench run`: a dict with ``model``); its
  weights are loaded by name into the new model, strictly;
* the official MSDNet-PyTorch checkpoint (github.com/kalviny/MSDNet-PyTorch, the ImageNet models its README
  publishes, block=5, step=4): ``{'state_dict': ...}`` saved from a ``DataParallel`` model, so every key starts
  with ``module.``. Its names are translated into ours by name (never by position) and every tensor's shape
  is checked.

The official layout, as its ``models/msdnet.py`` names it, and ours (``neokd_bench.models.msdnet``):

=====================================================  ====================================================
official (after ``module.``)                           ours
=====================================================  ====================================================
``blocks.0.0.layers.0.{0,1}`` (ImageNet stem: 7x7/2     ``units.0.scales.0.{0,1}``
conv with bias, BN, ReLU, max-pool)
``blocks.0.0.layers.S.net.K`` (stem; CIFAR scale 0)     ``units.0.scales.S.K``
``blocks.B.J.layers.I.conv_down.net.K``                 ``units.U.scales.{I + out_from}.down.K``
``blocks.B.J.layers.I.conv_normal.net.K``               ``units.U.scales.{I + out_from}.normal.K``
``blocks.B.J.m.I.net.K`` (transition)                   ``units.U.scales.{I + out_from}.K``
``classifier.H.m.{0,1}.net.K``                          ``heads.H.features.{0,1}.K``
``classifier.H.linear``                                 ``heads.H.linear``
=====================================================  ====================================================

``U`` runs over our flat list of units; ``(B, J)`` is the same unit as the ``J``-th module of block ``B``
(block 0 starts with the stem), found from :attr:`MSDNet.exit_units`. ``normalize.mean/std`` have no
official counterpart (the official loader normalises with the ImageNet mean/std, which our
``msdnet_imagenet`` holds) and are kept. BatchNorm's ``num_batches_tracked`` may be absent from checkpoints of
old PyTorch versions; it is not used in training mode with a momentum, so a missing one keeps ours.

For block=5, step=4 ImageNet (nChannels 32, growth 16, gr/bn factor 1-2-4-4, prune max, reduction 0.5,
bottleneck) the two modules compute the same function; the only difference in the modules is the heads' final
pooling, ``AvgPool2d(2)`` there and ``AdaptiveAvgPool2d(1)`` here, identical on the 2x2 maps of 224x224
inputs. See docs/design.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import UsageError
from .utils import file_sha256

OFFICIAL = "msdnet-pytorch"
OURS = "neokd-bench"
OFFICIAL_SOURCE = ("the ImageNet MSDNet (block=5, step=4) and its validation index file published in the "
                   "README of github.com/kalviny/MSDNet-PyTorch (\"Pre-trained MSDNet Models on ImageNet\")")
_OPTIONAL = ("num_batches_tracked",)


def _read(path: Path, what: str) -> Any:
    if not path.is_file():
        raise UsageError(f"{what} {path}: no such file; pass the path of a checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(f"{what} {path} is not a readable torch file without code "
                         f"({type(exc).__name__}); pass a neokd-bench checkpoint.pt or an MSDNet-PyTorch "
                         f".pth.tar") from exc


def _is_official(sd: dict[str, Any]) -> bool:
    return any(re.match(r"(module\.)?(blocks|classifier)\.\d+\.", k) for k in sd)


def official_name(model: nn.Module, key: str) -> str | None:
    """The official MSDNet-PyTorch name of our parameter/buffer ``key`` (without ``module.``), or None when the
    official network has no counterpart (the normalisation buffers)."""
    if key.startswith("normalize."):
        return None
    m = re.fullmatch(r"heads\.(\d+)\.features\.([01])\.(\d+)\.(\w+)", key)
    if m:
        return f"classifier.{m[1]}.m.{m[2]}.net.{m[3]}.{m[4]}"
    m = re.fullmatch(r"heads\.(\d+)\.linear\.(\w+)", key)
    if m:
        return f"classifier.{m[1]}.linear.{m[2]}"
    m = re.fullmatch(r"units\.(\d+)\.scales\.(\d+)\.(?:(down|normal)\.)?(\d+)\.(\w+)", key)
    if not m:
        raise UsageError(f"--init: our parameter {key} has no official MSDNet-PyTorch name; the official format "
                         f"is read for MSDNet models only (--model msdnet_imagenet)")
    i, s, conv, k, leaf = int(m[1]), int(m[2]), m[3], m[4], m[5]
    exits = list(model.exit_units)  # type: ignore[attr-defined]
    b = next(b for b, last in enumerate(exits) if i <= last)
    j = i - (exits[b - 1] + 1 if b else 0)
    unit = model.units[i]  # type: ignore[attr-defined, index]
    pos = s - unit.out_from
    if unit.kind == "stem":
        imagenet_first = s == 0 and model.config.stem == "imagenet"  # type: ignore[attr-defined]
        return f"blocks.{b}.{j}.layers.{s}.{'' if imagenet_first else 'net.'}{k}.{leaf}"
    if unit.kind == "layer":
        return f"blocks.{b}.{j}.layers.{pos}.conv_{conv}.net.{k}.{leaf}"
    return f"blocks.{b}.{j}.m.{pos}.net.{k}.{leaf}"


def map_official(model: nn.Module, state_dict: dict[str, Any], where: str = "--init") -> dict[str, torch.Tensor]:
    """The official MSDNet-PyTorch ``state_dict`` (with or without ``module.``) as our ``state_dict``, by name,
    shapes checked. A missing, unexpected or mis-shaped key is a one-line :class:`UsageError` naming it."""
    if not hasattr(model, "exit_units"):
        raise UsageError(f"{where}: an MSDNet-PyTorch checkpoint fits an MSDNet only, not {type(model).__name__}; "
                         f"use --model msdnet_imagenet")
    theirs = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}
    ours = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key, mine in ours.items():
        name = official_name(model, key)
        if name is None:
            out[key] = mine
            continue
        if name not in theirs:
            if key.rsplit(".", 1)[-1] in _OPTIONAL:
                out[key] = mine
                continue
            raise UsageError(f"{where}: the checkpoint lacks module.{name} (our {key}, shape {tuple(mine.shape)}); "
                             f"it is not the MSDNet this model is (check --model and its options)")
        val = theirs[name]
        if (shape := shape_of(val)) != tuple(mine.shape):
            raise UsageError(f"{where}: module.{name} has shape {shape}, our {key} has {tuple(mine.shape)}; "
                             f"the checkpoint was trained with other MSDNet options (check --model)")
        out[key] = val.to(mine.dtype)
        used.add(name)
    extra = sorted(set(theirs) - used)
    if extra:
        raise UsageError(f"{where}: the checkpoint has module.{extra[0]} (and {len(extra) - 1} more keys) that this "
                         f"model lacks; it is not the MSDNet this model is (check --model and its options)")
    return out


def shape_of(value: Any) -> tuple[int, ...] | str:
    """A tensor's shape, or the type name of anything else (which then matches no shape)."""
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def load_strict(model: nn.Module, state_dict: dict[str, Any], where: str = "--init") -> None:
    """``model.load_state_dict(state_dict)`` with every key and shape checked first: one line naming the first
    missing, unexpected or mis-shaped key."""
    ours = model.state_dict()
    for key, mine in ours.items():
        if key not in state_dict:
            raise UsageError(f"{where}: the checkpoint lacks {key} (shape {tuple(mine.shape)}); pass a checkpoint "
                             f"of the same --model and options")
        if (shape := shape_of(state_dict[key])) != tuple(mine.shape):
            raise UsageError(f"{where}: {key} has shape {shape} in the checkpoint, {tuple(mine.shape)} in this "
                             f"model; pass a checkpoint of the same --model and options")
    extra = sorted(set(state_dict) - set(ours))
    if extra:
        raise UsageError(f"{where}: the checkpoint has {extra[0]} (and {len(extra) - 1} more keys) that this model "
                         f"lacks; pass a checkpoint of the same --model and options")
    model.load_state_dict(state_dict, strict=True)


def load_init(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load the weights at ``path`` into ``model`` (either format) and return the record the result keeps:
    ``{"path", "sha256", "format"}``."""
    path = Path(path)
    obj = _read(path, "--init")
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        fmt, sd = OURS, obj["model"]
        load_strict(model, sd)
    else:
        sd = obj.get("state_dict") if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) else obj
        if not isinstance(sd, dict) or not _is_official(sd):
            raise UsageError(f"--init {path} holds neither a neokd-bench checkpoint (a dict with 'model') nor an "
                             f"MSDNet-PyTorch one (a dict with 'state_dict' of blocks.* and classifier.*)")
        fmt = OFFICIAL
        model.load_state_dict(map_official(model, sd), strict=True)
    return {"path": str(path), "sha256": file_sha256(path), "format": fmt}


def read_val_index(path: str | Path, n_train: int) -> torch.Tensor:
    """MSDNet-PyTorch's validation index file (``index.pth``: ``torch.save(torch.randperm(N))`` over the training
    set in ``ImageFolder`` order, classes and file names sorted; its last 50,000 entries are the validation
    images held out of the pretrained model's training). Returns the permutation, checked against ``n_train``."""
    path = Path(path)
    obj = _read(path, "--val-index")
    if not isinstance(obj, torch.Tensor) or obj.dim() != 1 or obj.dtype not in (torch.int64, torch.int32):
        raise UsageError(f"--val-index {path} holds a {type(obj).__name__}, not a 1-D integer tensor; pass "
                         f"MSDNet-PyTorch's index.pth")
    idx = obj.long()
    if len(idx) != n_train or not torch.equal(torch.sort(idx).values, torch.arange(n_train)):
        raise UsageError(f"--val-index {path} is not a permutation of the {n_train} training images found "
                         f"({len(idx)} entries); pass the index.pth of this training folder")
    return idx
