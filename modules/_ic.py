"""Statistics shared by the information-coefficient modules (information_edge, icir, certainty_score).

The signal is s = mean(P(up) of the Layer-1 models at entry) − 0.5 and the realized move r = log(exit / entry)
over the horizon (:class:`~fxgate.modules._base.Matured`); a P&L is a candidate's ``Outcome.pnl``. Three streaming
statistics, each a numba kernel with its plain-Python twin, each with its own small state (``ist``/``fs`` slots
named below, module-level ints):

**IC window** (``_ic_push``, one call per (s, r) pair; O(w log w) per pair, w = the window):

* EWMA co-moments, O(1): with λ = 2^(−1/half-life), W_t = λW_{t−1} + 1, m_t = m_{t−1} + (x_t − m_{t−1})/W_t and
  S^{xy}_t = λS^{xy}_{t−1} + (x_t − m^x_{t−1})(y_t − m^y_t) (the weighted co-moment recursion of West 1979 / Finch
  2009, *Incremental calculation of weighted mean and variance*, with exponential weights); the EWMA IC is
  S^{sr}/√(S^{ss}S^{rr}): Pearson's correlation with weights λ^{t−i}.
* Over the last w pairs, exactly (two-pass, recomputed on every push, so no running-sum drift): Pearson IC, RankIC
  (Spearman: Pearson of the average ranks, ties averaged, as ``scipy.stats.spearmanr``; ranks are read by binary
  search from two sorted copies of the window, kept in O(w) per push, so O(w log w) per pair), and the Newey–West
  t-statistic of the IC: the t of the OLS slope β of r on (1, s) with a HAC (Bartlett kernel, L lags) standard
  error, without small-sample correction — what ``statsmodels`` OLS ``fit(cov_type="HAC",
  cov_kwds={"maxlags": L})`` reports as ``tvalues[1]``. With e_t the OLS residual and u_t = (s_t − s̄)e_t,

      Var(β) = [Σ_t u_t² + 2 Σ_{l=1..L} (1 − l/(L+1)) Σ_t u_t u_{t−l}] / (Σ_t (s_t − s̄)²)²       (Newey & West 1987)

  β = IC·sd(r)/sd(s) has the IC's sign, so t tests H0: IC ≤ 0. Overlapping horizons (consecutive forecasts share
  h − 1 bars of the same move) make u_t an MA(h − 1) at least: L must be ≥ h − 1 (:func:`nw_lags`).

**Period ICs** (``_icir_push``, amortized O(1) per pair): pairs fill periods of ``period`` forecasts; when a period
is full its Pearson IC (two-pass) joins a ring of the last ``periods`` period ICs (a period whose IC is undefined —
a constant signal or move — is dropped), and ICIR = mean / sd (ddof = 1) of that ring (Grinold & Kahn 2000,
*Active Portfolio Management*, ch. 6: the information ratio of a signal's IC).

**HAC mean** (``_hac_mean_push``, O(n·L) per value): the mean of the last n values (candidate P&L) and its
Newey–West standard error, sqrt(Σ_l w_l Σ_t u_t u_{t−l}) / n with u_t = x_t − x̄ — ``statsmodels`` OLS of x on a
constant with ``cov_type="HAC"``. The lag counts values in arrival order (candidates, not bars).

State slots. IC window (``ws``, ``wr``: the window's s and r in arrival order; ``ss``, ``sr``: the same sorted)::

    ist  I_PAIRS       pairs pushed so far; the next goes to ws[I_PAIRS % w]
    fs   F_EW_W        W_t, the EWMA weight sum
         F_EW_MS       EWMA mean of s
         F_EW_MR       EWMA mean of r
         F_EW_SS       S^{ss}, EWMA co-moment of s with itself
         F_EW_RR       S^{rr}
         F_EW_SR       S^{sr}
         F_EW_IC       S^{sr} / sqrt(S^{ss} S^{rr}) (NaN while undefined)
         F_IC          Pearson IC over the window (NaN: fewer than 3 pairs or a constant series)
         F_RANK_IC     Spearman RankIC over the window
         F_SLOPE       OLS slope β of r on s over the window
         F_NW_T        Newey–West t of β (NaN when undefined)

Period ICs (``ps``, ``pr``: the period being filled; ``pics``: ring of the last ``periods`` period ICs)::

    ist  I_FILL        pairs in the period being filled
         I_PERIODS     period ICs pushed into ``pics``
         I_DROPPED     full periods whose IC was undefined (not pushed)
    fs   F_LAST_IC     the last period's IC
         F_IC_MEAN     mean of the ring's ICs
         F_IC_SD       their standard deviation (ddof = 1)
         F_ICIR        F_IC_MEAN / F_IC_SD (NaN with fewer than 2 ICs or an sd ≤ SD_FLOOR = 1e-12)

HAC mean (``vals``: ring of the last n values)::

    ist  I_VALUES      values pushed so far
    fs   F_MEAN        mean of the window
         F_SE          its Newey–West standard error
         F_T           F_MEAN / F_SE (NaN when the se is 0 or undefined: fewer than 2 values, or all equal)
"""

