"""Every bad-input kind fails with the file's own line number (header included); repair lists every change."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fxgate.engine import BarDataError, load_bars
from hypothesis import given
from hypothesis import strategies as st

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
]


@given(st.sampled_from(_PREFIXES), st.text(alphabet='0123456789.,;:-+ \n\r\tTZeEnaif<>"', max_size=400))
def test_near_valid_text_never_crashes(tmp_path, prefix, body):
    _assert_only_own_errors(tmp_path, prefix + body.encode())
