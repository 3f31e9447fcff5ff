"""ConformalPrediction — a distribution-free interval for the next-horizon log return; trade only when the whole
interval lies beyond the cost on the trade's side.

**Point predictor.** ŷ_t is a causal, streaming regression of the realized horizon log return r on the entry signal
s = mean(P(up)) − 0.5 of the Layer-1 models, fitted only on pairs whose horizon has already ended (``Matured``):
exponentially weighted least squares with half-life ``halflife`` pairs (``predictor="ewma"``; weighted means and
co-moments by West's 1979 recursion, O(1) per pair), ŷ = r̄ + β(s − s̄) with β = C_sr / C_ss (β = 0 while the
signal has no spread), ŷ = 0 before the first pair. ``predictor="zero"`` uses ŷ ≡ 0 (then the interval is the
conformal interval of the return itself). Each bar's ŷ and the interval issued at entry are kept in a ring indexed
by ``bar_index % (horizon + 1)``; when that bar's ``Matured`` arrives (``entry_bar``) the nonconformity score is
S = |r − ŷ| with the ŷ *issued at entry* — the model is never refit on the point it is scoring (the pair is fed
to the regression only after it has been scored).

**Split conformal** (Vovk et al. 2005; Lei, G'Sell, Rinaldo, Tibshirani & Wasserman 2018, JASA 113(523)) on the
calibration window of the last ``window`` scores S_1..S_n: with k = ⌈(n + 1)(1 − α)⌉, q = S_(k) (the k-th smallest;
the quantile at level k/n) and the interval is ŷ ± q. k > n gives q = +∞ (an unbounded interval). For exchangeable
data P(r ∈ ŷ ± q) = k/(n + 1) ∈ [1 − α, 1 − α + 1/(n + 1)). This is exactly MAPIE 1.6's
``_compute_regression_quantile`` (level ⌈(n+1)(1−α)⌉/n with numpy's ``method="lower"``: the k-th order statistic;
numpy's ``"higher"`` at that level would be the (k+1)-th when k < n, one score too conservative).

**Adaptive Conformal Inference** (Gibbs & Candès 2021, NeurIPS, eq. 2; ``method="aci"``, the default): the interval
is built at level 1 − α_t and α_{t+1} = α_t + γ(α − err_t), err_t = 1 when the realized return fell outside the
interval issued at its entry (the closed interval: a return on a bound is covered). α_t is not clipped: α_t ≤ 0
gives k > n, an unbounded interval (err = 0), and α_t ≥ 1 gives k ≤ 0, the empty set (err = 1), exactly as in the
paper, so Prop. 4.1 holds: |mean err − α| ≤ (max(α_1, 1 − α_1) + γ)/(γT) after T checked intervals (with
``horizon`` = 1; with a longer horizon err arrives ``horizon`` bars late and the bound loosens by that delay).
Only intervals issued with at least ``min_scores`` calibration scores are checked and feed α_t.

Differences from MAPIE's ``TimeSeriesRegressor(method="aci")`` (tests compare where they agree): MAPIE's default
score there is the *signed* residual with two one-sided quantiles (an asymmetric interval; ``AbsoluteConformityScore(
sym=True)`` gives ours); it clips α_t to [0, 1] and at α_t = 1 returns ŷ ± min S instead of the empty set; it counts
a return equal to a bound as a miss; and it keys α by α rounded to 2 decimals (use α like 0.1).

**Pass rule.** Cost c = spread / close, the round trip's full spread in log-return units (to first order: a long
bought at the ask and sold at the bid earns log((P' − s/2)/(P + s/2)) ≈ r − s/P; fxgate's one cost convention).
Long (``direction`` > 0): pass when lower − c > ``min_margin``; short: when −c − upper > ``min_margin``; score =
that margin (log-return units). No candidate, no model probabilities, an unknown spread, an unbounded or empty
interval: fail with the reason. Fewer than ``min_scores`` scores: insufficient data. On H1 EURUSD a 90% interval of
a one-bar return is some ±0.3% wide, so the rule passes only for signals whose predicted move is that large: by
design a demanding filter.

State (``state_keys``; slots are module-level ints)::

    ebar           int ring (horizon + 1): the bar_index whose prediction sits in the slot, −1 when empty
    sig            ring: the signal s at that entry (the predictor's regressor once the outcome arrives)
    yhat, lo, hi   ring: ŷ and the interval [lo, hi] issued at that entry (lo = hi = NaN: no interval issued)
    scores, srt    the calibration window: the last ``window`` scores S in arrival order / sorted
    sst            the window's counters (``fxgate.modules._common`` SW_PUSHES, SW_N)
    ist  I_SCORED      scores pushed so far
         I_CHECKED     issued intervals whose outcome has been checked (T of Prop. 4.1)
         I_MISSES      of those, misses (Σ err_t)
         I_PAIRS       (s, r) pairs fed to the point predictor
         I_DIRECTION   the current bar's candidate direction (+1/−1, 0 none)
    fs   F_ALPHA_T     α_t, ACI's current miscoverage level (α under ``method="split"``)
         F_W           Σ of the predictor's exponential weights
         F_MS, F_MR    weighted means s̄, r̄
         F_CSS, F_CSR  weighted co-moments C_ss = Σ w(s − s̄)², C_sr = Σ w(s − s̄)(r − r̄)
         F_YHAT        the current bar's ŷ (NaN: no prediction on this bar)
         F_Q           the current bar's half-width q (NaN: no interval; ±inf: unbounded / empty)
         F_LO, F_HI    the current bar's interval
         F_COST        the current bar's cost c = spread / close (NaN: unknown)
"""

