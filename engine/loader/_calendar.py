"""FX calendar: New York time, the 17:00 New York day roll, and when the market is closed.

Spot FX trades from Sunday 17:00 New York to Friday 17:00 New York; the trading day rolls at 17:00 New York, so the
"New York close" convention labels a day by the date it *ends* on. Shifting New York wall time by +7 h turns that
into midnight alignment (17:00 NY + 7 h = 00:00), which is what MetaTrader brokers on "NY close" server time
(UTC+2 / UTC+3 with US DST) show. Christmas and New Year's Day are the only closures every venue shares.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NY_TZ = "America/New_York"
NS = 1_000_000_000
HOUR = 3600 * NS
DAY = 24 * HOUR
WEEK = 7 * DAY
#: New York wall time + this = "FX day" wall time, whose midnight is the 17:00 New York roll.
FX_DAY_SHIFT = 7 * HOUR
#: 1970-01-04 was a Sunday; + 17 h is the FX week open in New York wall time.
_SUNDAY_1700 = 3 * DAY + 17 * HOUR


def ny_local(ts: np.ndarray) -> np.ndarray:
    """UTC ns -> New York wall-clock ns (DST-aware), as int64."""
    idx = pd.DatetimeIndex(np.asarray(ts, dtype=np.int64).view("datetime64[ns]")).tz_localize("UTC")
    return idx.tz_convert(NY_TZ).tz_localize(None).as_unit("ns").asi8


def fx_local(ts: np.ndarray) -> np.ndarray:
    """UTC ns -> "FX day" wall-clock ns: New York wall time + 7 h, so the 17:00 NY roll falls at midnight."""
    return ny_local(ts) + FX_DAY_SHIFT


def closures(ny_start: int, ny_end: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Market-closed intervals ``[a, b)`` in New York wall-clock ns covering ``[ny_start, ny_end]``.

    Weekends (Friday 17:00 -> Sunday 17:00) and the Christmas and New Year's Day sessions (17:00 the evening
    before -> 17:00 that day), merged where they touch. Returns ``(a, b, has_holiday)``.
    """
    first_week = (ny_start - _SUNDAY_1700) // WEEK - 1
    last_week = (ny_end - _SUNDAY_1700) // WEEK + 1
    weeks = np.arange(first_week, last_week + 1, dtype=np.int64)
    fri = _SUNDAY_1700 + weeks * WEEK + 5 * DAY
    starts = [fri]
    ends = [fri + 2 * DAY]
    hol = [np.zeros(len(weeks), dtype=bool)]
    years = np.arange(
        np.datetime64(int(ny_start), "ns").astype("datetime64[Y]").astype(int) + 1970 - 1,
        np.datetime64(int(ny_end), "ns").astype("datetime64[Y]").astype(int) + 1970 + 2,
    )
    for month, day in ((12, 25), (1, 1)):
        days = np.array([np.datetime64(f"{y:04d}-{month:02d}-{day:02d}", "ns").astype(np.int64) for y in years])
        starts.append(days - 7 * HOUR)  # 17:00 the evening before
        ends.append(days + 17 * HOUR)
        hol.append(np.ones(len(days), dtype=bool))
    a = np.concatenate(starts)
    b = np.concatenate(ends)
    h = np.concatenate(hol)
    order = np.argsort(a, kind="stable")
    a, b, h = a[order], b[order], h[order]
    ma, mb, mh = [int(a[0])], [int(b[0])], [bool(h[0])]
    for x, y, z in zip(a[1:].tolist(), b[1:].tolist(), h[1:].tolist(), strict=True):
        if x <= mb[-1]:
            mb[-1] = max(mb[-1], y)
            mh[-1] = mh[-1] or z
        else:
            ma.append(x)
            mb.append(y)
            mh.append(z)
    return np.array(ma, dtype=np.int64), np.array(mb, dtype=np.int64), np.array(mh, dtype=bool)
