"""Shared test set-up: one reproducible seed (printed, overridable with FXGATE_TEST_SEED), data paths."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

DATA = Path(__file__).parent / "data"
SEED = int(os.environ.get("FXGATE_TEST_SEED", "20261128"))

# Property tests: 200 examples in CI; HYPOTHESIS_PROFILE=thorough for a long local run.
_HC = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
settings.register_profile("default", max_examples=200, deadline=None, suppress_health_check=_HC)
settings.register_profile("thorough", max_examples=20_000, deadline=None, suppress_health_check=_HC)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_report_header(config: pytest.Config) -> str:
    return f"fxgate test seed: {SEED} (set FXGATE_TEST_SEED to change)"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def nano(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """fxgate's nano LLM (random-weight 2-layer Qwen2, own BPE tokenizer), built once per test session with the
    same code `fxgate demo` uses; its build runs the export parity check."""
    from fxgate.training.nano import NANO_VERSION, build_nano

    d = tmp_path_factory.mktemp("cache") / f"nano-v{NANO_VERSION}"  # the layout of $FXGATE_CACHE
    manifest = build_nano(d)
    return {"dir": d, "hf": d / "hf", "f16": d / "nano-f16.gguf", "q8": d / "nano-q8_0.gguf", "manifest": manifest}
