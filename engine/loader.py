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

Any of these may be gzip-compressed (``EURUSD60.csv.gz``): gzip is recognised by its magic bytes, whatever the name,
and decompressed in memory; line numbers are those of the decompressed text. Zip archives, Excel workbooks and other
compressors are refused with the fix. Text is UTF-8 (with or without a BOM) or UTF-16 with a BOM unless
``encoding=`` names another codec (``"latin-1"``, ``"cp1252"``); a file that is not UTF-8 is refused with the line
and byte and that fix. Prices written with a decimal comma (``1,0716``, a European Excel export) are read when every
price cell of the first lines looks like ``1,0716`` (or is a whole number); ``decimal=","`` or ``decimal="."`` decides
it explicitly.

Times without a zone (generic, mt4, mt5) are read in ``tz`` (default UTC; MetaTrader servers usually run on
EET/EEST, e.g. ``tz="Europe/Athens"``) and converted to UTC. HistData and Dukascopy define their zone, so ``tz``
must be left unset for them.

A file whose bar spacing changes for good (H1 rows, then M15 rows) is refused naming the line where it changes; with
``policy="repair"`` the part with the most bars is kept and every row of the other parts is listed as dropped (see
:func:`timeframe_segments` for the rule).

Reading has two paths with one meaning. The fast path parses a well-formed file column-wise (Arrow CSV reader,
vectorized time parsing) and maps row ``i`` to file line ``i + 1 + header``. Anything irregular — a blank or
truncated line, an unparsable cell — sends the file to the slow path, which reads it line by line so that every
error carries the exact line an editor shows. Value checks (NaN/inf, prices, OHLC consistency, volume, duplicate or
out-of-order times) are vectorized and shared by both paths.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from fxgate.engine import _calendar as cal
from fxgate.engine import _timeparse as tp
from fxgate.engine.core.bars import NS, Bars, infer_timeframe, timeframe_seconds
from fxgate.engine.core.errors import BarDataError, Problem
from fxgate.engine.core.jit import kernel

