"""Time parsing for bar files: a vectorized, validating fixed-width parser plus the per-row reference.

Bar files repeat one timestamp layout on every line, so for the common fixed-width layouts a compiled kernel reads
the characters straight out of the Arrow string buffer and turns them into nanoseconds with integer arithmetic —
an order of magnitude faster than ``strptime`` per row, and strict: month 1-12, day within the month
(``2017.02.30`` is rejected, unlike Arrow's ``strptime``, which rolls it over to March 2), hour < 24, minute and
second < 60.

Days from the civil date use H. Hinnant's ``days_from_civil`` algorithm
(https://howardhinnant.github.io/date_algorithms.html#days_from_civil).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from fxgate.engine.core.jit import kernel

NS = 1_000_000_000
#: int64 nanoseconds cover 1677-09-21 .. 2262-04-11; whole years inside that range are accepted.
MIN_YEAR, MAX_YEAR = 1678, 2261
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


#: Slots of a compiled layout's field arrays (``field_pos``, ``field_len``, the kernel's ``vals``): year, month, day,
#: hour, minute, second, fraction of a second.
_N_FIELDS = 7
_Y, _MO, _D, _H, _MI, _S, _F = range(_N_FIELDS)
_SLOT = {"Y": _Y, "m": _MO, "d": _D, "H": _H, "M": _MI, "S": _S, "f": _F}


def compile_format(fmt: str, frac_digits: int = 3) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A fixed-width layout as ``(width, field_pos, field_len, lit_pos, lit_val)``.

    ``field_pos[k]``/``field_len[k]`` locate field k (Y m d H M S f; -1/0 when absent); ``%f`` takes
    ``frac_digits`` digits. Literal characters must match exactly.
    """
    pos = np.full(_N_FIELDS, -1, dtype=np.int64)
    length = np.zeros(_N_FIELDS, dtype=np.int64)
    lit_pos: list[int] = []
    lit_val: list[int] = []
    at = 0
    for kind, val in _tokens(fmt):
        if kind == "lit":
            lit_pos.append(at)
            lit_val.append(ord(val))
            at += 1
        else:
            w = frac_digits if val == "f" else _TOKEN_WIDTH[val]
            pos[_SLOT[val]] = at
            length[_SLOT[val]] = w
            at += w
    return at, pos, length, np.array(lit_pos, dtype=np.int64), np.array(lit_val, dtype=np.uint8)


def _parse_fixed_py(data, offsets, width, field_pos, field_len, lit_pos, lit_val, out_ns, out_ok):  # type: ignore[no-untyped-def]
    """Reference twin of the compiled kernel. ``data``/``offsets`` are an Arrow string array's buffers.

    Writes naive ns since the epoch and a validity flag per row: right length, digits where digits belong, the
    literals in place, month 1-12, day within the month (leap years), hour < 24, minute and second < 60.
    Days from the civil date: H. Hinnant's ``days_from_civil``.
    """
    n = len(offsets) - 1
    has_date = field_pos[_Y] >= 0
    frac_scale = 1
    for _ in range(9 - field_len[_F]):
        frac_scale *= 10
    vals = np.zeros(_N_FIELDS, dtype=np.int64)
    # consecutive bars share their date: the calendar arithmetic (divisions) runs once per distinct date
    prev_key = -1
    prev_days = 0
    prev_date_ok = False
    for i in range(n):
        s = offsets[i]
        ok = (offsets[i + 1] - s) == width
        if ok:
            for j in range(len(lit_pos)):
                if data[s + lit_pos[j]] != lit_val[j]:
                    ok = False
        if ok:
            for k in range(_N_FIELDS):
                v = 0
                p = field_pos[k]
                if p >= 0:
                    for q in range(field_len[k]):
                        c = np.int64(data[s + p + q]) - 48
                        if c < 0 or c > 9:
                            ok = False
                        v = v * 10 + c
                vals[k] = v
        if not ok:
            out_ok[i] = False
            out_ns[i] = 0
            continue
        y = vals[_Y]
        mo = vals[_MO]
        d = vals[_D]
        days = 0
        key = (y * 100 + mo) * 100 + d
        if has_date and key == prev_key:
            days = prev_days
            ok = prev_date_ok
        elif has_date:
            if mo < 1 or mo > 12 or d < 1 or y < MIN_YEAR or y > MAX_YEAR:
                ok = False
            else:
                if mo == 2:
                    leap = (y % 4 == 0 and y % 100 != 0) or y % 400 == 0
                    mdays = 29 if leap else 28
                elif mo == 4 or mo == 6 or mo == 9 or mo == 11:
                    mdays = 30
                else:
                    mdays = 31
                if d > mdays:
                    ok = False
                yy = y - 1 if mo <= 2 else y  # y >= 0 here, so // is plain truncation
                era = yy // 400
                yoe = yy - era * 400
                mp = mo - 3 if mo > 2 else mo + 9
                doy = (153 * mp + 2) // 5 + d - 1
                doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
                days = era * 146097 + doe - 719468
            prev_key = key
            prev_days = days
            prev_date_ok = ok
        hh = vals[_H]
        mi = vals[_MI]
        ss = vals[_S]
        if hh > 23 or mi > 59 or ss > 59:
            ok = False
        out_ok[i] = ok
        out_ns[i] = ((((days * 24 + hh) * 60 + mi) * 60 + ss) * NS + vals[_F] * frac_scale) if ok else 0


