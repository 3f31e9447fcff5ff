"""Time parsing for bar files: a vectorized, validating fixed-width parser plus the per-row reference.

Bar files repeat one timestamp layout on every line, so for the common fixed-width layouts the characters can be
read as a ``(rows, width)`` byte matrix and turned into nanoseconds with integer arithmetic — an order of magnitude
faster than ``strptime`` per row, and strict: month 1-12, day within the month (``2017.02.30`` is rejected, unlike
Arrow's ``strptime``, which rolls it over to March 2), hour < 24, minute and second < 60.

Days from the civil date use H. Hinnant's ``days_from_civil`` algorithm
(https://howardhinnant.github.io/date_algorithms.html#days_from_civil).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import numpy as np

NS = 1_000_000_000
_TOKEN_WIDTH = {"Y": 4, "m": 2, "d": 2, "H": 2, "M": 2, "S": 2}
_TOKEN_RE = re.compile(r"%([YmdHMSf])|(%%)|([^%])")


def _tokens(fmt: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _TOKEN_RE.finditer(fmt):
        if m.start() != pos:
            raise ValueError(f"unsupported directive in time format {fmt!r}")
        pos = m.end()
        if m.group(1):
            out.append(("field", m.group(1)))
        else:
            out.append(("lit", "%" if m.group(2) else m.group(3)))
    if pos != len(fmt):
        raise ValueError(f"unsupported directive in time format {fmt!r}")
    return out


def fixed_width(fmt: str) -> int | None:
    """Width in characters of strings in ``fmt``, or None if ``fmt`` has no fixed width (``%f`` counts as 3)."""
    try:
        toks = _tokens(fmt)
    except ValueError:
        return None
    return sum(_TOKEN_WIDTH.get(v, 3) if k == "field" else 1 for k, v in toks)


def days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of the proleptic Gregorian date (y, m, d), vectorized (Hinnant)."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    mp = np.where(m > 2, m - 3, m + 9)
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


_MDAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def parse_fixed(chars: np.ndarray, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse a ``(n, width)`` uint8 matrix of ASCII timestamps laid out as ``fmt``.

    Supports ``%Y %m %d %H %M %S`` and a trailing ``%f`` (any number of fraction digits). Returns
    ``(ns, ok)``: naive nanoseconds since the epoch and a per-row validity mask (bad digits, bad literal, or
    out-of-range field). Rows that are not ok have undefined ``ns``.
    """
    n, width = chars.shape
    toks = _tokens(fmt)
    ok = np.ones(n, dtype=bool)
    fields: dict[str, np.ndarray] = {}
    pos = 0
    frac_ns = np.zeros(n, dtype=np.int64)
    for i, (kind, val) in enumerate(toks):
        if kind == "lit":
            if pos >= width:
                return np.zeros(n, np.int64), np.zeros(n, bool)
            ok &= chars[:, pos] == ord(val)
            pos += 1
            continue
        w = width - pos if val == "f" else _TOKEN_WIDTH[val]
        if val == "f" and i != len(toks) - 1:
            raise ValueError("%f must be the last directive")
        if pos + w > width or w <= 0:
            return np.zeros(n, np.int64), np.zeros(n, bool)
        digits = chars[:, pos : pos + w].astype(np.int64) - 48
        ok &= ((digits >= 0) & (digits <= 9)).all(axis=1)
        v = np.zeros(n, dtype=np.int64)
        for k in range(w):
            v = v * 10 + digits[:, k]
        if val == "f":
            scale = 10 ** (9 - w) if w <= 9 else None
            if scale is None:
                return np.zeros(n, np.int64), np.zeros(n, bool)
            frac_ns = v * scale
        else:
            fields[val] = v
        pos += w
    if pos != width:
        return np.zeros(n, np.int64), np.zeros(n, bool)
    y = fields.get("Y", np.full(n, 1970, np.int64))
    mo = fields.get("m", np.ones(n, np.int64))
    d = fields.get("d", np.ones(n, np.int64))
    hh = fields.get("H", np.zeros(n, np.int64))
    mi = fields.get("M", np.zeros(n, np.int64))
    ss = fields.get("S", np.zeros(n, np.int64))
    ok &= (mo >= 1) & (mo <= 12) & (d >= 1) & (hh < 24) & (mi < 60) & (ss < 60)
    mo_safe = np.clip(mo, 1, 12)
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    mdays = _MDAYS[mo_safe] + ((mo_safe == 2) & leap)
    ok &= d <= mdays
    days = days_from_civil(y, mo_safe, np.clip(d, 1, 31))
    ns = ((days * 24 + hh) * 60 + mi) * 60 + ss
    ns = ns * NS + frac_ns
    return ns, ok


