"""Columnar bar container.

``Bars`` holds one instrument's bars as read-only numpy columns: ``ts`` (int64 nanoseconds since the Unix epoch,
UTC, the bar's *open* time as MetaTrader stamps it), ``open high low close volume`` (float64; volume is tick volume
for FX) and an optional ``spread`` (float64, price units). ``Bar`` is one row. Columns are copied on construction and
made read-only, so a ``Bars`` handed to the gate can never be changed behind its back.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["Bar", "Bars", "TIMEFRAMES", "timeframe_seconds", "infer_timeframe"]

NS = 1_000_000_000

#: Named timeframes (MetaTrader names) and their length in seconds.
TIMEFRAMES: dict[str, int] = {
    "M1": 60,
    "M5": 300,
    "M15": 900,
    "M30": 1800,
    "H1": 3600,
    "H4": 14400,
    "D1": 86400,
    "W1": 604800,
}
_NAME_BY_SECONDS = {v: k for k, v in TIMEFRAMES.items()}

PRICE_COLUMNS = ("open", "high", "low", "close")
COLUMNS = ("ts", "open", "high", "low", "close", "volume")


def timeframe_seconds(timeframe: str) -> int:
    """Length of a timeframe in seconds: a MetaTrader name (``"H1"``) or ``"<n>s"`` (as infer_timeframe writes)."""
    tf = timeframe.strip().upper()
    if tf in TIMEFRAMES:
        return TIMEFRAMES[tf]
    if tf.endswith("S") and tf[:-1].isdigit() and int(tf[:-1]) > 0:
        return int(tf[:-1])
    raise ValueError(
        f"unknown timeframe {timeframe!r}: use one of {', '.join(TIMEFRAMES)} or '<seconds>s' such as '120s'"
    )


def infer_timeframe(ts: np.ndarray) -> str:
    """The modal spacing of ``ts`` (ns) as a timeframe name; ``""`` when there are fewer than two distinct times.

    The mode, not the minimum or the median, so weekend and holiday gaps and the odd missing bar do not matter.
    """
    if len(ts) < 2:
        return ""
    d = np.diff(np.asarray(ts, dtype=np.int64))
    d = d[d > 0]
    if len(d) == 0:
        return ""
    values, counts = np.unique(d, return_counts=True)
    step_ns = int(values[np.argmax(counts)])
    if step_ns % NS:
        return f"{step_ns / NS:g}s"
    secs = step_ns // NS
    return _NAME_BY_SECONDS.get(secs, f"{secs}s")


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar. ``ts`` is the open time in ns since the epoch, UTC."""

    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    spread: float | None = None
    symbol: str = ""
    timeframe: str = ""

    @property
    def time(self) -> np.datetime64:
        return np.datetime64(self.ts, "ns")


