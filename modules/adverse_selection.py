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

State (slots are module-level ints)::

    mark, spr              rings of the last ``window`` markouts D·(M_{t+Δ} − M_t) and entry spreads
    ist  I_SEEN            outcomes pushed so far
         I_SINCE_EXACT     pushes since the running sums were recomputed exactly
    fs   F_MARK_SUM        Σ markout over the window
         F_SPREAD_SUM      Σ spread over the window
"""

from __future__ import annotations

import math

import numpy as np

from fxgate.engine.core.jit import kernel
from fxgate.modules._base import CertaintyModule, Context, ModuleResult, insufficient, register
from fxgate.modules._common import EXACT_EVERY, pairwise_sum
from fxgate.modules._fusion import O_DIRECTION, O_ENTRY, O_EXIT, O_SPREAD, FusedStep

I_SEEN, I_SINCE_EXACT = 0, 1
F_MARK_SUM, F_SPREAD_SUM = 0, 1


def _adverse_selection_fused_py(mark, spr, ist, fs, n_out, out):  # type: ignore[no-untyped-def]
    """``AdverseSelection.update`` in the fused step (``fxgate.modules._fusion``): push each due outcome's markout
    D·(exit − entry) and spread, skipping one whose markout or spread is not finite."""
    w = mark.shape[0]
    for i in range(n_out):
        m = out[i, O_DIRECTION] * (out[i, O_EXIT] - out[i, O_ENTRY])  # Outcome.markout
        s = out[i, O_SPREAD]
        if not (math.isfinite(m) and math.isfinite(s)):
            continue
        n = ist[I_SEEN]
        j = n % w
        if n >= w:
            fs[F_MARK_SUM] -= mark[j]
            fs[F_SPREAD_SUM] -= spr[j]
        mark[j] = m
        spr[j] = s
        fs[F_MARK_SUM] += m
        fs[F_SPREAD_SUM] += s
        ist[I_SEEN] = n + 1
        ist[I_SINCE_EXACT] += 1
        if ist[I_SINCE_EXACT] >= EXACT_EVERY:
            k = min(n + 1, w)
            fs[F_MARK_SUM] = pairwise_sum(mark, 0, k, False)
            fs[F_SPREAD_SUM] = pairwise_sum(spr, 0, k, False)
            ist[I_SINCE_EXACT] = 0


_adverse_selection_fused = kernel(_adverse_selection_fused_py, fastmath=False)


@register("adverse_selection")
class AdverseSelection(CertaintyModule):
    title = "AdverseSelection"
    formula = "net markout E[D dM] - spread (the round trip's full spread)"
    citation = "Glosten & Milgrom (1985)"
    rule = "mean candidate markout after the spread >= `threshold` (0) over the last `window` outcomes"
    defaults = {"window": 100, "min_outcomes": 20, "threshold": 0.0}
    state_keys = ("mark", "spr", "ist", "fs")

    def reset(self) -> None:
        w = int(self.params["window"])
        self.mark = np.zeros(w)
        self.spr = np.zeros(w)
        self.ist = np.zeros(2, dtype=np.int64)
        self.fs = np.zeros(2)

    def update(self, ctx: Context) -> None:
        w = len(self.mark)
        ist, fs = self.ist, self.fs
        for o in ctx.outcomes:
            m, s = o.markout, o.spread
            if not (math.isfinite(m) and math.isfinite(s)):
                continue
            n = int(ist[I_SEEN])
            j = n % w
            if n >= w:
                fs[F_MARK_SUM] -= self.mark[j]
                fs[F_SPREAD_SUM] -= self.spr[j]
            self.mark[j], self.spr[j] = m, s
            fs[F_MARK_SUM] += m
            fs[F_SPREAD_SUM] += s
            ist[I_SEEN] = n + 1
            ist[I_SINCE_EXACT] += 1
            if ist[I_SINCE_EXACT] >= EXACT_EVERY:  # bound the running sums' rounding drift
                k = min(n + 1, w)
                fs[F_MARK_SUM], fs[F_SPREAD_SUM] = self.mark[:k].sum(), self.spr[:k].sum()
                ist[I_SINCE_EXACT] = 0

    def fused_step(self, timeframe: str) -> FusedStep:
        return FusedStep(_adverse_selection_fused, self.state_keys, ("n_out", "out"))

    def net_markout(self) -> float:
        k = min(int(self.ist[I_SEEN]), len(self.mark))
        return (self.fs[F_MARK_SUM] - self.fs[F_SPREAD_SUM]) / k if k else math.nan

    def verdict(self) -> ModuleResult:
        thr = float(self.params["threshold"])
        n = int(self.ist[I_SEEN])
        if n < self.params["min_outcomes"]:
            return insufficient(self.name, n, int(self.params["min_outcomes"]), thr, "outcomes")
        v = float(self.net_markout())
        ok = v >= thr
        k = min(n, len(self.mark))
        return self._result(
            v,
            ok,
            thr,
            lambda: f"mean markout after the spread {v:+.6f} {'>=' if ok else '<'} {thr} over the last {k} outcomes",
        )
