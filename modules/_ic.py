"""Statistics shared by the information-coefficient modules (information_edge, icir, certainty_score).

The signal is s = mean(P(up) of the Layer-1 models at entry) − 0.5 and the realized move r = log(exit / entry)
over the horizon (:class:`~fxgate.modules._base.Matured`); a P&L is a candidate's ``Outcome.pnl``. Three streaming
statistics, each a numba kernel with its plain-Python twin, each with its own small state (``ist``/``fs`` slots
named below, module-level ints):

**IC window** (``_ic_push``, one call per (s, r) pair; O(w·L) per pair, w = the window; ``_ic_pair`` computes the
pair from a matured forecast's probabilities and prices and pushes it, the module's per-pair work in one call):

* EWMA co-moments, O(1): with λ = 2^(−1/half-life), W_t = λW_{t−1} + 1, m_t = m_{t−1} + (x_t − m_{t−1})/W_t and
  S^{xy}_t = λS^{xy}_{t−1} + (x_t − m^x_{t−1})(y_t − m^y_t) (the weighted co-moment recursion of West 1979 / Finch
  2009, *Incremental calculation of weighted mean and variance*, with exponential weights); the EWMA IC is
  S^{sr}/√(S^{ss}S^{rr}): Pearson's correlation with weights λ^{t−i}.
* Over the last w pairs, exactly (two-pass, recomputed on every push, so no running-sum drift): Pearson IC, RankIC
  (Spearman: Pearson of the average ranks, ties averaged, as ``scipy.stats.spearmanr``; every pair's doubled
  average rank 2·#{smaller} + #{equal} + 1 is kept as an integer, updated in one O(w) pass per push by comparing it
  with the evicted and the new value — exact, and branch-free, where binary searches into sorted copies
  mispredicted on every level; the correlation of the ranks is summed in integers), and the Newey–West
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

**HAC mean** (``_hac_mean_push``, O(L) per value): the mean of the last n values (candidate P&L) and its
Newey–West standard error, sqrt(Σ_l w_l Σ_t u_t u_{t−l}) / n with u_t = x_t − x̄ — ``statsmodels`` OLS of x on a
constant with ``cov_type="HAC"``. The lag counts values in arrival order (candidates, not bars). Running sums of
the values shifted by K (y = x − K): S = Σ y_k and P_l = Σ_{k≥l} y_k y_{k−l} (l = 0..L), updated on each push and
eviction; then with ȳ = S/n, Σ_{k≥l} u_k u_{k−l} = P_l − ȳ(A_l + B_l) + (n − l)ȳ², A_l = S − (the first l y's),
B_l = S − (the last l y's) (the shifted-data algorithm: Chan, Golub & LeVeque 1983, *Algorithms for computing the
sample variance*). Against rounding: every w pushes the sums are recomputed exactly from the ring (two-pass, K =
the window's mean: the drift of adding and removing products is bounded by w pushes' worth), and also at once
whenever n·ȳ² > P_0/2 (K has drifted so far from the mean that Σu² = P_0 − nȳ² would cancel more than one bit: a
shift in the P&L's level) or a sum is not finite. A constant window (its se 0, its t undefined) is told by the run
of equal values ending at the newest (``I_STREAK`` ≥ n), exactly, not by rounding of the sums.

State slots. IC window (``ws``, ``wr``: the window's s and r in arrival order; ``xr``, ``yr``: int64, each pair's
doubled average rank in the window, same slots)::

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

HAC mean (``vals``: ring of the last n values; ``hp``: P_0..P_L, the shifted lagged product sums)::

    ist  I_VALUES      values pushed so far
         I_STREAK      equal values in a row ending at the newest (the window is constant when >= n)
         I_SINCE_EXACT pushes since the running sums were last recomputed exactly
    fs   F_MEAN        mean of the window
         F_SE          its Newey–West standard error
         F_T           F_MEAN / F_SE (NaN when the se is 0 or undefined: fewer than 2 values, or all equal)
         F_SHIFT       K, the shift of the running sums (the window's mean at the last exact re-sum)
         F_SUM         S = Σ (x − K) over the window
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
I_VALUES, I_STREAK, I_SINCE_EXACT = range(3)
F_MEAN, F_SE, F_T, F_SHIFT, F_SUM = range(5)
HAC_INTS, HAC_FLOATS = 3, 5
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
def _pearson_nw_py(ws, wr, start, n, lags, out, u):  # type: ignore[no-untyped-def]
    """Pearson correlation, OLS slope and its Newey–West t over the n pairs ws/wr[(start + k) % len(ws)], k = 0..n−1
    (time order); writes out[0] = IC, out[1] = β, out[2] = t (NaN where undefined: fewer than 3 pairs, or a series
    whose values are all equal). Two-pass sums in time order; ``u`` (length ≥ n, untouched when ``lags`` = 0) is
    scratch for the slope's scores u_k, so each lag's autocovariance Σ_k u_k u_{k−l} is one pass over it."""
    w = ws.shape[0]
    out[0] = np.nan
    out[1] = np.nan
    out[2] = np.nan
    if n < 3:
        return
    ms = 0.0
    mr = 0.0
    j = start % w
    s_lo = ws[j]
    s_hi = s_lo
    r_lo = wr[j]
    r_hi = r_lo
    for _ in range(n):  # j walks the ring in time order (no modulo per element)
        x = ws[j]
        y = wr[j]
        ms += x
        mr += y
        s_lo = min(s_lo, x)
        s_hi = max(s_hi, x)
        r_lo = min(r_lo, y)
        r_hi = max(r_hi, y)
        j += 1
        if j == w:
            j = 0
    if s_lo == s_hi or r_lo == r_hi:
        return  # a constant series has no correlation (scipy's pearsonr: NaN); rounding would make one up
    ms /= n
    mr /= n
    sxx = 0.0
    syy = 0.0
    sxy = 0.0
    j = start % w
    for _ in range(n):
        a = ws[j] - ms
        b = wr[j] - mr
        sxx += a * a
        syy += b * b
        sxy += a * b
        j += 1
        if j == w:
            j = 0
    if not (sxx > 0.0 and syy > 0.0):
        return
    out[0] = sxy / math.sqrt(sxx * syy)
    beta = sxy / sxx
    out[1] = beta
    # u_k = (s_k - s̄) e_k, e_k = (r_k - r̄) - β (s_k - s̄): the slope's score; Bartlett-weighted autocovariances
    big_s = 0.0
    j = start % w
    for k in range(n):
        a = ws[j] - ms
        v = a * ((wr[j] - mr) - beta * a)
        big_s += v * v
        if lags > 0:
            u[k] = v
        j += 1
        if j == w:
            j = 0
    for lag in range(1, min(lags, n - 1) + 1):
        # Σ_k u_k u_{k−lag} in four interleaved partial sums: independent add chains, not one latency-bound chain
        a0 = 0.0
        a1 = 0.0
        a2 = 0.0
        a3 = 0.0
        k = lag
        while k + 3 < n:
            a0 += u[k] * u[k - lag]
            a1 += u[k + 1] * u[k + 1 - lag]
            a2 += u[k + 2] * u[k + 2 - lag]
            a3 += u[k + 3] * u[k + 3 - lag]
            k += 4
        while k < n:
            a0 += u[k] * u[k - lag]
            k += 1
        big_s += 2.0 * (1.0 - lag / (lags + 1.0)) * ((a0 + a1) + (a2 + a3))
    if big_s > 0.0:
        out[2] = beta / (math.sqrt(big_s) / sxx)


def _rank_push_py(ws, wr, xr, yr, c, s, r):  # type: ignore[no-untyped-def]
    """Put the pair (s, r) into ring slot c % w (the c-th push, counted from 0), evicting the pair there once the
    ring is full, and keep every pair's doubled average rank in the window exact: xr[j] = 2·#{x_i < x_j} +
    #{x_i = x_j} + 1 over the window's x (j itself counted among the equal), i.e. twice the average rank that
    ``scipy.stats.rankdata`` gives, ties averaged; yr the same for r. One pass over the window, integer updates: the
    evicted value lowers and the new value raises each other pair's rank by 2 (below it) or 1 (equal to it)."""
    w = ws.shape[0]
    p = c % w
    n_old = min(c, w)
    full = 1 if c >= w else 0
    xo = ws[p]
    yo = wr[p]
    cx = 0
    cy = 0
    for j in range(n_old):
        if j == p:
            continue
        xj = ws[j]
        yj = wr[j]
        xr[j] += 2 * (s < xj) + (s == xj) - full * (2 * (xo < xj) + (xo == xj))
        yr[j] += 2 * (r < yj) + (r == yj) - full * (2 * (yo < yj) + (yo == yj))
        cx += 2 * (xj < s) + (xj == s)
        cy += 2 * (yj < r) + (yj == r)
    ws[p] = s
    wr[p] = r
    xr[p] = cx + 2
    yr[p] = cy + 2


