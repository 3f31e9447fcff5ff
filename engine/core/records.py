"""The typed records layers hand each other, and the one candidate rule.

A record crosses a layer boundary (a module's result read by the gate, the prompt and the report; Layer 1's
per-model probabilities read by the prompt, the dataset builder and the report), so it is an immutable record
with named fields, not a dict read by string key in several files. Each has ``to_dict()`` for JSON (the Decision
schema's ``details`` items). Records produced and consumed inside one package live there (the judge's answer in
:mod:`fxgate.models.llm`); the ones that cross from ``modules``/``models`` to each other live here, below both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = [
    "Record",
    "json_number",
    "ModelProbability",
    "ModuleResult",
    "candidate_direction",
    "candidate_direction_of",
    "candidate_directions",
    "mean_of",
]


def json_number(x: float | None) -> float | None:
    """JSON has no NaN/inf: a non-finite number is written as null."""
    return None if x is None or not math.isfinite(x) else float(x)


class Record(Protocol):
    """Anything a :class:`~fxgate.engine.core.decision.LayerVerdict` carries in ``details``."""

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class ModelProbability:
    """One Layer-1 model's calibrated probability that the next ``horizon`` bars close up."""

    model: str  # "xgboost" | "lightgbm" | "catboost"
    p_up: float

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "p_up": json_number(self.p_up)}


class ModuleResult:
    """One Layer-4 module's verdict on a bar: its score against its threshold, and why (fails closed on too
    little data: ``reason`` says how much is missing).

    ``reason`` is given as a string or as a function of no arguments that returns it. A function is called the
    first time ``reason`` is read, and its string kept: most verdicts' reasons are never read (a cheapest-mode
    veto reports one; a replay's trace keeps only the numbers), and formatting a dozen numbers costs more than the
    verdict's arithmetic for some modules. Such a function must hold **copies** of the numbers it formats (locals
    of the verdict: Python or numpy scalars, strings, the module's parameter dict), never the module or its state
    arrays, which the next bar changes; ``tests/modules/test_lazy_reasons.py`` reads every module's reasons many
    bars late on the sample and compares them with the same verdict's reason read at once. A function that raises
    gives a reason saying so instead of propagating into whoever reads it (a response, a file being written): the
    verdict's numbers are not affected.

    Immutable, compared and hashed by its five values (the reason as read); pickling formats the reason first."""

    __slots__ = ("name", "score", "passed", "threshold", "_reason")

    name: str
    score: float
    passed: bool
    threshold: float

    def __init__(self, name: str, score: float, passed: bool, threshold: float, reason: str | Callable[[], str]):
        set_ = object.__setattr__
        set_(self, "name", name)
        set_(self, "score", score)
        set_(self, "passed", passed)
        set_(self, "threshold", threshold)
        set_(self, "_reason", reason)

    @property
    def reason(self) -> str:
        r = self._reason
        if r.__class__ is str:
            return r  # type: ignore[return-value]
        if not callable(r):  # a str subclass (np.str_), or any other value: its text
            r = str(r)
        else:
            try:
                r = str(r())
            except Exception as exc:  # noqa: BLE001 - a reason is text about numbers already decided
                r = f"(the reason could not be formatted: {type(exc).__name__}: {exc})"
        object.__setattr__(self, "_reason", r)
        return r

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"ModuleResult is immutable (cannot set {key!r})")

    def __delattr__(self, key: str) -> None:
        raise AttributeError(f"ModuleResult is immutable (cannot delete {key!r})")

    def _values(self) -> tuple[str, float, bool, float, str]:
        return (self.name, self.score, self.passed, self.threshold, self.reason)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not ModuleResult:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        n, s, p, t, r = self._values()
        return f"ModuleResult(name={n!r}, score={s!r}, passed={p!r}, threshold={t!r}, reason={r!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (ModuleResult, self._values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "module": self.name,
            "passed": self.passed,
            "score": json_number(self.score),
            "threshold": json_number(self.threshold),
            "reason": self.reason,
        }


def candidate_direction(probs: np.ndarray | None) -> int:
    """The candidate rule, for one bar: +1 when every Layer-1 probability of "up" is >= 0.5, -1 when every one is
    < 0.5, else 0 (also for a missing or non-finite probability). Whether the models are *confident* is Layer 1's
    threshold; a candidate only needs them to lean the same way, and every outcome-based module learns from it."""
    if probs is None or len(probs) == 0 or not np.all(np.isfinite(probs)):
        return 0
    up = probs >= 0.5
    return 1 if up.all() else (-1 if not up.any() else 0)


def candidate_direction_of(probs: Sequence[float] | None) -> int:
    """:func:`candidate_direction` on Python floats (``probs.tolist()``): the per-bar path, where numpy on three
    numbers costs a microsecond a call. Tested equal to the reference on hostile input (tests/engine/
    test_fast_verdicts.py)."""
    if not probs:
        return 0
    n_up = 0
    for v in probs:
        if not math.isfinite(v):
            return 0
        n_up += v >= 0.5
    return 1 if n_up == len(probs) else (-1 if n_up == 0 else 0)


def mean_of(values: Sequence[float]) -> float:
    """``float(np.mean(values))`` for fewer than 8 floats, bit for bit: numpy sums a block that short in order,
    starting from 0.0 (so -0.0 values sum to 0.0), then divides by the count."""
    s = 0.0
    for v in values:
        s += v
    return s / len(values)


def candidate_directions(probs: np.ndarray) -> np.ndarray:
    """:func:`candidate_direction` for every row of an (n_bars, n_models) array, as int8 (+1, -1 or 0)."""
    p = np.asarray(probs, dtype=float)
    finite = np.isfinite(p).all(axis=1)
    up = p >= 0.5
    out = np.where(up.all(axis=1), 1, np.where((~up).all(axis=1), -1, 0))
    return np.where(finite, out, 0).astype(np.int8)
