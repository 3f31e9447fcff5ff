"""CertaintyScore — one bounded number for "does the signal source still have an edge?".

It combines three pieces of evidence, each first turned into a number in [0, 1] that grows with the evidence:

    C = (w1·z(IC) + w2·z(ICIR) + w3·(1 − p_edge)) / (w1 + w2 + w3)

* z(IC) = Φ(t_IC): t_IC is the Newey–West t of the window IC (the InformationEdge statistic: OLS slope of the
  horizon's log return on s = mean P(up) − 0.5, Bartlett HAC, L = max(``nw_lags``, ceil(``lag_mult``·(h − 1)))
  lags), so z(IC) = 1 − its one-sided p-value under the normal approximation;
* z(ICIR) = Φ(√k·ICIR): ICIR = mean/sd of the last k period ICs (the ICIR statistic), and √k·ICIR is the t of the
  mean period IC, so z(ICIR) is again 1 − a one-sided p-value (treating period ICs as independent);
* p_edge = 1 − Φ(t_pnl): the one-sided p-value of H0 "mean candidate P&L ≤ 0" (``Outcome.pnl``, after the full
  spread), t_pnl = mean / its Newey–West standard error over the last ``pnl_window`` candidate outcomes (L lags in
  outcomes: overlapping candidates).

Φ maps each t-like statistic into (0, 1); weights are non-negative and normalized, so C ∈ [0, 1], and C is
monotone: raising t_IC or ICIR, or lowering p_edge, never lowers it (tested by hypothesis). A weight of 0 drops
its piece (and its data requirement).

A module cannot read another module's state, so CertaintyScore keeps its own IC window, period ICs and P&L window
(the shared kernels of ``fxgate.modules._ic``). p_edge is the per-bar HAC test, not EdgeProof's SPA: the SPA is a
scheduled bootstrap (thousands of resamples every ``every`` bars) and its p-value changes only on recompute, while
this one is O(L) per outcome (running sums, ``fxgate.modules._ic``) and moves with every outcome, as the other two
pieces do; the SPA remains the stricter test (against the benchmark, over the trials) in EdgeProof.

Pass rule: C ≥ ``threshold``. **The threshold is not meant to be hand-set**: the calibration issue (#17, certified
precision) is to choose it so that signals passing it reach a certified precision. Until then the default 0.9 is
an uncertified default, and the verdict says so. Data requirements: ``min_pairs`` forecasts in the IC window,
``min_periods`` period ICs and ``min_outcomes`` candidate outcomes; fewer fail closed ("insufficient data").
Score: C.

State (``fxgate.modules._ic``; slots are module-level ints of ``_ic``)::

    ws, wr, xr, yr, ist, fs    the IC window (ist/fs slots I_PAIRS, F_EW_W … F_NW_T, named below)
    ps, pr, pics, qist, qfs    the period ICs (slots _ic.I_FILL … _ic.F_ICIR)
    vals, hp, eist, efs        the candidate P&L window and its running sums (slots _ic.I_VALUES … _ic.F_SUM)
"""

from __future__ import annotations

import math

from fxgate.engine.core.jit import kernel
from fxgate.modules import _ic
from fxgate.modules._base import CertaintyModule, Context, ModuleResult, insufficient, register
from fxgate.modules._fusion import M_ENTRY, M_EXIT, M_HAS_PROBS, O_DIRECTION, O_ENTRY, O_EXIT, O_SPREAD, FusedStep
from fxgate.modules._ic import (
    F_EW_IC,
    F_EW_MR,
    F_EW_MS,
    F_EW_RR,
    F_EW_SR,
    F_EW_SS,
    F_EW_W,
    F_IC,
    F_NW_T,
    F_RANK_IC,
    F_SLOPE,
    I_PAIRS,
    HacMean,
    IcWindow,
    PeriodIc,
    _cs_pair,
    _hac_mean_push,
)

__all__ = [
    "CertaintyScore",
    "certainty",
    "I_PAIRS",
    "F_EW_W",
    "F_EW_MS",
    "F_EW_MR",
    "F_EW_SS",
    "F_EW_RR",
    "F_EW_SR",
    "F_EW_IC",
    "F_IC",
    "F_RANK_IC",
    "F_SLOPE",
    "F_NW_T",
]


def certainty(
    t_ic: float, icir: float, k: int, p_edge: float, w_ic: float = 1.0, w_icir: float = 1.0, w_edge: float = 1.0
) -> float:
    """C = (w_ic·Φ(t_ic) + w_icir·Φ(√k·icir) + w_edge·(1 − p_edge)) / (w_ic + w_icir + w_edge) ∈ [0, 1].

    A piece with weight 0 is left out (whatever its value); NaN if a weighted piece is NaN. Weights must be ≥ 0 with
    a positive sum (checked by the module)."""
    total = 0.0
    wsum = w_ic + w_icir + w_edge
    if w_ic > 0:
        total += w_ic * _ic.phi(t_ic)
    if w_icir > 0:
        total += w_icir * _ic.phi(math.sqrt(k) * icir)
    if w_edge > 0:
        total += w_edge * (1.0 - p_edge)
    # no clamp needed: each piece is in [0, 1] and rounding is monotone, so 0 <= total <= wsum (summed in the same
    # order) and the ratio stays in [0, 1]; the bounds test would catch a missing normalization
    return total / wsum


