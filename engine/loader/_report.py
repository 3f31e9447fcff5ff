"""What :func:`~fxgate.engine.loader.load_bars` read, changed and noticed: :class:`LoadReport` and the records it
lists (:class:`Change`, :class:`Gap`, :class:`Segment`). ``Bars.report`` holds one; replay and the report print it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = ["Change", "Gap", "Segment", "LoadReport", "REPAIR_ACTIONS"]


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
    :func:`~fxgate.engine.loader.timeframe_segments`). ``kept`` is whether ``policy="repair"`` kept its bars."""

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
