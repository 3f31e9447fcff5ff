"""UncertaintyDecomposition — how much of the ensemble's uncertainty is disagreement between its members.

For M members with P(up) = p_m and mean p̄ (Depeweg et al. 2018, *Decomposition of uncertainty in Bayesian deep
learning*, eq. 4; in nats):

    total     = H(p̄)
    aleatoric = (1/M) Σ_m H(p_m)          (what each member considers irreducible noise)
    epistemic = total − aleatoric          (the mutual information between the prediction and the member)

with H the binary entropy. The members are the three calibrated Layer-1 boosters (CatBoost virtual ensembles are
not used). Pass rule: epistemic uncertainty at most its rolling ``quantile`` (0.9) over the last ``history`` bars
— the members disagree no more than usual.
"""

from __future__ import annotations

import math

import numpy as np
from fxgate.modules._base import CertaintyModule, Context, ModuleResult, insufficient, register
from fxgate.modules._common import entropy, ring_quantile


def decompose(p: np.ndarray) -> tuple[float, float, float]:
    """(total, aleatoric, epistemic) entropy of an ensemble's P(up) values, nats."""
    total = entropy(float(np.mean(p)))
    alea = float(np.mean([entropy(float(x)) for x in p]))
    return total, alea, total - alea


@register("uncertainty")
class UncertaintyDecomposition(CertaintyModule):
    defaults = {"history": 500, "min_history": 100, "quantile": 0.9}
    state_keys = ("hist", "ist", "fs")

    def reset(self) -> None:
        self.hist = np.zeros(int(self.params["history"]))
        self.ist = np.zeros(1, dtype=np.int64)
        self.fs = np.full(4, math.nan)  # total, aleatoric, epistemic, threshold

    def update(self, ctx: Context) -> None:
        if ctx.probs is None or not np.all(np.isfinite(ctx.probs)):
            self.fs[:] = math.nan
            return
        t, a, e = decompose(ctx.probs)
        n = int(self.ist[0])
        p = self.params
        self.fs[3] = ring_quantile(self.hist, n, int(p["history"]), float(p["quantile"])) if n else math.nan
        self.fs[0], self.fs[1], self.fs[2] = t, a, e
        self.hist[n % len(self.hist)] = e
        self.ist[0] = n + 1

    def verdict(self) -> ModuleResult:
        p = self.params
        have = int(self.ist[0]) - 1
        if have < p["min_history"]:
            return insufficient(self.name, max(have, 0), int(p["min_history"]), math.nan, "bars of history")
        e, q = float(self.fs[2]), float(self.fs[3])
        if not math.isfinite(e):
            return self._result(math.nan, False, q, "no model probabilities on this bar")
        ok = e <= q
        msg = (f"epistemic {e:.5f} nats {'<=' if ok else '>'} rolling {p['quantile']:.0%} quantile {q:.5f} "
               f"(total {self.fs[0]:.4f}, aleatoric {self.fs[1]:.4f})")  # fmt: skip
        return self._result(e, ok, q, msg)

    def warm_up(self) -> None:
        ring_quantile(np.zeros(3), 2, 3, 0.5)
