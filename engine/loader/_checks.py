"""The checks between parsing and repair: the time zone (naive local times to UTC), the bar values (the rules of
:mod:`fxgate.engine.core.validate`, each broken one named with its line and column) and the time order (duplicate
and out-of-order times). They are vectorized and shared by every format and both parse paths."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from fxgate.engine.core.errors import Problem
from fxgate.engine.core.validate import bad_rows, row_faults
from fxgate.engine.loader._raw import REPAIR_HINT, Raw


def check_tz(tz: str | None) -> None:
    """Refuse an unknown zone name before the file is read."""
    if tz is None:
        return
    try:
        pd.Timestamp(0).tz_localize(tz)
    except Exception as exc:
        raise ValueError(
            f"tz={tz!r} is not a known time zone; use an IANA name such as 'UTC' or 'Europe/Athens' (many MetaTrader "
            "servers run on EET/EEST)"
        ) from exc


def localize(raw: Raw, tz: str | None, path: str, unit: str, label: str) -> None:
    """Naive local times in ``tz`` -> UTC, in place. DST-gap and unresolvable DST-overlap times become problems."""
    if raw.aware or tz is None or tz.upper() in ("UTC", "GMT", "Z") or len(raw.ts) == 0:
        return
    idx = pd.DatetimeIndex(raw.ts.view("datetime64[ns]"))
    for ambiguous in ("raise", "infer"):
        try:
            raw.ts = idx.tz_localize(tz, ambiguous=ambiguous, nonexistent="raise").tz_convert("UTC").as_unit("ns").asi8
            return
        except Exception:  # noqa: BLE001 - pytz/zoneinfo raise different types
            continue
    loc = idx.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
    bad = np.asarray(loc.isna())
    for i in np.flatnonzero(bad):
        t = np.datetime_as_string(raw.ts[i].astype("datetime64[ns]"), unit="s")
        raw.problems.append(
            Problem(
                path,
                int(raw.lines[i]),
                label,
                "dst_time",
                f"time {t} does not exist or is ambiguous in {tz} (daylight-saving change)",
                "export in UTC, or delete the row (policy='repair' drops it)",
                unit,
            )
        )
    keep = ~bad
    utc = loc[keep].tz_convert("UTC").as_unit("ns").asi8
    raw.keep(keep)
    raw.ts = utc


#: What each kind of value fault says about the cell (the rule itself is in fxgate.engine.core.validate).
_SAYS: dict[str, Callable[[dict[str, np.ndarray], str, int], str]] = {
    "nan": lambda c, col, i: "NaN value",
    "inf": lambda c, col, i: f"infinite value ({float(c[col][i])})",
    "nonpositive_price": lambda c, col, i: f"price {float(c[col][i])!r} is not positive",
    "high_below_body": lambda c, col, i: (
        f"high {float(c['high'][i])!r} is below max(open, close) = {float(np.maximum(c['open'][i], c['close'][i]))!r}"
    ),
    "low_above_body": lambda c, col, i: (
        f"low {float(c['low'][i])!r} is above min(open, close) = {float(np.minimum(c['open'][i], c['close'][i]))!r}"
    ),
    "negative_volume": lambda c, col, i: f"negative volume {float(c[col][i])!r}",
    "negative_spread": lambda c, col, i: f"negative spread {float(c[col][i])!r}",
}


def value_problems(raw: Raw, labels: dict[str, str], path: str, unit: str) -> tuple[list[Problem], np.ndarray]:
    """The value checks of :mod:`fxgate.engine.core.validate`: a Problem per broken rule and cell, in row order, and
    the per-row "bad value" mask (times, duplicates and order are not judged here).

    The compiled pass flags the bad rows; only those are examined rule by rule to say what is wrong.
    """
    flagged = bad_rows(raw.cols)
    if not flagged.any():
        return [], flagged
    rows = np.flatnonzero(flagged)
    sub = {k: v[rows] for k, v in raw.cols.items()}
    lines = raw.lines[rows]
    found: list[tuple[int, Problem]] = []
    bad = np.zeros(len(raw.ts), dtype=bool)
    for fault in row_faults(sub):
        label = labels.get(fault.column, fault.column)
        says = _SAYS[fault.kind]
        for i in np.flatnonzero(fault.mask).tolist():
            found.append(
                (i, Problem(path, int(lines[i]), label, fault.kind, says(sub, fault.column, i), REPAIR_HINT, unit))
            )
        bad[rows[fault.mask]] = True
    found.sort(key=lambda t: t[0])
    return [p for _, p in found], bad


def order_problems(
    ts: np.ndarray, lines: np.ndarray, path: str, unit: str, label: str
) -> tuple[list[Problem], np.ndarray, np.ndarray]:
    """Duplicate and out-of-order timestamps among ``ts`` in file order.

    Returns problems, the mask of duplicate rows (every occurrence after the first), and the mask of rows whose
    time is earlier than a row above them.
    """
    n = len(ts)
    if n < 2 or bool(np.all(ts[1:] > ts[:-1])):
        return [], np.zeros(n, bool), np.zeros(n, bool)
    order = np.argsort(ts, kind="stable")
    s = ts[order]
    same = np.r_[False, s[1:] == s[:-1]]
    dup = np.zeros(n, dtype=bool)
    dup[order[same]] = True
    first_of = np.empty(n, dtype=np.int64)  # row index of the first occurrence of each row's time
    run_start = np.maximum.accumulate(np.where(~same, np.arange(n), 0))
    first_of[order] = order[run_start]
    runmax = np.maximum.accumulate(ts)
    back = np.r_[False, ts[1:] < runmax[:-1]]
    back &= ~dup
    out: list[tuple[int, Problem]] = []
    for i in np.flatnonzero(dup):
        j = int(first_of[i])
        t = np.datetime_as_string(np.datetime64(int(ts[i]), "ns"), unit="s")
        out.append(
            (
                int(i),
                Problem(
                    path,
                    int(lines[i]),
                    label,
                    "duplicate_time",
                    f"duplicate time {t}Z (first at {unit} {int(lines[j])})",
                    "keep one bar per time; policy='repair' keeps the first",
                    unit,
                ),
            )
        )
    for i in np.flatnonzero(back):
        t = np.datetime_as_string(np.datetime64(int(ts[i]), "ns"), unit="s")
        prev = np.datetime_as_string(np.datetime64(int(runmax[i - 1]), "ns"), unit="s")
        out.append(
            (
                int(i),
                Problem(
                    path,
                    int(lines[i]),
                    label,
                    "out_of_order",
                    f"time {t}Z is earlier than {prev}Z above it (out of order)",
                    "sort the file by time; policy='repair' sorts it",
                    unit,
                ),
            )
        )
    out.sort(key=lambda t: t[0])
    return [p for _, p in out], dup, back
