"""The gate's door: is this bar acceptable, given the bars the gate has accepted so far?

Every field is type-checked before anything is touched: ``ts`` an int of nanoseconds since the epoch, UTC (one that
looks like seconds, milliseconds or microseconds is refused with the factor to multiply by); prices, volume and
spread real numbers (numpy floats included, ``bool`` not); then the bar rules of
:func:`fxgate.engine.core.validate.bar_fault` (the same rules the loader applies to files); the gate's timeframe
and symbol; a time after the last accepted bar, but not implausibly far after it (``[input] max_gap_days``: one wrong
timestamp must not move the clock; a real gap is accepted on the third consecutive bar consistent with it) nor
ahead of the wall clock (``[input] max_future_s``).

:meth:`Intake.check` changes nothing; :meth:`Intake.accept` records an accepted bar and :meth:`Intake.settle` the
outcome of a check, so the gate can run the checks, then its state updates, as one transaction.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from fxgate.engine.core.bars import Bar
from fxgate.engine.core.config import InputConfig
from fxgate.engine.core.validate import bar_fault

__all__ = ["Intake", "GAP_CONFIRM"]

_I64 = 2**63 - 1
_DAY = 86_400 * 10**9
#: The smallest accepted ``ts``: 1973-03-03 in ns. Anything smaller is a time in s, ms or µs (or not a time).
_NS_FLOOR = 10**17
#: Bars, each consistent with the one before, that confirm a gap longer than ``[input] max_gap_days`` is real.
GAP_CONFIRM = 3


def _number(name: str, v: Any) -> tuple[float | None, str | None]:
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
        return None, f"{name} = {v!r}: must be a number (got {type(v).__name__})"
    try:
        return float(v), None
    except OverflowError:  # an int beyond float range
        return math.inf, None


class Intake:
    """Checks bars for one gate (one timeframe, optionally one symbol) against the last accepted one."""

    def __init__(self, timeframe: str, symbol: str, cfg: InputConfig) -> None:
        self.timeframe, self.symbol, self.cfg = timeframe, symbol, cfg
        self.last_ts: int | None = None
        self._gap_run: list[int] = []  # far-gap bars refused in a row, each consistent with the one before
        self._gap_next: list[int] = []

    def check(self, bar: Any) -> tuple[Bar | None, str | None]:
        """(the bar with plain-float fields, None) or (None, why it is refused). Touches no state but the note of
        a far-gap run, which :meth:`settle` commits."""
        self._gap_next = []
        if not isinstance(bar, Bar):
            return None, f"expected a fxgate Bar, got {type(bar).__name__}"
        ts = bar.ts
        if isinstance(ts, bool) or not isinstance(ts, int | np.integer):
            return None, f"ts = {ts!r}: must be an int of nanoseconds since the epoch, UTC (got {type(ts).__name__})"
        ts = int(ts)
        if not 0 <= ts <= _I64:
            return None, f"ts = {ts}: outside int64 nanoseconds since the epoch (1970..2262)"
        if ts < _NS_FLOOR:
            unit, k = ("seconds", 9) if ts < 10**11 else ("milliseconds", 6) if ts < 10**14 else ("microseconds", 3)
            return None, f"ts = {ts} looks like {unit}; fxgate wants int nanoseconds UTC (multiply by 10**{k})"
        o, h, lo, c, vol, sp = bar.open, bar.high, bar.low, bar.close, bar.volume, bar.spread
        if not (
            type(o) is float
            and type(h) is float
            and type(lo) is float
            and type(c) is float
            and type(vol) is float
            and (sp is None or type(sp) is float)
        ):  # the common case is plain floats already; anything else is checked and converted field by field
            vals: list[float | None] = []
            for name, v in (("open", o), ("high", h), ("low", lo), ("close", c), ("volume", vol), ("spread", sp)):
                if name == "spread" and v is None:
                    vals.append(None)
                    continue
                f, problem = _number(name, v)
                if problem:
                    return None, problem
                vals.append(f)
            o, h, lo, c, vol, sp = vals
        assert o is not None and h is not None and lo is not None and c is not None and vol is not None
        if problem := bar_fault(o, h, lo, c, vol, sp):
            return None, problem
        tf, sym = bar.timeframe, bar.symbol
        if not isinstance(tf, str):
            return None, f"timeframe = {tf!r}: must be a string such as {self.timeframe!r}"
        if not isinstance(sym, str):
            return None, f"symbol = {sym!r}: must be a string"
        if tf and tf != self.timeframe:
            return None, f"bar timeframe {tf} differs from the gate's {self.timeframe}"
        if sym and self.symbol and sym != self.symbol:
            return None, f"bar symbol {sym} differs from the gate's {self.symbol}"
        if problem := self._time_problem(ts):
            return None, problem
        # a bar without a timeframe is one of the gate's: modules that scale by it (VPIN's buckets) read the gate's
        return Bar(ts, o, h, lo, c, vol, sp, sym, tf or self.timeframe), None

    def _time_problem(self, ts: int) -> str | None:
        last, inp = self.last_ts, self.cfg
        if last is not None and ts <= last:
            return f"bar time {ts} is not after the last accepted bar ({last})"
        if last is not None and inp.max_gap_days and ts - last > inp.max_gap_days * _DAY:
            gap = self._gap_run
            consistent = bool(gap) and gap[-1] < ts <= gap[-1] + inp.max_gap_days * _DAY
            run = [*gap, ts] if consistent else [ts]
            if len(run) < GAP_CONFIRM:
                self._gap_next = run
                return (
                    f"bar time {np.datetime64(ts, 'ns')}Z is {(ts - last) / _DAY:.0f} days after the last "
                    f"accepted bar ({np.datetime64(last, 'ns')}Z), more than [input] max_gap_days = "
                    f"{inp.max_gap_days:g}: a wrong timestamp must not move the clock. If the gap is real, "
                    f"the clock moves on the {GAP_CONFIRM}rd consecutive bar after it "
                    f"({len(run)}/{GAP_CONFIRM}); raise max_gap_days to accept it at once (0: off)"
                )
        if inp.max_future_s and ts > time.time_ns() + inp.max_future_s * 1e9:
            return (
                f"bar time {np.datetime64(ts, 'ns')}Z is more than [input] max_future_s = "
                f"{inp.max_future_s:g} s after this machine's clock: check the feed's time zone and units"
            )
        return None

    @property
    def gap_run(self) -> list[int]:
        """The far-gap bars refused in a row so far, each consistent with the one before (a copy: snapshots)."""
        return list(self._gap_run)

    @gap_run.setter
    def gap_run(self, run: list[int]) -> None:
        self._gap_run = [int(t) for t in run]

    def settle(self) -> None:
        """After a check: any bar other than the next far-gap one (refused or accepted) breaks a run of gap bars."""
        self._gap_run = self._gap_next

    def accept(self, ts: int) -> None:
        self.last_ts = ts
