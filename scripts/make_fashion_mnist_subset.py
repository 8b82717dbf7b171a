#!/usr/bin/env python
"""Regenerate bench/data/fashion_mnist_subset.npz, the bundled real subset of Fashion-MNIST.

Source: the Debian package ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``), which
installs Zalando's original IDX files, gzipped, in /usr/share/datasets/fashion-mnist/.

What it draws, with ``numpy.random.default_rng(SEED)`` (SEED = 20231101 by default):

* train: 10,000 images, 1,000 per class, from the official training set;
* val:    2,000 images,   200 per class, from the official training set, disjoint from train;
* test:   2,000 images,   200 per class, from the official test set.

Each split is stored in "round-robin shuffled" order: position block ``[10r, 10r + 10)`` holds one image
of every class in a random order, so every prefix of a split of length 10m is exactly class-balanced
(and any prefix is within one image per class of balanced). Arrays are uint8, images N x 28 x 28.

The .npz is written byte-reproducibly (fixed zip timestamps, fixed member order, deflate), so running
this script again gives the same file and the same checksums, which it prints.

Usage::

    python scripts/make_fashion_mnist_subset.py [--src /usr/share/datasets/fashion-mnist]
        [--out bench/data/fashion_mnist_subset.npz] [--seed 20231101]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from neokd_bench.data.common import IDX_STEMS, file_digest, find_file, load_idx_folder, sha256_array

SEED = 20231101
N_CLASSES = 10
PER_CLASS = {"train": 1000, "val": 200, "test": 200}
KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def round_robin(pools: list[np.ndarray], per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Interleave ``per_class`` indices from each class pool: each block of 10 is a random class order."""
    order = np.empty(per_class * len(pools), dtype=np.int64)
    for r in range(per_class):
        classes = rng.permutation(len(pools))
        order[r * len(pools):(r + 1) * len(pools)] = [pools[c][r] for c in classes]
    return order


def draw(labels_train: np.ndarray, labels_test: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Indices of the three splits (train and val from the official train set, disjoint)."""
    rng = np.random.default_rng(seed)
    train_pools, val_pools, test_pools = [], [], []
    for c in range(N_CLASSES):
        idx = rng.permutation(np.flatnonzero(labels_train == c))
        train_pools.append(idx[:PER_CLASS["train"]])
        val_pools.append(idx[PER_CLASS["train"]:PER_CLASS["train"] + PER_CLASS["val"]])
        test_pools.append(rng.permutation(np.flatnonzero(labels_test == c))[:PER_CLASS["test"]])
    return {
        "train": round_robin(train_pools, PER_CLASS["train"], rng),
        "val": round_robin(val_pools, PER_CLASS["val"], rng),
        "test": round_robin(test_pools, PER_CLASS["test"], rng),
    }


def write_npz_reproducibly(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed`` but with fixed zip metadata, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp, \
            zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key in KEYS:
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)
    Path(tmp.name).chmod(0o644)
    Path(tmp.name).replace(path)


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--out", type=Path, default=here / "bench" / "data" / "fashion_mnist_subset.npz")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)

    try:
        raw = load_idx_folder(args.src)
    except (ValueError, OSError) as exc:
        print(f"cannot read Fashion-MNIST IDX files in {args.src}: {exc}; "
              "run `apt-get install dataset-fashion-mnist` or pass --src DIR", file=sys.stderr)
        return 2
    idx = draw(raw["train_labels"], raw["test_labels"], args.seed)
    arrays = {
        "x_train": raw["train_images"][idx["train"]], "y_train": raw["train_labels"][idx["train"]],
        "x_val": raw["train_images"][idx["val"]], "y_val": raw["train_labels"][idx["val"]],
        "x_test": raw["test_images"][idx["test"]], "y_test": raw["test_labels"][idx["test"]],
    }
    assert not set(idx["train"]) & set(idx["val"]), "train and val overlap"
    write_npz_reproducibly(args.out, arrays)

    print(f"wrote {args.out} (seed {args.seed})")
    print(f"  npz md5    {file_digest(args.out, 'md5')}")
    print(f"  npz sha256 {file_digest(args.out, 'sha256')}")
    for key in KEYS:
        print(f"  {key:8s} shape {arrays[key].shape} sha256 {sha256_array(arrays[key])}")
    print("source files (compressed sha256 | md5 of the decompressed IDX):")
    for stem in IDX_STEMS.values():
        p = find_file(args.src, stem)
        assert p is not None
        print(f"  {p.name:28s} {file_digest(p, 'sha256')} | {file_digest(p, 'md5', decompress=p.suffix == '.gz')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
