"""Reading a Parquet bar file: the generic column names (any case) and a time column or a time index, as
``Bars.to_parquet`` and ``DataFrame.to_parquet`` write them. Rows are reported by number (unit "row")."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fxgate.engine.core.errors import BarDataError, Problem
from fxgate.engine.loader._layout import TIME_NAMES, VOLUME_NAMES
from fxgate.engine.loader._raw import REPAIR_HINT, VALUE_COLUMNS, Raw, data_error


def read_parquet(path: str, data: bytes | None = None) -> tuple[Raw, dict[str, str], str]:
    """Read ``path`` (or ``data``, its decompressed bytes) as Parquet."""
    try:
        table = pq.read_table(path if data is None else pa.BufferReader(data))
    except Exception as exc:
        raise data_error(
            path,
            None,
            None,
            "bad_parquet",
            f"unreadable Parquet ({exc})",
            "re-write the file, e.g. with Bars.to_parquet or DataFrame.to_parquet",
        ) from exc
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items() if k.startswith(b"fxgate.")}
    df = table.to_pandas()
    lower = {str(c).lower(): c for c in df.columns}
    labels: dict[str, str] = {}
    tcol = next((lower[a] for a in TIME_NAMES if a in lower), None)
    if tcol is not None:
        times = pd.DatetimeIndex(pd.to_datetime(df[tcol]))
        labels["time"] = str(tcol)
    elif isinstance(df.index, pd.DatetimeIndex):
        times = df.index
        labels["time"] = str(df.index.name or "<index>")
    else:
        raise data_error(
            path,
            None,
            None,
            "missing_column",
            f"no time column among {list(df.columns)}",
            "add a 'time' column of timestamps (or a DatetimeIndex)",
        )
    aware = times.tz is not None
    if aware:
        times = times.tz_convert("UTC").tz_localize(None)
    cols: dict[str, np.ndarray] = {}
    for canon in VALUE_COLUMNS:
        names = (canon,) if canon != "volume" else VOLUME_NAMES
        src = next((lower[a] for a in names if a in lower), None)
        if src is None:
            continue
        labels[canon] = str(src)
        try:
            cols[canon] = df[src].to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise data_error(
                path, None, str(src), "bad_number", f"non-numeric column ({exc})", "store prices and volume as numbers"
            ) from exc
    missing = [c for c in ("open", "high", "low", "close") if c not in cols]
    if missing:
        raise data_error(
            path,
            None,
            None,
            "missing_column",
            f"no {'/'.join(missing)} column among {list(df.columns)}",
            "name the columns open, high, low, close (any case)",
        )
    if times.isna().any():
        bad = int(np.flatnonzero(times.isna())[0]) + 1
        raise BarDataError([Problem(path, bad, labels["time"], "bad_time", "missing time", REPAIR_HINT, "row")])
    raw = Raw(times.as_unit("ns").asi8, cols, 1, [], aware)
    return raw, labels, meta.get("fxgate.symbol", "")
