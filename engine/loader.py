"""Load bar files the way trading platforms export them, with errors that point at the line.

Formats (``format="auto"`` sniffs the first line):

``generic``    headered OHLCV: a ``time``/``timestamp``/``date``/``datetime`` column (or ``date`` + ``time``, or the
               unnamed index column a pandas export writes), ``open high low close`` and optionally ``volume``
               (``tick_volume``, ``tickvol``, ``vol``) and ``spread``; names are case-insensitive; ``,``, ``;`` or
               tab separated; ISO-8601, epoch or one of the common layouts in ``_timeparse.KNOWN_FORMATS``.
``mt4``        MetaTrader 4 history export, no header: ``2017.04.19,09:00,1.07160,1.07220,1.07083,1.07219,1413``.
``mt5``        MetaTrader 5 export, tab separated, ``<DATE> <TIME> <OPEN> <HIGH> <LOW> <CLOSE> <TICKVOL> <VOL>
               <SPREAD>``; the spread is in points and is converted to price units (point = 10^-digits, digits
               inferred from the prices and recorded in the report).
``histdata``   HistData.com generic ASCII: ``20170419 090000;1.071600;1.072200;1.070830;1.072190;0``, in fixed EST
               (UTC-5 all year, no DST), converted to UTC.
``dukascopy``  Dukascopy CSV: ``Gmt time,Open,High,Low,Close,Volume`` with ``19.04.2017 09:00:00.000`` (UTC).
``parquet``    any Parquet file with the generic column names, or a time index (as ``Bars.to_parquet`` writes).

Times without a zone (generic, mt4, mt5) are read in ``tz`` (default UTC; MetaTrader servers usually run on
EET/EEST, e.g. ``tz="Europe/Athens"``) and converted to UTC. HistData and Dukascopy define their zone, so ``tz``
must be left unset for them.

Reading has two paths with one meaning. The fast path parses a well-formed file column-wise (Arrow CSV reader,
vectorized time parsing) and maps row ``i`` to file line ``i + 1 + header``. Anything irregular — a blank or
truncated line, an unparsable cell — sends the file to the slow path, which reads it line by line so that every
error carries the exact line an editor shows. Value checks (NaN/inf, prices, OHLC consistency, volume, duplicate or
out-of-order times) are vectorized and shared by both paths.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from fxgate.engine import _calendar as cal
from fxgate.engine import _timeparse as tp
from fxgate.engine._jit import kernel
from fxgate.engine.bars import NS, Bars, infer_timeframe, timeframe_seconds
from fxgate.engine.errors import BarDataError, Problem

__all__ = ["load_bars", "LoadReport", "Change", "Gap", "FORMATS", "sample_bars", "sample_path"]

FORMATS = ("generic", "mt4", "mt5", "histdata", "dukascopy", "parquet")
Policy = Literal["strict", "repair"]
_VALUE_COLUMNS = ("open", "high", "low", "close", "volume", "spread")
#: Bytes read to sniff the format; the rest of the file goes straight to the CSV reader.
_HEAD_BYTES = 1 << 16
_REPAIR_HINT = "correct or delete the row, or load with policy='repair' to drop it"


@dataclass(frozen=True, slots=True)
class Change:
    """One change ``policy="repair"`` made: which line, what was done, and the problem that caused it."""

    line: int
    action: Literal["dropped", "moved"]
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.action} ({self.reason})"


@dataclass(frozen=True, slots=True)
class Gap:
    """Missing bars inside a trading session: after the bar at ``after_ts`` the next one is at ``before_ts``."""

    after_ts: int
    before_ts: int
    missing_bars: int

    def __str__(self) -> str:
        a = np.datetime_as_string(np.datetime64(self.after_ts, "ns"), unit="m")
        b = np.datetime_as_string(np.datetime64(self.before_ts, "ns"), unit="m")
        return f"{self.missing_bars} bar(s) missing between {a}Z and {b}Z"


@dataclass(slots=True)
class LoadReport:
    """What :func:`load_bars` read, changed and noticed."""

    path: str
    format: str
    rows_read: int = 0
    rows_kept: int = 0
    timeframe: str = ""
    changes: list[Change] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    closures: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self, max_items: int = 10) -> str:
        out = [
            f"{self.path}: format {self.format}, {self.rows_read} rows read, {self.rows_kept} bars kept, "
            f"timeframe {self.timeframe or '?'}"
        ]
        out += [f"  note: {n}" for n in self.notes]
        if self.changes:
            out.append(f"  repaired: {len(self.changes)} change(s)")
            out += [f"    {c}" for c in self.changes[:max_items]]
            if len(self.changes) > max_items:
                out.append(f"    ... and {len(self.changes) - max_items} more")
        out.append(f"  market closures (weekends/holidays) skipped: {self.closures}")
        if self.gaps:
            missing = sum(g.missing_bars for g in self.gaps)
            out.append(f"  gaps inside sessions: {len(self.gaps)} ({missing} bars missing; reported, not fatal)")
            out += [f"    {g}" for g in self.gaps[:max_items]]
            if len(self.gaps) > max_items:
                out.append(f"    ... and {len(self.gaps) - max_items} more")
        else:
            out.append("  gaps inside sessions: none")
        return "\n".join(out)


# ----------------------------------------------------------------------------------------------------------------
# Layout of a CSV-like file
# ----------------------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Layout:
    format: str
    delimiter: str
    header_lines: int
    ncols: int
    #: canonical name -> column index; time is "time" or "date" + "clock"
    index: dict[str, int]
    #: canonical name -> the label to print in messages (the file's own header text where there is one)
    labels: dict[str, str]
    time_format: str  # strptime format of the (joined) time text, "iso" or "epoch"
    utc_offset_ns: int = 0  # added to naive times of formats with a fixed zone (HistData EST -> +5 h)
    fixed_zone: bool = False  # the format defines its zone; `tz` must not be given
    spread_in_points: bool = False
    time_aware: bool = False  # ISO times carry a zone suffix (Z, +02:00): read them as UTC instants


_EXAMPLES = {
    "generic": "a header such as 'time,open,high,low,close,volume'",
    "mt4": "'2017.04.19,09:00,1.07160,1.07220,1.07083,1.07219,1413' (no header)",
    "mt5": "a header '<DATE>\\t<TIME>\\t<OPEN>\\t<HIGH>\\t<LOW>\\t<CLOSE>\\t<TICKVOL>\\t<VOL>\\t<SPREAD>'",
    "histdata": "'20170419 090000;1.071600;1.072200;1.070830;1.072190;0' (no header)",
    "dukascopy": "a header 'Gmt time,Open,High,Low,Close,Volume' and rows like '19.04.2017 09:00:00.000,...'",
    "parquet": "a Parquet file (starts with the bytes PAR1)",
}

_ZONE_RE = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})$")
_MT4_RE = re.compile(r"^\d{4}\.\d{2}\.\d{2},\d{1,2}:\d{2}(:\d{2})?,")
_HISTDATA_RE = re.compile(r"^\d{8} \d{6};")
_TIME_NAMES = ("time", "timestamp", "datetime", "date_time", "date time", "gmt time", "utc time", "date")
_VOLUME_NAMES = ("volume", "tick_volume", "tickvol", "tick volume", "tickvolume", "vol", "real_volume")
_MT5_TAGS = {
    "<DATE>": "date",
    "<TIME>": "clock",
    "<OPEN>": "open",
    "<HIGH>": "high",
    "<LOW>": "low",
    "<CLOSE>": "close",
    "<TICKVOL>": "volume",
    "<SPREAD>": "spread",
}


def _error(path: str, line: int | None, column: str | None, kind: str, problem: str, fix: str,
           unit: str = "line") -> BarDataError:  # fmt: skip
    """A BarDataError with one problem."""
    return BarDataError([Problem(path, line, column, kind, problem, fix, unit)])


def _split(line: str, delimiter: str) -> list[str]:
    if '"' in line:
        return next(csv.reader([line], delimiter=delimiter))
    return line.split(delimiter)


def _first_lines(text: str, k: int = 3) -> list[tuple[int, str]]:
    out = []
    for no, line in enumerate(text.splitlines(), 1):
        if line.strip():
            out.append((no, line))
            if len(out) == k:
                break
    return out


def _unknown(path: str, detail: str, tried: tuple[str, ...] = FORMATS) -> BarDataError:
    listing = "; ".join(f"{f}: {_EXAMPLES[f]}" for f in tried)
    return _error(
        path,
        1,
        None,
        "unknown_format",
        f"unknown bar file format ({detail}); formats tried: {listing}",
        "export the bars in one of these formats, or pass format=... to name it",
    )


def _generic_layout(path: str, header_no: int, header: str, first_row: str | None, fmt_name: str) -> _Layout:
    delim = max((",", ";", "\t"), key=lambda d: len(header.split(d)))
    names = [c.strip().strip('"').strip() for c in _split(header, delim)]
    lower = [c.lower() for c in names]
    if len(names) < 5:
        raise _unknown(path, f"line {header_no} has {len(names)} field(s); a bar file needs at least 5")
    index: dict[str, int] = {}
    labels: dict[str, str] = {}
    for canon in ("open", "high", "low", "close"):
        if canon in lower:
            index[canon] = lower.index(canon)
    for alias in _VOLUME_NAMES:
        if alias in lower:
            index["volume"] = lower.index(alias)
            break
    if "spread" in lower:
        index["spread"] = lower.index("spread")
    missing = [c for c in ("open", "high", "low", "close") if c not in index]
    if missing:
        raise BarDataError(
            [
                Problem(
                    path,
                    header_no,
                    None,
                    "missing_column",
                    f"header {names} has no {'/'.join(missing)} column",
                    "name the columns open, high, low, close (any case), plus a time column and optionally volume "
                    "and spread",
                )
            ]
        )
    if "date" in lower and "time" in lower:
        index["date"] = lower.index("date")
        index["clock"] = lower.index("time")
    else:
        for alias in _TIME_NAMES:
            if alias in lower:
                index["time"] = lower.index(alias)
                break
        else:
            if lower[0] in ("", "unnamed: 0", "index") and 0 not in index.values():
                index["time"] = 0
            else:
                raise BarDataError(
                    [
                        Problem(
                            path,
                            header_no,
                            None,
                            "missing_column",
                            f"header {names} has no time column",
                            "name it time, timestamp, datetime or date (or date + time), or make it the first, "
                            "unnamed column",
                        )
                    ]
                )
    for canon, i in index.items():
        labels[canon] = names[i] or ("<index>" if canon == "time" else canon)
    if "date" in index:
        labels["time"] = f"{names[index['date']]}+{names[index['clock']]}"
    time_fmt = "iso"
    if first_row is not None:
        cells = _split(first_row, delim)
        try:
            sample = (
                f"{cells[index['date']].strip()} {cells[index['clock']].strip()}"
                if "date" in index
                else cells[index["time"]]
            )
        except IndexError:
            sample = ""
        sniffed = tp.sniff_time_format(sample)
        if sniffed is None:
            raise BarDataError(
                [
                    Problem(
                        path,
                        header_no + 1,
                        labels["time"],
                        "bad_time",
                        f"unrecognised time {sample.strip()!r}",
                        "write times as ISO 8601 ('2017-04-19 09:00:00', optionally with Z or +02:00), epoch "
                        "seconds, or 'YYYY.MM.DD HH:MM'; day/month order in slash dates is ambiguous and not guessed",
                    )
                ]
            )
        time_fmt = sniffed
        aware = sniffed == "iso" and bool(_ZONE_RE.search(sample.strip()))
    else:
        aware = False
    return _Layout(fmt_name, delim, header_no, len(names), index, labels, time_fmt, time_aware=aware)


def _detect(path: str, text: str, fmt: str) -> _Layout:
    lines = _first_lines(text, 2)
    if not lines:
        raise BarDataError([Problem(path, None, None, "empty", "the file is empty", "export some bars into it")])
    no, first = lines[0]
    second = lines[1][1] if len(lines) > 1 else None
    head = first.strip()

    def want(name: str) -> bool:
        return fmt in ("auto", name)

    if want("mt5") and head.upper().startswith("<DATE>"):
        delim = "\t" if "\t" in head else ","
        tags = [t.strip().upper() for t in head.split(delim)]
        index = {_MT5_TAGS[t]: i for i, t in enumerate(tags) if t in _MT5_TAGS}
        missing = [t for t in ("<DATE>", "<OPEN>", "<HIGH>", "<LOW>", "<CLOSE>") if t not in tags]
        if missing:
            raise _unknown(path, f"MT5 header lacks {missing}", ("mt5",))
        labels = {v: k for k, v in _MT5_TAGS.items() if v in index}
        labels["time"] = "<DATE>+<TIME>" if "clock" in index else "<DATE>"
        if "clock" in index:
            cells = second.split(delim) if second else []
            clock = cells[index["clock"]] if len(cells) > index["clock"] else "00:00:00"
            time_fmt = "%Y.%m.%d %H:%M:%S" if clock.strip().count(":") == 2 else "%Y.%m.%d %H:%M"
        else:
            index["time"] = index.pop("date")
            time_fmt = "%Y.%m.%d"
        return _Layout("mt5", delim, no, len(tags), index, labels, time_fmt, spread_in_points=True)
    if want("mt4") and _MT4_RE.match(head):
        clock = head.split(",")[1]
        time_fmt = "%Y.%m.%d %H:%M:%S" if clock.count(":") == 2 else "%Y.%m.%d %H:%M"
        names = ("date", "clock", "open", "high", "low", "close", "volume")
        return _Layout(
            "mt4",
            ",",
            0,
            7,
            {n: i for i, n in enumerate(names)},
            {n: n for n in names} | {"time": "date+time"},
            time_fmt,
        )
    if want("histdata") and _HISTDATA_RE.match(head):
        names = ("time", "open", "high", "low", "close", "volume")
        return _Layout(
            "histdata",
            ";",
            0,
            6,
            {n: i for i, n in enumerate(names)},
            {n: n for n in names},
            "%Y%m%d %H%M%S",
            utc_offset_ns=5 * cal.HOUR,
            fixed_zone=True,
        )
    low = head.lower()
    if want("dukascopy") and (low.startswith("gmt time") or low.startswith('"gmt time')):
        lay = _generic_layout(path, no, head, second, "dukascopy")
        lay.fixed_zone = True
        return lay
    if fmt in ("auto", "generic"):
        if tp.sniff_time_format(re.split(r"[,;\t]", head)[0]) is not None:
            raise _unknown(
                path,
                f"line {no} {head[:60]!r} looks like data without a header; add a header such as "
                "'time,open,high,low,close,volume'",
            )
        if any(ch.isalpha() for ch in head) or head.startswith((",", ";", "\t")):
            return _generic_layout(path, no, head, second, "generic")
        raise _unknown(path, f"line {no} {head[:60]!r} is neither a known headerless layout nor a header")
    raise _unknown(path, f"line {no} {head[:60]!r} does not match format={fmt!r}", (fmt,))


# ----------------------------------------------------------------------------------------------------------------
# Parsing: a fast columnar path and a line-by-line path with exact diagnostics
# ----------------------------------------------------------------------------------------------------------------
class _Raw:
    """Parsed columns before checks. ``lines`` maps each row to its file line; on the fast path it is built only
    when a problem needs it (row i is line ``base + i``)."""

    __slots__ = ("ts", "cols", "_lines", "_base", "problems", "aware")

    def __init__(
        self,
        ts: np.ndarray,
        cols: dict[str, np.ndarray],
        lines: np.ndarray | int,
        problems: list[Problem],
        aware: bool = False,
    ) -> None:
        self.ts = ts  # naive ns (before zone handling) unless aware
        self.cols = cols
        self._lines = None if isinstance(lines, int) else lines
        self._base = lines if isinstance(lines, int) else 0
        self.problems = problems
        self.aware = aware  # ts already UTC (ISO with a zone suffix, epoch)

    @property
    def lines(self) -> np.ndarray:
        if self._lines is None:
            self._lines = np.arange(self._base, self._base + len(self.ts), dtype=np.int64)
        return self._lines

    @lines.setter
    def lines(self, value: np.ndarray) -> None:
        self._lines = value


class _Irregular(Exception):
    """The fast path met something it does not handle; the slow path decides."""


def _times_from_strings(col: object, lay: _Layout) -> tuple[np.ndarray, bool]:
    """Naive (or UTC, when zone-suffixed) ns from an Arrow string column laid out as ``lay.time_format``."""
    import pandas as pd

    fmt = lay.time_format
    if len(col) == 0:
        return np.zeros(0, np.int64), False
    first = str(col[0])
    fixed = tp.iso_fixed_format(first) if fmt == "iso" else fmt
    if fixed is not None and fixed != "epoch" and tp.fixed_width(fixed) is not None:
        ns, ok = tp.parse_fixed(col, fixed)
        if ok.all():
            return ns, fixed.endswith("Z")
    # not fixed-width (e.g. '9:00' next to '10:00'): pandas, strict, vectorized
    values = col.to_numpy(zero_copy_only=False)
    try:
        if fmt == "iso":
            has_zone = pd.Series(values).str.contains(_ZONE_RE.pattern, regex=True)
            if has_zone.any() and not has_zone.all():
                raise _Irregular
            idx = pd.DatetimeIndex(pd.to_datetime(values, format="ISO8601", utc=bool(has_zone.all())))
            if idx.tz is not None:
                idx = idx.tz_convert("UTC").tz_localize(None)
            return idx.as_unit("ns").asi8, bool(has_zone.all())
        return pd.DatetimeIndex(pd.to_datetime(values, format=fmt)).as_unit("ns").asi8, False
    except _Irregular:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure sends the file to the line-by-line path
        raise _Irregular from exc


def _fast_times(table: object, names: list[str], lay: _Layout) -> tuple[np.ndarray, bool]:
    import pyarrow as pa
    import pyarrow.compute as pc

    if "date" in lay.index:
        d = table.column(names[lay.index["date"]])
        c = table.column(names[lay.index["clock"]])
        if d.null_count or c.null_count:
            raise _Irregular
        if lay.time_format not in ("iso", "epoch") and " " in lay.time_format:
            date_fmt, clock_fmt = lay.time_format.split(" ", 1)
            nd, okd = tp.parse_fixed(d, date_fmt)
            nc, okc = tp.parse_fixed(c, clock_fmt)
            if okd.all() and okc.all():
                return nd + nc, False
        joined = pc.binary_join_element_wise(pc.utf8_trim_whitespace(d), pc.utf8_trim_whitespace(c), " ")
        return _times_from_strings(joined, lay)
    col = table.column(names[lay.index["time"]])
    if col.null_count:
        raise _Irregular
    if pa.types.is_timestamp(col.type):
        return col.cast(pa.int64()).to_numpy(), col.type.tz is not None
    if pa.types.is_integer(col.type):
        return tp.epoch_to_ns(col.to_numpy()), True
    return _times_from_strings(col, lay)


def _parse_fast(source: str | bytes, lay: _Layout) -> _Raw:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    names = [f"c{i}" for i in range(lay.ncols)]
    types: dict[str, object] = {}
    for canon, i in lay.index.items():
        if canon == "time" and lay.time_format == "iso":
            types[names[i]] = pa.timestamp("ns", tz="UTC") if lay.time_aware else pa.timestamp("ns")
        elif canon == "time" and lay.time_format == "epoch":
            types[names[i]] = pa.int64()
        elif canon in ("time", "date", "clock"):
            types[names[i]] = pa.string()
        else:
            types[names[i]] = pa.float64()
    try:
        table = pcsv.read_csv(
            io.BytesIO(source) if isinstance(source, bytes) else source,
            read_options=pcsv.ReadOptions(skip_rows=lay.header_lines, column_names=names, block_size=1 << 22),
            parse_options=pcsv.ParseOptions(delimiter=lay.delimiter, ignore_empty_lines=False),
            convert_options=pcsv.ConvertOptions(
                column_types=types,
                include_columns=list(types),
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types; all mean "irregular"
        raise _Irregular from exc
    n = table.num_rows
    cols: dict[str, np.ndarray] = {}
    for canon in _VALUE_COLUMNS:
        if canon in lay.index:
            col = table.column(names[lay.index[canon]])
            if col.null_count:
                raise _Irregular
            cols[canon] = col.to_numpy()
    ts, aware = _fast_times(table, names, lay)
    if len(ts) != n:  # pragma: no cover - Arrow guarantees equal column lengths
        raise _Irregular
    return _Raw(ts + lay.utc_offset_ns, cols, lay.header_lines + 1, [], aware)


def _parse_slow(path: str, text: str, lay: _Layout) -> _Raw:
    """Line-by-line parse. Rows with a bad cell become Problems and are left out of the result."""
    problems: list[Problem] = []
    value_idx = [(c, lay.index[c]) for c in _VALUE_COLUMNS if c in lay.index]
    out_vals: dict[str, list[float]] = {c: [] for c, _ in value_idx}
    out_ts: list[int] = []
    out_lines: list[int] = []
    aware_seen: set[bool] = set()
    need = max(lay.index.values()) + 1
    for no, raw in enumerate(text.split("\n"), 1):
        if no <= lay.header_lines:
            continue
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        try:
            cells = _split(line, lay.delimiter)
        except csv.Error as exc:
            problems.append(Problem(path, no, None, "bad_row", f"malformed CSV row ({exc})", _REPAIR_HINT))
            continue
        if len(cells) < need or len(cells) < lay.ncols:
            problems.append(
                Problem(
                    path,
                    no,
                    None,
                    "truncated_row",
                    f"truncated row: {len(cells)} of {lay.ncols} fields ({line[:60]!r})",
                    "the export was probably cut off: re-export the file, or delete the line "
                    "(policy='repair' drops it)",
                )
            )
            continue
        if len(cells) > lay.ncols:
            problems.append(
                Problem(
                    path,
                    no,
                    None,
                    "bad_row",
                    f"{len(cells)} fields where the header has {lay.ncols}",
                    "check the delimiter and quoting of this row; " + _REPAIR_HINT,
                )
            )
            continue
        bad = False
        vals: dict[str, float] = {}
        for canon, i in value_idx:
            cell = cells[i].strip().strip('"')
            if cell == "":
                problems.append(Problem(path, no, lay.labels[canon], "missing_value", "empty value", _REPAIR_HINT))
                bad = True
                continue
            try:
                vals[canon] = float(cell)
            except ValueError:
                problems.append(
                    Problem(path, no, lay.labels[canon], "bad_number", f"unparsable number {cell!r}", _REPAIR_HINT)
                )
                bad = True
        if "date" in lay.index:
            ttext = f"{cells[lay.index['date']].strip()} {cells[lay.index['clock']].strip()}"
        else:
            ttext = cells[lay.index["time"]].strip().strip('"')
        try:
            t = tp.strptime_ns(ttext, lay.time_format)
            if lay.time_format == "iso":
                aware_seen.add(bool(re.search(r"(?:Z|[+-]\d{2}:?\d{2})$", ttext)))
        except (ValueError, OverflowError):
            shown = "ISO 8601" if lay.time_format == "iso" else lay.time_format
            problems.append(
                Problem(
                    path,
                    no,
                    lay.labels["time"],
                    "bad_time",
                    f"unparsable time {ttext!r} (expected {shown})",
                    _REPAIR_HINT,
                )
            )
            bad = True
        if bad:
            continue
        out_ts.append(t)
        out_lines.append(no)
        for canon, _ in value_idx:
            out_vals[canon].append(vals[canon])
    aware = lay.time_format == "epoch" or aware_seen == {True}
    if aware_seen == {True, False}:
        problems.append(
            Problem(
                path,
                None,
                lay.labels["time"],
                "mixed_zones",
                "some times carry a zone offset and some do not",
                "write every time with its offset, or none",
            )
        )
    cols = {c: np.array(v, dtype=np.float64) for c, v in out_vals.items()}
    return _Raw(
        np.array(out_ts, dtype=np.int64) + lay.utc_offset_ns,
        cols,
        np.array(out_lines, np.int64),
        problems,
        aware,
    )


def _read_text(raw: bytes, path: str) -> tuple[str, bytes | None]:
    """Decode the file; returns the text and, when it had to be re-encoded, UTF-8 bytes for the fast path."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = raw.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise _error(
                path, None, None, "encoding", f"broken UTF-16 text ({exc})", "re-export the file as UTF-8 or ANSI"
            ) from exc
        return text, text.encode("utf-8")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
        recoded: bytes | None = raw
    else:
        recoded = None
    try:
        return raw.decode("utf-8"), recoded
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise _error(
            path,
            line,
            None,
            "encoding",
            f"byte {raw[exc.start]:#04x} is not UTF-8 text",
            "a bar file is text: check that this is the exported CSV and not another file",
        ) from exc


