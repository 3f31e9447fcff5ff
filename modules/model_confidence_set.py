"""ModelConfidenceSet — is the forecaster behind the signal among the best forecasters of the recent past?

Hansen, Lunde & Nason (2011), *The Model Confidence Set*, Econometrica 79(2), 453-497. Given the losses L_{t,i} of
m forecasters over the same T forecasts, the MCS M̂_{1-α} is what survives a sequence of equal-predictive-ability
tests, each eliminating the worst model of the set still standing:

    d_ij = mean_t(L_ti − L_tj),   d_i· = mean_t(L_ti) − mean_{j∈M} mean_t(L_tj)
    R (range) method:  t_ij = d_ij / sqrt(var̂ d_ij),   T_R   = max_{i,j∈M} t_ij   (= max |t_ij|)   eliminate argmax_i
    max method:        t_i  = d_i· / sqrt(var̂ d_i·),    T_max = max_{i∈M} t_i                      eliminate argmax

The null's distribution and the variances come from one stationary bootstrap (Politis & Romano 1994) of the rows,
the same resamples for every step (HLN §3.2, their eq. 6-8): each resample's mean is recentred on the sample mean.
A step's p-value is the share of resamples whose statistic exceeds the sample's (strictly: arch's convention); the
MCS p-value of a model is the running maximum of the step p-values up to its elimination, 1 for the last model(s)
standing; the model is in the (1 − ``size``) MCS when its p-value exceeds ``size``. This follows
``arch.bootstrap.MCS`` step for step (the reference test feeds both the same bootstrap indices and gets the same
included set and p-values to 1e-12, for both methods). Two points where arch has no answer: identical loss columns
(arch divides 0 by 0 and, in the max method, never terminates) — here a set whose remaining members all have
identical losses stops eliminating (they are indistinguishable, p-value 1), and a pair with zero bootstrap variance
but a non-zero mean difference has t = ±inf.

**Series.** Every matured forecast with Layer-1 probabilities (``Context.matured``, delivered ``horizon`` bars after
entry, never earlier) adds one loss row over the forecasters, in this column order:

    0 xgboost, 1 lightgbm, 2 catboost   the Layer-1 members' calibrated P(up) (``Matured.probs``)
    3 ensemble                          their mean — the forecaster behind the candidate signal
    4 benchmark                         no skill: the base rate of "up" among the outcomes the gate knew at entry
                                        (Laplace: (ups + 1)/(n + 2), from the horizons that ended by the entry bar,
                                        never a later one), or P = 0.5 with ``benchmark = "half"``
    5 llm                               the LLM judge's P(up) (``Matured.llm_prob``), NaN on the bars it did not answer

**Loss: the Brier score** (p − 1{up})². It is strictly proper, like the log loss, but bounded in [0, 1]: the MCS
bootstrap needs loss differentials with finite moments (HLN assumption 2), and the log loss of a calibrated model
that once said 0.999 on a down move is an outlier that would decide the test alone (and infinite at 0 or 1).

**The LLM.** The judge answers on few bars, so its column is mostly NaN. The MCS is computed over rows where every
included series is finite: when ``include_llm`` and at least ``min_rows`` rows of the window carry the judge's
answer, the MCS is over those rows with all six columns (the rows are not consecutive: the bootstrap treats them as
one series, which is the best the data allow); otherwise the LLM is left out and all rows are used with five.

**Pass rule:** the ensemble-mean forecaster is in the 90% MCS (its MCS p-value > ``size`` = 0.1). The candidate is
the three members agreeing and the ensemble mean is the probability Layer 1 thresholds, so that is the model behind
the signal. Score: its MCS p-value. Being in the MCS says "not significantly worse than the best of these"; it is
not proof of an edge over chance (EdgeProof tests that): with a window of indistinguishable forecasters all pass.
With the LLM in the set, a judge significantly better than the ensemble also vetoes (Layer 1's probability is then
not among the best forecasts of the up move); ``include_llm = false`` judges Layer 1 against its members and the
benchmark only.

**Scheduling.** ``update`` only pushes loss rows (O(1) per matured forecast, one numba call each). After each
``every`` new rows (one per out-of-sample bar) it calls :meth:`ModelConfidenceSet.recompute`: a stationary bootstrap
with ``reps`` resamples, mean block ``block`` (0: Politis–White's estimate on the loss differentials against the
ensemble, at least ``horizon`` because h-bar forecasts overlap), method ``method`` ("R", HLN's default, or "max").
The resamples are ``_bootstrap.stationary_means`` (prefix sums over the stationary stream, no index matrix) in
``PARTS`` = 4 independent streams of ``reps``/4 resamples each, stream s seeded by (``seed`` + the number of rows
pushed, s), so a replay and a restored snapshot draw the same resamples on any machine. The recompute runs off the
bar's critical path (``fxgate.modules._schedule``): its four parts are submitted to the background threads on the
due bar and the result is applied at the start of the ``lag``-th update after it (default 1: the next bar;
``lag = 0``: inside the due bar's update); a bar that must apply it before the workers are done runs the parts
they have not started itself, so in a replay two cores share the bootstrap instead of one. The verdict reads the
last applied recompute; a failed one (``error``) fails it closed.

State (``losses`` is a ring of the last ``window`` loss rows, six columns; slots are module-level ints)::

    losses            ring of loss rows (Brier), row r % window holds the r-th row pushed; NaN: no answer (llm)
    snap              ring of horizon + 1 snapshots [bar index, ups, outcomes] of the base-rate counts at the end
                      of each accepted bar, read back at a forecast's entry bar
    pvals             MCS p-value per column at the last recompute (NaN: column not in that MCS)
    ist  I_ROWS        loss rows pushed so far
         I_UPS         matured outcomes that went up (every matured bar, in sample included)
         I_OUTCOMES    matured outcomes counted in I_UPS
         I_LAST_BAR    the last bar index a snapshot was taken at (-1: none)
         I_RECOMPUTED  I_ROWS at the last recompute submitted (-1: never)
         I_USED_ROWS   rows the last applied MCS used (0: none applied yet)
         I_USED_LLM    1 when the last applied MCS included the LLM
    fs   F_BLOCK       mean block length the last applied recompute used
    error              the last applied recompute's error text ("" when it ran)
    jst, jres, jerr    the recompute in flight (``fxgate.modules._schedule``)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from fxgate.engine.core.jit import kernel
from fxgate.modules._base import Context, ModuleResult, insufficient, register
from fxgate.modules._bootstrap import optimal_block_length, stationary_means
from fxgate.modules._fusion import M_ENTRY, M_ENTRY_BAR, M_EXIT, M_HAS_PROBS, M_LLM_PROB, FusedStep
from fxgate.modules._schedule import FLAG_DUE, ScheduledModule, tick_count

__all__ = ["ModelConfidenceSet", "COLUMNS", "mcs_pvalues", "mcs"]

#: loss columns, in order (the Layer-1 members in the order of ``Matured.probs``)
COLUMNS = ("xgboost", "lightgbm", "catboost", "ensemble", "benchmark", "llm")
C_ENSEMBLE, C_BENCHMARK, C_LLM = 3, 4, 5
N_MEMBERS = 3
N_COLS = len(COLUMNS)

I_ROWS, I_UPS, I_OUTCOMES, I_LAST_BAR, I_RECOMPUTED, I_USED_ROWS, I_USED_LLM = 0, 1, 2, 3, 4, 5, 6
F_BLOCK = 0
S_BAR, S_UPS, S_OUTCOMES = 0, 1, 2  # columns of ``snap``


# -- per-forecast streaming kernels -----------------------------------------------------------------------------------
def _mcs_push_py(losses, snap, ist, p0, p1, p2, llm, up, entry_bar, half):  # type: ignore[no-untyped-def]
    """Push one matured forecast's Brier losses into the ring ``losses`` and count its outcome.

    ``p0..p2`` are the members' P(up) (finite, in [0, 1]), ``llm`` the judge's (NaN: no answer), ``up`` 1.0 or 0.0.
    The benchmark is 0.5 when ``half``, else the Laplace base rate from the snapshot taken at ``entry_bar``; when
    that snapshot is gone (the module was created after the entry) the row is skipped. The outcome is counted after
    the row, so a forecast's own outcome never enters its benchmark."""
    if half:
        bench = 0.5
    else:
        j = entry_bar % snap.shape[0]
        if entry_bar < 0 or snap[j, S_BAR] != entry_bar:
            bench = -1.0
        else:
            bench = (snap[j, S_UPS] + 1.0) / (snap[j, S_OUTCOMES] + 2.0)
    if bench >= 0.0:
        w = losses.shape[0]
        r = ist[I_ROWS] % w
        ens = (p0 + p1 + p2) / 3.0
        losses[r, 0] = (p0 - up) ** 2
        losses[r, 1] = (p1 - up) ** 2
        losses[r, 2] = (p2 - up) ** 2
        losses[r, C_ENSEMBLE] = (ens - up) ** 2
        losses[r, C_BENCHMARK] = (bench - up) ** 2
        losses[r, C_LLM] = (llm - up) ** 2  # NaN stays NaN
        ist[I_ROWS] += 1


