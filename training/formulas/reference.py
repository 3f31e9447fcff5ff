"""The reference formulas of the catalogue that fxgate computes here (the rest point at serving code: features,
modules, replay): volatility estimators, microstructure measures, risk ratios, the factor-research techniques the
design added, and execution costs. Each docstring names its source; tests/training/test_formulas.py compares every
function with an independent reference (a naive loop, numpy/scipy/pandas/statsmodels, or a closed form)."""

from __future__ import annotations

import math

import numpy as np

from fxgate.models._stats import spearman
from fxgate.models.features import MadWinsorizer
from fxgate.training.formulas._typing import Array
from fxgate.training.formulas.operators import rolling, ts_sum

__all__ = [
    "parkinson",
    "garman_klass",
    "rogers_satchell",
    "ewma_variance",
    "roll_spread",
    "amihud",
    "tick_imbalance_bars",
    "sharpe",
    "sortino",
    "max_drawdown",
    "var_historical",
    "cvar_historical",
    "treynor",
    "rank_ic",
    "ic_decay",
    "factor_half_life",
    "factor_turnover",
    "factor_neutralize",
    "mad_winsorize",
    "implementation_shortfall",
    "twap",
]


# -- volatility ---------------------------------------------------------------------------------------------------
def parkinson(high: Array, low: Array, n: int) -> Array:
    """Parkinson (1980) range estimator of the variance per bar over n bars."""
    return ts_sum(np.log(high / low) ** 2, n) / (4 * math.log(2) * n)


def garman_klass(open_: Array, high: Array, low: Array, close: Array, n: int) -> Array:
    """Garman & Klass (1980) variance per bar over n bars."""
    x = 0.5 * np.log(high / low) ** 2 - (2 * math.log(2) - 1) * np.log(close / open_) ** 2
    return ts_sum(x, n) / n


def rogers_satchell(open_: Array, high: Array, low: Array, close: Array, n: int) -> Array:
    """Rogers & Satchell (1991) drift-free variance per bar over n bars."""
    x = np.log(high / close) * np.log(high / open_) + np.log(low / close) * np.log(low / open_)
    return ts_sum(x, n) / n


def ewma_variance(returns: Array, lam: float = 0.94) -> Array:
    """RiskMetrics (J.P. Morgan 1996): s2_t = lam s2_{t-1} + (1 - lam) r_{t-1}^2, started at r_0^2."""
    out = np.full(len(returns), np.nan)
    if len(returns) < 2:
        return out
    s2 = returns[0] ** 2
    for t in range(1, len(returns)):
        s2 = lam * s2 + (1 - lam) * returns[t - 1] ** 2
        out[t] = s2
    return out


# -- microstructure -----------------------------------------------------------------------------------------------
def roll_spread(close: Array, n: int) -> Array:
    """Roll (1984): 2 sqrt(-cov(dP_t, dP_{t-1})) over the last n price changes (n - 1 adjacent pairs, ddof 1);
    NaN when the covariance is not negative."""
    d = np.diff(close, prepend=np.nan)

    def f(w: Array) -> Array:
        a, b = w[:, 1:], w[:, :-1]
        c = ((a - a.mean(1, keepdims=True)) * (b - b.mean(1, keepdims=True))).sum(1) / (w.shape[1] - 2)
        return np.where(c < 0, 2 * np.sqrt(np.abs(c)), np.nan)

    return rolling(d, n, f)


def amihud(returns: Array, volume: Array, n: int) -> Array:
    """Amihud (2002) illiquidity: mean |r| / volume over n bars."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return ts_sum(np.abs(returns) / volume, n) / n


def tick_imbalance_bars(prices: Array, volumes: Array, threshold: float) -> list[int]:
    """Tick-rule imbalance bars (López de Prado 2018, ch. 2.3.2, with a fixed threshold): the signed volume
    sum_i b_i v_i (b_i = sign of the price change, the previous sign when unchanged) is accumulated and a bar closes
    when its absolute value reaches ``threshold``. Returns the index of each bar's last tick."""
    ends, acc, last_sign = [], 0.0, 1.0
    for i in range(1, len(prices)):
        dp = prices[i] - prices[i - 1]
        s = last_sign if dp == 0 else math.copysign(1.0, dp)
        last_sign = s
        acc += s * volumes[i]
        if abs(acc) >= threshold:
            ends.append(i)
            acc = 0.0
    return ends


