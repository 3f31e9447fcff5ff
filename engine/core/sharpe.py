"""The Sharpe-ratio significance formulas, pure math (foundation layer: the replay's metrics and the EdgeProof
module both use them).

* :func:`probabilistic_sharpe_from` — PSR, Bailey & López de Prado (2012), *The Sharpe ratio efficient frontier*,
  J. Risk 15(2), eq. 11;
* :func:`deflated_sharpe_from` — DSR, Bailey & López de Prado (2014), *The deflated Sharpe ratio: correcting for
  selection bias, backtest overfitting and non-normality*, J. Portfolio Management 40(5), eq. 9-10 (worked example
  in section 6 / appendix: SR 2.5 annualized, T = 1250, skew −3, kurtosis 10, N = 100, V = 0.5 → DSR ≈ 0.9004);
* :func:`sharpe_moments` — the per-period Sharpe ratio (ddof = 1), sample skewness and *raw* (non-excess) kurtosis
  (biased moments, as in the papers) of a return series.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

__all__ = ["probabilistic_sharpe_from", "deflated_sharpe_from", "expected_max_sharpe", "sharpe_moments"]

EULER_GAMMA = 0.5772156649015329


def probabilistic_sharpe_from(sr: float, t: int, skew: float, kurt: float, sr_benchmark: float = 0.0) -> float:
    """Probabilistic Sharpe ratio (Bailey & López de Prado 2012, eq. 11): the probability that the true per-period
    Sharpe exceeds ``sr_benchmark``, given the estimate ``sr`` from ``t`` i.i.d. returns with skewness ``skew`` and
    (non-excess) kurtosis ``kurt``: ``Phi((sr - sr*) sqrt(t - 1) / sqrt(1 - skew sr + (kurt - 1) / 4 sr^2))``."""
    denom = math.sqrt(max(1e-12, 1 - skew * sr + (kurt - 1) / 4 * sr * sr))
    return float(special.ndtr((sr - sr_benchmark) * math.sqrt(t - 1) / denom))


def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """E[max of ``n_trials`` unskilled Sharpe estimates] whose variance is ``sr_variance`` (Bailey & López de Prado
    2014, eq. 9, the false-strategy theorem): sqrt(V) ((1 − γ) Φ⁻¹(1 − 1/N) + γ Φ⁻¹(1 − 1/(N e))); 0 for N = 1."""
    if n_trials <= 1:
        return 0.0
    z1 = special.ndtri(1 - 1 / n_trials)
    z2 = special.ndtri(1 - 1 / (n_trials * math.e))
    return float(math.sqrt(sr_variance) * ((1 - EULER_GAMMA) * z1 + EULER_GAMMA * z2))


def deflated_sharpe_from(
    sr: float, t: int, skew: float, kurt: float, n_trials: int = 1, sr_variance: float | None = None
) -> float:
    """Deflated Sharpe ratio (Bailey & López de Prado 2014, eq. 9-10): the probabilistic Sharpe ratio against the
    expected best Sharpe of ``n_trials`` unskilled trials whose Sharpe estimates have variance ``sr_variance``
    (default 1/(t − 1), the variance of one Sharpe estimate under the null). It deflates only when ``n_trials`` is
    the real number of configurations tried; with one trial it *is* :func:`probabilistic_sharpe_from` against 0."""
    sr0 = 0.0
    if n_trials > 1:
        v = sr_variance if sr_variance is not None else 1.0 / (t - 1)
        sr0 = expected_max_sharpe(n_trials, v)
    return probabilistic_sharpe_from(sr, t, skew, kurt, sr0)


def sharpe_moments(returns: np.ndarray) -> tuple[float, int, float, float] | None:
    """(per-period Sharpe with ddof = 1, T, sample skewness, raw kurtosis) of ``returns``; None for fewer than 3
    returns or zero variance (identical values: numpy's std of them can be a rounding residue, not 0)."""
    r = np.asarray(returns, dtype=float)
    if len(r) < 3 or np.ptp(r) == 0 or np.std(r, ddof=1) == 0:
        return None
    # the biased central moments, as scipy.stats.skew / kurtosis(fisher=False) compute them, without their wrappers'
    # per-call cost (0.7 ms each: a third of an EdgeProof recompute); NaN where scipy's would be, when the variance
    # is a rounding residue of the mean (its test, scipy.stats._stats_py.skew)
    mu = float(np.mean(r))
    dev = r - mu
    sq = dev * dev
    m2, m3, m4 = float(np.mean(sq)), float(np.mean(sq * dev)), float(np.mean(sq * sq))
    if m2 <= (np.finfo(float).resolution * mu) ** 2:
        return float(mu / np.std(r, ddof=1)), len(r), math.nan, math.nan
    return float(mu / np.std(r, ddof=1)), len(r), m3 / m2**1.5, m4 / m2**2