def strptime_ns(text: str, fmt: str) -> int:
    """Reference single-value parser (the slow path): naive ns of ``text`` laid out as ``fmt`` or ISO 8601.

    ``fmt == "iso"`` accepts what :meth:`datetime.fromisoformat` accepts; a zone suffix is converted to UTC.
    ``fmt == "epoch"`` accepts an integer in s, ms, us or ns (by magnitude). Raises ValueError.
    """
    s = text.strip()
    if fmt == "epoch":
        if not s.isdigit():
            raise ValueError(f"not an integer epoch time: {text!r}")
        return epoch_to_ns(np.array([int(s)], dtype=np.int64))[0]
    if fmt == "iso":
        dt = datetime.fromisoformat(s)
    else:
        dt = datetime.strptime(s, fmt)
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    delta = dt - datetime(1970, 1, 1)
    return (delta.days * 86400 + delta.seconds) * NS + delta.microseconds * 1000


def epoch_unit_scale(first: int) -> int:
    """Multiplier to ns for an epoch integer, chosen by its magnitude (s, ms, us or ns)."""
    a = abs(int(first))
    if a < 10**11:
        return NS
    if a < 10**14:
        return 1_000_000
    if a < 10**17:
        return 1_000
    return 1


def epoch_to_ns(values: np.ndarray) -> np.ndarray:
    if len(values) == 0:
        return values.astype(np.int64)
    return values.astype(np.int64) * epoch_unit_scale(int(values[0]))


_ISO_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?$"
)
#: Non-ISO layouts the generic reader recognises, tried in order on the first value. Day-first and month-first
#: slash dates are deliberately absent: ``04/05/2017`` is ambiguous and a wrong guess shifts every bar.
KNOWN_FORMATS = (
    "%Y.%m.%d %H:%M:%S",
    "%Y.%m.%d %H:%M",
    "%Y.%m.%d",
    "%d.%m.%Y %H:%M:%S.%f",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y",
    "%Y%m%d %H%M%S",
    "%Y%m%d %H:%M:%S",
    "%Y%m%d",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
)


def sniff_time_format(value: str) -> str | None:
    """The layout of one timestamp: ``"epoch"``, ``"iso"``, a strptime format from KNOWN_FORMATS, or None."""
    s = value.strip()
    if s.isdigit() and 9 <= len(s) <= 19:
        return "epoch"
    if _ISO_RE.match(s):
        try:
            datetime.fromisoformat(s)
        except ValueError:
            return None
        return "iso"
    for fmt in KNOWN_FORMATS:
        try:
            datetime.strptime(s, fmt)
        except ValueError:
            continue
        return fmt
    return None


def iso_fixed_format(value: str) -> str | None:
    """A fixed-width strptime layout equivalent to the ISO value, when it has no zone offset other than Z."""
    s = value.strip()
    m = re.match(r"^\d{4}-\d{2}-\d{2}([ T])\d{2}:\d{2}(:\d{2})?(\.\d{1,9})?(Z?)$", s)
    if not m:
        if re.match(r"^\d{4}-\d{2}-\d{2}$", s):
            return "%Y-%m-%d"
        return None
    sep, sec, frac, z = m.groups()
    fmt = "%Y-%m-%d" + sep + "%H:%M" + (":%S" if sec else "")
    if frac:
        if not sec:
            return None
        fmt += ".%f"
        if z:
            return None  # %f must be last for the fixed parser
    return fmt + z
