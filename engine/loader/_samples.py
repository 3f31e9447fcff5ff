"""The bundled sample: real EURUSD H1 bars shipped inside the ``backtesting`` package (a required dependency)."""

from __future__ import annotations

from pathlib import Path

import backtesting

from fxgate.engine.core.bars import Bars
from fxgate.engine.loader._load import load_bars


def sample_path() -> Path:
    """Path of the bundled sample: real EURUSD H1 bars (2017-04-19 -> 2018-02-07, 5,000 bars, tick volume)
    shipped inside the ``backtesting`` package. Times are read as UTC."""
    p = Path(backtesting.__file__).parent / "test" / "EURUSD.csv"
    if not p.exists():  # pragma: no cover - a broken backtesting install
        raise FileNotFoundError(f"{p} is missing: reinstall the 'backtesting' package (pip install backtesting)")
    return p


def sample_bars() -> Bars:
    """The real EURUSD H1 sample (5,000 bars) from the ``backtesting`` package, loaded strictly."""
    return load_bars(sample_path(), symbol="EURUSD")
