"""Streaming drift detectors in numba: ADWIN (Bifet & Gavaldà 2007) and the Page–Hinkley test (Page 1954).

Both follow ``river.drift.ADWIN`` / ``river.drift.PageHinkley`` (river 0.26) operation for operation, so that the
same input stream gives the same detection points (``tests/modules/test_double_adapt.py`` checks this exactly).
That includes river's convention that a detector which flagged a drift on one update *restarts from empty* at the
start of the next update.

ADWIN — A. Bifet, R. Gavaldà, "Learning from time-changing data with adaptive windowing", SIAM SDM 2007 (ADWIN2:
the window is compressed into an exponential histogram, row i holding up to M + 1 buckets of 2^i points each, M =
``max_buckets``). Every ``clock`` updates, once the window holds more than ``grace_period`` points, every cut of
the window into an older part W0 (n0 points) and a newer part W1 (n1 points) at a bucket boundary, both at least
``min_window_length`` long, is tested with river's bound::

    δ' = ln(2 ln(n) / δ),  m⁻¹ = 1/(n0 − ℓ + 1) + 1/(n1 − ℓ + 1)
    ε_cut = sqrt(2 m⁻¹ σ²_W δ') + (2/3) δ' m⁻¹          (σ²_W: the window's variance, ℓ: min_window_length)

and |μ̂_W0 − μ̂_W1| > ε_cut drops the oldest bucket and flags a drift (the scan repeats until no cut is found).
The bound is Bernstein-type for values in [0, 1] (ibid., Theorem 3); feed it a bounded loss.

Page–Hinkley — E. S. Page, "Continuous inspection schemes", Biometrika 41 (1954) 100–115; river's fading form:
with x̄_t the running mean since the last reset, α the fading factor and δ the tolerated drift::

    U_t = α U_{t-1} + (x_t − x̄_t) − δ,   L_t = α L_{t-1} + (x_t − x̄_t) + δ
    drift (t ≥ min_instances):  U_t − min_s U_s > λ  ("up"),  max_s L_s − L_t > λ  ("down"), either ("both")

State (slot names are module-level ints):

ADWIN, rows of the exponential histogram (capacity ``ADW_ROWS`` rows, M + 1 buckets each)::

    tot[i, j], var[i, j]   sum and within-bucket sum of squared deviations of bucket j of row i (2^i points;
                           j = 0 is the row's oldest)
    cnt[i]                 buckets in row i
    aist ADW_ROWS_USED     rows in use
         ADW_TICK          updates since the last reset (the clock)
         ADW_DRIFT         1 when the last update flagged a drift (the next update resets first)
         ADW_N_BUCKETS     buckets in the histogram
    afs  ADW_WIDTH         n, points in the window
         ADW_TOTAL         their sum
         ADW_VARIANCE      their sum of squared deviations (σ²_W = ADW_VARIANCE / n)

Page–Hinkley::

    pist PH_DRIFT          1 when the last update flagged a drift (the next update resets first)
    pfs  PH_N              observations since the last reset (a float, as river counts)
         PH_MEAN           x̄_t
         PH_SUM_INC        U_t
         PH_SUM_DEC        L_t
         PH_MIN_INC        min_s U_s (starts at +inf)
         PH_MAX_DEC        max_s L_s (starts at -1, as river's)
"""

from __future__ import annotations

import math

import numpy as np

from fxgate.engine.core.jit import kernel

__all__ = [
    "ADW_CAPACITY",
    "Adwin",
    "PageHinkley",
    "adwin_update",
    "ph_update",
    "PH_MODES",
]

ADW_ROWS_USED, ADW_TICK, ADW_DRIFT, ADW_N_BUCKETS = range(4)
ADW_WIDTH, ADW_TOTAL, ADW_VARIANCE = range(3)
PH_DRIFT = 0
PH_N, PH_MEAN, PH_SUM_INC, PH_SUM_DEC, PH_MIN_INC, PH_MAX_DEC = range(6)
#: rows of the exponential histogram: row i holds buckets of 2^i points, so 48 rows cover > 10^14 points
ADW_CAPACITY = 48
#: Page–Hinkley's ``mode`` as the int the kernel takes
PH_MODES = {"both": 0, "up": 1, "down": 2}


# -- ADWIN ----------------------------------------------------------------------------------------------------------
def _adwin_reset_py(tot, var, cnt, aist, afs):  # type: ignore[no-untyped-def]
    tot[:, :] = 0.0
    var[:, :] = 0.0
    cnt[:] = 0
    aist[ADW_ROWS_USED] = 1
    aist[ADW_TICK] = 0
    aist[ADW_DRIFT] = 0
    aist[ADW_N_BUCKETS] = 0
    afs[ADW_WIDTH] = 0.0
    afs[ADW_TOTAL] = 0.0
    afs[ADW_VARIANCE] = 0.0


def _row_drop_py(tot, var, cnt, i, k):  # type: ignore[no-untyped-def]
    """Drop the k oldest buckets of row i (shift the rest to the front, zero the freed slots)."""
    c = cnt[i]
    for j in range(c - k):
        tot[i, j] = tot[i, j + k]
        var[i, j] = var[i, j + k]
    for j in range(max(c - k, 0), c):
        tot[i, j] = 0.0
        var[i, j] = 0.0
    cnt[i] = c - k


