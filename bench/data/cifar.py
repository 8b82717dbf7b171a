"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009): 32x32 RGB, 10 / 100 classes; NEO-KD's MSDNet datasets.

Read from the python pickles of the official archives, never downloaded:

* CIFAR-10: ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``;
* CIFAR-100: ``<root>/cifar-100-python/{train, test, meta}`` (fine labels).

``root`` defaults to ``$NEOKD_DATA_ROOT``; ``root`` may also be the ``cifar-*`` folder itself.

Validation: 5,000 images held out of the 50,000 training images with ``split_seed`` (MSDNet's
``--use-valid`` size); test: the official 10,000. Augmentation (train split only, when ``augment``):
random 32x32 crop of the image zero-padded by 4 px, then a random horizontal flip, as in MSDNet's and
Triple-Wins' CIFAR loaders. mean/std: the training-set statistics (CIFAR-10 0.4914/0.4822/0.4465,
0.2470/0.2435/0.2616; CIFAR-100 0.5071/0.4865/0.4409, 0.2673/0.2564/0.2762).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import transforms

from .base import DatasetBundle, TensorImageDataset
from .common import check_no_extra, check_source, not_found, split_indices, user_root

DEFAULT_VAL_SIZE = 5000

_SPECS: dict[str, dict[str, Any]] = {
    "cifar10": {"folder": "cifar-10-batches-py", "train": [f"data_batch_{i}" for i in range(1, 6)],
                "test": ["test_batch"], "meta": "batches.meta", "label_key": b"labels", "num_classes": 10,
                "mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616),
                "layout": "<root>/cifar-10-batches-py/{data_batch_1..data_batch_5,test_batch,batches.meta}"},
    "cifar100": {"folder": "cifar-100-python", "train": ["train"], "test": ["test"], "meta": "meta",
                 "label_key": b"fine_labels", "num_classes": 100,
                 "mean": (0.5071, 0.4865, 0.4409), "std": (0.2673, 0.2564, 0.2762),
                 "layout": "<root>/cifar-100-python/{train,test,meta}"},
}


def cifar_train_transform(size: int = 32, padding: int = 4) -> transforms.Compose:
    """Random crop of the zero-padded image, then random horizontal flip (tensor in, tensor out)."""
    return transforms.Compose([transforms.RandomCrop(size, padding=padding), transforms.RandomHorizontalFlip()])


# The only globals a CIFAR batch refers to: numpy's array reconstruction (pickle protocol 2, as the official
# files; ``_frombuffer`` for protocol 5, as a batch re-saved by Python 3.8+), dtype, ndarray, numpy scalars.
_ALLOWED_GLOBALS = {
    (mod, name)
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
     ("numpy", "ndarray"), ("numpy", "dtype")}


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as Python 3 writes bytes into a protocol-2 pickle; latin1 only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, nothing else: a crafted batch cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):  # bytes in a protocol-2 pickle written by Python 3
            return _latin1_encode
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name} (a CIFAR batch holds only numpy arrays)")


def load_batch(path: Path) -> Any:
    """One CIFAR python batch, through :class:`RestrictedUnpickler` (byte-string keys, as the files have)."""
    with open(path, "rb") as fh:
        return RestrictedUnpickler(fh, encoding="bytes").load()


def _read_batches(folder: Path, names: list[str], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for name in names:
        d = load_batch(folder / name)
        if not isinstance(d, dict):
            raise TypeError(f"{folder / name} holds a {type(d).__name__}, not a batch dict")
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[label_key], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
            raise ValueError(f"{folder / name}: data {data.shape} / labels {labels.shape}, expected (N, 3072) / (N,)")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    return np.concatenate(xs), np.concatenate(ys)


def _build(name: str, root: str | os.PathLike | None, source: str, val_size: int | None, split_seed: int,
           augment: bool, kw: dict[str, Any]) -> DatasetBundle:
    spec = _SPECS[name]
    check_no_extra(name, kw)
    check_source(source, ("auto", "folder"), name)
    how = f"pass --data-root DIR containing {spec['folder']}/ (the python version of the official archive)"
    user = user_root(root)
    if user is None:
        raise not_found(name, None, spec["layout"], how, why="no folder given")
    folder = user / spec["folder"] if (user / spec["folder"]).is_dir() else user
    if not folder.is_dir():
        raise not_found(name, user, spec["layout"], how)
    missing = [n for n in spec["train"] + spec["test"] if not (folder / n).is_file()]
    if missing:
        raise not_found(name, folder, spec["layout"], how, why=f"missing {', '.join(missing)}")
    try:
        x_tr, y_tr = _read_batches(folder, spec["train"], spec["label_key"])
        x_te, y_te = _read_batches(folder, spec["test"], spec["label_key"])
    except (OSError, ValueError, KeyError, pickle.UnpicklingError, EOFError, TypeError, AttributeError,
            IndexError) as exc:
        raise not_found(name, folder, spec["layout"], how, why=f"malformed file ({type(exc).__name__}: {exc})") from exc
    n_cls = spec["num_classes"]
    if y_tr.min() < 0 or y_tr.max() >= n_cls or y_te.min() < 0 or y_te.max() >= n_cls:
        raise not_found(name, folder, spec["layout"], how, why=f"labels outside 0..{n_cls - 1}")
    n_val = DEFAULT_VAL_SIZE if val_size is None else int(val_size)
    tr_idx, va_idx = split_indices(len(y_tr), n_val, split_seed)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
    train_tf = cifar_train_transform() if augment else None
    return DatasetBundle(
        name=name,
        train=TensorImageDataset(t(x_tr[tr_idx]), t(y_tr[tr_idx]), train_tf),
        val=TensorImageDataset(t(x_tr[va_idx]), t(y_tr[va_idx])),
        test=TensorImageDataset(t(x_te), t(y_te)),
        num_classes=n_cls, input_size=(3, 32, 32), mean=list(spec["mean"]), std=list(spec["std"]),
        source=f"folder:{folder}", split_seed=split_seed,
        info={"val_size": n_val, "val_from": "held out of the official training set, uniformly at random",
              "augmentation": "random-crop 32 pad 4 + horizontal flip (train only)" if augment else "none",
              "path": str(folder)},
    )


def cifar10(root: str | os.PathLike | None = None, source: str = "auto", val_size: int | None = None,
            split_seed: int = 0, augment: bool = True, **kw: Any) -> DatasetBundle:
    """CIFAR-10 from ``<root>/cifar-10-batches-py/``; 45k train / 5k val (held out) / 10k test."""
    return _build("cifar10", root, source, val_size, split_seed, augment, kw)


def cifar100(root: str | os.PathLike | None = None, source: str = "auto", val_size: int | None = None,
             split_seed: int = 0, augment: bool = True, **kw: Any) -> DatasetBundle:
    """CIFAR-100 (fine labels) from ``<root>/cifar-100-python/``; 45k train / 5k val / 10k test."""
    return _build("cifar100", root, source, val_size, split_seed, augment, kw)
