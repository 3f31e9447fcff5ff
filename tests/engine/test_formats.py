"""Every supported export format loads to the same UTC bars; fast and line-by-line paths agree."""

from __future__ import annotations

import gzip

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
    # a European Excel export: ';' separated, decimal commas, day-first dates (the comma is auto-detected)
    "generic_excel_decimal_comma_EURUSD.csv": ("generic", {}),
    # a latin-1 file ('é' in a note column the loader does not read), read with the encoding named
    "latin1_note_EURUSD.csv": ("generic", {"encoding": "latin-1"}),
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


# ------------------------------------------------------------------------------------------------------------------
# gzip, decimal commas, other encodings: each read compared with pandas.read_csv of the same content
# ------------------------------------------------------------------------------------------------------------------
def _mt4_reference(path, compression=None) -> pd.DataFrame:
    """The MT4 export read by pandas alone (server time EET/EEST -> UTC)."""
    df = pd.read_csv(
        path, header=None, names=["d", "t", "open", "high", "low", "close", "volume"], compression=compression
    )
    local = pd.to_datetime(df["d"] + " " + df["t"], format="%Y.%m.%d %H:%M")
    df.index = pd.DatetimeIndex(local).tz_localize("Europe/Athens").tz_convert("UTC")
    return df


@pytest.mark.parametrize("name", ["EURUSD60.csv.gz", "EURUSD60.csv"])
def test_gzip_is_read_by_its_magic_bytes_whatever_the_name(tmp_path, data_dir, name):
    p = tmp_path / name
    p.write_bytes(gzip.compress((data_dir / "mt4_EURUSD60.csv").read_bytes()))
    ref = _mt4_reference(p, compression="gzip")
    for slow in (False, True):
        bars = load_bars(p, tz="Europe/Athens", _force_slow=slow)
        assert bars.symbol == "EURUSD" and bars.report.format == "mt4"
        np.testing.assert_array_equal(bars.ts, ref.index.as_unit("ns").asi8)
        for col in ("open", "high", "low", "close", "volume"):
            np.testing.assert_array_equal(getattr(bars, col), ref[col].to_numpy(float), err_msg=col)
        assert any("gzip-compressed" in n for n in bars.report.notes)


def test_gzip_name_without_gzip_content_is_read_as_text(tmp_path, data_dir):
    # Arrow decompresses by the file name when handed a path; a plain file named .gz must still read
    p = tmp_path / "EURUSD60.csv.gz"
    p.write_bytes((data_dir / "mt4_EURUSD60.csv").read_bytes())
    ref = _mt4_reference(p)
    bars = load_bars(p, tz="Europe/Athens")
    np.testing.assert_array_equal(bars.close, ref["close"].to_numpy())
    assert not any("gzip" in n for n in bars.report.notes)


def test_gzip_parquet_and_gzip_symbol_fallback(tmp_path):
    src = sample_bars()[:50]
    src.to_parquet(tmp_path / "a.parquet")
    (tmp_path / "a.parquet.gz").write_bytes(gzip.compress((tmp_path / "a.parquet").read_bytes()))
    back = load_bars(tmp_path / "a.parquet.gz", symbol="EURUSD")
    assert back.report.format == "parquet" and back == src
    # no pair in the name: the symbol is the name without .csv.gz
    p = tmp_path / "goog.csv.gz"
    p.write_bytes(gzip.compress(b"Date,Open,High,Low,Close\n2004-08-19,100.0,104.06,95.96,100.34\n"))
    assert load_bars(p).symbol == "goog"


def test_decimal_comma_export_matches_pandas(data_dir):
    p = data_dir / "generic_excel_decimal_comma_EURUSD.csv"
    ref = pd.read_csv(p, sep=";", decimal=",")
    ref_ts = pd.to_datetime(ref["Date"] + " " + ref["Time"], format="%d.%m.%Y %H:%M").dt.tz_localize("UTC")
    for kwargs in ({}, {"decimal": ","}, {"decimal": "auto"}):
        bars = load_bars(p, **kwargs)
        np.testing.assert_array_equal(bars.ts, ref_ts.dt.as_unit("ns").astype("int64").to_numpy())
        for col in ("open", "high", "low", "close", "volume"):
            np.testing.assert_array_equal(getattr(bars, col), ref[col.capitalize()].to_numpy(float), err_msg=col)
        detected = any("decimal comma detected" in n for n in bars.report.notes)
        assert detected == ("decimal" not in kwargs or kwargs["decimal"] == "auto")


def test_decimal_comma_with_whole_numbers_and_volume_commas(tmp_path):
    # whole-number prices read alike with either mark, so they do not make the comma ambiguous; volume follows too
    text = (
        "time;open;high;low;close;volume\n2020-01-02 00:00;110;110,5;109,25;110,125;12,5\n"
        "2020-01-02 01:00;110,125;111;110;110,75;7\n"
    )
    p = tmp_path / "USDJPY.csv"
    p.write_text(text)
    ref = pd.read_csv(p, sep=";", decimal=",")
    for slow in (False, True):
        bars = load_bars(p, _force_slow=slow)
        for col in ("open", "high", "low", "close", "volume"):
            np.testing.assert_array_equal(getattr(bars, col), ref[col].to_numpy(float), err_msg=col)


def test_latin1_file_read_with_its_encoding_matches_pandas(data_dir):
    p = data_dir / "latin1_note_EURUSD.csv"
    ref = pd.read_csv(p, encoding="latin-1")
    assert "données BCE" in set(ref["note"].dropna())  # the fixture really is latin-1 text
    for enc in ("latin-1", "cp1252"):
        bars = load_bars(p, encoding=enc)
        np.testing.assert_array_equal(bars.close, ref["close"].to_numpy())
        np.testing.assert_array_equal(
            bars.ts, pd.to_datetime(ref["time"]).dt.tz_localize("UTC").dt.as_unit("ns").astype("int64").to_numpy()
        )
    # a UTF-8 file read with encoding='utf-8' named explicitly is the default reading
    utf8 = data_dir / "generic_pandas_EURUSD.csv"
    assert load_bars(utf8, encoding="utf-8") == load_bars(utf8)
