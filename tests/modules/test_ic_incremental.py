"""The incremental window statistics of ``fxgate.modules._ic`` against independent naive references recomputed over
the whole window on every push, over streams several windows long (so evictions happen many times):

* the HAC mean's running sums (O(L) per push, re-summed exactly every window) against a plain numpy loop: mean,
  Bartlett-weighted autocovariances, se and t; on streams built to break running sums (a mean shift, a jump in
  scale, a large offset whose raw sums would cancel, ties, constant stretches);
* the IC window's incrementally kept ranks against ``scipy.stats.rankdata`` of the window (ties averaged), its
  RankIC against ``scipy.stats.spearmanr``, its Pearson IC against ``numpy.corrcoef`` and its Newey–West t against
  a naive numpy HAC of the slope.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fxgate.modules import _ic


def _naive_hac(x: np.ndarray, lags: int) -> tuple[float, float, float]:
    """(mean, Newey–West se, t) of the values ``x`` (time order), Bartlett weights, no small-sample correction."""
    n = len(x)
    m = float(np.mean(x))
    if np.ptp(x) == 0:
        return m, math.nan, math.nan
    u = x - m
    s = float(u @ u)
    for lag in range(1, min(lags, n - 1) + 1):
        s += 2.0 * (1.0 - lag / (lags + 1.0)) * float(u[lag:] @ u[:-lag])
    if n < 2 or not s > 0:
        return m, math.nan, math.nan
    se = math.sqrt(s) / n
    return m, se, m / se


def _hostile_stream(rng: np.random.Generator, n: int) -> np.ndarray:
    """P&L-like values with what running sums get wrong: a mean shift, a jump in scale, an offset of 1e3 over a
    spread of 1e-4 (raw second moments cancel ~14 digits), ties and constant stretches."""
    x = rng.normal(2e-5, 1e-4, n)
    x[n // 5 : 2 * n // 5] += 5e-4  # mean shift
    x[2 * n // 5 : 3 * n // 5] *= 40.0  # scale jump
    x[3 * n // 5 : 4 * n // 5] = 1e3 + rng.normal(0, 1e-4, n // 5)  # large offset
    x[4 * n // 5 :] = np.round(x[4 * n // 5 :], 5)  # ties
    x[4 * n // 5 + 10 : 4 * n // 5 + 70] = 3e-5  # a constant stretch longer than the smallest window
    return x


@pytest.mark.parametrize("window,lags", [(30, 4), (50, 0), (41, 1), (25, 9)])
@pytest.mark.parametrize("compiled", [True, False])
def test_hac_mean_running_sums_equal_a_naive_window_loop(window, lags, compiled):
    rng = np.random.default_rng(window + lags)
    x = _hostile_stream(rng, 12 * window)  # many evictions: 11 full turnovers of the window
    h = _ic.HacMean(window, lags)
    push = _ic._hac_mean_push if compiled else _ic._hac_mean_push_py
    checked = 0
    for i, v in enumerate(x):
        push(h.vals, h.hp, h.ist, h.fs, v)
        want = _naive_hac(x[max(0, i + 1 - window) : i + 1], lags)
        got = (h.fs[_ic.F_MEAN], h.fs[_ic.F_SE], h.fs[_ic.F_T])
        np.testing.assert_equal(np.isnan(got), np.isnan(want), err_msg=f"push {i}")
        if not math.isnan(want[1]):
            # the mean against the window's own scale (a 1e3 offset has 1e-13 absolute rounding in any sum)
            assert got[0] == pytest.approx(want[0], rel=1e-12, abs=1e-9 * want[1] * math.sqrt(window))
            assert got[1] == pytest.approx(want[1], rel=1e-9), i
            assert got[2] == pytest.approx(want[2], rel=1e-9, abs=1e-9), i
            checked += 1
    assert checked > 10 * window


def test_hac_mean_resums_exactly_every_window():
    """After exactly w pushes since the last re-sum the sums are recomputed from the ring: they equal a fresh
    two-pass computation bit for bit."""
    rng = np.random.default_rng(3)
    h = _ic.HacMean(20, 3)
    for v in rng.normal(0, 1, 137):
        h.push(v)
    fresh = _ic.HacMean(20, 3)
    fresh.vals[:], fresh.ist[:] = h.vals, h.ist
    _ic._hac_resum(fresh.vals, fresh.hp, fresh.ist, fresh.fs)
    k = int(h.ist[_ic.I_SINCE_EXACT])
    assert 0 <= k < 20
    for v in rng.normal(0, 1, 20 - k):
        h.push(v)
        fresh.push(v)
    assert int(h.ist[_ic.I_SINCE_EXACT]) == 0
    c = int(h.ist[_ic.I_VALUES])
    idx = (np.arange(20) + c - 20) % 20
    y = h.vals[idx] - h.fs[_ic.F_SHIFT]
    assert h.fs[_ic.F_SHIFT] == pytest.approx(np.mean(h.vals), rel=1e-14, abs=1e-15)
    for lag in range(4):
        assert h.hp[lag] == pytest.approx(float(y[lag:] @ y[: len(y) - lag]), rel=1e-12, abs=1e-14)


def _naive_nw_t(s: np.ndarray, r: np.ndarray, lags: int) -> float:
    a = s - s.mean()
    b = r - r.mean()
    beta = (a @ b) / (a @ a)
    u = a * (b - beta * a)
    big = float(u @ u)
    for lag in range(1, min(lags, len(s) - 1) + 1):
        big += 2.0 * (1.0 - lag / (lags + 1.0)) * float(u[lag:] @ u[:-lag])
    return beta / (math.sqrt(big) / (a @ a))


@pytest.mark.parametrize("compiled", [True, False])
def test_ic_window_ranks_and_statistics_equal_scipy_over_a_long_stream(compiled):
    rng = np.random.default_rng(11)
    w, lags, n = 40, 3, 400  # ten full turnovers
    s = np.round(rng.normal(0, 0.05, n), 2)  # many ties
    r = np.round(rng.normal(0, 1e-3, n) + 0.01 * s, 4)
    r[150:200] = 2e-3  # a constant stretch of moves longer than the window
    win = _ic.IcWindow(w)
    push = _ic._ic_push if compiled else _ic._ic_push_py
    for i in range(n):
        push(win.ws, win.wr, win.xr, win.yr, win.ist, win.fs, win._u, s[i], r[i], 0.97, lags)
        lo = max(0, i + 1 - w)
        ws, wr = s[lo : i + 1], r[lo : i + 1]
        m = len(ws)
        # every pair's doubled rank, slot by slot, against scipy's average ranks of the window
        c = i + 1
        slots = (np.arange(m) + c - m) % w
        np.testing.assert_array_equal(win.xr[slots], (2 * stats.rankdata(ws)).astype(np.int64))
        np.testing.assert_array_equal(win.yr[slots], (2 * stats.rankdata(wr)).astype(np.int64))
        if m < 3:
            continue
        if np.ptp(ws) == 0 or np.ptp(wr) == 0:
            assert math.isnan(win.fs[_ic.F_IC]) and math.isnan(win.fs[_ic.F_RANK_IC])
            continue
        assert win.fs[_ic.F_RANK_IC] == pytest.approx(stats.spearmanr(ws, wr)[0], abs=1e-12)
        assert win.fs[_ic.F_IC] == pytest.approx(np.corrcoef(ws, wr)[0, 1], abs=1e-12)
        assert win.fs[_ic.F_NW_T] == pytest.approx(_naive_nw_t(ws, wr, lags), rel=1e-9)