def _rank_corr_py(xr, yr, n):  # type: ignore[no-untyped-def]
    """Spearman correlation from the doubled average ranks xr/yr[:n] (any slot order): Pearson of the ranks, with
    integer sums (exact); NaN with fewer than 3 pairs or a constant series."""
    if n < 3:
        return np.nan
    m = n + 1  # twice the mean rank
    sxx = 0
    syy = 0
    sxy = 0
    for j in range(n):
        a = xr[j] - m
        b = yr[j] - m
        sxx += a * a
        syy += b * b
        sxy += a * b
    if not (sxx > 0 and syy > 0):
        return np.nan
    return float(sxy) / math.sqrt(float(sxx) * float(syy))


_pearson_nw = kernel(_pearson_nw_py, fastmath=False)
_rank_push = kernel(_rank_push_py, fastmath=False)
_rank_corr = kernel(_rank_corr_py, fastmath=False)


def _ic_push_py(ws, wr, xr, yr, ist, fs, u, s, r, lam, lags):  # type: ignore[no-untyped-def]
    """Push one (s, r) pair: EWMA co-moments (decay ``lam`` = 2^(−1/half-life)), the window's ring and ranks, then
    the window's Pearson IC, RankIC, slope and Newey–West t (``lags`` L). ``u`` is scratch of length w + 3.
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
    _rank_push(ws, wr, xr, yr, c, s, r)
    c += 1
    ist[I_PAIRS] = c
    n = min(c, w)
    _pearson_nw(ws, wr, (c - n) % w, n, lags, u[w:], u)  # the scores in u[:n], (IC, β, t) in u[w:]
    fs[F_IC] = u[w]
    fs[F_SLOPE] = u[w + 1]
    fs[F_NW_T] = u[w + 2]
    fs[F_RANK_IC] = _rank_corr(xr, yr, n)


_ic_push = kernel(_ic_push_py, fastmath=False)


def _ic_pair_py(ws, wr, xr, yr, ist, fs, u, probs, entry, exit_, lam, lags):  # type: ignore[no-untyped-def]
    """One matured forecast: its signal s = mean(``probs``) − 0.5 and move r = log(``exit_`` / ``entry``) (as
    :func:`signal` and ``Matured.log_return``), pushed with :func:`_ic_push` when both are finite; returns whether
    it was. The module's whole per-pair work in one compiled call."""
    k = probs.shape[0]
    if k == 0 or not (entry > 0.0 and exit_ > 0.0):
        return False
    t = 0.0
    for i in range(k):
        t += probs[i]
    s = t / k - 0.5
    r = math.log(exit_ / entry)
    if not (math.isfinite(s) and math.isfinite(r)):
        return False
    _ic_push(ws, wr, xr, yr, ist, fs, u, s, r, lam, lags)
    return True


