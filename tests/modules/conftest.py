from __future__ import annotations

import pytest
from streams import contexts

from fxgate.engine import sample_bars


def context_stream(n: int | None = None, seed: int = 3, horizon: int = 1):
    """Contexts over the sample (the first ``n`` bars), shaped like the gate's (tests/streams.py)."""
    bars = sample_bars()
    return contexts(bars if n is None else bars[:n], seed, horizon)


@pytest.fixture(scope="session")
def stream():
    return context_stream()
