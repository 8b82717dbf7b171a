"""Dataset builders: the bundled Fashion-MNIST subset, the resolution order, and folder layouts.

The happy paths for CIFAR, Tiny-ImageNet and ImageNet run on tiny fake trees built here (real JPEGs and
real pickles in the official layouts); the bundled subset is real data.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import re
from pathlib import Path

import neokd_bench as nb
import numpy as np
import pytest
import torch
from neokd_bench.data import fashion_mnist as fm
from neokd_bench.data.common import ENV_DATA_ROOT, file_digest, read_idx, sha256_array
from neokd_bench.errors import DataNotFoundError, UsageError
from PIL import Image

DATA_DIR = Path(fm.__file__).resolve().parent


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def no_env_root(monkeypatch):
    monkeypatch.delenv(ENV_DATA_ROOT, raising=False)


# ------------------------------------------------------------------------------------------------
# helpers that write the official formats
# ------------------------------------------------------------------------------------------------
def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)


def make_idx_folder(folder: Path, n_train: int = 40, n_test: int = 10, gz: bool = False, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    write_idx(folder / "train-images-idx3-ubyte", rng.integers(0, 256, (n_train, 28, 28)), gz)
    write_idx(folder / "train-labels-idx1-ubyte", np.arange(n_train) % 10, gz)
    write_idx(folder / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28)), gz)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.arange(n_test) % 10, gz)


def make_cifar(root: Path, hundred: bool = False, per_batch: int = 4) -> Path:
    rng = np.random.default_rng(0)
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    key = b"fine_labels" if hundred else b"labels"
    n_cls = 100 if hundred else 10
    names = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    n = per_batch * (5 if hundred else 1)
    for name in names + ["test"] if hundred else names + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8), key: list(rng.integers(0, n_cls, n))}
        with open(folder / name, "wb") as fh:
            pickle.dump(d, fh)
    with open(folder / ("meta" if hundred else "batches.meta"), "wb") as fh:
        pickle.dump({b"label_names": [b"x"] * n_cls}, fh)
    return folder


def write_jpeg(path: Path, size: tuple[int, int], seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3)).astype(np.uint8)
    Image.fromarray(arr).save(path, format="JPEG")


def make_tiny(root: Path) -> Path:
    folder = root / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819"]
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for c, w in enumerate(wnids):
        for j in range(2):
            write_jpeg(folder / "train" / w / "images" / f"{w}_{j}.JPEG", (64, 64), 10 * c + j)
    lines = []
    for j, w in enumerate(wnids):
        write_jpeg(folder / "val" / "images" / f"val_{j}.JPEG", (64, 64), 100 + j)
        lines.append(f"val_{j}.JPEG\t{w}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return folder


# ------------------------------------------------------------------------------------------------
# the bundled subset
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundled():
    return nb.load_dataset("fashion-mnist", source="bundled")


def test_bundled_subset_shapes_and_range(bundled) -> None:
    assert bundled.source == "bundled"
    assert (len(bundled.train), len(bundled.val), len(bundled.test)) == (10000, 2000, 2000)
    assert bundled.input_size == (1, 28, 28) and bundled.num_classes == 10
    assert len(bundled.mean) == len(bundled.std) == 1
    for split in (bundled.train, bundled.val, bundled.test):
        x, y = split[0]
        assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and isinstance(y, int)
        xs, _ = split.tensors()
        assert 0.0 <= float(xs.min()) and float(xs.max()) <= 1.0 and float(xs.max()) == 1.0
        assert split.images.dtype == torch.uint8


def test_bundled_subset_is_class_balanced_with_balanced_prefixes(bundled) -> None:
    for split, per_class in ((bundled.train, 1000), (bundled.val, 200), (bundled.test, 200)):
        y = split.labels
        assert torch.bincount(y, minlength=10).tolist() == [per_class] * 10
        assert torch.bincount(y[:100], minlength=10).tolist() == [10] * 10
        assert torch.bincount(y[:37], minlength=10).max() - torch.bincount(y[:37], minlength=10).min() <= 1
        assert y[:10].tolist() != list(range(10)) or y[10:20].tolist() != list(range(10))  # shuffled


def test_bundled_splits_are_disjoint(bundled) -> None:
    hashes = {}
    for name, split in (("train", bundled.train), ("val", bundled.val), ("test", bundled.test)):
        hashes[name] = {hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in split.images}
        assert len(hashes[name]) == len(split)
    assert not hashes["train"] & hashes["val"]
    assert not hashes["train"] & hashes["test"]
    assert not hashes["val"] & hashes["test"]


def test_bundled_checksums_match_the_notice() -> None:
    notice = (DATA_DIR / "FASHION_MNIST_SUBSET.md").read_text()
    npz = DATA_DIR / "fashion_mnist_subset.npz"
    row = re.search(r"`fashion_mnist_subset\.npz` \| `([0-9a-f]{32})` \| `([0-9a-f]{64})`", notice)
    assert row, "checksum row missing from FASHION_MNIST_SUBSET.md"
    assert file_digest(npz, "md5") == row.group(1)
    assert file_digest(npz, "sha256") == row.group(2)
    with np.load(npz) as z:
        assert sorted(z.files) == sorted(["x_train", "y_train", "x_val", "y_val", "x_test", "y_test"])
        for key in z.files:
            assert z[key].dtype == np.uint8
            assert f"| `{key}` | `{sha256_array(z[key])}` |" in notice
    assert "MIT" in notice and "Zalando" in notice


def test_bundled_val_size_takes_a_prefix_and_rejects_too_many() -> None:
    b = nb.load_dataset("fashion-mnist", source="bundled", val_size=500)
    assert len(b.val) == 500 and b.info["val_size"] == 500
    with pytest.raises(UsageError):
        nb.load_dataset("fashion-mnist", source="bundled", val_size=5000)


# ------------------------------------------------------------------------------------------------
# resolution order
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def fake_system(tmp_path, monkeypatch) -> Path:
    system = tmp_path / "system"
    make_idx_folder(system, n_train=30, n_test=10, gz=True, seed=1)
    monkeypatch.setattr(fm, "SYSTEM_DIR", system)
    return system


def test_user_folder_wins_over_system_and_bundled(tmp_path, fake_system) -> None:
    root = tmp_path / "user"
    make_idx_folder(root / "FashionMNIST" / "raw", n_train=40, n_test=10)
    b = nb.load_dataset("fashion-mnist", root=str(root), val_size=8, split_seed=3)
    assert b.source.startswith("folder:") and (len(b.train), len(b.val), len(b.test)) == (32, 8, 10)
    assert b.split_seed == 3 and b.info["val_size"] == 8
    # the validation split is held out of train: no index in both, and together they are the train file
    raw = read_idx(root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte")
    got = {hashlib.sha1(i.numpy().tobytes()).hexdigest() for i in torch.cat([b.train.images, b.val.images])}
    assert got == {hashlib.sha1(i[None].tobytes()).hexdigest() for i in raw}
    # another seed, another split
    b2 = nb.load_dataset("fashion-mnist", root=str(root), val_size=8, split_seed=4)
    assert not torch.equal(b.val.images, b2.val.images)


def test_env_var_names_the_folder(tmp_path, fake_system, monkeypatch) -> None:
    root = tmp_path / "env"
    make_idx_folder(root, n_train=20, n_test=10)  # the four files directly in the folder (Debian layout)
    monkeypatch.setenv(ENV_DATA_ROOT, str(root))
    b = nb.load_dataset("fashion-mnist", val_size=5)
    assert b.source == f"folder:{root}"


def test_system_location_comes_second(fake_system) -> None:
    b = nb.load_dataset("fashion-mnist", val_size=5)
    assert b.source == f"system:{fake_system}" and len(b.train) + len(b.val) == 30


def test_bundled_is_the_fallback(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "absent")
    assert nb.load_dataset("fashion-mnist").source == "bundled"
    with pytest.raises(DataNotFoundError, match="dataset-fashion-mnist"):
        nb.load_dataset("fashion-mnist", source="system")


def test_named_folder_that_is_wrong_is_an_error_not_a_fallback(tmp_path, fake_system) -> None:
    with pytest.raises(DataNotFoundError, match=r"FashionMNIST/raw/"):
        nb.load_dataset("fashion-mnist", root=str(tmp_path / "empty"))


def test_malformed_idx_file(tmp_path, fake_system) -> None:
    raw = tmp_path / "bad" / "FashionMNIST" / "raw"
    make_idx_folder(raw)
    data = (raw / "train-images-idx3-ubyte").read_bytes()
    (raw / "train-images-idx3-ubyte").write_bytes(data[:-100])
    with pytest.raises(DataNotFoundError, match="malformed"):
        nb.load_dataset("fashion-mnist", root=str(tmp_path / "bad"), val_size=5)


def test_mnist_reads_torchvision_raw_layout(tmp_path) -> None:
    make_idx_folder(tmp_path / "MNIST" / "raw", gz=True)
    b = nb.load_dataset("mnist", root=str(tmp_path), val_size=10)
    assert (len(b.train), len(b.val), len(b.test)) == (30, 10, 10) and b.input_size == (1, 28, 28)
    with pytest.raises(DataNotFoundError, match=r"MNIST/raw/"):
        nb.load_dataset("mnist")


def test_unknown_option_and_source_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        nb.load_dataset("fashion-mnist", source="bundled", colour=True)
    with pytest.raises(UsageError):
        nb.load_dataset("cifar10", source="bundled")


# ------------------------------------------------------------------------------------------------
# CIFAR, Tiny-ImageNet, ImageNet layouts
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,hundred", [("cifar10", False), ("cifar100", True)])
def test_cifar_happy_path(tmp_path, name: str, hundred: bool) -> None:
    folder = make_cifar(tmp_path, hundred)
    b = nb.load_dataset(name, root=str(tmp_path), val_size=5, split_seed=1)
    assert (len(b.train), len(b.val), len(b.test)) == (15, 5, 20 if hundred else 4)
    assert b.num_classes == (100 if hundred else 10) and b.input_size == (3, 32, 32)
    x, _ = b.train[0]
    assert x.shape == (3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert b.train.transform is not None and b.val.transform is None and b.test.transform is None
    assert "pad 4" in b.info["augmentation"]
    # pixel layout: row 0 of the red channel of test image 0 is data[0, :32] of the test pickle
    with open(folder / ("test" if hundred else "test_batch"), "rb") as fh:
        test_data = pickle.load(fh, encoding="bytes")[b"data"]
    assert torch.equal(b.test.images[0, 0, 0], torch.from_numpy(test_data[0, :32]))
    assert torch.equal(b.test.images[0, 2, 31], torch.from_numpy(test_data[0, -32:]))
    # root may be the cifar folder itself; augment=False leaves train untouched
    assert nb.load_dataset(name, root=str(folder), val_size=5, augment=False).train.transform is None


@pytest.mark.parametrize("name,layout", [("cifar10", "cifar-10-batches-py/"), ("cifar100", "cifar-100-python/"),
                                         ("tiny-imagenet", "tiny-imagenet-200/"), ("imagenet", "{train,val}/<wnid>/"),
                                         ("mnist", "MNIST/raw/")])
def test_missing_folder_names_the_layout(tmp_path, name: str, layout: str) -> None:
    for root in (None, tmp_path / "nothing"):
        with pytest.raises(DataNotFoundError) as err:
            nb.load_dataset(name, root=None if root is None else str(root))
        msg = str(err.value)
        assert layout in msg and "\n" not in msg and name in msg and "--data-root" in msg


def test_malformed_cifar_pickle(tmp_path) -> None:
    folder = make_cifar(tmp_path)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataNotFoundError, match="malformed"):
        nb.load_dataset("cifar10", root=str(tmp_path), val_size=2)


def test_tiny_imagenet_happy_path(tmp_path) -> None:
    make_tiny(tmp_path)
    b = nb.load_dataset("tiny-imagenet", root=str(tmp_path), val_size=1)
    assert (len(b.train), len(b.val), len(b.test)) == (3, 1, 2)
    assert b.num_classes == 2 and b.input_size == (3, 64, 64)
    x, _ = b.train[0]
    assert x.shape == (3, 64, 64) and b.val.transform is None and "pad 8" in b.info["augmentation"]
    assert sorted(b.test.labels.tolist()) == [0, 1]
    assert sorted(torch.cat([b.train.labels, b.val.labels]).tolist()) == [0, 0, 1, 1]


def test_tiny_imagenet_malformed(tmp_path) -> None:
    folder = make_tiny(tmp_path)
    (folder / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(DataNotFoundError, match="malformed"):
        nb.load_dataset("tiny-imagenet", root=str(tmp_path), val_size=1)


def test_imagenet_happy_path(tmp_path) -> None:
    for c, w in enumerate(["n01440764", "n01443537"]):
        for j in range(3):
            write_jpeg(tmp_path / "train" / w / f"{w}_{j}.JPEG", (300, 260), 10 * c + j)
        write_jpeg(tmp_path / "val" / w / f"v_{c}.JPEG", (280, 300), 50 + c)
    b = nb.load_dataset("imagenet", root=str(tmp_path), val_size=2)
    assert (len(b.train), len(b.val), len(b.test)) == (4, 2, 2) and b.num_classes == 2
    for split in (b.train, b.val, b.test):
        x, y = split[0]
        assert x.shape == (3, 224, 224) and y in (0, 1) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert len(b.train.subset(1)) == 1


# ------------------------------------------------------------------------------------------------
# hostile and broken folders
# ------------------------------------------------------------------------------------------------
def _write_protocol2_batch(path: Path, n: int, seed: int) -> dict:
    """A batch as the official CIFAR-10 files are: pickle protocol 2 of a dict of byte-string keys holding a
    uint8 (N, 3072) array and a list of int labels. Python 3 writes its bytes through ``_codecs.encode(...,
    'latin1')``, which the loader allows for latin1 only."""
    rng = np.random.default_rng(seed)
    d = {b"batch_label": b"training batch", b"labels": [int(v) for v in rng.integers(0, 10, n)],
         b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8), b"filenames": [b"x.png"] * n}
    with open(path, "wb") as fh:
        pickle.dump(d, fh, protocol=2)
    return d


class _Payload:
    """Unpickling this would create a marker file (a stand-in for any code a hostile batch runs)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_cifar_batch_in_the_official_format_loads(tmp_path) -> None:
    from neokd_bench.data.cifar import load_batch

    d = _write_protocol2_batch(tmp_path / "data_batch_1", 6, 0)
    back = load_batch(tmp_path / "data_batch_1")
    assert back[b"labels"] == d[b"labels"] and np.array_equal(back[b"data"], d[b"data"])
    assert back[b"data"].dtype == np.uint8 and back[b"filenames"] == d[b"filenames"]


