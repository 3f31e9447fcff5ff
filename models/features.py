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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fxgate.engine.core.bars import Bar, Bars, timeframe_seconds
from fxgate.engine.core.jit import kernel

__all__ = ["FeatureEngine", "MadWinsorizer", "feature_names", "FEATURE_ENGINE_VERSION", "WINDOWS"]

#: Bumped whenever a feature's definition or order changes; bundles record it and refuse a mismatch.
FEATURE_ENGINE_VERSION = "1"
WINDOWS = (5, 10, 20, 30, 60)
KBAR = ("KMID", "KLEN", "KMID2", "KUP", "KUP2", "KLOW", "KLOW2", "KSFT", "KSFT2")
PRICE = ("OPEN0", "HIGH0", "LOW0")
ROLLING = (
    "ROC",
    "MA",
    "STD",
    "BETA",
    "RSQR",
    "RESI",
    "MAX",
    "MIN",
    "QTLU",
    "QTLD",
    "RANK",
    "RSV",
    "IMAX",
    "IMIN",
    "IMXD",
    "CORR",
    "CORD",
    "CNTP",
    "CNTN",
    "CNTD",
    "SUMP",
    "SUMN",
    "SUMD",
    "VMA",
    "VSTD",
    "WVMA",
    "VSUMP",
    "VSUMN",
    "VSUMD",
)
VOL = ("RV_D", "RV_W", "RV_M", "BV_D", "BNS_Z", "LM")
TIME = ("TOD_SIN", "TOD_COS", "DOW", "SESS_ASIA", "SESS_LONDON", "SESS_NY", "SPREAD_REL")
HIST = 64  # ring capacity for Alpha158 (max window 60 + Ref(., 1))
_EPS = 1e-12
_MU43 = 2 ** (2 / 3) * math.gamma(7 / 6) / math.gamma(1 / 2)  # E|Z|^{4/3} for standard normal Z
_BNS_THETA = (math.pi / 2) ** 2 + math.pi - 5


def feature_names() -> list[str]:
    """Feature names in output order (Qlib's order: family, then window)."""
    names = list(KBAR) + list(PRICE)
    names += [f"{f}{w}" for f in ROLLING for w in WINDOWS]
    return names + list(VOL) + list(TIME)


N_ALPHA = len(KBAR) + len(PRICE) + len(ROLLING) * len(WINDOWS)
N_FEATURES = N_ALPHA + len(VOL) + len(TIME)


