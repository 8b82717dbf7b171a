"""MNIST (LeCun et al., 1998): 28x28 grey digits, 10 classes; the NEO-KD paper's SmallCNN dataset.

Read from a folder only (no system copy or bundled subset exists on these machines; docs/data.md):
``<root>/MNIST/raw/{train-images-idx3-ubyte,train-labels-idx1-ubyte,t10k-images-idx3-ubyte,
t10k-labels-idx1-ubyte}`` (torchvision's raw layout; ``.gz`` accepted), or ``<root>/mnist/`` or ``<root>``
itself holding the four files. ``root`` defaults to ``$NEOKD_DATA_ROOT``.

Validation: 5,000 images held out of the 60,000 training images with ``split_seed`` (default size;
``val_size`` overrides). Test: the official 10,000. No augmentation (Triple-Wins trains MNIST without).
mean/std 0.1307 / 0.3081, the usual statistics of the training set.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import DatasetBundle
from .common import check_no_extra, check_source, idx_bundle, idx_folder, not_found, user_root

NAME = "mnist"
MEAN, STD = (0.1307,), (0.3081,)
DEFAULT_VAL_SIZE = 5000
LAYOUT = ("<root>/MNIST/raw/{train-images-idx3-ubyte,train-labels-idx1-ubyte,t10k-images-idx3-ubyte,"
          "t10k-labels-idx1-ubyte}[.gz]")
HOW = "pass --data-root DIR containing MNIST/raw/ (e.g. a folder filled by torchvision.datasets.MNIST)"


def folder_candidates(root: Path) -> list[Path]:
    return [root / "MNIST" / "raw", root / "mnist", root]


def mnist(root: str | os.PathLike | None = None, source: str = "auto", val_size: int | None = None,
          split_seed: int = 0, augment: bool = True, **kw) -> DatasetBundle:
    """MNIST from a user folder (torchvision raw layout). ``augment`` is ignored: MNIST is not augmented."""
    check_no_extra(NAME, kw)
    check_source(source, ("auto", "folder"), NAME)
    user = user_root(root)
    if user is None:
        raise not_found(NAME, None, LAYOUT, HOW, why="no folder given (MNIST has no system copy or bundled subset)")
    folder = idx_folder(folder_candidates(user))
    if folder is None:
        raise not_found(NAME, user, LAYOUT, HOW)
    try:
        return idx_bundle(name=NAME, folder=folder, source_label=f"folder:{folder}",
                          val_size=DEFAULT_VAL_SIZE if val_size is None else val_size,
                          split_seed=split_seed, mean=MEAN, std=STD)
    except ValueError as exc:
        raise not_found(NAME, folder, LAYOUT, HOW, why=f"malformed IDX file ({exc})") from exc