# fmt: off
def _certainty_score_fused_py(  # type: ignore[no-untyped-def]
    ws, wr, xr, yr, ist, fs, u, ps, pr, pics, qist, qfs, out3, vals, hp, eist, efs,
    n_out, out, n_mat, mat, mprobs, lam, lags,
):
    """``CertaintyScore.update`` in the fused step (``fxgate.modules._fusion``): every matured forecast with
    probabilities into the IC window and the period ICs (:func:`~fxgate.modules._ic._cs_pair`), then every due
    outcome's finite P&L (``Outcome.pnl``: direction·(exit − entry) − spread) into the P&L window."""
    for i in range(n_mat):
        if mat[i, M_HAS_PROBS] != 0:
            _cs_pair(
                ws, wr, xr, yr, ist, fs, u, ps, pr, pics, qist, qfs, out3,
                mprobs[i], mat[i, M_ENTRY], mat[i, M_EXIT], lam, lags,
            )
    for i in range(n_out):
        x = out[i, O_DIRECTION] * (out[i, O_EXIT] - out[i, O_ENTRY]) - out[i, O_SPREAD]
        if math.isfinite(x):
            _hac_mean_push(vals, hp, eist, efs, x)
# fmt: on


_certainty_score_fused = kernel(_certainty_score_fused_py, fastmath=False)

#: the fused kernel's state (the IC window, the period ICs, the P&L window, with the pushes' scratch), in order
_FUSED_STATE = (
    "win.ws", "win.wr", "win.xr", "win.yr", "win.ist", "win.fs", "win._u",
    "per.ps", "per.pr", "per.pics", "per.ist", "per.fs", "per._out",
    "pnl.vals", "pnl.hp", "pnl.ist", "pnl.fs",
)  # fmt: skip