_adwin_reset = kernel(_adwin_reset_py, fastmath=False)
_row_drop = kernel(_row_drop_py, fastmath=False)


def _adwin_cut_py(width, variance, n0, n1, delta_mean, delta, mwl):  # type: ignore[no-untyped-def]
    """river's ε_cut test (the module docstring): True when the two sub-windows' means differ significantly."""
    delta_prime = math.log(2.0 * math.log(width) / delta)
    m_recip = 1.0 / (n0 - mwl + 1.0) + 1.0 / (n1 - mwl + 1.0)
    epsilon = math.sqrt(2.0 * m_recip * (variance / width) * delta_prime) + 2.0 / 3.0 * delta_prime * m_recip
    return abs(delta_mean) > epsilon


_adwin_cut = kernel(_adwin_cut_py, fastmath=False)


def _adwin_update_py(tot, var, cnt, aist, afs, x, delta, clock, max_buckets, mwl, grace):  # type: ignore[no-untyped-def]
    """One ADWIN update with value ``x``; returns True when it flags a drift. ``max_buckets`` is M (row capacity
    M + 1 = tot.shape[1]); ``mwl``, ``grace`` are min_window_length and grace_period as floats. The arithmetic order
    is river's (floating point included)."""
    if aist[ADW_DRIFT] != 0:  # river: a detector that flagged a drift restarts on the next update
        _adwin_reset(tot, var, cnt, aist, afs)
    # insert x as a bucket of one point, with the streaming variance update
    tot[0, cnt[0]] = x
    var[0, cnt[0]] = 0.0
    cnt[0] += 1
    aist[ADW_N_BUCKETS] += 1
    afs[ADW_WIDTH] += 1.0
    width = afs[ADW_WIDTH]
    inc = 0.0
    if width > 1.0:
        dv = x - afs[ADW_TOTAL] / (width - 1.0)
        inc = (width - 1.0) * dv * dv / width
    afs[ADW_VARIANCE] += inc
    afs[ADW_TOTAL] += x
    # compress: a full row merges its two oldest buckets into one bucket of the next row
    i = 0
    while cnt[i] == max_buckets + 1:
        n1 = float(1 << i)
        t0 = tot[i, 0]
        t1 = tot[i, 1]
        mu1 = t0 / n1
        mu2 = t1 / n1
        temp = n1 * 0.5 * (mu1 - mu2) * (mu1 - mu2)
        v12 = var[i, 0] + var[i, 1] + temp
        if i + 1 >= aist[ADW_ROWS_USED]:
            aist[ADW_ROWS_USED] = i + 2
            cnt[i + 1] = 0
        tot[i + 1, cnt[i + 1]] = t0 + t1
        var[i + 1, cnt[i + 1]] = v12
        cnt[i + 1] += 1
        aist[ADW_N_BUCKETS] += 1
        _row_drop(tot, var, cnt, i, 2)
        if cnt[i + 1] <= max_buckets:
            break
        i += 1
    # detect
    change = False
    aist[ADW_TICK] += 1
    if aist[ADW_TICK] % clock == 0 and afs[ADW_WIDTH] > grace:
        reduce_width = True
        while reduce_width:
            reduce_width = False
            exit_flag = False
            n0 = 0.0
            n1 = afs[ADW_WIDTH]
            u0 = 0.0
            u1 = afs[ADW_TOTAL]
            rows = aist[ADW_ROWS_USED]
            for r in range(rows - 1, -1, -1):
                if exit_flag:
                    break
                size = float(1 << r)
                c = cnt[r]
                cut = False
                for k in range(c):
                    n0 += size
                    n1 -= size
                    t = tot[r, k]
                    u0 += t
                    u1 -= t
                    if r == 0 and k == c - 1:
                        exit_flag = True
                        break
                    dm = (u0 / n0) - (u1 / n1)
                    if (
                        n1 >= mwl
                        and n0 >= mwl
                        and _adwin_cut(afs[ADW_WIDTH], afs[ADW_VARIANCE], n0, n1, dm, delta, mwl)
                    ):
                        reduce_width = True
                        change = True
                        if afs[ADW_WIDTH] > 0.0:
                            _adwin_drop_oldest(tot, var, cnt, aist, afs)
                            cut = True
                            break
                if cut:
                    break
    aist[ADW_DRIFT] = 1 if change else 0
    return change


def _adwin_drop_oldest_py(tot, var, cnt, aist, afs):  # type: ignore[no-untyped-def]
    """Remove the oldest bucket (row ``rows - 1``, slot 0) from the window and its statistics."""
    last = aist[ADW_ROWS_USED] - 1
    n = float(1 << last)
    u = tot[last, 0]
    v = var[last, 0]
    mu = u / n
    afs[ADW_WIDTH] -= n
    afs[ADW_TOTAL] -= u
    width = afs[ADW_WIDTH]
    mu_window = afs[ADW_TOTAL] / width
    afs[ADW_VARIANCE] -= v + n * width * (mu - mu_window) * (mu - mu_window) / (n + width)
    _row_drop(tot, var, cnt, last, 1)
    aist[ADW_N_BUCKETS] -= 1
    if cnt[last] == 0:
        aist[ADW_ROWS_USED] = last


