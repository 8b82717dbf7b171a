"""Fixtures for the attack tests: tiny multi-exit models (see tiny_models.py)."""

from __future__ import annotations

import pytest

from .tiny_models import TinyExits, make_model


@pytest.fixture
def model3() -> TinyExits:
    return make_model(3)


@pytest.fixture
def model1() -> TinyExits:
    return make_model(1)


@pytest.fixture(autouse=True)
def _one_thread():
    """The tiny models here gain nothing from intra-op threads, and on the shared 2-core machine two
    OpenMP threads under load slow tiny ops down ~100x (barrier spinning). Restored after each test."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
