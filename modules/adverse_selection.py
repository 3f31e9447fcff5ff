"""AdverseSelection — are the candidates' entries being picked off?

It learns from every **candidate**: each bar on which all three Layer-1 models lean the same way, whether or not
the gate emitted a signal there (a gate that has not traded yet must still be able to learn that it should not).
For each candidate whose horizon Δ has elapsed (an :class:`~fxgate.modules._base.Outcome`), the markout is
D·(M_{t+Δ} − M_t): the mid-price move in the predicted direction D. A round trip pays the full spread (half on
entry, half on exit: fxgate's one cost convention, the one replay's trades charge), so an entry was worth taking
only if the move covered it. Over the last ``window`` outcomes (amortized O(1) with a ring and a running sum):

    net markout = mean(D·(M_{t+Δ} − M_t)) − mean(spread)                (price units; = mean Outcome.pnl)

In the microstructure decomposition (e.g. Hendershott, Jones & Menkveld 2011) the half-spread a taker pays splits
into the dealer's realized spread and the price impact E[D·ΔM]; flow whose price impact exceeds the half-spread is
informed, and flow below it is being adversely selected. A round trip crosses twice, so for the gate's candidates
the protective rule is the one that passes when their impact covers the full spread: **pass when net markout ≥
0**. (The original issue wrote AS = E[D·ΔM] − spread/2 and "pass when AS ≤ 0"; with D = our direction that passes
exactly when our entries lose after costs, so the sign is flipped here.)
"""

from __future__ import annotations

import math

import numpy as np

from fxgate.modules._base import CertaintyModule, Context, ModuleResult, insufficient, register


@register("adverse_selection")
class AdverseSelection(CertaintyModule):
    title = "AdverseSelection"
    formula = "net markout E[D dM] - spread (the round trip's full spread)"
    citation = "Glosten & Milgrom (1985)"
    defaults = {"window": 100, "min_outcomes": 20, "threshold": 0.0}
    state_keys = ("mark", "spr", "ist", "fs")

    def reset(self) -> None:
        w = int(self.params["window"])
        self.mark = np.zeros(w)
        self.spr = np.zeros(w)
        self.ist = np.zeros(2, dtype=np.int64)  # outcomes seen, since last exact recompute
        self.fs = np.zeros(2)  # running sums of markout and spread

    def update(self, ctx: Context) -> None:
        w = len(self.mark)
        for o in ctx.outcomes:
            m, s = o.markout, o.spread
            if not (math.isfinite(m) and math.isfinite(s)):
                continue
            n = int(self.ist[0])
            j = n % w
            if n >= w:
                self.fs[0] -= self.mark[j]
                self.fs[1] -= self.spr[j]
            self.mark[j], self.spr[j] = m, s
            self.fs[0] += m
            self.fs[1] += s
            self.ist[0] = n + 1
            self.ist[1] += 1
            if self.ist[1] >= 4096:  # bound the running sums' rounding drift
                k = min(n + 1, w)
                self.fs[0], self.fs[1] = self.mark[:k].sum(), self.spr[:k].sum()
                self.ist[1] = 0

    def net_markout(self) -> float:
        k = min(int(self.ist[0]), len(self.mark))
        return (self.fs[0] - self.fs[1]) / k if k else math.nan

    def verdict(self) -> ModuleResult:
        thr = float(self.params["threshold"])
        n = int(self.ist[0])
        if n < self.params["min_outcomes"]:
            return insufficient(self.name, n, int(self.params["min_outcomes"]), thr, "outcomes")
        v = self.net_markout()
        ok = v >= thr
        return self._result(
            v,
            ok,
            thr,
            f"mean markout after the spread {v:+.6f} {'>=' if ok else '<'} {thr} over "
            f"the last {min(n, len(self.mark))} outcomes",
        )
