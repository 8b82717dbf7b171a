"""Helpers shared by the dataset builders: where a dataset is looked for, reading IDX files, holding a
validation split out of the training set, and the one-line errors a user sees when a folder is wrong.

Resolution order (docs/data.md):

1. the folder the user names: ``root=...`` (the CLI's ``--data-root``) or the environment variable
   ``NEOKD_DATA_ROOT``;
2. the system location, where the dataset has one (Fashion-MNIST: ``/usr/share/datasets/fashion-mnist/``
   from the Debian package ``dataset-fashion-mnist``);
3. the bundled subset, where one exists (Fashion-MNIST only).

``source="folder" | "system" | "bundled"`` forces one of them; ``"auto"`` walks the order above. A folder
the user named explicitly is never skipped silently: if it is malformed, the builder fails and shows the
layout it expected. Nothing is ever downloaded.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataNotFoundError, UsageError
from .base import DatasetBundle, TensorImageDataset

ENV_DATA_ROOT = "NEOKD_DATA_ROOT"
SOURCES = ("auto", "folder", "system", "bundled")

# IDX magic numbers: 0x00000801 labels (1-d uint8), 0x00000803 images (3-d uint8).
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def user_root(root: str | os.PathLike | None) -> Path | None:
    """The folder the user named: ``root`` if given, else ``$NEOKD_DATA_ROOT``, else ``None``."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get(ENV_DATA_ROOT, "")
    return Path(env).expanduser() if env else None


def check_source(source: str, allowed: Sequence[str], dataset: str = "this dataset") -> str:
    """Validate ``source`` against the sources a dataset has (one-line :class:`UsageError`)."""
    if source not in SOURCES or source not in allowed:
        what = f"has no {source} copy" if source in SOURCES else f"has no data source {source!r}"
        raise UsageError(f"{dataset} {what}; its sources are {', '.join(allowed)}: pass --data-root DIR "
                         f"or --data-source {allowed[-1]}")
    return source


def check_no_extra(dataset: str, kw: dict[str, Any]) -> None:
    """Builders take ``**kw`` by contract but know no extra option: reject any, in one line."""
    if kw:
        raise UsageError(
            f"dataset {dataset!r} takes no option(s) {', '.join(sorted(kw))}; "
            "its options are root, source, val_size, split_seed, augment"
        )


def not_found(dataset: str, tried: Path | str | None, layout: str, how: str,
              why: str = "not found") -> DataNotFoundError:
    """The one-line error: dataset, path tried, layout expected, how to get it."""
    where = f" at {tried}" if tried is not None else ""
    return DataNotFoundError(f"{dataset}: {why}{where}; expected layout {layout}; {how}")


# ------------------------------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST) files
# ------------------------------------------------------------------------------------------------
def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a numpy array, checking the header against the size.

    The Debian ``dataset-fashion-mnist`` files are gzip streams whose header carries no file name,
    so their compressed checksums differ from torchvision's; the decompressed bytes are the originals.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path} cannot be read ({type(exc).__name__}: {exc})") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(f"{path}: header says shape {dims} ({expected} bytes) but the file has "
                         f"{len(data) - header} bytes of data")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def find_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` or ``folder/stem.gz``, whichever exists (uncompressed first)."""
    for name in (stem, stem + ".gz"):
        p = folder / name
        if p.is_file():
            return p
    return None


IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def idx_folder(candidates: Iterable[Path]) -> Path | None:
    """The first candidate folder that holds all four IDX files (raw or ``.gz``)."""
    for folder in candidates:
        if folder.is_dir() and all(find_file(folder, s) is not None for s in IDX_STEMS.values()):
            return folder
    return None


def load_idx_folder(folder: Path) -> dict[str, np.ndarray]:
    """The four IDX arrays of an (F)MNIST folder; raises ``ValueError`` on a malformed file."""
    out = {}
    for key, stem in IDX_STEMS.items():
        path = find_file(folder, stem)
        if path is None:
            raise ValueError(f"{folder / stem} missing")
        out[key] = read_idx(path)
    for split in ("train", "test"):
        x, y = out[f"{split}_images"], out[f"{split}_labels"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"{folder}: {split} images {x.shape} and labels {y.shape} do not match")
    return out


# ------------------------------------------------------------------------------------------------
# Validation split and checksums
# ------------------------------------------------------------------------------------------------
def split_indices(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold ``val_size`` of ``n`` training samples out, uniformly at random with ``seed``.

    Returns ``(train_idx, val_idx)``: disjoint, together covering ``range(n)``, each in the seeded
    random order, so that a prefix of either split (what ``subset(n)`` takes) is a uniform sample.
    """
    if not 0 < val_size < n:
        if n < 2:
            raise UsageError(f"the training set has {n} image(s): too few to hold a validation split out; "
                             f"check --data-root")
        raise UsageError(f"cannot hold {val_size} validation images out of a training set of {n}; "
                         f"pass --val-size 1..{n - 1}")
    perm = np.random.default_rng(seed).permutation(n)
    return perm[val_size:], perm[:val_size]


def sha256_array(a: np.ndarray) -> str:
    """SHA-256 of an array's C-contiguous bytes (dtype and shape are not hashed)."""
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def file_digest(path: str | os.PathLike, algo: str = "sha256", *, decompress: bool = False) -> str:
    """MD5/SHA-256 of a file, optionally of its gunzipped content."""
    h = hashlib.new(algo)
    opener = gzip.open if decompress else open
    with opener(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def to_tensor_nchw(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) numpy -> contiguous uint8 torch (N, C, H, W)."""
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4:
        images = images.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8))


# ------------------------------------------------------------------------------------------------
# MNIST-like (IDX) datasets: shared builder for MNIST and Fashion-MNIST
# ------------------------------------------------------------------------------------------------
def idx_bundle(*, name: str, folder: Path, source_label: str, val_size: int, split_seed: int,
               mean: Sequence[float], std: Sequence[float], num_classes: int = 10) -> DatasetBundle:
    """A :class:`DatasetBundle` from a folder of the four IDX files; val held out of train."""

    raw = load_idx_folder(folder)
    x_tr, y_tr = raw["train_images"], raw["train_labels"]
    tr_idx, va_idx = split_indices(len(y_tr), val_size, split_seed)
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a).astype(np.int64))
    train = TensorImageDataset(to_tensor_nchw(x_tr[tr_idx]), as_t(y_tr[tr_idx]))
    val = TensorImageDataset(to_tensor_nchw(x_tr[va_idx]), as_t(y_tr[va_idx]))
    test = TensorImageDataset(to_tensor_nchw(raw["test_images"]), as_t(raw["test_labels"]))
    h, w = x_tr.shape[1:]
    return DatasetBundle(
        name=name, train=train, val=val, test=test, num_classes=num_classes, input_size=(1, h, w),
        mean=list(mean), std=list(std), source=source_label, split_seed=split_seed,
        info={"val_size": val_size, "val_from": "held out of the official training set, uniformly at random",
              "augmentation": "none", "path": str(folder)},
    )
