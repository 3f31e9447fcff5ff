"""``policy="repair"``: drop the rows a check refused, keep the first of duplicate times, sort what is out of order,
and list every change by line. A repair never edits a value."""

from __future__ import annotations

import numpy as np

from fxgate.engine.core.errors import Problem
from fxgate.engine.loader._checks import order_problems
from fxgate.engine.loader._raw import Raw
from fxgate.engine.loader._report import Change


def repair(raw: Raw, value_probs: list[Problem], bad: np.ndarray, path: str, unit: str) -> list[Change]:
    """Repair ``raw`` in place and return its changes in line order.

    ``raw.problems`` are the rows the parser already left out (each is listed as dropped); ``value_probs`` and
    ``bad`` (the per-row mask) come from the value checks. Duplicates and order are judged among the rows that
    survive the value checks, so a bad row never hides a good one with the same time.
    """
    changes = [Change(int(q.line or 0), "dropped", q.problem) for q in raw.problems]
    dropped_lines = {q.line for q in raw.problems}
    for q in value_probs:  # one change per line, however many of its cells are bad
        if q.line not in dropped_lines:
            changes.append(Change(int(q.line or 0), "dropped", q.problem))
            dropped_lines.add(q.line)
    keep = ~bad
    kept_probs, dup, _ = order_problems(raw.ts[keep], raw.lines[keep], path, unit, "")
    drop = bad.copy()
    drop[np.flatnonzero(keep)[dup]] = True
    for q in kept_probs:
        changes.append(Change(int(q.line or 0), "dropped" if q.kind == "duplicate_time" else "moved", q.problem))
    raw.keep(~drop)
    raw.keep(np.argsort(raw.ts, kind="stable"))
    changes.sort(key=lambda ch: ch.line)
    return changes
