"""FactorWeighting — mean-variance factor weights w ∝ Σ⁻¹μ with Ledoit–Wolf shrinkage, judged out of sample.

Factors. ``factors`` names k₀ columns of the feature row (names of the feature engine's layout, or column
indices), optionally plus the ensemble signal mean(P(up)) − 0.5 (``include_signal``). Each factor value f_i,t is
standardized with exponentially weighted statistics of *earlier* bars only (West 1979's weighted incremental mean
and variance, half-life ``z_halflife`` bars; ``z_min`` bars before the first z):

    z_i,t = clip((f_i,t − m̄_i,t−1) / s_i,t−1, ±z_clip)        (a constant factor gives z = 0)

Formulation (Markowitz 1952; Grinold & Kahn 2000, *Active Portfolio Management*, 2nd ed., on combining signals). Each
factor is a timing strategy that holds z_i,t units of the pair over the horizon: its "factor return" is
g_i,t = z_i,t · r_t, r_t the realized log return (``Matured.log_return``) of the entry bar t. A blend of the
strategies with weights w earns w·g_t = (w·z_t) · r_t, the return of the blended signal b_t = w·z_t. The
mean-variance (maximum Sharpe) weights of the strategies are

    w ∝ Σ⁻¹ μ,      μ = E[g],  Σ = Cov(g),

with μ and Σ estimated from the matured factor returns by exponentially weighted moments (weights
ω_s ∝ λ^(n−s), λ = 0.5^(1/``halflife``); ``halflife = 0`` means equal weights over all matured bars) and Σ shrunk
toward the scaled identity by Ledoit & Wolf (2004), *A well-conditioned estimator for large-dimensional covariance
matrices*, J. Multivariate Anal. 88(2), computed exactly as ``sklearn.covariance.ledoit_wolf`` does:

    S = Σ_s ω_s x̃_s x̃_sᵀ            (x̃ = g − ḡ_ω, or g itself with ``assume_centered``; 1/n, not 1/(n−1))
    m = tr(S)/k,   δ = ‖S − m I‖²_F / k
    β = (1/(k·n_eff)) · (Σ_ij Σ_s ω_s x̃_si² x̃_sj² − ‖S‖²_F),   β ← min(β, δ)
    ρ = β/δ (0 when β = 0),     Σ_LW = (1 − ρ) S + ρ m I

With equal weights ω_s = 1/n and n_eff = n this is sklearn's formula term for term (the reference test compares
``LedoitWolf(assume_centered=...)`` on the same factor returns: same Σ_LW and ρ to 1e-10). The EWMA version
generalizes it by replacing every sample mean with the ω-weighted mean and n by Kish's effective sample size
n_eff = 1/Σω_s²: LW's β estimates Σ_ij Var(S_ij), and the variance of a weighted mean of iid terms is Σω²·Var,
i.e. Var/n_eff. (Overlapping horizons make g autocorrelated; like LW itself, β then understates the noise.)
The moments are kept as weighted raw sums of x, x_i x_j, x_i² x_j and x_i² x_j² — O(k²) per matured bar — from
which the centered S and fourth moments follow exactly. w = Σ_LW⁻¹ μ by Cholesky, scaled to Σ|w_i| = 1; it is
used only after ``min_fit`` matured factor returns. ``assume_centered = true`` uses the second moments about 0
(sklearn's ``assume_centered``); unshrunk, (Σ + μμᵀ)⁻¹μ ∝ Σ⁻¹μ (Sherman–Morrison), so it changes only what is
shrunk, not the weights' target.

Out of sample by construction. On each accepted bar t the module first takes in the forecasts that matured on t
(their returns are known at t), then fixes the bar's predictions with the weights and signs of that moment — the
blend b_t = w·z_t and each single factor's signed prediction sign(μ_i)·z_i,t (its sign chosen from the past only) —
and stores them in a ring indexed by ``Context.bar_index``. When bar t's forecast matures (``Matured.entry_bar``),
those stored predictions are scored against r_t, and only then does g_t enter μ and Σ (each entry once).

Pass rule: over the last ``window`` scored bars, the information coefficient (Pearson correlation of prediction and
realized return, the same bars for all) of the blend is at least the best single factor's plus ``margin`` (0) and
above ``min_ic`` (0). Fails closed with fewer than ``min_fit`` matured factor returns or ``min_outcomes`` scored
bars, and when the blend's IC is undefined (constant predictions or returns).

Parameters (defaults): ``factors`` (below), ``include_signal`` (true), ``halflife`` (500 matured bars; 0: equal
weights), ``z_halflife`` (1,000 bars), ``z_min`` (50), ``z_clip`` (5), ``min_fit`` (100), ``window`` (250),
``min_outcomes`` (100), ``min_ic`` (0), ``margin`` (0), ``assume_centered`` (false); ``horizon`` comes from the gate.

Default factors (H1, one-bar horizon; plausible predictors of the next move's sign, not fitted on the sample):
KMID (the last bar's body: one-bar reversal), ROC5 and ROC20 (short-term reversal / momentum), ROC60 (longer
momentum), RSV20 (where the close sits in its 20-bar range: range mean reversion) and CORR20 (price–volume
correlation: whether moves come with activity), plus the ensemble signal.

State (``_fw_step``; k factors, ring capacity c = horizon + 8, IC window n_w; slots are module-level ints)::

    m1 (k), m2, m3, m4 (k×k)  ω-weighted raw sums of g_i, g_i g_j, g_i² g_j, g_i² g_j²  (not normalized)
    w (k)                     the current weights Σ_LW⁻¹μ / ‖·‖₁
    zmean, zm2 (k)            the factors' weighted mean m̄ and weighted sum of squared deviations (West 1979)
    ez, es (c×k)              per entry bar: z_t, and the signs sign(μ_i) at entry
    eb (c)                    per entry bar: the blend b_t = w·z_t at entry
    ent, eflag (c)            the entry bar index held by each ring slot; 0 none, 1 z only, 2 z and predictions
    wp (n_w×(k+1)), wr (n_w)  the scored window: column 0 the blend, 1..k the signed singles; the realized returns
    psum (3×(k+1))            running Σp, Σp², Σp·r over the window per column (recomputed exactly every 4,096)
    ic (k+1)                  the window's Pearson ICs of each column with wr (NaN when undefined)
    ist  I_FIT       matured factor returns pushed into the moments (n)
         I_SCORED    matured bars scored (pushed into the IC window)
         I_W_OK      1 when w is usable (enough data, Σ_LW positive definite, μ ≠ 0)
         I_ZSEEN     bars pushed into the standardization statistics
         I_SKIPPED   matured records without a usable entry (a bad row or no z yet at entry, a non-finite return)
         I_SINCE_EXACT  scored pushes since the window sums were recomputed exactly
    fs   F_W         Σ λ^(n−s)         (W: the moments' normalizer)
         F_W2        Σ λ^(2(n−s))      (n_eff = W² / W2)
         F_ZW        the standardization's weight sum
         F_SHRINK    ρ, the Ledoit–Wolf shrinkage of the last fit
         F_SR, F_SRR Σr, Σr² over the scored window
"""

