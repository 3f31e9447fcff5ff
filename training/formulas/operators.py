"""The causal time-series operators the reference formulas are written with (Kakushadze 2016's ``delay``,
``delta``, ``ts_min``, ``ts_max``, ``ts_sum``): the value at bar t uses bars <= t only, and is NaN until the
window is full, so no formula built from them can read the future."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fxgate.training.formulas._typing import Array

__all__ = ["delay", "delta", "rolling", "ts_min", "ts_max", "ts_sum"]


def delay(x: Array, d: int) -> Array:
    """x_{t-d}; NaN for the first d bars."""
    out = np.full(len(x), np.nan)
    out[d:] = x[:-d] if d else x
    return out


def delta(x: Array, d: int) -> Array:
    """x_t - x_{t-d}."""
    return x - delay(x, d)


def rolling(x: Array, n: int, fn: Callable[[Array], Array]) -> Array:
    """``fn`` over the trailing windows of n bars (``fn`` takes the (windows x n) view and reduces along axis 1)."""
    out = np.full(len(x), np.nan)
    if len(x) >= n:
        w = np.lib.stride_tricks.sliding_window_view(x, n)
        out[n - 1 :] = fn(w)
    return out


def ts_min(x: Array, n: int) -> Array:
    return rolling(x, n, lambda w: w.min(axis=1))


def ts_max(x: Array, n: int) -> Array:
    return rolling(x, n, lambda w: w.max(axis=1))


def ts_sum(x: Array, n: int) -> Array:
    return rolling(x, n, lambda w: w.sum(axis=1))
