"""The bar validation rules, in one place: what makes a bar's values acceptable to fxgate.

A bar is valid when

* every value (open, high, low, close, volume and, when present, spread) is finite;
* every price (open, high, low, close) is > 0;
* volume >= 0 and spread >= 0 (or absent);
* high >= max(open, close) and low <= min(open, close): the range contains the body.

Three forms of the same rules, for the two places that check bars:

* :func:`bar_fault` — one bar of Python floats, the first broken rule as the message the gate refuses it with;
* :func:`bad_rows` — a whole file's columns, one compiled pass, a per-row "breaks some rule" mask (the loader's
  fast check: clean files stop here);
* :func:`row_faults` — the same columns rule by rule: a :class:`Fault` (column, kind, row mask) per rule, which the
  loader turns into one Problem per bad cell. Kinds are :data:`FAULT_KINDS`.

The tests check that the three agree on every bar (tests/engine/test_validation.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fxgate.engine.core.jit import kernel

__all__ = ["FAULT_KINDS", "Fault", "bar_fault", "bad_rows", "row_faults"]

PRICES = ("open", "high", "low", "close")
VALUES = (*PRICES, "volume", "spread")

#: What a value fault is called in the loader's Problems, in the order :func:`row_faults` reports them.
FAULT_KINDS = (
    "nan",
    "inf",
    "nonpositive_price",
    "high_below_body",
    "low_above_body",
    "negative_volume",
    "negative_spread",
)


def bar_fault(
    open: float,  # noqa: A002 - the field's name
    high: float,
    low: float,
    close: float,
    volume: float,
    spread: float | None,
) -> str | None:
    """The first rule one bar breaks, as the gate's refusal text, or None when the bar is valid.

    The values are already plain floats (``spread`` may be None: no spread on this bar). Rules are checked in this
    order: finite (field by field), prices > 0, volume >= 0, the range contains the body, spread >= 0.
    """
    values = (("open", open), ("high", high), ("low", low), ("close", close), ("volume", volume), ("spread", spread))
    for name, v in values:
        if v is not None and not math.isfinite(v):
            return f"{name} = {v!r}: must be finite"
    for name, f in values[:4]:
        if f <= 0:
            return f"{name} = {f!r}: a price must be > 0"
    if volume < 0:
        return f"volume = {volume!r}: must be >= 0"
    if high < max(open, close) or low > min(open, close):
        return f"high = {high!r} / low = {low!r} do not contain open = {open!r} and close = {close!r}"
    if spread is not None and spread < 0:
        return f"spread = {spread}: must be >= 0"
    return None


def _bad_rows_py(o, h, lo, c, v, sp, out):  # type: ignore[no-untyped-def]
    """Twin of the row kernel: ``out[i]`` is True when row i breaks any rule of the module docstring.

    ``o h lo c v`` are the float64 columns open, high, low, close, volume; ``sp`` is the spread column, or an empty
    array when the bars have none; ``out`` (bool, one per row) receives the verdicts.
    """
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


# no fastmath: the kernel exists to see NaN and inf
_bad_rows = kernel(_bad_rows_py, fastmath=False)


def bad_rows(cols: Mapping[str, np.ndarray], *, twin: bool = False) -> np.ndarray:
    """Per-row mask of the rows that break any rule. ``cols`` maps ``open high low close volume`` (and optionally
    ``spread``) to equal-length float64 arrays. ``twin=True`` runs the pure-Python reference instead of the kernel."""
    n = len(cols["open"])
    out = np.zeros(n, dtype=np.bool_)
    spread = cols.get("spread")
    args = [np.ascontiguousarray(cols[k], dtype=np.float64) for k in (*PRICES, "volume")]
    sp = np.zeros(0) if spread is None else np.ascontiguousarray(spread, dtype=np.float64)
    (_bad_rows_py if twin else _bad_rows)(*args, sp, out)
    return out


@dataclass(frozen=True, slots=True)
class Fault:
    """One rule broken in one column: ``mask[i]`` is True for every row that breaks it. ``kind`` is one of
    :data:`FAULT_KINDS`; for ``high_below_body`` the column is ``high``, for ``low_above_body`` ``low``."""

    column: str
    kind: str
    mask: np.ndarray


def row_faults(cols: Mapping[str, np.ndarray]) -> list[Fault]:
    """Every rule broken anywhere in ``cols`` (the columns of :func:`bad_rows`), one :class:`Fault` per column and
    rule that some row breaks, in column order for non-finite values, then in the order of :data:`FAULT_KINDS`.

    The price rules are judged only on rows whose four prices are finite (a NaN price is reported once, as NaN);
    the volume and spread signs only where that value is finite.
    """
    out: list[Fault] = []

    def add(column: str, kind: str, mask: np.ndarray) -> None:
        if mask.any():
            out.append(Fault(column, kind, mask))

    for col in VALUES:
        if col in cols:
            v = cols[col]
            add(col, "nan", np.isnan(v))
            add(col, "inf", np.isinf(v))
    finite = np.ones(len(cols["open"]), dtype=bool)
    for col in PRICES:
        finite &= np.isfinite(cols[col])
    for col in PRICES:
        add(col, "nonpositive_price", finite & (cols[col] <= 0))
    o, h, lo, c = (cols[k] for k in PRICES)
    add("high", "high_below_body", finite & (h < np.maximum(o, c)))
    add("low", "low_above_body", finite & (lo > np.minimum(o, c)))
    for col in ("volume", "spread"):
        if col in cols:
            v = cols[col]
            add(col, f"negative_{col}", np.isfinite(v) & (v < 0))
    return out
