"""Helpers shared by several modules: a sliding window kept sorted (O(window) memmove per push, O(1) quantile
reads) and the binary entropy."""

from __future__ import annotations

import math

import numpy as np

from fxgate.engine.core.jit import kernel


def _sw_push_py(srt, ring, ist, x):  # type: ignore[no-untyped-def]
    """Push ``x`` into a sliding window of capacity len(ring): ``ring`` keeps arrival order, ``srt[:ist[1]]`` the same
    values sorted; ``ist[0]`` counts pushes. The outgoing value is removed from ``srt`` first."""
    w = ring.shape[0]
    c = ist[0]
    n = ist[1]
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
    ist[0] = c + 1
    ist[1] = n + 1


def _sw_quantile_py(srt, n, q):  # type: ignore[no-untyped-def]
    """Linear-interpolation quantile (numpy's default) of the sorted ``srt[:n]``."""
    pos = q * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    return srt[lo] + (srt[hi] - srt[lo]) * (pos - lo)


sw_push = kernel(_sw_push_py, fastmath=False)
sw_quantile = kernel(_sw_quantile_py, fastmath=False)


def entropy(p: float) -> float:
    """Binary entropy in nats; 0 at p in {0, 1}."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


class OutcomeWindow:
    """The P&L of the last ``window`` outcomes with O(1) running tallies: count of wins, sum of wins, sum of |losses|.
    A win is P&L > 0 (after the spread). Tallies are recomputed exactly every 4,096 pushes to bound rounding drift."""

    __slots__ = ("pnl", "ist", "fs")

    def __init__(self, window: int) -> None:
        self.pnl = np.zeros(int(window))
        self.ist = np.zeros(3, dtype=np.int64)  # pushes, wins in window, pushes since exact recompute
        self.fs = np.zeros(2)  # sum of wins, sum of |losses|

    def push(self, x: float) -> None:
        w = len(self.pnl)
        c = int(self.ist[0])
        if c >= w:
            old = float(self.pnl[c % w])
            if old > 0:
                self.ist[1] -= 1
                self.fs[0] -= old
            else:
                self.fs[1] += old
        self.pnl[c % w] = x
        if x > 0:
            self.ist[1] += 1
            self.fs[0] += x
        else:
            self.fs[1] -= x
        self.ist[0] = c + 1
        self.ist[2] += 1
        if self.ist[2] >= 4096:
            v = self.values()
            self.ist[1], self.fs[0], self.fs[1], self.ist[2] = (v > 0).sum(), v[v > 0].sum(), -v[v <= 0].sum(), 0

    def values(self) -> np.ndarray:
        return self.pnl[: min(int(self.ist[0]), len(self.pnl))]

    @property
    def n(self) -> int:
        return min(int(self.ist[0]), len(self.pnl))

    @property
    def wins(self) -> int:
        return int(self.ist[1])

    def payoff(self) -> float:
        """Mean win / mean |loss|; NaN without wins or without (non-zero) losses."""
        nw, nl = self.wins, self.n - self.wins
        if nw == 0 or nl == 0 or self.fs[1] <= 0:
            return math.nan
        return (self.fs[0] / nw) / (self.fs[1] / nl)


def next_log_return(fs: np.ndarray, i: int, close: float) -> float:
    """log(close / last good close), keeping the last good close in ``fs[i]``; NaN for a bad bar (which is skipped:
    the next good bar is compared with the last good close) and for the first good bar."""
    if not (math.isfinite(close) and close > 0):
        return math.nan
    prev = float(fs[i])
    fs[i] = close
    return math.log(close / prev) if math.isfinite(prev) else math.nan


class OutcomeWindowState:
    """Mixin for modules whose state is one :class:`OutcomeWindow` (``self.win``): exposes its arrays under the names
    listed in ``state_keys`` so the base class snapshots them."""

    win: OutcomeWindow
    state_keys = ("pnl", "ist", "fs")
    pnl = property(lambda self: self.win.pnl, lambda self, v: setattr(self.win, "pnl", v))
    ist = property(lambda self: self.win.ist, lambda self, v: setattr(self.win, "ist", v))
    fs = property(lambda self: self.win.fs, lambda self, v: setattr(self.win, "fs", v))