from __future__ import annotations

import difflib
import math

import numpy as np

from fxgate.engine.core.bars import Bar
from fxgate.engine.core.feature_layout import feature_names
from fxgate.engine.core.jit import kernel
from fxgate.modules._base import CertaintyModule, Context, Matured, ModuleResult, insufficient, register
from fxgate.modules._common import EXACT_EVERY
from fxgate.modules._fusion import M_ENTRY, M_ENTRY_BAR, M_EXIT, FusedStep

I_FIT, I_SCORED, I_W_OK, I_ZSEEN, I_SKIPPED, I_SINCE_EXACT = range(6)
F_W, F_W2, F_ZW, F_SHRINK, F_SR, F_SRR = range(6)

#: the feature engine's column layout (names in output order)
FEATURE_LAYOUT: tuple[str, ...] = tuple(feature_names())
SIGNAL = "signal"  # the label of the ensemble-signal factor
_EMPTY = np.zeros(0)
_NO_BARS = np.zeros(0, dtype=np.int64)


def _lw_py(m1, m2, m3, m4, wsum, w2sum, centered, cov):  # type: ignore[no-untyped-def]
    """Ledoit–Wolf shrunk covariance of the ω-weighted sample whose raw sums are m1..m4 (module docstring), written
    into ``cov``; returns the shrinkage ρ. With equal weights this is ``sklearn.covariance.ledoit_wolf``."""
    k = m1.shape[0]
    a = np.zeros(k)
    if centered:
        for i in range(k):
            a[i] = m1[i] / wsum
    for i in range(k):
        for j in range(k):
            cov[i, j] = m2[i, j] / wsum - a[i] * a[j]
    if k == 1:
        return 0.0
    tr = 0.0
    for i in range(k):
        tr += cov[i, i]
    mu = tr / k
    s2 = 0.0  # ‖S‖²_F
    q = 0.0  # Σ_ij E_ω[x̃_i² x̃_j²]
    for i in range(k):
        for j in range(k):
            s2 += cov[i, j] * cov[i, j]
            ai, aj = a[i], a[j]
            q += (
                m4[i, j] / wsum
                - 2.0 * aj * m3[i, j] / wsum
                - 2.0 * ai * m3[j, i] / wsum
                + aj * aj * m2[i, i] / wsum
                + ai * ai * m2[j, j] / wsum
                + 4.0 * ai * aj * m2[i, j] / wsum
                - 3.0 * ai * ai * aj * aj
            )
    inv_neff = w2sum / (wsum * wsum)
    beta = inv_neff / k * (q - s2)
    delta = (s2 - 2.0 * mu * tr + k * mu * mu) / k
    beta = min(beta, delta)
    rho = 0.0 if beta == 0.0 else beta / delta
    for i in range(k):
        for j in range(k):
            cov[i, j] *= 1.0 - rho
        cov[i, i] += rho * mu
    return rho