from __future__ import annotations

import math

import numpy as np

from fxgate.engine.core.jit import kernel

# IC window
I_PAIRS = 0
F_EW_W, F_EW_MS, F_EW_MR, F_EW_SS, F_EW_RR, F_EW_SR, F_EW_IC, F_IC, F_RANK_IC, F_SLOPE, F_NW_T = range(11)
IC_INTS, IC_FLOATS = 1, 11
# period ICs
I_FILL, I_PERIODS, I_DROPPED = range(3)
F_LAST_IC, F_IC_MEAN, F_IC_SD, F_ICIR = range(4)
ICIR_INTS, ICIR_FLOATS = 3, 4
# HAC mean
I_VALUES = 0
F_MEAN, F_SE, F_T = range(3)
HAC_INTS, HAC_FLOATS = 1, 3
#: a period-IC sd at or below this (ICs lie in [-1, 1]) is rounding, not dispersion: ICIR is then undefined
SD_FLOOR = 1e-12


def signal(probs: np.ndarray | None) -> float:
    """s = mean P(up) − 0.5 of the models' entry probabilities; NaN without probabilities or with a bad one."""
    if probs is None or len(probs) == 0:
        return math.nan
    s = float(np.mean(probs))
    return s - 0.5 if math.isfinite(s) else math.nan


def nw_lags(horizon: int, nw_lags: int, lag_mult: float) -> int:
    """The Newey–West lag L = max(``nw_lags``, ceil(``lag_mult``·(h − 1))).

    Consecutive forecasts over a horizon of h bars overlap by h − 1 bars, so L ≥ h − 1 is the least that covers the
    overlap; Bartlett weights (1 − l/(L+1)) shrink the lags near L, so with a persistent signal L = h − 1 still
    under-states the variance (an MA(h−1) signal times an MA(h−1) move: expected t inflated ≈ 1.14 at h = 5) —
    hence the default multiple 2 (``lag_mult``), which brings it to ≈ 1.07."""
    return max(int(nw_lags), int(math.ceil(float(lag_mult) * (int(horizon) - 1))), 0)