_ic_pair = kernel(_ic_pair_py, fastmath=False)


class IcWindow:
    """State of the IC window statistic (arrays and slots: the module docstring) and its push."""

    __slots__ = ("ws", "wr", "xr", "yr", "ist", "fs", "_u")

    def __init__(self, window: int) -> None:
        w = int(window)
        if w < 3:
            raise ValueError(f"the IC window must hold at least 3 pairs; got window = {window}")
        self.ws, self.wr = np.zeros(w), np.zeros(w)
        self.xr, self.yr = np.zeros(w, dtype=np.int64), np.zeros(w, dtype=np.int64)
        self.ist = np.zeros(IC_INTS, dtype=np.int64)
        self.fs = np.zeros(IC_FLOATS)
        self.fs[F_EW_IC : F_NW_T + 1] = np.nan
        self._u = np.zeros(w + 3)  # scratch of the push kernel, not state

    def push(self, s: float, r: float, lam: float, lags: int) -> None:
        _ic_push(self.ws, self.wr, self.xr, self.yr, self.ist, self.fs, self._u, s, r, lam, lags)

    def push_matured(self, probs: np.ndarray, entry: float, exit_: float, lam: float, lags: int) -> bool:
        """Push a matured forecast's (signal, move) from its entry probabilities and prices (skipped, False, when
        either is not finite): :func:`_ic_pair`, one compiled call."""
        return _ic_pair(self.ws, self.wr, self.xr, self.yr, self.ist, self.fs, self._u, probs, entry, exit_, lam, lags)

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
    _pearson_nw(s, r, 0, len(s), int(lags), out, np.zeros(len(s)))
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
    _pearson_nw(ps, pr, 0, p, 0, out3, out3)  # no lags: the scratch is not touched
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