def _chol_solve_py(a, b, x):  # type: ignore[no-untyped-def]
    """Solve a x = b for symmetric positive definite ``a`` by Cholesky; False (x untouched) when ``a`` is not
    numerically positive definite."""
    k = b.shape[0]
    lo = np.zeros((k, k))
    scale = 0.0
    for i in range(k):
        scale = max(scale, abs(a[i, i]))
    if not scale > 0.0:
        return False
    for i in range(k):
        for j in range(i + 1):
            s = a[i, j]
            for p in range(j):
                s -= lo[i, p] * lo[j, p]
            if i == j:
                if not s > 1e-13 * scale:
                    return False
                lo[i, i] = math.sqrt(s)
            else:
                lo[i, j] = s / lo[j, j]
    y = np.zeros(k)
    for i in range(k):
        s = b[i]
        for p in range(i):
            s -= lo[i, p] * y[p]
        y[i] = s / lo[i, i]
    for i in range(k - 1, -1, -1):
        s = y[i]
        for p in range(i + 1, k):
            s -= lo[p, i] * x[p]
        x[i] = s / lo[i, i]
    return True


def _ic_from_sums_py(sp, spp, spr, sr, srr, n):  # type: ignore[no-untyped-def]
    """Pearson correlation from the window's sums Σp, Σp², Σp·r, Σr, Σr² over n rows; NaN when either side is
    (numerically) constant."""
    if n < 2:
        return math.nan
    vp = spp - sp * sp / n
    vr = srr - sr * sr / n
    if not (vp > 1e-10 * spp and vr > 1e-10 * srr):
        return math.nan
    return (spr - sp * sr / n) / math.sqrt(vp * vr)


_lw = kernel(_lw_py, fastmath=False)
_chol_solve = kernel(_chol_solve_py, fastmath=False)
_ic_from_sums = kernel(_ic_from_sums_py, fastmath=False)