from __future__ import annotations

import math

import numpy as np

from fxgate.engine.core.jit import kernel
from fxgate.modules._base import CertaintyModule, Context, ModuleResult, insufficient, register
from fxgate.modules._common import COMPENSATED_SUM, SW_N, py_sum, sw_push
from fxgate.modules._fusion import M_ENTRY, M_ENTRY_BAR, M_EXIT, FusedStep

I_SCORED, I_CHECKED, I_MISSES, I_PAIRS, I_DIRECTION = range(5)
F_ALPHA_T, F_W, F_MS, F_MR, F_CSS, F_CSR, F_YHAT, F_Q, F_LO, F_HI, F_COST = range(11)


#: the signal's weighted variance below which the slope is set to 0 (a constant signal carries no information)
_MIN_VAR_S = 1e-12


def conformal_halfwidth(srt: np.ndarray, n: int, a: float) -> float:
    """The split-conformal half-width at miscoverage ``a`` from the ``n`` sorted scores ``srt[:n]``: the k-th
    smallest, k = ceil((n + 1)(1 - a)); +inf when k > n (also for a <= 0), -inf (the empty set) when k <= 0."""
    return _halfwidth(srt, n, a)


def _halfwidth_py(srt, n, a):  # type: ignore[no-untyped-def]
    k = math.ceil((1.0 - a) * (n + 1))
    if k > n:
        return np.inf
    if k <= 0:
        return -np.inf
    return srt[k - 1]


_halfwidth = kernel(_halfwidth_py, fastmath=False)


def _cp_score_py(ebar, sig, yhat, lo, hi, scores, srt, sst, ist, fs, entry_bar, r, alpha, gamma, aci, lam):  # type: ignore[no-untyped-def]
    """One matured outcome (entry ``entry_bar``, realized log return ``r``, finite: the wrapper checks): check the
    interval issued at entry (ACI step), push the score |r - ŷ_entry| into the calibration window, then feed the pair
    (s_entry, r) to the point predictor. An entry without a stored prediction (no probabilities then) is ignored."""
    cap = ebar.shape[0]
    j = entry_bar % cap
    if ebar[j] != entry_bar:
        return
    ebar[j] = -1
    s = sig[j]
    if not math.isnan(lo[j]):
        err = 1 if (r < lo[j] or r > hi[j]) else 0
        ist[I_CHECKED] += 1
        ist[I_MISSES] += err
        if aci:
            fs[F_ALPHA_T] += gamma * (alpha - err)
    sw_push(srt, scores, sst, abs(r - yhat[j]))
    ist[I_SCORED] += 1
    # exponentially weighted least squares of r on s (West 1979): weights lam^age, the new pair weight 1
    w = lam * fs[F_W] + 1.0
    ds = s - fs[F_MS]
    dr = r - fs[F_MR]
    fs[F_MS] += ds / w
    fs[F_MR] += dr / w
    fs[F_CSS] = lam * fs[F_CSS] + ds * (s - fs[F_MS])
    fs[F_CSR] = lam * fs[F_CSR] + ds * (r - fs[F_MR])
    fs[F_W] = w
    ist[I_PAIRS] += 1


