"""What a bar file looks like: its format, delimiter, header, columns, time layout and decimal mark, read from its
first lines (:func:`detect`, :func:`decimal_mark`) into a :class:`Layout` the parsers follow."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass

from fxgate.engine.core.errors import BarDataError, Problem
from fxgate.engine.loader import _calendar as cal
from fxgate.engine.loader import _timeparse as tp
from fxgate.engine.loader._raw import data_error, split_row

FORMATS = ("generic", "mt4", "mt5", "histdata", "dukascopy", "parquet")


@dataclass(slots=True)
class Layout:
    """How to read one CSV-like bar file: what :func:`detect` (and :func:`decimal_mark`) found in its first lines."""

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

ZONE_RE = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})$")
_MT4_RE = re.compile(r"^\d{4}\.\d{2}\.\d{2},\d{1,2}:\d{2}(:\d{2})?,")
_HISTDATA_RE = re.compile(r"^\d{8} \d{6};")
TIME_NAMES = ("time", "timestamp", "datetime", "date_time", "date time", "gmt time", "utc time", "date")
VOLUME_NAMES = ("volume", "tick_volume", "tickvol", "tick volume", "tickvolume", "vol", "real_volume")
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


def _first_lines(text: str, k: int = 3) -> list[tuple[int, str]]:
    out = []
    for no, line in enumerate(text.splitlines(), 1):
        if line.strip():
            out.append((no, line))
            if len(out) == k:
                break
    return out


def unknown_format(path: str, detail: str, tried: tuple[str, ...] = FORMATS) -> BarDataError:
    listing = "; ".join(f"{f}: {_EXAMPLES[f]}" for f in tried)
    return data_error(
        path,
        1,
        None,
        "unknown_format",
        f"unknown bar file format ({detail}); formats tried: {listing}",
        "export the bars in one of these formats, or pass format=... to name it",
    )


def _generic_layout(path: str, header_no: int, header: str, first_row: str | None, fmt_name: str) -> Layout:
    delim = max((",", ";", "\t"), key=lambda d: len(header.split(d)))
    names = [c.strip().strip('"').strip() for c in split_row(header, delim)]
    lower = [c.lower() for c in names]
    if len(names) < 5:
        raise unknown_format(path, f"line {header_no} has {len(names)} field(s); a bar file needs at least 5")
    index: dict[str, int] = {}
    labels: dict[str, str] = {}
    for canon in ("open", "high", "low", "close"):
        if canon in lower:
            index[canon] = lower.index(canon)
    for alias in VOLUME_NAMES:
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
        for alias in TIME_NAMES:
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
        cells = split_row(first_row, delim)
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
        aware = sniffed == "iso" and bool(ZONE_RE.search(sample.strip()))
    else:
        aware = False
    return Layout(fmt_name, delim, header_no, len(names), index, labels, time_fmt, time_aware=aware)


def detect(path: str, text: str, fmt: str) -> Layout:
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
            raise unknown_format(path, f"MT5 header lacks {missing}", ("mt5",))
        labels = {v: k for k, v in _MT5_TAGS.items() if v in index}
        labels["time"] = "<DATE>+<TIME>" if "clock" in index else "<DATE>"
        if "clock" in index:
            cells = second.split(delim) if second else []
            clock = cells[index["clock"]] if len(cells) > index["clock"] else "00:00:00"
            time_fmt = "%Y.%m.%d %H:%M:%S" if clock.strip().count(":") == 2 else "%Y.%m.%d %H:%M"
        else:
            index["time"] = index.pop("date")
            time_fmt = "%Y.%m.%d"
        return Layout("mt5", delim, no, len(tags), index, labels, time_fmt, spread_in_points=True)
    if want("mt4") and _MT4_RE.match(head):
        clock = head.split(",")[1]
        time_fmt = "%Y.%m.%d %H:%M:%S" if clock.count(":") == 2 else "%Y.%m.%d %H:%M"
        names = ("date", "clock", "open", "high", "low", "close", "volume")
        return Layout(
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
        return Layout(
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
            raise unknown_format(
                path,
                f"line {no} {head[:60]!r} looks like data without a header; add a header such as "
                "'time,open,high,low,close,volume'",
            )
        if any(ch.isalpha() for ch in head) or head.startswith((",", ";", "\t")):
            return _generic_layout(path, no, head, second, "generic")
        raise unknown_format(path, f"line {no} {head[:60]!r} is neither a known headerless layout nor a header")
    raise unknown_format(path, f"line {no} {head[:60]!r} does not match format={fmt!r}", (fmt,))


COMMA_NUMBER = re.compile(r"^[+-]?\d+,\d+$")
DOT_NUMBER = re.compile(r"^[+-]?(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?$")
#: Data lines of the head whose price cells decide the decimal mark.
_DECIMAL_SAMPLE = 200
DECIMAL_FIX = "pass decimal=',' (CLI: --decimal ,) to read commas as the decimal mark, or re-export with '.' decimals"


def decimal_mark(path: str, head_text: str, lay: Layout, decimal: str | None) -> str:
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
            cells = split_row(line.rstrip("\r"), lay.delimiter)
        except csv.Error:
            continue
        for canon in ("open", "high", "low", "close"):
            i = lay.index[canon]
            if i < len(cells):
                sample.append((no, lay.labels.get(canon, canon), cells[i].strip().strip('"')))
        taken += 1
        if taken == _DECIMAL_SAMPLE:
            break
    commas = [c for c in sample if COMMA_NUMBER.match(c[2])]
    dots = [c for c in sample if DOT_NUMBER.match(c[2])]
    comma = commas[0] if commas else None
    dot = dots[0] if dots else None
    if decimal == ",":
        if dot is not None and comma is None:
            no, col, cell = dot
            raise data_error(
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
            raise data_error(
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
    raise data_error(
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
