"""BOCPD — Bayesian online changepoint detection (Adams & MacKay 2007, arXiv:0710.3742, Algorithm 1).

Observations are one-bar log returns divided by a scale fixed after ``calib_bars`` returns (their sample standard
deviation). Each run length r carries a conjugate Normal-Gamma posterior (μ_r, κ_r, α_r, β_r) whose predictive is
Student-t with 2α_r degrees of freedom, location μ_r and scale² β_r(κ_r + 1)/(α_r κ_r) (Murphy 2007, *Conjugate
Bayesian analysis of the Gaussian distribution*, eq. 110). With constant hazard H = 1/``hazard_lambda``:

    P(r_t = r + 1, x_1:t) = P(r_{t-1} = r, x_1:t-1) · π_r(x_t) · (1 − H)
    P(r_t = 0,     x_1:t) = Σ_r P(r_{t-1} = r, x_1:t-1) · π_r(x_t) · H

At most R = ``max_run`` run lengths are tracked (constant cost per bar): when all slots are taken, the *least
probable* hypothesis is dropped and the rest renormalized (Adams & MacKay §2.3 suggest pruning low-probability run
lengths; dropping the longest instead loses the long stable runs that dominate the posterior on quiet markets).
The dropped mass is accumulated in ``truncated_mass``; tests compare with the exact untruncated recursion.

Pass rule: no changepoint is likely in the last ``k`` bars, i.e. P(r_t < k) ≤ ``threshold``. (P(r_t = 0) alone is
useless: with a constant hazard it equals H on every bar.)

Kernel state (``_bocpd_step``; R slots per run-length array, in no particular order; slots are module-level ints)::

    rl            r, the run length of each hypothesis
    logp          log P(r_t = r | x_1:t), normalized
    mu, kappa,    μ_r, κ_r, α_r, β_r: the Normal-Gamma posterior of each run length
    alpha, beta
    dg            lgamma(α_r + 1/2) − lgamma(α_r), carried by a recurrence
    ist  I_ACTIVE     hypotheses in use (≤ R)
         I_SEEN       good returns seen (calibration included)
    fs   F_TRUNCATED  Σ of the normalized mass dropped by the truncation
         F_PREV_CLOSE the last good close
         F_SCALE      the calibration standard deviation that standardizes returns
    calib             the first ``calib_bars`` returns (the scale's sample)
"""

from __future__ import annotations

import math

import numpy as np

from fxgate.engine.core.jit import kernel
from fxgate.modules._base import CertaintyModule, Context, ModuleResult, insufficient, register
from fxgate.modules._common import log_return_step, next_log_return
from fxgate.modules._fusion import FusedStep

I_ACTIVE, I_SEEN = 0, 1
F_TRUNCATED, F_PREV_CLOSE, F_SCALE = 0, 1, 2