_parse_fixed = kernel(_parse_fixed_py, fastmath=False)


def arrow_buffers(arr: object) -> tuple[np.ndarray, np.ndarray]:
    """``(data uint8, offsets int64)`` of an Arrow string array (chunks combined, slicing offset applied)."""
    a = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    if a.type == pa.large_string():
        off = np.frombuffer(a.buffers()[1], dtype=np.int64, count=len(a) + 1, offset=a.offset * 8)
    elif a.type == pa.string():
        off = np.frombuffer(a.buffers()[1], dtype=np.int32, count=len(a) + 1, offset=a.offset * 4).astype(np.int64)
    else:
        raise TypeError(f"expected an Arrow string array, got {a.type}")
    buf = a.buffers()[2]
    data = np.frombuffer(buf, dtype=np.uint8) if buf is not None else np.zeros(0, np.uint8)
    return data, off


def parse_fixed(arr: object, fmt: str, *, twin: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Parse an Arrow string array whose values are laid out as ``fmt`` (fixed width).

    Returns ``(ns, ok)``: naive nanoseconds since the epoch (for a time-of-day layout such as ``%H:%M``, since
    midnight) and a per-row validity mask. ``twin=True`` runs the pure-Python reference instead of the kernel.
    """
    data, off = arrow_buffers(arr)
    n = len(off) - 1
    frac_digits = 3
    if "%f" in fmt and n:
        first_len = int(off[1] - off[0])
        frac_digits = first_len - (fixed_width(fmt) or 0) + 3
        if not 1 <= frac_digits <= 9:
            return np.zeros(n, np.int64), np.zeros(n, bool)
    width, pos, length, lit_pos, lit_val = compile_format(fmt, frac_digits)
    out_ns = np.zeros(n, dtype=np.int64)
    out_ok = np.zeros(n, dtype=np.bool_)
    (_parse_fixed_py if twin else _parse_fixed)(data, off, width, pos, length, lit_pos, lit_val, out_ns, out_ok)
    return out_ns, out_ok


def strptime_ns(text: str, fmt: str) -> int:
    """Reference single-value parser (the slow path): naive ns of ``text`` laid out as ``fmt`` or ISO 8601.

    ``fmt == "iso"`` accepts what :meth:`datetime.fromisoformat` accepts; a zone suffix is converted to UTC.
    ``fmt == "epoch"`` accepts an integer in s, ms, us or ns (by magnitude). Raises ValueError.
    """
    s = text.strip()
    if fmt == "epoch":
        if not s.isdigit() or len(s) > 18:
            raise ValueError(f"not an integer epoch time: {text!r}")
        return int(s) * epoch_unit_scale(int(s))
    if fmt == "iso":
        dt = datetime.fromisoformat(s)
    else:
        dt = datetime.strptime(s, fmt)
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    if not MIN_YEAR <= dt.year <= MAX_YEAR:
        raise ValueError(f"year {dt.year} outside {MIN_YEAR}..{MAX_YEAR}")
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


_ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?$")
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
