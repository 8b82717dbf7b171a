"""Synthetic copies of the paper's datasets, written in their real on-disk formats, for tests and benchmarks
(``benchmarks/bench_data.py``): nothing can be downloaded here, so a format is shown to work, end to end, on
files laid out exactly as the official archives unpack.

* CIFAR-10: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``, CIFAR-100:
  ``cifar-100-python/{train, test, meta}``: pickled dicts with bytes keys (``data`` a uint8 array N x 3072,
  row-major R, G, B planes; ``labels`` / ``fine_labels`` and ``coarse_labels`` lists; ``filenames``,
  ``batch_label``), as the "python version" archives hold them.
* Tiny-ImageNet: ``tiny-imagenet-200/{wnids.txt, words.txt, train/<wnid>/images/<wnid>_<i>.JPEG,
  train/<wnid>/<wnid>_boxes.txt, val/images/val_<i>.JPEG, val/val_annotations.txt}``, 64x64 JPEGs.
* ImageNet: ``{train,val}/<wnid>/*.JPEG``, one folder per class, JPEGs of ImageNet's typical sizes (500x375,
  375x500, 500x333, 500x500, ...).
* MNIST: ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``, torchvision's raw layout.

Images are smooth random fields plus noise (they compress and decode like photographs, not like white noise);
labels cycle over the classes, so every class is present.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

IMAGENET_SIZES = ((500, 375), (375, 500), (500, 333), (500, 500), (333, 500), (500, 400))  # (width, height)


def _wnid(c: int) -> str:
    return f"n{1440764 + 7 * c:08d}"


def images(n: int, height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """``n`` uint8 images (N, H, W, C): a random 8x8 field upsampled to H x W, plus noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (n, 8, 8, channels)).astype(np.float32)
    ys = np.minimum(np.arange(height) * 8 // height, 7)
    xs = np.minimum(np.arange(width) * 8 // width, 7)
    smooth = coarse[:, ys][:, :, xs]
    noise = rng.normal(0, 20, smooth.shape).astype(np.float32)
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


def _jpeg(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="JPEG", quality=90)


def write_cifar(root: str | Path, hundred: bool = False, n_train: int = 250, n_test: int = 50,
                seed: int = 0) -> Path:
    """CIFAR-10 (``hundred=False``) or CIFAR-100 in the python-version layout under ``root``; returns the folder."""
    folder = Path(root) / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True, exist_ok=True)
    n_cls = 100 if hundred else 10

    def batch(path: Path, n: int, start: int, name: str) -> None:
        x = images(n, 32, 32, seed=seed + start).transpose(0, 3, 1, 2).reshape(n, 3072)  # R plane, G, B
        labels = [(start + i) % n_cls for i in range(n)]
        d = {b"batch_label": name.encode(), b"data": x, b"filenames": [f"img_{start + i}.png".encode()
                                                                        for i in range(n)]}
        if hundred:
            d.update({b"fine_labels": labels, b"coarse_labels": [c // 5 for c in labels]})
        else:
            d[b"labels"] = labels
        with open(path, "wb") as fh:
            pickle.dump(d, fh, protocol=2)

    if hundred:
        batch(folder / "train", n_train, 0, "training batch 1 of 1")
        batch(folder / "test", n_test, n_train, "testing batch 1 of 1")
        meta = {b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                b"coarse_label_names": [f"s{i}".encode() for i in range(20)]}
        name = "meta"
    else:
        per = -(-n_train // 5)
        for i in range(5):
            n = min(per, n_train - i * per)
            batch(folder / f"data_batch_{i + 1}", max(n, 0), i * per, f"training batch {i + 1} of 5")
        batch(folder / "test_batch", n_test, n_train, "testing batch 1 of 1")
        meta = {b"label_names": [f"c{i}".encode() for i in range(10)], b"num_cases_per_batch": per,
                b"num_vis": 3072}
        name = "batches.meta"
    with open(folder / name, "wb") as fh:
        pickle.dump(meta, fh, protocol=2)
    return folder


def write_tiny_imagenet(root: str | Path, classes: int = 4, per_class: int = 50, n_val: int = 40,
                        seed: int = 0) -> Path:
    """The Tiny-ImageNet tree under ``root/tiny-imagenet-200``; returns that folder."""
    folder = Path(root) / "tiny-imagenet-200"
    wnids = [_wnid(c) for c in range(classes)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    (folder / "words.txt").write_text("".join(f"{w}\tclass {c}\n" for c, w in enumerate(wnids)))
    for c, w in enumerate(wnids):
        arrs = images(per_class, 64, 64, seed=seed + 1000 * c)
        boxes = []
        for i, arr in enumerate(arrs):
            _jpeg(folder / "train" / w / "images" / f"{w}_{i}.JPEG", arr)
            boxes.append(f"{w}_{i}.JPEG\t0\t0\t63\t63\n")
        (folder / "train" / w / f"{w}_boxes.txt").write_text("".join(boxes))
    lines = []
    for i, arr in enumerate(images(n_val, 64, 64, seed=seed + 999_999)):
        _jpeg(folder / "val" / "images" / f"val_{i}.JPEG", arr)
        lines.append(f"val_{i}.JPEG\t{wnids[i % classes]}\t0\t0\t63\t63\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(lines))
    return folder


def write_imagenet(root: str | Path, classes: int = 4, per_class: int = 50, val_per_class: int = 10,
                   seed: int = 0) -> Path:
    """ImageNet's ``train/<wnid>/`` and ``val/<wnid>/`` folders of JPEGs under ``root``; returns ``root``."""
    root = Path(root)
    k = 0
    for split, n in (("train", per_class), ("val", val_per_class)):
        for c in range(classes):
            w = _wnid(c)
            for i in range(n):
                width, height = IMAGENET_SIZES[k % len(IMAGENET_SIZES)]
                _jpeg(root / split / w / f"{w}_{i}.JPEG", images(1, height, width, seed=seed + k)[0])
                k += 1
    return root


def _idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def write_mnist(root: str | Path, n_train: int = 250, n_test: int = 50, seed: int = 0) -> Path:
    """MNIST's four idx files in torchvision's raw layout, ``root/MNIST/raw``; returns that folder."""
    folder = Path(root) / "MNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    _idx(folder / "train-images-idx3-ubyte", images(n_train, 28, 28, 1, seed)[..., 0])
    _idx(folder / "train-labels-idx1-ubyte", np.arange(n_train) % 10)
    _idx(folder / "t10k-images-idx3-ubyte", images(n_test, 28, 28, 1, seed + 1)[..., 0])
    _idx(folder / "t10k-labels-idx1-ubyte", np.arange(n_test) % 10)
    return folder
