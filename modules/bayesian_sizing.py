"""BayesianSizing — a Beta posterior on the win rate; size by posterior-expected log growth.

With a Beta(a₀, b₀) prior and w wins, l losses among the last ``window`` outcomes, the win rate p has posterior
Beta(a₀ + w, b₀ + l). With payoff ratio b (mean win / mean |loss|, treated as known), the expected log growth of
staking f is linear in p, so its posterior expectation E[p]·log(1 + fb) + (1 − E[p])·log(1 − f) is maximized by
Kelly at the posterior mean: f = p̄ − (1 − p̄)/b, floored at 0 and capped at ``max_fraction``.

Edge per unit staked is p·b − (1 − p) = p(1 + b) − 1; P(edge > c | data) = 1 − I_{(1+c)/(1+b)}(a, b) with I the
regularized incomplete beta function. Pass rule: P(edge > ``cost`` | data) ≥ ``threshold`` (0.95). Outcome P&L is
already net of the spread, so ``cost`` (per unit staked) defaults to 0.

The outcomes are those of every **candidate** (all three Layer-1 models lean one way, emitted or not). The size, f,
is a share of capital per signal (:meth:`suggested_fraction`, units: ``fxgate.modules._base``; NaN while the payoff
ratio is undefined).

State: one :class:`~fxgate.modules._common.OutcomeWindow` of outcome P&L (``pnl``, ``ist``, ``fs``; its slot table
is in ``fxgate.modules._common``).
"""

from __future__ import annotations

import math

from scipy import special

from fxgate.modules._base import CertaintyModule, Context, ModuleResult, insufficient, register
from fxgate.modules._common import OW_STATE, OutcomeWindow, OutcomeWindowState, push_outcomes
from fxgate.modules._fusion import FusedStep


@register("bayesian_sizing")
class BayesianSizing(OutcomeWindowState, CertaintyModule):
    title = "BayesianSizing"
    formula = "f = argmax E_posterior[log growth]"
    citation = "Browne & Whitt (1996)"
    rule = "P(edge > `cost` | outcomes) >= `threshold` (0.95) under a Beta posterior (it also sizes)"
    defaults = {
        "window": 200,
        "min_outcomes": 30,
        "prior_a": 1.0,
        "prior_b": 1.0,
        "cost": 0.0,
        "threshold": 0.95,
        "max_fraction": 1.0,
    }

    def reset(self) -> None:
        self.win = OutcomeWindow(int(self.params["window"]))
        self._cached: ModuleResult | None = None

    def update(self, ctx: Context) -> None:
        for o in ctx.outcomes:
            if math.isfinite(o.pnl):
                self.win.push(o.pnl)
                self._cached = None  # the verdict only changes when an outcome arrives

    def fused_step(self, timeframe: str) -> FusedStep:
        # push_outcomes returns how many it pushed: nonzero when an outcome arrived, when after drops the cache
        return FusedStep(push_outcomes, OW_STATE, ("n_out", "out"), after=self._drop_cached)

    def _drop_cached(self, flag: int) -> None:
        self._cached = None

    def posterior(self) -> dict[str, float]:
        w = self.win
        a = self.params["prior_a"] + w.wins
        bb = self.params["prior_b"] + (w.n - w.wins)
        return {"a": a, "b": bb, "payoff": w.payoff(), "mean": a / (a + bb), "n": w.n}

    def prob_edge(self, post: dict[str, float]) -> float:
        """P(p(1 + b) − 1 > cost | data)."""
        cut = (1 + self.params["cost"]) / (1 + post["payoff"])
        if cut >= 1.0:
            return 0.0
        return float(1.0 - special.betainc(post["a"], post["b"], max(cut, 0.0)))

    def size(self, post: dict[str, float]) -> float:
        p = post["mean"]
        f = p - (1 - p) / post["payoff"]
        return float(min(max(f, 0.0), self.params["max_fraction"]))

    def suggested_fraction(self) -> float:
        post = self.posterior()
        return self.size(post) if math.isfinite(post["payoff"]) else math.nan

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._cached = None

    def verdict(self) -> ModuleResult:
        if self._cached is None:
            self._cached = self._verdict()
        return self._cached

    def _verdict(self) -> ModuleResult:
        thr = float(self.params["threshold"])
        n = self.win.pushes
        need = int(self.params["min_outcomes"])
        if n < need:
            return insufficient(self.name, n, need, thr, "outcomes")
        post = self.posterior()
        if not math.isfinite(post["payoff"]):
            n_post = post["n"]
            return self._result(
                math.nan, False, thr, lambda: f"payoff ratio undefined ({n_post} outcomes, no wins or no losses)"
            )
        pe = self.prob_edge(post)
        ok = pe >= thr
        cost, mean, size = self.params["cost"], post["mean"], self.size(post)
        return self._result(
            pe,
            ok,
            thr,
            lambda: (
                f"P(edge > {cost} | data) = {pe:.3f} {'>=' if ok else '<'} {thr}; posterior win rate "
                f"{mean:.3f}, size {size:.4f}"
            ),
        )
