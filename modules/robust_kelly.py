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

from fxgate.modules._base import CertaintyModule, Context, ModuleResult, insufficient, register
from fxgate.modules._common import OW_STATE, OutcomeWindow, OutcomeWindowState, push_outcomes
from fxgate.modules._fusion import FusedStep


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
        return FusedStep(push_outcomes, OW_STATE, ("n_out", "out"))  # update's push, compiled

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
        e = self.estimate()  # a new dict of Python numbers: the reason may keep it
        if not math.isfinite(e["fraction"]):
            return self._result(
                math.nan, False, 0.0, lambda: f"no losing outcomes among {e['n']}: payoff ratio undefined"
            )
        ok = e["fraction"] > 0
        method = self.params["method"]
        return self._result(
            e["fraction"],
            ok,
            0.0,
            lambda: (
                f"win rate {e['p']:.3f}, payoff {e['b']:.3f}, Kelly {e['kelly']:+.4f}, shrunk "
                f"({method}) {e['fraction']:+.4f} {'>' if ok else '<='} 0"
            ),
        )
