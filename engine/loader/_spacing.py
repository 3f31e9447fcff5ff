"""What a series' bar spacing says: gaps inside trading sessions (not market closures), and the parts of a file
whose timeframe changes mid-file (refused, or cut to the largest part under ``policy="repair"``)."""

from __future__ import annotations

import numpy as np

from fxgate.engine.core.bars import NS, infer_timeframe, timeframe_seconds
from fxgate.engine.core.errors import BarDataError, Problem
from fxgate.engine.loader import _calendar as cal
from fxgate.engine.loader._raw import Raw
from fxgate.engine.loader._report import Change, Gap, Segment

__all__ = ["find_gaps", "timeframe_segments", "REGIME_RUN", "split_timeframes"]


def find_gaps(ts: np.ndarray, timeframe: str) -> tuple[list[Gap], int]:
    """Gaps inside trading sessions, and how many gaps were market closures (weekends, Christmas, New Year).

    A gap between bars ``t_i`` and ``t_{i+1}`` (spacing above the timeframe) is a closure when the missing span
    ``[t_i + tf, t_{i+1})`` lies inside one closure interval of :func:`fxgate.engine.loader._calendar.closures`, with a
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


def split_timeframes(raw: Raw, path: str, unit: str, label: str, policy: str, changes: list[Change]) -> list[Segment]:
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
    raw.keep(slice(a, b))
    changes.sort(key=lambda ch: ch.line)
    return [Segment(span[k][0], span[k][1], names[k], b - a, k == keep) for k, (a, b, _) in enumerate(parts)]
