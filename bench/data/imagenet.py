"""Tiny-ImageNet (Le & Yang, 2015) and ImageNet (ILSVRC-2012, Russakovsky et al., 2015), read from a
folder the user names (``root`` or ``$NEOKD_DATA_ROOT``); never downloaded.

Tiny-ImageNet: ``<root>/tiny-imagenet-200/{wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG,
val/val_annotations.txt}`` (``root`` may be the ``tiny-imagenet-200`` folder itself). 200 classes,
64x64 RGB; class indices follow the sorted wnids. All images are decoded once into memory (uint8,
about 1.3 GB for the 110k images). Validation: 10,000 images held out of the 100,000 training images
with ``split_seed``; test: the official labelled validation set (10,000), as the official test set has
no labels. Augmentation (train only, when ``augment``): random 64x64 crop of the image zero-padded by
8 px, then a random horizontal flip: CIFAR's recipe scaled with the side (4/32 = 8/64). We chose this
over RandomResizedCrop because the images are already small and the paper follows MSDNet's CIFAR
pipeline for Tiny-ImageNet's training schedule. mean/std 0.4802/0.4481/0.3975, 0.2302/0.2265/0.2262.

ImageNet: ``<root>/train/<wnid>/*.JPEG`` and ``<root>/val/<wnid>/*.JPEG`` (one folder per class, as
torchvision's ``ImageFolder`` expects; ``root`` may also hold an ``imagenet/`` folder with them). Images
are read lazily. Train: RandomResizedCrop(224) + horizontal flip (when ``augment``), as in MSDNet's
loader; val/test: Resize(256) + CenterCrop(224). Validation: 50,000 images held out of train with
``split_seed`` (MSDNet's ``--use-valid`` size); test: the official validation set.
mean/std 0.485/0.456/0.406, 0.229/0.224/0.225.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms import v2

from ..errors import DataNotFoundError
from .base import DatasetBundle, TensorImageDataset
from .common import check_no_extra, check_source, not_found, split_indices, user_root

IMG_EXT = (".jpeg", ".jpg", ".png")
# torchvision 0.29 announces that its image decoders will move to TorchCodec; they are the same libjpeg-turbo and
# libpng in every torchvision this project supports (torch 2.11's included), and PIL stays the fallback.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)

TINY_LAYOUT = ("<root>/tiny-imagenet-200/{wnids.txt,train/<wnid>/images/*.JPEG,val/images/*.JPEG,"
               "val/val_annotations.txt}")
TINY_HOW = "pass --data-root DIR containing tiny-imagenet-200/ (unzip tiny-imagenet-200.zip there)"
TINY_MEAN, TINY_STD = (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)
TINY_VAL_SIZE = 10000

IMAGENET_LAYOUT = "<root>/{train,val}/<wnid>/*.JPEG (one folder per class, as for torchvision ImageFolder)"
IMAGENET_HOW = "pass --data-root DIR containing train/ and val/ with one sub-folder per class"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGENET_VAL_SIZE = 50000


def _load_rgb(path: str) -> Image.Image:
    """The image at ``path`` as RGB; a file that is not an image is a one-line error naming it."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's UnidentifiedImageError is an OSError
        raise DataNotFoundError(f"{path} is not a readable image ({type(exc).__name__}); remove it from the "
                                f"dataset folder or replace it") from exc