def test_crafted_cifar_batch_is_refused_and_its_payload_does_not_run(tmp_path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        _write_protocol2_batch(folder / f"data_batch_{i}", 4, i)
    _write_protocol2_batch(folder / "test_batch", 4, 9)
    marker = tmp_path / "payload-ran"
    for protocol in (2, 5):
        with open(folder / "data_batch_2", "wb") as fh:
            pickle.dump({b"data": _Payload(marker), b"labels": [0]}, fh, protocol=protocol)
        with pytest.raises(DataNotFoundError) as err:
            nb.load_dataset("cifar10", root=str(tmp_path), val_size=2)
        assert "refused global" in str(err.value) and "\n" not in str(err.value)
        assert not marker.exists()


def test_bad_gzip_in_a_fashion_mnist_folder_is_one_line(tmp_path) -> None:
    make_idx_folder(tmp_path / "FashionMNIST" / "raw", gz=True)
    (tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bnot gzip at all")
    with pytest.raises(DataNotFoundError, match="malformed IDX file") as err:
        nb.load_dataset("fashion-mnist", root=str(tmp_path))
    assert "\n" not in str(err.value)


def test_non_image_file_in_an_image_folder_is_found_before_any_work(tmp_path) -> None:
    for c, w in enumerate(["n01440764", "n01443537"]):
        for j in range(3):
            write_jpeg(tmp_path / "train" / w / f"{w}_{j}.JPEG", (40, 40), 10 * c + j)
        write_jpeg(tmp_path / "val" / w / f"v_{c}.JPEG", (40, 40), 50 + c)
    (tmp_path / "train" / "n01440764" / "readme.JPEG").write_text("not an image")
    with pytest.raises(DataNotFoundError, match="readme.JPEG is not a readable image"):
        nb.load_dataset("imagenet", root=str(tmp_path), val_size=2)


def test_source_a_dataset_lacks_and_a_too_large_val_size_say_what_to_type() -> None:
    with pytest.raises(UsageError) as err:
        nb.load_dataset("cifar10", source="bundled")
    assert "cifar10 has no bundled copy" in str(err.value) and "--data-root" in str(err.value)


def test_val_size_too_large_names_the_flag(tmp_path) -> None:
    for c, w in enumerate(["n01440764", "n01443537"]):
        for j in range(2):
            write_jpeg(tmp_path / "train" / w / f"{w}_{j}.JPEG", (40, 40), 10 * c + j)
        write_jpeg(tmp_path / "val" / w / f"v_{c}.JPEG", (40, 40), 50 + c)
    with pytest.raises(UsageError, match=r"pass --val-size 1\.\.3") as err:
        nb.load_dataset("imagenet", root=str(tmp_path))
    assert "50000" in str(err.value) and "between 1 and 0" not in str(err.value)