def _fw_step_py(  # type: ignore[no-untyped-def]
    m1,
    m2,
    m3,
    m4,
    w,
    zmean,
    zm2,
    ez,
    es,
    eb,
    ent,
    eflag,
    wp,
    wr,
    psum,
    ic,
    ist,
    fs,
    mat_bar,
    mat_ret,
    feats,
    probs,
    bar_index,
    cols,
    with_signal,
    lam,
    lam_z,
    min_fit,
    min_z,
    z_clip,
    centered,
):
    """One accepted bar: score and learn from the forecasts that matured on it (entry bars ``mat_bar``, realized
    returns ``mat_ret``), refit the weights, then fix this bar's predictions from its factor row — ``feats[cols]``
    and, ``with_signal``, mean(``probs``) − 0.5 — and push the row into the standardization. A row with a missing
    or non-finite value enters nothing (an empty ``feats``/``probs`` is missing). State: the module docstring."""
    k = m1.shape[0]
    nf = cols.shape[0]
    x = np.empty(k)
    enter = bar_index >= 0
    for i in range(nf):
        c = cols[i]
        if c >= feats.shape[0]:
            enter = False
            break
        x[i] = feats[c]
    if enter and with_signal:
        if probs.shape[0] == 0:
            enter = False
        else:
            ps = 0.0
            for i in range(probs.shape[0]):
                ps += probs[i]
            x[nf] = ps / probs.shape[0] - 0.5
    if enter:
        for i in range(k):
            if not math.isfinite(x[i]):
                enter = False
    cap = ent.shape[0]
    nw = wr.shape[0]
    learned = False
    scored = False
    for j in range(mat_bar.shape[0]):
        e = mat_bar[j]
        r = mat_ret[j]
        s = e % cap
        if e < 0 or ent[s] != e or eflag[s] == 0 or not math.isfinite(r):
            ist[I_SKIPPED] += 1
            continue
        if eflag[s] == 2:  # predictions fixed at entry: score them before g_t enters the fit
            c = ist[I_SCORED] % nw
            if ist[I_SCORED] >= nw:  # the oldest row leaves the window
                ro = wr[c]
                fs[F_SR] -= ro
                fs[F_SRR] -= ro * ro
                for i in range(k + 1):
                    po = wp[c, i]
                    psum[0, i] -= po
                    psum[1, i] -= po * po
                    psum[2, i] -= po * ro
            wp[c, 0] = eb[s]
            for i in range(k):
                wp[c, 1 + i] = es[s, i] * ez[s, i]
            wr[c] = r
            fs[F_SR] += r
            fs[F_SRR] += r * r
            for i in range(k + 1):
                pn = wp[c, i]
                psum[0, i] += pn
                psum[1, i] += pn * pn
                psum[2, i] += pn * r
            ist[I_SCORED] += 1
            ist[I_SINCE_EXACT] += 1
            scored = True
        if lam != 1.0:
            fs[F_W] *= lam
            fs[F_W2] *= lam * lam
            for i in range(k):
                m1[i] *= lam
                for q in range(k):
                    m2[i, q] *= lam
                    m3[i, q] *= lam
                    m4[i, q] *= lam
        fs[F_W] += 1.0
        fs[F_W2] += 1.0
        for i in range(k):
            gi = ez[s, i] * r
            m1[i] += gi
            for q in range(k):
                gq = ez[s, q] * r
                m2[i, q] += gi * gq
                m3[i, q] += gi * gi * gq
                m4[i, q] += gi * gi * gq * gq
        ist[I_FIT] += 1
        eflag[s] = 0  # each entry is learned from once
        learned = True
    if learned:
        ist[I_W_OK] = 0
        if ist[I_FIT] >= min_fit:
            cov = np.empty((k, k))
            fs[F_SHRINK] = _lw(m1, m2, m3, m4, fs[F_W], fs[F_W2], centered, cov)
            mu = np.empty(k)
            for i in range(k):
                mu[i] = m1[i] / fs[F_W]
            sol = np.zeros(k)
            if _chol_solve(cov, mu, sol):
                tot = 0.0
                for i in range(k):
                    tot += abs(sol[i])
                if tot > 0.0 and math.isfinite(tot):
                    for i in range(k):
                        w[i] = sol[i] / tot
                    ist[I_W_OK] = 1
    if scored:
        n = min(ist[I_SCORED], nw)
        if ist[I_SINCE_EXACT] >= EXACT_EVERY:  # bound the running sums' rounding drift
            fs[F_SR] = 0.0
            fs[F_SRR] = 0.0
            for i in range(k + 1):
                psum[0, i] = 0.0
                psum[1, i] = 0.0
                psum[2, i] = 0.0
            for t in range(n):
                rt = wr[t]
                fs[F_SR] += rt
                fs[F_SRR] += rt * rt
                for i in range(k + 1):
                    pt = wp[t, i]
                    psum[0, i] += pt
                    psum[1, i] += pt * pt
                    psum[2, i] += pt * rt
            ist[I_SINCE_EXACT] = 0
        for i in range(k + 1):
            ic[i] = _ic_from_sums(psum[0, i], psum[1, i], psum[2, i], fs[F_SR], fs[F_SRR], n)
    if not enter:
        return
    s = bar_index % cap
    ent[s] = bar_index
    eflag[s] = 0
    if ist[I_ZSEEN] >= min_z:
        for i in range(k):
            var = zm2[i] / fs[F_ZW]
            z = 0.0
            if var > 1e-24 * (zmean[i] * zmean[i] + 1e-300):
                z = (x[i] - zmean[i]) / math.sqrt(var)
                z = min(max(z, -z_clip), z_clip)
            ez[s, i] = z
        eflag[s] = 1
        if ist[I_W_OK] == 1:
            b = 0.0
            for i in range(k):
                b += w[i] * ez[s, i]
                es[s, i] = 1.0 if m1[i] > 0.0 else (-1.0 if m1[i] < 0.0 else 0.0)
            eb[s] = b
            eflag[s] = 2
    # West (1979): weighted incremental mean and sum of squared deviations, old weights scaled by lam_z
    wz = lam_z * fs[F_ZW] + 1.0
    for i in range(k):
        d = x[i] - zmean[i]
        zmean[i] += d / wz
        zm2[i] = lam_z * zm2[i] + d * (x[i] - zmean[i])
    fs[F_ZW] = wz
    ist[I_ZSEEN] += 1