# ------------------------------------------------------------------------------------------------------------------
# Kernels. Every *_py function is the readable twin; the compiled one has the same name without _py.
# ------------------------------------------------------------------------------------------------------------------
def _window_stats_py(o, h, lo, c, v, m, d, out, k):  # type: ignore[no-untyped-def]
    """Alpha158 rolling features for window ``d`` from chronological arrays of the last ``m`` bars
    (``c[m-1]`` is the current bar). Writes 29 values into out[k], out[k+5], ... (family-major order)."""
    nan = np.nan
    W = len(WINDOWS_ARR)
    cur = c[m - 1]
    full = m >= d  # window of d bars
    full1 = m >= d + 1  # window of d one-bar changes needs d + 1 bars
    if not full:
        for j in range(29):
            out[k + j * W] = nan
        return
    s = m - d
    # ROC = Ref($close, d)/$close: the close d bars before the current one
    roc = c[m - 1 - d] / cur if full1 else nan
    mean, ss = _mean_ss(c, s, m)
    std = math.sqrt(ss / (d - 1)) if d > 1 else nan
    # OLS of c on x = 1..d
    xm = (d + 1) / 2.0
    sxx = 0.0
    sxy = 0.0
    for i in range(d):
        dx = (i + 1) - xm
        sxx += dx * dx
        sxy += dx * (c[s + i] - mean)
    slope = sxy / sxx
    intercept = mean - slope * xm
    rsq = (sxy * sxy) / (sxx * ss) if ss > 0 else nan
    resi = cur - (intercept + slope * d)
    # MAX, MIN, IMAX, IMIN
    hmax = h[s]
    imax = 0
    lmin = lo[s]
    imin = 0
    for i in range(1, d):
        if h[s + i] > hmax:
            hmax = h[s + i]
            imax = i
        if lo[s + i] < lmin:
            lmin = lo[s + i]
            imin = i
    # QTLU, QTLD (linear interpolation), RANK (percentile of the last value, ties averaged)
    buf = np.sort(c[s:m])
    qu = _quantile_sorted(buf, 0.8)
    qd = _quantile_sorted(buf, 0.2)
    less = 0
    equal = 0
    for i in range(s, m):
        if c[i] < cur:
            less += 1
        elif c[i] == cur:
            equal += 1
    rank = (less + 0.5 * (equal + 1)) / d if equal > 0 else (less + 1.0) / d
    # CORR(close, log(volume + 1))
    corr = _corr(c[s:m], np.log(v[s:m] + 1.0))
    vmean, vss = _mean_ss(v, s, m)
    vstd = math.sqrt(vss / (d - 1)) if d > 1 else nan
    vcur = v[m - 1]
    # one-bar change families need d + 1 bars
    if full1:
        r = np.empty(d)
        lv = np.empty(d)
        wv = np.empty(d)
        up = 0.0
        dn = 0.0
        ab = 0.0
        vup = 0.0
        vdn = 0.0
        vab = 0.0
        cntp = 0.0
        cntn = 0.0
        for i in range(d):
            j = s + i
            prev = c[j - 1]
            r[i] = c[j] / prev
            lv[i] = math.log(v[j] / v[j - 1] + 1.0) if v[j - 1] != 0 else (np.inf if v[j] > 0 else nan)
            wv[i] = abs(c[j] / prev - 1.0) * v[j]
            diff = c[j] - prev
            if diff > 0:
                up += diff
                cntp += 1
            elif diff < 0:
                dn -= diff
                cntn += 1
            ab += abs(diff)
            vd = v[j] - v[j - 1]
            if vd > 0:
                vup += vd
            elif vd < 0:
                vdn -= vd
            vab += abs(vd)
        cord = _corr(r, lv)
        wmean, wss = _mean_ss(wv, 0, d)
        wstd = math.sqrt(wss / (d - 1)) if d > 1 else nan
        cntp /= d
        cntn /= d
        sump = up / (ab + 1e-12)
        sumn = dn / (ab + 1e-12)
        sumd = (up - dn) / (ab + 1e-12)
        vsump = vup / (vab + 1e-12)
        vsumn = vdn / (vab + 1e-12)
        vsumd = (vup - vdn) / (vab + 1e-12)
        wvma = wstd / (wmean + 1e-12)
        cntd = cntp - cntn
    else:
        cord = cntp = cntn = cntd = sump = sumn = sumd = wvma = vsump = vsumn = vsumd = nan
    vals = (
        roc,
        mean / cur,
        std / cur,
        slope / cur,
        rsq,
        resi / cur,
        hmax / cur,
        lmin / cur,
        qu / cur,
        qd / cur,
        rank,
        (cur - lmin) / (hmax - lmin + 1e-12),
        (imax + 1.0) / d,
        (imin + 1.0) / d,
        (imax - imin) / d,
        corr,
        cord,
        cntp,
        cntn,
        cntd,
        sump,
        sumn,
        sumd,
        vmean / (vcur + 1e-12),
        vstd / (vcur + 1e-12),
        wvma,
        vsump,
        vsumn,
        vsumd,
    )
    for j in range(29):
        out[k + j * W] = vals[j]


def _mean_ss_py(a, s, m):  # type: ignore[no-untyped-def]
    """Mean and sum of squared deviations of a[s:m] (two passes, as pandas' rolling var is exact to ~1e-15)."""
    mean = 0.0
    for i in range(s, m):
        mean += a[i]
    mean /= m - s
    ss = 0.0
    for i in range(s, m):
        ss += (a[i] - mean) ** 2
    return mean, ss


def _quantile_sorted_py(a, q):  # type: ignore[no-untyped-def]
    """Linear-interpolation quantile (numpy's default, pandas' rolling quantile) of a sorted array."""
    pos = q * (len(a) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(a) - 1)
    return a[lo] + (a[hi] - a[lo]) * (pos - lo)


