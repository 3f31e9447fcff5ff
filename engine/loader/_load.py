"""The loading pipeline behind :func:`load_bars`: read the bytes, detect the layout, parse, localize the times,
check, repair (or refuse), split a changing timeframe, find the session gaps, and hand back ``Bars`` with their
:class:`~fxgate.engine.loader.LoadReport`."""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from fxgate.engine.core.bars import Bars, infer_timeframe
from fxgate.engine.core.errors import BarDataError
from fxgate.engine.loader._checks import check_tz, localize, order_problems, value_problems
from fxgate.engine.loader._csv import Irregular, parse_fast, parse_slow
from fxgate.engine.loader._decode import GZIP_MAGIC, HEAD_BYTES, gunzip, read_text, refuse_container
from fxgate.engine.loader._layout import FORMATS, decimal_mark, detect, unknown_format
from fxgate.engine.loader._parquet import read_parquet
from fxgate.engine.loader._raw import Raw, data_error
from fxgate.engine.loader._repair import repair
from fxgate.engine.loader._report import LoadReport
from fxgate.engine.loader._spacing import find_gaps, split_timeframes

Policy = Literal["strict", "repair"]


def point_digits(prices: np.ndarray) -> int:
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


def symbol_from_name(path: Path) -> str:
    """A currency pair named in the file name (``DAT_ASCII_EURUSD_M1_2017`` -> ``EURUSD``), else the stem."""
    stem = Path(path.stem).stem if path.suffix.lower() in (".gz", ".gzip") else path.stem
    letters = re.sub(r"[^A-Z]", " ", stem.upper())
    for m in re.finditer(r"(?=([A-Z]{6}))", letters):
        pair = m.group(1)
        if pair[:3] in _CURRENCIES and pair[3:] in _CURRENCIES and pair[:3] != pair[3:]:
            return pair
    return stem


@dataclass(slots=True)
class _Parsed:
    """What reading and parsing a file gave: the rows, the column labels for messages, and what the report says."""

    raw: Raw
    labels: dict[str, str]
    format: str
    unit: str  # what a Problem's number counts: "line" (text) or "row" (Parquet)
    spread_in_points: bool
    symbol: str  # the symbol the file stores (Parquet written by Bars.to_parquet), else ""
    notes: list[str]


def _parse(
    p: Path, spath: str, fmt: str, tz: str | None, encoding: str | None, decimal: str | None, force_slow: bool
) -> _Parsed:
    """Read ``p`` and parse it with the layout its first lines show (arguments already checked by load_bars)."""
    try:
        with open(p, "rb") as fh:
            head = fh.read(HEAD_BYTES + 1)
    except FileNotFoundError:
        raise data_error(
            spath,
            None,
            None,
            "missing_file",
            "no such file",
            "check the path (relative paths start from the current directory)",
        ) from None
    except OSError as exc:
        raise data_error(
            spath, None, None, "unreadable", f"cannot read ({exc.strerror})", "check the path and its permissions"
        ) from None
    notes: list[str] = []
    data: bytes | None = None  # the decompressed content of a gzip file
    if head.startswith(GZIP_MAGIC):
        data = gunzip(spath, p.read_bytes())
        head = data[: HEAD_BYTES + 1]
        notes.append("gzip-compressed: decompressed in memory (line numbers count lines of the decompressed text)")
    refuse_container(spath, p, head)

    def whole() -> bytes:
        return data if data is not None else p.read_bytes()

    if head.startswith(b"PAR1") or fmt == "parquet":
        if not head.startswith(b"PAR1"):
            raise unknown_format(spath, "no Parquet magic bytes", ("parquet",))
        raw, labels, stored_symbol = read_parquet(spath, data)
        return _Parsed(raw, labels, "parquet", "row", False, stored_symbol, notes)
    text: str | None = None
    recoded: bytes | None = None
    if encoding is not None or head.startswith((b"\xff\xfe", b"\xfe\xff")):
        # a named codec, or UTF-16 (some Windows exports): decode it all
        text, recoded = read_text(whole(), spath, encoding)
        head_text = text[:HEAD_BYTES]
        if encoding is not None:
            notes.append(f"read as {encoding} text")
    else:
        cut = head[:HEAD_BYTES]
        if len(head) > HEAD_BYTES and b"\n" in cut:
            cut = cut[: cut.rindex(b"\n")]
        head_text, _ = read_text(cut, spath)
    lay = detect(spath, head_text, fmt)
    lay.decimal = decimal_mark(spath, head_text, lay, decimal)
    if lay.decimal == "," and decimal is None:
        notes.append("decimal comma detected (prices like '1,0716'): read as '1.0716'; pass decimal='.' to refuse")
    if lay.fixed_zone and tz is not None:
        raise ValueError(f"tz={tz!r} given for a {lay.format} file, whose zone the format fixes; leave tz unset")
    raw: Raw | None = None
    if not force_slow:
        try:
            raw = parse_fast(recoded if recoded is not None else (data if data is not None else spath), lay)
        except Irregular:
            raw = None
    if raw is None:
        if text is None:
            text, _ = read_text(whole(), spath)
        raw = parse_slow(spath, text, lay)
    return _Parsed(raw, lay.labels, lay.format, "line", lay.spread_in_points, "", notes)


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
    """Load one instrument's bars from CSV (any format of :mod:`fxgate.engine.loader`, optionally gzip-compressed) or
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
    check_tz(tz)
    p = Path(path)
    spath = str(path)
    parsed = _parse(p, spath, format, tz, encoding, decimal, _force_slow)
    raw, labels, unit, notes = parsed.raw, parsed.labels, parsed.unit, parsed.notes
    time_label = labels.get("time", "time")
    localize(raw, tz, spath, unit, time_label)
    if "volume" not in raw.cols:
        raw.cols["volume"] = np.zeros(len(raw.ts))
        notes.append("no volume column: volume set to 0")
    rows_read = len(raw.ts) + len({q.line for q in raw.problems})
    value_probs, bad = value_problems(raw, labels, spath, unit)
    if len(raw.ts) > 1 and not np.all(raw.ts[1:] > raw.ts[:-1]):
        order_probs, _, _ = order_problems(raw.ts, raw.lines, spath, unit, time_label)
    else:
        order_probs = []
    problems = sorted(raw.problems + value_probs + order_probs, key=lambda q: q.line or 0)
    if problems and (policy == "strict" or any(q.line is None for q in problems)):
        raise BarDataError(problems)
    changes = repair(raw, value_probs, bad, spath, unit) if problems else []
    if len(raw.ts) == 0:
        raise data_error(
            spath,
            None,
            None,
            "empty",
            "no bars in the file" + (" after repair" if problems else ""),
            "export some bars into it",
        )
    segments = split_timeframes(raw, spath, unit, time_label, policy, changes)
    spread = raw.cols.get("spread")
    if spread is not None and parsed.spread_in_points:
        digits = point_digits(raw.cols["close"])
        spread = spread * 10.0**-digits
        notes.append(f"spread converted from points to price with point = 1e-{digits} ({digits}-digit quotes)")
    timeframe = infer_timeframe(raw.ts)
    gaps, closures = find_gaps(raw.ts, timeframe)
    report = LoadReport(
        spath,
        parsed.format,
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
        symbol=symbol or parsed.symbol or symbol_from_name(p),
        timeframe=timeframe,
        report=report,
        _copy=False,
    )