def _cp_issue_py(
    ebar, sig, yhat, lo, hi, srt, sst, ist, fs, bar_index, s, cost, direction, alpha, aci, ewma, min_scores
):  # type: ignore[no-untyped-def]
    """This bar's prediction: ŷ from the predictor (``s`` NaN: none), the interval ŷ ± q at level 1 - α_t (ACI) or
    1 - α (split) once the window holds ``min_scores`` scores, stored at ``bar_index % cap`` for its outcome."""
    cap = ebar.shape[0]
    j = bar_index % cap
    fs[F_COST] = cost
    ist[I_DIRECTION] = direction
    if math.isnan(s):
        ebar[j] = -1
        fs[F_YHAT] = np.nan
        fs[F_Q] = np.nan
        fs[F_LO] = np.nan
        fs[F_HI] = np.nan
        return
    y = 0.0
    if ewma and ist[I_PAIRS] > 0:
        y = fs[F_MR]
        if fs[F_CSS] > _MIN_VAR_S * fs[F_W]:
            y += fs[F_CSR] / fs[F_CSS] * (s - fs[F_MS])
    n = sst[SW_N]
    q = np.nan
    a = fs[F_ALPHA_T] if aci else alpha
    if n >= min_scores:
        q = _halfwidth(srt, n, a)
    ebar[j] = bar_index
    sig[j] = s
    yhat[j] = y
    lo[j] = y - q
    hi[j] = y + q
    fs[F_YHAT] = y
    fs[F_Q] = q
    fs[F_LO] = y - q
    fs[F_HI] = y + q


_cp_score = kernel(_cp_score_py, fastmath=False)
_cp_issue = kernel(_cp_issue_py, fastmath=False)
# fastmath off: the order statistic's index ceil((n + 1)(1 - α_t)) is discontinuous in α_t, so α_t must be computed
# exactly as the Python twin and the references compute it (a contracted multiply-add changes the last bit)


def _cp_fused_py(  # type: ignore[no-untyped-def]
    ebar, sig, yhat, lo, hi, scores, srt, sst, ist, fs, close, spread, direction, bar_index, has_probs, probs,
    n_mat, mat, alpha, gamma, aci, lam, ewma, min_scores, compensated,
):  # fmt: skip
    """``ConformalPrediction.update`` in the fused step (``fxgate.modules._fusion``): a bad close clears the bar's
    interval; else every matured row with a finite log return (``Matured.log_return``) is scored, then this bar's
    prediction is issued from the signal mean(probs) - 0.5 (``_signal``: summed as this interpreter's ``sum()``)."""
    if not (math.isfinite(close) and close > 0):
        fs[F_YHAT] = math.nan
        fs[F_Q] = math.nan
        fs[F_LO] = math.nan
        fs[F_HI] = math.nan
        fs[F_COST] = math.nan
        ist[I_DIRECTION] = 0
        return
    for i in range(n_mat):
        e0 = mat[i, M_ENTRY]
        e1 = mat[i, M_EXIT]
        r = math.log(e1 / e0) if e0 > 0 and e1 > 0 else math.nan
        if math.isfinite(r):
            _cp_score(ebar, sig, yhat, lo, hi, scores, srt, sst, ist, fs, int(mat[i, M_ENTRY_BAR]), r, alpha, gamma,
                      aci, lam)  # fmt: skip
    cost = spread / close if math.isfinite(spread) and spread >= 0 else math.nan
    d = 1 if direction > 0 else (-1 if direction < 0 else 0)
    s = math.nan
    m = probs.shape[0]
    if has_probs != 0 and m > 0:
        s = py_sum(probs, compensated) / m - 0.5
        if not math.isfinite(s):
            s = math.nan
    _cp_issue(ebar, sig, yhat, lo, hi, srt, sst, ist, fs, bar_index, s, cost, d, alpha, aci, ewma, min_scores)


_cp_fused = kernel(_cp_fused_py, fastmath=False)