def _bocpd_step_py(rl, logp, mu, kappa, alpha, beta, dg, ist, fs, x, log_h, log_1h, mu0, kappa0, alpha0, beta0):  # type: ignore[no-untyped-def]
    """One Adams-MacKay step in log space on the standardized return ``x``, over the ``ist[I_ACTIVE]`` active run
    lengths (capacity R = len(logp)); ``log_h``, ``log_1h`` are log H and log(1 − H), the rest the prior.

    When all R slots are taken, the least probable entry is dropped; ``fs[F_TRUNCATED]`` accumulates the dropped
    (normalized) mass.
    """
    n = ist[I_ACTIVE]
    cap = logp.shape[0]
    m = -np.inf
    for i in range(n):
        nu = 2.0 * alpha[i]
        s2 = beta[i] * (kappa[i] + 1.0) / (alpha[i] * kappa[i])
        z = (x - mu[i]) ** 2 / (nu * s2)
        # dg[i] = lgamma(alpha + 1/2) - lgamma(alpha), carried by the recurrence below instead of two lgammas
        lp = dg[i] - 0.5 * math.log(nu * math.pi * s2) - (nu + 1.0) / 2.0 * math.log1p(z)
        logp[i] += lp  # joint with x_t, before the hazard split
        if logp[i] > m:
            m = logp[i]
    acc = 0.0
    for i in range(n):
        acc += math.exp(logp[i] - m)
    log_cp = m + math.log(acc) + log_h
    for i in range(n):
        logp[i] += log_1h
        k = kappa[i]
        beta[i] = beta[i] + k * (x - mu[i]) ** 2 / (2.0 * (k + 1.0))
        mu[i] = (k * mu[i] + x) / (k + 1.0)
        kappa[i] = k + 1.0
        dg[i] = math.log(alpha[i]) - dg[i]  # lgamma(a+1) - lgamma(a+1/2) = log(a) - (lgamma(a+1/2) - lgamma(a))
        alpha[i] = alpha[i] + 0.5
        rl[i] += 1
    if n < cap:
        j = n
        n += 1
        drop = -np.inf
    else:
        j = 0
        for i in range(1, n):
            if logp[i] < logp[j]:
                j = i
        if log_cp < logp[j]:
            j = -1
        drop = log_cp if j < 0 else logp[j]
    if j >= 0:
        rl[j] = 0
        logp[j] = log_cp
        mu[j] = mu0
        kappa[j] = kappa0
        alpha[j] = alpha0
        beta[j] = beta0
        dg[j] = math.lgamma(alpha0 + 0.5) - math.lgamma(alpha0)
    ist[I_ACTIVE] = n
    m = -np.inf
    for i in range(n):
        if logp[i] > m:
            m = logp[i]
    acc = 0.0
    for i in range(n):
        acc += math.exp(logp[i] - m)
    if drop > -np.inf:
        acc += math.exp(drop - m)
    lz = m + math.log(acc)
    for i in range(n):
        logp[i] -= lz
    if drop > -np.inf:
        fs[F_TRUNCATED] += math.exp(drop - lz)


_bocpd_step = kernel(_bocpd_step_py, fastmath=False)


def _bocpd_fused_py(
    rl, logp, mu, kappa, alpha, beta, dg, ist, fs, calib, close, log_h, log_1h, mu0, kappa0, alpha0, beta0
):  # type: ignore[no-untyped-def]
    """``Bocpd.update`` in the fused step (``fxgate.modules._fusion``). Returns 1 on the bar that completes the
    calibration sample (the scale, numpy's ``std``, is set in Python: ``Bocpd._calibrated``), else 0."""
    r = log_return_step(fs, F_PREV_CLOSE, close)
    if math.isnan(r):
        return 0
    seen = ist[I_SEEN]
    ist[I_SEEN] = seen + 1
    nc = calib.shape[0]
    if seen < nc:
        calib[seen] = r
        return 1 if seen + 1 == nc else 0
    _bocpd_step(
        rl, logp, mu, kappa, alpha, beta, dg, ist, fs, r / fs[F_SCALE], log_h, log_1h, mu0, kappa0, alpha0, beta0
    )
    return 0


_bocpd_fused = kernel(_bocpd_fused_py, fastmath=False)


def _bocpd_summary_py(rl, logp, n, k):  # type: ignore[no-untyped-def]
    """What the verdict reads from the posterior: P(r_t < k), the sum of exp(logp) over the ``n`` active run lengths
    below k, and the most probable run length (the first slot of largest log-probability). One compiled pass
    instead of seven numpy calls on a 100-slot array (tested against the exact recursion: test_references.py)."""
    short = 0.0
    best = 0
    for i in range(n):
        if rl[i] < k:
            short += math.exp(logp[i])
        if logp[i] > logp[best]:
            best = i
    return short, rl[best]


_bocpd_summary = kernel(_bocpd_summary_py, fastmath=False)


