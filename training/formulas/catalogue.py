"""The catalogue's data: every :class:`Formula` entry, per category, in one tuple (:data:`CATALOGUE`).

An entry is executable where it can be computed on bars (or on a signal and its realized returns) — ``compute`` is
then the fxgate function that computes it, often the serving code itself (a feature of
:class:`~fxgate.models.features.FeatureEngine`, a certainty module, the replay's probabilistic Sharpe) — and
described, with its citation, where it cannot. The design table's 18 certainty modules are read from
:data:`fxgate.modules.REGISTRY` (each module class carries its ``title``, ``formula`` and ``citation``). Nothing is
counted twice (tested).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fxgate.engine.metrics import probabilistic_sharpe
from fxgate.models.features import FeatureEngine, feature_names
from fxgate.modules import REGISTRY, create
from fxgate.modules.robust_kelly import kelly_fraction
from fxgate.training.formulas._typing import Array
from fxgate.training.formulas.alpha101 import (
    alpha009,
    alpha012,
    alpha023,
    alpha024,
    alpha041,
    alpha046,
    alpha049,
    alpha051,
    alpha053,
    alpha054,
    alpha101,
)
from fxgate.training.formulas.reference import (
    amihud,
    cvar_historical,
    ewma_variance,
    factor_half_life,
    factor_neutralize,
    factor_turnover,
    garman_klass,
    ic_decay,
    implementation_shortfall,
    mad_winsorize,
    max_drawdown,
    parkinson,
    rank_ic,
    rogers_satchell,
    roll_spread,
    sharpe,
    sortino,
    tick_imbalance_bars,
    treynor,
    twap,
    var_historical,
)

__all__ = ["Formula", "CATALOGUE", "CATEGORIES"]

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


@dataclass(frozen=True)
class Formula:
    """One catalogue entry: its name, category, source and formula text, and — when fxgate computes it — the
    function (``compute``) and what that function takes (``inputs``)."""

    name: str
    category: str
    citation: str
    formula: str
    compute: Callable[..., Any] | None = None  # the fxgate function, when computable
    inputs: str = ""  # what ``compute`` takes

    @property
    def computable(self) -> bool:
        return self.compute is not None


# -- adapters: the serving code an entry computes with, under the entry's own name -------------------------------
def _feature(name: str) -> Callable[[Any], Array]:
    """The column ``name`` of the served feature matrix, over a whole :class:`~fxgate.engine.core.bars.Bars`."""

    def compute(bars: Any) -> Array:
        fe = FeatureEngine(bars.timeframe)
        return fe.batch(bars)[:, fe.names.index(name)]

    compute.__name__ = f"feature_{name}"
    return compute


def _module(name: str) -> Callable[..., Any]:
    """A fresh certainty module of registry name ``name`` (keyword parameters as in ``[l4.params.<name>]``)."""

    def make(**params: Any) -> Any:
        return create(name, **params)

    make.__name__ = f"create_{name}"
    return make


def _kelly(p: float, b: float) -> float:
    return float(kelly_fraction(p, b))


def _psr(returns: Array) -> float:
    v = probabilistic_sharpe(np.asarray(returns, float))
    return math.nan if v is None else float(v)


# -- the entries, per category ------------------------------------------------------------------------------------
def _alpha158() -> list[Formula]:
    """The Qlib Alpha158 expressions of the features fxgate serves, with each window filled in."""
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


def _alpha101() -> list[Formula]:
    """The Alpha101 alphas fxgate computes on one series (:mod:`~fxgate.training.formulas.alpha101`)."""
    K = "Kakushadze (2016), 101 Formulaic Alphas, Wilmott 84:72-81"
    return [
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


def _volatility() -> list[Formula]:
    """Realized-variance components (the served features), range estimators, EWMA; GARCH described."""
    return [
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


def _microstructure() -> list[Formula]:
    """Spread and liquidity measures on bars; Kyle's lambda needs signed order flow (described)."""
    return [
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


def _risk() -> list[Formula]:
    """Sizing and performance measures; Kelly and the PSR are the serving code's own functions."""
    return [
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


def _execution() -> list[Formula]:
    """Execution-cost formulas; the Almgren-Chriss entry is the ExecutionCost module."""
    return [
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
            twap,
            "X, N",
        ),
    ]


def _certainty_modules() -> list[Formula]:
    """The design table's 18 modules, from their classes (registry order by name)."""
    return [
        Formula(cls.title, "certainty_modules", cls.citation, cls.formula, _module(name), "module")
        for name, cls in sorted(REGISTRY.items())
        if cls.__module__.startswith("fxgate.modules.")  # fxgate's own, not a module a user or a test registered
    ]


def _techniques() -> list[Formula]:
    """The 14 techniques the original design added on 2026-01-25; the four model architectures are described."""
    LP = "Lopez de Prado (2018), Advances in Financial Machine Learning"
    return [
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


CATALOGUE: tuple[Formula, ...] = tuple(
    _alpha158()
    + _alpha101()
    + _volatility()
    + _microstructure()
    + _risk()
    + _execution()
    + _certainty_modules()
    + _techniques()
)
