"""The Bars container: construction checks, read-only columns, indexing, conversions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fxgate.engine import Bar, Bars, infer_timeframe, sample_bars, timeframe_seconds


def test_columns_are_copied_and_read_only():
    o = np.array([1.0, 2.0])
    b = Bars([0, 60_000_000_000], o, [2.0, 3.0], [0.5, 1.5], [1.5, 2.5], [1, 2])
    o[0] = 99.0
    assert b.open[0] == 1.0
    with pytest.raises(ValueError):
        b.close[0] = 5.0
    assert b.ts.dtype == np.int64 and b.volume.dtype == np.float64 and b.timeframe == "M1"


def test_length_mismatch_names_the_column():
    with pytest.raises(ValueError, match="column 'low' has 1 values but 'ts' has 2"):
        Bars([0, 1], [1, 1], [1, 1], [1], [1, 1], [1, 1])


def test_indexing_slicing_iteration():
    s = sample_bars()
    bar = s[3]
    assert isinstance(bar, Bar) and bar.symbol == "EURUSD" and bar.timeframe == "H1"
    assert bar.close == s.close[3] and s[-1].ts == s.ts[-1]
    with pytest.raises(IndexError):
        s[5000]
    part = s[10:20]
    assert isinstance(part, Bars) and len(part) == 10 and part.symbol == "EURUSD"
    assert [b.ts for b in part] == part.ts.tolist()
    assert "5000 bars" in repr(s) and "2017-04-19T09:00:00Z" in repr(s)


def test_pandas_round_trip():
    s = sample_bars()
    df = s.to_pandas()
    assert str(df.index.tz) == "UTC" and list(df.columns) == ["open", "high", "low", "close", "volume"]
    assert Bars.from_pandas(df, symbol="EURUSD") == s


@pytest.mark.parametrize(
    ("step_s", "name"), [(60, "M1"), (300, "M5"), (3600, "H1"), (14400, "H4"), (86400, "D1"), (120, "120s")]
)
def test_infer_timeframe_uses_the_mode(step_s, name):
    ts = np.cumsum(np.r_[0, np.full(50, step_s), 7 * step_s, np.full(5, step_s)]) * 10**9
    assert infer_timeframe(ts) == name
    assert timeframe_seconds(name) == step_s


def test_infer_timeframe_edge_cases():
    assert infer_timeframe(np.array([], np.int64)) == ""
    assert infer_timeframe(np.array([5], np.int64)) == ""
    idx = pd.date_range("2020-01-01", periods=4, freq="500ms").as_unit("ns").asi8
    assert infer_timeframe(idx) == "0.5s"
