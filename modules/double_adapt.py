"""DoubleAdapt — drift detection on the model's loss stream plus a domain-shift score of the features, with a
"refit recommended" flag.

Source idea: L. Zhao, S. Kong, Y. Shen, "DoubleAdapt: A Meta-learning Approach to Incremental Learning for Stock
Trend Forecasting", KDD 2023. The paper meta-learns two adapters for incremental updates under distribution
shift: a *data adapter* that maps features and labels of each new task towards a locally stationary
distribution, and a *model adapter* that meta-learns the initial parameters the model is fine-tuned from on each
incremental task (bi-level optimization, MAML-style).

What is implemented here (the per-bar practical part): *detecting* the shift the paper adapts to, and saying when
the Layer-1 models should be refit —

1. **Drift on the loss stream.** Every matured accepted bar with model probabilities (never before its horizon
   has elapsed) gives a loss of the ensemble's forecast p̄ = mean P(up) against the realized direction y = 1[up]:
   Brier (p̄ − y)² by default (bounded in [0, 1], as ADWIN's bound assumes), or the log loss. The losses feed
   ADWIN (Bifet & Gavaldà 2007) and, divided by the standard deviation of the first ``ph_calib`` losses (so its
   δ and λ are in units of the loss's own spread), the Page–Hinkley test (Page 1954); both in numba,
   operation for operation river's (``fxgate.modules._drift``; the tests check the same detection points as
   ``river.drift.ADWIN`` / ``river.drift.PageHinkley``). With ``direction = "up"`` (default) only a *rise* of the
   loss flags a drift (PH in mode "up"; an ADWIN detection counts when the newer sub-window's mean loss exceeds
   the window's mean before the cut); a model that got better is not vetoed.
2. **Domain shift** of recent features against the training window: the population stability index per feature,
   PSI = Σ_b (a_b − e_b) ln(a_b / e_b), e_b the reference share and a_b the share of the last ``psi_window`` bars
   in bin b, bins cut at the reference's deciles (``psi_bins``; tied cut points merge), shares floored at
   ``psi_eps``; aggregated over features by ``psi_aggregate`` (mean by default; max is available). The reference
   is the last ``ref_bars`` feature rows of bars the gate marked ``in_sample`` (the bundle's training window)
   when at least ``min_ref`` of them were seen before the first out-of-sample row, which then fixes it; otherwise
   out-of-sample rows are appended until the reference holds ``ref_bars`` rows. Once fixed, ``in_sample`` is not
   read again (until a refit); a row of another width than the first is skipped, a missing value (NaN/inf) is left
   out of its feature's counts, and a feature with fewer than ``psi_min_valid`` finite values (in the reference or
   the recent window) is left out of the aggregate.
3. **Refit.** When ``ctx.ensemble`` changes (another ``bundle_hash``: the models were refit), the reference, the
   detectors and the drift flag are reset: the new models are judged on their own losses and a new reference,
   filled from the rows that follow the refit (in-sample ones if the gate marks them so). Forecasts matured after
   the refit but made by the old models are scored like the others (Matured does not say which bundle made them).

What is NOT implemented from the paper: neither adapter — no feature/label transformation, no meta-learned
initialization, no bi-level optimization, no incremental fine-tuning. The module only detects and recommends;
the refit itself is replay's (``[replay] refit_on_drift``) or the operator's.

Default pass rule: veto while a drift is flagged (a detection within the last ``hold`` bars) or while
PSI > ``psi_max`` = 0.25 (the customary "significant shift" level of the PSI: N. Siddiqi, *Credit Risk
Scorecards*, Wiley 2006; its sampling properties: Yurdakul & Naranjo 2020, J. Risk Model Validation 14(4)). Note
that the PSI of overlapping rolling features is autocorrelated and biased upward in small windows (on the sample's
H1 bars the mean PSI over a 500-bar window ranges 0.11–0.30 against the first 1,000 bars; over 250 bars
0.18–0.57): keep ``psi_window`` large. ``refit_recommended()`` is True while a drift is flagged. Fails closed
("insufficient data") until ``ph_calib + ph_min_instances`` losses have been scored and the PSI windows are full.

Detector defaults: ADWIN at river's (δ = 0.002, clock 32, 5 buckets per row, min window 5, grace 10);
Page–Hinkley at river's min_instances 30, α = 1 − 1e-4, λ = 50, but δ = 0.05 (river: 0.005) on the standardized
loss and one-sided ("up"): on a simulated stationary Brier-loss stream (the tests') it false-alarms about once per
10,000 losses, against about once per 1,700 at river's δ = 0.005 two-sided; it catches a rise of the mean loss by
a third of its standard deviation within about 100–250 losses (ADWIN: 400–1,100).

State (slot names are module-level ints; the detectors' own arrays and slots: ``fxgate.modules._drift``)::

    ist  I_BARS            good bars seen since the last reset (the clock of ``hold``)
         I_LOSSES          losses scored
         I_LAST_DRIFT      I_BARS at the last flagged drift (-1: none)
         I_ADWIN_FLAGS     flagged ADWIN detections
         I_PH_FLAGS        flagged Page–Hinkley detections
         I_LAST_DETECTOR   which flagged last: 1 ADWIN, 2 Page–Hinkley, 3 both on one loss
         I_REF_ROWS        feature rows pushed into the reference ring
         I_REF_IN_SAMPLE   of which in-sample rows
         I_FROZEN          1 once the reference is fixed (edges and shares computed)
         I_RECENT          feature rows pushed into the recent window
         I_PSI_FEATURE     index of the feature with the largest PSI
         I_N_FEATURES      width of the feature row (0 until the first row)
         I_REFITS          bundle changes seen (not reset by them)
         I_ADWIN_ALL       ADWIN detections, flagged or not
         I_PH_ALL          Page–Hinkley detections, flagged or not
    fs   F_PSI_MEAN        mean PSI over the usable features
         F_PSI_MAX         max PSI over the usable features
         F_PH_SCALE        s, the standard deviation of the first ``ph_calib`` losses (0 until known)
         F_LAST_LOSS       the last loss scored
    calib                  the first ``ph_calib`` losses
    tot, var, cnt,         ADWIN's exponential histogram and slots
    aist, afs
    pist, pfs              Page–Hinkley's slots
    ref                    the reference ring, ``ref_bars`` × features (emptied once frozen)
    edges, nedges          per feature, the reference's unique inner decile cut points (nedges = -1: unusable)
    ref_p                  per feature and bin, the reference share e_b
    rb                     the recent window's bin per row and feature (-1: missing), a ring of ``psi_window``
    rcnt, rvalid           per feature, the recent window's count per bin and of non-missing values
    term                   per feature and bin, the cached PSI term (a_b − e_b) ln(a_b / e_b)
    bundle                 the bundle_hash of the ensemble the state belongs to ("" before any)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fxgate.engine.core.bars import Bar
from fxgate.engine.core.jit import kernel
from fxgate.modules._base import CertaintyModule, Context, Matured, ModuleResult, insufficient, register
from fxgate.modules._drift import (
    ADW_CAPACITY,
    ADW_DRIFT,
    ADW_TOTAL,
    ADW_WIDTH,
    PH_MODES,
    _adwin_reset,
    _ph_reset,
    adwin_update,
    ph_update,
)
from fxgate.modules._fusion import M_ENTRY, M_EXIT, M_HAS_PROBS, FusedStep

(
    I_BARS,
    I_LOSSES,
    I_LAST_DRIFT,
    I_ADWIN_FLAGS,
    I_PH_FLAGS,
    I_LAST_DETECTOR,
    I_REF_ROWS,
    I_REF_IN_SAMPLE,
    I_FROZEN,
    I_RECENT,
    I_PSI_FEATURE,
    I_N_FEATURES,
    I_REFITS,
    I_ADWIN_ALL,
    I_PH_ALL,
) = range(15)
F_PSI_MEAN, F_PSI_MAX, F_PH_SCALE, F_LAST_LOSS = range(4)
#: probabilities are clipped to [LOG_CLIP, 1 - LOG_CLIP] for the log loss
LOG_CLIP = 1e-6


def _forecast_loss_py(probs, entry, exit_, log_loss):  # type: ignore[no-untyped-def]
    """The ensemble's loss on one matured forecast: p̄ = mean of ``probs`` (P(up) per model), y = 1[exit > entry];
    Brier (p̄ − y)², or with ``log_loss`` the log loss (p̄ clipped to [LOG_CLIP, 1 − LOG_CLIP]). NaN when it cannot
    be scored: no probabilities, one outside [0, 1] or not finite, a price not finite or not positive."""
    n = probs.shape[0]
    if n == 0 or not (math.isfinite(entry) and math.isfinite(exit_) and entry > 0.0 and exit_ > 0.0):
        return np.nan
    p = 0.0
    for i in range(n):
        v = probs[i]
        if not (v >= 0.0 and v <= 1.0):  # NaN fails both
            return np.nan
        p += v
    p /= n
    y = 1.0 if exit_ > entry else 0.0
    if log_loss == 0:
        return (p - y) * (p - y)
    p = min(max(p, LOG_CLIP), 1.0 - LOG_CLIP)
    return -math.log(p) if y > 0.0 else -math.log1p(-p)


_forecast_loss = kernel(_forecast_loss_py, fastmath=False)


def _loss_step_py(  # type: ignore[no-untyped-def]
    tot,
    var,
    cnt,
    aist,
    afs,
    pist,
    pfs,
    ist,
    fs,
    calib,
    probs,
    entry,
    exit_,
    log_loss,
    adw_delta,
    adw_clock,
    adw_buckets,
    adw_mwl,
    adw_grace,
    ph_min,
    ph_delta,
    ph_threshold,
    ph_alpha,
    ph_mode,
    up_only,
):
    """Score one matured forecast (the ensemble's P(up) per model at entry, the entry and exit prices): skip it when
    it cannot be scored (:func:`forecast_loss`), else feed its loss to ADWIN (raw) and to Page–Hinkley (divided by s,
    the standard deviation of the first len(calib) losses, once known); a flagged detection marks a drift at the
    current bar. Slots: the module docstring."""
    loss = _forecast_loss(probs, entry, exit_, log_loss)
    if not math.isfinite(loss):
        return
    k = ist[I_LOSSES]
    ist[I_LOSSES] = k + 1
    fs[F_LAST_LOSS] = loss
    flag = 0
    # the ADWIN window's mean including this loss, before any cut (an ADWIN that flagged on its previous update
    # restarts from empty, so then it is this loss alone)
    if aist[ADW_DRIFT] != 0:
        mean_before = loss
    else:
        mean_before = (afs[ADW_TOTAL] + loss) / (afs[ADW_WIDTH] + 1.0)
    if adwin_update(tot, var, cnt, aist, afs, loss, adw_delta, adw_clock, adw_buckets, adw_mwl, adw_grace):
        ist[I_ADWIN_ALL] += 1
        # the cut dropped the oldest buckets: what is left is the newer sub-window; its mean exceeds the mean
        # before the cut exactly when it exceeds the dropped (older) part's mean, i.e. the loss rose
        w = afs[ADW_WIDTH]
        newer = afs[ADW_TOTAL] / w if w > 0.0 else loss
        if up_only == 0 or newer > mean_before:
            flag |= 1
    nc = calib.shape[0]
    if k < nc:
        calib[k] = loss
        if k + 1 == nc:
            m = 0.0
            for j in range(nc):
                m += calib[j]
            m /= nc
            ss = 0.0
            for j in range(nc):
                ss += (calib[j] - m) * (calib[j] - m)
            s = math.sqrt(ss / (nc - 1)) if nc > 1 else 0.0
            # constant losses: any positive scale will do (Page-Hinkley then sees no deviation)
            fs[F_PH_SCALE] = s if s > 0.0 and math.isfinite(s) else 1.0
    elif fs[F_PH_SCALE] > 0.0:
        if ph_update(pist, pfs, loss / fs[F_PH_SCALE], ph_min, ph_delta, ph_threshold, ph_alpha, ph_mode):
            ist[I_PH_ALL] += 1
            flag |= 2
    if flag & 1:
        ist[I_ADWIN_FLAGS] += 1
    if flag & 2:
        ist[I_PH_FLAGS] += 1
    if flag != 0:
        ist[I_LAST_DRIFT] = ist[I_BARS]
        ist[I_LAST_DETECTOR] = flag


def _psi_term_py(cnt, nv, e, eps):  # type: ignore[no-untyped-def]
    """One bin's PSI term (a − e) ln(a / e), a = cnt / nv, both shares floored at ``eps``."""
    a = cnt / nv
    if a < eps:
        a = eps
    if e < eps:
        e = eps
    return (a - e) * math.log(a / e)


_psi_term = kernel(_psi_term_py, fastmath=False)


def _psi_step_py(rb, rcnt, rvalid, term, edges, nedges, ref_p, ist, fs, x, eps, min_valid):  # type: ignore[no-untyped-def]
    """Push one feature row into the recent window (a ring of len(rb) rows of bin indices) and, once the window is
    full, update every usable feature's PSI against the reference shares ``ref_p``; writes the mean and max over
    features with at least ``min_valid`` non-missing recent values (NaN when there is none).

    ``term[f, b]`` caches each bin's PSI term: a row changes at most two bins of a feature (the leaving row's and
    the arriving row's), so only those are recomputed, unless the feature's count of non-missing values changed
    (every share changes). A feature's PSI is the sum of its terms in bin order, so it equals a full recompute
    exactly."""
    w = rb.shape[0]
    nf = rb.shape[1]
    k = ist[I_RECENT]
    slot = k % w
    full = k + 1 >= w
    first_full = k + 1 == w
    total = 0.0
    used = 0
    best = -1.0
    arg = -1
    for f in range(nf):
        ne = nedges[f]
        if ne < 0:
            continue
        nv0 = rvalid[f]
        b_out = -1
        if k >= w:
            b_out = rb[slot, f]
            if b_out >= 0:
                rcnt[f, b_out] -= 1
                rvalid[f] -= 1
        v = x[f]
        b_in = -1
        if math.isfinite(v):
            lo = 0  # bisect: the number of cut points <= v (np.searchsorted(..., side="right"))
            hi = ne
            while lo < hi:
                mid = (lo + hi) >> 1
                if edges[f, mid] <= v:
                    lo = mid + 1
                else:
                    hi = mid
            b_in = lo
            rcnt[f, b_in] += 1
            rvalid[f] += 1
        rb[slot, f] = b_in
        if not full:
            continue
        nv = rvalid[f]
        if nv < min_valid or nv == 0:
            continue
        if first_full or nv != nv0:
            for b in range(ne + 1):
                term[f, b] = _psi_term(rcnt[f, b], nv, ref_p[f, b], eps)
        elif b_out != b_in:
            if b_out >= 0:
                term[f, b_out] = _psi_term(rcnt[f, b_out], nv, ref_p[f, b_out], eps)
            if b_in >= 0:
                term[f, b_in] = _psi_term(rcnt[f, b_in], nv, ref_p[f, b_in], eps)
        psi = 0.0
        for b in range(ne + 1):
            psi += term[f, b]
        total += psi
        used += 1
        if psi > best:
            best = psi
            arg = f
    ist[I_RECENT] = k + 1
    if not full:
        return
    if used == 0:
        fs[F_PSI_MEAN] = np.nan
        fs[F_PSI_MAX] = np.nan
    else:
        fs[F_PSI_MEAN] = total / used
        fs[F_PSI_MAX] = best
    ist[I_PSI_FEATURE] = arg


_loss_step = kernel(_loss_step_py, fastmath=False)
_psi_step = kernel(_psi_step_py, fastmath=False)


def _double_adapt_fused_py(  # type: ignore[no-untyped-def]
    tot,
    var,
    cnt,
    aist,
    afs,
    pist,
    pfs,
    ist,
    fs,
    calib,
    rb,
    rcnt,
    rvalid,
    term,
    edges,
    nedges,
    ref_p,
    go,
    close,
    x,
    n_mat,
    mat,
    mprobs,
    log_loss,
    adw_delta,
    adw_clock,
    adw_buckets,
    adw_mwl,
    adw_grace,
    ph_min,
    ph_delta,
    ph_threshold,
    ph_alpha,
    ph_mode,
    up_only,
    eps,
    min_valid,
):
    """``DoubleAdapt.update`` in the fused step (``fxgate.modules._fusion``), after its ``prepare``
    (``DoubleAdapt._prepare``: the bundle check and the reference side of the feature push, Python): skip a bad
    bar whole; count the bar; score each matured forecast with probabilities (:func:`_loss_step`); push the
    feature row into the PSI window when ``prepare`` said so (``go[0]``: the reference is fixed and the row fits)."""
    if not (math.isfinite(close) and close > 0):
        return
    ist[I_BARS] += 1
    for i in range(n_mat):
        if mat[i, M_HAS_PROBS] != 0:
            _loss_step(
                tot,
                var,
                cnt,
                aist,
                afs,
                pist,
                pfs,
                ist,
                fs,
                calib,
                mprobs[i],
                mat[i, M_ENTRY],
                mat[i, M_EXIT],
                log_loss,
                adw_delta,
                adw_clock,
                adw_buckets,
                adw_mwl,
                adw_grace,
                ph_min,
                ph_delta,
                ph_threshold,
                ph_alpha,
                ph_mode,
                up_only,
            )
    if go[0] != 0:
        _psi_step(rb, rcnt, rvalid, term, edges, nedges, ref_p, ist, fs, x, eps, min_valid)


_double_adapt_fused = kernel(_double_adapt_fused_py, fastmath=False)


def reference_bins(ref: np.ndarray, n_bins: int, min_valid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per feature (column of ``ref``): the unique inner cut points at the reference's ``n_bins``-quantiles
    (numpy's linear interpolation), their count (-1 for a feature with fewer than ``min_valid`` finite values), and
    the reference share of each bin (a value v falls in bin searchsorted(edges, v, side="right"))."""
    nf = ref.shape[1]
    edges = np.full((nf, n_bins - 1), np.inf)
    nedges = np.full(nf, -1, dtype=np.int64)
    ref_p = np.zeros((nf, n_bins))
    qs = np.arange(1, n_bins) / n_bins
    for f in range(nf):
        v = ref[:, f]
        v = v[np.isfinite(v)]
        if len(v) < max(int(min_valid), 1):
            continue
        u = np.unique(np.quantile(v, qs))
        edges[f, : len(u)] = u
        nedges[f] = len(u)
        ref_p[f, : len(u) + 1] = np.bincount(np.searchsorted(u, v, side="right"), minlength=len(u) + 1) / len(v)
    return edges, nedges, ref_p


@register("double_adapt")
class DoubleAdapt(CertaintyModule):
    title = "DoubleAdapt"
    formula = "ADWIN + Page-Hinkley on the loss stream; PSI = sum (a-e) ln(a/e) vs training window"
    citation = (
        "Zhao, Kong & Shen (KDD 2023) (detection only); Bifet & Gavalda (2007); Page (1954); Yurdakul & Naranjo (2020)"
    )
    rule = "no ADWIN/Page-Hinkley drift on the loss stream in the last `hold` bars, mean PSI <= `psi_max` (0.25)"
    defaults = {
        "loss": "brier",
        "direction": "up",
        "hold": 48,
        "adwin_delta": 0.002,
        "adwin_clock": 32,
        "adwin_max_buckets": 5,
        "adwin_min_window": 5,
        "adwin_grace": 10,
        "ph_calib": 100,
        "ph_min_instances": 30,
        "ph_delta": 0.05,
        "ph_threshold": 50.0,
        "ph_alpha": 1 - 0.0001,
        "psi_max": 0.25,
        "psi_aggregate": "mean",
        "psi_bins": 10,
        "psi_window": 500,
        "psi_eps": 1e-4,
        "psi_min_valid": 50,
        "ref_bars": 1000,
        "min_ref": 200,
    }
    state_keys = (
        "ist",
        "fs",
        "calib",
        "tot",
        "var",
        "cnt",
        "aist",
        "afs",
        "pist",
        "pfs",
        "ref",
        "edges",
        "nedges",
        "ref_p",
        "rb",
        "rcnt",
        "rvalid",
        "term",
        "bundle",
    )
    #: written in place one row a bar (``rb``: the PSI window's next slot; ``ref``: the reference ring's next row,
    #: until the reference is fixed); ``edges``, ``nedges`` and ``ref_p`` are only ever rebound (``_features``,
    #: ``_freeze``), never written in place
    tx_rings = ("rb", "ref", "edges", "nedges", "ref_p")

    def reset(self) -> None:
        p = self.params
        if p["loss"] not in ("brier", "log"):
            raise ValueError(f"double_adapt loss {p['loss']!r} is not allowed; use 'brier' or 'log'")
        if p["direction"] not in ("up", "both"):
            raise ValueError(f"double_adapt direction {p['direction']!r} is not allowed; use 'up' or 'both'")
        if p["psi_aggregate"] not in ("mean", "max"):
            raise ValueError(f"double_adapt psi_aggregate {p['psi_aggregate']!r} is not allowed; use 'mean' or 'max'")
        if not 2 <= int(p["psi_bins"]) <= 100:
            raise ValueError(f"double_adapt psi_bins must be between 2 and 100. Got {p['psi_bins']!r} instead.")
        refits = int(self.ist[I_REFITS]) if hasattr(self, "ist") else 0
        self.ist = np.zeros(15, dtype=np.int64)
        self.ist[I_LAST_DRIFT] = -1
        self.ist[I_PSI_FEATURE] = -1
        self.ist[I_REFITS] = refits
        self.fs = np.zeros(4)
        self.fs[F_PSI_MEAN] = self.fs[F_PSI_MAX] = self.fs[F_LAST_LOSS] = np.nan
        self.calib = np.zeros(int(p["ph_calib"]))
        self.tot = np.zeros((ADW_CAPACITY, int(p["adwin_max_buckets"]) + 1))
        self.var = np.zeros_like(self.tot)
        self.cnt = np.zeros(ADW_CAPACITY, dtype=np.int64)
        self.aist = np.zeros(4, dtype=np.int64)
        self.afs = np.zeros(3)
        _adwin_reset(self.tot, self.var, self.cnt, self.aist, self.afs)
        self.pist = np.zeros(1, dtype=np.int64)
        self.pfs = np.zeros(6)
        _ph_reset(self.pist, self.pfs)
        self._features(0)
        if not hasattr(self, "bundle"):
            self.bundle = ""
        self._derive()

    def _derive(self) -> None:
        """What the kernels take besides the state, from the parameters (after a reset or a restore)."""
        p = self.params
        self._ens: object = None  # the last ensemble object seen (a cache: its bundle_hash is costly)
        self._args = (
            0 if p["loss"] == "brier" else 1,
            float(p["adwin_delta"]),
            int(p["adwin_clock"]),
            int(p["adwin_max_buckets"]),
            float(p["adwin_min_window"]),
            float(p["adwin_grace"]),
            float(p["ph_min_instances"]),
            float(p["ph_delta"]),
            float(p["ph_threshold"]),
            float(p["ph_alpha"]),
            PH_MODES["up" if p["direction"] == "up" else "both"],
            1 if p["direction"] == "up" else 0,
        )
        self._psi_args = (float(p["psi_eps"]), int(p["psi_min_valid"]))
        #: set by the fused step's prepare: 1 when the kernel pushes this bar's row into the PSI window
        self._psi_go = np.zeros(1, dtype=np.int64)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._derive()

    def _loss_state(self) -> tuple[np.ndarray, ...]:
        return (self.tot, self.var, self.cnt, self.aist, self.afs, self.pist, self.pfs, self.ist, self.fs, self.calib)

    def _features(self, nf: int) -> None:
        """(Re)allocate the feature-side state for rows of ``nf`` features, reference not yet fixed."""
        p = self.params
        b = int(p["psi_bins"])
        self.ref = np.zeros((int(p["ref_bars"]), nf))
        self.edges = np.full((nf, b - 1), np.inf)
        self.nedges = np.full(nf, -1, dtype=np.int64)
        self.ref_p = np.zeros((nf, b))
        self.rb = np.full((int(p["psi_window"]), nf), -1, dtype=np.int8)
        self.rcnt = np.zeros((nf, b), dtype=np.int64)
        self.rvalid = np.zeros(nf, dtype=np.int64)
        self.term = np.zeros((nf, b))
        self.ist[I_N_FEATURES] = nf

    def tx_rows(self) -> tuple[tuple[str, int], ...]:
        """The PSI window's next slot (``_psi_step`` writes row ``I_RECENT % psi_window``, once a bar at most) and the
        reference ring's next row (``_reference_push``: ``I_REF_ROWS % ref_bars``; none once frozen: ``ref`` is
        empty). A refit (a new bundle) or the first feature row rebinds the arrays instead (``reset``,
        ``_features``), which leaves these rows untouched."""
        ist, rb, ref = self.ist, self.rb, self.ref
        rows = []
        if len(rb):
            rows.append(("rb", int(ist[I_RECENT]) % len(rb)))
        if len(ref):
            rows.append(("ref", int(ist[I_REF_ROWS]) % len(ref)))
        return tuple(rows)

    # -- streaming ---------------------------------------------------------------------------------------------
    def _check_bundle(self, ens: object) -> None:
        """A different bundle_hash than the state's is a refit: start over (reference, detectors, drift flag)."""
        if ens is None or ens is self._ens:
            return
        self._ens = ens
        try:
            h = str(ens.bundle_hash)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - an ensemble that cannot name itself is treated as unchanged
            return
        if h == self.bundle:
            return
        if self.bundle:
            self.ist[I_REFITS] += 1
            self.reset()
            self._ens = ens
        self.bundle = h

    def update(self, ctx: Context) -> None:
        c = ctx.bar.close
        if not (math.isfinite(c) and c > 0):
            return  # a bad bar is skipped whole: the next good one continues from the last good state
        self._check_bundle(ctx.ensemble)
        self.ist[I_BARS] += 1
        for m in ctx.matured:
            if m.probs is not None:
                pr = m.probs
                if not (
                    isinstance(pr, np.ndarray) and pr.dtype == np.float64 and pr.ndim == 1 and pr.flags.c_contiguous
                ):
                    pr = np.ascontiguousarray(pr, dtype=np.float64).reshape(-1)  # one compiled signature
                _loss_step(*self._loss_state(), pr, float(m.entry_price), float(m.exit_price), *self._args)
        if ctx.features is not None:
            self._push_features(np.ascontiguousarray(ctx.features, dtype=np.float64), ctx.in_sample)

    def _push_features(self, x: np.ndarray, in_sample: bool) -> None:
        if self._reference_push(x, in_sample):
            _psi_step(
                self.rb,
                self.rcnt,
                self.rvalid,
                self.term,
                self.edges,
                self.nedges,
                self.ref_p,
                self.ist,
                self.fs,
                x,
                *self._psi_args,
            )

    def _reference_push(self, x: np.ndarray, in_sample: bool) -> bool:
        """The reference side of pushing the feature row ``x``: size the state on the first row, fill or fix the
        reference. True when the row goes into the PSI window (the reference is fixed and the row fits): the
        caller then runs ``_psi_step`` on it."""
        ist, p = self.ist, self.params
        if x.ndim != 1 or x.size == 0:
            return False
        nf = int(ist[I_N_FEATURES])
        if nf == 0:
            self._features(x.size)
        elif x.size != nf:
            return False  # a row of another width is not comparable with the reference
        if ist[I_FROZEN]:
            return True
        if not in_sample and ist[I_REF_IN_SAMPLE] >= p["min_ref"]:
            self._freeze()  # the training window is over: this row is the first recent one
            return True
        cap = self.ref.shape[0]
        self.ref[ist[I_REF_ROWS] % cap] = x
        ist[I_REF_ROWS] += 1
        if in_sample:
            ist[I_REF_IN_SAMPLE] += 1
        elif ist[I_REF_ROWS] >= cap:
            self._freeze()
        return False

    # -- the fused step ----------------------------------------------------------------------------------------
    def fused_step(self, timeframe: str) -> FusedStep:
        """The kernel scores the matured forecasts and pushes a row into the PSI window; ``prepare`` does the Python
        before it: the bundle check (a refit resets the state) and the reference side of the feature push (sizing,
        filling and fixing the reference: numpy quantiles). The reference push touches no state the loss steps
        read or write, so doing it before them (``update`` does it after) leaves the same state."""
        return FusedStep(
            _double_adapt_fused,
            (
                "tot",
                "var",
                "cnt",
                "aist",
                "afs",
                "pist",
                "pfs",
                "ist",
                "fs",
                "calib",
                "rb",
                "rcnt",
                "rvalid",
                "term",
                "edges",
                "nedges",
                "ref_p",
                "_psi_go",
            ),
            ("close", "x", "n_mat", "mat", "mprobs"),
            (*self._args, *self._psi_args),
            prepare=self._prepare,
        )

    def _prepare(self, ctx: Context) -> None:
        c = ctx.bar.close
        if not (math.isfinite(c) and c > 0):
            self._psi_go[0] = 0
            return  # the kernel skips the bar too
        self._check_bundle(ctx.ensemble)  # a refit resets the state (and rebinds _psi_go)
        go = False
        if ctx.features is not None:
            go = self._reference_push(np.ascontiguousarray(ctx.features, dtype=np.float64), ctx.in_sample)
        self._psi_go[0] = go

    def _freeze(self) -> None:
        """Fix the reference: per-feature decile cut points and shares; the raw rows are no longer needed."""
        p, ist = self.params, self.ist
        n = min(int(ist[I_REF_ROWS]), self.ref.shape[0])
        self.edges, self.nedges, self.ref_p = reference_bins(self.ref[:n], int(p["psi_bins"]), int(p["psi_min_valid"]))
        self.ref = np.zeros((0, self.ref.shape[1]))
        ist[I_FROZEN] = 1

    # -- verdict -----------------------------------------------------------------------------------------------
    @property
    def psi(self) -> float:
        return float(self.fs[F_PSI_MEAN if self.params["psi_aggregate"] == "mean" else F_PSI_MAX])

    def drift_flagged(self) -> bool:
        last = int(self.ist[I_LAST_DRIFT])
        return last >= 0 and int(self.ist[I_BARS]) - last < int(self.params["hold"])

    def refit_recommended(self) -> bool:
        return self.drift_flagged()

    def verdict(self) -> ModuleResult:
        p, ist = self.params, self.ist
        thr = float(p["psi_max"])
        need = int(p["ph_calib"]) + int(p["ph_min_instances"])
        have = int(ist[I_LOSSES])
        if have < need:
            return insufficient(self.name, have, need, thr, "scored outcomes")
        if not ist[I_FROZEN]:
            n = int(ist[I_REF_ROWS])
            return insufficient(self.name, min(n, int(p["ref_bars"])), int(p["ref_bars"]), thr, "reference bars")
        if ist[I_RECENT] < p["psi_window"]:
            return insufficient(self.name, int(ist[I_RECENT]), int(p["psi_window"]), thr, "bars in the PSI window")
        psi = self.psi
        w = float(self.afs[ADW_WIDTH])
        mean_loss = float(self.afs[ADW_TOTAL]) / w if w > 0 else math.nan

        def loss_txt() -> str:
            return f"ADWIN window {int(w)} losses, mean {p['loss']} {mean_loss:.4f}"

        if self.drift_flagged():
            ago = int(ist[I_BARS]) - int(ist[I_LAST_DRIFT])
            who = {1: "ADWIN", 2: "Page-Hinkley", 3: "ADWIN and Page-Hinkley"}[int(ist[I_LAST_DETECTOR])]
            return self._result(
                psi,
                False,
                thr,
                lambda: (
                    f"loss drift flagged by {who} {ago} bar(s) ago (veto for {p['hold']} bars; refit "
                    f"recommended); {loss_txt()}"
                ),
            )
        if not math.isfinite(psi):
            return self._result(psi, False, thr, "PSI undefined: no feature has enough finite values")
        ok = psi <= thr
        f, largest = int(ist[I_PSI_FEATURE]), float(self.fs[F_PSI_MAX])
        return self._result(
            psi,
            ok,
            thr,
            lambda: (
                f"no loss drift in the last {p['hold']} bars ({loss_txt()}); PSI {p['psi_aggregate']} {psi:.3f} "
                f"{'<=' if ok else '>'} {thr} (largest: feature {f}, {largest:.3f})"
            ),
        )

    def warm_up(self) -> None:
        tmp = DoubleAdapt(ph_calib=3, ph_min_instances=1, psi_window=2, ref_bars=2, min_ref=1, psi_min_valid=1)
        for i in range(8):
            mat = (Matured(i, i, i + 1, 1.0, 1.0 + 0.01 * (i % 3 - 1), np.array([0.4, 0.5, 0.6]), None),)
            tmp.update(Context(Bar(i, 1.0, 1.0, 1.0, 1.0, 1.0), features=np.array([0.1 * i, 1.0]), matured=mat))