def _mcs_count_py(ist, up):  # type: ignore[no-untyped-def]
    """Count one matured outcome (``up`` 1.0/0.0) in the base rate."""
    ist[I_OUTCOMES] += 1
    if up > 0.5:
        ist[I_UPS] += 1


def _mcs_snapshot_py(snap, ist, bar_index):  # type: ignore[no-untyped-def]
    """At the end of an accepted bar, keep the base-rate counts under its index (once per index, increasing)."""
    if bar_index > ist[I_LAST_BAR]:
        j = bar_index % snap.shape[0]
        snap[j, S_BAR] = bar_index
        snap[j, S_UPS] = ist[I_UPS]
        snap[j, S_OUTCOMES] = ist[I_OUTCOMES]
        ist[I_LAST_BAR] = bar_index


_mcs_push = kernel(_mcs_push_py, fastmath=False)
_mcs_count = kernel(_mcs_count_py, fastmath=False)
_mcs_snapshot = kernel(_mcs_snapshot_py, fastmath=False)


def _mcs_fused_py(losses, snap, ist, jst, bar_index, n_mat, mat, mprobs, half, min_rows, every):  # type: ignore[no-untyped-def]
    """``ModelConfidenceSet.update`` in the fused step (``fxgate.modules._fusion``): count the pending recompute
    down; per matured forecast with finite positive prices, push its loss row (when it has three members'
    probabilities in [0, 1]) and count its outcome; snapshot the base-rate counts. Returns the schedule's flags
    (``_schedule.FLAG_APPLY``: apply the pending result, ``FLAG_DUE``: a recompute is due):
    ``ScheduledModule.fused_after`` does both."""
    flag = tick_count(jst)
    three = mprobs.shape[1] == N_MEMBERS
    for i in range(n_mat):
        e = mat[i, M_ENTRY]
        x = mat[i, M_EXIT]
        if not (math.isfinite(e) and math.isfinite(x) and e > 0 and x > 0):
            continue
        up = 1.0 if x > e else 0.0
        if mat[i, M_HAS_PROBS] != 0 and three:
            p0 = mprobs[i, 0]
            p1 = mprobs[i, 1]
            p2 = mprobs[i, 2]
            if 0.0 <= p0 <= 1.0 and 0.0 <= p1 <= 1.0 and 0.0 <= p2 <= 1.0:  # NaN fails every comparison
                q = mat[i, M_LLM_PROB]
                llm = q if 0.0 <= q <= 1.0 else math.nan
                _mcs_push(losses, snap, ist, p0, p1, p2, llm, up, int(mat[i, M_ENTRY_BAR]), half)
        _mcs_count(ist, up)
    _mcs_snapshot(snap, ist, bar_index)
    rows = ist[I_ROWS]
    last = ist[I_RECOMPUTED]
    if min(rows, losses.shape[0]) >= min_rows and (last < 0 or rows - last >= every):
        flag |= FLAG_DUE
    return flag