def phi(x: float) -> float:
    """Standard normal CDF Φ(x); NaN for NaN."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


# -- IC window -------------------------------------------------------------------------------------------------------
def _pearson_nw_py(ws, wr, start, n, lags, out):  # type: ignore[no-untyped-def]
    """Pearson correlation, OLS slope and its Newey–West t over the n pairs ws/wr[(start + k) % len(ws)], k = 0..n−1
    (time order); writes out[0] = IC, out[1] = β, out[2] = t (NaN where undefined: fewer than 3 pairs, or a series
    whose values are all equal). Two-pass sums."""
    w = ws.shape[0]
    out[0] = np.nan
    out[1] = np.nan
    out[2] = np.nan
    if n < 3:
        return
    ms = 0.0
    mr = 0.0
    s_lo = ws[start % w]
    s_hi = s_lo
    r_lo = wr[start % w]
    r_hi = r_lo
    for k in range(n):
        j = (start + k) % w
        ms += ws[j]
        mr += wr[j]
        s_lo = min(s_lo, ws[j])
        s_hi = max(s_hi, ws[j])
        r_lo = min(r_lo, wr[j])
        r_hi = max(r_hi, wr[j])
    if s_lo == s_hi or r_lo == r_hi:
        return  # a constant series has no correlation (scipy's pearsonr: NaN); rounding would make one up
    ms /= n
    mr /= n
    sxx = 0.0
    syy = 0.0
    sxy = 0.0
    for k in range(n):
        j = (start + k) % w
        a = ws[j] - ms
        b = wr[j] - mr
        sxx += a * a
        syy += b * b
        sxy += a * b
    if not (sxx > 0.0 and syy > 0.0):
        return
    out[0] = sxy / math.sqrt(sxx * syy)
    beta = sxy / sxx
    out[1] = beta
    # u_t = (s_t - s̄) e_t, e_t = (r_t - r̄) - β (s_t - s̄): the slope's score; Bartlett-weighted autocovariances
    big_s = 0.0
    for k in range(n):
        j = (start + k) % w
        a = ws[j] - ms
        u = a * ((wr[j] - mr) - beta * a)
        big_s += u * u
        for lag in range(1, min(lags, k) + 1):
            i = (start + k - lag) % w
            b = ws[i] - ms
            v = b * ((wr[i] - mr) - beta * b)
            big_s += 2.0 * (1.0 - lag / (lags + 1.0)) * u * v
    if big_s > 0.0:
        out[2] = beta / (math.sqrt(big_s) / sxx)


def _rank_ic_py(ws, wr, ss, sr, start, n):  # type: ignore[no-untyped-def]
    """Spearman correlation of the window (average ranks for ties, read from the sorted copies ss/sr[:n] by binary
    search); NaN with fewer than 3 pairs or a constant series."""
    if n < 3:
        return np.nan
    w = ws.shape[0]
    m = (n + 1) / 2.0
    sxx = 0.0
    syy = 0.0
    sxy = 0.0
    for k in range(n):
        j = (start + k) % w
        x = ws[j]
        y = wr[j]
        # positions lo..hi-1 hold x: ranks lo+1..hi, their average (lo + hi + 1) / 2
        a = (np.searchsorted(ss[:n], x, side="left") + np.searchsorted(ss[:n], x, side="right") + 1) / 2.0 - m
        b = (np.searchsorted(sr[:n], y, side="left") + np.searchsorted(sr[:n], y, side="right") + 1) / 2.0 - m
        sxx += a * a
        syy += b * b
        sxy += a * b
    if not (sxx > 0.0 and syy > 0.0):
        return np.nan
    return sxy / math.sqrt(sxx * syy)


def _sorted_replace_py(srt, n, old, x, full):  # type: ignore[no-untyped-def]
    """In the sorted srt[:n]: remove ``old`` (when ``full``), then insert ``x``; returns the new count."""
    if full:
        j = np.searchsorted(srt[:n], old)
        for k in range(j, n - 1):
            srt[k] = srt[k + 1]
        n -= 1
    j = np.searchsorted(srt[:n], x)
    for k in range(n, j, -1):
        srt[k] = srt[k - 1]
    srt[j] = x
    return n + 1


_pearson_nw = kernel(_pearson_nw_py, fastmath=False)
_rank_ic = kernel(_rank_ic_py, fastmath=False)
_sorted_replace = kernel(_sorted_replace_py, fastmath=False)


def _ic_push_py(ws, wr, ss, sr, ist, fs, out3, s, r, lam, lags):  # type: ignore[no-untyped-def]
    """Push one (s, r) pair: EWMA co-moments (decay ``lam`` = 2^(−1/half-life)), the window's ring and sorted copies,
    then the window's Pearson IC, RankIC, slope and Newey–West t (``lags`` L). ``out3`` is a 3-float scratch array.
    Slots: the module docstring."""
    w = ws.shape[0]
    # EWMA co-moments (Finch 2009, with weights lam^(t-i))
    fs[F_EW_W] = lam * fs[F_EW_W] + 1.0
    a = 1.0 / fs[F_EW_W]
    ds = s - fs[F_EW_MS]
    dr = r - fs[F_EW_MR]
    fs[F_EW_MS] += a * ds
    fs[F_EW_MR] += a * dr
    fs[F_EW_SS] = lam * fs[F_EW_SS] + ds * (s - fs[F_EW_MS])
    fs[F_EW_RR] = lam * fs[F_EW_RR] + dr * (r - fs[F_EW_MR])
    fs[F_EW_SR] = lam * fs[F_EW_SR] + ds * (r - fs[F_EW_MR])
    if fs[F_EW_SS] > 0.0 and fs[F_EW_RR] > 0.0:
        fs[F_EW_IC] = fs[F_EW_SR] / math.sqrt(fs[F_EW_SS] * fs[F_EW_RR])
    else:
        fs[F_EW_IC] = np.nan
    # the window
    c = ist[I_PAIRS]
    n = min(c, w)
    full = c >= w
    old_s = ws[c % w]
    old_r = wr[c % w]
    _sorted_replace(ss, n, old_s, s, full)
    _sorted_replace(sr, n, old_r, r, full)
    ws[c % w] = s
    wr[c % w] = r
    c += 1
    ist[I_PAIRS] = c
    n = min(c, w)
    start = (c - n) % w
    _pearson_nw(ws, wr, start, n, lags, out3)
    fs[F_IC] = out3[0]
    fs[F_SLOPE] = out3[1]
    fs[F_NW_T] = out3[2]
    fs[F_RANK_IC] = _rank_ic(ws, wr, ss, sr, start, n)


_ic_push = kernel(_ic_push_py, fastmath=False)


class IcWindow:
    """State of the IC window statistic (arrays and slots: the module docstring) and its push."""

    __slots__ = ("ws", "wr", "ss", "sr", "ist", "fs", "_out")

    def __init__(self, window: int) -> None:
        w = int(window)
        if w < 3:
            raise ValueError(f"the IC window must hold at least 3 pairs; got window = {window}")
        self.ws, self.wr, self.ss, self.sr = np.zeros(w), np.zeros(w), np.zeros(w), np.zeros(w)
        self.ist = np.zeros(IC_INTS, dtype=np.int64)
        self.fs = np.zeros(IC_FLOATS)
        self.fs[F_EW_IC : F_NW_T + 1] = np.nan
        self._out = np.zeros(3)

    def push(self, s: float, r: float, lam: float, lags: int) -> None:
        _ic_push(self.ws, self.wr, self.ss, self.sr, self.ist, self.fs, self._out, s, r, lam, lags)

    @property
    def n(self) -> int:
        return min(int(self.ist[I_PAIRS]), len(self.ws))

    def window(self) -> tuple[np.ndarray, np.ndarray]:
        """The window's (s, r) in time order (a copy)."""
        n, w, c = self.n, len(self.ws), int(self.ist[I_PAIRS])
        idx = (np.arange(n) + c - n) % w
        return self.ws[idx], self.wr[idx]