@register("certainty_score")
class CertaintyScore(CertaintyModule):
    title = "CertaintyScore"
    formula = "C = w1 Phi(t_IC) + w2 Phi(sqrt(k) ICIR) + w3 (1 - p_edge), weights normalized"
    citation = "Grinold & Kahn (2000); Newey & West (1987)"
    rule = "C = weighted mean of Phi(t_IC), Phi(sqrt(k) ICIR), 1 - p_edge >= `threshold` (to be certified, #17)"
    defaults = {
        "threshold": 0.9,  # an uncertified default: the calibration issue (#17) certifies it
        "w_ic": 1.0,
        "w_icir": 1.0,
        "w_edge": 1.0,
        "window": 250,
        "min_pairs": 100,
        "half_life": 100.0,
        "period": 24,
        "periods": 20,
        "min_periods": 10,
        "pnl_window": 250,
        "min_outcomes": 30,
        "nw_lags": 4,
        "lag_mult": 2.0,
        "horizon": 1,
    }
    gate_settings = ("horizon",)
    certify_param = "threshold"
    state_keys = ("ws", "wr", "xr", "yr", "ist", "fs", "ps", "pr", "pics", "qist", "qfs", "vals", "hp", "eist", "efs")

    def reset(self) -> None:
        p = self.params
        w = [float(p[k]) for k in ("w_ic", "w_icir", "w_edge")]
        if not all(math.isfinite(v) and v >= 0 for v in w) or sum(w) <= 0:
            raise ValueError(f"certainty_score weights w_ic, w_icir, w_edge must be >= 0 with a positive sum; got {w}")
        if not 2 <= int(p["min_periods"]) <= int(p["periods"]):
            raise ValueError(
                f"certainty_score min_periods must be between 2 and periods = {p['periods']}; got {p['min_periods']}"
            )
        if int(p["min_pairs"]) < 3 or int(p["min_outcomes"]) < 2:
            raise ValueError("certainty_score needs min_pairs >= 3 and min_outcomes >= 2")
        self.win = IcWindow(int(p["window"]))
        self.per = PeriodIc(int(p["period"]), int(p["periods"]))
        self._lam = _ic.decay(p["half_life"])
        self._lags = _ic.nw_lags(int(p["horizon"]), int(p["nw_lags"]), float(p["lag_mult"]))
        self.pnl = HacMean(int(p["pnl_window"]), self._lags)

    ws = property(lambda self: self.win.ws, lambda self, v: setattr(self.win, "ws", v))
    wr = property(lambda self: self.win.wr, lambda self, v: setattr(self.win, "wr", v))
    xr = property(lambda self: self.win.xr, lambda self, v: setattr(self.win, "xr", v))
    yr = property(lambda self: self.win.yr, lambda self, v: setattr(self.win, "yr", v))
    ist = property(lambda self: self.win.ist, lambda self, v: setattr(self.win, "ist", v))
    fs = property(lambda self: self.win.fs, lambda self, v: setattr(self.win, "fs", v))
    ps = property(lambda self: self.per.ps, lambda self, v: setattr(self.per, "ps", v))
    pr = property(lambda self: self.per.pr, lambda self, v: setattr(self.per, "pr", v))
    pics = property(lambda self: self.per.pics, lambda self, v: setattr(self.per, "pics", v))
    qist = property(lambda self: self.per.ist, lambda self, v: setattr(self.per, "ist", v))
    qfs = property(lambda self: self.per.fs, lambda self, v: setattr(self.per, "fs", v))
    vals = property(lambda self: self.pnl.vals, lambda self, v: setattr(self.pnl, "vals", v))
    hp = property(lambda self: self.pnl.hp, lambda self, v: setattr(self.pnl, "hp", v))
    eist = property(lambda self: self.pnl.ist, lambda self, v: setattr(self.pnl, "ist", v))
    efs = property(lambda self: self.pnl.fs, lambda self, v: setattr(self.pnl, "fs", v))

    def update(self, ctx: Context) -> None:
        for m in ctx.matured:
            if m.probs is not None:  # the pair into the IC window and the period ICs, in one compiled call
                w, q = self.win, self.per
                _cs_pair(
                    w.ws, w.wr, w.xr, w.yr, w.ist, w.fs, w._u, q.ps, q.pr, q.pics, q.ist, q.fs, q._out,
                    m.probs, m.entry_price, m.exit_price, self._lam, self._lags,
                )  # fmt: skip
        for o in ctx.outcomes:
            x = o.pnl
            if math.isfinite(x):
                self.pnl.push(x)

    def fused_step(self, timeframe: str) -> FusedStep:
        inputs = ("n_out", "out", "n_mat", "mat", "mprobs")
        return FusedStep(_certainty_score_fused, _FUSED_STATE, inputs, (float(self._lam), int(self._lags)))

    def components(self) -> dict[str, float]:
        """The inputs of C: t_IC, ICIR and its k, t_pnl and p_edge (NaN where undefined)."""
        t_pnl = float(self.efs[_ic.F_T])
        return {
            "t_ic": float(self.fs[F_NW_T]),
            "icir": float(self.qfs[_ic.F_ICIR]),
            "k": float(self.per.n),
            "t_pnl": t_pnl,
            "p_edge": _ic.phi(-t_pnl),
        }

    def verdict(self) -> ModuleResult:
        p = self.params
        thr = float(p["threshold"])
        w_ic, w_icir, w_edge = float(p["w_ic"]), float(p["w_icir"]), float(p["w_edge"])
        win, per, pnl = self.win, self.per, self.pnl
        n_ic = min(int(win.ist[I_PAIRS]), len(win.ws))
        k = min(int(per.ist[_ic.I_PERIODS]), len(per.pics))
        n_pnl = min(int(pnl.ist[_ic.I_VALUES]), len(pnl.vals))
        if w_ic > 0 and n_ic < int(p["min_pairs"]):
            return insufficient(self.name, n_ic, int(p["min_pairs"]), thr, "forecasts (IC)")
        if w_icir > 0 and k < int(p["min_periods"]):
            return insufficient(self.name, k, int(p["min_periods"]), thr, "periods (ICIR)")
        if w_edge > 0 and n_pnl < int(p["min_outcomes"]):
            return insufficient(self.name, n_pnl, int(p["min_outcomes"]), thr, "candidate outcomes (P&L)")
        # components() without its dict (Python floats: the same values)
        t_ic = win.fs.tolist()[F_NW_T]
        icir = per.fs.tolist()[_ic.F_ICIR]
        p_edge = _ic.phi(-pnl.fs.tolist()[_ic.F_T])
        score = certainty(t_ic, icir, k, p_edge, w_ic, w_icir, w_edge)

        def detail() -> str:
            return (
                f"t_IC {t_ic:+.2f}, ICIR {icir:+.3f} over {k} periods, p_edge {p_edge:.4f} "
                f"(weights {w_ic:g}/{w_icir:g}/{w_edge:g}); threshold {thr} is an uncertified default until the "
                f"calibration issue (#17) certifies it"
            )

        if not math.isfinite(score):
            return self._result(math.nan, False, thr, lambda: f"C undefined (a constant series): {detail()}")
        ok = score >= thr
        return self._result(score, ok, thr, lambda: f"C {score:.3f} {'>=' if ok else '<'} {thr}: {detail()}")

    def warm_up(self) -> None:
        _ic.warm_up()
