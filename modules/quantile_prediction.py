"""QuantilePrediction — does the forecast distribution of the next move clear the cost on the trade's side, and are
its quantiles calibrated?

The Layer-1 bundle carries LightGBM quantile regressors of the h-bar forward log return r = log(M_{t+h} / M_t) at
τ ∈ {0.1, 0.2, …, 0.9} (Koenker & Bassett 1978, *Regression quantiles*, Econometrica 46(1); fitted with the
ensemble, :mod:`fxgate.models.ensemble.quantiles`), sorted so that they never cross (rearrangement, Chernozhukov,
Fernández-Val & Galichon 2010). On every out-of-sample bar the module asks the ensemble for q_τ(x_t)
(``ctx.ensemble.predict_quantiles``), stores them in a ring indexed by ``ctx.bar_index % cap``, and when that bar's
forecast matures (a :class:`~fxgate.modules._base.Matured` record, ``horizon`` bars later, never earlier) scores the
hit indicators h_τ = 1{r ≤ q_τ} into a window of the last ``window`` matured bars (O(9) per bar).

Default pass rule (both parts must hold):

1. **edge**: long: q_0.2 > c; short: q_0.8 < −c, with c = spread / price (the round trip's full spread in log
   units, fxgate's one cost convention). The score is the margin, q_0.2 − c (long) or −c − q_0.8 (short); pass
   when > 0. The direction is the candidate's (``ctx.direction``), else the sign of the ensemble's mean P(up) − 0.5.
2. **calibration** (``calibration = true``): for every τ the hit count k_τ of the last n matured bars lies in the
   acceptance region of the exact two-sided binomial test of H0: P(r ≤ q_τ) = τ — equivalently, τ lies inside the
   Clopper–Pearson interval of k_τ/n — at level 1 − (1 − ``ci_level``)/9 each (Bonferroni over the nine levels,
   so a calibrated model passes all nine with probability ≥ ``ci_level``, 0.95). Needs n ≥ ``min_matured``.
   The binomial test assumes independent hits; with ``horizon`` h > 1 consecutive returns overlap, so with
   ``thin = true`` (default) only entries with ``entry_bar % h == 0`` are scored (non-overlapping returns).

Fails closed: too few matured bars ("insufficient data"), an in-sample bar or no ensemble (no out-of-sample
forecast), a bundle fitted without quantile models ("bundle has no quantile models; refit"), an unknown spread, no
direction. :meth:`QuantilePrediction.pinball_loss` gives the window's mean pinball loss per τ (diagnostic; the test
compares it with ``sklearn.metrics.mean_pinball_loss``).

State (slots are module-level ints)::

    pred      (cap, 9)     quantiles stored at entry, row bar_index % cap (cap = horizon + 2)
    pred_bar  (cap,)       the bar_index whose quantiles each row holds (-1: none: that bar had no forecast)
    mq        (window, 9)  the matured bars' quantiles, ring in arrival order
    mr        (window,)    their realized log returns r
    hits      (window, 9)  h_τ = 1{r <= q_τ}
    hcount    (9,)         k_τ: hits per level over the window
    last      (9,)         the latest bar's quantiles (NaN without a forecast)
    ist  I_MATURED         matured bars scored so far (the window holds the last min(I_MATURED, window))
         I_STATUS          the latest bar's forecast: ST_NONE (no bar yet), ST_OK, ST_NO_ENSEMBLE, ST_IN_SAMPLE,
                           ST_NO_QUANTILES, ST_BAD_FORECAST
         I_DIRECTION       the latest bar's direction (+1/-1, 0 none)
    fs   F_COST            the latest bar's cost c = spread / close (NaN: unknown)
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from fxgate.engine.core.jit import kernel
from fxgate.modules._base import CertaintyModule, Context, ModuleResult, insufficient, register
from fxgate.modules._fusion import M_ENTRY, M_ENTRY_BAR, M_EXIT, FusedStep

TAUS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
K = len(TAUS)
T_LONG, T_SHORT = 1, 7  # indices of tau = 0.2 and 0.8
I_MATURED, I_STATUS, I_DIRECTION = 0, 1, 2
F_COST = 0
ST_NONE, ST_OK, ST_NO_ENSEMBLE, ST_IN_SAMPLE, ST_NO_QUANTILES, ST_BAD_FORECAST = 0, 1, 2, 3, 4, 5
_NO_FORECAST = {
    ST_NO_ENSEMBLE: "insufficient data: no Layer-1 ensemble, so no quantile forecast on this bar",
    ST_IN_SAMPLE: "insufficient data: the bar is inside the bundle's training window (no out-of-sample quantiles)",
    ST_NO_QUANTILES: "bundle has no quantile models; refit it (`fxgate fit`, quantiles on) to train them",
    ST_BAD_FORECAST: "the quantile forecast on this bar is not finite (bad feature row)",
}


def acceptance(n_max: int, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Per n = 0..n_max and τ: the smallest and largest hit count k that the exact two-sided binomial test of
    P(hit) = τ accepts at per-level significance a = (1 − level)/9 — reject when P(X ≤ k) ≤ a/2 or P(X ≥ k) ≤ a/2,
    X ~ Bin(n, τ): τ is then outside the Clopper–Pearson interval of k/n at confidence 1 − a."""
    a = (1.0 - level) / K
    n = np.arange(n_max + 1)[:, None]
    tau = np.array(TAUS)[None, :]
    lo = stats.binom.ppf(a / 2, n, tau)  # smallest k with P(X <= k) >= a/2
    lo = np.where(stats.binom.cdf(lo, n, tau) <= a / 2, lo + 1, lo)  # strict: P(X <= k) > a/2
    hi = stats.binom.isf(a / 2, n, tau)  # largest k with P(X >= k) > a/2
    return np.nan_to_num(lo).astype(np.int64), np.nan_to_num(hi).astype(np.int64)