def nw_slope_t(s: np.ndarray, r: np.ndarray, lags: int) -> tuple[float, float, float]:
    """(Pearson IC, OLS slope of r on s, its Newey–West t with ``lags``) of two time-ordered arrays (the window
    kernel's statistic, for simulations and references)."""
    s = np.ascontiguousarray(s, dtype=np.float64)
    r = np.ascontiguousarray(r, dtype=np.float64)
    out = np.zeros(3)
    _pearson_nw(s, r, 0, len(s), int(lags), out)
    return float(out[0]), float(out[1]), float(out[2])


def decay(half_life: float) -> float:
    """λ = 2^(−1/half-life): the EWMA weight of a pair ``half_life`` pairs old is one half."""
    h = float(half_life)
    if not h > 0:
        raise ValueError(f"half_life must be > 0 pairs; got {half_life}")
    return 2.0 ** (-1.0 / h)


# -- period ICs ------------------------------------------------------------------------------------------------------
def _icir_push_py(ps, pr, pics, ist, fs, out3, s, r):  # type: ignore[no-untyped-def]
    """Add one pair to the period being filled (capacity len(ps)); when it is full, push its Pearson IC into the
    ring ``pics`` (if defined) and recompute the ring's mean, sd and ICIR. Slots: the module docstring."""
    p = ps.shape[0]
    f = ist[I_FILL]
    ps[f] = s
    pr[f] = r
    f += 1
    if f < p:
        ist[I_FILL] = f
        return
    ist[I_FILL] = 0
    _pearson_nw(ps, pr, 0, p, 0, out3)
    ic = out3[0]
    if not math.isfinite(ic):
        ist[I_DROPPED] += 1
        return
    fs[F_LAST_IC] = ic
    k = pics.shape[0]
    c = ist[I_PERIODS]
    pics[c % k] = ic
    c += 1
    ist[I_PERIODS] = c
    n = min(c, k)
    m = 0.0
    for i in range(n):
        m += pics[i]
    m /= n
    fs[F_IC_MEAN] = m
    if n < 2:
        fs[F_IC_SD] = np.nan
        fs[F_ICIR] = np.nan
        return
    v = 0.0
    for i in range(n):
        d = pics[i] - m
        v += d * d
    sd = math.sqrt(v / (n - 1))
    fs[F_IC_SD] = sd
    # identical period ICs leave a rounding-level sd (~1e-17), not a real one: the ratio is undefined, not huge
    fs[F_ICIR] = m / sd if sd > SD_FLOOR else np.nan


