"""Every supported export format loads to the same UTC bars; fast and line-by-line paths agree."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fxgate.engine import BarDataError, Bars, load_bars, sample_bars, sample_path

# The first six bars of the real EURUSD H1 sample (backtesting's EURUSD.csv), read independently with pandas.
REF = pd.read_csv(sample_path(), index_col=0, parse_dates=True, nrows=6)
REF_TS = REF.index.tz_localize("UTC").as_unit("ns").asi8

H1_FILES = {
    "generic_pandas_EURUSD.csv": ("generic", {}),
    "generic_date_time_semicolon_EURUSD.csv": ("generic", {}),
    "generic_iso_offset_spread_EURUSD.csv": ("generic", {}),
    "generic_epoch_ms_EURUSD.csv": ("generic", {}),
    # MetaTrader 4 server time here is EET/EEST (UTC+3 in April): 12:00 server = 09:00 UTC.
    "mt4_EURUSD60.csv": ("mt4", {"tz": "Europe/Athens"}),
    "mt5_EURUSD_H1.csv": ("mt5", {}),
    "dukascopy_EURUSD_Candlestick_1_Hour_BID.csv": ("dukascopy", {}),
}


@pytest.mark.parametrize("name", sorted(H1_FILES))
def test_h1_formats_load_to_the_sample_bars(data_dir, name):
    fmt, kwargs = H1_FILES[name]
    bars = load_bars(data_dir / name, **kwargs)
    assert bars.report is not None and bars.report.format == fmt
    assert bars.symbol == "EURUSD"
    assert bars.timeframe == "H1"
    np.testing.assert_array_equal(bars.ts, REF_TS)
    for col in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(getattr(bars, col), REF[col.capitalize()].to_numpy(), err_msg=col)
    if fmt != "dukascopy":  # Dukascopy volume is in lots (fractional), not ticks
        np.testing.assert_array_equal(bars.volume, REF["Volume"].to_numpy(float))


@pytest.mark.parametrize("name", sorted(H1_FILES) + ["histdata_DAT_ASCII_EURUSD_M1_201704.csv"])
def test_fast_path_equals_line_by_line_path(data_dir, name):
    kwargs = H1_FILES.get(name, (None, {}))[1]
    fast = load_bars(data_dir / name, **kwargs)
    slow = load_bars(data_dir / name, **kwargs, _force_slow=True)
    assert fast == slow


def test_explicit_format_is_honoured_and_checked(data_dir):
    assert load_bars(data_dir / "mt4_EURUSD60.csv", format="mt4").report.format == "mt4"
    with pytest.raises(BarDataError, match=r"does not match format='mt5'.*formats tried: mt5"):
        load_bars(data_dir / "mt4_EURUSD60.csv", format="mt5")


def test_mt4_without_tz_is_read_as_utc(data_dir):
    bars = load_bars(data_dir / "mt4_EURUSD60.csv")
    np.testing.assert_array_equal(bars.ts, REF_TS + 3 * 3600 * 10**9)


def test_mt5_spread_points_become_price_units(data_dir):
    bars = load_bars(data_dir / "mt5_EURUSD_H1.csv")
    np.testing.assert_allclose(bars.spread, np.array([8, 8, 9, 8, 10, 8]) * 1e-5, rtol=0, atol=1e-15)
    assert any("point = 1e-5" in n for n in bars.report.notes)


def test_iso_offsets_convert_to_utc_and_keep_spread(data_dir):
    bars = load_bars(data_dir / "generic_iso_offset_spread_EURUSD.csv")
    np.testing.assert_array_equal(bars.ts, REF_TS)
    np.testing.assert_array_equal(bars.spread, [8e-5, 8e-5, 9e-5, 8e-5, 1e-4, 8e-5])


def test_histdata_is_fixed_est_without_dst(data_dir):
    bars = load_bars(data_dir / "histdata_DAT_ASCII_EURUSD_M1_201704.csv")
    assert bars.report.format == "histdata" and bars.timeframe == "M1" and bars.symbol == "EURUSD"
    # 04:00 EST (UTC-5 all year, even in April when New York is on EDT) = 09:00 UTC
    assert bars[0].ts == pd.Timestamp("2017-04-19 09:00", tz="UTC").value
    assert bars[0].close == 1.07165
    with pytest.raises(ValueError, match="zone the format fixes"):
        load_bars(data_dir / "histdata_DAT_ASCII_EURUSD_M1_201704.csv", tz="America/New_York")


def test_utf8_bom_and_utf16_exports(tmp_path, data_dir):
    text = (data_dir / "mt5_EURUSD_H1.csv").read_text()
    ref = load_bars(data_dir / "mt5_EURUSD_H1.csv")
    for enc, prefix in (("utf-8", b"\xef\xbb\xbf"), ("utf-16-le", b"\xff\xfe")):
        p = tmp_path / f"EURUSD_{enc}.csv"
        p.write_bytes(prefix + text.encode(enc))
        assert load_bars(p) == ref


def test_missing_volume_column_is_zero_and_noted(tmp_path):
    p = tmp_path / "GBPUSD.csv"
    p.write_text(
        "time,open,high,low,close\n2020-01-02 00:00,1.3,1.31,1.29,1.305\n2020-01-02 01:00,1.305,1.31,1.3,1.30\n"
    )
    bars = load_bars(p)
    np.testing.assert_array_equal(bars.volume, [0.0, 0.0])
    assert bars.report.notes == ["no volume column: volume set to 0"]


def test_non_fx_series_and_symbol_fallback(tmp_path):
    p = tmp_path / "goog.csv"
    p.write_text(
        "Date,Open,High,Low,Close,Volume\n2004-08-19,100.0,104.06,95.96,100.34,22351900\n"
        "2004-08-20,101.01,109.08,100.5,108.31,11428600\n2004-08-23,110.75,113.48,109.05,109.4,9137200\n"
    )
    bars = load_bars(p)
    assert bars.symbol == "goog" and bars.timeframe == "D1" and len(bars) == 3
    assert bars.report.gaps == [] and bars.report.closures == 1


@pytest.mark.parametrize("writer", ["csv", "parquet"])
def test_round_trip_is_exact(tmp_path, writer):
    bars = sample_bars()
    bars_with_spread = Bars(
        bars.ts,
        bars.open,
        bars.high,
        bars.low,
        bars.close,
        bars.volume,
        np.full(len(bars), 1.3e-4),
        symbol="EURUSD",
    )
    for b in (bars, bars_with_spread):
        p = tmp_path / f"out.{writer}"
        getattr(b, f"to_{writer}")(p)
        back = load_bars(p, symbol="EURUSD")
        assert back == b
        assert back.report.format == ("parquet" if writer == "parquet" else "generic")


def test_csv_to_parquet_to_csv(tmp_path, data_dir):
    src = load_bars(data_dir / "mt5_EURUSD_H1.csv")
    src.to_parquet(tmp_path / "a.parquet")
    mid = load_bars(tmp_path / "a.parquet")
    assert mid.symbol == "EURUSD"  # stored in the Parquet metadata
    mid.to_csv(tmp_path / "b.csv")
    assert load_bars(tmp_path / "b.csv", symbol="EURUSD") == src


def test_parquet_written_by_pandas_with_index(tmp_path):
    df = pd.read_csv(sample_path(), index_col=0, parse_dates=True)
    df.to_parquet(tmp_path / "EURUSD.parquet")
    assert load_bars(tmp_path / "EURUSD.parquet") == sample_bars()


def test_sample_is_the_real_eurusd_h1_series():
    bars = sample_bars()
    assert len(bars) == 5000 and bars.timeframe == "H1" and bars.symbol == "EURUSD"
    assert str(bars.times[0]) == "2017-04-19T09:00:00.000000000"
    assert str(bars.times[-1]) == "2018-02-07T15:00:00.000000000"
    assert bars.report.gaps == [] and bars.report.closures > 30