def _icir_pair_py(ps, pr, pics, ist, fs, out3, probs, entry, exit_):  # type: ignore[no-untyped-def]
    """One matured forecast into the period ICs: its signal and move as :func:`_ic_pair` computes them, pushed with
    :func:`_icir_push` when both are finite (the ICIR module's per-pair work in one compiled call)."""
    k = probs.shape[0]
    if k == 0 or not (entry > 0.0 and exit_ > 0.0):
        return
    t = 0.0
    for i in range(k):
        t += probs[i]
    s = t / k - 0.5
    r = math.log(exit_ / entry)
    if math.isfinite(s) and math.isfinite(r):
        _icir_push(ps, pr, pics, ist, fs, out3, s, r)


_icir_pair = kernel(_icir_pair_py, fastmath=False)


def _cs_pair_py(ws, wr, xr, yr, ist, fs, u, ps, pr, pics, qist, qfs, out3, probs, entry, exit_, lam, lags):  # type: ignore[no-untyped-def]
    """One matured forecast for both the IC window and the period ICs (CertaintyScore's per-pair work in one
    compiled call): :func:`_ic_pair`, then :func:`_icir_push` of the same pair when it was pushed."""
    if _ic_pair(ws, wr, xr, yr, ist, fs, u, probs, entry, exit_, lam, lags):
        c = ist[I_PAIRS] - 1
        _icir_push(ps, pr, pics, qist, qfs, out3, ws[c % ws.shape[0]], wr[c % ws.shape[0]])


_cs_pair = kernel(_cs_pair_py, fastmath=False)


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

    def push_matured(self, probs: np.ndarray, entry: float, exit_: float) -> None:
        """Push a matured forecast's (signal, move) from its entry probabilities and prices (skipped when either is
        not finite): :func:`_icir_pair`, one compiled call."""
        _icir_pair(self.ps, self.pr, self.pics, self.ist, self.fs, self._out, probs, entry, exit_)

    @property
    def n(self) -> int:
        """Period ICs in the ring."""
        return min(int(self.ist[I_PERIODS]), len(self.pics))


# -- HAC mean --------------------------------------------------------------------------------------------------------
def _hac_resum_py(vals, hp, ist, fs):  # type: ignore[no-untyped-def]
    """Recompute the HAC mean's running sums exactly from the ring, shifted by the window's mean (two-pass): K = x̄,
    S = Σ (x_k − K), P_l = Σ_{k≥l} (x_k − K)(x_{k−l} − K) for l = 0..len(hp) − 1, in time order."""
    w = vals.shape[0]
    c = ist[I_VALUES]
    n = min(c, w)
    start = (c - n) % w
    m = 0.0
    j = start
    for _ in range(n):
        m += vals[j]
        j += 1
        if j == w:
            j = 0
    m /= n
    fs[F_SHIFT] = m
    t = 0.0
    for k in range(n):
        t += vals[(start + k) % w] - m
    fs[F_SUM] = t
    for lag in range(hp.shape[0]):
        acc = 0.0
        for k in range(lag, n):
            acc += (vals[(start + k) % w] - m) * (vals[(start + k - lag) % w] - m)
        hp[lag] = acc
    ist[I_SINCE_EXACT] = 0


_hac_resum = kernel(_hac_resum_py, fastmath=False)