_icir_push = kernel(_icir_push_py, fastmath=False)


class PeriodIc:
    """State of the period-IC statistic (arrays and slots: the module docstring) and its push."""

    __slots__ = ("ps", "pr", "pics", "ist", "fs", "_out")

    def __init__(self, period: int, periods: int) -> None:
        if int(period) < 3 or int(periods) < 2:
            raise ValueError(f"ICIR needs period >= 3 forecasts and periods >= 2; got {period} and {periods}")
        self.ps, self.pr = np.zeros(int(period)), np.zeros(int(period))
        self.pics = np.zeros(int(periods))
        self.ist = np.zeros(ICIR_INTS, dtype=np.int64)
        self.fs = np.full(ICIR_FLOATS, np.nan)
        self._out = np.zeros(3)

    def push(self, s: float, r: float) -> None:
        _icir_push(self.ps, self.pr, self.pics, self.ist, self.fs, self._out, s, r)

    @property
    def n(self) -> int:
        """Period ICs in the ring."""
        return min(int(self.ist[I_PERIODS]), len(self.pics))


# -- HAC mean --------------------------------------------------------------------------------------------------------
def _hac_mean_push_py(vals, ist, fs, x, lags):  # type: ignore[no-untyped-def]
    """Push ``x`` into the ring ``vals``; recompute the window's mean, its Newey–West se (Bartlett, ``lags``) and
    t = mean / se. Slots: the module docstring."""
    w = vals.shape[0]
    c = ist[I_VALUES]
    vals[c % w] = x
    c += 1
    ist[I_VALUES] = c
    n = min(c, w)
    start = (c - n) % w
    m = 0.0
    lo = vals[start % w]
    hi = lo
    for k in range(n):
        v = vals[(start + k) % w]
        m += v
        lo = min(lo, v)
        hi = max(hi, v)
    m /= n
    fs[F_MEAN] = m
    if lo == hi:  # a constant window: the se is 0 (rounding would make up a tiny one); the t is undefined
        fs[F_SE] = np.nan
        fs[F_T] = np.nan
        return
    big_s = 0.0
    for k in range(n):
        u = vals[(start + k) % w] - m
        big_s += u * u
        for lag in range(1, min(lags, k) + 1):
            big_s += 2.0 * (1.0 - lag / (lags + 1.0)) * u * (vals[(start + k - lag) % w] - m)
    if n >= 2 and big_s > 0.0:
        se = math.sqrt(big_s) / n
        fs[F_SE] = se
        fs[F_T] = m / se
    else:
        fs[F_SE] = np.nan
        fs[F_T] = np.nan


_hac_mean_push = kernel(_hac_mean_push_py, fastmath=False)


class HacMean:
    """State of the HAC-mean statistic (ring and slots: the module docstring) and its push."""

    __slots__ = ("vals", "ist", "fs")

    def __init__(self, window: int) -> None:
        if int(window) < 2:
            raise ValueError(f"the P&L window must hold at least 2 outcomes; got window = {window}")
        self.vals = np.zeros(int(window))
        self.ist = np.zeros(HAC_INTS, dtype=np.int64)
        self.fs = np.full(HAC_FLOATS, np.nan)

    def push(self, x: float, lags: int) -> None:
        _hac_mean_push(self.vals, self.ist, self.fs, x, lags)

    @property
    def n(self) -> int:
        return min(int(self.ist[I_VALUES]), len(self.vals))


def warm_up() -> None:
    """Compile the three kernels on throwaway state."""
    a = IcWindow(4)
    b = PeriodIc(3, 2)
    c = HacMean(3)
    for i, (x, y) in enumerate(((0.1, 0.2), (-0.1, 0.1), (0.2, -0.3), (0.0, 0.1), (0.3, 0.2), (-0.2, 0.0))):
        a.push(x, y, 0.9, 1)
        b.push(x, y)
        c.push(x + i, 1)
