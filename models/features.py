"""Streaming features: one compiled kernel serves live bars and history alike.

``FeatureEngine.update(bar)`` pushes one bar into ring buffers and computes every feature of that bar from the
buffers only, so a feature at bar t can never see bar t+1. ``FeatureEngine.batch(bars)`` runs the very same
per-bar kernel over a history from a fresh state (it is a loop around it, not a vectorized twin), so live and
batch features are bit-identical.

Feature families
----------------
* **Alpha158** (Qlib, ``qlib/contrib/data/loader.py`` ``Alpha158DL``) with tick volume as volume and without
  VWAP0 (FX bars carry no VWAP): the nine KBAR features, OPEN0/HIGH0/LOW0, and ROC MA STD BETA RSQR RESI MAX MIN
  QTLU QTLD RANK RSV IMAX IMIN IMXD CORR CORD CNTP CNTN CNTD SUMP SUMN SUMD VMA VSTD WVMA VSUMP VSUMN VSUMD over
  windows 5, 10, 20, 30, 60 (157 features). One deliberate difference: Qlib computes rolling operators with
  ``min_periods=1``; here a rolling feature is NaN until its window is full (a 60-bar mean of 3 bars is not a
  60-bar mean). Std is the sample standard deviation (ddof=1) as in pandas; Quantile interpolates linearly;
  Rank is the percentile rank of the last value with ties averaged; IdxMax/IdxMin are 1-based from the oldest bar.
* **Realized volatility** (Corsi 2009 HAR-RV): with B bars per day, RV_D = sum of the last B squared log returns,
  RV_W = (sum over 5B)/5, RV_M = (sum over 22B)/22; bipower variation BV = (pi/2) sum |r_t||r_{t-1}| over B
  (Barndorff-Nielsen & Shephard 2004); the BNS ratio jump statistic with tripower quarticity (Huang & Tauchen
  2005, eq. 12); the Lee-Mykland (2008) statistic r_t / sigma_t with sigma_t^2 = BV of the K bars *before* t
  divided by K - 2.
* **Time and cost**: hour-of-day (sin, cos, UTC), the UTC calendar day of week (DOW, Monday = 0; not the FX
  trading day that rolls at 17:00 New York, so Sunday-evening bars count as Sunday), Asia/London/New York session
  flags (UTC approximations), relative spread (NaN without a spread column).

MAD winsorization (:class:`MadWinsorizer`) clips each feature at median +- k * MAD with medians fitted on training
rows only.

The kernel itself, its state slots and the output layout live in ``fxgate.models._feature_kernels``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fxgate.engine.core.bars import Bar, Bars, timeframe_seconds
from fxgate.engine.core.feature_layout import N_FEATURES, WINDOWS, feature_names
from fxgate.models._feature_kernels import HIST, I_BARS, _batch, _update

__all__ = ["FeatureEngine", "MadWinsorizer", "feature_names", "FEATURE_ENGINE_VERSION", "WINDOWS"]

#: Bumped whenever a feature's definition or order changes; bundles record it and refuse a mismatch.
FEATURE_ENGINE_VERSION = "1"


def bars_per_day(timeframe: str) -> int:
    """B, the number of bars in a 24-hour day (1 for D1 and coarser)."""
    return max(1, 86400 // timeframe_seconds(timeframe))


class FeatureEngine:
    """Streaming feature state for one instrument and timeframe.

    ``update(bar)`` returns the feature vector of that bar (a fresh array); ``batch(bars)`` returns the
    ``(len(bars), n_features)`` matrix computed by the same kernel from a fresh state (the engine's own state is
    left untouched). ``state_dict()``/``load_state_dict()`` snapshot and restore the buffers exactly.
    """

    def __init__(self, timeframe: str) -> None:
        self.timeframe = timeframe
        self.bpd = bars_per_day(timeframe)
        self.lm_k = max(10, self.bpd)
        self.names = feature_names()
        self._fresh()

    def _fresh(self) -> None:
        self.ring = np.zeros((5, HIST))
        self.rv_ring = np.zeros((3, 22 * self.bpd + 4))
        self.ist = np.zeros(5, dtype=np.int64)
        self.fst = np.zeros(9)

    @property
    def n_features(self) -> int:
        return N_FEATURES

    @property
    def bars_seen(self) -> int:
        return int(self.ist[I_BARS])

    @property
    def warmup_bars(self) -> int:
        """Bars before every feature can be finite (the 22-day RV window plus one return)."""
        return max(61, 22 * self.bpd + 1)

    def update(self, bar: Bar) -> np.ndarray:
        o, h, lo, c, v = bar.open, bar.high, bar.low, bar.close, bar.volume
        if not (
            math.isfinite(o)
            and math.isfinite(h)
            and math.isfinite(lo)
            and math.isfinite(c)
            and math.isfinite(v)
            and min(o, h, lo, c) > 0
            and v >= 0
        ):
            raise ValueError(f"bar at ts={bar.ts} has a non-finite or non-positive value; it was not applied")
        out = np.empty(N_FEATURES)
        sp = np.nan if bar.spread is None else float(bar.spread)
        _update(self.ring, self.rv_ring, self.ist, self.fst, int(bar.ts), o, h, lo, c, v, sp, self.bpd, self.lm_k, out)
        return out

    def batch(self, bars: Bars) -> np.ndarray:
        tmp = FeatureEngine(self.timeframe)
        out = np.empty((len(bars), N_FEATURES))
        spread = bars.spread if bars.spread is not None else np.full(len(bars), np.nan)
        _batch(
            tmp.ring,
            tmp.rv_ring,
            tmp.ist,
            tmp.fst,
            bars.ts,
            bars.open,
            bars.high,
            bars.low,
            bars.close,
            bars.volume,
            spread,
            tmp.bpd,
            tmp.lm_k,
            out,
        )
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "timeframe": self.timeframe,
            "version": FEATURE_ENGINE_VERSION,
            "ring": self.ring.copy(),
            "rv_ring": self.rv_ring.copy(),
            "ist": self.ist.copy(),
            "fst": self.fst.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["timeframe"] != self.timeframe or state["version"] != FEATURE_ENGINE_VERSION:
            raise ValueError(
                f"feature state is for {state['timeframe']} v{state['version']}, this engine is "
                f"{self.timeframe} v{FEATURE_ENGINE_VERSION}"
            )
        self.ring = np.array(state["ring"], dtype=np.float64)
        self.rv_ring = np.array(state["rv_ring"], dtype=np.float64)
        self.ist = np.array(state["ist"], dtype=np.int64)
        self.fst = np.array(state["fst"], dtype=np.float64)


@dataclass
class MadWinsorizer:
    """Clip each feature at median +- k * MAD, with medians and MADs fitted on training rows only.

    MAD is the raw median absolute deviation (not scaled to sigma). Features with MAD 0 are left unclipped.
    NaN stays NaN (the boosters route missing values themselves).
    """

    k: float = 5.0
    median: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mad: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def fit(self, x: np.ndarray) -> MadWinsorizer:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (features still warming up)
            self.median = np.nanmedian(np.where(np.isfinite(x), x, np.nan), axis=0)
            self.mad = np.nanmedian(np.abs(x - self.median), axis=0)
        self.median = np.nan_to_num(self.median, nan=0.0)
        self.mad = np.nan_to_num(self.mad, nan=0.0)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        if self.median.shape[-1] != x.shape[-1]:
            raise ValueError(f"winsorizer fitted on {self.median.shape[-1]} features, got {x.shape[-1]}")
        lo = np.where(self.mad > 0, self.median - self.k * self.mad, -np.inf)
        hi = np.where(self.mad > 0, self.median + self.k * self.mad, np.inf)
        with np.errstate(invalid="ignore"):
            return np.clip(x, lo, hi)

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "median": self.median.tolist(), "mad": self.mad.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MadWinsorizer:
        return cls(float(d["k"]), np.array(d["median"], dtype=np.float64), np.array(d["mad"], dtype=np.float64))
