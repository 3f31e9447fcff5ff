"""Shared test set-up: one reproducible seed (printed, overridable with FXGATE_TEST_SEED), data paths."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
SEED = int(os.environ.get("FXGATE_TEST_SEED", "20261128"))


def pytest_report_header(config: pytest.Config) -> str:
    return f"fxgate test seed: {SEED} (set FXGATE_TEST_SEED to change)"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


@pytest.fixture
def data_dir() -> Path:
    return DATA