# -- risk -----------------------------------------------------------------------------------------------------------
def sharpe(returns: Array, rf: float = 0.0) -> float:
    """Sharpe (1966): mean(R - R_f) / std(R - R_f), ddof 1."""
    r = np.asarray(returns) - rf
    return float(r.mean() / r.std(ddof=1))


def sortino(returns: Array, target: float = 0.0) -> float:
    """Sortino & Price (1994): mean(R - T) / sqrt(mean(min(R - T, 0)^2))."""
    r = np.asarray(returns) - target
    dd = math.sqrt(np.mean(np.minimum(r, 0.0) ** 2))
    return float(r.mean() / dd)


def max_drawdown(equity: Array) -> float:
    """The largest fall of the equity curve from its running peak, in equity units."""
    e = np.asarray(equity, dtype=float)
    return float(np.max(np.maximum.accumulate(e) - e))


def var_historical(returns: Array, alpha: float = 0.05) -> float:
    """Historical value at risk: the loss not exceeded with probability 1 - alpha (a positive number)."""
    return float(-np.quantile(returns, alpha))


def cvar_historical(returns: Array, alpha: float = 0.05) -> float:
    """Expected shortfall: the mean loss in the worst alpha tail."""
    r = np.sort(np.asarray(returns))
    k = max(1, int(math.ceil(alpha * len(r))))
    return float(-r[:k].mean())


def treynor(returns: Array, market: Array, rf: float = 0.0) -> float:
    """Treynor (1965): (mean(R_p) - R_f) / beta_p, beta_p = cov(R_p, R_m) / var(R_m)."""
    rp, rm = np.asarray(returns), np.asarray(market)
    beta = np.cov(rp, rm, ddof=1)[0, 1] / np.var(rm, ddof=1)
    return float((rp.mean() - rf) / beta)


# -- factor research (the design's added techniques) --------------------------------------------------------------
def rank_ic(signal: Array, future_returns: Array) -> float:
    """Spearman correlation of a signal with the returns it predicts (Rank IC)."""
    return float(spearman(np.asarray(signal, float), np.asarray(future_returns, float)))


def ic_decay(signal: Array, returns: Array, lags: int) -> Array:
    """IC at horizon tau = 1..lags: Pearson corr(signal_t, r_{t+tau})."""
    s, r = np.asarray(signal, float), np.asarray(returns, float)
    return np.array([np.corrcoef(s[:-tau], r[tau:])[0, 1] for tau in range(1, lags + 1)])


def factor_half_life(x: Array) -> float:
    """-ln 2 / ln(rho_1), rho_1 the lag-1 autocorrelation: the bars after which a factor's memory halves (AR(1))."""
    x = np.asarray(x, float)
    rho = np.corrcoef(x[:-1], x[1:])[0, 1]
    return float(-math.log(2) / math.log(rho)) if 0 < rho < 1 else math.inf if rho >= 1 else math.nan


def factor_turnover(weights: Array) -> Array:
    """Sum_i |w_t,i - w_{t-1},i| for a (time x assets) weight matrix; the first row has no turnover (NaN)."""
    w = np.atleast_2d(np.asarray(weights, float))
    return np.r_[np.nan, np.abs(np.diff(w, axis=0)).sum(axis=1)]


def factor_neutralize(f: Array, exposures: Array) -> Array:
    """The residual of an OLS regression of factor values on exposures (with an intercept)."""
    x = np.column_stack([np.ones(len(f)), np.asarray(exposures, float).reshape(len(f), -1)])
    beta, *_ = np.linalg.lstsq(x, np.asarray(f, float), rcond=None)
    return np.asarray(f, float) - x @ beta


def mad_winsorize(x: Array, k: float = 3.0) -> Array:
    """Clip to median ± k × MAD, the raw median absolute deviation (fxgate.models.features.MadWinsorizer on one
    column; a MAD of 0 leaves the column unclipped)."""
    x = np.asarray(x, float).reshape(-1, 1)
    return MadWinsorizer(k=k).fit(x).transform(x)[:, 0]


# -- execution ------------------------------------------------------------------------------------------------------
def implementation_shortfall(decision_price: float, fills: Array, sizes: Array, side: int) -> float:
    """Perold (1988): sum_i side * (p_i - p_decision) * q_i, in price units × quantity."""
    return float(side * np.sum((np.asarray(fills) - decision_price) * np.asarray(sizes)))


def twap(x: float, n: int) -> Array:
    """The TWAP schedule, Almgren & Chriss (2001) in the lambda -> 0 limit: x_j = X (1 - j / N), j = 0..N."""
    return x * (1 - np.arange(n + 1) / n)
