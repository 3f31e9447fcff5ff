"""Every bad-input kind fails with the file's own line number (header included); repair lists every change."""

from __future__ import annotations

import bz2
import gzip
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxgate.engine import BarDataError, load_bars

MT4_GOOD = [
    "2017.04.19,12:00,1.07160,1.07220,1.07083,1.07219,1413",
    "2017.04.19,13:00,1.07214,1.07296,1.07214,1.07260,1241",
    "2017.04.19,14:00,1.07256,1.07299,1.07170,1.07192,1025",
    "2017.04.19,15:00,1.07195,1.07280,1.07195,1.07202,1460",
    "2017.04.19,16:00,1.07200,1.07230,1.07045,1.07050,1554",
    "2017.04.19,17:00,1.07054,1.07202,1.07044,1.07128,2342",
]
GENERIC_HEADER = "time,open,high,low,close,volume"


def _mt4(tmp_path, lines, name="EURUSD60.csv"):
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def _generic(tmp_path, lines, name="EURUSD.csv"):
    rows = [",".join(["2017-04-19 %s:00:00" % (12 + i)] + ln.split(",")[2:]) for i, ln in enumerate(lines)]
    p = tmp_path / name
    p.write_text("\n".join([GENERIC_HEADER, *rows]) + "\n")
    return p


def _with(lines, i, field, value):
    out = list(lines)
    cells = out[i].split(",")
    cells[field] = value
    out[i] = ",".join(cells)
    return out


