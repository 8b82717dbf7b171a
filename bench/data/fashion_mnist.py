"""Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017; MIT licence, Zalando): 28x28 grey images, 10 classes.

Not a dataset of the NEO-KD paper: it is this project's quick-start and CI dataset (threat model in
docs/design.md: eps 0.1, step 0.025). Resolution order (docs/data.md):

1. ``root`` / ``$NEOKD_DATA_ROOT``: ``<root>/FashionMNIST/raw/*-ubyte`` (torchvision's raw layout, ``.gz``
   accepted), or ``<root>/fashion-mnist/`` or ``<root>`` itself holding the four IDX files;
2. the system copy from the Debian package ``dataset-fashion-mnist``: ``/usr/share/datasets/fashion-mnist/``;
3. the bundled subset ``fashion_mnist_subset.npz`` (10k train / 2k val / 2k test, class-balanced; see
   ``FASHION_MNIST_SUBSET.md``).

Full set (folder or system): the validation split (default 5,000 images) is held out of the 60,000
training images with ``split_seed``; the test split is the official 10,000. Bundled: the stored 2,000
validation images (``val_size`` may ask for a smaller prefix). No augmentation, as for MNIST in
Triple-Wins. mean/std: 0.2860 / 0.3530, the statistics of the full training set.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError
from .base import DatasetBundle, TensorImageDataset
from .common import (
    check_no_extra,
    check_source,
    file_digest,
    idx_bundle,
    idx_folder,
    not_found,
    to_tensor_nchw,
    user_root,
)

NAME = "fashion-mnist"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
BUNDLED = Path(__file__).resolve().parent / "fashion_mnist_subset.npz"
MEAN, STD = (0.2860,), (0.3530,)
DEFAULT_VAL_SIZE = 5000
LAYOUT = ("<root>/FashionMNIST/raw/{train-images-idx3-ubyte,train-labels-idx1-ubyte,"
          "t10k-images-idx3-ubyte,t10k-labels-idx1-ubyte}[.gz] (or the four files in <root>)")
HOW = ("pass --data-root DIR containing FashionMNIST/raw/, or `apt-get install dataset-fashion-mnist`, "
       "or use --data-source bundled")


def folder_candidates(root: Path) -> list[Path]:
    return [root / "FashionMNIST" / "raw", root / "fashion-mnist", root]


def load_bundled_arrays(path: Path = BUNDLED) -> dict[str, np.ndarray]:
    """The six uint8 arrays of the bundled subset (read afresh on every call: nothing is cached)."""
    if not path.is_file():
        raise not_found(NAME, path, "fashion_mnist_subset.npz inside the package", "reinstall neokd-bench "
                        "or run `python scripts/make_fashion_mnist_subset.py`", why="bundled subset missing")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def bundled_bundle(val_size: int | None, split_seed: int) -> DatasetBundle:
    arrays = load_bundled_arrays()
    n_val = len(arrays["y_val"])
    if val_size is not None and not 0 < val_size <= n_val:
        raise UsageError(f"the bundled Fashion-MNIST subset has {n_val} validation images; "
                         f"pass --val-size 1..{n_val}, or a full copy with --data-root")
    n_val = n_val if val_size is None else val_size
    mk = lambda x, y: TensorImageDataset(to_tensor_nchw(x), torch.from_numpy(y.astype(np.int64)))
    return DatasetBundle(
        name=NAME, train=mk(arrays["x_train"], arrays["y_train"]),
        val=mk(arrays["x_val"][:n_val], arrays["y_val"][:n_val]),
        test=mk(arrays["x_test"], arrays["y_test"]),
        num_classes=10, input_size=(1, 28, 28), mean=list(MEAN), std=list(STD), source="bundled",
        split_seed=split_seed,
        info={"val_size": n_val, "val_from": "the bundled subset's stored validation split (drawn from the "
              "official training set, disjoint from train; split_seed does not apply)",
              "augmentation": "none", "path": str(BUNDLED), "npz_sha256": file_digest(BUNDLED)},
    )


def fashion_mnist(root: str | os.PathLike | None = None, source: str = "auto", val_size: int | None = None,
                  split_seed: int = 0, augment: bool = True, **kw) -> DatasetBundle:
    """Fashion-MNIST: a user folder, the Debian system copy, or the bundled real subset (in that order).

    ``augment`` is accepted for the contract and ignored: no augmentation for MNIST-like data.
    """
    check_no_extra(NAME, kw)
    check_source(source, ("auto", "folder", "system", "bundled"), NAME)
    full_val = DEFAULT_VAL_SIZE if val_size is None else val_size
    user = user_root(root)
    if source == "bundled":
        return bundled_bundle(val_size, split_seed)
    if source in ("auto", "folder") and user is not None:
        folder = idx_folder(folder_candidates(user))
        if folder is None:
            raise not_found(NAME, user, LAYOUT, HOW)
        try:
            return idx_bundle(name=NAME, folder=folder, source_label=f"folder:{folder}", val_size=full_val,
                              split_seed=split_seed, mean=MEAN, std=STD)
        except ValueError as exc:
            raise not_found(NAME, folder, LAYOUT, HOW, why=f"malformed IDX file ({exc})") from exc
    if source == "folder":
        raise UsageError(f"{NAME}: source 'folder' needs a folder; pass --data-root DIR or set NEOKD_DATA_ROOT")
    folder = idx_folder([SYSTEM_DIR])
    if folder is not None:
        try:
            return idx_bundle(name=NAME, folder=folder, source_label=f"system:{folder}", val_size=full_val,
                              split_seed=split_seed, mean=MEAN, std=STD)
        except ValueError as exc:
            raise not_found(NAME, folder, LAYOUT, HOW, why=f"malformed IDX file ({exc})") from exc
    if source == "system":
        raise not_found(NAME, SYSTEM_DIR, "the four Fashion-MNIST IDX files (.gz)",
                        "`apt-get install dataset-fashion-mnist`", why="system copy not found")
    return bundled_bundle(val_size, split_seed)