@register("bocpd")
class Bocpd(CertaintyModule):
    title = "BOCPD"
    formula = "P(r_t | x_1:t), hazard 1/lambda"
    citation = "Adams & MacKay (2007), arXiv:0710.3742"
    rule = "P(run length < `k`) <= `threshold`: no changepoint is likely in the last k bars"
    defaults = {
        "hazard_lambda": 250.0,
        "max_run": 100,
        "k": 5,
        "threshold": 0.5,
        "calib_bars": 100,
        "mu0": 0.0,
        "kappa0": 1.0,
        "alpha0": 1.0,
        "beta0": 1.0,
    }
    state_keys = ("rl", "logp", "mu", "kappa", "alpha", "beta", "dg", "ist", "fs", "calib")

    def reset(self) -> None:
        p = self.params
        if int(p["calib_bars"]) < 2:  # the scale is a sample standard deviation: it needs two returns
            raise ValueError(f"bocpd calib_bars = {p['calib_bars']}: must be >= 2 (the scale is a sample sd)")
        big_r = int(p["max_run"])
        self.rl = np.zeros(big_r, dtype=np.int64)
        self.logp = np.full(big_r, -np.inf)
        self.logp[0] = 0.0
        self.mu = np.full(big_r, float(p["mu0"]))
        self.kappa = np.full(big_r, float(p["kappa0"]))
        self.alpha = np.full(big_r, float(p["alpha0"]))
        self.beta = np.full(big_r, float(p["beta0"]))
        self.dg = np.full(big_r, math.lgamma(float(p["alpha0"]) + 0.5) - math.lgamma(float(p["alpha0"])))
        self.ist = np.zeros(2, dtype=np.int64)
        self.ist[I_ACTIVE] = 1  # r = 0 with all the mass
        self.fs = np.zeros(3)
        self.fs[F_PREV_CLOSE] = np.nan
        self.calib = np.zeros(int(p["calib_bars"]))

    @property
    def truncated_mass(self) -> float:
        return float(self.fs[F_TRUNCATED])

    def observe(self, x: float) -> None:
        """Feed one standardized observation (the streaming step)."""
        p = self.params
        h = 1.0 / float(p["hazard_lambda"])
        _bocpd_step(
            self.rl,
            self.logp,
            self.mu,
            self.kappa,
            self.alpha,
            self.beta,
            self.dg,
            self.ist,
            self.fs,
            float(x),
            math.log(h),
            math.log1p(-h),
            float(p["mu0"]),
            float(p["kappa0"]),
            float(p["alpha0"]),
            float(p["beta0"]),
        )

    def update(self, ctx: Context) -> None:
        r = next_log_return(self.fs, F_PREV_CLOSE, ctx.bar.close)
        if math.isnan(r):
            return
        seen = int(self.ist[I_SEEN])
        self.ist[I_SEEN] = seen + 1
        nc = len(self.calib)
        if seen < nc:
            self.calib[seen] = r
            if seen + 1 == nc:
                self._calibrated()
            return
        self.observe(r / self.fs[F_SCALE])

    def _calibrated(self, flag: int = 1) -> None:
        """The calibration sample is complete: fix the scale that standardizes returns."""
        sd = float(np.std(self.calib, ddof=1))
        self.fs[F_SCALE] = sd if sd > 0 else 1.0

    def fused_step(self, timeframe: str) -> FusedStep:
        p = self.params
        h = 1.0 / float(p["hazard_lambda"])
        prior = (float(p["mu0"]), float(p["kappa0"]), float(p["alpha0"]), float(p["beta0"]))
        params = (math.log(h), math.log1p(-h), *prior)
        return FusedStep(_bocpd_fused, self.state_keys, ("close",), params, after=self._calibrated)

    def run_length_probs(self) -> np.ndarray:
        """P(r_t = r) for r = 0 .. max tracked run length (dropped hypotheses count as 0)."""
        n = int(self.ist[I_ACTIVE])
        out = np.zeros(int(self.rl[:n].max()) + 1)
        np.add.at(out, self.rl[:n], np.exp(self.logp[:n]))
        return out

    def verdict(self) -> ModuleResult:
        p = self.params
        seen = int(self.ist[I_SEEN])
        need = int(p["calib_bars"]) + int(p["k"])
        if seen < need:
            return insufficient(self.name, seen, need, p["threshold"], "returns")
        short, mode = _bocpd_summary(self.rl, self.logp, int(self.ist[I_ACTIVE]), int(p["k"]))
        ok = short <= p["threshold"]
        return self._result(
            short,
            ok,
            p["threshold"],
            lambda: (
                f"P(changepoint in last {p['k']} bars) = {short:.3f} {'<=' if ok else '>'} "
                f"{p['threshold']}; most likely run length {mode} bars"
            ),
        )

    def warm_up(self) -> None:
        tmp = Bocpd(max_run=2)
        for v in (0.1, -0.2, 0.3):
            tmp.observe(v)
        _bocpd_summary(tmp.rl, tmp.logp, int(tmp.ist[I_ACTIVE]), 1)