def _pil_to_uint8(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def decode_rgb(path: str) -> torch.Tensor:
    """The image at ``path`` as a uint8 RGB tensor (3 x H x W), decoded by torchvision's libjpeg-turbo / libpng
    decoders (1.6-1.8x the images per CPU-second of PIL's open-convert-transform path, ``benchmarks/README.md``).
    What torchvision does not decode (another format, a CMYK JPEG on an older libjpeg) goes to PIL, which either
    reads it or names the file in one line."""
    try:
        return decode_image(read_file(path), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError):
        return _pil_to_uint8(_load_rgb(path))


class ImageFileDataset(Dataset):
    """Images read lazily from files: decoded to uint8 RGB (:func:`decode_rgb`), ``transform`` on the uint8
    tensor (torchvision ``transforms.v2``), then float [0,1] CxHxW."""

    def __init__(self, paths: Sequence[str], labels: Sequence[int],
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.paths, self.labels = list(paths), torch.as_tensor(list(labels), dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = decode_rgb(self.paths[i])
        if self.transform is not None:
            x = self.transform(x)
        return x.float().div_(255.0), int(self.labels[i])

    def subset(self, n: int | None) -> ImageFileDataset:
        """The first ``n`` samples (the lists are stored in a seeded random order)."""
        if n is None or n >= len(self):
            return self
        return ImageFileDataset(self.paths[:n], self.labels[:n].tolist(), self.transform)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All samples stacked (float, N x C x H x W): mind the memory on large sets."""
        return torch.stack([self[i][0] for i in range(len(self))]), self.labels.clone()


# ------------------------------------------------------------------------------------------------
# Tiny-ImageNet
# ------------------------------------------------------------------------------------------------
def _decode_all(paths: list[str], size: int) -> torch.Tensor:
    def one(p: str) -> torch.Tensor:
        x = decode_rgb(p)
        if tuple(x.shape[1:]) != (size, size):
            raise ValueError(f"{p} is {x.shape[2]}x{x.shape[1]}, expected {size}x{size}")
        return x

    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        for i, x in enumerate(pool.map(one, paths, chunksize=256)):
            out[i] = x
    return out


def _tiny_index(folder: Path) -> tuple[list[str], list[str], list[int], list[str], list[int]]:
    wnids = sorted({w.strip() for w in (folder / "wnids.txt").read_text().split() if w.strip()})
    if not wnids:
        raise ValueError("wnids.txt is empty")
    cls = {w: i for i, w in enumerate(wnids)}
    tr_paths, tr_labels = [], []
    for w in wnids:
        img_dir = folder / "train" / w / "images"
        files = sorted(p for p in os.listdir(img_dir) if p.lower().endswith(IMG_EXT))
        if not files:
            raise ValueError(f"no images in {img_dir}")
        tr_paths += [str(img_dir / f) for f in files]
        tr_labels += [cls[w]] * len(files)
    te_paths, te_labels = [], []
    for line in (folder / "val" / "val_annotations.txt").read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 2:
            continue
        if parts[1] not in cls:
            raise ValueError(f"val_annotations.txt names wnid {parts[1]!r} that wnids.txt lacks")
        te_paths.append(str(folder / "val" / "images" / parts[0]))
        te_labels.append(cls[parts[1]])
    if not te_paths:
        raise ValueError("val/val_annotations.txt lists no image")
    return wnids, tr_paths, tr_labels, te_paths, te_labels


def tiny_imagenet(root: str | os.PathLike | None = None, source: str = "auto", val_size: int | None = None,
                  split_seed: int = 0, augment: bool = True, **kw: Any) -> DatasetBundle:
    """Tiny-ImageNet from ``<root>/tiny-imagenet-200/``: 90k train / 10k val (held out) / 10k test
    (the official labelled val set), decoded into memory; see the module docstring."""
    check_no_extra("tiny-imagenet", kw)
    check_source(source, ("auto", "folder"), "tiny-imagenet")
    user = user_root(root)
    if user is None:
        raise not_found("tiny-imagenet", None, TINY_LAYOUT, TINY_HOW, why="no folder given")
    folder = user / "tiny-imagenet-200" if (user / "tiny-imagenet-200").is_dir() else user
    if not (folder / "wnids.txt").is_file() or not (folder / "train").is_dir() \
            or not (folder / "val" / "val_annotations.txt").is_file():
        raise not_found("tiny-imagenet", folder, TINY_LAYOUT, TINY_HOW)
    try:
        wnids, tr_paths, tr_labels, te_paths, te_labels = _tiny_index(folder)
        n_val = TINY_VAL_SIZE if val_size is None else int(val_size)
        tr_idx, va_idx = split_indices(len(tr_paths), n_val, split_seed)
        x_train_all = _decode_all(tr_paths, 64)
        x_test = _decode_all(te_paths, 64)
    except (OSError, ValueError) as exc:
        raise not_found("tiny-imagenet", folder, TINY_LAYOUT, TINY_HOW,
                        why=f"malformed ({type(exc).__name__}: {exc})") from exc
    y_all = torch.as_tensor(tr_labels, dtype=torch.long)
    tr_i, va_i = torch.from_numpy(tr_idx), torch.from_numpy(va_idx)
    train_tf = transforms.Compose([transforms.RandomCrop(64, padding=8), transforms.RandomHorizontalFlip()]) \
        if augment else None
    return DatasetBundle(
        name="tiny-imagenet",
        train=TensorImageDataset(x_train_all[tr_i], y_all[tr_i], train_tf),
        val=TensorImageDataset(x_train_all[va_i], y_all[va_i]),
        test=TensorImageDataset(x_test, torch.as_tensor(te_labels, dtype=torch.long)),
        num_classes=len(wnids), input_size=(3, 64, 64), mean=list(TINY_MEAN), std=list(TINY_STD),
        source=f"folder:{folder}", split_seed=split_seed,
        info={"val_size": n_val, "val_from": "held out of the official training set, uniformly at random",
              "test_from": "the official labelled validation set",
              "augmentation": "random-crop 64 pad 8 + horizontal flip (train only)" if augment else "none",
              "path": str(folder)},
    )


# ------------------------------------------------------------------------------------------------
# ImageNet
# ------------------------------------------------------------------------------------------------
def _image_folder(split_dir: Path, classes: list[str] | None = None) -> tuple[list[str], list[str], list[int]]:
    if classes is None:
        classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if not classes:
        raise ValueError(f"no class folders in {split_dir}")
    paths, labels = [], []
    for i, c in enumerate(classes):
        d = split_dir / c
        if not d.is_dir():
            raise ValueError(f"class folder {d} missing")
        files = sorted(e.name for e in os.scandir(d) if e.name.lower().endswith(IMG_EXT))
        paths += [str(d / f) for f in files]
        labels += [i] * len(files)
    if not paths:
        raise ValueError(f"no images under {split_dir}")
    return classes, paths, labels


HEADER_CHECK_LIMIT = 50_000


def check_headers(paths: Sequence[str], limit: int = HEADER_CHECK_LIMIT) -> None:
    """Before any work: every file's header must be an image's (PIL reads the header only). A folder of
    more than ``limit`` files is checked lazily instead, when each image is read (still one line)."""
    if len(paths) > limit:
        return

    def one(p: str) -> None:
        try:
            with Image.open(p):
                pass
        except (OSError, ValueError, SyntaxError) as exc:
            raise DataNotFoundError(f"{p} is not a readable image ({type(exc).__name__}); remove it from the "
                                    f"dataset folder or replace it") from exc

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(one, paths, chunksize=256))


def imagenet(root: str | os.PathLike | None = None, source: str = "auto", val_size: int | None = None,
             split_seed: int = 0, augment: bool = True, val_index: str | os.PathLike | None = None,
             **kw: Any) -> DatasetBundle:
    """ImageNet (ILSVRC-2012) from ``<root>/{train,val}/<wnid>/``, read lazily at 224x224; see the
    module docstring for the transforms and the held-out validation split. ``val_index``: MSDNet-PyTorch's
    ``index.pth`` (a permutation of the training images in ImageFolder order); its last ``val_size`` (50,000)
    entries are the validation split, the rest the training split, so that a model fine-tuned from MSDNet-PyTorch's
    pretrained weights has its budgeted thresholds set on images that model was never trained on."""
    check_no_extra("imagenet", kw)
    check_source(source, ("auto", "folder"), "imagenet")
    user = user_root(root)
    if user is None:
        raise not_found("imagenet", None, IMAGENET_LAYOUT, IMAGENET_HOW, why="no folder given")
    folder = user / "imagenet" if (user / "imagenet" / "train").is_dir() else user
    if not (folder / "train").is_dir() or not (folder / "val").is_dir():
        raise not_found("imagenet", folder, IMAGENET_LAYOUT, IMAGENET_HOW)
    try:
        classes, tr_paths, tr_labels = _image_folder(folder / "train")
        _, te_paths, te_labels = _image_folder(folder / "val", classes)
        check_headers(tr_paths + te_paths)
    except (OSError, ValueError) as exc:
        raise not_found("imagenet", folder, IMAGENET_LAYOUT, IMAGENET_HOW,
                        why=f"malformed ({type(exc).__name__}: {exc})") from exc
    n_val = IMAGENET_VAL_SIZE if val_size is None else int(val_size)
    val_from = "held out of the official training set, uniformly at random"
    if val_index is not None:
        from ..init_weights import read_val_index
        from ..utils import file_sha256

        perm = read_val_index(val_index, len(tr_paths))
        if not 0 < n_val < len(perm):
            raise DataNotFoundError(f"--val-size {n_val} must be below the {len(perm)} training images")
        tr_idx, va_idx = perm[:-n_val].numpy(), perm[-n_val:].numpy()
        val_from = (f"the last {n_val} entries of MSDNet-PyTorch's validation index file "
                    f"(sha256 {file_sha256(val_index)})")
    else:
        tr_idx, va_idx = split_indices(len(tr_paths), n_val, split_seed)
    eval_tf = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224)])
    train_tf = v2.Compose([v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip()]) \
        if augment else eval_tf
    pick = lambda seq, idx: [seq[i] for i in idx]
    return DatasetBundle(
        name="imagenet",
        train=ImageFileDataset(pick(tr_paths, tr_idx), pick(tr_labels, tr_idx), train_tf),
        val=ImageFileDataset(pick(tr_paths, va_idx), pick(tr_labels, va_idx), eval_tf),
        test=ImageFileDataset(te_paths, te_labels, eval_tf),
        num_classes=len(classes), input_size=(3, 224, 224), mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD),
        source=f"folder:{folder}", split_seed=split_seed,
        info={"val_size": n_val, "val_from": val_from,
              "test_from": "the official validation set",
              "augmentation": ("RandomResizedCrop 224 + horizontal flip (train only); eval: resize 256, "
                               "center-crop 224") if augment else "eval transform everywhere (resize 256, "
                                                                 "center-crop 224)",
              "path": str(folder)},
    )