_fw_step = kernel(_fw_step_py, fastmath=False)


def _fw_fused_py(  # type: ignore[no-untyped-def]
    m1, m2, m3, m4, w, zmean, zm2, ez, es, eb, ent, eflag, wp, wr, psum, ic, ist, fs, cols, has_probs, probs, has_x,
    x, bar_index, n_mat, mat, with_signal, lam, lam_z, min_fit, min_z, z_clip, centered,
):  # fmt: skip
    """``FactorWeighting.update`` in the fused step (``fxgate.modules._fusion``): the matured rows' entry bars and
    log returns (``Matured.log_return``: NaN unless both prices are > 0), then :func:`_fw_step` with the feature row
    and probabilities (empty when missing)."""
    mb = np.empty(n_mat, dtype=np.int64)
    mr = np.empty(n_mat)
    for i in range(n_mat):
        mb[i] = int(mat[i, M_ENTRY_BAR])
        e0 = mat[i, M_ENTRY]
        e1 = mat[i, M_EXIT]
        mr[i] = math.log(e1 / e0) if e0 > 0 and e1 > 0 else math.nan
    nx = x.shape[0] if has_x != 0 else 0
    npr = probs.shape[0] if has_probs != 0 else 0
    _fw_step(m1, m2, m3, m4, w, zmean, zm2, ez, es, eb, ent, eflag, wp, wr, psum, ic, ist, fs, mb, mr, x[:nx],
             probs[:npr], bar_index, cols, with_signal, lam, lam_z, min_fit, min_z, z_clip, centered)  # fmt: skip


_fw_fused = kernel(_fw_fused_py, fastmath=False)


def _decay(halflife: float | None) -> float:
    if halflife is None or halflife == 0 or math.isinf(halflife):
        return 1.0
    if not halflife > 0:
        raise ValueError(f"factor_weighting half-life must be > 0 (or 0 for equal weights); got {halflife!r}")
    return 0.5 ** (1.0 / float(halflife))


