"""EdgeProof — does the signal still beat its benchmark after costs? Hansen's test of Superior Predictive Ability
(SPA; Hansen 2005, *A test for superior predictive ability*, JBES 23(4)) and White's Reality Check (White 2000,
*A reality check for data snooping*, Econometrica 68(5)) with the stationary bootstrap (Politis & Romano 1994,
JASA 89(428)), block length by Politis & White (2004) with the Patton, Politis & White (2009) correction; plus the
Probabilistic and Deflated Sharpe Ratio (Bailey & López de Prado 2012, J. Risk 15(2); 2014, J. Portfolio
Management 40(5)).

What is tested. The module keeps the P&L of the last ``window`` candidate outcomes (``Outcome.pnl``: one unit's
markout net of the full spread, fxgate's cost convention; ``costs=False`` uses the markout before costs). The
benchmark is 0: *not trading*, equivalently a random entry before costs — a direction drawn independently of the
future has E[d · ΔP] = E[d] E[ΔP] = 0 whatever the drift when E[d] = 0, so zero is what a random entry earns
before the spread (and −spread after it). With losses L = −P&L, the loss differential of the strategy against the
benchmark is d_t = L_bench,t − L_strategy,t = pnl_t, and

    H0: E[d_t] <= 0  ("the strategy's mean P&L, net of costs, is no better than the benchmark's"), one-sided.

The gate feeds one strategy (k = 1: the candidates it would trade), so the SPA reduces to a stationary-bootstrap
test of the mean with Hansen's recentering; the functions :func:`spa_pvalues` / :func:`spa_test` take any k models
(a (T, k) matrix of loss differentials) — that is what the reference test compares with ``arch.bootstrap.SPA``,
and what a caller testing several strategies at once would use. Testing the gate's own strategy alone is the right
null for a veto: "the best of k strategies beats the benchmark" would not say that *this* one does.

SPA p-values (Hansen 2005 §2; arch's notation). With d̄_k the mean differential, ω̂²_k its stationary-bootstrap
long-run variance (eq. 9 kernel, or a nested bootstrap with ``nested=True``), and d̄*_{k,b} the b-th bootstrap mean,
Z*_{k,b} = d̄*_{k,b} − g(d̄_k) with g_l(x) = max(x, 0) (lower), g_c(x) = x·1{x ≥ −√(ω̂²_k/T · 2 log log T)}
(consistent), g_u(x) = x (upper). ``statistic="hansen"`` (default) studentizes: T^SPA = max(0, max_k √T d̄_k/ω̂_k),
p = #{b: max(0, max_k √T Z*_{k,b}/ω̂_k) > T^SPA} / B, and p = 1 when T^SPA = 0 (no model beats the benchmark in
sample: the smallest value the statistic can take is no evidence against H0). ``statistic="arch"`` reproduces
``arch.bootstrap.SPA`` (arch 8), which does *not* studentize the statistic (its ``studentize`` flag has no effect
on the p-values; the variance enters only the consistent threshold): p = #{b: max_k Z*_{k,b} > max_k d̄_k} / B.
For k = 1 and d̄ > 0 the two are the same number. White's Reality Check is the non-studentized upper p-value
(``p_value="rc"``).

Size (tests/modules/test_edge_proof.py, 200 mean-zero series of 500 outcomes, α = 0.05, Politis–White block):
rejection 4-5% for i.i.d. normal and AR(0.2), 5.5-7.5% for Student-t(3) and for overlapping 5-bar outcomes
(block ≥ horizon), within the binomial tolerance 8.6%. Strong persistence is where the stationary bootstrap's
long-run variance runs low in finite samples: AR(0.5) outcomes measured 5-9% over seeds.

p-value floor. p counts bootstrap exceedances out of ``reps``: a reported 0 means "below 1/reps", and the
resolution near the threshold is 1/reps. A threshold is accepted only if it spans at least 10 exceedances
(``p_threshold * reps >= 10``: p < 0.001 needs ≥ 10,000 reps, the default); a smaller one is a config error.

Early stop (:func:`spa_sequential`; not with ``nested=True``). The resamples are drawn 16, then 32, 64, … (at most
1,024) at a time, and the test
stops at the resample that brings the chosen p-value's exceedances to ``p_threshold · reps``: the full test would
then fail whatever the rest said, so the verdict is the full test's, always (the stream of resamples does not depend on
``reps``, so the first l are the full run's first l). A strategy without an edge has a large p and is decided in a
few hundred resamples instead of 10,000 — the bootstrap was most of a replay's time. The p-values it then reports
are those of the first l resamples (the chosen one is Besag & Clifford's sequential p-value h / l, stopped at the
h-th exceedance: valid, and >= ``p_threshold``); the reason says "of the first l of reps resamples", and slot
``F_RESAMPLES`` holds l. A
p-value below the threshold always comes from all ``reps``.

Block length: ``block`` if set, else the Politis–White estimate on the window (NaN for a constant window), never
below ``horizon`` (overlapping h-bar outcomes are dependent over h − 1 lags) nor above the window.

Sharpe ratios (raw kurtosis, as in the papers; these assume i.i.d. outcomes — with ``horizon > 1`` they are
optimistic): PSR = P(true per-outcome Sharpe > 0); DSR = PSR against the expected maximum Sharpe of ``n_trials``
unskilled trials with Sharpe variance ``sr_variance`` (default 1/(T − 1)). ``n_trials`` must be the number of
configurations really tried (models, thresholds, modules tuned on the same history); with 1 the DSR is the PSR.

Pass rule (default): SPA consistent p < ``p_threshold`` (0.001) AND DSR ≥ ``dsr_threshold`` (0.95). The SPA
guards the mean against dependence and recentering; the DSR adds the non-normality of the P&L and the selection
among trials, which the SPA of one strategy cannot see. Either can be relaxed (``dsr_threshold = 0``).

Schedule. ``update`` pushes each outcome's P&L into the ring (O(1)) and counts good bars; the bootstrap falls due
every ``every`` good bars when new outcomes arrived (and at once when the window first holds ``min_outcomes``). It
runs off the bar's critical path (``fxgate.modules._schedule``): submitted to a background thread on the due bar,
its result applied at the start of the ``lag``-th good bar's update after it (default 1: the next bar), waiting
for it there if need be; until then the verdict reads the previous result. ``lag = 0`` runs it inside the due
bar's update. Its seed is ``seed`` + the number of outcomes pushed, so a replay, a live run and a restored snapshot
give the same p-values on the same bars.

State (the slots are module-level ints)::

    pnl  ring of the last ``window`` outcome P&L (arrival order; slot pushes % window is the next)
    ist  I_PUSHES       outcomes pushed so far
         I_BARS         good bars seen
         I_LAST_BAR     I_BARS at the last recompute
         I_LAST_PUSHES  I_PUSHES at the last recompute
         I_N            outcomes in the window at the last recompute (T)
         I_STATUS       0: no recompute applied yet; 1: tested; 2: constant P&L (no test); 3: the recompute
                        failed (``error`` holds why)
         I_RECOMPUTES   recomputes run
    fs   F_P_LOWER, F_P_CONSISTENT, F_P_UPPER   SPA p-values (Hansen's lower / consistent / upper)
         F_P_RC         White's Reality Check p-value
         F_BLOCK        mean block length used
         F_MEAN         d̄, mean P&L per outcome
         F_SR           per-outcome Sharpe ratio (ddof 1)
         F_SKEW, F_KURT sample skewness and raw kurtosis of the window
         F_PSR, F_DSR   probabilistic and deflated Sharpe ratios
         F_RESAMPLES    resamples the last SPA drew (``reps``, or fewer when it stopped early)
    error               the last applied recompute's error text ("" when it ran)
    jst, jres, jerr     the recompute in flight (``fxgate.modules._schedule``)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fxgate.engine.core.jit import kernel
from fxgate.engine.core.sharpe import deflated_sharpe_from, probabilistic_sharpe_from, sharpe_moments
from fxgate.modules._base import Context, ModuleResult, insufficient, register
from fxgate.modules._bootstrap import (
    optimal_block_length,
    sb_variance,
    stationary_mean_batches,
    stationary_means,
)
from fxgate.modules._fusion import O_DIRECTION, O_ENTRY, O_EXIT, O_SPREAD, FusedStep
from fxgate.modules._schedule import FLAG_DUE, ScheduledModule, tick_count

__all__ = ["EdgeProof", "SpaResult", "spa_pvalues", "spa_sequential", "spa_test"]

I_PUSHES, I_BARS, I_LAST_BAR, I_LAST_PUSHES, I_N, I_STATUS, I_RECOMPUTES = range(7)
F_P_LOWER, F_P_CONSISTENT, F_P_UPPER, F_P_RC, F_BLOCK, F_MEAN, F_SR, F_SKEW, F_KURT, F_PSR, F_DSR = range(11)
F_RESAMPLES = 11
STATUS_NONE, STATUS_TESTED, STATUS_CONSTANT, STATUS_ERROR = 0, 1, 2, 3
P_VALUES = {"lower": F_P_LOWER, "consistent": F_P_CONSISTENT, "upper": F_P_UPPER, "rc": F_P_RC}
P_NAMES = ("lower", "consistent", "upper", "rc")  # SpaResult's order (and the slots')
STATISTICS = ("hansen", "arch")
#: a p threshold must span at least this many bootstrap exceedances (p_threshold * reps >= MIN_EXCEEDANCES)
MIN_EXCEEDANCES = 10


@dataclass(frozen=True, slots=True)
class SpaResult:
    """SPA p-values (Hansen 2005: lower, consistent, upper), White's Reality Check p-value, and the mean block
    length of the stationary bootstrap that produced them."""

    lower: float
    consistent: float
    upper: float
    reality_check: float
    block: float


class _Spa:
    """The observed side of the SPA / Reality Check on ``x`` (T, k) with long-run variances ``var`` (k,): the
    recentering of each p-value and its observed statistic (formulas: the module docstring), and
    :meth:`counts`, the exceedances of any batch of bootstrap means."""

    def __init__(self, x: np.ndarray, var: np.ndarray, statistic: str) -> None:
        if statistic not in STATISTICS:
            raise ValueError(f"SPA statistic {statistic!r} is not known; use one of {STATISTICS}")
        t = x.shape[0]
        self.mean = mean = x.mean(axis=0)
        with np.errstate(invalid="ignore"):
            valid = mean >= -np.sqrt(var / t * 2.0 * np.log(np.log(t)))
        self.gs = (np.where(mean < 0, 0.0, mean), np.where(valid, mean, 0.0), mean)  # lower, consistent, upper
        self.arch = statistic == "arch"
        #: the three SPA p-values are known without resampling: NaN (a variance that is not positive: hansen
        #: cannot studentize) or 1 (T^SPA = 0, the statistic's smallest value: no evidence against H0)
        self.fixed: float | None = None
        self.s = np.ones_like(mean)
        self.obs = float(mean.max())
        if not self.arch:
            if not np.all(var > 0):
                self.fixed = math.nan
            else:
                self.s = math.sqrt(t) / np.sqrt(var)
                self.obs = float((mean * self.s).max())
                if self.obs <= 0.0:
                    # (Counting T* > 0 instead would reject whenever every model is far worse than the benchmark,
                    # since the consistent/lower recentering then leaves all T* = 0 but a few.)
                    self.fixed = 1.0

    def exceeds(self, bm: np.ndarray, j: int) -> np.ndarray:
        """Which resamples of ``bm`` (b, k) exceed the observed statistic of p-value ``j`` (0 lower, 1 consistent,
        2 upper, 3 Reality Check); all False for a fixed SPA p-value."""
        if j == 3:
            return (bm - self.mean).max(axis=1) > self.mean.max()
        if self.fixed is not None:
            return np.zeros(bm.shape[0], dtype=bool)
        return ((bm - self.gs[j]) * self.s).max(axis=1) > self.obs

    def counts(self, bm: np.ndarray) -> np.ndarray:
        """Exceedances (lower, consistent, upper, Reality Check) among the bootstrap means ``bm`` (b, k)."""
        return np.array([int(np.count_nonzero(self.exceeds(bm, j))) for j in range(4)], dtype=np.int64)

    def pvalues(self, c: np.ndarray, reps: int, block: float) -> SpaResult:
        rc = float(c[3]) / reps
        if self.fixed is not None:
            return SpaResult(self.fixed, self.fixed, self.fixed, rc, float(block))
        return SpaResult(float(c[0]) / reps, float(c[1]) / reps, float(c[2]) / reps, rc, float(block))


def _columns(d: np.ndarray) -> np.ndarray:
    x = np.asarray(d, dtype=np.float64)
    return x[:, None] if x.ndim == 1 else x


def spa_pvalues(
    d: np.ndarray, boot_means: np.ndarray, block: float, *, nested: bool = False, statistic: str = "hansen"
) -> SpaResult:
    """SPA and Reality Check p-values of the loss differentials ``d`` (T,) or (T, k) — benchmark loss minus model
    loss, positive when the model is better — from the bootstrap means ``boot_means`` (reps, k) of ``d``'s columns
    (any resampling scheme: :func:`fxgate.modules._bootstrap.stationary_means`, or ``bootstrap_means`` over a
    reference library's own indices). ``block`` is the mean block length behind them (it sets the long-run variance
    kernel, p = 1/block); ``nested=True`` takes the variance from the bootstrap means instead (arch's nested
    studentization: T · Var*(d̄*)). Formulas: the module docstring. NaN p-values when a variance is not positive
    (``statistic="hansen"`` cannot studentize a constant column)."""
    x = _columns(d)
    bm = _columns(boot_means)
    t = x.shape[0]
    var = t * (bm - x.mean(axis=0)).var(axis=0) if nested else sb_variance(x, block)
    spa = _Spa(x, var, statistic)
    return spa.pvalues(spa.counts(bm), bm.shape[0], block)


def spa_test(
    d: np.ndarray, reps: int, block: float, seed: int, *, nested: bool = False, statistic: str = "hansen"
) -> SpaResult:
    """:func:`spa_pvalues` with the numba stationary bootstrap (``reps`` resamples, mean block ``block``, stream
    seeded by ``seed``); ``d`` must be finite."""
    return spa_pvalues(d, stationary_means(d, reps, block, seed), block, nested=nested, statistic=statistic)


def spa_sequential(
    d: np.ndarray,
    reps: int,
    block: float,
    seed: int,
    *,
    threshold: float,
    p_value: str = "consistent",
    statistic: str = "hansen",
    batch: int = 16,
    most: int = 1024,
) -> tuple[SpaResult, int]:
    """:func:`spa_test` (not nested) that stops once the test "``p_value`` < ``threshold``" is decided: returns the
    p-values over the first ``l`` resamples and ``l``. With h the smallest count for which h / reps >= threshold
    (the full run's p would then be >= ``threshold`` whatever the remaining resamples say), it stops at the
    resample that brings the chosen p-value's exceedances to h, drawing ``batch`` resamples first, then twice as
    many each time up to ``most``; or after one batch when that p-value needs no resampling (1 or NaN; the batch
    is for the Reality Check). So its outcome
    is always that of ``spa_test(d, reps, ...)``, whose resamples are the same (the stream does not depend on
    ``reps``); with ``l = reps`` its p-values are those of the full run, bit for bit, and when it stops early the
    chosen one is h / l, Besag & Clifford's (1991, *Sequential Monte Carlo p-values*, Biometrika 78(2)) sequential
    p-value (stopped at the h-th exceedance), >= ``threshold`` by construction; the others are the Monte Carlo
    p-values of those l resamples. Where the strategy has no edge, p is large and a few hundred resamples decide it
    (tests/modules/test_edge_proof.py)."""
    x = _columns(d)
    spa = _Spa(x, sb_variance(x, block), statistic)
    which = P_NAMES.index(p_value)
    reps, thr = int(reps), float(threshold)
    h = max(1, math.ceil(thr * reps))  # the verdict compares h / reps with the threshold: match its rounding
    while h > 1 and (h - 1) / reps >= thr:
        h -= 1
    while h / reps < thr:
        h += 1
    c = np.zeros(4, dtype=np.int64)
    done = 0
    for lo, bm in stationary_mean_batches(x, reps, block, seed, batch, most):
        if which < 3 and spa.fixed is not None:
            c += spa.counts(bm)
            done = lo + bm.shape[0]
            break
        hit = np.flatnonzero(spa.exceeds(bm, which))
        if c[which] + hit.size >= h:  # the h-th exceedance is in this batch: stop on it
            bm = bm[: hit[h - c[which] - 1] + 1]
        c += spa.counts(bm)
        done = lo + bm.shape[0]
        if c[which] >= h:
            break
    return spa.pvalues(c, done, block), done


def _edge_push_py(pnl, ist, x):  # type: ignore[no-untyped-def]
    """Push one outcome's P&L ``x`` into the ring ``pnl`` (the oldest is overwritten once it is full)."""
    c = ist[I_PUSHES]
    pnl[c % pnl.shape[0]] = x
    ist[I_PUSHES] = c + 1


def _edge_bar_py(ist, every, min_outcomes, window):  # type: ignore[no-untyped-def]
    """Count one good bar; True when a recompute is due: the window holds ``min_outcomes`` and either no test has
    run yet, or ``every`` bars have passed since the last one and new outcomes arrived."""
    ist[I_BARS] += 1
    n = min(ist[I_PUSHES], window)
    if n < min_outcomes or ist[I_PUSHES] == ist[I_LAST_PUSHES]:
        return False
    return ist[I_RECOMPUTES] == 0 or ist[I_BARS] - ist[I_LAST_BAR] >= every


_edge_push = kernel(_edge_push_py, fastmath=False)
_edge_bar = kernel(_edge_bar_py, fastmath=False)


def _edge_fused_py(pnl, ist, jst, close, n_out, out, costs, every, min_outcomes, window):  # type: ignore[no-untyped-def]
    """``EdgeProof.update`` in the fused step (``fxgate.modules._fusion``): skip a bad bar whole; count the pending
    recompute down; push each due outcome's P&L (``Outcome.pnl`` = D·(exit − entry) − spread, or the markout
    without ``costs``) when finite; count the good bar. Returns the schedule's flags (``_schedule.FLAG_APPLY``:
    apply the pending result, ``FLAG_DUE``: a recompute is due): ``ScheduledModule.fused_after`` does both."""
    if not (math.isfinite(close) and close > 0):
        return 0
    flag = tick_count(jst)
    for i in range(n_out):
        x = out[i, O_DIRECTION] * (out[i, O_EXIT] - out[i, O_ENTRY])  # Outcome.markout
        if costs:
            x = x - out[i, O_SPREAD]  # Outcome.pnl
        if math.isfinite(x):
            _edge_push(pnl, ist, x)
    if _edge_bar(ist, every, min_outcomes, window):
        flag |= FLAG_DUE
    return flag


_edge_fused = kernel(_edge_fused_py, fastmath=False)


@register("edge_proof")
class EdgeProof(ScheduledModule):
    title = "EdgeProof"
    formula = "SPA/RC: p = P*(max_k T*_k > T), d_t = pnl_t - 0; DSR = PSR(SR vs E[max SR of N trials])"
    citation = "Hansen (2005); White (2000); Politis & White (2004); Bailey & Lopez de Prado (2014)"
    rule = (
        "SPA consistent p < `p_threshold` (0.001, 10,000 reps) that mean net P&L > 0, and DSR >= `dsr_threshold`"
        " (0.95), over the last `window` outcomes"
    )
    gate_settings = ("horizon",)
    result_size = 14  # status, T, then the 12 fs slots
    defaults = {
        "window": 500,
        "min_outcomes": 100,
        "reps": 10_000,
        "every": 50,
        "lag": 1,
        "block": None,
        "p_threshold": 0.001,
        "p_value": "consistent",
        "statistic": "hansen",
        "nested": False,
        "dsr_threshold": 0.95,
        "n_trials": 1,
        "sr_variance": None,
        "costs": True,
        "seed": 0,
        "horizon": 1,
    }
    state_keys = ("pnl", "ist", "fs", "error", "jst", "jres", "jerr")
    state_version = 2  # 2: fs gained F_RESAMPLES (12 slots, results of 14)

    def reset(self) -> None:
        p = self.params
        self._check(p)
        self.pnl = np.zeros(int(p["window"]))
        self.ist = np.zeros(7, dtype=np.int64)
        self.fs = np.full(12, math.nan)
        self.error = ""  # the last recompute's error ("" when it ran)
        self._reset_job()

    @staticmethod
    def _check(p: dict) -> None:
        def bad(k: str, want: str) -> ValueError:
            return ValueError(f"The {k!r} parameter of edge_proof must be {want}. Got {p[k]!r} instead.")

        for k in ("window", "min_outcomes", "reps", "every", "n_trials", "horizon"):
            if not isinstance(p[k], int | np.integer) or isinstance(p[k], bool) or p[k] < 1:
                raise bad(k, "an integer >= 1")
        if p["min_outcomes"] < 10 or p["min_outcomes"] > p["window"]:
            raise bad("min_outcomes", f"between 10 and window ({p['window']})")
        if p["p_value"] not in P_VALUES:
            raise bad("p_value", f"one of {tuple(P_VALUES)}")
        if p["statistic"] not in STATISTICS:
            raise bad("statistic", f"one of {STATISTICS}")
        if p["block"] is not None and not (isinstance(p["block"], int | float) and p["block"] >= 1):
            raise bad("block", "a mean block length >= 1, or unset (Politis-White)")
        if p["sr_variance"] is not None and not (isinstance(p["sr_variance"], int | float) and p["sr_variance"] > 0):
            raise bad("sr_variance", "a positive variance of the trials' Sharpe ratios, or unset (1/(T-1))")
        if not 0.0 <= float(p["dsr_threshold"]) <= 1.0:
            raise bad("dsr_threshold", "a probability in [0, 1]")
        thr = float(p["p_threshold"])
        if not 0.0 < thr < 1.0:
            raise bad("p_threshold", "in (0, 1)")
        if thr * p["reps"] < MIN_EXCEEDANCES - 1e-9:
            need = math.ceil(MIN_EXCEEDANCES / thr - 1e-9)
            raise ValueError(
                f"edge_proof p_threshold = {thr} is below what reps = {p['reps']} bootstrap resamples can resolve "
                f"(p is a count of exceedances out of reps: its floor is 1/reps = {1 / p['reps']:.2g}, and a threshold "
                f"needs at least {MIN_EXCEEDANCES} exceedances). Fix: set reps >= {need} in [l4.params.edge_proof], "
                f"or p_threshold >= {MIN_EXCEEDANCES / p['reps']:.2g}"
            )

    def update(self, ctx: Context) -> None:
        c = ctx.bar.close
        if not (math.isfinite(c) and c > 0):
            return  # a bad bar is skipped whole (an outcome ending on it has no valid exit price)
        self._tick()  # the pending recompute's countdown is in good bars, like the schedule
        p = self.params
        costs = p["costs"]
        for o in ctx.outcomes:
            x = o.pnl if costs else o.markout
            if math.isfinite(x):
                _edge_push(self.pnl, self.ist, x)
        if _edge_bar(self.ist, p["every"], p["min_outcomes"], p["window"]):
            self._due()

    def fused_step(self, timeframe: str) -> FusedStep:
        p = self.params
        params = (bool(p["costs"]), int(p["every"]), int(p["min_outcomes"]), int(p["window"]))
        return FusedStep(_edge_fused, ("pnl", "ist", "jst"), ("close", "n_out", "out"), params, after=self.fused_after)

    def values(self) -> np.ndarray:
        """The window's P&L in arrival order (oldest first)."""
        c, w = int(self.ist[I_PUSHES]), len(self.pnl)
        if c <= w:
            return self.pnl[:c].copy()
        j = c % w
        return np.concatenate([self.pnl[j:], self.pnl[:j]])

    def inputs(self) -> tuple[np.ndarray, dict, int]:
        """The window (oldest first), the parameters and the seed of the SPA / Reality Check bootstrap and the
        Sharpe ratios; records the schedule (``I_LAST_BAR``, ``I_LAST_PUSHES``, ``I_RECOMPUTES``)."""
        ist = self.ist
        ist[I_LAST_BAR], ist[I_LAST_PUSHES] = ist[I_BARS], ist[I_PUSHES]
        ist[I_RECOMPUTES] += 1
        return self.values(), dict(self.params), int(self.params["seed"]) + int(ist[I_PUSHES])

    @staticmethod
    def compute(inputs: tuple[np.ndarray, dict, int]) -> np.ndarray:
        """[status, T, fs slots...] of the window: SPA / RC p-values, block, mean, Sharpe moments, PSR, DSR."""
        x, p, seed = inputs
        n = len(x)
        out = np.full(EdgeProof.result_size, math.nan)
        out[1] = n
        fs = out[2:]
        if n < 3 or not np.std(x) > 0:
            out[0] = STATUS_CONSTANT
            return out
        if p["block"] is not None:
            block = float(p["block"])
        else:
            block = optimal_block_length(x)
            if not math.isfinite(block):
                block = math.sqrt(n)
        block = min(max(block, float(p["horizon"]), 1.0), float(n))
        reps = int(p["reps"])
        if p["nested"]:  # the variance comes from all the resamples: no early stop
            res, used = spa_test(x, reps, block, seed, nested=True, statistic=p["statistic"]), reps
        else:
            res, used = spa_sequential(
                x, reps, block, seed, threshold=float(p["p_threshold"]), p_value=p["p_value"], statistic=p["statistic"]
            )
        fs[F_RESAMPLES] = used
        fs[F_P_LOWER], fs[F_P_CONSISTENT], fs[F_P_UPPER], fs[F_P_RC] = (
            res.lower,
            res.consistent,
            res.upper,
            res.reality_check,
        )
        fs[F_BLOCK], fs[F_MEAN] = block, float(x.mean())
        mom = sharpe_moments(x)
        if mom is not None:
            sr, t, skew, kurt = mom
            fs[F_SR], fs[F_SKEW], fs[F_KURT] = sr, skew, kurt
            fs[F_PSR] = probabilistic_sharpe_from(sr, t, skew, kurt, 0.0)
            fs[F_DSR] = deflated_sharpe_from(sr, t, skew, kurt, int(p["n_trials"]), p["sr_variance"])
        out[0] = STATUS_TESTED
        return out

    def apply(self, result: np.ndarray | None, error: str) -> None:
        """Make a recompute's result the one the verdict reads (a failed one: status error, the verdict fails
        closed with ``error``)."""
        self.fs[:] = math.nan
        if result is None:
            self.ist[I_STATUS], self.error = STATUS_ERROR, error
            return
        self.ist[I_STATUS], self.ist[I_N], self.error = int(result[0]), int(result[1]), ""
        self.fs[:] = result[2:]

    @property
    def p_value(self) -> float:
        return float(self.fs[P_VALUES[self.params["p_value"]]])

    def verdict(self) -> ModuleResult:
        p, ist, fs = self.params, self.ist, self.fs
        thr = float(p["p_threshold"])
        n = min(int(ist[I_PUSHES]), len(self.pnl))
        status = int(ist[I_STATUS])
        if n < p["min_outcomes"]:
            return insufficient(self.name, n, p["min_outcomes"], thr, "outcomes")
        if status == STATUS_NONE:
            return self._result(
                math.nan,
                False,
                thr,
                f"first SPA recompute over {n} outcomes not applied yet (it is, lag bars after it fell due)",
            )
        if status == STATUS_ERROR:
            return self._result(math.nan, False, thr, f"the last SPA recompute failed: {self.error}")
        n_test = int(ist[I_N])
        if status == STATUS_CONSTANT:
            return self._result(math.nan, False, thr, lambda: f"constant P&L over the last {n_test} outcomes: no test")
        pv, dsr = self.p_value, float(fs[F_DSR])
        if not (math.isfinite(pv) and math.isfinite(dsr)):
            return self._result(math.nan, False, thr, lambda: f"SPA p-value or DSR undefined over {n_test} outcomes")
        reps, used = int(p["reps"]), int(fs[F_RESAMPLES])
        ok_p, ok_d = pv < thr, dsr >= float(p["dsr_threshold"])
        lower, upper, rc, psr, mean, sr, block = fs[
            [F_P_LOWER, F_P_UPPER, F_P_RC, F_PSR, F_MEAN, F_SR, F_BLOCK]
        ].tolist()

        def reason() -> str:
            shown = f"< {1 / reps:.1g} (none of {reps} resamples)" if pv == 0 else f"= {pv:.4g}"
            # a test decided before its last resample stops there (spa_sequential): its p-values are those of fewer
            if used < reps:
                shown += f" (of the first {used} of {reps} resamples: the test stopped once p >= {thr:g} was certain)"
            return (
                f"SPA {p['p_value']} p {shown} {'<' if ok_p else '>='} {thr:g} "
                f"(lower {lower:.4g}, upper {upper:.4g}, RC {rc:.4g}); "
                f"DSR {dsr:.3f} {'>=' if ok_d else '<'} {float(p['dsr_threshold']):g} (PSR {psr:.3f}, "
                f"N={p['n_trials']}); mean {'net ' if p['costs'] else ''}P&L {mean:.3g}/outcome, "
                f"SR {sr:.3f}, {n_test} outcomes, block {block:.1f}"
            )

        return self._result(pv, ok_p and ok_d, thr, reason)

    def warm_up(self) -> None:
        pnl, ist = np.zeros(4), np.zeros(7, dtype=np.int64)
        _edge_push(pnl, ist, 1.0)
        _edge_bar(ist, 1, 1, 4)
        x = np.sin(np.arange(40.0)) + 0.1
        spa_test(x, 10, optimal_block_length(x), 0)
