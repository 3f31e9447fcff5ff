"""Leak-free labels, each with the index of the bar at which it becomes known.

* ``next``: the direction of the move from the close of bar t to the close of bar t+h, net of the spread:
  +1 if ``close[t+h] - close[t] > cost_t``, -1 if ``< -cost_t``, else 0 (the move did not pay the spread).
  Known at bar t+h.
* ``triple-barrier`` (Lopez de Prado 2018, *Advances in Financial Machine Learning*, ch. 3.4): from the close of
  bar t, an upper barrier ``close * exp(pt * sigma_t)`` and a lower barrier ``close * exp(-sl * sigma_t)``, where
  ``sigma_t`` is the exponentially weighted standard deviation of one-bar log returns up to t (span ``vol_span``)
  scaled by sqrt(h); the first bar in t+1..t+h whose high (low) reaches the upper (lower) barrier ends the label
  with +1 (-1); a bar that reaches both is ambiguous (the order inside the bar is unknown) and labels 0; if no
  barrier is hit the vertical barrier at t+h labels like ``next``. Known at the bar that ended it.

``end`` is the bar index at which each label is determined; samples whose ``end`` reaches into a test fold are
purged from training (see :mod:`fxgate.models.ensemble.walk_forward`). Labels that would need bars past the end of
the data are invalid (``valid`` False), never guessed.

``end`` is not monotone for triple-barrier labels: a sample whose barrier is hit early ends before an earlier
sample that ran to its vertical barrier. The last bar a set of samples looked at is therefore the *maximum* of
their ``end`` (:meth:`Labels.last_end`), not the ``end`` of the last sample — up to ``horizon - 1`` bars later.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pandas as pd

from fxgate.engine.core.bars import Bars
from fxgate.engine.core.jit import kernel

__all__ = ["LabelSpec", "Labels", "make_labels"]


@dataclass(frozen=True, slots=True)
class LabelSpec:
    kind: Literal["next", "triple-barrier"] = "next"
    horizon: int = 1
    pt: float = 2.0
    sl: float = 2.0
    vol_span: int = 100
    #: cost in price units when the bars carry no spread column (recorded in bundles; 0 means gross labels)
    default_spread: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("next", "triple-barrier"):
            raise ValueError(f"label kind {self.kind!r} is not allowed; use 'next' or 'triple-barrier'")
        if self.horizon < 1:
            raise ValueError(f"label horizon must be >= 1 bar, got {self.horizon}")
        if self.pt <= 0 or self.sl <= 0 or self.vol_span < 2 or self.default_spread < 0:
            raise ValueError("triple-barrier pt and sl must be > 0, vol_span >= 2 and default_spread >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Labels:
    y: np.ndarray  # int8: +1 up, -1 down, 0 no trade worth its cost
    end: np.ndarray  # int64: bar index at which the label is known
    ret: np.ndarray  # float64: close-to-close log return from t to end (what a trade taken at t realized)
    valid: np.ndarray  # bool

    def last_end(self, idx: np.ndarray) -> int:
        """The last bar index any of the samples ``idx`` looked at: ``max(end[idx])`` (see the module docstring
        for why not ``end[idx[-1]]``). Raises ``ValueError`` when ``idx`` holds an invalid sample or none."""
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) == 0:
            raise ValueError("no samples: a set of no labels looked at no bar")
        if not self.valid[idx].all():
            raise ValueError(f"sample {int(idx[~self.valid[idx]][0])} has no valid label; it looked past the data")
        return int(self.end[idx].max())


def _ewm_vol(c: np.ndarray, span: int) -> np.ndarray:
    """EWM standard deviation of one-bar log returns up to and including each bar (pandas ``ewm(span).std()``
    with ``adjust=True``); NaN for the first bars."""
    r = pd.Series(np.log(c)).diff()
    return r.ewm(span=span, min_periods=min(span, 20)).std().to_numpy()


def _triple_barrier_py(h, lo, c, up, dn, horizon, cost, y, end):  # type: ignore[no-untyped-def]
    n = len(c)
    for t in range(n):
        if t + horizon >= n or not (np.isfinite(up[t]) and np.isfinite(dn[t])):
            y[t] = 0
            end[t] = -1
            continue
        label = 0
        stop = t + horizon
        hit = False
        for j in range(t + 1, t + horizon + 1):
            hu = h[j] >= up[t]
            hd = lo[j] <= dn[t]
            if hu or hd:
                label = 0 if (hu and hd) else (1 if hu else -1)
                stop = j
                hit = True
                break
        if not hit:
            move = c[stop] - c[t]
            label = 1 if move > cost[t] else (-1 if move < -cost[t] else 0)
        y[t] = label
        end[t] = stop


_triple_barrier = kernel(_triple_barrier_py)


def make_labels(bars: Bars, spec: LabelSpec) -> Labels:
    """Labels for every bar of ``bars`` (see the module docstring)."""
    n = len(bars)
    c = bars.close
    cost = bars.spread if bars.spread is not None else np.full(n, spec.default_spread)
    h = spec.horizon
    valid = np.arange(n) + h < n
    if spec.kind == "next":
        end = np.where(valid, np.arange(n) + h, -1).astype(np.int64)
        move = np.full(n, np.nan)
        move[: max(0, n - h)] = c[h:] - c[: max(0, n - h)]
        y = np.where(move > cost, 1, np.where(move < -cost, -1, 0)).astype(np.int8)
        y[~valid] = 0
    else:
        sigma = _ewm_vol(c, spec.vol_span) * math.sqrt(h)
        up = c * np.exp(spec.pt * sigma)
        dn = c * np.exp(-spec.sl * sigma)
        y = np.zeros(n, dtype=np.int8)
        end = np.zeros(n, dtype=np.int64)
        _triple_barrier(bars.high, bars.low, c, up, dn, h, cost, y, end)
        valid = end >= 0
    ret = np.full(n, np.nan)
    ret[valid] = np.log(c[end[valid]] / c[valid])
    return Labels(y, end, ret, valid)
