"""RobustKelly — Kelly fraction from the candidates' realized outcomes, shrunk for estimation error.

It learns from every **candidate** (each bar on which all three Layer-1 models lean the same way, emitted or
not), so that a gate that has not traded yet can still learn whether it should. From the last ``window``
outcomes: win rate p̂ (outcome P&L > 0 after the spread) and payoff ratio b = mean win / mean |loss|. Kelly
(1956) for a bet that wins b per unit staked with probability p and loses the stake otherwise maximizes
p·log(1 + f·b) + (1 − p)·log(1 − f) at

    f* = p − (1 − p)/b.

Shrinkage for parameter uncertainty (default ``method="half"``): f = 0.5 · f* · (1 − u), with u = min(1,
1.96·se(p̂)/p̂) the relative 95% half-width of the win-rate estimate (se = √(p̂(1 − p̂)/n)). ``method="baker_mchale"``
uses Baker & McHale (2013, *Optimal betting under parameter uncertainty*, Decision Analysis 10(3)), whose
second-order shrinkage factor is k = f*² / (f*² + Var(f̂)) with Var(f̂) = (1 + 1/b)²·p̂(1 − p̂)/n.

Pass rule: the shrunk fraction is positive (the estimated edge survives its own uncertainty); the fraction — a
share of capital per signal (units: ``fxgate.modules._base``) — is the verdict's score and this module's
suggested size (:meth:`suggested_fraction`).

State: one :class:`~fxgate.modules._common.OutcomeWindow` of outcome P&L (``pnl``, ``ist``, ``fs``; its slot table
is in ``fxgate.modules._common``).
"""

from __future__ import annotations

import math

import numpy as np

from fxgate.engine.core.jit import kernel
from fxgate.modules._base import CertaintyModule, Context, ModuleResult, insufficient, register
from fxgate.modules._common import (
    EXACT_EVERY,
    OW_LOSS_SUM,
    OW_PUSHES,
    OW_SINCE_EXACT,
    OW_WIN_SUM,
    OW_WINS,
    OutcomeWindow,
    OutcomeWindowState,
)
from fxgate.modules._fusion import O_DIRECTION, O_ENTRY, O_EXIT, O_SPREAD, FusedStep

#: the state paths of an OutcomeWindow ``self.win``, in ``ow_push``'s argument order
OW_STATE = ("win.pnl", "win.ist", "win.fs")


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
    """``fxgate.modules._common.np_sum`` (numpy's pairwise sum, bit for bit) without recursion: its recursion tree
    walked with an explicit stack, leaves left to right, each node adding its left half's sum to its right's.
    np_sum calls itself, and numba cannot load a cached kernel that calls a recursive one (LLVM "Symbol not found:
    .numba.unresolved$...np_sum..." or a crash in the next process), so fused kernels use this one."""
    if n <= 128:
        return _pairwise_block(a, lo, n, square)
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
    return vals[0]


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


def _robust_kelly_fused_py(pnl, ist, fs, n_out, out):  # type: ignore[no-untyped-def]
    """``RobustKelly.update`` in the fused step (``fxgate.modules._fusion``)."""
    push_outcomes(pnl, ist, fs, n_out, out)


_robust_kelly_fused = kernel(_robust_kelly_fused_py, fastmath=False)


def kelly_fraction(p: float, b: float) -> float:
    """f* = p − (1 − p)/b (may be negative: no bet)."""
    return p - (1 - p) / b


def baker_mchale_factor(p: float, b: float, n: int) -> float:
    f = kelly_fraction(p, b)
    var_f = (1 + 1 / b) ** 2 * p * (1 - p) / n
    return f * f / (f * f + var_f) if f * f + var_f > 0 else 0.0


@register("robust_kelly")
class RobustKelly(OutcomeWindowState, CertaintyModule):
    title = "RobustKelly"
    formula = "f = Kelly x Baker-McHale shrinkage"
    citation = "Baker & McHale (2013), Decision Analysis 10(3)"
    rule = "shrunk Kelly fraction > 0 (it also sizes: the fraction is its suggested size)"
    defaults = {"window": 200, "min_outcomes": 30, "method": "half", "max_fraction": 1.0}

    def reset(self) -> None:
        if self.params["method"] not in ("half", "baker_mchale"):
            raise ValueError(f"robust_kelly method {self.params['method']!r}: use 'half' or 'baker_mchale'")
        self.win = OutcomeWindow(int(self.params["window"]))

    def update(self, ctx: Context) -> None:
        for o in ctx.outcomes:
            if math.isfinite(o.pnl):
                self.win.push(o.pnl)

    def fused_step(self, timeframe: str) -> FusedStep:
        return FusedStep(_robust_kelly_fused, OW_STATE, ("n_out", "out"))

    def estimate(self) -> dict[str, float]:
        n = self.win.n
        if n == 0:
            return {"p": math.nan, "b": math.nan, "kelly": math.nan, "fraction": 0.0, "n": 0}
        p = self.win.wins / n
        b = self.win.payoff()
        if not math.isfinite(b):
            return {"p": p, "b": b, "kelly": math.nan, "fraction": 0.0 if self.win.wins == 0 else math.nan, "n": n}
        f = kelly_fraction(p, b)
        if self.params["method"] == "half":
            u = min(1.0, 1.96 * math.sqrt(p * (1 - p) / n) / p)
            frac = 0.5 * f * (1 - u)
        else:
            frac = f * baker_mchale_factor(p, b, n)
        frac = min(frac, float(self.params["max_fraction"]))
        return {"p": p, "b": b, "kelly": f, "fraction": frac, "n": n}

    def suggested_fraction(self) -> float:
        return float(self.estimate()["fraction"])

    def verdict(self) -> ModuleResult:
        n = self.win.pushes
        need = int(self.params["min_outcomes"])
        if n < need:
            return insufficient(self.name, n, need, 0.0, "outcomes")
        e = self.estimate()
        if not math.isfinite(e["fraction"]):
            return self._result(math.nan, False, 0.0, f"no losing outcomes among {e['n']}: payoff ratio undefined")
        ok = e["fraction"] > 0
        return self._result(
            e["fraction"],
            ok,
            0.0,
            f"win rate {e['p']:.3f}, payoff {e['b']:.3f}, Kelly {e['kelly']:+.4f}, shrunk "
            f"({self.params['method']}) {e['fraction']:+.4f} {'>' if ok else '<='} 0",
        )
