"""Slow, obviously-correct reference implementations the tests compare fxgate's fast code with."""

from __future__ import annotations

import numpy as np
import pandas as pd

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
