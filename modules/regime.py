"""RegimeDetection — Gaussian hidden Markov model, fitted offline, *filtered* online.

The HMM (K states, one-dimensional Gaussian emissions on standardized one-bar log returns) is fitted with hmmlearn's
EM (``GaussianHMM``) on past returns only — through :meth:`RegimeDetection.fit`, or automatically once
``fit_bars`` returns have been seen, and again every ``refit_every`` returns after that (0, the default: never) on
the last ``fit_bars`` returns. States are relabelled by variance, lowest first, so "state 0 = calmest" holds across
refits. After each fit the filter is run over the fit window itself, so the live filter continues from the filtered
state at the window's end (not from the start probabilities). Online, each bar runs one forward step (Rabiner 1989,
eq. 19–20), normalized:

    α_t ∝ b(x_t) ⊙ (Aᵀ α_{t−1}),   α_1 ∝ π ⊙ b(x_1)

which is P(S_t | x_1..t): the *filtered* probability. hmmlearn's ``predict_proba`` returns *smoothed*
probabilities P(S_t | x_1..T), which use bars after t; only its last row (t = T) is filtered. Using smoothed
probabilities in a live gate would be look-ahead.

Pass rule: P(S_t ∈ favourable) ≥ ``threshold``, favourable = every state but the most volatile by default.

State (slots are module-level ints; ``_forward_step`` reads and writes the first six entries)::

    alpha                 α_t, the filtered P(S_t | x_1..t) (K values)
    ist  I_FITTED         1 once the HMM is fitted
         I_FILTERED       forward steps since the last fit (0: the next step starts from π)
         I_PUSHED         returns pushed into ``buf``
    startprob, transmat,  π, A, and the emission means and variances of the fitted HMM (in scaled units)
    means, variances
    fs   F_PREV_CLOSE     the last good close
         F_SCALE          the standard deviation that scales returns (set by each fit)
    buf                   ring of the last ``fit_bars`` one-bar log returns (the next fit's sample)
"""

from __future__ import annotations

import math

import numpy as np
from hmmlearn.hmm import GaussianHMM

from fxgate.engine.core.jit import kernel
from fxgate.modules._base import CertaintyModule, Context, ModuleResult, insufficient, register
from fxgate.modules._common import log_return_step, next_log_return
from fxgate.modules._fusion import FusedStep

I_FITTED, I_FILTERED, I_PUSHED = 0, 1, 2
F_PREV_CLOSE, F_SCALE = 0, 1


def _forward_step_py(alpha, ist, startprob, transmat, means, variances, x):  # type: ignore[no-untyped-def]
    """One normalized forward step for a 1-D Gaussian HMM on the standardized return ``x``, in place. O(K²)."""
    k = alpha.shape[0]
    prior = np.empty(k)
    if ist[I_FILTERED] == 0:
        for j in range(k):
            prior[j] = startprob[j]
    else:
        for j in range(k):
            s = 0.0
            for i in range(k):
                s += alpha[i] * transmat[i, j]
            prior[j] = s
    # emissions in log space, scaled by their max to avoid underflow
    logb = np.empty(k)
    m = -np.inf
    for j in range(k):
        logb[j] = -0.5 * (math.log(2.0 * math.pi * variances[j]) + (x - means[j]) ** 2 / variances[j])
        if logb[j] > m:
            m = logb[j]
    z = 0.0
    for j in range(k):
        alpha[j] = prior[j] * math.exp(logb[j] - m)
        z += alpha[j]
    for j in range(k):
        alpha[j] /= z
    ist[I_FILTERED] += 1


_forward_step = kernel(_forward_step_py, fastmath=False)


def _regime_fused_py(alpha, startprob, transmat, means, variances, ist, fs, buf, close, refit_every):  # type: ignore[no-untyped-def]
    """``RegimeDetection.update`` in the fused step (``fxgate.modules._fusion``). Returns 1 on a bar that (re)fits
    the HMM (hmmlearn's EM, in Python: ``RegimeDetection._fused_fit``), else 0."""
    r = log_return_step(fs, F_PREV_CLOSE, close)
    if math.isnan(r):
        return 0
    w = buf.shape[0]
    n = ist[I_PUSHED]
    buf[n % w] = r
    ist[I_PUSHED] = n + 1
    fitted = ist[I_FITTED] != 0
    if n + 1 == w or (fitted and refit_every != 0 and n + 1 > w and (n + 1 - w) % refit_every == 0):
        return 1
    if fitted:
        _forward_step(alpha, ist, startprob, transmat, means, variances, r / fs[F_SCALE])
    return 0


_regime_fused = kernel(_regime_fused_py, fastmath=False)


