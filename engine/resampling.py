"""Resample bars to a coarser timeframe with FX session alignment.

Bins are aligned to the FX day, which rolls at 17:00 New York: bin edges are multiples of the period in New York
wall time + 7 h (see :mod:`fxgate.engine.loader._calendar`). For M1..H1 that is the same as UTC clock alignment
(New York's offset is a whole number of hours); H4 bars start at 17:00, 21:00, 01:00, ... New York, and D1 bars run
from 17:00 New York to 17:00 New York and are stamped with the UTC time of the roll, as "New York close" MetaTrader
servers show them. US DST changes happen at 02:00 New York on a Sunday, while FX is closed, so no bin straddles one.

Aggregation: open = first, high = max, low = min, close = last, volume = sum, spread = mean. A bar is stamped
with its open time. The last bin may be partial (the bar still forming).
"""

from __future__ import annotations

import numpy as np

from fxgate.engine.core.bars import NS, Bars, timeframe_seconds
from fxgate.engine.loader import _calendar as cal

__all__ = ["resample", "RESAMPLE_TARGETS"]

RESAMPLE_TARGETS = ("M5", "M15", "M30", "H1", "H4", "D1")


def resample(bars: Bars, to: str) -> Bars:
    """Aggregate ``bars`` (e.g. M1) into ``to`` (one of :data:`RESAMPLE_TARGETS`, or any whole multiple of the
    source timeframe up to a day)."""
    if not bars.timeframe:
        raise ValueError("cannot resample bars whose timeframe is unknown (fewer than two bars)")
    src = timeframe_seconds(bars.timeframe)
    dst = timeframe_seconds(to)
    if dst <= src or dst % src:
        ok = [t for t in RESAMPLE_TARGETS if timeframe_seconds(t) > src and timeframe_seconds(t) % src == 0]
        raise ValueError(
            f"cannot resample {bars.timeframe} bars to {to}: the target must be a whole multiple of the source "
            f"timeframe, larger than it (e.g. {bars.timeframe} -> {', '.join(ok) or 'nothing up to D1'})"
        )
    if dst > 86400 or 86400 % dst:
        raise ValueError(f"cannot resample to {to}: the target must divide the FX day (24 h)")
    ts = bars.ts
    if len(ts) > 1 and not np.all(np.diff(ts) > 0):
        raise ValueError("bars must be strictly increasing in time to be resampled; load them with load_bars")
    period = dst * NS
    local = cal.fx_local(ts) if dst > 3600 else ts
    bins = np.floor_divide(local, period)
    # 24/7 series (crypto) repeat an hour of New York wall time at the autumn DST change; merge it forward so bins
    # stay in time order.
    bins = np.maximum.accumulate(bins)
    starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
    ends = np.r_[starts[1:], len(ts)]
    label = ts[starts] - (local[starts] - bins[starts] * period)
    spread = None
    if bars.spread is not None:
        spread = np.add.reduceat(bars.spread, starts) / (ends - starts)
    return Bars(
        label,
        bars.open[starts],
        np.maximum.reduceat(bars.high, starts),
        np.minimum.reduceat(bars.low, starts),
        bars.close[ends - 1],
        np.add.reduceat(bars.volume, starts),
        spread,
        symbol=bars.symbol,
        timeframe=to.upper(),
    )
