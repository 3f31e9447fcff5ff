"""InformationEdge (IC) — does the ensemble's signal still rank the moves that follow it?

Every accepted bar's forecast matures ``horizon`` bars later (:class:`~fxgate.modules._base.Matured`); a bar
inside the Layer-1 training window (``probs`` None) and a non-finite signal or move are skipped. Per matured
forecast the pair is the signal s = mean P(up) − 0.5 at entry and the realized move r = log(exit / entry). The
time-series information coefficient (Grinold 1989, *The fundamental law of active management*; Grinold & Kahn
2000, ch. 6) is their correlation, computed three ways (``fxgate.modules._ic``, formulas there):

* EWMA IC, O(1): Pearson's correlation with weights 2^(−age/``half_life``), from exponentially weighted co-moments;
* IC over the last ``window`` pairs, exact (two-pass) — the one the pass rule and the t-statistic use;
* RankIC (Spearman, average ranks for ties) over the same window, O(window) per pair (each pair's rank kept
  exactly as an integer, updated in one pass per push).

Significance: the Newey–West (1987) t of the OLS slope β of r on (1, s) over the window — β has the IC's sign and
t(β) is the regression test of H0: IC ≤ 0 — with a Bartlett-kernel HAC standard error and L lags, no small-sample
correction (exactly ``statsmodels`` OLS ``fit(cov_type="HAC", cov_kwds={"maxlags": L}).tvalues[1]``). Forecasts
over h bars overlap by h − 1 bars, so L = max(``nw_lags``, ceil(``lag_mult``·(h − 1))) ≥ h − 1 (see
``_ic.nw_lags`` for why the default multiple is 2).

Pass rule (default): IC > 0 and t ≥ ``t_min`` = 2 (one-sided, ≈ 2.3% level under the normal approximation), with
at least ``min_pairs`` pairs in the window; fewer fail closed ("insufficient data: 12/100 forecasts"). Score: t.

References in the tests: ``scipy.stats.pearsonr`` / ``spearmanr`` on the same window (1e-10), ``statsmodels`` OLS
HAC for t (1e-8), a naive weighted correlation for the EWMA IC, and a size/power simulation.

State (``fxgate.modules._ic``, IC window; slots are module-level ints)::

    ws, wr            the window's s and r, arrival order (ring of capacity ``window``)
    xr, yr            int64, each pair's doubled average rank in the window (same slots as ws, wr)
    ist  I_PAIRS      pairs pushed so far
    fs   F_EW_W       EWMA weight sum W_t
         F_EW_MS      EWMA mean of s
         F_EW_MR      EWMA mean of r
         F_EW_SS      EWMA co-moment S^{ss}
         F_EW_RR      EWMA co-moment S^{rr}
         F_EW_SR      EWMA co-moment S^{sr}
         F_EW_IC      EWMA IC
         F_IC         window Pearson IC
         F_RANK_IC    window Spearman RankIC
         F_SLOPE      OLS slope β of r on s over the window
         F_NW_T       Newey–West t of β
"""

from __future__ import annotations

import math

from fxgate.engine.core.jit import kernel
from fxgate.modules import _ic
from fxgate.modules._base import CertaintyModule, Context, ModuleResult, insufficient, register
from fxgate.modules._fusion import M_ENTRY, M_EXIT, M_HAS_PROBS, FusedStep
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
    IcWindow,
    _ic_pair,
)

