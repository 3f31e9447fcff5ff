"""The formula catalogue: what the original design called "1,183 formulas", as entries that are executable where
they can be computed on bars, described (with a citation) where they cannot, and never counted twice.

Each :class:`Formula` has a name, a category, a citation, the formula as text, and — when it is computable on one
price series (or on a signal and its realized returns) — the fxgate function that computes it. Every computable
entry is tested against an independent reference (a naive loop, numpy/scipy, or a closed form). The catalogue
generates the formula-knowledge SFT samples (:func:`sft_samples`); ``fxgate train formulas --list`` prints every
entry — name, category, formula, citation, and whether fxgate computes it or only describes it — per category
(:func:`listing`, ``--category`` to show one), with the counts.

Categories: ``alpha158`` (the features fxgate computes; Qlib's expressions), ``alpha101`` (Kakushadze 2016, the
alphas that need no cross-sectional rank), ``volatility``, ``microstructure``, ``risk``, ``execution``,
``certainty_modules`` (the 18 of the design, VPIN among them; the built ones point at their module),
``techniques`` (the 14 the
original design added on 2026-01-25; four of them — FEDformer, WaveNet TCN, FreEformer, A3C — are model
architectures, described, not computed).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Formula",
    "CATALOGUE",
    "CATEGORIES",
    "by_category",
    "sft_samples",
    "counts",
    "module_formulas",
    "rows",
    "listing",
]

Array = np.ndarray


@dataclass(frozen=True)
class Formula:
    name: str
    category: str
    citation: str
    formula: str
    compute: Callable[..., Any] | None = None  # the fxgate function, when computable
    inputs: str = ""  # what ``compute`` takes

    @property
    def computable(self) -> bool:
        return self.compute is not None


# -- helpers: causal rolling operators (value at t uses bars <= t; NaN until the window is full) ------------------
def _delay(x: Array, d: int) -> Array:
    out = np.full(len(x), np.nan)
    out[d:] = x[:-d] if d else x
    return out


def _delta(x: Array, d: int) -> Array:
    return x - _delay(x, d)


def _rolling(x: Array, n: int, fn: Callable[[Array], float]) -> Array:
    out = np.full(len(x), np.nan)
    if len(x) >= n:
        w = np.lib.stride_tricks.sliding_window_view(x, n)
        out[n - 1 :] = fn(w)
    return out


def ts_min(x: Array, n: int) -> Array:
    return _rolling(x, n, lambda w: w.min(axis=1))


def ts_max(x: Array, n: int) -> Array:
    return _rolling(x, n, lambda w: w.max(axis=1))


def ts_sum(x: Array, n: int) -> Array:
    return _rolling(x, n, lambda w: w.sum(axis=1))


# -- Alpha101 (Kakushadze 2016, "101 Formulaic Alphas", Wilmott 84) — single-series ones ------------------------
def alpha009(close: Array) -> Array:
    d = _delta(close, 1)
    mn, mx = ts_min(d, 5), ts_max(d, 5)
    return np.where(0 < mn, d, np.where(mx < 0, d, -d))


def alpha012(close: Array, volume: Array) -> Array:
    return np.sign(_delta(volume, 1)) * (-1 * _delta(close, 1))


def alpha023(high: Array) -> Array:
    return np.where(ts_sum(high, 20) / 20 < high, -1 * _delta(high, 2), 0.0)


def alpha024(close: Array) -> Array:
    m = ts_sum(close, 100) / 100
    cond = _delta(m, 100) / _delay(close, 100) <= 0.05
    return np.where(cond, -1 * (close - ts_min(close, 100)), -1 * _delta(close, 3))


def alpha041(high: Array, low: Array, vwap: Array) -> Array:
    return np.sqrt(high * low) - vwap


def alpha046(close: Array) -> Array:
    a = (_delay(close, 20) - _delay(close, 10)) / 10 - (_delay(close, 10) - close) / 10
    return np.where(0.25 < a, -1.0, np.where(a < 0, 1.0, -1 * (close - _delay(close, 1))))


def alpha049(close: Array) -> Array:
    a = (_delay(close, 20) - _delay(close, 10)) / 10 - (_delay(close, 10) - close) / 10
    return np.where(a < -0.1, 1.0, -1 * (close - _delay(close, 1)))


def alpha051(close: Array) -> Array:
    a = (_delay(close, 20) - _delay(close, 10)) / 10 - (_delay(close, 10) - close) / 10
    return np.where(a < -0.05, 1.0, -1 * (close - _delay(close, 1)))


def alpha053(close: Array, high: Array, low: Array) -> Array:
    den = np.where(close - low == 0, np.nan, close - low)  # undefined when the close is the low: NaN, not inf
    x = ((close - low) - (high - close)) / den
    return -1 * _delta(x, 9)


def alpha054(open_: Array, close: Array, high: Array, low: Array) -> Array:
    den = np.where(low == high, np.nan, (low - high) * close**5)  # a bar with no range: NaN
    return (-1 * ((low - close) * open_**5)) / den


def alpha101(open_: Array, close: Array, high: Array, low: Array) -> Array:
    return (close - open_) / ((high - low) + 0.001)


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

    return _rolling(d, n, f)


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
    r = np.asarray(returns) - rf
    return float(r.mean() / r.std(ddof=1))


def sortino(returns: Array, target: float = 0.0) -> float:
    r = np.asarray(returns) - target
    dd = math.sqrt(np.mean(np.minimum(r, 0.0) ** 2))
    return float(r.mean() / dd)


def max_drawdown(equity: Array) -> float:
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
    from fxgate.models._stats import spearman

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
    from fxgate.models.features import MadWinsorizer

    x = np.asarray(x, float).reshape(-1, 1)
    return MadWinsorizer(k=k).fit(x).transform(x)[:, 0]


# -- execution ------------------------------------------------------------------------------------------------------
def implementation_shortfall(decision_price: float, fills: Array, sizes: Array, side: int) -> float:
    """Perold (1988): sum_i side * (p_i - p_decision) * q_i, in price units × quantity."""
    return float(side * np.sum((np.asarray(fills) - decision_price) * np.asarray(sizes)))


def _module(name: str) -> Callable[..., Any]:
    def make(**params: Any) -> Any:
        from fxgate.modules import create

        return create(name, **params)

    make.__name__ = f"create_{name}"
    return make


# -- the catalogue ----------------------------------------------------------------------------------------------
def _alpha158() -> list[Formula]:
    from fxgate.models.features import feature_names

    qlib = {
        "KMID": "($close-$open)/$open",
        "KLEN": "($high-$low)/$open",
        "KMID2": "($close-$open)/($high-$low+1e-12)",
        "KUP": "($high-Greater($open,$close))/$open",
        "KUP2": "($high-Greater($open,$close))/($high-$low+1e-12)",
        "KLOW": "(Less($open,$close)-$low)/$open",
        "KLOW2": "(Less($open,$close)-$low)/($high-$low+1e-12)",
        "KSFT": "(2*$close-$high-$low)/$open",
        "KSFT2": "(2*$close-$high-$low)/($high-$low+1e-12)",
        "OPEN0": "$open/$close",
        "HIGH0": "$high/$close",
        "LOW0": "$low/$close",
        "ROC": "Ref($close,d)/$close",
        "MA": "Mean($close,d)/$close",
        "STD": "Std($close,d)/$close",
        "BETA": "Slope($close,d)/$close",
        "RSQR": "Rsquare($close,d)",
        "RESI": "Resi($close,d)/$close",
        "MAX": "Max($high,d)/$close",
        "MIN": "Min($low,d)/$close",
        "QTLU": "Quantile($close,d,0.8)/$close",
        "QTLD": "Quantile($close,d,0.2)/$close",
        "RANK": "Rank($close,d)",
        "RSV": "($close-Min($low,d))/(Max($high,d)-Min($low,d)+1e-12)",
        "IMAX": "IdxMax($high,d)/d",
        "IMIN": "IdxMin($low,d)/d",
        "IMXD": "(IdxMax($high,d)-IdxMin($low,d))/d",
        "CORR": "Corr($close,Log($volume+1),d)",
        "CORD": "Corr($close/Ref($close,1),Log($volume/Ref($volume,1)+1),d)",
        "CNTP": "Mean($close>Ref($close,1),d)",
        "CNTN": "Mean($close<Ref($close,1),d)",
        "CNTD": "Mean($close>Ref($close,1),d)-Mean($close<Ref($close,1),d)",
        "SUMP": "Sum(Greater($close-Ref($close,1),0),d)/(Sum(Abs($close-Ref($close,1)),d)+1e-12)",
        "SUMN": "Sum(Greater(Ref($close,1)-$close,0),d)/(Sum(Abs($close-Ref($close,1)),d)+1e-12)",
        "SUMD": "(Sum(Greater($close-Ref($close,1),0),d)-Sum(Greater(Ref($close,1)-$close,0),d))/"
        "(Sum(Abs($close-Ref($close,1)),d)+1e-12)",
        "VMA": "Mean($volume,d)/($volume+1e-12)",
        "VSTD": "Std($volume,d)/($volume+1e-12)",
        "WVMA": "Std(Abs($close/Ref($close,1)-1)*$volume,d)/(Mean(Abs($close/Ref($close,1)-1)*$volume,d)+1e-12)",
        "VSUMP": "Sum(Greater($volume-Ref($volume,1),0),d)/(Sum(Abs($volume-Ref($volume,1)),d)+1e-12)",
        "VSUMN": "Sum(Greater(Ref($volume,1)-$volume,0),d)/(Sum(Abs($volume-Ref($volume,1)),d)+1e-12)",
        "VSUMD": "(Sum(Greater($volume-Ref($volume,1),0),d)-Sum(Greater(Ref($volume,1)-$volume,0),d))/"
        "(Sum(Abs($volume-Ref($volume,1)),d)+1e-12)",
    }
    out = []
    for name in feature_names():
        fam = name.rstrip("0123456789") if name not in qlib else name
        d = name[len(fam) :]
        if fam not in qlib:
            continue  # HAR-RV, jump and session features: in their own categories
        text = re.sub(r"\bd\b", d, qlib[fam]) if d else qlib[fam]  # the window, wherever the expression uses it
        out.append(
            Formula(
                name, "alpha158", "Qlib Alpha158 (Yang et al. 2020, arXiv:2009.11189)", text, _feature(name), "Bars"
            )
        )
    return out


def _feature(name: str) -> Callable[[Any], Array]:
    def compute(bars: Any) -> Array:
        from fxgate.models.features import FeatureEngine

        fe = FeatureEngine(bars.timeframe)
        return fe.batch(bars)[:, fe.names.index(name)]

    compute.__name__ = f"feature_{name}"
    return compute


def _build() -> list[Formula]:
    K = "Kakushadze (2016), 101 Formulaic Alphas, Wilmott 84:72-81"
    cat: list[Formula] = _alpha158()
    cat += [
        Formula(
            "Alpha#9",
            "alpha101",
            K,
            "(0 < ts_min(delta(close,1),5)) ? delta(close,1) : ((ts_max(delta(close,1),5)"
            " < 0) ? delta(close,1) : -delta(close,1))",
            alpha009,
            "close",
        ),
        Formula("Alpha#12", "alpha101", K, "sign(delta(volume,1)) * (-1 * delta(close,1))", alpha012, "close, volume"),
        Formula("Alpha#23", "alpha101", K, "((sum(high,20)/20) < high) ? (-1 * delta(high,2)) : 0", alpha023, "high"),
        Formula(
            "Alpha#24",
            "alpha101",
            K,
            "((delta(sum(close,100)/100,100) / delay(close,100)) <= 0.05) ? "
            "(-1 * (close - ts_min(close,100))) : (-1 * delta(close,3))",
            alpha024,
            "close",
        ),
        Formula(
            "Alpha#41",
            "alpha101",
            K,
            "((high * low)^0.5) - vwap",
            alpha041,
            "high, low, vwap (FX: none; the typical price is the usual stand-in)",
        ),
        Formula(
            "Alpha#46",
            "alpha101",
            K,
            "(0.25 < a) ? -1 : ((a < 0) ? 1 : -(close - delay(close,1))), a = "
            "(delay(close,20)-delay(close,10))/10 - (delay(close,10)-close)/10",
            alpha046,
            "close",
        ),
        Formula(
            "Alpha#49", "alpha101", K, "(a < -0.1) ? 1 : -(close - delay(close,1)), a as in Alpha#46", alpha049, "close"
        ),
        Formula(
            "Alpha#51",
            "alpha101",
            K,
            "(a < -0.05) ? 1 : -(close - delay(close,1)), a as in Alpha#46",
            alpha051,
            "close",
        ),
        Formula(
            "Alpha#53",
            "alpha101",
            K,
            "-1 * delta(((close-low)-(high-close))/(close-low), 9)",
            alpha053,
            "close, high, low",
        ),
        Formula(
            "Alpha#54",
            "alpha101",
            K,
            "(-1 * ((low - close) * open^5)) / ((low - high) * close^5)",
            alpha054,
            "open, close, high, low",
        ),
        Formula(
            "Alpha#101", "alpha101", K, "(close - open) / ((high - low) + 0.001)", alpha101, "open, close, high, low"
        ),
    ]
    cat += [
        Formula(
            "HAR-RV daily component",
            "volatility",
            "Corsi (2009), J. Financial Econometrics 7(2)",
            "RV_D = sum of squared log returns over the last trading day",
            _feature("RV_D"),
            "Bars",
        ),
        Formula(
            "HAR-RV weekly component",
            "volatility",
            "Corsi (2009)",
            "RV_W = mean daily RV over 5 days",
            _feature("RV_W"),
            "Bars",
        ),
        Formula(
            "HAR-RV monthly component",
            "volatility",
            "Corsi (2009)",
            "RV_M = mean daily RV over 22 days",
            _feature("RV_M"),
            "Bars",
        ),
        Formula(
            "Bipower variation",
            "volatility",
            "Barndorff-Nielsen & Shephard (2004), J. Fin. Econometrics 2(1)",
            "BV = (pi/2) sum |r_i| |r_{i-1}|",
            _feature("BV_D"),
            "Bars",
        ),
        Formula(
            "Parkinson volatility",
            "volatility",
            "Parkinson (1980), J. Business 53(1)",
            "s2 = sum ln(H/L)^2 / (4 n ln 2)",
            parkinson,
            "high, low, n",
        ),
        Formula(
            "Garman-Klass volatility",
            "volatility",
            "Garman & Klass (1980), J. Business 53(1)",
            "s2 = mean[0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2]",
            garman_klass,
            "open, high, low, close, n",
        ),
        Formula(
            "Rogers-Satchell volatility",
            "volatility",
            "Rogers & Satchell (1991), Ann. Appl. Prob. 1(4)",
            "s2 = mean[ln(H/C) ln(H/O) + ln(L/C) ln(L/O)]",
            rogers_satchell,
            "open, high, low, close, n",
        ),
        Formula(
            "EWMA variance (RiskMetrics)",
            "volatility",
            "J.P. Morgan/Reuters (1996), RiskMetrics Technical Document",
            "s2_t = lambda s2_{t-1} + (1 - lambda) r_{t-1}^2, lambda = 0.94",
            ewma_variance,
            "returns",
        ),
        Formula(
            "GARCH(1,1)",
            "volatility",
            "Bollerslev (1986), J. Econometrics 31(3)",
            "s2_t = omega + alpha r_{t-1}^2 + beta s2_{t-1}",
        ),
    ]
    cat += [
        Formula(
            "Roll spread",
            "microstructure",
            "Roll (1984), J. Finance 39(4)",
            "s = 2 sqrt(-cov(dP_t, dP_{t-1}))",
            roll_spread,
            "close, n",
        ),
        Formula(
            "Amihud illiquidity",
            "microstructure",
            "Amihud (2002), J. Financial Markets 5(1)",
            "ILLIQ = mean(|r_t| / V_t)",
            amihud,
            "returns, volume, n",
        ),
        Formula(
            "Kyle's lambda",
            "microstructure",
            "Kyle (1985), Econometrica 53(6)",
            "dP_t = lambda * signed volume_t + e_t",
        ),
    ]
    cat += [
        Formula(
            "Kelly fraction",
            "risk",
            "Kelly (1956), Bell System Technical J. 35(4)",
            "f* = p - (1 - p) / b",
            _kelly,
            "p, b",
        ),
        Formula(
            "Sharpe ratio",
            "risk",
            "Sharpe (1966), J. Business 39(1)",
            "SR = mean(R - R_f) / std(R - R_f)",
            sharpe,
            "returns",
        ),
        Formula(
            "Sortino ratio",
            "risk",
            "Sortino & Price (1994), J. Investing 3(3)",
            "SoR = mean(R - T) / sqrt(mean(min(R - T, 0)^2))",
            sortino,
            "returns",
        ),
        Formula(
            "Maximum drawdown",
            "risk",
            "Magdon-Ismail & Atiya (2004), Risk 17(10)",
            "MDD = max_t (max_{s<=t} E_s - E_t)",
            max_drawdown,
            "equity",
        ),
        Formula(
            "Historical VaR",
            "risk",
            "Jorion (2006), Value at Risk, 3rd ed.",
            "VaR_a = -quantile_a(R)",
            var_historical,
            "returns",
        ),
        Formula(
            "Expected shortfall",
            "risk",
            "Acerbi & Tasche (2002), J. Banking & Finance 26(7)",
            "ES_a = -mean(R | R <= quantile_a(R))",
            cvar_historical,
            "returns",
        ),
        Formula(
            "Probabilistic Sharpe ratio",
            "risk",
            "Bailey & Lopez de Prado (2012), J. Risk 15(2)",
            "PSR = Phi(SR sqrt(T - 1) / sqrt(1 - g3 SR + (g4 - 1)/4 SR^2)), g4 raw kurtosis",
            _psr,
            "returns",
        ),
    ]
    cat += [
        Formula(
            "Almgren-Chriss trajectory",
            "execution",
            "Almgren & Chriss (2001), J. Risk 3(2)",
            "x_j = X sinh(k (T - t_j)) / sinh(k T), k^2 = lambda sigma^2 / eta",
            _module("execution_cost"),
            "module",
        ),
        Formula(
            "Implementation shortfall",
            "execution",
            "Perold (1988), J. Portfolio Mgmt 14(3)",
            "IS = side * sum (p_fill - p_decision) q",
            implementation_shortfall,
            "decision price, fills, sizes",
        ),
        Formula(
            "TWAP schedule",
            "execution",
            "Almgren & Chriss (2001), lambda -> 0 limit",
            "x_j = X (1 - j / N)",
            _twap,
            "X, N",
        ),
    ]
    built = {
        "VPIN": "vpin",
        "RobustKelly": "robust_kelly",
        "UncertaintyDecomposition": "uncertainty",
        "BOCPD": "bocpd",
        "SHAP": "shap",
        "ExecutionCost": "execution_cost",
        "AdverseSelection": "adverse_selection",
        "BayesianSizing": "bayesian_sizing",
        "RegimeDetection": "regime",
    }
    mods = [
        ("EdgeProof", "H0: mu_strategy <= mu_random, p < 0.001", "Harvey, Liu & Zhu (2016), RFS 29(1)"),
        ("CertaintyScore", "C = w1 IC + w2 ICIR + w3 EdgeProof", "the original design"),
        ("ConformalPrediction", "C(x) = {y : s(x, y) <= q_(1-alpha)}", "Vovk, Gammerman & Shafer (2005)"),
        ("RobustKelly", "f = Kelly x Baker-McHale shrinkage", "Baker & McHale (2013), Decision Analysis 10(3)"),
        ("VPIN", "sum |V_buy - V_sell| / (n V_bucket)", "Easley, Lopez de Prado & O'Hara (2012)"),
        ("InformationEdge", "IC = corr(predicted, realized)", "Grinold & Kahn (2000)"),
        ("ICIR", "mean(IC) / std(IC)", "Grinold & Kahn (2000)"),
        ("UncertaintyDecomposition", "H[E p] = E H[p] + MI (aleatoric + epistemic)", "Depeweg et al. (2018)"),
        ("QuantilePrediction", "Q_tau(r | x), tau in {0.1..0.9}", "Koenker & Bassett (1978)"),
        ("DoubleAdapt", "L = L_task + lambda L_domain", "Zhao et al. (2023), KDD"),
        ("ModelConfidenceSet", "MCS = {m : not rejected at alpha}", "Hansen, Lunde & Nason (2011)"),
        ("BOCPD", "P(r_t | x_1:t), hazard 1/lambda", "Adams & MacKay (2007), arXiv:0710.3742"),
        ("SHAP", "phi_i = Shapley values of the tree model", "Lundberg et al. (2020), Nat. Mach. Intell. 2"),
        ("ExecutionCost", "round-trip E[IS] + 1 sd < expected edge", "Almgren & Chriss (2001)"),
        ("AdverseSelection", "net markout E[D dM] - spread (the round trip's full spread)", "Glosten & Milgrom (1985)"),
        ("BayesianSizing", "f = argmax E_posterior[log growth]", "Browne & Whitt (1996)"),
        ("FactorWeighting", "w_t = argmax E[r] - lambda Var[r]", "Markowitz (1952)"),
        ("RegimeDetection", "P(S_t | X_1:t) via the HMM forward filter", "Hamilton (1989), Econometrica 57(2)"),
    ]
    for name, f, c in mods:
        cat.append(
            Formula(
                name,
                "certainty_modules",
                c,
                f,
                _module(built[name]) if name in built else None,
                "module" if name in built else "",
            )
        )
    LP = "Lopez de Prado (2018), Advances in Financial Machine Learning"
    cat += [
        Formula(
            "Treynor ratio",
            "techniques",
            "Treynor (1965), Harvard Business Review 43",
            "TR = (R_p - R_f) / beta_p",
            treynor,
            "returns, market returns",
        ),
        Formula(
            "Factor turnover",
            "techniques",
            "Grinold & Kahn (2000)",
            "TO_t = sum |w_t - w_(t-1)|",
            factor_turnover,
            "weights (time x assets)",
        ),
        Formula(
            "Factor half-life", "techniques", "AR(1) decay", "HL = -ln 2 / ln(rho_1)", factor_half_life, "factor series"
        ),
        Formula(
            "Rank IC",
            "techniques",
            "Grinold & Kahn (2000)",
            "RankIC = spearman(signal, future return)",
            rank_ic,
            "signal, future returns",
        ),
        Formula(
            "Lee-Mykland jump",
            "techniques",
            "Lee & Mykland (2008), RFS 21(6)",
            "L = r_t / sqrt(BV_t) vs the Gumbel critical value",
            _feature("LM"),
            "Bars",
        ),
        Formula(
            "MAD winsorization",
            "techniques",
            "Huber (1981), Robust Statistics",
            "x = clip(x, median +- k MAD), raw MAD",
            mad_winsorize,
            "values",
        ),
        Formula(
            "FEDformer attention",
            "techniques",
            "Zhou et al. (2022), ICML",
            "FEA = IFFT(select(FFT(Q) FFT(K))) V (frequency-enhanced attention)",
        ),
        Formula(
            "Tick imbalance bars",
            "techniques",
            LP + ", ch. 2.3.2",
            "close a bar when |sum b_i v_i| >= theta",
            tick_imbalance_bars,
            "prices, volumes, threshold",
        ),
        Formula(
            "BNS jump test",
            "techniques",
            "Barndorff-Nielsen & Shephard (2006), J. Fin. Econometrics 4(1)",
            "Z = (RV - BV) / sqrt(theta IQ)",
            _feature("BNS_Z"),
            "Bars",
        ),
        Formula(
            "Factor neutralization",
            "techniques",
            "Grinold & Kahn (2000)",
            "f_neutral = residual of OLS of f on exposures",
            factor_neutralize,
            "factor, exposures",
        ),
        Formula(
            "IC decay",
            "techniques",
            "Grinold & Kahn (2000)",
            "IC_tau = corr(signal_t, r_(t+tau))",
            ic_decay,
            "signal, returns, lags",
        ),
        Formula(
            "WaveNet TCN",
            "techniques",
            "van den Oord et al. (2016), arXiv:1609.03499",
            "y_t = sum_k w_k x_(t - d k), d = 2^layer (dilated causal convolution)",
        ),
        Formula(
            "FreEformer",
            "techniques",
            "Yue et al. (2025), arXiv:2501.13989",
            "attention over frequency-domain tokens with a learnable bias",
        ),
        Formula(
            "A3C",
            "techniques",
            "Mnih et al. (2016), ICML",
            "asynchronous advantage actor-critic: grad log pi(a|s) A(s, a) + value loss",
        ),
    ]
    return cat


def _kelly(p: float, b: float) -> float:
    from fxgate.modules.robust_kelly import kelly_fraction

    return float(kelly_fraction(p, b))


def _psr(returns: Array) -> float:
    from fxgate.engine.replay import probabilistic_sharpe

    v = probabilistic_sharpe(np.asarray(returns, float))
    return math.nan if v is None else float(v)


def _twap(x: float, n: int) -> Array:
    return x * (1 - np.arange(n + 1) / n)


CATALOGUE: tuple[Formula, ...] = tuple(_build())
#: registry name ("vpin") -> its catalogue entry, for the built certainty modules
_MODULE_ENTRIES = {
    f.compute.__name__.removeprefix("create_"): f
    for f in CATALOGUE
    if f.category == "certainty_modules" and f.compute is not None
}
CATEGORIES = (
    "alpha158",
    "alpha101",
    "volatility",
    "microstructure",
    "risk",
    "execution",
    "certainty_modules",
    "techniques",
)


def module_formulas(modules: list[str]) -> str:
    """Catalogue context for a prompt: the formula and citation of each certainty module named (registry names, e.g.
    ``"vpin"``), one line each; modules without an entry are skipped."""
    by_module = _MODULE_ENTRIES
    return "\n".join(f"- {m}: {by_module[m].formula} ({by_module[m].citation})" for m in modules if m in by_module)


def by_category() -> dict[str, list[Formula]]:
    out: dict[str, list[Formula]] = {c: [] for c in CATEGORIES}
    for f in CATALOGUE:
        out[f.category].append(f)
    return out


def counts() -> dict[str, dict[str, int]]:
    return {c: {"entries": len(fs), "computable": sum(f.computable for f in fs)} for c, fs in by_category().items()}


def _check_category(category: str | None) -> None:
    if category is not None and category not in CATEGORIES:
        import difflib

        near = difflib.get_close_matches(category, CATEGORIES, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"unknown formula category {category!r}.{hint} Categories: {', '.join(CATEGORIES)}")


def rows(category: str | None = None) -> list[dict[str, str]]:
    """One row per catalogue entry (of ``category``, or all): name, category, formula, citation, and ``status``
    ``computed`` (with the function that computes it) or ``described``."""
    _check_category(category)
    out = []
    for f in CATALOGUE:
        if category is not None and f.category != category:
            continue
        fn = f"{f.compute.__module__}.{f.compute.__name__}({f.inputs})" if f.compute is not None else ""
        out.append(
            {
                "name": f.name,
                "category": f.category,
                "formula": f.formula,
                "citation": f.citation,
                "status": "computed" if f.computable else "described",
                "function": fn,
            }
        )
    return out


def listing(category: str | None = None) -> str:
    """The catalogue as text, for ``fxgate train formulas --list [--category C]``: per category a heading with its
    counts, then one entry per line — name, computed/described, formula, citation — and a total line."""
    rs = rows(category)
    lines: list[str] = []
    cats = [category] if category is not None else list(CATEGORIES)
    for c in cats:
        mine = [r for r in rs if r["category"] == c]
        n_comp = sum(r["status"] == "computed" for r in mine)
        lines.append(f"{c} ({len(mine)} entries, {n_comp} computed, {len(mine) - n_comp} described only)")
        width = max((len(r["name"]) for r in mine), default=0)
        for r in mine:
            lines.append(f"  {r['name']:<{width}}  {r['status']:<9}  {r['formula']}  [{r['citation']}]")
    n_comp = sum(r["status"] == "computed" for r in rs)
    lines.append(f"total: {len(rs)} entries, {n_comp} computed, {len(rs) - n_comp} described only")
    return "\n".join(lines)


def sft_samples() -> list[dict[str, Any]]:
    """One formula-knowledge conversation per entry (chat ``messages`` format)."""
    out = []
    for f in CATALOGUE:
        how = (
            f"fxgate computes it with {f.compute.__module__}.{f.compute.__name__}({f.inputs})."
            if f.compute is not None
            else "fxgate describes it but does not compute it."
        )
        out.append(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": f"What is {f.name} ({f.category.replace('_', ' ')}), and how is it computed?",
                    },
                    {"role": "assistant", "content": f"{f.name}: {f.formula}. Source: {f.citation}. {how}"},
                ],
                "category": f.category,
            }
        )
    return out