def _hac_mean_push_py(vals, hp, ist, fs, x):  # type: ignore[no-untyped-def]
    """Push ``x`` into the ring ``vals``; update the window's mean, its Newey–West se (Bartlett, L = len(hp) − 1
    lags) and t = mean / se in O(L) from running sums (the module docstring). Slots: the module docstring."""
    w = vals.shape[0]
    lags = hp.shape[0] - 1
    c = ist[I_VALUES]
    n = min(c, w)
    if c > 0 and x == vals[(c - 1) % w]:
        ist[I_STREAK] += 1
    else:
        ist[I_STREAK] = 1
    K = fs[F_SHIFT]
    if c >= w:  # evict the oldest value (time index 0, slot c % w): its products with time indices 0..L
        y0 = vals[c % w] - K
        fs[F_SUM] -= y0
        for lag in range(min(lags, n - 1) + 1):
            hp[lag] -= y0 * (vals[(c + lag) % w] - K)
        n -= 1
    vals[c % w] = x
    y = x - K
    fs[F_SUM] += y
    for lag in range(min(lags, n) + 1):  # the new value (time index n) times time indices n, n-1, .., n-L
        hp[lag] += y * (vals[(c - lag) % w] - K)
    c += 1
    ist[I_VALUES] = c
    n = min(c, w)
    ist[I_SINCE_EXACT] += 1
    ybar = fs[F_SUM] / n
    # re-sum exactly every w pushes (bounds the rounding drift of the running sums), when the shift K has drifted
    # from the mean enough that Σ(x − x̄)² = P_0 − n·ȳ² would lose more than one bit, and after a non-finite sum
    if ist[I_SINCE_EXACT] >= w or not (n * ybar * ybar <= 0.5 * hp[0]) or not math.isfinite(fs[F_SUM]):
        _hac_resum(vals, hp, ist, fs)
        ybar = fs[F_SUM] / n
    fs[F_MEAN] = fs[F_SHIFT] + ybar
    if ist[I_STREAK] >= n:  # a constant window: the se is 0 (rounding would make up a tiny one); the t is undefined
        fs[F_SE] = np.nan
        fs[F_T] = np.nan
        return
    # Σ_{k≥l} u_k u_{k−l}, u = y − ȳ: P_l − ȳ(A_l + B_l) + (n − l)ȳ², A_l = S − (first l y's), B_l = S − (last l)
    s = fs[F_SUM]
    big_s = hp[0] - 2.0 * ybar * s + n * ybar * ybar
    head = 0.0
    tail = 0.0
    start = (c - n) % w
    for lag in range(1, min(lags, n - 1) + 1):
        head += vals[(start + lag - 1) % w] - fs[F_SHIFT]
        tail += vals[(c - lag) % w] - fs[F_SHIFT]
        g = hp[lag] - ybar * (2.0 * s - head - tail) + (n - lag) * ybar * ybar
        big_s += 2.0 * (1.0 - lag / (lags + 1.0)) * g
    if n >= 2 and big_s > 0.0:
        se = math.sqrt(big_s) / n
        fs[F_SE] = se
        fs[F_T] = fs[F_MEAN] / se
    else:
        fs[F_SE] = np.nan
        fs[F_T] = np.nan


_hac_mean_push = kernel(_hac_mean_push_py, fastmath=False)


class HacMean:
    """State of the HAC-mean statistic (ring, running sums and slots: the module docstring) and its push, with
    ``lags`` L fixed at construction (the running sums keep one lagged product sum per lag)."""

    __slots__ = ("vals", "hp", "ist", "fs")

    def __init__(self, window: int, lags: int) -> None:
        if int(window) < 2:
            raise ValueError(f"the P&L window must hold at least 2 outcomes; got window = {window}")
        if int(lags) < 0:
            raise ValueError(f"the Newey-West lags must be >= 0; got {lags}")
        self.vals = np.zeros(int(window))
        self.hp = np.zeros(int(lags) + 1)
        self.ist = np.zeros(HAC_INTS, dtype=np.int64)
        self.fs = np.full(HAC_FLOATS, np.nan)
        self.fs[F_SHIFT] = 0.0
        self.fs[F_SUM] = 0.0

    def push(self, x: float) -> None:
        _hac_mean_push(self.vals, self.hp, self.ist, self.fs, x)

    @property
    def n(self) -> int:
        return min(int(self.ist[I_VALUES]), len(self.vals))


def warm_up() -> None:
    """Compile the kernels on throwaway state."""
    a = IcWindow(4)
    b = PeriodIc(3, 2)
    c = HacMean(3, 1)
    probs = np.array([0.4, 0.6, 0.55])
    for i, (x, y) in enumerate(((0.1, 0.2), (-0.1, 0.1), (0.2, -0.3), (0.0, 0.1), (0.3, 0.2), (-0.2, 0.0))):
        a.push(x, y, 0.9, 1)
        b.push(x, y)
        c.push(x + i)
        a.push_matured(probs, 1.0 + x, 1.0 + y, 0.9, 1)
        b.push_matured(probs, 1.0, 1.0 + y)
        _cs_pair(
            a.ws,
            a.wr,
            a.xr,
            a.yr,
            a.ist,
            a.fs,
            a._u,
            b.ps,
            b.pr,
            b.pics,
            b.ist,
            b.fs,
            b._out,
            probs,
            1.0,
            1.0 + y,
            0.9,
            1,
        )