def _qp_score_py(pred, pred_bar, mq, mr, hits, hcount, ist, eb, entry, exit_, thin):  # type: ignore[no-untyped-def]
    """Score one matured entry (its ``entry_bar`` ``eb`` and prices; r = log(exit / entry), NaN unless both are > 0,
    as ``Matured.log_return``) against the quantiles stored at its entry, into the window of the last len(mr)."""
    r = math.log(exit_ / entry) if entry > 0.0 and exit_ > 0.0 else math.nan
    if eb < 0 or not math.isfinite(r) or eb % thin != 0:
        return
    cap = pred.shape[0]
    j = eb % cap
    if pred_bar[j] != eb:  # that bar had no forecast (in sample, no ensemble, bad row)
        return
    w = mr.shape[0]
    k = pred.shape[1]
    n = ist[I_MATURED]
    s = n % w
    if n >= w:
        for t in range(k):
            hcount[t] -= hits[s, t]
    for t in range(k):
        q = pred[j, t]
        mq[s, t] = q
        h = 1 if r <= q else 0
        hits[s, t] = h
        hcount[t] += h
    mr[s] = r
    ist[I_MATURED] = n + 1


def _qp_bar_py(
    pred, pred_bar, mq, mr, hits, hcount, last, ist, fs, q_now, status, probs, direction, spread, close, bar_index,
    eb, entry, exit_, thin,
):  # type: ignore[no-untyped-def]  # fmt: skip
    """One bar, the module's whole per-bar work in one call: score the (last) matured entry ``eb`` (-1: none; any
    others first, with :func:`_qp_score`), then store this bar's quantiles ``q_now`` at row ``bar_index % cap`` when
    ``status`` is ST_OK and all nine are finite (else ST_BAD_FORECAST), the direction (``direction``, else the sign
    of mean(``probs``) − 0.5 when every probability is finite) and the cost spread / close (NaN: unknown)."""
    _qp_score(pred, pred_bar, mq, mr, hits, hcount, ist, eb, entry, exit_, thin)
    cap = pred.shape[0]
    k = pred.shape[1]
    if status == ST_OK:
        for t in range(k):
            if not math.isfinite(q_now[t]):
                status = ST_BAD_FORECAST
    j = bar_index % cap
    if status == ST_OK:
        for t in range(k):
            pred[j, t] = q_now[t]
            last[t] = q_now[t]
        pred_bar[j] = bar_index
    else:
        pred_bar[j] = -1
        for t in range(k):
            last[t] = math.nan
    m = probs.shape[0]
    if direction == 0 and m > 0:
        tot = 0.0
        ok = True
        for i in range(m):
            tot += probs[i]
            ok = ok and math.isfinite(probs[i])
        if ok:
            mean = tot / m
            direction = 1 if mean > 0.5 else (-1 if mean < 0.5 else 0)
    ist[I_STATUS] = status
    ist[I_DIRECTION] = direction
    fs[F_COST] = spread / close if math.isfinite(spread) and spread >= 0 else math.nan


