"""Small statistics used by the fit and replay reports: Wilson intervals, ranks, correlations, a HAC (Hansen-Hodrick,
Newey-West) standard error of a mean, and strict-JSON cleaning (NaN and inf become ``null``)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from scipy import stats as _st

__all__ = ["wilson", "pearson", "spearman", "log_loss", "auc", "hac_se", "json_safe", "strict_dumps"]


def wilson(k: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n (Wilson 1927); (nan, nan) when n == 0. ``k`` and ``n``
    may be fractional (an effective sample size, see :func:`hac_se`)."""
    if n == 0:
        return (math.nan, math.nan)
    z = float(_st.norm.ppf(0.5 + level / 2))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.std(x[ok]) == 0 or np.std(y[ok]) == 0:
        return math.nan
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return math.nan
    return pearson(_st.rankdata(x[ok]), _st.rankdata(y[ok]))


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of P(y=1) = p, with p clipped to [1e-15, 1 - 1e-15]."""
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def auc(p: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic (ties count one half)."""
    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return math.nan
    r = _st.rankdata(p)
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def hac_se(x: np.ndarray, lags: int, kernel: str = "bartlett") -> float:
    """Standard error of the mean of ``x`` robust to autocorrelation up to ``lags``, what statsmodels'
    ``OLS(x, 1).fit(cov_type="HAC", cov_kwds={"maxlags": lags, "kernel": kernel, "use_correction": False})``
    reports for the constant: ``sqrt(sum_t e_t^2 + 2 sum_l w_l sum_t e_t e_{t-l}) / n`` with ``e = x - mean(x)``.

    ``kernel="bartlett"``: Newey & West (1987, *Econometrica* 55(3)) weights ``w_l = 1 - l / (lags + 1)``, never
    negative. ``kernel="uniform"``: Hansen & Hodrick (1980, *J. Political Economy* 88(5)) weights ``w_l = 1``, the
    estimator for overlapping ``h``-period outcomes (an MA(``h - 1``) structure, ``lags = h - 1``); it can come out
    negative, and then NaN is returned. With ``lags = 0`` both are the i.i.d. ``std(x, ddof=0) / sqrt(n)``."""
    if kernel not in ("bartlett", "uniform"):
        raise ValueError(f"kernel {kernel!r}: use 'bartlett' or 'uniform'")
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n == 0:
        return math.nan
    e = x - x.mean()
    s = float(e @ e)
    for lag in range(1, min(lags, n - 1) + 1):
        w = 1.0 - lag / (lags + 1.0) if kernel == "bartlett" else 1.0
        s += 2.0 * w * float(e[lag:] @ e[:-lag])
    return math.sqrt(s) / n if s >= 0 else math.nan


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, inf) replaced by ``None`` and numpy scalars and arrays made plain
    Python, so that ``json.dumps(..., allow_nan=False)`` succeeds: strict JSON, readable by any parser."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


def strict_dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`json_safe` ``(obj)`` with ``allow_nan=False`` (raises rather than write ``NaN``)."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)