_adwin_drop_oldest = kernel(_adwin_drop_oldest_py, fastmath=False)
adwin_update = kernel(_adwin_update_py, fastmath=False)


# -- Page–Hinkley ---------------------------------------------------------------------------------------------------
def _ph_reset_py(pist, pfs):  # type: ignore[no-untyped-def]
    pist[PH_DRIFT] = 0
    pfs[PH_N] = 0.0
    pfs[PH_MEAN] = 0.0
    pfs[PH_SUM_INC] = 0.0
    pfs[PH_SUM_DEC] = 0.0
    pfs[PH_MIN_INC] = np.inf
    pfs[PH_MAX_DEC] = -1.0


_ph_reset = kernel(_ph_reset_py, fastmath=False)


def _ph_update_py(pist, pfs, x, min_instances, delta, threshold, alpha, mode):  # type: ignore[no-untyped-def]
    """One Page–Hinkley update with value ``x``; returns True when it flags a drift. ``mode``: PH_MODES. The
    arithmetic order is river's (its running mean: n += 1; mean += (1/n)(x − mean))."""
    if pist[PH_DRIFT] != 0:
        _ph_reset(pist, pfs)
    pfs[PH_N] += 1.0
    pfs[PH_MEAN] += (1.0 / pfs[PH_N]) * (x - pfs[PH_MEAN])
    dev = x - pfs[PH_MEAN]
    pfs[PH_SUM_INC] = alpha * pfs[PH_SUM_INC] + dev - delta
    pfs[PH_SUM_DEC] = alpha * pfs[PH_SUM_DEC] + dev + delta
    if pfs[PH_SUM_INC] < pfs[PH_MIN_INC]:
        pfs[PH_MIN_INC] = pfs[PH_SUM_INC]
    if pfs[PH_SUM_DEC] > pfs[PH_MAX_DEC]:
        pfs[PH_MAX_DEC] = pfs[PH_SUM_DEC]
    drift = False
    if pfs[PH_N] >= min_instances:
        up = pfs[PH_SUM_INC] - pfs[PH_MIN_INC] > threshold
        down = pfs[PH_MAX_DEC] - pfs[PH_SUM_DEC] > threshold
        drift = (up or down) if mode == 0 else (up if mode == 1 else down)
    pist[PH_DRIFT] = 1 if drift else 0
    return drift


ph_update = kernel(_ph_update_py, fastmath=False)


# -- thin stateful wrappers (tests, benchmarks, and anyone who wants a detector outside the gate) --------------------
class Adwin:
    """ADWIN with river's parameters and defaults; ``update(x)`` returns whether x completed a drift detection."""

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
        python: bool = False,
    ) -> None:
        self.delta, self.clock, self.max_buckets = float(delta), int(clock), int(max_buckets)
        self.mwl, self.grace = float(min_window_length), float(grace_period)
        self.tot = np.zeros((ADW_CAPACITY, self.max_buckets + 1))
        self.var = np.zeros_like(self.tot)
        self.cnt = np.zeros(ADW_CAPACITY, dtype=np.int64)
        self.aist = np.zeros(4, dtype=np.int64)
        self.afs = np.zeros(3)
        _adwin_reset(self.tot, self.var, self.cnt, self.aist, self.afs)
        self._step = _adwin_update_py if python else adwin_update

    def update(self, x: float) -> bool:
        return bool(
            self._step(
                self.tot,
                self.var,
                self.cnt,
                self.aist,
                self.afs,
                float(x),
                self.delta,
                self.clock,
                self.max_buckets,
                self.mwl,
                self.grace,
            )
        )

    @property
    def width(self) -> int:
        return int(self.afs[ADW_WIDTH])

    @property
    def estimation(self) -> float:
        w = self.afs[ADW_WIDTH]
        return float(self.afs[ADW_TOTAL] / w) if w > 0 else 0.0


class PageHinkley:
    """Page–Hinkley with river's parameters and defaults; ``update(x)`` returns whether x flagged a drift."""

    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        mode: str = "both",
        python: bool = False,
    ) -> None:
        if mode not in PH_MODES:
            raise ValueError(f"Page-Hinkley mode {mode!r} is not allowed; use one of {sorted(PH_MODES)}")
        self.min_instances, self.delta, self.threshold = float(min_instances), float(delta), float(threshold)
        self.alpha, self.mode = float(alpha), PH_MODES[mode]
        self.pist = np.zeros(1, dtype=np.int64)
        self.pfs = np.zeros(6)
        _ph_reset(self.pist, self.pfs)
        self._step = _ph_update_py if python else ph_update

    def update(self, x: float) -> bool:
        return bool(
            self._step(
                self.pist, self.pfs, float(x), self.min_instances, self.delta, self.threshold, self.alpha, self.mode
            )
        )