@register("factor_weighting")
class FactorWeighting(CertaintyModule):
    title = "FactorWeighting"
    formula = "w ∝ Σ_LW⁻¹ μ over factor returns z_i·r; pass: OOS IC(w·z) ≥ max_i OOS IC(sign(μ_i)·z_i), > 0"
    citation = "Grinold & Kahn (2000); Ledoit & Wolf (2004)"
    rule = "OOS IC of the Ledoit-Wolf mean-variance factor blend >= best single factor's + `margin`, > `min_ic`"
    defaults = {
        "factors": ("KMID", "ROC5", "ROC20", "ROC60", "RSV20", "CORR20"),
        "include_signal": True,
        "halflife": 500.0,
        "z_halflife": 1000.0,
        "z_min": 50,
        "z_clip": 5.0,
        "min_fit": 100,
        "window": 250,
        "min_outcomes": 100,
        "min_ic": 0.0,
        "margin": 0.0,
        "assume_centered": False,
        "horizon": 1,
    }
    gate_settings = ("horizon",)
    state_keys = (
        "m1",
        "m2",
        "m3",
        "m4",
        "w",
        "zmean",
        "zm2",
        "ez",
        "es",
        "eb",
        "ent",
        "eflag",
        "wp",
        "wr",
        "psum",
        "ic",
        "ist",
        "fs",
    )

    def reset(self) -> None:
        p = self.params
        cols: list[int] = []
        labels: list[str] = []
        for f in p["factors"]:
            if isinstance(f, bool) or not isinstance(f, int | np.integer | str):
                raise ValueError(f"factor_weighting factors must be feature names or column indices; got {f!r}")
            if isinstance(f, str):
                if f not in FEATURE_LAYOUT:
                    near = difflib.get_close_matches(f, FEATURE_LAYOUT, n=1)
                    hint = f"; did you mean {near[0]!r}?" if near else ""
                    raise ValueError(f"factor_weighting: {f!r} is not a feature{hint}")
                cols.append(FEATURE_LAYOUT.index(f))
                labels.append(f)
            else:
                if int(f) < 0:
                    raise ValueError(f"factor_weighting: a column index must be >= 0; got {f}")
                cols.append(int(f))
                labels.append(f"col{int(f)}")
        if len(set(cols)) != len(cols):
            raise ValueError(f"factor_weighting factors name a column twice: {list(p['factors'])}")
        if p["include_signal"]:
            labels.append(SIGNAL)
        k = len(labels)
        if k == 0:
            raise ValueError("factor_weighting needs at least one factor (factors, or include_signal = true)")
        for name in ("window", "min_outcomes", "min_fit", "z_min", "horizon"):
            if int(p[name]) < (2 if name == "window" else 1):
                raise ValueError(f"factor_weighting {name} must be >= {2 if name == 'window' else 1}; got {p[name]}")
        if int(p["min_outcomes"]) > int(p["window"]):
            raise ValueError(
                f"factor_weighting min_outcomes ({p['min_outcomes']}) > window ({p['window']}): it could never "
                "pass. Fix: min_outcomes <= window"
            )
        if not float(p["z_clip"]) > 0:
            raise ValueError(f"factor_weighting z_clip must be > 0; got {p['z_clip']}")
        self._cols = np.array(cols, dtype=np.int64)
        self.labels = tuple(labels)
        self._lam = _decay(p["halflife"])
        self._lam_z = _decay(p["z_halflife"])
        cap = int(p["horizon"]) + 8
        nw = int(p["window"])
        self.m1 = np.zeros(k)
        self.m2 = np.zeros((k, k))
        self.m3 = np.zeros((k, k))
        self.m4 = np.zeros((k, k))
        self.w = np.zeros(k)
        self.zmean = np.zeros(k)
        self.zm2 = np.zeros(k)
        self.ez = np.zeros((cap, k))
        self.es = np.zeros((cap, k))
        self.eb = np.zeros(cap)
        self.ent = np.full(cap, -1, dtype=np.int64)
        self.eflag = np.zeros(cap, dtype=np.int64)
        self.wp = np.zeros((nw, k + 1))
        self.wr = np.zeros(nw)
        self.psum = np.zeros((3, k + 1))
        self.ic = np.full(k + 1, np.nan)
        self.ist = np.zeros(6, dtype=np.int64)
        self.fs = np.zeros(6)
        self.fs[F_SHRINK] = np.nan

    def load_state_dict(self, state: dict) -> None:  # type: ignore[type-arg]
        super().load_state_dict(state)
        saved = {k: getattr(self, k) for k in self.state_keys}
        self.reset()  # the derived constants (columns, decays, buffers) follow the restored parameters
        for k, v in saved.items():
            setattr(self, k, v)

    def update(self, ctx: Context) -> None:
        if ctx.matured:
            mb = np.array([m.entry_bar for m in ctx.matured], dtype=np.int64)
            mr = np.array([m.log_return for m in ctx.matured])
        else:
            mb, mr = _NO_BARS, _EMPTY
        p = self.params
        _fw_step(
            self.m1,
            self.m2,
            self.m3,
            self.m4,
            self.w,
            self.zmean,
            self.zm2,
            self.ez,
            self.es,
            self.eb,
            self.ent,
            self.eflag,
            self.wp,
            self.wr,
            self.psum,
            self.ic,
            self.ist,
            self.fs,
            mb,
            mr,
            _EMPTY if ctx.features is None else np.asarray(ctx.features, dtype=np.float64),
            _EMPTY if ctx.probs is None else np.asarray(ctx.probs, dtype=np.float64),
            int(ctx.bar_index),
            self._cols,
            bool(p["include_signal"]),
            self._lam,
            self._lam_z,
            int(p["min_fit"]),
            int(p["z_min"]),
            float(p["z_clip"]),
            not p["assume_centered"],
        )

    def fused_step(self, timeframe: str) -> FusedStep:
        p = self.params
        inputs = ("has_probs", "probs", "has_x", "x", "bar_index", "n_mat", "mat")
        params = (
            bool(p["include_signal"]),
            float(self._lam),
            float(self._lam_z),
            int(p["min_fit"]),
            int(p["z_min"]),
            float(p["z_clip"]),
            not p["assume_centered"],
        )
        return FusedStep(_fw_fused, (*self.state_keys, "_cols"), inputs, params)

    @property
    def weights(self) -> dict[str, float]:
        """The current weights by factor label (NaN while they are not usable)."""
        ok = self.ist[I_W_OK] == 1
        return {lab: float(v) if ok else math.nan for lab, v in zip(self.labels, self.w, strict=True)}

    def shrunk_covariance(self) -> tuple[np.ndarray, float]:
        """(Σ_LW, ρ) of the factor returns matured so far, as the last fit computed them (NaN before any)."""
        k = len(self.m1)
        cov = np.full((k, k), np.nan)
        if self.fs[F_W] <= 0:
            return cov, math.nan
        rho = _lw(
            self.m1, self.m2, self.m3, self.m4, self.fs[F_W], self.fs[F_W2], not self.params["assume_centered"], cov
        )
        return cov, float(rho)

    def verdict(self) -> ModuleResult:
        p = self.params
        min_ic, margin = float(p["min_ic"]), float(p["margin"])
        n_fit = int(self.ist[I_FIT])
        if n_fit < p["min_fit"]:
            return insufficient(self.name, n_fit, int(p["min_fit"]), min_ic, "matured factor returns")
        n = min(int(self.ist[I_SCORED]), len(self.wr))
        if n < p["min_outcomes"]:
            return insufficient(self.name, n, int(p["min_outcomes"]), min_ic, "out-of-sample scored bars")
        ic_b = float(self.ic[0])
        singles = self.ic[1:]
        best_i = -1
        for i, v in enumerate(singles):
            if math.isfinite(v) and (best_i < 0 or v > singles[best_i]):
                best_i = i
        best = float(singles[best_i]) if best_i >= 0 else math.nan
        thr = max(best + margin, min_ic) if best_i >= 0 else min_ic
        if not math.isfinite(ic_b):
            return self._result(
                math.nan, False, thr, f"blend IC undefined over the last {n} bars (constant predictions or returns)"
            )
        beats = best_i < 0 or ic_b >= best + margin
        ok = beats and ic_b > min_ic
        label = self.labels[best_i] if best_i >= 0 else ""
        rho = float(self.fs[F_SHRINK])

        def reason() -> str:
            plus = f" + {margin}" if margin else ""
            if best_i < 0:
                vs = "no single factor has an IC"
            else:
                vs = f"{'>=' if beats else '<'} best single {best:+.3f} ({label}){plus}"
            pos = f"{'>' if ic_b > min_ic else '<='} {min_ic}"
            return (
                f"blend OOS IC {ic_b:+.3f} {vs}, {pos}, over the last {n} matured bars (Ledoit-Wolf shrinkage "
                f"{rho:.2f})"
            )

        return self._result(ic_b, ok, thr, reason)

    def warm_up(self) -> None:
        tmp = FactorWeighting(factors=(0, 1), include_signal=True, min_fit=2, z_min=2, window=4, min_outcomes=2)
        rng = np.random.default_rng(0)
        for i in range(12):
            bar = Bar(i * 3_600_000_000_000, 1.0, 1.0, 1.0, 1.0, 1.0, timeframe="H1")
            mat = (Matured(i, 0, 0, 1.0, 1.0 + 0.001 * rng.normal(), None, None),) if i else ()
            ctx = Context(
                bar, features=rng.normal(size=2), probs=np.array([0.5, 0.6, 0.4]), matured=mat, bar_index=i + 1
            )
            tmp.update(ctx)
        tmp.verdict()
        tmp.shrunk_covariance()
