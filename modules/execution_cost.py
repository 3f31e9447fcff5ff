"""ExecutionCost — expected implementation shortfall of the intended trade versus its expected edge.

Cost of a round trip of X units (Perold 1988's implementation shortfall, modelled as in Almgren & Chriss 2001,
*Optimal execution of portfolio transactions*, J. Risk 3(2)). Each leg — the entry and the exit — is worked over N
steps of length τ bars along the Almgren–Chriss optimal trajectory

    x_j = X · sinh(κ(T − t_j)) / sinh(κT),   cosh(κτ) = 1 + λσ²τ² / (2η̃),   η̃ = η − γτ/2,

(x_j: units still to trade at t_j = jτ, T = Nτ), whose expected cost and variance are (ibid. eq. 20–21 with linear
impact g(v) = γv, h(v) = ε·sgn(v) + (η/τ)·n):

    E = ½γX² + ε·Σ|n_k| + (η̃/τ)·Σ n_k²,     V = σ²·τ·Σ x_k²,

with ε = half spread + ``slippage``, n_k = x_{k−1} − x_k and σ the standard deviation of one-bar price changes. As
the risk aversion λ → 0 the trajectory becomes the straight line of a TWAP. The round trip costs 2E: one half
spread on each leg, so with one clip and no impact it is exactly the **full spread** (plus 2·slippage) per unit —
fxgate's one cost convention (prices are mids; a round trip pays the entry bar's full spread), the same that
:attr:`~fxgate.modules._base.Outcome.pnl` and replay's trades charge. The spread is the bar's own, else the gate's
``spread`` setting (``Context.spread``).

Its uncertainty: the exit's half spread is not known at entry. Its variance is estimated by the variance of the
spread over the last ``window`` bars, Var(s)/4 per unit², and added to the two legs' execution risk 2V (zero for a
single clip):  sd = √(2V + X²·Var(s)/4). With a constant spread the sd is 0; with a live or MT5 spread it is not.

Expected edge of the candidate: (2p̄ − 1) · mean |close_t − close_{t−h}| · X, with p̄ the mean calibrated
probability the Layer-1 models give the candidate's direction and h the gate's ``horizon``.

Pass rule: 2E + z·sd < ``k_edge`` · edge.

State (slots are module-level ints)::

    closes                 ring of the last h + 1 closes
    moves, diffs, spreads  rings of the last ``window`` |close_t − close_{t−h}|, close_t − close_{t−1} and known spreads
    ist  I_CLOSES          good closes seen
         I_DIRECTION       D, the candidate direction on this bar (0: none)
         I_MOVES           pushes into ``moves``
         I_DIFFS           pushes into ``diffs``
         I_SPREADS         pushes into ``spreads``
    fs   F_SPREAD          this bar's spread s (NaN: unknown)
         F_P_DIRECTION     p̄, the mean probability of D (NaN without a candidate)
         F_SIZE            X, the intended size (units of notional)
         F_MOVE_SUM        Σ moves           (running sums over the rings, recomputed exactly every 4,096 bars)
         F_DIFF_SUM        Σ diffs
         F_DIFF_SQ         Σ diffs²          (σ² of one-bar changes)
         F_SPREAD_SUM      Σ spreads
         F_SPREAD_SQ       Σ spreads²        (Var(s))
"""

from __future__ import annotations

import math

import numpy as np

from fxgate.engine.core.jit import kernel
from fxgate.modules._base import CertaintyModule, Context, ModuleResult, insufficient, register
from fxgate.modules._common import COMPENSATED_SUM, EXACT_EVERY, pairwise_sum, py_sum
from fxgate.modules._fusion import FusedStep

I_CLOSES, I_DIRECTION, I_MOVES, I_DIFFS, I_SPREADS = range(5)
F_SPREAD, F_P_DIRECTION, F_SIZE, F_MOVE_SUM, F_DIFF_SUM, F_DIFF_SQ, F_SPREAD_SUM, F_SPREAD_SQ = range(8)