def _calib_worst_py(hcount, lo, hi, n):  # type: ignore[no-untyped-def]
    """The level whose hit count lies farthest outside its acceptance region lo/hi[n] (the first such), -1 when
    every level is inside."""
    worst = -1
    most = 0
    for t in range(hcount.shape[0]):
        k = hcount[t]
        e = lo[n, t] - k if k < lo[n, t] else (k - hi[n, t] if k > hi[n, t] else 0)
        if e > most:
            most = e
            worst = t
    return worst


_qp_score = kernel(_qp_score_py, fastmath=False)
_qp_bar = kernel(_qp_bar_py, fastmath=False)
_calib_worst = kernel(_calib_worst_py, fastmath=False)


def _qp_fused_py(  # type: ignore[no-untyped-def]
    pred, pred_bar, mq, mr, hits, hcount, last, ist, fs, q_now, qst, close, spread, direction, bar_index, has_probs,
    probs, n_mat, mat, thin,
):  # fmt: skip
    """``QuantilePrediction.update`` in the fused step (``fxgate.modules._fusion``): ``prepare`` has put this bar's
    forecast in ``q_now`` and its status in ``qst[0]``; a bad close does nothing, else every matured row is scored in
    order and the bar is stored (:func:`_qp_bar`, with no matured entry of its own)."""
    if not (math.isfinite(close) and close > 0):
        return
    for i in range(n_mat):
        _qp_score(pred, pred_bar, mq, mr, hits, hcount, ist, int(mat[i, M_ENTRY_BAR]), mat[i, M_ENTRY], mat[i, M_EXIT],
                  thin)  # fmt: skip
    m = probs.shape[0] if has_probs != 0 else 0
    _qp_bar(pred, pred_bar, mq, mr, hits, hcount, last, ist, fs, q_now, qst[0], probs[:m], direction, spread, close,
            bar_index, -1, math.nan, math.nan, thin)  # fmt: skip


_qp_fused = kernel(_qp_fused_py, fastmath=False)

_NAN9 = np.full(K, math.nan)
_EMPTY_F = np.zeros(0)