__all__ = [
    "load_bars",
    "LoadReport",
    "Change",
    "Gap",
    "Segment",
    "FORMATS",
    "sample_bars",
    "sample_path",
    "timeframe_segments",
]

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


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of the file with one bar spacing, found when the timeframe changes mid-file (see
    :func:`timeframe_segments`). ``kept`` is whether ``policy="repair"`` kept its bars."""

    first_line: int
    last_line: int
    timeframe: str
    bars: int
    kept: bool

    def __str__(self) -> str:
        what = "kept" if self.kept else "dropped"
        return f"lines {self.first_line}-{self.last_line}: {self.bars} {self.timeframe} bars ({what})"


def _line_ranges(lines: list[int]) -> list[list[int]]:
    """``[3, 4, 5, 9]`` -> ``[[3, 5], [9, 9]]`` (sorted, inclusive ranges)."""
    out: list[list[int]] = []
    for x in sorted(set(lines)):
        if out and x == out[-1][1] + 1:
            out[-1][1] = x
        else:
            out.append([x, x])
    return out


def _iso(ts: int) -> str:
    return str(np.datetime_as_string(np.datetime64(int(ts), "ns"), unit="s")) + "Z"


#: Actions ``policy="repair"`` takes; a repair never edits a value, so there is no "fixed" action.
REPAIR_ACTIONS = ("dropped", "moved")


@dataclass(slots=True)
class LoadReport:
    """What :func:`load_bars` read, changed and noticed. :meth:`to_dict` is its JSON form (for metrics files and
    reports); :meth:`summary` its text form (for a console)."""

    path: str
    format: str
    rows_read: int = 0
    rows_kept: int = 0
    timeframe: str = ""
    changes: list[Change] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    closures: int = 0
    notes: list[str] = field(default_factory=list)
    policy: str = "strict"
    #: the timeframe segments when the spacing changed mid-file (repair only; strict raises); else empty
    segments: list[Segment] = field(default_factory=list)

    @property
    def repaired(self) -> bool:
        """True when ``policy="repair"`` changed anything (the bars differ from the file's rows)."""
        return bool(self.changes)

    def counts(self) -> dict[str, int]:
        """Rows per repair action: ``{"dropped": n, "moved": m}`` (moved = out of order, sorted into place)."""
        return {a: sum(1 for c in self.changes if c.action == a) for a in REPAIR_ACTIONS}

    def to_dict(self, max_items: int | None = None) -> dict[str, object]:
        """The report as plain JSON types (``json.dumps`` takes it as is).

        ``repairs`` holds the count and the line ranges (``[[first, last], ...]``, complete) of every action;
        ``changes`` and ``gaps`` list the details, the first ``max_items`` of each when given, with
        ``changes_omitted``/``gaps_omitted`` saying how many were left out.
        """
        cut = (lambda xs: xs) if max_items is None else (lambda xs: xs[: max(0, max_items)])
        changes = cut(self.changes)
        gaps = cut(self.gaps)
        by_action = {a: [c.line for c in self.changes if c.action == a] for a in REPAIR_ACTIONS}
        return {
            "path": self.path,
            "format": self.format,
            "policy": self.policy,
            "rows_read": int(self.rows_read),
            "rows_kept": int(self.rows_kept),
            "timeframe": self.timeframe,
            "repaired": self.repaired,
            "repairs": {a: {"count": len(v), "lines": _line_ranges(v)} for a, v in by_action.items()},
            "changes": [{"line": int(c.line), "action": c.action, "reason": c.reason} for c in changes],
            "changes_omitted": len(self.changes) - len(changes),
            "timeframe_segments": [
                {
                    "first_line": g.first_line,
                    "last_line": g.last_line,
                    "timeframe": g.timeframe,
                    "bars": g.bars,
                    "kept": g.kept,
                }
                for g in self.segments
            ],
            "gaps": [
                {
                    "after": _iso(g.after_ts),
                    "before": _iso(g.before_ts),
                    "after_ts": int(g.after_ts),
                    "before_ts": int(g.before_ts),
                    "missing_bars": int(g.missing_bars),
                }
                for g in gaps
            ],
            "gaps_total": len(self.gaps),
            "gaps_omitted": len(self.gaps) - len(gaps),
            "missing_bars": int(sum(g.missing_bars for g in self.gaps)),
            "closures": int(self.closures),
            "notes": list(self.notes),
        }

    def summary(self, max_items: int = 10) -> str:
        out = [
            f"{self.path}: format {self.format}, {self.rows_read} rows read, {self.rows_kept} bars kept, "
            f"timeframe {self.timeframe or '?'}"
        ]
        out += [f"  note: {n}" for n in self.notes]
        if self.segments:
            out.append(f"  timeframe changes mid-file: {len(self.segments)} parts")
            out += [f"    {g}" for g in self.segments]
        if self.changes:
            counts = self.counts()
            ranges = {a: _line_ranges([c.line for c in self.changes if c.action == a]) for a in REPAIR_ACTIONS}
            parts = []
            for a in REPAIR_ACTIONS:
                if counts[a]:
                    shown = ", ".join(f"{x}" if x == y else f"{x}-{y}" for x, y in ranges[a][:max_items])
                    more = " ..." if len(ranges[a]) > max_items else ""
                    parts.append(f"{counts[a]} {a} (lines {shown}{more})")
            out.append(f"  repaired: {len(self.changes)} row(s): " + "; ".join(parts))
            out += [f"    {c}" for c in self.changes[:max_items]]
            if len(self.changes) > max_items:
                out.append(f"    ... and {len(self.changes) - max_items} more")
        elif self.policy == "repair":
            out.append("  repaired: nothing to repair")
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
    decimal: str = "."  # decimal mark of the value cells ("," for European exports)


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


def _error(
    path: str, line: int | None, column: str | None, kind: str, problem: str, fix: str, unit: str = "line"
) -> BarDataError:
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


_COMMA_NUMBER = re.compile(r"^[+-]?\d+,\d+$")
_DOT_NUMBER = re.compile(r"^[+-]?(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?$")
#: Data lines of the head whose price cells decide the decimal mark.
_DECIMAL_SAMPLE = 200
_DECIMAL_FIX = "pass decimal=',' (CLI: --decimal ,) to read commas as the decimal mark, or re-export with '.' decimals"


def _decimal_mark(path: str, head_text: str, lay: _Layout, decimal: str | None) -> str:
    """The decimal mark of the value cells: ``decimal`` when given, else sniffed from the price cells of the first
    data lines. A comma is chosen when that is unambiguous: some sampled price cell is ``\\d+,\\d+`` and none is
    written with a decimal point (whole numbers read alike either way; an unparsable cell is left to the per-cell
    checks). A file the mark cannot read is refused here, in one message, instead of one error per cell."""
    sample: list[tuple[int, str, str]] = []  # (line, column label, cell)
    taken = 0
    for no, line in enumerate(head_text.split("\n"), 1):
        if no <= lay.header_lines or not line.strip():
            continue
        try:
            cells = _split(line.rstrip("\r"), lay.delimiter)
        except csv.Error:
            continue
        for canon in ("open", "high", "low", "close"):
            i = lay.index[canon]
            if i < len(cells):
                sample.append((no, lay.labels.get(canon, canon), cells[i].strip().strip('"')))
        taken += 1
        if taken == _DECIMAL_SAMPLE:
            break
    commas = [c for c in sample if _COMMA_NUMBER.match(c[2])]
    dots = [c for c in sample if _DOT_NUMBER.match(c[2])]
    comma = commas[0] if commas else None
    dot = dots[0] if dots else None
    if decimal == ",":
        if dot is not None and comma is None:
            no, col, cell = dot
            raise _error(
                path,
                no,
                col,
                "decimal_mark",
                f"decimal=',' was given, but prices use '.' ({cell!r})",
                "leave decimal unset, or pass decimal='.' (CLI: --decimal .)",
            )
        return ","
    if decimal == ".":
        if comma is not None and dot is None:
            no, col, cell = comma
            raise _error(
                path,
                no,
                col,
                "decimal_mark",
                f"decimal='.' was given, but prices use a decimal comma ({cell!r})",
                "pass decimal=',' (CLI: --decimal ,), or re-export with '.' decimals",
            )
        return "."
    if comma is None:
        return "."
    if dot is None:
        return ","
    no, col, _ = min(comma, dot)
    raise _error(
        path,
        no,
        col,
        "decimal_mark",
        f"the decimal mark is ambiguous: in the first {taken} data lines {len(commas)} price cell(s) use a decimal "
        f"comma (first: line {comma[0]} column '{comma[1]}' {comma[2]!r}) and {len(dots)} a decimal point (first: "
        f"line {dot[0]} column '{dot[1]}' {dot[2]!r})",
        "make the cells agree, or choose the mark with decimal=',' or decimal='.' (CLI: --decimal , or --decimal .); "
        "cells written with the other mark are then reported one by one",
    )


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
        # a path is opened without compression: Arrow would otherwise decompress by the name (.gz, .bz2), and the
        # bytes of a gzip file arrive here already decompressed
        stream = io.BytesIO(source) if isinstance(source, bytes) else pa.input_stream(source, compression=None)
        table = pcsv.read_csv(
            stream,
            read_options=pcsv.ReadOptions(skip_rows=lay.header_lines, column_names=names, block_size=1 << 22),
            parse_options=pcsv.ParseOptions(delimiter=lay.delimiter, ignore_empty_lines=False),
            convert_options=pcsv.ConvertOptions(
                column_types=types,
                include_columns=list(types),
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
                decimal_point=lay.decimal,
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


def _number(cell: str, decimal: str) -> float:
    """One value cell as a float, with ``decimal`` as the decimal mark (the other mark is not accepted)."""
    if decimal == ",":
        if "." in cell:
            raise ValueError(cell)
        cell = cell.replace(",", ".", 1)
    elif "," in cell:
        raise ValueError(cell)
    return float(cell)


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
                vals[canon] = _number(cell, lay.decimal)
            except ValueError:
                if lay.decimal == "." and _COMMA_NUMBER.match(cell):
                    fix = "this looks like a decimal comma: " + _DECIMAL_FIX + "; or " + _REPAIR_HINT
                elif lay.decimal == "," and _DOT_NUMBER.match(cell):
                    fix = "decimal=',' reads '1,0716', not '1.0716': write this value with a comma; or " + _REPAIR_HINT
                else:
                    fix = _REPAIR_HINT
                problems.append(Problem(path, no, lay.labels[canon], "bad_number", f"unparsable number {cell!r}", fix))
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


_ENCODING_FIX = (
    "pass the file's encoding, e.g. encoding='latin-1' or 'cp1252' for a Windows export (CLI: --encoding latin-1), "
    "or re-save the file as UTF-8"
)


def _where(raw: bytes, at: int) -> tuple[int, int, str]:
    """Line (1-based) and byte within the line (1-based) of byte offset ``at``, and the text around it with the
    byte shown as ``<0x..>``."""
    line = raw.count(b"\n", 0, at) + 1
    start = raw.rfind(b"\n", 0, at) + 1
    end = raw.find(b"\n", at)
    end = len(raw) if end < 0 else end
    before = raw[max(start, at - 40) : at].decode("utf-8", "replace")
    after = raw[at + 1 : min(end, at + 21)].rstrip(b"\r").decode("utf-8", "replace")
    return line, at - start + 1, f"{before}<{raw[at]:#04x}>{after}"


def _read_text(raw: bytes, path: str, encoding: str | None = None) -> tuple[str, bytes | None]:
    """Decode the file; returns the text and, when it had to be re-encoded, UTF-8 bytes for the fast path.

    ``encoding=None`` reads UTF-8 (a BOM is dropped) or UTF-16 with a BOM; any other codec must be named."""
    if encoding is not None:
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            line, col, shown = _where(raw, exc.start)
            raise _error(
                path,
                line,
                None,
                "encoding",
                f"byte {col} of the line ({raw[exc.start]:#04x}, file offset {exc.start}) is not {encoding} text "
                f"(here: {shown!r})",
                "check encoding= (CLI: --encoding): leave it unset for UTF-8, or name the codec the file was saved "
                "with",
            ) from exc
        text = text.removeprefix("\ufeff")
        return text, text.encode("utf-8")
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
        line, col, shown = _where(raw, exc.start)
        offset = exc.start + (3 if recoded is not None else 0)
        byte = raw[exc.start]
        if b"\x00" in raw[:_HEAD_BYTES]:  # NUL bytes: not a text export at all
            raise _error(
                path,
                line,
                None,
                "encoding",
                f"byte {col} of the line ({byte:#04x}, file offset {offset}) is not UTF-8 text, and the file holds NUL "
                "bytes: it is not a text file",
                "a bar file is text (CSV) or Parquet: check that this is the exported file and not another one",
            ) from exc
        guess = bytes([byte]).decode("cp1252", "replace")
        raise _error(
            path,
            line,
            None,
            "encoding",
            f"byte {col} of the line ({byte:#04x}, file offset {offset}) is not UTF-8 text: the file was saved in "
            f"another encoding ({byte:#04x} is {guess!r} in Windows-1252/latin-1), here: {shown!r}",
            _ENCODING_FIX,
        ) from exc


def _read_parquet(path: str, data: bytes | None = None) -> tuple[_Raw, dict[str, str], str]:
    """Read ``path`` (or ``data``, its decompressed bytes) as Parquet."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path if data is None else pa.BufferReader(data))
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


#: A bar spacing is a file's timeframe once this many consecutive spacings are equal (13 evenly spaced bars).
REGIME_RUN = 12


def timeframe_segments(ts: np.ndarray, min_run: int = REGIME_RUN) -> list[tuple[int, int, int]]:
    """Parts of ``ts`` (sorted, distinct, ns) that have different bar spacings, as ``[(first, stop, step_ns), ...]``
    (row ranges ``[first, stop)`` in order), or ``[]`` when the series keeps one spacing throughout.

    A spacing is established by a run of ``min_run`` consecutive equal differences. Weekends, holidays and missing
    bars interrupt runs of the file's spacing but do not make runs of their own (a gap is one long difference, and
    12 in a row of exactly the same multiple is what a coarser export looks like), so a clean file has runs of one
    step only. A new part begins where a run of another step begins; the bar both runs share (the last bar of the
    old spacing, from which the first new spacing is measured) stays with the earlier part. Daily bars, whose runs
    the weekend breaks every five bars, never establish a spacing and so are never split.
    """
    n = len(ts)
    if n <= min_run:
        return []
    d = np.diff(np.asarray(ts, dtype=np.int64))
    cut = np.flatnonzero(d[1:] != d[:-1]) + 1
    starts = np.r_[0, cut]
    stops = np.r_[cut, len(d)]
    long = (stops - starts) >= min_run
    run_a, run_b = starts[long], stops[long]  # run k covers differences [a, b), i.e. bars a..b
    steps = d[run_a]
    if len(steps) == 0 or bool(np.all(steps == steps[0])):
        return []
    parts: list[tuple[int, int, int]] = []
    first, step, last_bar = 0, int(steps[0]), int(run_b[0])
    for a, b, s in zip(run_a[1:].tolist(), run_b[1:].tolist(), steps[1:].tolist(), strict=True):
        if s != step:
            begin = a + 1 if a == last_bar else a
            parts.append((first, begin, step))
            first, step = begin, s
        last_bar = b
    parts.append((first, n, step))
    return parts


def _step_words(step_ns: int) -> str:
    secs = step_ns // NS
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if secs % size == 0:
            k = secs // size
            return f"{k} {unit}{'s' if k != 1 else ''}"
    return f"{step_ns / NS:g} seconds"


def _split_timeframes(raw: _Raw, path: str, unit: str, label: str, policy: str, changes: list[Change]) -> list[Segment]:
    """Refuse (strict) or cut to its largest part (repair) a series whose timeframe changes mid-file."""
    parts = timeframe_segments(raw.ts)
    if not parts:
        return []
    lines = raw.lines
    names = [infer_timeframe(np.array([0, step], dtype=np.int64)) for _, _, step in parts]
    span = [(int(lines[a:b].min()), int(lines[a:b].max())) for a, b, _ in parts]
    keep = int(np.argmax([b - a for a, b, _ in parts]))
    kept = f"the {names[keep]} part, {unit}s {span[keep][0]}-{span[keep][1]} ({parts[keep][1] - parts[keep][0]} bars)"
    if policy == "strict":
        problems = []
        for k in range(1, len(parts)):
            a = parts[k][0]
            problems.append(
                Problem(
                    path,
                    int(lines[a]),
                    label,
                    "timeframe_change",
                    f"the timeframe changes here: {unit}s {span[k - 1][0]}-{span[k - 1][1]} are {names[k - 1]} bars "
                    f"({_step_words(parts[k - 1][2])} apart), {unit}s {span[k][0]}-{span[k][1]} are {names[k]} bars "
                    f"({_step_words(parts[k][2])} apart); one file must hold one timeframe",
                    f"split the file before {unit} {int(lines[a])} (one timeframe per file), or load with "
                    f"policy='repair' (CLI: --policy repair) to keep {kept}, and drop the rest",
                    unit,
                )
            )
        raise BarDataError(problems)
    for k, (a, b, _) in enumerate(parts):
        if k == keep:
            continue
        why = (
            f"{names[k]} bar in a file that changes timeframe ({unit}s {span[k][0]}-{span[k][1]} are "
            f"{names[k]}); kept {kept}"
        )
        changes.extend(Change(int(line), "dropped", why) for line in lines[a:b])
    a, b, _ = parts[keep]
    raw.ts, raw.lines = raw.ts[a:b], raw.lines[a:b]
    raw.cols = {c: v[a:b] for c, v in raw.cols.items()}
    changes.sort(key=lambda ch: ch.line)
    return [Segment(span[k][0], span[k][1], names[k], b - a, k == keep) for k, (a, b, _) in enumerate(parts)]


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
    stem = Path(path.stem).stem if path.suffix.lower() in (".gz", ".gzip") else path.stem
    letters = re.sub(r"[^A-Z]", " ", stem.upper())
    for m in re.finditer(r"(?=([A-Z]{6}))", letters):
        pair = m.group(1)
        if pair[:3] in _CURRENCIES and pair[3:] in _CURRENCIES and pair[:3] != pair[3:]:
            return pair
    return stem


_GZIP_MAGIC = b"\x1f\x8b"
_READS = "fxgate reads CSV, gzip-compressed CSV (.csv.gz) and Parquet directly"
#: (magic bytes, what the file is, what to do) for containers fxgate does not open itself
_CONTAINERS = (
    (b"\xfd7zXZ\x00", "xz-compressed", "decompress it (unxz FILE)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", "extract the CSV from it"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "decompress it (unzstd FILE)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a legacy Excel workbook (.xls)", "save the sheet as CSV in Excel"),
)


def _refuse_container(path: str, p: Path, head: bytes) -> None:
    """An archive, another compressor or a spreadsheet is refused with what it is and what to do."""
    what = fix = ""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        import zipfile

        try:
            with zipfile.ZipFile(p) as z:
                members = z.namelist()
        except (zipfile.BadZipFile, OSError):
            members = []
        if any(m.startswith("xl/") for m in members):
            what, fix = "an Excel workbook (.xlsx)", "save the sheet as CSV in Excel (File > Save As > CSV UTF-8)"
        else:
            shown = ", ".join(members[:5]) + (f" and {len(members) - 5} more" if len(members) > 5 else "")
            what = f"a zip archive ({shown or 'unreadable member list'})"
            fix = "extract the bar file from it (unzip FILE) and pass that"
    elif head.startswith(b"BZh") and head[3:4].isdigit() and head[4:10] in (b"1AY&SY", b"\x17rE8P"):
        what, fix = "bzip2-compressed", "decompress it (bunzip2 FILE)"
    else:
        for magic, what_, fix_ in _CONTAINERS:
            if head.startswith(magic):
                what, fix = what_, fix_
                break
    if what:
        raise _error(path, None, None, "container", f"the file is {what}, not a bar file", f"{fix}; {_READS}")


def _gunzip(path: str, raw: bytes) -> bytes:
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a cut-off file is an EOFError
        raise _error(
            path,
            None,
            None,
            "bad_gzip",
            f"gzip-compressed, but it does not decompress ({exc or type(exc).__name__})",
            "the file is probably cut off or damaged: copy or download it again (gzip -t FILE checks it), or "
            "decompress it yourself and pass the CSV",
        ) from exc


def load_bars(
    path: str | Path,
    format: str = "auto",  # noqa: A002 - the issue's name for it
    symbol: str | None = None,
    tz: str | None = None,
    policy: Policy = "strict",
    *,
    encoding: str | None = None,
    decimal: str | None = None,
    _force_slow: bool = False,
) -> Bars:
    """Load one instrument's bars from CSV (any format in the module docstring, optionally gzip-compressed) or
    Parquet.

    Args:
        path: the file.
        format: ``"auto"`` (default) or one of :data:`FORMATS`.
        symbol: instrument name; default: a 6-letter pair found in the file name (``EURUSD60.csv`` -> ``EURUSD``),
            else the file's stem, or the symbol stored in a Parquet file written by ``Bars.to_parquet``.
        tz: the zone of times that carry none (generic, mt4, mt5); default UTC. Not allowed for histdata and
            dukascopy, whose zone is fixed by the format.
        policy: ``"strict"`` raises :class:`BarDataError` listing every defect with its line; ``"repair"`` drops
            bad rows, keeps the first of duplicate times, sorts, keeps the largest part of a file whose timeframe
            changes, and lists every change in ``bars.report``.
        encoding: the text encoding of a CSV file (any Python codec name, e.g. ``"latin-1"``, ``"cp1252"``);
            default: UTF-8 (with or without a BOM) or UTF-16 with a BOM.
        decimal: the decimal mark of the value cells, ``"."`` or ``","``; default (``None`` or ``"auto"``): ``","``
            when the first lines' price cells are written ``1,0716`` and none with a point, else ``"."``.

    Returns:
        :class:`Bars` with ``bars.report`` (a :class:`LoadReport`: format, counts, changes, session gaps;
        ``bars.report.to_dict()`` is its JSON form).
    """
    if policy not in ("strict", "repair"):
        raise ValueError(f"policy={policy!r} is not allowed; use 'strict' (raise on bad rows) or 'repair'")
    if format not in ("auto", *FORMATS):
        raise ValueError(f"format={format!r} is not allowed; use 'auto' or one of {', '.join(FORMATS)}")
    if decimal == "auto":
        decimal = None
    if decimal not in (None, ".", ","):
        raise ValueError(f"decimal={decimal!r} is not allowed; use '.', ',' or leave it unset to detect it")
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(
                f"encoding={encoding!r} is not a known text encoding; use a Python codec name such as 'utf-8', "
                "'latin-1', 'cp1252' or 'utf-16'"
            ) from None
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
    data: bytes | None = None  # the decompressed content of a gzip file
    if head.startswith(_GZIP_MAGIC):
        data = _gunzip(spath, p.read_bytes())
        head = data[: _HEAD_BYTES + 1]
        notes.append("gzip-compressed: decompressed in memory (line numbers count lines of the decompressed text)")
    _refuse_container(spath, p, head)

    def whole() -> bytes:
        return data if data is not None else p.read_bytes()

    if head.startswith(b"PAR1") or format == "parquet":
        if not head.startswith(b"PAR1"):
            raise _unknown(spath, "no Parquet magic bytes", ("parquet",))
        raw, labels, stored_symbol = _read_parquet(spath, data)
        fmt_name, unit, spread_points = "parquet", "row", False
    else:
        text: str | None = None
        recoded: bytes | None = None
        if encoding is not None or head.startswith((b"\xff\xfe", b"\xfe\xff")):
            # a named codec, or UTF-16 (some Windows exports): decode it all
            text, recoded = _read_text(whole(), spath, encoding)
            head_text = text[:_HEAD_BYTES]
            if encoding is not None:
                notes.append(f"read as {encoding} text")
        else:
            cut = head[:_HEAD_BYTES]
            if len(head) > _HEAD_BYTES and b"\n" in cut:
                cut = cut[: cut.rindex(b"\n")]
            head_text, _ = _read_text(cut, spath)
        lay = _detect(spath, head_text, format)
        lay.decimal = _decimal_mark(spath, head_text, lay, decimal)
        if lay.decimal == "," and decimal is None:
            notes.append("decimal comma detected (prices like '1,0716'): read as '1.0716'; pass decimal='.' to refuse")
        labels = lay.labels
        fmt_name, spread_points = lay.format, lay.spread_in_points
        if lay.fixed_zone and tz is not None:
            raise ValueError(f"tz={tz!r} given for a {fmt_name} file, whose zone the format fixes; leave tz unset")
        raw = None
        if not _force_slow:
            try:
                raw = _parse_fast(recoded if recoded is not None else (data if data is not None else spath), lay)
            except _Irregular:
                raw = None
        if raw is None:
            if text is None:
                text, _ = _read_text(whole(), spath)
            raw = _parse_slow(spath, text, lay)
    time_label = labels.get("time", "time")
    _localize(raw, tz, spath, unit, time_label)
    if "volume" not in raw.cols:
        raw.cols["volume"] = np.zeros(len(raw.ts))
        notes.append("no volume column: volume set to 0")
    rows_read = len(raw.ts) + len({p.line for p in raw.problems})
    value_probs, bad = _validate(raw, labels, spath, unit)
    if len(raw.ts) > 1 and not np.all(raw.ts[1:] > raw.ts[:-1]):
        order_probs, _, _ = _order_problems(raw.ts, raw.lines, spath, unit, time_label)
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
    segments = _split_timeframes(raw, spath, unit, time_label, policy, changes)
    spread = raw.cols.get("spread")
    if spread is not None and spread_points:
        digits = _point_digits(raw.cols["close"])
        spread = spread * 10.0**-digits
        notes.append(f"spread converted from points to price with point = 1e-{digits} ({digits}-digit quotes)")
    timeframe = infer_timeframe(raw.ts)
    gaps, closures = find_gaps(raw.ts, timeframe)
    report = LoadReport(
        spath,
        fmt_name,
        rows_read,
        len(raw.ts),
        timeframe,
        changes,
        gaps,
        closures,
        notes,
        policy=policy,
        segments=segments,
    )
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
