"""The Alpha101 alphas that need no cross-sectional rank (Kakushadze 2016, "101 Formulaic Alphas", Wilmott 84:72-81),
on one price series. Each function is the paper's expression, written with the causal operators of
:mod:`~fxgate.training.formulas.operators`; tests/training/test_formulas.py checks each against a naive loop."""

from __future__ import annotations

import numpy as np

from fxgate.training.formulas._typing import Array
from fxgate.training.formulas.operators import delay, delta, ts_max, ts_min, ts_sum

__all__ = [
    "alpha009",
    "alpha012",
    "alpha023",
    "alpha024",
    "alpha041",
    "alpha046",
    "alpha049",
    "alpha051",
    "alpha053",
    "alpha054",
    "alpha101",
]


def alpha009(close: Array) -> Array:
    d = delta(close, 1)
    mn, mx = ts_min(d, 5), ts_max(d, 5)
    return np.where(0 < mn, d, np.where(mx < 0, d, -d))


def alpha012(close: Array, volume: Array) -> Array:
    return np.sign(delta(volume, 1)) * (-1 * delta(close, 1))


def alpha023(high: Array) -> Array:
    return np.where(ts_sum(high, 20) / 20 < high, -1 * delta(high, 2), 0.0)


def alpha024(close: Array) -> Array:
    m = ts_sum(close, 100) / 100
    cond = delta(m, 100) / delay(close, 100) <= 0.05
    return np.where(cond, -1 * (close - ts_min(close, 100)), -1 * delta(close, 3))


def alpha041(high: Array, low: Array, vwap: Array) -> Array:
    return np.sqrt(high * low) - vwap


def _trend_change(close: Array) -> Array:
    """(delay(close,20) - delay(close,10))/10 - (delay(close,10) - close)/10: the 'a' of Alpha#46, #49 and #51."""
    return (delay(close, 20) - delay(close, 10)) / 10 - (delay(close, 10) - close) / 10


def alpha046(close: Array) -> Array:
    a = _trend_change(close)
    return np.where(0.25 < a, -1.0, np.where(a < 0, 1.0, -1 * (close - delay(close, 1))))


def alpha049(close: Array) -> Array:
    a = _trend_change(close)
    return np.where(a < -0.1, 1.0, -1 * (close - delay(close, 1)))


def alpha051(close: Array) -> Array:
    a = _trend_change(close)
    return np.where(a < -0.05, 1.0, -1 * (close - delay(close, 1)))


def alpha053(close: Array, high: Array, low: Array) -> Array:
    den = np.where(close - low == 0, np.nan, close - low)  # undefined when the close is the low: NaN, not inf
    x = ((close - low) - (high - close)) / den
    return -1 * delta(x, 9)


def alpha054(open_: Array, close: Array, high: Array, low: Array) -> Array:
    den = np.where(low == high, np.nan, (low - high) * close**5)  # a bar with no range: NaN
    return (-1 * ((low - close) * open_**5)) / den


def alpha101(open_: Array, close: Array, high: Array, low: Array) -> Array:
    return (close - open_) / ((high - low) + 0.001)
