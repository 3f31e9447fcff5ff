"""Slow, obviously-correct reference implementations the tests compare fxgate's fast code with."""

from __future__ import annotations

from math import erf, gamma, pi, sqrt

import numpy as np
import pandas as pd
from scipy import stats

NY = "America/New_York"


def fx_day_local(ts_ns: np.ndarray) -> pd.DatetimeIndex:
    """UTC ns -> naive New York wall time + 7 h (the FX day: 17:00 New York is midnight)."""
    idx = pd.DatetimeIndex(np.asarray(ts_ns, dtype=np.int64).view("datetime64[ns]")).tz_localize("UTC")
    return idx.tz_convert(NY).tz_localize(None) + pd.Timedelta(hours=7)


def resample_pandas(ts_ns, o, h, low, c, v, rule: str) -> pd.DataFrame:
    """OHLCV resample with pandas on the FX-day clock; index = bin start in FX-day wall time."""
    df = pd.DataFrame({"open": o, "high": h, "low": low, "close": c, "volume": v}, index=fx_day_local(ts_ns))
    out = df.resample(rule).agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    return out.dropna(subset=["open"])


def random_walk_bars(
    rng: np.random.Generator, start: str, periods: int, freq: str = "1min", fx_hours_only: bool = True
) -> dict[str, np.ndarray]:
    """Synthetic, valid OHLCV bars; with fx_hours_only, bars in FX closures (Fri 17:00 -> Sun 17:00 NY) are
    removed, and a few random bars go missing as they do in real M1 files."""
    idx = pd.date_range(start, periods=periods, freq=freq, tz="UTC")
    if fx_hours_only:
        loc = idx.tz_convert(NY).tz_localize(None) + pd.Timedelta(hours=7)
        keep = loc.day_of_week < 5  # FX-day Monday..Friday
        idx = idx[keep]
    n = len(idx)
    close = 1.1 + np.cumsum(rng.normal(0, 2e-4, n))
    open_ = np.r_[close[0], close[:-1]] + rng.normal(0, 2e-5, n)
    high = np.maximum(open_, close) + rng.uniform(0, 3e-4, n)
    low = np.minimum(open_, close) - rng.uniform(0, 3e-4, n)
    vol = rng.integers(0, 300, n).astype(float)
    return {
        "ts": idx.as_unit("ns").asi8,
        "open": open_,
        "high": high,
        "low": low,
        "close": close,
        "volume": vol,
    }


def alpha158_pandas(o, h, low, c, v, windows=(5, 10, 20, 30, 60)) -> pd.DataFrame:
    """Alpha158 written directly from Qlib's expressions (qlib/contrib/data/loader.py, Alpha158DL) with pandas,
    except that rolling windows need to be full (min_periods = window) and VWAP0 is absent."""
    o, h, low, c, v = (pd.Series(np.asarray(a, dtype=float)) for a in (o, h, low, c, v))
    f: dict[str, pd.Series] = {}
    rng = h - low + 1e-12
    top, bot = np.maximum(o, c), np.minimum(o, c)
    f["KMID"], f["KLEN"], f["KMID2"] = (c - o) / o, (h - low) / o, (c - o) / rng
    f["KUP"], f["KUP2"] = (h - top) / o, (h - top) / rng
    f["KLOW"], f["KLOW2"] = (bot - low) / o, (bot - low) / rng
    f["KSFT"], f["KSFT2"] = (2 * c - h - low) / o, (2 * c - h - low) / rng
    f["OPEN0"], f["HIGH0"], f["LOW0"] = o / c, h / c, low / c
    diff = c - c.shift(1)
    vdiff = v - v.shift(1)
    ret = c / c.shift(1)
    lvr = np.log(v / v.shift(1) + 1)
    wv = (c / c.shift(1) - 1).abs() * v

    def ols(y):
        x = np.arange(1, len(y) + 1, dtype=float)
        slope, intercept = np.polyfit(x, y, 1)
        ss_tot = ((y - y.mean()) ** 2).sum()
        r2 = np.corrcoef(x, y)[0, 1] ** 2 if ss_tot > 0 else np.nan
        return slope, r2, y[-1] - (intercept + slope * x[-1])

    rows = {}
    for d in windows:
        roll = c.rolling(d)
        o3 = (
            roll.apply(lambda y: ols(y)[0], raw=True),
            roll.apply(lambda y: ols(y)[1], raw=True),
            roll.apply(lambda y: ols(y)[2], raw=True),
        )
        hmax, lmin = h.rolling(d).max(), low.rolling(d).min()
        imax = h.rolling(d).apply(np.argmax, raw=True) + 1
        imin = low.rolling(d).apply(np.argmin, raw=True) + 1
        up = diff.clip(lower=0).rolling(d).sum()
        dn = (-diff).clip(lower=0).rolling(d).sum()
        ab = diff.abs().rolling(d).sum()
        vup = vdiff.clip(lower=0).rolling(d).sum()
        vdn = (-vdiff).clip(lower=0).rolling(d).sum()
        vab = vdiff.abs().rolling(d).sum()
        cntp = (diff > 0).astype(float).where(diff.notna()).rolling(d).mean()
        cntn = (diff < 0).astype(float).where(diff.notna()).rolling(d).mean()
        rows[d] = {
            "ROC": c.shift(d) / c,
            "MA": roll.mean() / c,
            "STD": roll.std() / c,
            "BETA": o3[0] / c,
            "RSQR": o3[1],
            "RESI": o3[2] / c,
            "MAX": hmax / c,
            "MIN": lmin / c,
            "QTLU": roll.quantile(0.8) / c,
            "QTLD": roll.quantile(0.2) / c,
            "RANK": roll.rank(pct=True),
            "RSV": (c - lmin) / (hmax - lmin + 1e-12),
            "IMAX": imax / d,
            "IMIN": imin / d,
            "IMXD": (imax - imin) / d,
            "CORR": c.rolling(d).corr(np.log(v + 1)),
            "CORD": ret.rolling(d).corr(lvr),
            "CNTP": cntp,
            "CNTN": cntn,
            "CNTD": cntp - cntn,
            "SUMP": up / (ab + 1e-12),
            "SUMN": dn / (ab + 1e-12),
            "SUMD": (up - dn) / (ab + 1e-12),
            "VMA": v.rolling(d).mean() / (v + 1e-12),
            "VSTD": v.rolling(d).std() / (v + 1e-12),
            "WVMA": wv.rolling(d).std() / (wv.rolling(d).mean() + 1e-12),
            "VSUMP": vup / (vab + 1e-12),
            "VSUMN": vdn / (vab + 1e-12),
            "VSUMD": (vup - vdn) / (vab + 1e-12),
        }
    for name in rows[windows[0]]:
        for d in windows:
            f[f"{name}{d}"] = rows[d][name]
    return pd.DataFrame(f)