__all__ = [
    "InformationEdge",
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


def _information_edge_fused_py(ws, wr, xr, yr, ist, fs, u, n_mat, mat, mprobs, lam, lags):  # type: ignore[no-untyped-def]
    """``InformationEdge.update`` in the fused step (``fxgate.modules._fusion``): every matured forecast with
    probabilities into the IC window, in delivery order (:func:`~fxgate.modules._ic._ic_pair`, as ``push_matured``)."""
    for i in range(n_mat):
        if mat[i, M_HAS_PROBS] != 0:
            _ic_pair(ws, wr, xr, yr, ist, fs, u, mprobs[i], mat[i, M_ENTRY], mat[i, M_EXIT], lam, lags)


_information_edge_fused = kernel(_information_edge_fused_py, fastmath=False)

#: the fused kernel's state: the IC window's arrays and its push scratch, in argument order
_FUSED_STATE = ("win.ws", "win.wr", "win.xr", "win.yr", "win.ist", "win.fs", "win._u")


@register("information_edge")
class InformationEdge(CertaintyModule):
    title = "InformationEdge (IC)"
    formula = "IC = corr(P(up) - 1/2, log return over the horizon); Newey-West t of the IC slope"
    citation = "Grinold (1989); Grinold & Kahn (2000); Newey & West (1987)"
    rule = "IC(ensemble signal, realized return) > 0 with Newey-West t >= `t_min` (2) over the last `window` forecasts"
    defaults = {
        "window": 250,
        "min_pairs": 100,
        "half_life": 100.0,
        "t_min": 2.0,
        "nw_lags": 4,
        "lag_mult": 2.0,
        "horizon": 1,
    }
    gate_settings = ("horizon",)
    state_keys = ("ws", "wr", "xr", "yr", "ist", "fs")

    def reset(self) -> None:
        p = self.params
        if int(p["min_pairs"]) < 3:
            raise ValueError(f"information_edge min_pairs must be >= 3; got {p['min_pairs']}")
        self.win = IcWindow(int(p["window"]))
        self._lam = _ic.decay(p["half_life"])
        self._lags = _ic.nw_lags(int(p["horizon"]), int(p["nw_lags"]), float(p["lag_mult"]))

    ws = property(lambda self: self.win.ws, lambda self, v: setattr(self.win, "ws", v))
    wr = property(lambda self: self.win.wr, lambda self, v: setattr(self.win, "wr", v))
    xr = property(lambda self: self.win.xr, lambda self, v: setattr(self.win, "xr", v))
    yr = property(lambda self: self.win.yr, lambda self, v: setattr(self.win, "yr", v))
    ist = property(lambda self: self.win.ist, lambda self, v: setattr(self.win, "ist", v))
    fs = property(lambda self: self.win.fs, lambda self, v: setattr(self.win, "fs", v))

    @property
    def lags(self) -> int:
        """The Newey–West lag L in use."""
        return self._lags

    def update(self, ctx: Context) -> None:
        for m in ctx.matured:
            if m.probs is not None:  # signal and move computed, checked and pushed in one compiled call
                self.win.push_matured(m.probs, m.entry_price, m.exit_price, self._lam, self._lags)

    def fused_step(self, timeframe: str) -> FusedStep:
        return FusedStep(
            _information_edge_fused, _FUSED_STATE, ("n_mat", "mat", "mprobs"), (float(self._lam), int(self._lags))
        )

    def stats(self) -> dict[str, float]:
        """The window's statistics (NaN where undefined)."""
        fs = self.fs
        return {
            "ic": float(fs[F_IC]),
            "rank_ic": float(fs[F_RANK_IC]),
            "ewma_ic": float(fs[F_EW_IC]),
            "slope": float(fs[F_SLOPE]),
            "nw_t": float(fs[F_NW_T]),
            "pairs": float(self.win.n),
        }

    def verdict(self) -> ModuleResult:
        p = self.params
        t_min = float(p["t_min"])
        win = self.win
        n, need = min(int(win.ist[I_PAIRS]), len(win.ws)), int(p["min_pairs"])
        if n < need:
            return insufficient(self.name, n, need, t_min, "forecasts")
        fs = win.fs.tolist()  # Python floats: cheaper to index and format than numpy scalars (same digits)
        ic, t, lags = fs[F_IC], fs[F_NW_T], self._lags

        def detail() -> str:
            return (
                f"IC {ic:+.4f} (RankIC {fs[F_RANK_IC]:+.4f}, EWMA {fs[F_EW_IC]:+.4f}) over the last {n} forecasts, "
                f"Newey-West t {t:+.2f} ({lags} lags)"
            )

        if not (math.isfinite(ic) and math.isfinite(t)):
            return self._result(math.nan, False, t_min, lambda: f"IC undefined (constant signal or move): {detail()}")
        ok = ic > 0 and t >= t_min
        return self._result(t, ok, t_min, lambda: f"{detail()} {'>=' if t >= t_min else '<'} {t_min}")

    def warm_up(self) -> None:
        _ic.warm_up()