_mcs_fused = kernel(_mcs_fused_py, fastmath=False)


# -- the MCS ---------------------------------------------------------------------------------------------------------
def _mcs_py(m, mb, use_max, same, pvals):  # type: ignore[no-untyped-def]
    """The MCS p-value of each of k models into ``pvals`` (k) from their sample mean losses ``m`` (k) and the
    bootstrap resamples' mean losses ``mb`` (reps×k), R method (``use_max`` False) or max method, step for step as
    arch's ``MCS``. ``same[i, j]`` is True when models i and j have identical losses (a set whose members are all
    identical stops the elimination: they cannot be told apart)."""
    reps, k = mb.shape
    included = np.ones(k, dtype=np.bool_)
    order = np.zeros(k, dtype=np.int64)  # elimination order
    step_p = np.zeros(k)
    n_out = 0
    left = k
    if not use_max:
        d = np.zeros((k, k))
        db = np.zeros((reps, k, k))
        v = np.zeros((k, k))
        for i in range(k):
            for j in range(k):
                d[i, j] = m[i] - m[j]
        for r in range(reps):
            for i in range(k):
                for j in range(k):
                    x = (mb[r, i] - mb[r, j]) - d[i, j]
                    db[r, i, j] = x
                    v[i, j] += x * x
        for i in range(k):
            for j in range(k):
                v[i, j] = v[i, j] / reps + (1.0 if i == j else 0.0)  # arch adds the identity: no 0/0 on the diagonal
        ts = np.zeros((k, k))
        for i in range(k):
            for j in range(k):
                if v[i, j] > 0:
                    s = math.sqrt(v[i, j])
                    ts[i, j] = d[i, j] / s
                    for r in range(reps):
                        db[r, i, j] /= s
                else:
                    ts[i, j] = 0.0 if d[i, j] == 0 else math.copysign(math.inf, d[i, j])
                    for r in range(reps):
                        db[r, i, j] = 0.0
        while left > 1:
            all_same = True
            for i in range(k):
                for j in range(k):
                    if included[i] and included[j] and not same[i, j]:
                        all_same = False
            if all_same:
                break
            stat = -math.inf
            worst = -1
            for i in range(k):  # row-major first maximum: arch's choice
                if included[i]:
                    for j in range(k):
                        if included[j] and ts[i, j] > stat:
                            stat = ts[i, j]
                            worst = i
            hits = 0
            for r in range(reps):
                s = -math.inf
                for i in range(k):
                    if included[i]:
                        for j in range(k):
                            if included[j] and db[r, i, j] > s:
                                s = db[r, i, j]
                if stat < s:
                    hits += 1
            p = hits / reps
            included[worst] = False
            order[n_out] = worst
            step_p[n_out] = p
            n_out += 1
            left -= 1
    else:
        eb = np.zeros((reps, k))  # resample means of the loss errors, centred across models
        for r in range(reps):
            c = 0.0
            for j in range(k):
                eb[r, j] = mb[r, j] - m[j]
                c += eb[r, j]
            c /= k
            for j in range(k):
                eb[r, j] -= c
        x = np.zeros((reps, k))
        sd = np.zeros(k)
        tstat = np.zeros(k)
        while left > 1:
            all_same = True
            for i in range(k):
                for j in range(k):
                    if included[i] and included[j] and not same[i, j]:
                        all_same = False
            if all_same:
                break
            for j in range(k):
                sd[j] = 0.0
            for r in range(reps):
                g = 0.0
                for j in range(k):
                    if included[j]:
                        g += eb[r, j]
                g /= left
                for j in range(k):
                    if included[j]:
                        x[r, j] = eb[r, j] - g
                        sd[j] += x[r, j] * x[r, j]
            gm = 0.0
            for j in range(k):
                if included[j]:
                    sd[j] = math.sqrt(sd[j] / reps)
                    gm += m[j]
            gm /= left
            stat = -math.inf
            for j in range(k):
                if included[j]:
                    dj = m[j] - gm
                    if sd[j] > 0:
                        tstat[j] = dj / sd[j]
                    else:
                        tstat[j] = 0.0 if dj == 0 else math.copysign(math.inf, dj)
                    if tstat[j] > stat:
                        stat = tstat[j]
            hits = 0
            for r in range(reps):
                s = -math.inf
                for j in range(k):
                    if included[j]:
                        y = x[r, j] / sd[j] if sd[j] > 0 else 0.0
                        if y > s:
                            s = y
                if stat < s:
                    hits += 1
            p = hits / reps
            for j in range(k):  # every model at the maximum goes (arch)
                if included[j] and tstat[j] == stat:
                    included[j] = False
                    order[n_out] = j
                    step_p[n_out] = p
                    n_out += 1
                    left -= 1
    run = 0.0
    for s in range(n_out):
        if step_p[s] > run:
            run = step_p[s]
        pvals[order[s]] = run
    for j in range(k):
        if included[j]:
            pvals[j] = 1.0


