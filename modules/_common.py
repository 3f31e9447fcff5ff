"""Helpers shared by several modules: a sliding window kept sorted (O(window) memmove per push, O(1) quantile
reads), a window of outcome P&L with running tallies, the last-good-close log return, and the binary entropy.

State slots (module-level ints: numba freezes them into the compiled kernels, and plain Python reads them as fast
as literals):

Sorted window, int state ``ist`` (the value arrays ``ring``, arrival order, and ``srt``, sorted, have the window's
capacity w)::

    SW_PUSHES   values pushed so far; the next goes to ring[SW_PUSHES % w]
    SW_N        values in the window, min(SW_PUSHES, w); srt[:SW_N] is sorted

:class:`OutcomeWindow`, int state ``ist`` and float state ``fs`` (the P&L ring ``pnl`` has capacity w)::

    OW_PUSHES        ist  outcomes pushed so far
    OW_WINS          ist  outcomes in the window with P&L > 0
    OW_SINCE_EXACT   ist  pushes since the tallies were last recomputed exactly
    OW_WIN_SUM       fs   sum of the window's winning P&L
    OW_LOSS_SUM      fs   sum of the window's |losing P&L| (P&L <= 0)
"""

from __future__ import annotations

import math

import numpy as np

from fxgate.engine.core.jit import kernel

SW_PUSHES, SW_N = 0, 1
OW_PUSHES, OW_WINS, OW_SINCE_EXACT = 0, 1, 2
OW_WIN_SUM, OW_LOSS_SUM = 0, 1
#: running tallies are recomputed from the ring this often, to bound their rounding drift
EXACT_EVERY = 4096


def _sw_push_py(srt, ring, ist, x):  # type: ignore[no-untyped-def]
    """Push ``x`` into a sliding window of capacity len(ring): ``ring`` keeps arrival order, ``srt[:ist[SW_N]]`` the
    same values sorted. The outgoing value is removed from ``srt`` first."""
    w = ring.shape[0]
    c = ist[SW_PUSHES]
    n = ist[SW_N]
    if c >= w:
        old = ring[c % w]
        j = np.searchsorted(srt[:n], old)
        for k in range(j, n - 1):
            srt[k] = srt[k + 1]
        n -= 1
    ring[c % w] = x
    j = np.searchsorted(srt[:n], x)
    for k in range(n, j, -1):
        srt[k] = srt[k - 1]
    srt[j] = x
    ist[SW_PUSHES] = c + 1
    ist[SW_N] = n + 1


def _sw_quantile_py(srt, ist, q):  # type: ignore[no-untyped-def]
    """Linear-interpolation quantile (numpy's default) of the window's sorted values ``srt[:ist[SW_N]]``, which
    must not be empty."""
    n = ist[SW_N]
    pos = q * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    return srt[lo] + (srt[hi] - srt[lo]) * (pos - lo)


def _np_sum_py(a, lo, n, square):  # type: ignore[no-untyped-def]
    """``a[lo:lo + n].sum()`` (``(a[lo:lo + n] ** 2).sum()`` when ``square``) bit for bit as numpy computes it:
    its pairwise summation (blocks of 8 partial sums up to 128 values, halves rounded down to a multiple of 8 above;
    numpy's ``pairwise_sum`` in ``loops_utils.h.src``). A fused kernel's exact re-sum then equals the one its
    Python twin does with numpy (tests/modules/test_common.py compares it with ``np.sum``)."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            v = a[i]
            res += v * v if square else v
        return res
    if n <= 128:
        r = np.empty(8)
        for j in range(8):
            v = a[lo + j]
            r[j] = v * v if square else v
        i = 8
        m = n - n % 8
        while i < m:
            for j in range(8):
                v = a[lo + i + j]
                r[j] += v * v if square else v
            i += 8
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        while i < n:
            v = a[lo + i]
            res += v * v if square else v
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return np_sum(a, lo, n2, square) + np_sum(a, lo + n2, n - n2, square)


np_sum = kernel(_np_sum_py, fastmath=False)
sw_push = kernel(_sw_push_py, fastmath=False)
sw_quantile = kernel(_sw_quantile_py, fastmath=False)


def entropy(p: float) -> float:
    """Binary entropy in nats; 0 at p in {0, 1}."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


class OutcomeWindow:
    """The P&L of the last ``window`` outcomes with O(1) running tallies: count of wins, sum of wins, sum of |losses|
    (slots in the module docstring). A win is P&L > 0 (after the spread)."""

    __slots__ = ("pnl", "ist", "fs")

    def __init__(self, window: int) -> None:
        self.pnl = np.zeros(int(window))
        self.ist = np.zeros(3, dtype=np.int64)
        self.fs = np.zeros(2)

    def push(self, x: float) -> None:
        ist, fs = self.ist, self.fs
        w = len(self.pnl)
        c = int(ist[OW_PUSHES])
        if c >= w:
            old = float(self.pnl[c % w])
            if old > 0:
                ist[OW_WINS] -= 1
                fs[OW_WIN_SUM] -= old
            else:
                fs[OW_LOSS_SUM] += old
        self.pnl[c % w] = x
        if x > 0:
            ist[OW_WINS] += 1
            fs[OW_WIN_SUM] += x
        else:
            fs[OW_LOSS_SUM] -= x
        ist[OW_PUSHES] = c + 1
        ist[OW_SINCE_EXACT] += 1
        if ist[OW_SINCE_EXACT] >= EXACT_EVERY:
            v = self.values()
            ist[OW_WINS], ist[OW_SINCE_EXACT] = (v > 0).sum(), 0
            fs[OW_WIN_SUM], fs[OW_LOSS_SUM] = v[v > 0].sum(), -v[v <= 0].sum()

    def values(self) -> np.ndarray:
        return self.pnl[: self.n]

    @property
    def pushes(self) -> int:
        """Outcomes pushed so far (the window holds the last ``min(pushes, window)``)."""
        return int(self.ist[OW_PUSHES])

    @property
    def n(self) -> int:
        return min(int(self.ist[OW_PUSHES]), len(self.pnl))

    @property
    def wins(self) -> int:
        return int(self.ist[OW_WINS])

    def payoff(self) -> float:
        """Mean win / mean |loss|; NaN without wins or without (non-zero) losses."""
        nw, nl = self.wins, self.n - self.wins
        loss = self.fs[OW_LOSS_SUM]
        if nw == 0 or nl == 0 or loss <= 0:
            return math.nan
        return (self.fs[OW_WIN_SUM] / nw) / (loss / nl)


def next_log_return(fs: np.ndarray, slot: int, close: float) -> float:
    """log(close / last good close), keeping the last good close in ``fs[slot]``; NaN for a bad bar (which is
    skipped: the next good bar is compared with the last good close) and for the first good bar."""
    if not (math.isfinite(close) and close > 0):
        return math.nan
    prev = float(fs[slot])
    fs[slot] = close
    return math.log(close / prev) if math.isfinite(prev) else math.nan


class OutcomeWindowState:
    """Mixin for modules whose state is one :class:`OutcomeWindow` (``self.win``): exposes its arrays under the names
    listed in ``state_keys`` so the base class snapshots them."""

    win: OutcomeWindow
    state_keys = ("pnl", "ist", "fs")
    pnl = property(lambda self: self.win.pnl, lambda self, v: setattr(self.win, "pnl", v))
    ist = property(lambda self: self.win.ist, lambda self, v: setattr(self.win, "ist", v))
    fs = property(lambda self: self.win.fs, lambda self, v: setattr(self.win, "fs", v))