def _read_parquet(path: str) -> tuple[_Raw, dict[str, str], str]:
    import pandas as pd
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001
        raise _error(
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
    tcol = next((lower[a] for a in _TIME_NAMES if a in lower), None)
    if tcol is not None:
        times = pd.DatetimeIndex(pd.to_datetime(df[tcol]))
        labels["time"] = str(tcol)
    elif isinstance(df.index, pd.DatetimeIndex):
        times = df.index
        labels["time"] = str(df.index.name or "<index>")
    else:
        raise _error(
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
    for canon in _VALUE_COLUMNS:
        names = (canon,) if canon != "volume" else _VOLUME_NAMES
        src = next((lower[a] for a in names if a in lower), None)
        if src is None:
            continue
        labels[canon] = str(src)
        try:
            cols[canon] = df[src].to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise _error(
                path, None, str(src), "bad_number", f"non-numeric column ({exc})", "store prices and volume as numbers"
            ) from exc
    missing = [c for c in ("open", "high", "low", "close") if c not in cols]
    if missing:
        raise _error(
            path,
            None,
            None,
            "missing_column",
            f"no {'/'.join(missing)} column among {list(df.columns)}",
            "name the columns open, high, low, close (any case)",
        )
    if times.isna().any():
        bad = int(np.flatnonzero(times.isna())[0]) + 1
        raise BarDataError([Problem(path, bad, labels["time"], "bad_time", "missing time", _REPAIR_HINT, "row")])
    raw = _Raw(times.as_unit("ns").asi8, cols, 1, [], aware)
    return raw, labels, meta.get("fxgate.symbol", "")


# ----------------------------------------------------------------------------------------------------------------
# Zone handling, validation, repair, gaps
# ----------------------------------------------------------------------------------------------------------------
def _check_tz(tz: str | None) -> None:
    if tz is None:
        return
    import pandas as pd

    try:
        pd.Timestamp(0).tz_localize(tz)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(
            f"tz={tz!r} is not a known time zone; use an IANA name such as 'UTC' or 'Europe/Athens' (many MetaTrader "
            "servers run on EET/EEST)"
        ) from exc


def _localize(raw: _Raw, tz: str | None, path: str, unit: str, label: str) -> None:
    """Naive local times in ``tz`` -> UTC, in place. DST-gap and unresolvable DST-overlap times become problems."""
    if raw.aware or tz is None or tz.upper() in ("UTC", "GMT", "Z") or len(raw.ts) == 0:
        return
    import pandas as pd

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
    raw.ts = loc[keep].tz_convert("UTC").as_unit("ns").asi8
    raw.cols = {k: v[keep] for k, v in raw.cols.items()}
    raw.lines = raw.lines[keep]


def _bad_rows_py(o, h, lo, c, v, sp, out):  # type: ignore[no-untyped-def]
    """Twin of the row-check kernel: ``out[i]`` is True when row i fails any value check of :func:`_validate`
    (non-finite value, price <= 0, high below max(open, close), low above min(open, close), negative volume or
    spread). ``sp`` is empty when the file has no spread column."""
    has_sp = len(sp) > 0
    for i in range(len(o)):
        oi = o[i]
        hi = h[i]
        li = lo[i]
        ci = c[i]
        vi = v[i]
        ok = (
            np.isfinite(oi)
            and np.isfinite(hi)
            and np.isfinite(li)
            and np.isfinite(ci)
            and np.isfinite(vi)
            and oi > 0
            and hi > 0
            and li > 0
            and ci > 0
            and vi >= 0
            and hi >= max(oi, ci)
            and li <= min(oi, ci)
        )
        if ok and has_sp:
            ok = np.isfinite(sp[i]) and sp[i] >= 0
        out[i] = not ok


_bad_rows = kernel(_bad_rows_py, fastmath=False)


def _validate(raw: _Raw, labels: dict[str, str], path: str, unit: str) -> tuple[list[Problem], np.ndarray]:
    """Value checks. Returns problems and a per-row 'bad value' mask (order/duplicates not included).

    A compiled pass flags bad rows; only those are examined column by column to say what is wrong.
    """
    n = len(raw.ts)
    c = raw.cols
    flagged = np.zeros(n, dtype=np.bool_)
    _bad_rows(c["open"], c["high"], c["low"], c["close"], c["volume"], c.get("spread", np.zeros(0)), flagged)
    if not flagged.any():
        return [], flagged
    rows = np.flatnonzero(flagged)
    sub = _Raw(raw.ts[rows], {k: v[rows] for k, v in c.items()}, raw.lines[rows], [])
    probs_sub, bad_sub = _explain(sub, labels, path, unit)
    bad = np.zeros(n, dtype=bool)
    bad[rows[bad_sub]] = True
    return probs_sub, bad


def _explain(raw: _Raw, labels: dict[str, str], path: str, unit: str) -> tuple[list[Problem], np.ndarray]:
    """Column-by-column value checks (vectorized numpy) that name each problem."""
    n = len(raw.ts)
    probs: list[tuple[int, Problem]] = []
    bad = np.zeros(n, dtype=bool)
    lines = raw.lines

    def add(mask: np.ndarray, col: str, kind: str, msg_fn: object, fix: str) -> None:
        idx = np.flatnonzero(mask)
        bad[idx] = True
        for i in idx:
            probs.append((int(i), Problem(path, int(lines[i]), labels.get(col, col), kind, msg_fn(i), fix, unit)))

    c = raw.cols
    for col in _VALUE_COLUMNS:
        if col not in c:
            continue
        v = c[col]
        add(np.isnan(v), col, "nan", lambda i: "NaN value", _REPAIR_HINT)
        add(np.isinf(v), col, "inf", lambda i, v=v: f"infinite value ({float(v[i])})", _REPAIR_HINT)
    finite = np.ones(n, dtype=bool)
    for col in ("open", "high", "low", "close"):
        finite &= np.isfinite(c[col])
    for col in ("open", "high", "low", "close"):
        v = c[col]
        add(
            finite & (v <= 0),
            col,
            "nonpositive_price",
            lambda i, v=v: f"price {float(v[i])!r} is not positive",
            _REPAIR_HINT,
        )
    o, h, lo, cl = c["open"], c["high"], c["low"], c["close"]
    top = np.maximum(o, cl)
    bottom = np.minimum(o, cl)
    add(
        finite & (h < top),
        "high",
        "high_below_body",
        lambda i: f"high {float(h[i])!r} is below max(open, close) = {float(top[i])!r}",
        _REPAIR_HINT,
    )
    add(
        finite & (lo > bottom),
        "low",
        "low_above_body",
        lambda i: f"low {float(lo[i])!r} is above min(open, close) = {float(bottom[i])!r}",
        _REPAIR_HINT,
    )
    for col in ("volume", "spread"):
        if col in c:
            v = c[col]
            add(
                np.isfinite(v) & (v < 0),
                col,
                f"negative_{col}",
                lambda i, v=v, col=col: f"negative {col} {float(v[i])!r}",
                _REPAIR_HINT,
            )
    probs.sort(key=lambda t: t[0])
    return [p for _, p in probs], bad


def _order_problems(
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


def find_gaps(ts: np.ndarray, timeframe: str) -> tuple[list[Gap], int]:
    """Gaps inside trading sessions, and how many gaps were market closures (weekends, Christmas, New Year).

    A gap between bars ``t_i`` and ``t_{i+1}`` (spacing above the timeframe) is a closure when the missing span
    ``[t_i + tf, t_{i+1})`` lies inside one closure interval of :func:`fxgate.engine._calendar.closures`, with a
    tolerance of ``max(2 h, tf)`` at each end for brokers whose sessions start or stop a little off 17:00 NY.
    """
    if len(ts) < 2 or not timeframe:
        return [], 0
    tf = timeframe_seconds(timeframe) * NS
    d = np.diff(ts)
    gi = np.flatnonzero(d > tf)
    if len(gi) == 0:
        return [], 0
    tol = max(2 * cal.HOUR, tf)
    start_loc = cal.ny_local(ts[gi] + tf)
    end_loc = cal.ny_local(ts[gi + 1])
    a, b, _ = cal.closures(int(start_loc.min()), int(end_loc.max()))
    k = np.searchsorted(a - tol, start_loc, side="right") - 1
    k = np.clip(k, 0, len(a) - 1)
    closed = (start_loc >= a[k] - tol) & (end_loc <= b[k] + tol)
    gaps = [Gap(int(ts[i]), int(ts[i + 1]), int(d[i] // tf) - 1) for i in gi[~closed]]
    return gaps, int(closed.sum())


def _point_digits(prices: np.ndarray) -> int:
    """Decimal digits of a quote (5 for EURUSD 1.07160, 3 for USDJPY): the fewest that represent every price."""
    sample = prices[np.isfinite(prices)][:2000]
    for digits in range(0, 9):
        scaled = sample * 10**digits
        if np.all(np.abs(scaled - np.round(scaled)) <= 1e-9 * np.maximum(1.0, np.abs(scaled))):
            return digits
    return 8


_CURRENCIES = frozenset(
    "USD EUR JPY GBP CHF AUD NZD CAD SEK NOK DKK PLN HUF CZK TRY ZAR MXN SGD HKD CNH CNY RUB INR KRW THB ILS "
    "XAU XAG XPT XPD BTC ETH".split()
)


def _symbol_from_name(path: Path) -> str:
    """A currency pair named in the file name (``DAT_ASCII_EURUSD_M1_2017`` -> ``EURUSD``), else the stem."""
    letters = re.sub(r"[^A-Z]", " ", path.stem.upper())
    for m in re.finditer(r"(?=([A-Z]{6}))", letters):
        pair = m.group(1)
        if pair[:3] in _CURRENCIES and pair[3:] in _CURRENCIES and pair[:3] != pair[3:]:
            return pair
    return path.stem


def load_bars(
    path: str | Path,
    format: str = "auto",  # noqa: A002 - the issue's name for it
    symbol: str | None = None,
    tz: str | None = None,
    policy: Policy = "strict",
    *,
    _force_slow: bool = False,
) -> Bars:
    """Load one instrument's bars from CSV (any format in the module docstring) or Parquet.

    Args:
        path: the file.
        format: ``"auto"`` (default) or one of :data:`FORMATS`.
        symbol: instrument name; default: a 6-letter pair found in the file name (``EURUSD60.csv`` -> ``EURUSD``),
            else the file's stem, or the symbol stored in a Parquet file written by ``Bars.to_parquet``.
        tz: the zone of times that carry none (generic, mt4, mt5); default UTC. Not allowed for histdata and
            dukascopy, whose zone is fixed by the format.
        policy: ``"strict"`` raises :class:`BarDataError` listing every defect with its line; ``"repair"`` drops
            bad rows, keeps the first of duplicate times, sorts, and lists every change in ``bars.report``.

    Returns:
        :class:`Bars` with ``bars.report`` (a :class:`LoadReport`: format, counts, changes, session gaps).
    """
    if policy not in ("strict", "repair"):
        raise ValueError(f"policy={policy!r} is not allowed; use 'strict' (raise on bad rows) or 'repair'")
    if format not in ("auto", *FORMATS):
        raise ValueError(f"format={format!r} is not allowed; use 'auto' or one of {', '.join(FORMATS)}")
    _check_tz(tz)
    p = Path(path)
    spath = str(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(_HEAD_BYTES + 1)
    except FileNotFoundError:
        raise _error(
            spath,
            None,
            None,
            "missing_file",
            "no such file",
            "check the path (relative paths start from the current directory)",
        ) from None
    except OSError as exc:
        raise _error(
            spath, None, None, "unreadable", f"cannot read ({exc.strerror})", "check the path and its permissions"
        ) from None
    unit = "line"
    stored_symbol = ""
    notes: list[str] = []
    if head.startswith(b"PAR1") or format == "parquet":
        if not head.startswith(b"PAR1"):
            raise _unknown(spath, "no Parquet magic bytes", ("parquet",))
        raw, labels, stored_symbol = _read_parquet(spath)
        fmt_name, unit, spread_points = "parquet", "row", False
    else:
        text: str | None = None
        recoded: bytes | None = None
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 (some Windows exports): decode it all
            text, recoded = _read_text(p.read_bytes(), spath)
            head_text = text[:_HEAD_BYTES]
        else:
            cut = head[:_HEAD_BYTES]
            if len(head) > _HEAD_BYTES and b"\n" in cut:
                cut = cut[: cut.rindex(b"\n")]
            head_text, _ = _read_text(cut, spath)
        lay = _detect(spath, head_text, format)
        labels = lay.labels
        fmt_name, spread_points = lay.format, lay.spread_in_points
        if lay.fixed_zone and tz is not None:
            raise ValueError(f"tz={tz!r} given for a {fmt_name} file, whose zone the format fixes; leave tz unset")
        raw = None
        if not _force_slow:
            try:
                raw = _parse_fast(recoded if recoded is not None else spath, lay)
            except _Irregular:
                raw = None
        if raw is None:
            if text is None:
                text, _ = _read_text(p.read_bytes(), spath)
            raw = _parse_slow(spath, text, lay)
    _localize(raw, tz, spath, unit, labels.get("time", "time"))
    if "volume" not in raw.cols:
        raw.cols["volume"] = np.zeros(len(raw.ts))
        notes.append("no volume column: volume set to 0")
    rows_read = len(raw.ts) + len({p.line for p in raw.problems})
    value_probs, bad = _validate(raw, labels, spath, unit)
    if len(raw.ts) > 1 and not np.all(raw.ts[1:] > raw.ts[:-1]):
        order_probs, _, _ = _order_problems(raw.ts, raw.lines, spath, unit, labels.get("time", "time"))
    else:
        order_probs = []
    problems = sorted(raw.problems + value_probs + order_probs, key=lambda q: q.line or 0)
    changes: list[Change] = []
    if problems and (policy == "strict" or any(q.line is None for q in problems)):
        raise BarDataError(problems)
    if problems:  # repair
        dropped_lines = {q.line for q in raw.problems}
        for q in raw.problems:
            changes.append(Change(int(q.line or 0), "dropped", q.problem))
        # duplicates are judged among rows that survive the value checks
        for q in value_probs:
            if q.line not in dropped_lines:
                changes.append(Change(int(q.line or 0), "dropped", q.problem))
                dropped_lines.add(q.line)
        # duplicates and order are judged among the rows that survive the value checks
        keep = ~bad
        kept_probs, dup2, _ = _order_problems(raw.ts[keep], raw.lines[keep], spath, unit, "")
        drop = bad.copy()
        drop[np.flatnonzero(keep)[dup2]] = True
        for q in kept_probs:
            changes.append(Change(int(q.line or 0), "dropped" if q.kind == "duplicate_time" else "moved", q.problem))
        keep = ~drop
        raw.ts, raw.lines = raw.ts[keep], raw.lines[keep]
        raw.cols = {k: v[keep] for k, v in raw.cols.items()}
        order = np.argsort(raw.ts, kind="stable")
        raw.ts, raw.lines = raw.ts[order], raw.lines[order]
        raw.cols = {k: v[order] for k, v in raw.cols.items()}
        changes.sort(key=lambda ch: ch.line)
    if len(raw.ts) == 0:
        raise _error(
            spath,
            None,
            None,
            "empty",
            "no bars in the file" + (" after repair" if problems else ""),
            "export some bars into it",
        )
    spread = raw.cols.get("spread")
    if spread is not None and spread_points:
        digits = _point_digits(raw.cols["close"])
        spread = spread * 10.0**-digits
        notes.append(f"spread converted from points to price with point = 1e-{digits} ({digits}-digit quotes)")
    timeframe = infer_timeframe(raw.ts)
    gaps, closures = find_gaps(raw.ts, timeframe)
    report = LoadReport(spath, fmt_name, rows_read, len(raw.ts), timeframe, changes, gaps, closures, notes)
    return Bars(
        raw.ts,
        raw.cols["open"],
        raw.cols["high"],
        raw.cols["low"],
        raw.cols["close"],
        raw.cols["volume"],
        spread,
        symbol=symbol or stored_symbol or _symbol_from_name(p),
        timeframe=timeframe,
        report=report,
        _copy=False,
    )


def sample_path() -> Path:
    """Path of the bundled sample: real EURUSD H1 bars (2017-04-19 -> 2018-02-07, 5,000 bars, tick volume)
    shipped inside the ``backtesting`` package. Times are read as UTC."""
    import backtesting

    p = Path(backtesting.__file__).parent / "test" / "EURUSD.csv"
    if not p.exists():  # pragma: no cover - a broken backtesting install
        raise FileNotFoundError(f"{p} is missing: reinstall the 'backtesting' package (pip install backtesting)")
    return p


def sample_bars() -> Bars:
    """The real EURUSD H1 sample (5,000 bars) from the ``backtesting`` package, loaded strictly."""
    return load_bars(sample_path(), symbol="EURUSD")