@register("quantile_prediction")
class QuantilePrediction(CertaintyModule):
    title = "QuantilePrediction"
    formula = (
        "long: Q_0.2(r | x) > cost, short: Q_0.8(r | x) < -cost; every hit rate 1{r <= Q_tau} within its CI of tau"
    )
    citation = "Koenker & Bassett (1978); Chernozhukov, Fernandez-Val & Galichon (2010)"
    rule = (
        "long: q_0.2 > spread/price, short: q_0.8 < -spread/price, and (calibration) each tau's hit rate over the "
        "last `window` (250) matured bars inside its exact binomial (Clopper-Pearson) region, family level "
        "`ci_level` (0.95, Bonferroni over 9)"
    )
    defaults = {
        "window": 250,
        "min_matured": 100,
        "calibration": True,
        "ci_level": 0.95,
        "thin": True,
        "horizon": 1,
    }
    gate_settings = ("horizon",)
    state_keys = ("pred", "pred_bar", "mq", "mr", "hits", "hcount", "last", "ist", "fs")

    def reset(self) -> None:
        w, h = int(self.params["window"]), int(self.params["horizon"])
        if w < 1 or h < 1 or int(self.params["min_matured"]) < 1:
            raise ValueError(f"quantile_prediction needs window, min_matured and horizon >= 1, got {self.params}")
        if not 0 < float(self.params["ci_level"]) < 1:
            raise ValueError(f"quantile_prediction: ci_level must be in (0, 1), got {self.params['ci_level']}")
        cap = h + 2  # a forecast matures h accepted bars after entry: its row is still there
        self.pred = np.full((cap, K), math.nan)
        self.pred_bar = np.full(cap, -1, dtype=np.int64)
        self.mq = np.zeros((w, K))
        self.mr = np.zeros(w)
        self.hits = np.zeros((w, K), dtype=np.int64)
        self.hcount = np.zeros(K, dtype=np.int64)
        self.last = np.full(K, math.nan)
        self.ist = np.zeros(3, dtype=np.int64)
        self.fs = np.full(1, math.nan)
        self._derive()

    def _derive(self) -> None:
        """Constants from the parameters (not state): the acceptance table and the thinning stride."""
        self._lo, self._hi = acceptance(int(self.params["window"]), float(self.params["ci_level"]))
        self._thin = int(self.params["horizon"]) if self.params["thin"] else 1
        self._q = np.full(K, math.nan)  # the fused step's scratch: this bar's forecast and its status (prepare)
        self._qst = np.zeros(1, dtype=np.int64)

    def load_state_dict(self, state: dict) -> None:  # type: ignore[type-arg]
        super().load_state_dict(state)
        self._derive()

    def warm_up(self) -> None:
        w = min(int(self.params["window"]), 4)
        pred, hcount = np.full((3, K), math.nan), np.zeros(K, dtype=np.int64)
        scratch = (pred, np.full(3, -1, dtype=np.int64), np.zeros((w, K)), np.zeros(w), np.zeros((w, K), np.int64))
        ist = np.zeros(3, dtype=np.int64)
        _qp_score(*scratch, hcount, ist, 0, 1.0, 1.0, 1)
        for probs in (_EMPTY_F, np.array([0.4, 0.6, 0.7])):
            _qp_bar(*scratch, hcount, np.full(K, math.nan), ist, np.zeros(1), _NAN9, ST_OK, probs, 0, 1e-4, 1.1, 1,
                    0, 1.0, 1.0, 1)  # fmt: skip
        _calib_worst(hcount, self._lo, self._hi, 0)

    @staticmethod
    def _forecast(ctx: Context) -> tuple[np.ndarray, int]:
        """This bar's quantile forecast and its status (ST_OK before the kernel checks that all nine are finite)."""
        ens = ctx.ensemble
        if ctx.in_sample:
            return _NAN9, ST_IN_SAMPLE
        if ens is None or ctx.features is None:
            return _NAN9, ST_NO_ENSEMBLE
        if not getattr(ens, "has_quantiles", False):
            return _NAN9, ST_NO_QUANTILES
        return ens.predict_quantiles(ctx.features), ST_OK  # the kernel makes it ST_BAD_FORECAST unless all finite

    def _prepare(self, ctx: Context) -> None:
        """The fused step's Python part: the forecast (a model call) into ``_q`` and its status into ``_qst``."""
        close = ctx.bar.close
        if not (math.isfinite(close) and close > 0):
            return  # the kernel skips the bar
        q, status = self._forecast(ctx)
        self._q[:] = q[:K]
        self._qst[0] = status

    def fused_step(self, timeframe: str) -> FusedStep:
        inputs = ("close", "spread", "direction", "bar_index", "has_probs", "probs", "n_mat", "mat")
        state = (*self.state_keys, "_q", "_qst")
        return FusedStep(_qp_fused, state, inputs, (int(self._thin),), prepare=self._prepare)

    def update(self, ctx: Context) -> None:
        close = ctx.bar.close
        if not (math.isfinite(close) and close > 0):
            return  # a bad bar is skipped (the gate never accepts one)
        q, status = self._forecast(ctx)
        p = ctx.probs
        mats = ctx.matured
        eb, e0, e1 = -1, math.nan, math.nan
        if mats:
            for m in mats[:-1]:  # rare: several forecasts maturing on one bar
                _qp_score(self.pred, self.pred_bar, self.mq, self.mr, self.hits, self.hcount, self.ist,
                          int(m.entry_bar), m.entry_price, m.exit_price, self._thin)  # fmt: skip
            m = mats[-1]
            eb, e0, e1 = int(m.entry_bar), m.entry_price, m.exit_price
        _qp_bar(
            self.pred, self.pred_bar, self.mq, self.mr, self.hits, self.hcount, self.last, self.ist, self.fs, q,
            status, _EMPTY_F if p is None else p, int(ctx.direction), ctx.spread, close, int(ctx.bar_index),
            eb, e0, e1, self._thin,
        )  # fmt: skip

    # -- reading ---------------------------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Matured bars in the window."""
        return min(int(self.ist[I_MATURED]), len(self.mr))

    def hit_rates(self) -> np.ndarray:
        """k_τ / n per level over the window (NaN when empty)."""
        n = self.n
        return self.hcount / n if n else np.full(K, math.nan)

    def pinball_loss(self) -> np.ndarray:
        """Mean pinball loss ρ_τ(r − q_τ) per level over the window's matured bars (NaN when empty)."""
        n = self.n
        if not n:
            return np.full(K, math.nan)
        u = self.mr[:n, None] - self.mq[:n]
        tau = np.array(TAUS)[None, :]
        return np.mean(np.where(u >= 0, tau * u, (tau - 1) * u), axis=0)

    def calibration(self) -> tuple[bool, str]:
        """Whether every level's hit count lies in its acceptance region, and a sentence saying which does not."""
        n = self.n
        t = _calib_worst(self.hcount, self._lo, self._hi, n)  # the worst level: the farthest outside, in hits
        if t < 0:
            return True, f"all 9 quantile hit rates within their binomial regions over {n} matured bars"
        k = self.hcount
        lo, hi = self._lo[n], self._hi[n]
        return False, (
            f"quantile {TAUS[t]} is miscalibrated: hit rate {k[t] / n:.3f} over {n} matured bars, outside "
            f"[{lo[t] / n:.3f}, {hi[t] / n:.3f}] (exact binomial, level {self.params['ci_level']} over 9 quantiles)"
        )

    def verdict(self) -> ModuleResult:
        status = int(self.ist[I_STATUS])
        need = int(self.params["min_matured"])
        if status == ST_NONE:
            return insufficient(self.name, self.n, need, 0.0, "matured bars")
        if status != ST_OK:
            return self._result(math.nan, False, 0.0, _NO_FORECAST[status])
        calib_note = ""
        if self.params["calibration"]:
            if int(self.ist[I_MATURED]) < need:
                return insufficient(self.name, int(self.ist[I_MATURED]), need, 0.0, "matured bars")
            ok, calib_note = self.calibration()
            if not ok:
                return self._result(math.nan, False, 0.0, calib_note)
        cost = float(self.fs[F_COST])
        if not math.isfinite(cost):
            return self._result(math.nan, False, 0.0, "spread unknown: cannot check that the quantile clears the cost")
        d = int(self.ist[I_DIRECTION])
        if d == 0:
            return self._result(math.nan, False, 0.0, "no direction (no candidate, models at 0.5) to judge")
        q = float(self.last[T_LONG if d > 0 else T_SHORT])
        margin = q - cost if d > 0 else -cost - q

        def why() -> str:
            if d > 0:
                text = f"long: q_0.2 {q:+.6f} {'>' if margin > 0 else '<='} cost {cost:.6f}"
            else:
                text = f"short: q_0.8 {q:+.6f} {'<' if margin > 0 else '>='} -cost {-cost:.6f}"
            return text + (f"; {calib_note}" if calib_note else "")

        return self._result(margin, margin > 0, 0.0, why)