def _column(name: str, values: Any, dtype: type, n: int | None, copy: bool = True) -> np.ndarray:
    arr = np.array(values, dtype=dtype, copy=True) if copy else np.ascontiguousarray(values, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"Bars column '{name}' must be 1-dimensional, got shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise ValueError(f"Bars column '{name}' has {len(arr)} values but 'ts' has {n}; all columns need one per bar")
    arr.flags.writeable = False
    return arr


class Bars:
    """One instrument's bars as read-only numpy columns (see the module docstring)."""

    __slots__ = ("ts", "open", "high", "low", "close", "volume", "spread", "symbol", "timeframe", "report")

    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    spread: np.ndarray | None

    def __init__(
        self,
        ts: Any,
        open: Any,  # noqa: A002 - the column's name
        high: Any,
        low: Any,
        close: Any,
        volume: Any,
        spread: Any = None,
        *,
        symbol: str = "",
        timeframe: str | None = None,
        report: object | None = None,
        _copy: bool = True,
    ) -> None:
        ts_arr = np.asarray(ts)
        if ts_arr.dtype.kind == "M":
            ts_arr = ts_arr.astype("datetime64[ns]").astype(np.int64)
        # _copy=False: the caller (the loader) hands over arrays nobody else references
        self.ts = _column("ts", ts_arr, np.int64, None, _copy)
        n = len(self.ts)
        self.open = _column("open", open, np.float64, n, _copy)
        self.high = _column("high", high, np.float64, n, _copy)
        self.low = _column("low", low, np.float64, n, _copy)
        self.close = _column("close", close, np.float64, n, _copy)
        self.volume = _column("volume", volume, np.float64, n, _copy)
        self.spread = None if spread is None else _column("spread", spread, np.float64, n, _copy)
        self.symbol = str(symbol)
        self.timeframe = infer_timeframe(self.ts) if timeframe is None else str(timeframe)
        #: What the loader read and changed: a :class:`fxgate.engine.loader.LoadReport` (typed ``object`` here because
        #: the foundation imports nothing above it); None if built in code.
        self.report = report

    # -- sequence protocol -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ts)

    @overload
    def __getitem__(self, i: int) -> Bar: ...
    @overload
    def __getitem__(self, i: slice | np.ndarray) -> Bars: ...
    def __getitem__(self, i: int | slice | np.ndarray) -> Bar | Bars:
        if isinstance(i, int | np.integer):
            n = len(self)
            j = int(i) + n if i < 0 else int(i)
            if not 0 <= j < n:
                raise IndexError(f"bar index {i} out of range for {n} bars")
            return Bar(
                ts=int(self.ts[j]),
                open=float(self.open[j]),
                high=float(self.high[j]),
                low=float(self.low[j]),
                close=float(self.close[j]),
                volume=float(self.volume[j]),
                spread=None if self.spread is None else float(self.spread[j]),
                symbol=self.symbol,
                timeframe=self.timeframe,
            )
        return Bars(
            self.ts[i],
            self.open[i],
            self.high[i],
            self.low[i],
            self.close[i],
            self.volume[i],
            None if self.spread is None else self.spread[i],
            symbol=self.symbol,
            timeframe=self.timeframe,
        )

    def __iter__(self) -> Iterator[Bar]:
        for j in range(len(self)):
            yield self[j]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Bars):
            return NotImplemented
        if (self.symbol, self.timeframe, len(self)) != (other.symbol, other.timeframe, len(other)):
            return False
        if (self.spread is None) != (other.spread is None):
            return False
        cols = [*COLUMNS, *(["spread"] if self.spread is not None else [])]
        return all(np.array_equal(getattr(self, c), getattr(other, c), equal_nan=c != "ts") for c in cols)

    __hash__ = None  # type: ignore[assignment]  # mutable-looking container; compare, don't hash

    def __repr__(self) -> str:
        if len(self) == 0:
            return f"Bars({self.symbol or '?'} {self.timeframe or '?'}, empty)"
        first = np.datetime_as_string(np.datetime64(int(self.ts[0]), "ns"), unit="s")
        last = np.datetime_as_string(np.datetime64(int(self.ts[-1]), "ns"), unit="s")
        return f"Bars({self.symbol or '?'} {self.timeframe or '?'}, {len(self)} bars, {first}Z .. {last}Z)"

    # -- conversions -------------------------------------------------------------------------------------------
    @property
    def times(self) -> np.ndarray:
        """``ts`` as ``datetime64[ns]`` (UTC, naive as numpy has no zones)."""
        return self.ts.view("datetime64[ns]")

    def to_pandas(self) -> pd.DataFrame:
        """A DataFrame indexed by a tz-aware UTC ``DatetimeIndex`` named ``time``."""
        data = {c: getattr(self, c) for c in PRICE_COLUMNS + ("volume",)}
        if self.spread is not None:
            data["spread"] = self.spread
        idx = pd.DatetimeIndex(self.ts.view("datetime64[ns]"), name="time").tz_localize("UTC")
        return pd.DataFrame(data, index=idx)

    @classmethod
    def from_pandas(cls, df: pd.DataFrame, *, symbol: str = "", timeframe: str | None = None) -> Bars:
        """Build from a DataFrame with a DatetimeIndex (naive = UTC) and ``open high low close volume [spread]``
        columns (any case). No validation: use :func:`fxgate.engine.load_bars` for untrusted data."""
        cols = {str(c).lower(): c for c in df.columns}
        missing = [c for c in PRICE_COLUMNS + ("volume",) if c not in cols]
        if missing:
            raise ValueError(f"DataFrame lacks column(s) {missing}; it has {list(df.columns)}")
        idx = pd.DatetimeIndex(df.index)
        if idx.tz is not None:
            idx = idx.tz_convert("UTC").tz_localize(None)
        ts = idx.as_unit("ns").asi8
        spread = df[cols["spread"]].to_numpy(np.float64) if "spread" in cols else None
        return cls(
            ts,
            *(df[cols[c]].to_numpy(np.float64) for c in PRICE_COLUMNS + ("volume",)),
            spread,
            symbol=symbol,
            timeframe=timeframe,
        )

    def to_csv(self, path: str | Path) -> None:
        """Write the generic headered format (``time,open,high,low,close,volume[,spread]``, ISO-8601 UTC with
        ``Z``). Floats are written with Python's shortest round-trip repr, so :func:`load_bars` reads back the
        exact same values."""
        df = self.to_pandas()
        df.index = (
            df.index.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            if (self.ts % NS).any()
            else df.index.strftime("%Y-%m-%dT%H:%M:%SZ")
        )
        df.to_csv(path, index_label="time", float_format=None, lineterminator="\n")

    def to_parquet(self, path: str | Path) -> None:
        """Write Parquet with a ``time`` column of type ``timestamp[ns, UTC]``; symbol and timeframe go in the
        schema metadata."""
        arrays = {"time": pa.array(self.ts, type=pa.timestamp("ns", tz="UTC"))}
        for c in PRICE_COLUMNS + ("volume",):
            arrays[c] = pa.array(getattr(self, c))
        if self.spread is not None:
            arrays["spread"] = pa.array(self.spread)
        table = pa.table(arrays).replace_schema_metadata(
            {b"fxgate.symbol": self.symbol.encode(), b"fxgate.timeframe": self.timeframe.encode()}
        )
        pq.write_table(table, path)