@register("regime")
class RegimeDetection(CertaintyModule):
    title = "RegimeDetection"
    formula = "P(S_t | X_1:t) via the HMM forward filter"
    citation = "Hamilton (1989), Econometrica 57(2)"
    rule = "P(favourable regime) >= `threshold` (favourable: every state but the most volatile)"
    defaults = {
        "n_states": 2,
        "fit_bars": 1000,
        "refit_every": 0,
        "threshold": 0.6,
        "favourable": None,
        "n_iter": 100,
        "seed": 0,
    }
    state_keys = ("alpha", "startprob", "transmat", "means", "variances", "ist", "fs", "buf")
    #: the return ring: one row (element) written a bar, ``I_PUSHED % fit_bars``
    tx_rings = ("buf",)

    def reset(self) -> None:
        k = int(self.params["n_states"])
        self.alpha = np.full(k, 1.0 / k)
        self.startprob = np.full(k, 1.0 / k)
        self.transmat = np.full((k, k), 1.0 / k)
        self.means = np.zeros(k)
        self.variances = np.ones(k)
        if int(self.params["refit_every"]) < 0 or int(self.params["fit_bars"]) < 10 * k:
            raise ValueError(f"regime: refit_every must be >= 0 and fit_bars >= {10 * k} (10 per state)")
        self.ist = np.zeros(3, dtype=np.int64)
        self.fs = np.zeros(2)
        self.fs[F_PREV_CLOSE] = np.nan
        self.fs[F_SCALE] = 1.0
        self.buf = np.zeros(int(self.params["fit_bars"]))

    @property
    def fitted(self) -> bool:
        return bool(self.ist[I_FITTED])

    def fit(self, returns: np.ndarray) -> RegimeDetection:
        """Fit the HMM on past one-bar log returns (hmmlearn EM), relabel states by variance, restart filtering."""
        r = np.asarray(returns, dtype=np.float64)
        r = r[np.isfinite(r)]
        k = int(self.params["n_states"])
        if len(r) < 10 * k:
            raise ValueError(f"regime: need at least {10 * k} finite returns to fit {k} states, got {len(r)}")
        scale = float(np.std(r, ddof=1)) or 1.0
        model = GaussianHMM(
            n_components=k,
            covariance_type="diag",
            n_iter=int(self.params["n_iter"]),
            random_state=int(self.params["seed"]),
        )
        model.fit((r / scale)[:, None])
        order = np.argsort(model.covars_.reshape(k, -1)[:, 0])
        self.startprob = model.startprob_[order].copy()
        self.transmat = model.transmat_[np.ix_(order, order)].copy()
        self.means = model.means_[order, 0].copy()
        self.variances = model.covars_.reshape(k, -1)[order, 0].copy()
        self.fs[F_SCALE] = scale
        self.ist[I_FITTED] = 1
        self.ist[I_FILTERED] = 0
        for x in r / scale:  # filter the fit window: the live filter continues from its end state
            self.observe(x)
        return self

    def to_hmmlearn(self):  # type: ignore[no-untyped-def]
        """The relabelled model as an hmmlearn GaussianHMM (the reference the tests compare with)."""
        k = len(self.means)
        m = GaussianHMM(n_components=k, covariance_type="diag", init_params="", params="")
        m.startprob_, m.transmat_ = self.startprob.copy(), self.transmat.copy()
        m.means_ = self.means[:, None].copy()
        m.covars_ = self.variances[:, None].copy()
        return m

    def _fused_fit(self, flag: int) -> None:
        """The fused step pushed the return that makes a fit due: fit on the ring in arrival order, as ``update``."""
        self.fit(np.roll(self.buf, -(int(self.ist[I_PUSHED]) % len(self.buf))))

    def fused_step(self, timeframe: str) -> FusedStep:
        state = ("alpha", "startprob", "transmat", "means", "variances", "ist", "fs", "buf")
        return FusedStep(_regime_fused, state, ("close",), (int(self.params["refit_every"]),), after=self._fused_fit)

    def tx_rows(self) -> tuple[tuple[str, int], ...]:
        """The next return's slot in ``buf`` (``update`` and the fused kernel write ``buf[I_PUSHED % fit_bars]``, at
        most once a bar; a fit reads a rolled copy)."""
        return (("buf", int(self.ist[I_PUSHED]) % len(self.buf)),)

    def observe(self, x: float) -> None:
        """One forward step on a standardized observation."""
        _forward_step(self.alpha, self.ist, self.startprob, self.transmat, self.means, self.variances, float(x))

    def update(self, ctx: Context) -> None:
        r = next_log_return(self.fs, F_PREV_CLOSE, ctx.bar.close)
        if math.isnan(r):
            return
        w = len(self.buf)
        n = int(self.ist[I_PUSHED])
        self.buf[n % w] = r
        self.ist[I_PUSHED] = n + 1
        every = int(self.params["refit_every"])
        if n + 1 == w or (self.fitted and every and n + 1 > w and (n + 1 - w) % every == 0):
            self.fit(np.roll(self.buf, -((n + 1) % w)))  # the ring in arrival order
        elif self.fitted:
            self.observe(r / self.fs[F_SCALE])

    def favourable(self) -> list[int]:
        fav = self.params["favourable"]
        k = int(self.params["n_states"])
        return list(range(k - 1)) if fav is None else [int(s) for s in fav]

    def verdict(self) -> ModuleResult:
        thr = float(self.params["threshold"])
        if not self.fitted:
            return insufficient(self.name, int(self.ist[I_PUSHED]), len(self.buf), thr, "returns to fit")
        if self.ist[I_FILTERED] == 0:
            return insufficient(self.name, 0, 1, thr, "filtered bars")
        fav = self.favourable()
        al = self.alpha.tolist()  # Python floats: the same sum, in the same order, without numpy per element
        pf = float(sum(al[i] for i in fav))
        ok = pf >= thr
        state = al.index(max(al))  # np.argmax's first largest (the filter's probabilities are finite)
        return self._result(
            pf,
            ok,
            thr,
            lambda: (
                f"P(favourable regime {fav}) = {pf:.3f} {'>=' if ok else '<'} {thr}; "
                f"most likely state {state} (0 = calmest)"
            ),
        )

    def warm_up(self) -> None:
        k = int(self.params["n_states"])
        tmp = np.zeros(3, dtype=np.int64)
        _forward_step(np.full(k, 1 / k), tmp, np.full(k, 1 / k), np.full((k, k), 1 / k), np.zeros(k), np.ones(k), 0.1)
