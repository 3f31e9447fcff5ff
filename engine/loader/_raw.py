"""What every stage of loading hands on: :class:`Raw`, the parsed columns with their file lines, and the helpers
that turn a defect into a :class:`~fxgate.engine.core.errors.BarDataError`."""

from __future__ import annotations

import csv

import numpy as np

from fxgate.engine.core.errors import BarDataError, Problem

#: The value columns a bar file may carry, in the order problems are reported.
VALUE_COLUMNS = ("open", "high", "low", "close", "volume", "spread")
REPAIR_HINT = "correct or delete the row, or load with policy='repair' to drop it"


def data_error(
    path: str, line: int | None, column: str | None, kind: str, problem: str, fix: str, unit: str = "line"
) -> BarDataError:
    """A BarDataError with one problem."""
    return BarDataError([Problem(path, line, column, kind, problem, fix, unit)])


def split_row(line: str, delimiter: str) -> list[str]:
    """The cells of one CSV line (the csv module only when there are quotes: it is much slower)."""
    if '"' in line:
        return next(csv.reader([line], delimiter=delimiter))
    return line.split(delimiter)


class Raw:
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

    def keep(self, rows: np.ndarray | slice) -> None:
        """Keep only ``rows`` (a mask, an index array or a slice) of every column, in that order."""
        self.ts, self.lines = self.ts[rows], self.lines[rows]
        self.cols = {k: v[rows] for k, v in self.cols.items()}
