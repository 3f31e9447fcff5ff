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
import sys

import numpy as np

from fxgate.engine.core.jit import kernel
from fxgate.modules._fusion import O_DIRECTION, O_ENTRY, O_EXIT, O_SPREAD

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


def _pairwise_block_py(a, lo, n, square):  # type: ignore[no-untyped-def]
    """numpy's pairwise sum of ``a[lo:lo + n]`` for n <= 128 (one leaf of its recursion)."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            v = a[i]
            res += v * v if square else v
        return res
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


_pairwise_block = kernel(_pairwise_block_py, fastmath=False)


def _pairwise_sum_py(a, lo, n, square):  # type: ignore[no-untyped-def]
    """``a[lo:lo + n].sum()`` (``(a[lo:lo + n] ** 2).sum()`` when ``square``) bit for bit as numpy computes it: its
    pairwise summation (blocks of 8 partial sums up to 128 values, halves rounded down to a multiple of 8 above;
    numpy's ``pairwise_sum`` in ``loops_utils.h.src``), its recursion walked with an explicit stack (leaves left to
    right, each node adding its left half's sum to its right's). Not recursive: numba cannot load from its cache a
    kernel that calls a recursive one (LLVM "Symbol not found: .numba.unresolved$..." or a crash in the next
    process). A fused kernel's exact re-sum then equals the one its Python twin does with numpy."""
    if n <= 128:
        return 0.0 + _pairwise_block(a, lo, n, square)  # numpy adds the reduction to 0.0: a sum of -0.0 is 0.0
    frames = np.empty((192, 3), dtype=np.int64)  # (lo, n, 1 once its halves are pushed); depth <= 63
    vals = np.empty(96)
    nf, nv = 1, 0
    frames[0, 0], frames[0, 1], frames[0, 2] = lo, n, 0
    while nf > 0:
        nf -= 1
        flo, fn, done = frames[nf, 0], frames[nf, 1], frames[nf, 2]
        if fn <= 128:
            vals[nv] = _pairwise_block(a, flo, fn, square)
            nv += 1
        elif done:
            nv -= 1
            vals[nv - 1] = vals[nv - 1] + vals[nv]
        else:
            n2 = fn // 2
            n2 -= n2 % 8
            frames[nf, 0], frames[nf, 1], frames[nf, 2] = flo, fn, 1
            frames[nf + 1, 0], frames[nf + 1, 1], frames[nf + 1, 2] = flo + n2, fn - n2, 0
            frames[nf + 2, 0], frames[nf + 2, 1], frames[nf + 2, 2] = flo, n2, 0
            nf += 3
    return 0.0 + vals[0]


pairwise_sum = kernel(_pairwise_sum_py, fastmath=False)


def _ow_push_py(pnl, ist, fs, x):  # type: ignore[no-untyped-def]
    """``OutcomeWindow.push(x)`` on its arrays (``pnl``, ``ist``, ``fs``), bit for bit: the periodic exact recount
    sums the window's wins and losses as numpy sums their boolean-indexed copies (``pairwise_sum``)."""
    w = pnl.shape[0]
    c = ist[OW_PUSHES]
    if c >= w:
        old = pnl[c % w]
        if old > 0:
            ist[OW_WINS] -= 1
            fs[OW_WIN_SUM] -= old
        else:
            fs[OW_LOSS_SUM] += old
    pnl[c % w] = x
    if x > 0:
        ist[OW_WINS] += 1
        fs[OW_WIN_SUM] += x
    else:
        fs[OW_LOSS_SUM] -= x
    ist[OW_PUSHES] = c + 1
    ist[OW_SINCE_EXACT] += 1
    if ist[OW_SINCE_EXACT] >= EXACT_EVERY:
        n = min(c + 1, w)
        tmp = np.empty(n)
        k = 0
        for i in range(n):
            if pnl[i] > 0:
                tmp[k] = pnl[i]
                k += 1
        ist[OW_WINS] = k
        ist[OW_SINCE_EXACT] = 0
        fs[OW_WIN_SUM] = pairwise_sum(tmp, 0, k, False)
        k = 0
        for i in range(n):
            if pnl[i] <= 0:
                tmp[k] = pnl[i]
                k += 1
        fs[OW_LOSS_SUM] = -pairwise_sum(tmp, 0, k, False)


ow_push = kernel(_ow_push_py, fastmath=False)


#: CPython 3.12 made sum() over floats compensated (Neumaier): py_sum reproduces this interpreter's sum()
COMPENSATED_SUM = sys.version_info >= (3, 12)


def _py_sum_impl(a, compensated):  # type: ignore[no-untyped-def]
    """Python's ``sum(float(v) for v in a)`` bit for bit: from the int 0, left to right; from CPython 3.12 with
    Neumaier's compensation (``builtin_sum_impl``), added at the end only when it is finite and non-zero."""
    n = a.shape[0]
    if n == 0:
        return 0.0
    f = 0.0 + a[0]
    if not compensated:
        for i in range(1, n):
            f += a[i]
        return f
    c = 0.0
    for i in range(1, n):
        x = a[i]
        t = f + x
        if abs(f) >= abs(x):
            c += (f - t) + x
        else:
            c += (x - t) + f
        f = t
    if c != 0.0 and math.isfinite(c):
        f += c
    return f


py_sum = kernel(_py_sum_impl, fastmath=False)
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


#: :func:`next_log_return` compiled, for fused kernels (the same operations: the same bits)
log_return_step = kernel(next_log_return, fastmath=False)


class OutcomeWindowState:
    """Mixin for modules whose state is one :class:`OutcomeWindow` (``self.win``): exposes its arrays under the names
    listed in ``state_keys`` so the base class snapshots them."""

    win: OutcomeWindow
    state_keys = ("pnl", "ist", "fs")
    pnl = property(lambda self: self.win.pnl, lambda self, v: setattr(self.win, "pnl", v))
    ist = property(lambda self: self.win.ist, lambda self, v: setattr(self.win, "ist", v))
    fs = property(lambda self: self.win.fs, lambda self, v: setattr(self.win, "fs", v))


#: the state paths of an OutcomeWindow ``self.win``, in ``ow_push``'s argument order
OW_STATE = ("win.pnl", "win.ist", "win.fs")


def _push_outcomes_py(pnl, ist, fs, n_out, out):  # type: ignore[no-untyped-def]
    """Push the P&L D·(exit − entry) − spread (``Outcome.pnl``) of each due outcome whose P&L is finite into the
    outcome window; return how many were pushed."""
    pushed = 0
    for i in range(n_out):
        x = out[i, O_DIRECTION] * (out[i, O_EXIT] - out[i, O_ENTRY]) - out[i, O_SPREAD]
        if math.isfinite(x):
            ow_push(pnl, ist, fs, x)
            pushed += 1
    return pushed


push_outcomes = kernel(_push_outcomes_py, fastmath=False)