# (defect name, edit of MT4_GOOD, 0-based bad row, column label, kind, message fragment)
CASES = [
    (
        "bad number",
        lambda L: _with(L, 2, 3, "1.07x99"),
        2,
        "high",
        "bad_number",
        "unparsable number '1.07x99'",
    ),
    ("bad time", lambda L: _with(L, 3, 0, "2017.02.30"), 3, "date+time", "bad_time", "unparsable time"),
    ("bad clock", lambda L: _with(L, 1, 1, "25:00"), 1, "date+time", "bad_time", "unparsable time"),
    ("NaN", lambda L: _with(L, 1, 5, "nan"), 1, "close", "nan", "NaN value"),
    ("inf", lambda L: _with(L, 4, 6, "inf"), 4, "volume", "inf", "infinite value"),
    ("empty cell", lambda L: _with(L, 4, 2, ""), 4, "open", "missing_value", "empty value"),
    (
        "zero price",
        lambda L: _with(_with(L, 0, 5, "0"), 0, 4, "0"),
        0,
        "low",
        "nonpositive_price",
        "not positive",
    ),
    (
        "high below body",
        lambda L: _with(L, 5, 3, "1.07100"),
        5,
        "high",
        "high_below_body",
        "high 1.071 is below max(open, close) = 1.07128",
    ),
    (
        "low above body",
        lambda L: _with(L, 2, 4, "1.07200"),
        2,
        "low",
        "low_above_body",
        "low 1.072 is above min(open, close) = 1.07192",
    ),
    (
        "negative volume",
        lambda L: _with(L, 3, 6, "-5"),
        3,
        "volume",
        "negative_volume",
        "negative volume -5.0",
    ),
    (
        "duplicate time",
        lambda L: _with(L, 4, 1, "15:00"),
        4,
        "date+time",
        "duplicate_time",
        "duplicate time 2017-04-19T15:00:00Z (first at line 4)",
    ),
    (
        "out of order",
        lambda L: [L[0], L[2], L[1], *L[3:]],
        2,
        "date+time",
        "out_of_order",
        "2017-04-19T13:00:00Z is earlier than 2017-04-19T14:00:00Z",
    ),
    (
        "truncated row",
        lambda L: [*L[:5], L[5][:20]],
        5,
        None,
        "truncated_row",
        "truncated row: 3 of 7 fields",
    ),
    ("extra field", lambda L: _with(L, 1, 6, "1241,7"), 1, None, "bad_row", "8 fields"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_strict_names_line_column_problem_and_fix(tmp_path, case):
    _, edit, row, col, kind, fragment = case
    p = _mt4(tmp_path, edit(MT4_GOOD))
    with pytest.raises(BarDataError) as ei:
        load_bars(p)
    first = ei.value.first
    assert first.kind == kind
    assert first.line == row + 1  # headerless file: line = row + 1
    assert first.column == col
    assert fragment in first.problem
    msg = str(ei.value)
    assert msg.startswith(f"{p}:{row + 1}:") and "Fix:" in msg


# cases whose edit touches only value cells carry over to a headered file (time cells differ between layouts)
VALUE_CASES = [
    c for c in CASES if c[4] not in ("out_of_order", "bad_time", "duplicate_time", "truncated_row", "bad_row")
]


@pytest.mark.parametrize("case", VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_header_counts_as_a_line(tmp_path, case):
    _, edit, row, _, kind, _ = case
    p = _generic(tmp_path, edit(MT4_GOOD))
    with pytest.raises(BarDataError) as ei:
        load_bars(p)
    assert ei.value.first.line == row + 2 and ei.value.first.kind == kind


def test_blank_lines_keep_editor_line_numbers(tmp_path):
    lines = [MT4_GOOD[0], "", MT4_GOOD[1], "   ", *_with(MT4_GOOD, 2, 3, "oops")[2:]]
    p = _mt4(tmp_path, lines)
    with pytest.raises(BarDataError) as ei:
        load_bars(p)
    assert ei.value.first.line == 5 and ei.value.first.column == "high"


def test_all_problems_are_listed_in_order(tmp_path):
    lines = _with(_with(MT4_GOOD, 1, 5, "nan"), 4, 3, "abc")
    with pytest.raises(BarDataError) as ei:
        load_bars(_mt4(tmp_path, lines))
    assert [(q.line, q.kind) for q in ei.value.problems] == [(2, "nan"), (5, "bad_number")]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_repair_drops_or_moves_and_reports_every_change(tmp_path, case):
    _, edit, row, _, kind, fragment = case
    p = _mt4(tmp_path, edit(MT4_GOOD))
    bars = load_bars(p, policy="repair")
    ch = bars.report.changes
    assert [c.line for c in ch] == [row + 1]
    assert ch[0].action == ("moved" if kind == "out_of_order" else "dropped")
    assert fragment in ch[0].reason
    assert np.all(np.diff(bars.ts) > 0)
    assert len(bars) == (6 if kind == "out_of_order" else 5)
    # what is kept is exactly the good rows, untouched
    good = load_bars(_mt4(tmp_path, MT4_GOOD, "EURUSD_good.csv"))
    keep = np.isin(good.ts, bars.ts)
    if kind != "duplicate_time":
        np.testing.assert_array_equal(bars.close, good.close[keep])


def test_repair_keeps_first_of_duplicates(tmp_path):
    lines = [*MT4_GOOD[:4], MT4_GOOD[3].replace("1.07202", "1.07203")[:-4] + "9999", *MT4_GOOD[4:]]
    bars = load_bars(_mt4(tmp_path, lines), policy="repair")
    assert len(bars) == 6 and bars.volume[3] == 1460.0
    assert bars.report.changes[0].line == 5


def test_unknown_format_lists_formats_tried(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("hello world this is not\na bar file at all\n")
    with pytest.raises(BarDataError) as ei:
        load_bars(p)
    msg = str(ei.value)
    assert "unknown bar file format" in msg
    for f in ("generic", "mt4", "mt5", "histdata", "dukascopy", "parquet"):
        assert f"{f}:" in msg


def test_headerless_generic_data_asks_for_a_header(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("2017-04-19 09:00:00,1.0716,1.0722,1.07083,1.07219,1413\n")
    with pytest.raises(BarDataError, match="without a header"):
        load_bars(p)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "the file is empty"),
        (b"\n\n  \n", "the file is empty"),
        (b"time,open,high,low,close,volume\n", "no bars in the file"),
        (b"time,open,high,low,close,volume\n\xff\xfe\x00garbage\n", "not UTF-8"),
        (b"time,open,high,close,volume\n2017-01-01,1,1,1,1\n", "no low column"),
        (b"stamp,open,high,low,close\n2017-01-01,1,1,1,1\n", "no time column"),
        (b"time,open,high,low,close\n04/05/2017 10:00,1,1,1,1\n", "day/month order"),
        (b"PAR1garbage", "unreadable Parquet"),
    ],
)
def test_structural_errors(tmp_path, content, fragment):
    p = tmp_path / "x.csv"
    p.write_bytes(content)
    with pytest.raises(BarDataError, match=fragment):
        load_bars(p)


def test_missing_file_and_bad_arguments(tmp_path):
    with pytest.raises(BarDataError, match="no such file"):
        load_bars(tmp_path / "nope.csv")
    p = _mt4(tmp_path, MT4_GOOD)
    with pytest.raises(ValueError, match="policy='fix' is not allowed"):
        load_bars(p, policy="fix")
    with pytest.raises(ValueError, match="format='mt6' is not allowed"):
        load_bars(p, format="mt6")
    with pytest.raises(ValueError, match="not a known time zone"):
        load_bars(p, tz="Mars/Olympus")


def test_dst_gap_time_is_reported(tmp_path):
    # 2017-03-26 03:30 does not exist in Europe/Athens (clocks jump 03:00 -> 04:00); a 24/7 series hits it.
    p = tmp_path / "BTCUSD.csv"
    p.write_text(
        "time,open,high,low,close\n2017-03-26 02:30,1,1,1,1\n2017-03-26 03:30,1,1,1,1\n2017-03-26 04:30,1,1,1,1\n"
    )
    with pytest.raises(BarDataError) as ei:
        load_bars(p, tz="Europe/Athens")
    assert ei.value.first.line == 3 and ei.value.first.kind == "dst_time"
    bars = load_bars(p, tz="Europe/Athens", policy="repair")
    assert len(bars) == 2 and bars.report.changes[0].line == 3


def test_session_gaps_are_reported_not_fatal_and_closures_skipped(tmp_path):
    # H1 bars Wed 2017-12-20 .. Wed 2017-12-27 (UTC), minus 3 hours inside Thursday's session.
    idx = pd.date_range("2017-12-20 00:00", "2017-12-27 23:00", freq="h", tz="UTC")
    ny = idx.tz_convert("America/New_York").tz_localize(None)
    fxday = ny + pd.Timedelta(hours=7)
    open_mask = (fxday.day_of_week < 5) & ~((ny >= "2017-12-24 17:00") & (ny < "2017-12-25 17:00"))
    hole = (idx >= "2017-12-21 10:00") & (idx < "2017-12-21 13:00")
    idx = idx[open_mask & ~hole]
    p = tmp_path / "EURUSD.csv"
    p.write_text(GENERIC_HEADER + "\n" + "\n".join(f"{t:%Y-%m-%d %H:%M},1.1,1.2,1.0,1.1,5" for t in idx) + "\n")
    bars = load_bars(p)
    rep = bars.report
    assert len(rep.gaps) == 1
    g = rep.gaps[0]
    assert g.missing_bars == 3
    assert g.after_ts == pd.Timestamp("2017-12-21 09:00", tz="UTC").value
    assert g.before_ts == pd.Timestamp("2017-12-21 13:00", tz="UTC").value
    # the weekend (Fri 22 17:00 NY -> Sun 24 17:00 NY) and Christmas (24 17:00 -> 25 17:00 NY) merge into one
    assert rep.closures == 1
    assert "3 bar(s) missing" in rep.summary()


# ------------------------------------------------------------------------------------------------------------------
# Property tests: whatever the bytes, the loader returns bars or raises its own error.
# ------------------------------------------------------------------------------------------------------------------
def _assert_only_own_errors(tmp_path, data: bytes) -> None:
    p = tmp_path / "fuzz.csv"
    p.write_bytes(data)
    for policy in ("strict", "repair"):
        try:
            bars = load_bars(p, policy=policy)
        except BarDataError:
            continue
        assert len(bars) > 0
        assert np.all(np.diff(bars.ts) > 0)
        assert np.all(np.isfinite(bars.close)) and np.all(bars.high >= np.maximum(bars.open, bars.close))


@given(st.binary(max_size=600))
def test_random_bytes_never_crash(tmp_path, data):
    _assert_only_own_errors(tmp_path, data)


_PREFIXES = [
    b"",
    b"time,open,high,low,close,volume\n",
    b"<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\n",
    b"Gmt time,Open,High,Low,Close,Volume\n",
    b"2017.04.19,12:00,1.07160,1.07220,1.07083,1.07219,1413\n",
    b"20170419 040000;1.071600;1.071700;1.071550;1.071650;0\n",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"time;open;high;low;close;volume\n",
    b"\x1f\x8b",
    b"PK\x03\x04",
]


@given(st.sampled_from(_PREFIXES), st.text(alphabet='0123456789.,;:-+ \n\r\tTZeEnaif<>"', max_size=400))
def test_near_valid_text_never_crashes(tmp_path, prefix, body):
    _assert_only_own_errors(tmp_path, prefix + body.encode())


# ------------------------------------------------------------------------------------------------------------------
# Repairs are visible downstream: the report's JSON form
# ------------------------------------------------------------------------------------------------------------------
def test_report_to_dict_is_json_and_lists_every_repair_by_line(tmp_path):
    # planted: NaN on line 2, a duplicate of line 4's time on line 5, lines 6 and 7 swapped, a bad number on line 9
    lines = [*MT4_GOOD, "2017.04.19,18:00,1.07128,1.07150,1.07100,1.07140,900"]
    lines = _with(lines, 1, 5, "nan")
    lines = [*lines[:4], lines[3], *lines[4:]]  # line 5 duplicates line 4
    lines[5], lines[6] = lines[6], lines[5]  # 17:00 (line 6) above 16:00 (line 7)
    lines = [*lines, "2017.04.19,19:00,1.07140,1.0x7150,1.07100,1.07140,900"]  # line 9
    p = _mt4(tmp_path, lines)
    rep = load_bars(p, policy="repair").report
    d = json.loads(json.dumps(rep.to_dict()))  # plain JSON types only
    assert d["policy"] == "repair" and d["repaired"] is True
    assert d["rows_read"] == 9 and d["rows_kept"] == 6
    assert d["repairs"]["dropped"] == {"count": 3, "lines": [[2, 2], [5, 5], [9, 9]]}
    assert d["repairs"]["moved"]["count"] == 1 and d["repairs"]["moved"]["lines"] in ([[6, 6]], [[7, 7]])
    assert [c["line"] for c in d["changes"]] == sorted(c["line"] for c in d["changes"])
    assert {(c["line"], c["action"]) for c in d["changes"]} >= {(2, "dropped"), (5, "dropped"), (9, "dropped")}
    assert "NaN" in next(c["reason"] for c in d["changes"] if c["line"] == 2)
    # max_items caps the detail, never the counts or the line ranges
    short = rep.to_dict(max_items=1)
    assert len(short["changes"]) == 1 and short["changes_omitted"] == 3
    assert short["repairs"] == d["repairs"]
    summary = rep.summary()
    assert "3 dropped (lines 2, 5, 9)" in summary and "1 moved" in summary


def test_report_to_dict_gaps_and_strict_policy(tmp_path):
    rows = ["2020-01-02 00:00", "2020-01-02 01:00", "2020-01-02 04:00", "2020-01-02 05:00", "2020-01-02 06:00"]
    p = tmp_path / "EURUSD.csv"
    p.write_text(GENERIC_HEADER + "\n" + "\n".join(f"{t},1.1,1.2,1.0,1.1,5" for t in rows) + "\n")
    d = json.loads(json.dumps(load_bars(p).report.to_dict()))
    assert d["policy"] == "strict" and d["repaired"] is False
    assert d["repairs"] == {"dropped": {"count": 0, "lines": []}, "moved": {"count": 0, "lines": []}}
    assert d["gaps"] == [
        {
            "after": "2020-01-02T01:00:00Z",
            "before": "2020-01-02T04:00:00Z",
            "after_ts": pd.Timestamp("2020-01-02 01:00", tz="UTC").value,
            "before_ts": pd.Timestamp("2020-01-02 04:00", tz="UTC").value,
            "missing_bars": 2,
        }
    ]
    assert d["gaps_total"] == 1 and d["missing_bars"] == 2 and d["timeframe"] == "H1"


# ------------------------------------------------------------------------------------------------------------------
# A timeframe that changes mid-file
# ------------------------------------------------------------------------------------------------------------------
MIXED = "mixed_timeframe_H1_then_M15_EURUSD.csv"  # lines 2-21: H1 bars; lines 22-45: M15 bars


def test_timeframe_change_is_refused_at_the_line_where_it_changes(data_dir):
    p = data_dir / MIXED
    with pytest.raises(BarDataError) as ei:
        load_bars(p)
    assert len(ei.value.problems) == 1
    q = ei.value.first
    assert (q.kind, q.line, q.column) == ("timeframe_change", 22, "time")
    msg = str(ei.value)
    assert msg.startswith(f"{p}:22:")
    assert "lines 2-21 are H1 bars" in msg and "lines 22-45 are M15 bars" in msg
    assert "split the file before line 22" in msg and "policy='repair'" in msg


def test_timeframe_change_under_repair_keeps_the_larger_part_and_reports_the_rest(data_dir):
    p = data_dir / MIXED
    ref = pd.read_csv(p, parse_dates=["time"])  # independent reading; data row i is file line i + 2
    m15 = ref.iloc[20:]
    bars = load_bars(p, policy="repair")
    assert bars.timeframe == "M15" and len(bars) == 24
    np.testing.assert_array_equal(bars.ts, m15["time"].dt.tz_localize("UTC").dt.as_unit("ns").astype("int64"))
    np.testing.assert_array_equal(bars.close, m15["close"].to_numpy())
    rep = bars.report
    assert rep.gaps == []  # not "20 gaps" of H1 bars read as a gappy M15 series
    assert [(c.line, c.action) for c in rep.changes] == [(line, "dropped") for line in range(2, 22)]
    assert "H1" in rep.changes[0].reason
    assert [(s.first_line, s.last_line, s.timeframe, s.bars, s.kept) for s in rep.segments] == [
        (2, 21, "H1", 20, False),
        (22, 45, "M15", 24, True),
    ]
    d = rep.to_dict()
    assert d["repairs"]["dropped"] == {"count": 20, "lines": [[2, 21]]}
    assert [s["timeframe"] for s in d["timeframe_segments"]] == ["H1", "M15"]
    assert "timeframe changes mid-file" in rep.summary()


def test_timeframe_change_back_and_forth_names_every_change(tmp_path):
    # M15 x 16 (lines 2-17), then H1 x 30 (lines 18-47), then M15 x 14 (lines 48-61)
    t0 = pd.Timestamp("2020-01-06 00:00")
    a = [t0 + pd.Timedelta(minutes=15 * i) for i in range(16)]
    b = [a[-1] + pd.Timedelta(hours=1 + i) for i in range(30)]
    c = [b[-1] + pd.Timedelta(minutes=15 * (1 + i)) for i in range(14)]
    p = tmp_path / "EURUSD.csv"
    p.write_text(GENERIC_HEADER + "\n" + "\n".join(f"{t:%Y-%m-%d %H:%M},1.1,1.2,1.0,1.1,5" for t in a + b + c) + "\n")
    with pytest.raises(BarDataError) as ei:
        load_bars(p)
    assert [(q.kind, q.line) for q in ei.value.problems] == [("timeframe_change", 18), ("timeframe_change", 48)]
    bars = load_bars(p, policy="repair")
    assert bars.timeframe == "H1" and len(bars) == 30
    assert bars.ts[0] == pd.Timestamp(b[0], tz="UTC").value
    assert [c.line for c in bars.report.changes] == [*range(2, 18), *range(48, 62)]


@pytest.mark.parametrize("missing", [0.1, 0.4, 0.7])
def test_gappy_series_and_daily_bars_are_not_a_timeframe_change(tmp_path, rng, missing):
    # M1 bars with minutes missing at random (quiet markets), and D1 bars stamped at the New York close (DST moves
    # the UTC time by an hour twice a year): one timeframe each, loaded strictly
    idx = pd.date_range("2020-01-06", periods=6000, freq="min")
    idx = idx[rng.random(len(idx)) > missing]
    p = tmp_path / "EURUSD_M1.csv"
    p.write_text(GENERIC_HEADER + "\n" + "\n".join(f"{t:%Y-%m-%d %H:%M},1.1,1.2,1.0,1.1,5" for t in idx) + "\n")
    bars = load_bars(p)
    assert len(bars) == len(idx) and bars.report.segments == []
    days = pd.date_range("2015-01-01", "2019-12-31", freq="D", tz="America/New_York") + pd.Timedelta("17h")
    days = days[days.day_of_week < 5].tz_convert("UTC")
    p = tmp_path / "EURUSD_D1.csv"
    p.write_text(GENERIC_HEADER + "\n" + "\n".join(f"{t:%Y-%m-%dT%H:%MZ},1.1,1.2,1.0,1.1,5" for t in days) + "\n")
    assert len(load_bars(p)) == len(days)


# ------------------------------------------------------------------------------------------------------------------
# Friendlier refusals: compressed files, archives, encodings, decimal commas
# ------------------------------------------------------------------------------------------------------------------
def test_cut_off_gzip_names_the_file_and_the_fix(tmp_path, data_dir):
    p = tmp_path / "EURUSD60.csv.gz"
    p.write_bytes(gzip.compress((data_dir / "mt4_EURUSD60.csv").read_bytes())[:60])
    with pytest.raises(BarDataError) as ei:
        load_bars(p)
    msg = str(ei.value)
    assert ei.value.first.kind == "bad_gzip" and msg.startswith(f"{p}: gzip-compressed")
    assert "cut off or damaged" in msg and "decompress it yourself" in msg


def test_archives_and_workbooks_say_what_they_are(tmp_path, data_dir):
    z = tmp_path / "HISTDATA_COM_ASCII_EURUSD_M1201704.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(data_dir / "histdata_DAT_ASCII_EURUSD_M1_201704.csv", "DAT_ASCII_EURUSD_M1_201704.csv")
        zf.writestr("DAT_ASCII_EURUSD_M1_201704.txt", "status")
    with pytest.raises(BarDataError) as ei:
        load_bars(z)
    msg = str(ei.value)
    assert msg.startswith(f"{z}: the file is a zip archive (DAT_ASCII_EURUSD_M1_201704.csv, ")
    assert "unzip" in msg and ".csv.gz" in msg
    x = tmp_path / "EURUSD.xlsx"
    with zipfile.ZipFile(x, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("xl/workbook.xml", "<workbook/>")
    with pytest.raises(BarDataError, match=r"Excel workbook \(\.xlsx\).*save the sheet as CSV"):
        load_bars(x)
    b = tmp_path / "EURUSD.csv.bz2"
    b.write_bytes(bz2.compress((data_dir / "mt4_EURUSD60.csv").read_bytes()))
    with pytest.raises(BarDataError, match=r"bzip2-compressed.*bunzip2"):
        load_bars(b)


def test_latin1_file_names_line_byte_and_the_encoding_fix(data_dir):
    p = data_dir / "latin1_note_EURUSD.csv"
    raw = p.read_bytes().split(b"\n")
    line = next(i for i, ln in enumerate(raw, 1) if b"\xe9" in ln)  # first non-ASCII byte, found independently
    col = raw[line - 1].index(b"\xe9") + 1
    with pytest.raises(BarDataError) as ei:
        load_bars(p)
    msg = str(ei.value)
    assert ei.value.first.kind == "encoding" and line == 4
    assert msg.startswith(f"{p}:{line}: byte {col} of the line (0xe9")
    assert "not UTF-8" in msg and "'é'" in msg and "donn<0xe9>es" in msg
    assert "encoding='latin-1'" in msg and "--encoding latin-1" in msg and "re-save the file as UTF-8" in msg


def test_wrong_encoding_named_says_so(tmp_path):
    p = tmp_path / "EURUSD.csv"
    p.write_bytes(b"time,open,high,low,close\n2020-01-02 00:00,1.1,1.2,1.0,1.1\n2020-01-02 01:00,\xff,1.2,1.0,1.1\n")
    with pytest.raises(BarDataError, match=r":3: byte 18 of the line \(0xff.*is not ascii text.*encoding="):
        load_bars(p, encoding="ascii")


def _comma_file(tmp_path, edit=None):
    rows = [
        "19.04.2017;09:00;1,0716;1,0722;1,07083;1,07219;1413",
        "19.04.2017;10:00;1,07214;1,07296;1,07214;1,0726;1241",
        "19.04.2017;11:00;1,07256;1,07299;1,0717;1,07192;1025",
    ] * 1  # three rows are enough; a real export repeats them 2,400 times
    if edit:
        rows = edit(rows)
    p = tmp_path / "EURUSD.csv"
    p.write_text("Date;Time;Open;High;Low;Close;Volume\n" + "\n".join(rows) + "\n")
    return p


def test_explicit_decimal_point_on_a_comma_file_is_one_refusal(tmp_path):
    p = _comma_file(tmp_path)
    with pytest.raises(BarDataError) as ei:
        load_bars(p, decimal=".")
    assert len(ei.value.problems) == 1
    assert (ei.value.first.kind, ei.value.first.line, ei.value.first.column) == ("decimal_mark", 2, "Open")
    msg = str(ei.value)
    assert msg.startswith(f"{p}:2: column 'Open': decimal='.' was given, but prices use a decimal comma ('1,0716')")
    assert "decimal=','" in msg and "--decimal ," in msg


def test_ambiguous_decimal_mark_is_one_refusal_naming_both_cells(tmp_path):
    p = _comma_file(tmp_path, lambda r: [r[0], r[1].replace("1,07296", "1.07296"), r[2]])
    with pytest.raises(BarDataError) as ei:
        load_bars(p)
    assert len(ei.value.problems) == 1
    msg = str(ei.value)
    assert msg.startswith(
        f"{p}:2: column 'Open': the decimal mark is ambiguous: in the first 3 data lines 11 price "
        "cell(s) use a decimal comma (first: line 2 column 'Open' '1,0716') and 1 a decimal point "
        "(first: line 3 column 'High' '1.07296')"
    )
    assert "decimal=','" in msg and "--decimal ," in msg
    # the explicit mark wins: with decimal=',' only the odd cell is an error, and it says how to write it
    with pytest.raises(BarDataError) as ei:
        load_bars(p, decimal=",")
    assert [(q.line, q.column, q.kind) for q in ei.value.problems] == [(3, "High", "bad_number")]
    assert "write this value with a comma" in ei.value.first.fix
    bars = load_bars(p, decimal=",", policy="repair")
    assert len(bars) == 2 and [c.line for c in bars.report.changes] == [3]


def test_explicit_decimal_comma_on_a_point_file_is_one_refusal(data_dir):
    p = data_dir / "mt4_EURUSD60.csv"
    with pytest.raises(BarDataError) as ei:
        load_bars(p, decimal=",")
    assert len(ei.value.problems) == 1
    assert str(ei.value).startswith(f"{p}:1: column 'open': decimal=',' was given, but prices use '.' ('1.07160')")


def test_stray_decimal_comma_in_a_point_file(tmp_path):
    lines = _with(MT4_GOOD, 2, 3, '"1,07299"')  # a quoted comma cell in a comma-separated file
    p = _mt4(tmp_path, lines)
    with pytest.raises(BarDataError) as ei:  # auto: one refusal, with the counts that show which mark is the odd one
        load_bars(p)
    assert [(q.line, q.kind) for q in ei.value.problems] == [(1, "decimal_mark")]
    assert "1 price cell(s) use a decimal comma (first: line 3 column 'high' '1,07299') and 23 a decimal point" in (
        str(ei.value)
    )
    with pytest.raises(BarDataError) as ei:  # decimal='.': the cell is an error with the hint
        load_bars(p, decimal=".")
    assert [(q.line, q.kind) for q in ei.value.problems] == [(3, "bad_number")]
    assert "looks like a decimal comma" in ei.value.first.fix


def test_bad_encoding_and_decimal_arguments(tmp_path):
    p = _mt4(tmp_path, MT4_GOOD)
    with pytest.raises(ValueError, match="encoding='latin-9x' is not a known text encoding.*'latin-1'"):
        load_bars(p, encoding="latin-9x")
    with pytest.raises(ValueError, match="decimal=';' is not allowed; use '.', ','"):
        load_bars(p, decimal=";")
