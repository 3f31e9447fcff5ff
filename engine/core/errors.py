"""User-facing error types.

Every error a trader can cause (a bad file, a bad config key) is an :class:`FxgateError`. Its message names the
thing (file:line, column, key), the problem, and the fix; the CLI prints it without a traceback and exits non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FxgateError", "Problem", "BarDataError"]

#: How many problems a :class:`BarDataError` message lists before summarising the rest.
MAX_LISTED = 10


class FxgateError(Exception):
    """Base class of errors caused by user input (files, config, arguments), not by bugs."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One defect in a bar file.

    ``line`` is the 1-based line of the file as an editor shows it (header included); for Parquet input it is the
    1-based row and ``unit`` is ``"row"``.
    """

    path: str
    line: int | None
    column: str | None
    kind: str
    problem: str
    fix: str
    unit: str = "line"

    def location(self) -> str:
        if self.line is None:
            return self.path
        if self.unit == "line":
            return f"{self.path}:{self.line}"
        return f"{self.path} {self.unit} {self.line}"

    def __str__(self) -> str:
        col = f" column '{self.column}':" if self.column else ""
        return f"{self.location()}:{col} {self.problem}. Fix: {self.fix}"


class BarDataError(FxgateError, ValueError):
    """A bar file that cannot be loaded as asked. ``problems`` lists every defect found (first first)."""

    def __init__(self, problems: list[Problem]):
        if not problems:
            raise ValueError("BarDataError needs at least one problem")
        self.problems = list(problems)
        lines = [str(p) for p in self.problems[:MAX_LISTED]]
        if len(self.problems) > MAX_LISTED:
            lines.append(f"... and {len(self.problems) - MAX_LISTED} more problems of the same file")
        super().__init__("\n".join(lines))

    @property
    def first(self) -> Problem:
        return self.problems[0]
