"""Fixtures for the attack tests: tiny multi-exit models (see tiny_models.py)."""

from __future__ import annotations

import pytest

from tiny_models import TinyExits, make_model


@pytest.fixture
def model3() -> TinyExits:
    return make_model(3)


@pytest.fixture
def model1() -> TinyExits:
    return make_model(1)
