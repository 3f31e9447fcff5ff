"""ICIR — is the signal's information coefficient stable from one period to the next?

Every matured forecast (:class:`~fxgate.modules._base.Matured`; in-sample bars, whose ``probs`` is None, and
non-finite values skipped) gives a pair: the signal s = mean P(up) − 0.5 at entry and the realized move
r = log(exit / entry) over the horizon. Pairs fill periods of ``period`` forecasts (24: a day of H1 bars); each full
period's IC is the Pearson correlation of its pairs (a period with a constant signal or move has none and is
dropped). Over the last ``periods`` period ICs (Grinold & Kahn 2000, *Active Portfolio Management*, ch. 6, the
information ratio of the IC; Qian, Hua & Sorensen 2007, *Quantitative Equity Portfolio Management*, ch. 4):

    ICIR = mean(IC_k) / sd(IC_k)            (sd with ddof = 1)

Amortized O(1) per forecast (O(period) once a period, O(periods) for the ring's moments; ``fxgate.modules._ic``).
A positive mean IC that swings wildly between periods is luck more than edge; ICIR is the t-like ratio that says.

Pass rule (default): ICIR ≥ ``threshold`` = 0.5, with at least ``min_periods`` period ICs; fewer fail closed
("insufficient data: 3/10 periods"), and so does a zero sd (every period's IC equal: the ratio is undefined).
Score: ICIR. Reference in the tests: a naive loop with numpy.

State (``fxgate.modules._ic``, period ICs; slots are module-level ints)::

    ps, pr           the period being filled: its s and r
    pics             ring of the last ``periods`` period ICs
    ist  I_FILL      pairs in the period being filled
         I_PERIODS   period ICs pushed so far
         I_DROPPED   full periods whose IC was undefined
    fs   F_LAST_IC   the last period's IC
         F_IC_MEAN   mean of the ring
         F_IC_SD     sd of the ring (ddof = 1)
         F_ICIR      F_IC_MEAN / F_IC_SD
"""

from __future__ import annotations

import math

from fxgate.engine.core.jit import kernel
from fxgate.modules import _ic
from fxgate.modules._base import CertaintyModule, Context, ModuleResult, insufficient, register
from fxgate.modules._fusion import M_ENTRY, M_EXIT, M_HAS_PROBS, FusedStep
from fxgate.modules._ic import (
    F_IC_MEAN,
    F_IC_SD,
    F_ICIR,
    F_LAST_IC,
    I_DROPPED,
    I_FILL,
    I_PERIODS,
    PeriodIc,
    _icir_pair,
)

__all__ = ["Icir", "I_FILL", "I_PERIODS", "I_DROPPED", "F_LAST_IC", "F_IC_MEAN", "F_IC_SD", "F_ICIR"]


def _icir_fused_py(ps, pr, pics, ist, fs, out3, n_mat, mat, mprobs):  # type: ignore[no-untyped-def]
    """``Icir.update`` in the fused step (``fxgate.modules._fusion``): every matured forecast with probabilities into
    the period ICs, in delivery order (:func:`~fxgate.modules._ic._icir_pair`, as ``PeriodIc.push_matured``)."""
    for i in range(n_mat):
        if mat[i, M_HAS_PROBS] != 0:
            _icir_pair(ps, pr, pics, ist, fs, out3, mprobs[i], mat[i, M_ENTRY], mat[i, M_EXIT])


_icir_fused = kernel(_icir_fused_py, fastmath=False)

#: the fused kernel's state: the period ICs' arrays and the push's scratch, in argument order
_FUSED_STATE = ("st.ps", "st.pr", "st.pics", "st.ist", "st.fs", "st._out")


@register("icir")
class Icir(CertaintyModule):
    title = "ICIR"
    formula = "ICIR = mean(IC per period) / sd(IC per period)"
    citation = "Grinold & Kahn (2000), Active Portfolio Management, ch. 6"
    rule = "mean/sd of the last `periods` period ICs (each `period` forecasts) >= `threshold` (0.5)"
    defaults = {"period": 24, "periods": 20, "min_periods": 10, "threshold": 0.5}
    state_keys = ("ps", "pr", "pics", "ist", "fs")

    def reset(self) -> None:
        p = self.params
        if not 2 <= int(p["min_periods"]) <= int(p["periods"]):
            raise ValueError(f"icir min_periods must be between 2 and periods = {p['periods']}; got {p['min_periods']}")
        self.st = PeriodIc(int(p["period"]), int(p["periods"]))

    ps = property(lambda self: self.st.ps, lambda self, v: setattr(self.st, "ps", v))
    pr = property(lambda self: self.st.pr, lambda self, v: setattr(self.st, "pr", v))
    pics = property(lambda self: self.st.pics, lambda self, v: setattr(self.st, "pics", v))
    ist = property(lambda self: self.st.ist, lambda self, v: setattr(self.st, "ist", v))
    fs = property(lambda self: self.st.fs, lambda self, v: setattr(self.st, "fs", v))

    def update(self, ctx: Context) -> None:
        for m in ctx.matured:
            if m.probs is not None:  # signal and move computed, checked and pushed in one compiled call
                self.st.push_matured(m.probs, m.entry_price, m.exit_price)

    def fused_step(self, timeframe: str) -> FusedStep:
        return FusedStep(_icir_fused, _FUSED_STATE, ("n_mat", "mat", "mprobs"))

    def verdict(self) -> ModuleResult:
        p = self.params
        thr = float(p["threshold"])
        k, need = self.st.n, int(p["min_periods"])
        if k < need:
            return insufficient(self.name, k, need, thr, "periods")
        fs = self.fs.tolist()  # copies: the reason is formatted when read
        v = fs[F_ICIR]

        def detail() -> str:
            return (
                f"mean IC {fs[F_IC_MEAN]:+.4f}, sd {fs[F_IC_SD]:.4f} over the last {k} periods of {p['period']} "
                "forecasts"
            )

        if not math.isfinite(v):
            return self._result(
                math.nan, False, thr, lambda: f"ICIR undefined (the period ICs do not vary): {detail()}"
            )
        ok = v >= thr
        return self._result(v, ok, thr, lambda: f"ICIR {v:+.3f} {'>=' if ok else '<'} {thr}: {detail()}")

    def warm_up(self) -> None:
        _ic.warm_up()