def realized_vol_pandas(c, bpd: int, lm_k: int) -> pd.DataFrame:
    """HAR-RV (Corsi 2009), bipower variation, BNS ratio statistic (Huang & Tauchen 2005) and Lee-Mykland (2008)
    written with pandas rolling sums."""
    r = np.log(pd.Series(np.asarray(c, dtype=float))).diff()
    ar = r.abs()
    bvp = ar * ar.shift(1)
    tqp = (ar * ar.shift(1) * ar.shift(2)) ** (4 / 3)
    mu43 = 2 ** (2 / 3) * gamma(7 / 6) / gamma(1 / 2)
    rv = (r**2).rolling(bpd).sum()
    bv = (pi / 2) * bvp.rolling(bpd).sum()
    tq = bpd * tqp.rolling(bpd).sum() / mu43**3
    theta = (pi / 2) ** 2 + pi - 5
    z = ((rv - bv) / rv) / np.sqrt(theta / bpd * np.maximum(1.0, tq / bv**2))
    lm = r / np.sqrt(bvp.shift(1).rolling(lm_k - 2).sum() / (lm_k - 2))
    return pd.DataFrame(
        {
            "RV_D": rv,
            "RV_W": (r**2).rolling(5 * bpd).sum() / 5,
            "RV_M": (r**2).rolling(22 * bpd).sum() / 22,
            "BV_D": bv,
            "BNS_Z": z,
            "LM": lm,
        }
    )


def vpin_naive(close, volume, bucket, sigma_window=100, n_buckets=50):
    """VPIN straight from Easley, Lopez de Prado & O'Hara (2012): BVC with sigma of the last sigma_window price
    changes, equal-volume buckets, VPIN = mean |V_buy - V_sell| / V_b over the last n buckets. Returns the VPIN value
    after each bar (NaN before n buckets)."""
    out = np.full(len(close), np.nan)
    diffs: list[float] = []
    buckets: list[float] = []
    fill, buy = 0.0, 0.0
    for t in range(1, len(close)):
        d = close[t] - close[t - 1]
        diffs.append(d)
        window = diffs[-sigma_window:]
        if len(window) >= 2 and volume[t] > 0:
            sd = float(np.std(window, ddof=1))
            share = 0.5 if sd <= 0 else 0.5 * (1 + erf(d / sd / sqrt(2)))
            rem = float(volume[t])
            while rem > 0:
                take = min(bucket - fill, rem)
                fill += take
                buy += take * share
                rem -= take
                if fill >= bucket * (1 - 1e-12):
                    buckets.append(abs(2 * buy - fill))
                    fill, buy = 0.0, 0.0
        if len(buckets) >= n_buckets:
            out[t] = sum(buckets[-n_buckets:]) / (n_buckets * bucket)
    return out


def bocpd_naive(x, hazard_lambda=250.0, mu0=0.0, kappa0=1.0, alpha0=1.0, beta0=1.0):
    """Untruncated Adams & MacKay (2007) recursion with a Normal-Gamma prior, in plain numpy/scipy.
    Returns the run-length distribution after each observation (list of arrays of growing length)."""
    h = 1.0 / hazard_lambda
    p = np.array([1.0])
    mu, kappa, alpha, beta = (np.array([v]) for v in (mu0, kappa0, alpha0, beta0))
    out = []
    for xt in x:
        scale = np.sqrt(beta * (kappa + 1) / (alpha * kappa))
        pred = stats.t.pdf(xt, df=2 * alpha, loc=mu, scale=scale)
        growth = p * pred * (1 - h)
        cp = (p * pred * h).sum()
        p = np.r_[cp, growth]
        p = p / p.sum()
        mu, kappa, alpha, beta = (
            np.r_[mu0, (kappa * mu + xt) / (kappa + 1)],
            np.r_[kappa0, kappa + 1],
            np.r_[alpha0, alpha + 0.5],
            np.r_[beta0, beta + kappa * (xt - mu) ** 2 / (2 * (kappa + 1))],
        )
        out.append(p.copy())
    return out