def _corr_py(x, y):  # type: ignore[no-untyped-def]
    """Pearson correlation; NaN when either side is constant or non-finite (as pandas returns)."""
    n = len(x)
    mx = 0.0
    my = 0.0
    for i in range(n):
        mx += x[i]
        my += y[i]
    mx /= n
    my /= n
    sxy = 0.0
    sxx = 0.0
    syy = 0.0
    for i in range(n):
        dx = x[i] - mx
        dy = y[i] - my
        sxy += dx * dy
        sxx += dx * dx
        syy += dy * dy
    if not (sxx > 0 and syy > 0) or not np.isfinite(sxy):
        return np.nan
    return sxy / math.sqrt(sxx * syy)


_mean_ss = kernel(_mean_ss_py)
_quantile_sorted = kernel(_quantile_sorted_py)
_corr = kernel(_corr_py)
WINDOWS_ARR = np.array(WINDOWS, dtype=np.int64)
_window_stats = kernel(_window_stats_py)


def _update_py(ring, rv_ring, ist, fst, ts, o, h, lo, c, v, spread, bpd, lm_k, out):  # type: ignore[no-untyped-def]
    """Push one bar and write all features of that bar into ``out``.

    ``ring`` (5 x HIST) holds o, h, l, c, v; ``rv_ring`` (3 x RCAP) holds r^2, |r_t r_{t-1}| and
    |r_t r_{t-1} r_{t-2}|^{4/3}; ``ist``/``fst`` are the integer and float scalars of the state (see FeatureEngine).
    ``bpd`` is bars per day (B), ``lm_k`` the Lee-Mykland window K.
    """
    nan = np.nan
    cap = ring.shape[1]
    count = ist[0]
    pos = count % cap
    ring[0, pos] = o
    ring[1, pos] = h
    ring[2, pos] = lo
    ring[3, pos] = c
    ring[4, pos] = v
    count += 1
    ist[0] = count
    m = count if count < 61 else 61
    oo = np.empty(m)
    hh = np.empty(m)
    ll = np.empty(m)
    cc = np.empty(m)
    vv = np.empty(m)
    for i in range(m):
        j = (count - m + i) % cap
        oo[i] = ring[0, j]
        hh[i] = ring[1, j]
        ll[i] = ring[2, j]
        cc[i] = ring[3, j]
        vv[i] = ring[4, j]
    # KBAR and PRICE
    rng_ = h - lo + 1e-12
    top = o if o > c else c
    bot = o if o < c else c
    out[0] = (c - o) / o
    out[1] = (h - lo) / o
    out[2] = (c - o) / rng_
    out[3] = (h - top) / o
    out[4] = (h - top) / rng_
    out[5] = (bot - lo) / o
    out[6] = (bot - lo) / rng_
    out[7] = (2 * c - h - lo) / o
    out[8] = (2 * c - h - lo) / rng_
    out[9] = o / c
    out[10] = h / c
    out[11] = lo / c
    for w in range(len(WINDOWS_ARR)):
        _window_stats(oo, hh, ll, cc, vv, m, WINDOWS_ARR[w], out, 12 + w)
    # realized volatility family
    k = N_ALPHA_ARR[0]
    rcap = rv_ring.shape[1]
    for j in range(6):
        out[k + j] = nan
    if count >= 2:
        r = math.log(c / fst[0])
        ar = abs(r)
        # squared returns over B, 5B, 22B
        n = ist[1]
        x = r * r
        out_idx = n % rcap
        for wi in range(3):
            win = bpd * (1 if wi == 0 else (5 if wi == 1 else 22))
            if n >= win:
                fst[3 + wi] -= rv_ring[0, (n - win) % rcap]
            fst[3 + wi] += x
        rv_ring[0, out_idx] = x
        n += 1
        ist[1] = n
        if count >= 3:
            # Lee-Mykland uses the K-2 bipower products *before* this bar
            nb = ist[2]
            if nb >= lm_k - 2 and fst[8] > 0:
                out[k + 5] = r / math.sqrt(fst[8] / (lm_k - 2))
            y = ar * fst[1]
            if nb >= bpd:
                fst[6] -= rv_ring[1, (nb - bpd) % rcap]
            if nb >= lm_k - 2:
                fst[8] -= rv_ring[1, (nb - (lm_k - 2)) % rcap]
            fst[6] += y
            fst[8] += y
            rv_ring[1, nb % rcap] = y
            nb += 1
            ist[2] = nb
            if count >= 4:
                nt = ist[3]
                z = (ar * fst[1] * fst[2]) ** (4.0 / 3.0)
                if nt >= bpd:
                    fst[7] -= rv_ring[2, (nt - bpd) % rcap]
                fst[7] += z
                rv_ring[2, nt % rcap] = z
                ist[3] = nt + 1
        fst[2] = fst[1]
        fst[1] = ar
        # bound floating drift of the running sums: recompute them exactly every 1024 returns
        ist[4] += 1
        if ist[4] >= 1024:
            ist[4] = 0
            _recompute_sums(rv_ring, ist, fst, bpd, lm_k)
        if n >= bpd:
            out[k + 0] = fst[3]
        if n >= 5 * bpd:
            out[k + 1] = fst[4] / 5.0
        if n >= 22 * bpd:
            out[k + 2] = fst[5] / 22.0
        if ist[2] >= bpd:
            bv = (math.pi / 2.0) * fst[6]
            out[k + 3] = bv
            if ist[3] >= bpd and n >= bpd and fst[3] > 0 and bv > 0:
                tq = bpd * fst[7] / _MU43**3
                rv = fst[3]
                out[k + 4] = ((rv - bv) / rv) / math.sqrt(_BNS_THETA / bpd * max(1.0, tq / (bv * bv)))
    fst[0] = c
    # time of day, UTC day of week, sessions (UTC hours), relative spread
    k = N_ALPHA_ARR[0] + 6
    sec = (ts // 1_000_000_000) % 86400
    ang = 2.0 * math.pi * sec / 86400.0
    out[k + 0] = math.sin(ang)
    out[k + 1] = math.cos(ang)
    out[k + 2] = float(((ts // 86_400_000_000_000) + 3) % 7)  # Monday = 0
    hour = sec // 3600
    out[k + 3] = 1.0 if (hour >= 23 or hour < 8) else 0.0
    out[k + 4] = 1.0 if (7 <= hour < 16) else 0.0
    out[k + 5] = 1.0 if (12 <= hour < 21) else 0.0
    out[k + 6] = spread / c


def _recompute_sums_py(rv_ring, ist, fst, bpd, lm_k):  # type: ignore[no-untyped-def]
    rcap = rv_ring.shape[1]
    n = ist[1]
    for wi in range(3):
        win = bpd * (1 if wi == 0 else (5 if wi == 1 else 22))
        t = 0.0
        for i in range(max(0, n - win), n):
            t += rv_ring[0, i % rcap]
        fst[3 + wi] = t
    nb = ist[2]
    t = 0.0
    for i in range(max(0, nb - bpd), nb):
        t += rv_ring[1, i % rcap]
    fst[6] = t
    t = 0.0
    for i in range(max(0, nb - (lm_k - 2)), nb):
        t += rv_ring[1, i % rcap]
    fst[8] = t
    nt = ist[3]
    t = 0.0
    for i in range(max(0, nt - bpd), nt):
        t += rv_ring[2, i % rcap]
    fst[7] = t


def _batch_py(ring, rv_ring, ist, fst, ts, o, h, lo, c, v, spread, bpd, lm_k, out):  # type: ignore[no-untyped-def]
    """The per-bar kernel run across history: row i of ``out`` is exactly what ``update`` returns for bar i."""
    for i in range(len(c)):
        _update(ring, rv_ring, ist, fst, ts[i], o[i], h[i], lo[i], c[i], v[i], spread[i], bpd, lm_k, out[i])


N_ALPHA_ARR = np.array([N_ALPHA], dtype=np.int64)
_recompute_sums = kernel(_recompute_sums_py)
_update = kernel(_update_py)
_batch = kernel(_batch_py)


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
        return int(self.ist[0])

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
        _update(
            self.ring, self.rv_ring, self.ist, self.fst, np.int64(bar.ts), o, h, lo, c, v, sp, self.bpd, self.lm_k, out
        )
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
        import warnings

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