_mcs = kernel(_mcs_py, fastmath=False)


def mcs_pvalues(losses: np.ndarray, boot_means: np.ndarray, method: str = "R") -> np.ndarray:
    """MCS p-values of the k columns of ``losses`` (T×k, finite), given the bootstrap resamples' column means
    ``boot_means`` (reps×k; ``_bootstrap.stationary_means``, or ``_bootstrap.bootstrap_means`` over a given index
    matrix). A column is in the (1 − size) MCS when its p-value exceeds ``size``."""
    if method not in ("R", "max"):
        raise ValueError(f"method must be 'R' or 'max'. Got {method!r} instead.")
    a = np.ascontiguousarray(losses, dtype=np.float64)
    mb = np.ascontiguousarray(boot_means, dtype=np.float64)
    k = a.shape[1]
    if a.ndim != 2 or k < 2 or mb.ndim != 2 or mb.shape[1] != k:
        raise ValueError(f"mcs_pvalues needs losses (T, k >= 2) and boot_means (reps, k); got {a.shape}, {mb.shape}")
    same = np.array([[np.array_equal(a[:, i], a[:, j]) for j in range(k)] for i in range(k)])
    out = np.full(k, np.nan)
    _mcs(a.mean(axis=0), mb, method == "max", same, out)
    return out


