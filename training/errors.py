"""The training package's user-facing errors and warnings, below every builder (the data builder and the JSONL
importer both raise them, so neither has to import the other for its error type)."""

from __future__ import annotations

from fxgate.engine.core.errors import FxgateError

__all__ = ["DatasetError", "DatasetWarning"]


class DatasetError(FxgateError, ValueError):
    """Bad input to a dataset builder; the message names the file/line/field and the fix."""


class DatasetWarning(UserWarning):
    """A dataset input that is accepted but deserves a look (e.g. a record longer than a training sequence)."""