def _ring_push_py(ring, ist, fs, count, total, squares, x):  # type: ignore[no-untyped-def]
    """``ExecutionCost._push`` on the module's arrays (``squares`` < 0: no running sum of squares)."""
    w = ring.shape[0]
    k = ist[count]
    if k >= w:
        old = ring[k % w]
        fs[total] -= old
        if squares >= 0:
            fs[squares] -= old * old
    ring[k % w] = x
    fs[total] += x
    if squares >= 0:
        fs[squares] += x * x
    ist[count] = k + 1


_ring_push = kernel(_ring_push_py, fastmath=False)


def _execution_cost_fused_py(  # type: ignore[no-untyped-def]
    closes, moves, diffs, spreads, ist, fs, close, spread, direction, size, has_probs, probs, compensated
):
    """``ExecutionCost.update`` in the fused step (``fxgate.modules._fusion``): a bad close pushes no move, an
    unknown spread no spread; the candidate's direction, mean probability of it and size are set on every bar."""
    if math.isfinite(close) and close > 0:
        n = ist[I_CLOSES]
        h = closes.shape[0] - 1
        if n >= 1:
            _ring_push(diffs, ist, fs, I_DIFFS, F_DIFF_SUM, F_DIFF_SQ, close - closes[(n - 1) % (h + 1)])
        if n >= h:
            _ring_push(moves, ist, fs, I_MOVES, F_MOVE_SUM, -1, abs(close - closes[(n - h) % (h + 1)]))
        closes[n % (h + 1)] = close
        ist[I_CLOSES] = n + 1
        if (n + 1) % EXACT_EVERY == 0:
            w = moves.shape[0]
            km, kd, ks = min(ist[I_MOVES], w), min(ist[I_DIFFS], w), min(ist[I_SPREADS], w)
            fs[F_MOVE_SUM] = pairwise_sum(moves, 0, km, False)
            fs[F_DIFF_SUM] = pairwise_sum(diffs, 0, kd, False)
            fs[F_DIFF_SQ] = pairwise_sum(diffs, 0, kd, True)
            fs[F_SPREAD_SUM] = pairwise_sum(spreads, 0, ks, False)
            fs[F_SPREAD_SQ] = pairwise_sum(spreads, 0, ks, True)
    fs[F_SPREAD] = spread
    if math.isfinite(spread):
        _ring_push(spreads, ist, fs, I_SPREADS, F_SPREAD_SUM, F_SPREAD_SQ, spread)
    ist[I_DIRECTION] = direction
    if direction != 0 and has_probs != 0 and probs.shape[0] > 0:
        pu = py_sum(probs, compensated) / probs.shape[0]
        fs[F_P_DIRECTION] = pu if direction > 0 else 1 - pu
    else:
        fs[F_P_DIRECTION] = math.nan
    fs[F_SIZE] = size


_execution_cost_fused = kernel(_execution_cost_fused_py, fastmath=False)


def ac_trajectory(
    x_units: float, n_steps: int, tau: float, sigma: float, eta: float, gamma: float, lam: float
) -> np.ndarray:
    """Almgren–Chriss holdings x_0 = X, ..., x_N = 0 (N + 1 values)."""
    t = np.arange(n_steps + 1) * tau
    big_t = n_steps * tau
    eta_t = eta - 0.5 * gamma * tau
    arg = lam * sigma**2 * tau**2 / (2 * eta_t) if eta_t > 0 else 0.0
    if lam <= 0 or arg <= 1e-12:
        return x_units * (1 - t / big_t)
    kappa = math.acosh(1 + arg) / tau
    return x_units * np.sinh(kappa * (big_t - t)) / math.sinh(kappa * big_t)


