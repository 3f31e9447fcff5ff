"""UncertaintyDecomposition — how much of the ensemble's uncertainty is disagreement between its members.

For M members with P(up) = p_m and mean p̄ (Depeweg et al. 2018, *Decomposition of uncertainty in Bayesian deep
learning*, eq. 4; in nats):

    total     = H(p̄)
    aleatoric = (1/M) Σ_m H(p_m)          (what each member considers irreducible noise)
    epistemic = total − aleatoric          (the mutual information between the prediction and the member)

with H the binary entropy. The members are the three calibrated Layer-1 boosters (CatBoost virtual ensembles are
not used). Pass rule: epistemic uncertainty at most its rolling ``quantile`` (0.9) over the last ``history`` bars
— the members disagree no more than usual.

State (slots are module-level ints)::

    hist, srt, ist        the epistemic values of the last ``history`` bars: a sorted window (``_common``)
    fs   F_TOTAL          H(p̄) on this bar (NaN without finite probabilities)
         F_ALEATORIC      (1/M) Σ H(p_m)
         F_EPISTEMIC      total − aleatoric
         F_THRESHOLD      the rolling quantile of the epistemic values before this bar
"""

from __future__ import annotations

import math

import numpy as np

from fxgate.modules._base import CertaintyModule, Context, ModuleResult, insufficient, register
from fxgate.modules._common import SW_N, SW_PUSHES, entropy, sw_push, sw_quantile

F_TOTAL, F_ALEATORIC, F_EPISTEMIC, F_THRESHOLD = range(4)


def decompose(p: np.ndarray) -> tuple[float, float, float]:
    """(total, aleatoric, epistemic) entropy of an ensemble's P(up) values, nats."""
    vals = [float(x) for x in p]
    total = entropy(sum(vals) / len(vals))
    alea = sum(entropy(x) for x in vals) / len(vals)
    return total, alea, total - alea


@register("uncertainty")
class UncertaintyDecomposition(CertaintyModule):
    title = "UncertaintyDecomposition"
    formula = "H[E p] = E H[p] + MI (aleatoric + epistemic)"
    citation = "Depeweg et al. (2018)"
    rule = "epistemic uncertainty <= its rolling `quantile` (0.9) over the last `history` bars"
    defaults = {"history": 500, "min_history": 100, "quantile": 0.9}
    state_keys = ("hist", "srt", "ist", "fs")

    def reset(self) -> None:
        self.hist = np.zeros(int(self.params["history"]))
        self.srt = np.zeros(int(self.params["history"]))
        self.ist = np.zeros(2, dtype=np.int64)
        self.fs = np.full(4, math.nan)

    def update(self, ctx: Context) -> None:
        fs = self.fs
        if ctx.probs is None or not np.all(np.isfinite(ctx.probs)):
            fs[:] = math.nan
            return
        t, a, e = decompose(ctx.probs)
        q = float(self.params["quantile"])
        fs[F_THRESHOLD] = sw_quantile(self.srt, self.ist, q) if self.ist[SW_N] else math.nan
        fs[F_TOTAL], fs[F_ALEATORIC], fs[F_EPISTEMIC] = t, a, e
        sw_push(self.srt, self.hist, self.ist, e)

    def verdict(self) -> ModuleResult:
        p = self.params
        have = int(self.ist[SW_PUSHES]) - 1
        if have < p["min_history"]:
            return insufficient(self.name, max(have, 0), int(p["min_history"]), math.nan, "bars of history")
        e, q = float(self.fs[F_EPISTEMIC]), float(self.fs[F_THRESHOLD])
        if not math.isfinite(e):
            return self._result(math.nan, False, q, "no model probabilities on this bar")
        ok = e <= q
        msg = (
            f"epistemic {e:.5f} nats {'<=' if ok else '>'} rolling {p['quantile']:.0%} quantile {q:.5f} "
            f"(total {self.fs[F_TOTAL]:.4f}, aleatoric {self.fs[F_ALEATORIC]:.4f})"
        )
        return self._result(e, ok, q, msg)

    def warm_up(self) -> None:
        ist = np.zeros(2, np.int64)
        sw_push(np.zeros(2), np.zeros(2), ist, 0.5)
        sw_quantile(np.zeros(2), ist, 0.5)