#: the MCS recompute's parts (``ModelConfidenceSet.split``): a fixed count, so the resamples, and the p-values, are
#: the same on every machine; up to this many cores share one recompute
PARTS = 4


def part_seed(seed: int, s: int) -> int:
    """The seed of part ``s`` of a recompute seeded ``seed``: distinct streams for distinct (seed, s) (numpy's
    SeedSequence hashes the pair)."""
    return int(np.random.SeedSequence([int(seed), int(s)]).generate_state(1, np.uint64)[0])


def part_reps(reps: int, parts: int) -> list[int]:
    """How many of ``reps`` resamples each of ``parts`` streams draws: reps · (s + 1) // parts − reps · s // parts for
    stream s (a stream with none is skipped)."""
    cut = [reps * s // parts for s in range(parts + 1)]
    return [cut[s + 1] - cut[s] for s in range(parts)]


def mcs(losses: np.ndarray, reps: int, block: float, seed: int, method: str = "R", parts: int = 1) -> np.ndarray:
    """MCS p-values of the columns of ``losses`` (T×k, finite) from ``reps`` stationary-bootstrap resamples with
    mean block ``block``, drawn from ``seed`` (``_bootstrap``'s stream, means from prefix sums). ``parts`` > 1: the
    resamples are that many streams, stream s seeded :func:`part_seed` (seed, s), one after the other in one thread
    (what the module's recompute draws with ``parts = PARTS``)."""
    if parts == 1:
        return mcs_pvalues(losses, stationary_means(losses, reps, block, seed), method)
    means = [stationary_means(losses, r, block, part_seed(seed, s)) for s, r in enumerate(part_reps(reps, parts)) if r]
    return mcs_pvalues(losses, np.concatenate(means), method)


def _mcs_part(lw: np.ndarray, p: dict, reps: int, seed: int, s: int) -> tuple[float, np.ndarray]:
    """Part ``s`` of the recompute seeded ``seed``: (block length, the column means of its ``reps`` resamples, from
    the stream :func:`part_seed` (seed, s); derived here, on the worker, not on the bar that submits it)."""
    b = ModelConfidenceSet.block_length_of(lw, p)
    return b, stationary_means(lw, reps, b, part_seed(seed, s))


def _mcs_result(lw: np.ndarray, with_llm: bool, p: dict, parts: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """The parts' resamples combined into the recompute's result (``ModelConfidenceSet.compute``)."""
    out = np.full(ModelConfidenceSet.result_size, np.nan)
    out[1], out[2] = lw.shape[0], float(with_llm)
    if not parts:  # too few rows: nothing was drawn
        return out
    out[0] = parts[0][0]
    means = np.concatenate([m for _, m in parts])
    out[3 : 3 + lw.shape[1]] = mcs_pvalues(lw, means, str(p["method"]))
    return out


@register("model_confidence_set")
class ModelConfidenceSet(ScheduledModule):
    title = "ModelConfidenceSet"
    formula = "MCS_{1-a}: eliminate argmax t_ij (R) until H0 equal loss holds; Brier losses, stationary bootstrap"
    citation = "Hansen, Lunde & Nason (2011), Econometrica 79(2), 453-497"
    rule = "the ensemble-mean forecaster is in the 90% MCS (MCS p-value > `size` = 0.1)"
    gate_settings = ("horizon",)
    result_size = 3 + N_COLS  # block, rows used, llm used, then the p-value per column
    defaults = {
        "window": 500,
        "min_rows": 100,
        "every": 50,
        "lag": 1,
        "reps": 2000,
        "block": 0.0,
        "method": "R",
        "size": 0.1,
        "seed": 0,
        "include_llm": True,
        "benchmark": "base_rate",
        "horizon": 1,
    }
    state_keys = ("losses", "snap", "pvals", "ist", "fs", "error", "jst", "jres", "jerr")

    def reset(self) -> None:
        p = self.params
        if p["method"] not in ("R", "max"):
            raise ValueError(
                f"The 'method' parameter of model_confidence_set must be 'R' or 'max'. Got {p['method']!r}"
            )
        if p["benchmark"] not in ("base_rate", "half"):
            raise ValueError(
                f"The 'benchmark' parameter of model_confidence_set must be 'base_rate' or 'half'. "
                f"Got {p['benchmark']!r}"
            )
        if not 0.0 < float(p["size"]) < 1.0:
            raise ValueError(f"The 'size' parameter of model_confidence_set must be in (0, 1). Got {p['size']!r}")
        if int(p["min_rows"]) < 2 or int(p["window"]) < int(p["min_rows"]) or int(p["reps"]) < 1 or int(p["every"]) < 1:
            raise ValueError(
                "model_confidence_set needs 2 <= min_rows <= window, reps >= 1 and every >= 1. Got "
                f"min_rows={p['min_rows']}, window={p['window']}, reps={p['reps']}, every={p['every']}"
            )
        self.losses = np.full((int(p["window"]), N_COLS), np.nan)
        self.snap = np.full((int(p["horizon"]) + 1, 3), -1, dtype=np.int64)
        self.pvals = np.full(N_COLS, np.nan)
        self.ist = np.zeros(7, dtype=np.int64)
        self.ist[I_LAST_BAR] = self.ist[I_RECOMPUTED] = -1
        self.fs = np.full(1, np.nan)
        self.error = ""  # the last applied recompute's error ("" when it ran)
        self._reset_job()

    @property
    def rows(self) -> int:
        """Loss rows pushed so far (the window holds the last ``min(rows, window)``)."""
        return int(self.ist[I_ROWS])

    def window_losses(self) -> np.ndarray:
        """The window's loss rows, oldest first (n × 6; the llm column NaN where the judge did not answer)."""
        n, w = self.rows, len(self.losses)
        if n <= w:
            return self.losses[:n].copy()
        j = n % w
        return np.concatenate([self.losses[j:], self.losses[:j]])

    def update(self, ctx: Context) -> None:
        self._tick()
        half = self.params["benchmark"] == "half"
        for mt in ctx.matured:
            e, x = mt.entry_price, mt.exit_price
            if not (math.isfinite(e) and math.isfinite(x) and e > 0 and x > 0):
                continue
            up = 1.0 if x > e else 0.0
            pr = mt.probs
            if pr is not None and len(pr) == N_MEMBERS:
                p0, p1, p2 = float(pr[0]), float(pr[1]), float(pr[2])
                if 0.0 <= p0 <= 1.0 and 0.0 <= p1 <= 1.0 and 0.0 <= p2 <= 1.0:  # NaN fails every comparison
                    q = float(mt.llm_prob)
                    llm = q if 0.0 <= q <= 1.0 else math.nan
                    _mcs_push(self.losses, self.snap, self.ist, p0, p1, p2, llm, up, int(mt.entry_bar), half)
            _mcs_count(self.ist, up)
        _mcs_snapshot(self.snap, self.ist, int(ctx.bar_index))
        rows, last = int(self.ist[I_ROWS]), int(self.ist[I_RECOMPUTED])
        need = int(self.params["min_rows"])
        if min(rows, len(self.losses)) >= need and (last < 0 or rows - last >= int(self.params["every"])):
            self._due()

    def fused_step(self, timeframe: str) -> FusedStep:
        p = self.params
        params = (p["benchmark"] == "half", int(p["min_rows"]), int(p["every"]))
        return FusedStep(
            _mcs_fused,
            ("losses", "snap", "ist", "jst"),
            ("bar_index", "n_mat", "mat", "mprobs"),
            params,
            after=self.fused_after,
        )

    def design(self) -> tuple[np.ndarray, bool]:
        """The loss matrix the next recompute uses (rows oldest first) and whether it includes the LLM."""
        lw = self.window_losses()
        llm_ok = np.isfinite(lw[:, C_LLM])
        if self.params["include_llm"] and int(llm_ok.sum()) >= int(self.params["min_rows"]):
            return lw[llm_ok], True
        return lw[:, :C_LLM], False

    def block_length(self, lw: np.ndarray) -> float:
        """The mean block: ``block`` when set, else the largest Politis–White estimate over the loss differentials
        against the ensemble, at least ``horizon``."""
        return self.block_length_of(lw, self.params)

    @staticmethod
    def block_length_of(lw: np.ndarray, p: dict) -> float:
        """:meth:`block_length` for the parameters ``p``."""
        b = float(p["block"])
        if b > 0:
            return b
        est = [optimal_block_length(lw[:, j] - lw[:, C_ENSEMBLE]) for j in range(lw.shape[1]) if j != C_ENSEMBLE]
        est = [v for v in est if math.isfinite(v)]
        return max([float(p["horizon"]), 1.0, *est])

    def inputs(self) -> tuple[np.ndarray, bool, dict, int]:
        """The loss matrix (:meth:`design`), whether it includes the LLM, the parameters and the seed (``seed`` +
        rows pushed); records the schedule (``I_RECOMPUTED``)."""
        lw, with_llm = self.design()
        rows = int(self.ist[I_ROWS])
        self.ist[I_RECOMPUTED] = rows
        return lw, with_llm, dict(self.params), int(self.params["seed"]) + rows

    @staticmethod
    def compute(inputs: tuple[np.ndarray, bool, dict, int]) -> np.ndarray:
        """[block, rows used, llm used, MCS p-value per column (NaN: not in the design)]: :meth:`split`'s parts
        run one after the other and combined (the scheduled path runs the same parts on the workers)."""
        parts, combine = ModelConfidenceSet.split(inputs)
        return combine([f() for f in parts])

    @staticmethod
    def split(inputs: tuple[np.ndarray, bool, dict, int]) -> tuple[list[Callable[[], Any]], Callable[..., np.ndarray]]:
        """The recompute as :data:`PARTS` independent parts: part s draws its share of the ``reps`` resamples
        (``reps`` · s / PARTS onwards) from its own stream, seeded by (seed, s), and each computes the block length
        itself (the same number: a pure function of the losses), so that no part waits for another. Together they
        are ``reps`` independent stationary-bootstrap resamples; the p-values come from all of them at once
        (tests/modules/test_model_confidence_set.py: the module's p-values equal ``mcs(..., parts=PARTS)`` and the
        MCS of the four streams rebuilt as index matrices; ``mcs_pvalues`` on given resamples equals arch's)."""
        lw, with_llm, p, seed = inputs
        if lw.shape[0] < int(p["min_rows"]):
            return [], partial(_mcs_result, lw, with_llm, p)
        reps = part_reps(int(p["reps"]), PARTS)
        parts = [partial(_mcs_part, lw, p, r, seed, s) for s, r in enumerate(reps) if r]
        return parts, partial(_mcs_result, lw, with_llm, p)

    def apply(self, result: np.ndarray | None, error: str) -> None:
        """Make a recompute's result the one the verdict reads (a failed one fails the verdict closed)."""
        self.pvals[:] = np.nan
        self.fs[F_BLOCK] = np.nan
        self.error = error
        if result is None:
            return
        self.fs[F_BLOCK] = result[0]
        self.ist[I_USED_ROWS], self.ist[I_USED_LLM] = int(result[1]), int(result[2])
        self.pvals[:] = result[3:]

    def verdict(self) -> ModuleResult:
        p = self.params
        size = float(p["size"])
        need = int(p["min_rows"])
        n = min(self.rows, len(self.losses))
        if self.error:
            return self._result(math.nan, False, size, f"the last MCS recompute failed: {self.error}")
        if int(self.ist[I_RECOMPUTED]) >= 0 and int(self.ist[I_USED_ROWS]) == 0 and n >= need:
            return self._result(
                math.nan,
                False,
                size,
                f"first MCS recompute over {n} loss rows not applied yet (it is, lag bars after it fell due)",
            )
        if int(self.ist[I_RECOMPUTED]) < 0 or not math.isfinite(self.pvals[C_ENSEMBLE]):
            return insufficient(self.name, n, need, size, "loss rows")
        pe = float(self.pvals[C_ENSEMBLE])
        ok = pe > size
        pvals, block = self.pvals.tolist(), float(self.fs[F_BLOCK])  # copies: the reason is formatted when read
        used_rows, used_llm = int(self.ist[I_USED_ROWS]), int(self.ist[I_USED_LLM])

        def reason() -> str:
            inside = [c for c, v in zip(COLUMNS, pvals, strict=True) if math.isfinite(v) and v > size]
            level = f"{100 * (1 - size):g}%"
            llm = "" if used_llm else "; llm left out (too few answers)" if p["include_llm"] else ""
            return (
                f"ensemble {'in' if ok else 'not in'} the {level} MCS (p = {pe:.3f} {'>' if ok else '<='} {size}); "
                f"set: {', '.join(inside)}; {p['method']} method, {p['reps']} reps, block {block:.1f}, "
                f"{used_rows} rows{llm}"
            )

        return self._result(pe, ok, size, reason)

    def warm_up(self) -> None:
        losses = np.full((4, N_COLS), np.nan)
        snap = np.full((2, 3), -1, dtype=np.int64)
        ist = np.zeros(7, dtype=np.int64)
        ist[I_LAST_BAR] = -1
        _mcs_snapshot(snap, ist, 1)
        _mcs_push(losses, snap, ist, 0.4, 0.5, 0.6, math.nan, 1.0, 1, False)
        _mcs_count(ist, 1.0)
        rng = np.random.default_rng(0)
        lw = rng.random((6, 3))
        mcs(lw, 4, 2.0, 0, "R")
        mcs(lw, 4, 2.0, 0, "max")
        optimal_block_length(rng.random(12))