def ac_cost(x: np.ndarray, tau: float, sigma: float, eta: float, gamma: float, eps: float) -> tuple[float, float]:
    """Expected cost and variance of holdings trajectory ``x`` (Almgren & Chriss 2001, eq. 20-21)."""
    n = -np.diff(x)
    big_x = float(x[0])
    eta_t = eta - 0.5 * gamma * tau
    e = 0.5 * gamma * big_x**2 + eps * float(np.abs(n).sum()) + eta_t / tau * float((n**2).sum())
    v = sigma**2 * tau * float((x[1:] ** 2).sum())
    return e, v


@register("execution_cost")
class ExecutionCost(CertaintyModule):
    title = "ExecutionCost"
    formula = "round-trip E[IS] + 1 sd < expected edge"
    citation = "Almgren & Chriss (2001)"
    rule = "2E + z*sd < `k_edge` * expected edge (Almgren-Chriss cost of the round trip vs the edge)"
    defaults = {
        "exec_steps": 1,
        "tau": 1.0,
        "eta": 0.0,
        "gamma": 0.0,
        "risk_aversion": 1e-6,
        "slippage": 0.0,
        "z": 1.0,
        "k_edge": 1.0,
        "horizon": 1,
        "window": 200,
    }
    gate_settings = ("horizon",)
    state_keys = ("closes", "moves", "diffs", "spreads", "ist", "fs")

    def reset(self) -> None:
        w, h = int(self.params["window"]), int(self.params["horizon"])
        self.closes = np.zeros(h + 1)
        self.moves = np.zeros(w)
        self.diffs = np.zeros(w)
        self.spreads = np.zeros(w)
        self.ist = np.zeros(5, dtype=np.int64)
        self.fs = np.zeros(8)
        self.fs[F_SPREAD] = self.fs[F_P_DIRECTION] = math.nan
        self.fs[F_SIZE] = 1.0

    def _push(self, ring: np.ndarray, count: int, total: int, squares: int | None, x: float) -> None:
        """Push ``x`` into ``ring`` (pushes counted in ``ist[count]``), keeping its running sum in ``fs[total]`` and,
        when ``squares`` is given, its running sum of squares in ``fs[squares]``."""
        ist, fs = self.ist, self.fs
        w = len(ring)
        k = int(ist[count])
        if k >= w:
            old = float(ring[k % w])
            fs[total] -= old
            if squares is not None:
                fs[squares] -= old * old
        ring[k % w] = x
        fs[total] += x
        if squares is not None:
            fs[squares] += x * x
        ist[count] = k + 1

    def update(self, ctx: Context) -> None:
        ist, fs = self.ist, self.fs
        c = ctx.bar.close
        if math.isfinite(c) and c > 0:
            n = int(ist[I_CLOSES])
            h = len(self.closes) - 1
            if n >= 1:
                self._push(self.diffs, I_DIFFS, F_DIFF_SUM, F_DIFF_SQ, c - float(self.closes[(n - 1) % (h + 1)]))
            if n >= h:
                self._push(self.moves, I_MOVES, F_MOVE_SUM, None, abs(c - float(self.closes[(n - h) % (h + 1)])))
            self.closes[n % (h + 1)] = c
            ist[I_CLOSES] = n + 1
            if (n + 1) % EXACT_EVERY == 0:  # bound the running sums' rounding drift
                w = len(self.moves)
                m, dd = self.moves[: min(int(ist[I_MOVES]), w)], self.diffs[: min(int(ist[I_DIFFS]), w)]
                ss = self.spreads[: min(int(ist[I_SPREADS]), w)]
                fs[F_MOVE_SUM], fs[F_DIFF_SUM], fs[F_DIFF_SQ] = m.sum(), dd.sum(), (dd * dd).sum()
                fs[F_SPREAD_SUM], fs[F_SPREAD_SQ] = ss.sum(), (ss * ss).sum()
        sp = float(ctx.spread)
        fs[F_SPREAD] = sp
        if math.isfinite(sp):
            self._push(self.spreads, I_SPREADS, F_SPREAD_SUM, F_SPREAD_SQ, sp)
        ist[I_DIRECTION] = ctx.direction
        probs = ctx.probs
        if ctx.direction and probs is not None and len(probs):
            pu = float(sum(float(v) for v in probs) / len(probs))
            fs[F_P_DIRECTION] = pu if ctx.direction > 0 else 1 - pu
        else:
            fs[F_P_DIRECTION] = math.nan
        fs[F_SIZE] = ctx.size

    def fused_step(self, timeframe: str) -> FusedStep:
        inputs = ("close", "spread", "direction", "size", "has_probs", "probs")
        return FusedStep(_execution_cost_fused, self.state_keys, inputs, (COMPENSATED_SUM,))

    def estimate(self) -> dict[str, float]:
        """Edge and cost figures for the current candidate (price units, for ``size`` units)."""
        p = self.params
        ist, fs = self.ist, self.fs
        w = len(self.moves)
        nm, nd = min(int(ist[I_MOVES]), w), min(int(ist[I_DIFFS]), w)
        move = float(fs[F_MOVE_SUM]) / nm
        var = (float(fs[F_DIFF_SQ]) - float(fs[F_DIFF_SUM]) ** 2 / nd) / (nd - 1)
        sigma = math.sqrt(max(var, 0.0))
        size = float(fs[F_SIZE])
        edge = (2 * float(fs[F_P_DIRECTION]) - 1) * move * size
        eps = float(fs[F_SPREAD]) / 2 + float(p["slippage"])
        tau, eta, gamma = float(p["tau"]), float(p["eta"]), float(p["gamma"])
        if int(p["exec_steps"]) == 1:  # one clip: x = (X, 0)
            e = 0.5 * gamma * size**2 + eps * abs(size) + (eta - 0.5 * gamma * tau) / tau * size**2
            v = 0.0
        else:
            x = ac_trajectory(size, int(p["exec_steps"]), tau, sigma, eta, gamma, float(p["risk_aversion"]))
            e, v = ac_cost(x, tau, sigma, eta, gamma, eps)
        ns = min(int(ist[I_SPREADS]), len(self.spreads))
        ssum, ssq = float(fs[F_SPREAD_SUM]), float(fs[F_SPREAD_SQ])
        var_s = max((ssq - ssum**2 / ns) / (ns - 1), 0.0) if ns > 1 else 0.0
        sd = math.sqrt(2 * v + size * size * var_s / 4)
        return {"edge": edge, "cost": 2 * e, "cost_sd": sd, "mean_abs_move": move, "sigma": sigma, "spread_var": var_s}

    def verdict(self) -> ModuleResult:
        p = self.params
        need = int(p["horizon"]) + 20
        if self.ist[I_CLOSES] < need:
            return insufficient(self.name, int(self.ist[I_CLOSES]), need, math.nan, "bars")
        if not self.ist[I_DIRECTION] or not math.isfinite(self.fs[F_P_DIRECTION]):
            return self._result(math.nan, False, math.nan, "no candidate signal on this bar to weigh costs against")
        if not math.isfinite(self.fs[F_SPREAD]):
            return self._result(
                math.nan,
                False,
                math.nan,
                "no spread known for this bar. Fix: give bars a spread or set the gate's top-level spread",
            )
        est = self.estimate()
        hurdle = est["cost"] + float(p["z"]) * est["cost_sd"]
        target = float(p["k_edge"]) * est["edge"]
        ok = hurdle < target
        cost, cost_sd, edge = est["cost"], est["cost_sd"], est["edge"]
        return self._result(
            target - hurdle,
            ok,
            0.0,
            lambda: (
                f"round-trip cost {cost:.6f} + {p['z']}·sd {cost_sd:.6f} "
                f"{'<' if ok else '>='} {p['k_edge']}·edge {edge:.6f}"
            ),
        )
