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

from fxgate.engine.core.jit import kernel
from fxgate.modules._base import CertaintyModule, Context, ModuleResult, insufficient, register
from fxgate.modules._common import SW_N, SW_PUSHES, entropy, sw_push, sw_quantile
from fxgate.modules._fusion import FusedStep

F_TOTAL, F_ALEATORIC, F_EPISTEMIC, F_THRESHOLD = range(4)


def decompose(p: np.ndarray) -> tuple[float, float, float]:
    """(total, aleatoric, epistemic) entropy of an ensemble's P(up) values, nats. Both sums run left to right (not
    ``sum()``, which compensates from Python 3.12 on), so :func:`_decompose` gives the same bits."""
    vals = [float(x) for x in p]
    t = 0.0
    h = 0.0
    for x in vals:
        t += x
        h += entropy(x)
    total = entropy(t / len(vals))
    alea = h / len(vals)
    return total, alea, total - alea


_entropy = kernel(entropy, fastmath=False)  # the same function compiled: the same operations, the same bits


def _decompose_py(p):  # type: ignore[no-untyped-def]
    """:func:`decompose` of a float64 array, compiled: (total, aleatoric, epistemic), the same bits."""
    k = p.shape[0]
    t = 0.0
    h = 0.0
    for i in range(k):
        t += p[i]
        h += _entropy(p[i])
    total = _entropy(t / k)
    alea = h / k
    return total, alea, total - alea


_decompose = kernel(_decompose_py, fastmath=False)


def _uncertainty_fused_py(hist, srt, ist, fs, has_probs, probs, quantile):  # type: ignore[no-untyped-def]
    """``UncertaintyDecomposition.update`` in the fused step (``fxgate.modules._fusion``): no (or a non-finite)
    probability leaves ``fs`` all NaN; else the decomposition, the threshold from the window before this bar, and
    the epistemic value pushed into the window."""
    ok = has_probs != 0
    if ok:
        for i in range(probs.shape[0]):
            if not math.isfinite(probs[i]):
                ok = False
    if not ok:
        fs[:] = np.nan
        return
    t, a, e = _decompose(probs)
    fs[F_THRESHOLD] = sw_quantile(srt, ist, quantile) if ist[SW_N] else np.nan
    fs[F_TOTAL] = t
    fs[F_ALEATORIC] = a
    fs[F_EPISTEMIC] = e
    sw_push(srt, hist, ist, e)


_uncertainty_fused = kernel(_uncertainty_fused_py, fastmath=False)


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

    def fused_step(self, timeframe: str) -> FusedStep:
        params = (float(self.params["quantile"]),)
        return FusedStep(_uncertainty_fused, self.state_keys, ("has_probs", "probs"), params)

    def verdict(self) -> ModuleResult:
        p = self.params
        have = int(self.ist[SW_PUSHES]) - 1
        if have < p["min_history"]:
            return insufficient(self.name, max(have, 0), int(p["min_history"]), math.nan, "bars of history")
        e, q = float(self.fs[F_EPISTEMIC]), float(self.fs[F_THRESHOLD])
        if not math.isfinite(e):
            return self._result(math.nan, False, q, "no model probabilities on this bar")
        ok = e <= q
        total, aleatoric = float(self.fs[F_TOTAL]), float(self.fs[F_ALEATORIC])
        return self._result(
            e,
            ok,
            q,
            lambda: (
                f"epistemic {e:.5f} nats {'<=' if ok else '>'} rolling {p['quantile']:.0%} quantile {q:.5f} "
                f"(total {total:.4f}, aleatoric {aleatoric:.4f})"
            ),
        )

    def warm_up(self) -> None:
        ist = np.zeros(2, np.int64)
        sw_push(np.zeros(2), np.zeros(2), ist, 0.5)
        sw_quantile(np.zeros(2), ist, 0.5)
