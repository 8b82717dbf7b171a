"""Shared fixtures. Nothing downloads: the data is the bundled real Fashion-MNIST subset.

Order independence: every test runs with the global state it started with restored afterwards (thread count,
torch / numpy / Python RNG, default dtype, deterministic-algorithm flag), and the session fixtures that train a
model pin that state themselves (:func:`pinned_state`), so the model they train does not depend on which test ran
first. Floats still differ in their last bits between CPUs (AVX2 against AVX-512); tests on trained models assert
properties with margins far from that noise, never a number tuned to one machine.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Test-only plugins (a model with only forward_exits, an attack without a tiny preset, the guide's
# defense) as a distribution with entry points, found by the registries like any installed plugin, so
# every registry-parametrized contract test runs on them too. Put on sys.path before any registry is read.
PLUGIN_DIST = Path(__file__).resolve().parent / "plugin_dist"
if str(PLUGIN_DIST) not in sys.path:
    sys.path.insert(0, str(PLUGIN_DIST))

#: Threads used by the session fixtures that train: fixed, so a fixture trains the same model whichever test
#: first asked for it (a reduction over 1 thread and over 2 threads rounds differently).
FIXTURE_THREADS = 2


@contextlib.contextmanager
def pinned_state(seed: int, threads: int = FIXTURE_THREADS):
    """Run a block with a fixed thread count and seeded RNGs, and give back the state found."""
    saved = (torch.get_num_threads(), torch.random.get_rng_state(), np.random.get_state(), random.getstate())
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.random.set_rng_state(saved[1])
        np.random.set_state(saved[2])
        random.setstate(saved[3])


def run_ranks(fn, world: int, *args) -> None:
    """``fn(*args)`` in ``world`` fresh processes (spawned), set up as torchrun sets up its ranks (``WORLD_SIZE``,
    ``RANK``, ``LOCAL_RANK``, a free port on 127.0.0.1), one thread each; ``world=1`` is a plain single process.
    ``fn`` is a module-level function (the children import it); an exception in a child fails the call."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torch.multiprocessing.spawn(_rank_main, args=(fn, world, port, args), nprocs=world, join=True)


def _rank_main(rank: int, fn, world: int, port: int, args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    torch.set_num_threads(1)
    try:
        fn(*args)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


@pytest.fixture(autouse=True)
def _restore_global_state():
    """Whatever a test changes globally is put back, so no test sees what an earlier one left behind."""
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    deterministic = torch.are_deterministic_algorithms_enabled()
    rng = (torch.random.get_rng_state(), np.random.get_state(), random.getstate())
    yield
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)
    torch.use_deterministic_algorithms(deterministic)
    torch.random.set_rng_state(rng[0])
    np.random.set_state(rng[1])
    random.setstate(rng[2])


@pytest.fixture(scope="session")
def fmnist():
    """The bundled Fashion-MNIST subset (train/val/test), real data."""
    import neokd_bench as nb

    return nb.load_dataset("fashion-mnist", source="bundled")


@pytest.fixture(scope="session")
def trained_smallcnn(fmnist, tmp_path_factory):
    """A SmallCNN adversarially trained (PGD-7 max-average, eps 0.1) on the bundled Fashion-MNIST with
    the shared trainer: 3 epochs on 2,048 images, seed 0. Returns ``(model in eval mode, x_test, y_test)``
    with the first 500 test images."""
    import neokd_bench as nb
    from neokd_bench.trainer import TrainConfig, train

    with pinned_state(0):
        model = nb.create_model("smallcnn", mean=list(fmnist.mean), std=list(fmnist.std))
        defense = nb.create_defense("adv")
        defense.setup(dataset="fashion-mnist", num_exits=model.num_exits, num_classes=10, seed=0)
        cfg = TrainConfig(epochs=3, batch_size=128, lr=0.05, milestones=(), seed=0, device="cpu",
                          train_limit=2048)
        train(model, defense, fmnist.train, cfg, out_dir=tmp_path_factory.mktemp("trained"), progress=False)
    x, y = fmnist.test.tensors()
    return model.eval(), x[:500], y[:500]


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory):
    """A checkpoint written by `neokd-bench run` (1 short epoch, smoke preset), for CLI tests."""
    from neokd_bench.cli import main

    out = tmp_path_factory.mktemp("ckpt")
    with pinned_state(0):
        rc = main(["run", "--defense", "adv", "--dataset", "fashion-mnist", "--preset", "smoke", "--epochs", "1",
                   "--train-limit", "256", "--set", "steps=1", "--no-eval", "--quiet", "--device", "cpu",
                   "--out", str(out)])
    assert rc == 0
    return out / "checkpoint.pt"


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny forwards (use with ``pytest.mark.usefixtures``): they gain
    nothing from a second thread, and on a busy 2-core machine the thread pool's start-up costs seconds.
    The thread count found is restored when the module ends."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


#: Seconds a test marked ``slow`` may take (the others get pyproject's ``timeout``, 300 s).
SLOW_TIMEOUT = 900


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT))