@register("conformal_prediction")
class ConformalPrediction(CertaintyModule):
    title = "ConformalPrediction"
    formula = "interval yhat +- S_(ceil((n+1)(1-a_t))), a_t+1 = a_t + g(a - err_t); pass: interval beyond cost"
    citation = "Lei et al. (2018); Gibbs & Candes (2021)"
    rule = "the conformal interval of the next-horizon return clears the spread on the trade's side (ACI, 90%)"
    defaults = {
        "alpha": 0.1,
        "method": "aci",
        "gamma": 0.005,
        "window": 500,
        "min_scores": 100,
        "predictor": "ewma",
        "halflife": 500.0,
        "min_margin": 0.0,
        "horizon": 1,
    }
    gate_settings = ("horizon",)
    state_keys = ("ebar", "sig", "yhat", "lo", "hi", "scores", "srt", "sst", "ist", "fs")

    def reset(self) -> None:
        p = self.params
        if p["method"] not in ("aci", "split"):
            raise ValueError(f"conformal_prediction method {p['method']!r} is not allowed; use 'aci' or 'split'")
        if p["predictor"] not in ("ewma", "zero"):
            raise ValueError(f"conformal_prediction predictor {p['predictor']!r} is not allowed; use 'ewma' or 'zero'")
        if not 0.0 < float(p["alpha"]) < 1.0:
            raise ValueError(f"conformal_prediction alpha = {p['alpha']}: must lie strictly between 0 and 1")
        if not 0.0 <= float(p["gamma"]) <= 1.0:
            raise ValueError(f"conformal_prediction gamma = {p['gamma']}: must lie in [0, 1]")
        if not 1 <= int(p["min_scores"]) <= int(p["window"]):
            raise ValueError(
                f"conformal_prediction min_scores = {p['min_scores']}: must be between 1 and window = {p['window']}"
            )
        if not float(p["halflife"]) > 0:
            raise ValueError(f"conformal_prediction halflife = {p['halflife']}: must be > 0 (in matured pairs)")
        cap = int(p["horizon"]) + 1
        w = int(p["window"])
        self.ebar = np.full(cap, -1, dtype=np.int64)
        self.sig = np.full(cap, np.nan)
        self.yhat = np.full(cap, np.nan)
        self.lo = np.full(cap, np.nan)
        self.hi = np.full(cap, np.nan)
        self.scores = np.zeros(w)
        self.srt = np.zeros(w)
        self.sst = np.zeros(2, dtype=np.int64)
        self.ist = np.zeros(5, dtype=np.int64)
        self.fs = np.zeros(11)
        self.fs[F_ALPHA_T] = float(p["alpha"])
        self.fs[F_YHAT] = self.fs[F_Q] = self.fs[F_LO] = self.fs[F_HI] = self.fs[F_COST] = np.nan
        self._lam = 0.5 ** (1.0 / float(p["halflife"]))

    @staticmethod
    def _signal(probs: np.ndarray | None) -> float:
        """s = mean P(up) - 0.5 (the ensemble's signal), NaN when there are no (finite) probabilities. A Python sum
        over the three members: np.mean costs ten times more on so short an array, and adds in the same order."""
        if probs is None or len(probs) == 0:
            return math.nan
        s = sum(probs.tolist()) / len(probs) - 0.5
        return s if math.isfinite(s) else math.nan

    def update(self, ctx: Context) -> None:
        p = self.params
        ist, fs = self.ist, self.fs
        c = ctx.bar.close
        if not (math.isfinite(c) and c > 0):  # a bad bar is skipped: nothing is scored or stored, no interval
            fs[F_YHAT] = fs[F_Q] = fs[F_LO] = fs[F_HI] = fs[F_COST] = np.nan
            ist[I_DIRECTION] = 0
            return
        alpha, aci = float(p["alpha"]), p["method"] == "aci"
        for m in ctx.matured:  # the signal at entry is in the ring with the prediction: only r is read here
            r = m.log_return
            if math.isfinite(r):
                _cp_score(
                    self.ebar,
                    self.sig,
                    self.yhat,
                    self.lo,
                    self.hi,
                    self.scores,
                    self.srt,
                    self.sst,
                    ist,
                    fs,
                    int(m.entry_bar),
                    r,
                    alpha,
                    float(p["gamma"]),
                    aci,
                    self._lam,
                )
        sp = ctx.spread
        cost = sp / c if math.isfinite(sp) and sp >= 0 else math.nan
        d = int(ctx.direction)
        _cp_issue(
            self.ebar,
            self.sig,
            self.yhat,
            self.lo,
            self.hi,
            self.srt,
            self.sst,
            ist,
            fs,
            int(ctx.bar_index),
            self._signal(ctx.probs),
            cost,
            1 if d > 0 else (-1 if d < 0 else 0),
            alpha,
            aci,
            p["predictor"] == "ewma",
            int(p["min_scores"]),
        )

    def load_state_dict(self, state: dict) -> None:  # type: ignore[type-arg]
        super().load_state_dict(state)
        self._lam = 0.5 ** (1.0 / float(self.params["halflife"]))

    def fused_step(self, timeframe: str) -> FusedStep:
        p = self.params
        inputs = ("close", "spread", "direction", "bar_index", "has_probs", "probs", "n_mat", "mat")
        params = (
            float(p["alpha"]),
            float(p["gamma"]),
            p["method"] == "aci",
            float(self._lam),
            p["predictor"] == "ewma",
            int(p["min_scores"]),
            COMPENSATED_SUM,
        )
        return FusedStep(_cp_fused, self.state_keys, inputs, params)

    @property
    def interval(self) -> tuple[float, float]:
        """The interval issued on the last bar (NaN, NaN when none)."""
        return float(self.fs[F_LO]), float(self.fs[F_HI])

    @property
    def alpha_t(self) -> float:
        return float(self.fs[F_ALPHA_T])

    def coverage(self) -> float:
        """Empirical coverage of the checked intervals, 1 - mean err (NaN before the first)."""
        t = int(self.ist[I_CHECKED])
        return 1.0 - int(self.ist[I_MISSES]) / t if t else math.nan

    def verdict(self) -> ModuleResult:
        p = self.params
        thr = float(p["min_margin"])
        ist, fs = self.ist, self.fs
        n = int(self.sst[SW_N])
        if n < int(p["min_scores"]):
            return insufficient(self.name, n, int(p["min_scores"]), thr, "scored outcomes")
        y, lo, hi, cost = float(fs[F_YHAT]), float(fs[F_LO]), float(fs[F_HI]), float(fs[F_COST])
        d = int(ist[I_DIRECTION])
        if math.isnan(y):
            return self._result(math.nan, False, thr, "no interval on this bar: no model probabilities (or a bad bar)")
        a = float(fs[F_ALPHA_T]) if p["method"] == "aci" else float(p["alpha"])
        t = int(ist[I_CHECKED])
        cov = self.coverage()

        def iv() -> str:
            lvl = f"{p['method'].upper()} level 1-a_t = {1 - a:.3f}" if p["method"] == "aci" else f"level {1 - a:.0%}"
            return f"interval [{lo:+.6f}, {hi:+.6f}] ({lvl}, {n} scores" + (
                f", coverage {cov:.3f} over {t})" if t else ")"
            )

        if d == 0:
            return self._result(math.nan, False, thr, lambda: f"no candidate on this bar; {iv()}")
        if not math.isfinite(cost):
            return self._result(math.nan, False, thr, lambda: f"spread unknown: no cost to clear; {iv()}")
        if lo > hi:
            return self._result(math.nan, False, thr, lambda: f"empty prediction set (a_t >= 1); {iv()}")
        margin = lo - cost if d > 0 else -cost - hi
        ok = margin > thr

        def reason() -> str:
            rel = ">" if ok else "<="
            if d > 0:
                rule = f"long: lower bound {lo:+.6f} - cost {cost:.6f} = {margin:+.6f} {rel} {thr}"
            else:
                rule = f"short: -cost {-cost:.6f} - upper bound {hi:+.6f} = {margin:+.6f} {rel} {thr}"
            return f"{rule}; {iv()}"

        return self._result(margin, ok, thr, reason)

    def warm_up(self) -> None:
        cap, w = 2, 4
        ebar = np.full(cap, -1, dtype=np.int64)
        sig, yhat, lo, hi = np.zeros(cap), np.zeros(cap), np.zeros(cap), np.zeros(cap)
        scores, srt, sst = np.zeros(w), np.zeros(w), np.zeros(2, dtype=np.int64)
        ist, fs = np.zeros(5, dtype=np.int64), np.zeros(11)
        for i in range(1, 8):
            _cp_issue(ebar, sig, yhat, lo, hi, srt, sst, ist, fs, i, 0.01 * i, 1e-4, 1, 0.1, True, True, 2)
            _cp_score(ebar, sig, yhat, lo, hi, scores, srt, sst, ist, fs, i, 1e-3 * i, 0.1, 0.005, True, 0.9)
        conformal_halfwidth(srt, 2, 0.1)
