"""What every fast layer would have done on every replayed bar, each evaluated alone.

The gate decides cheapest first and stops at the first veto, so its Decisions say little about the layers after
the one that vetoed. With ``Gate(trace=True)`` (replay turns it on) every accepted bar also carries every Layer-4
module's verdict evaluated on its own (:attr:`fxgate.engine.gate.BarRecord.isolated`) and the size the sizing
modules suggest; Layer 1's three probabilities and verdict are in every Decision already. :class:`LayerTrace`
holds them as columns (one row per replayed bar) for the report, the demo's summary and ``layers.parquet``. The
LLM layers are not traced: they run only on bars every cheaper layer passed (they are slow), so the report shows
how many bars reached them instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fxgate.engine.core.decision import Decision

__all__ = ["LayerTrace", "TraceBuilder"]


@dataclass
class LayerTrace:
    """Columns over the replayed bars (row ``k`` is ``ReplayResult.decisions[k]``).

    ``l1_probs`` (n, 3): each Layer-1 model's calibrated P(up), NaN in sample, without a model or on a refused bar;
    ``l1_passed``: Layer 1's own verdict; ``direction``: the candidate direction (+1/-1/0); ``modules``: the
    Layer-4 module names in configured order, and per module (columns in that order) its ``score``, ``threshold``
    and ``passed`` evaluated alone, and ``evaluated`` (False where the bar was refused or the module was not traced
    on it: ``trace_every``; score NaN, passed False there); ``size``: what the sizing modules
    suggest, vetoed or not (NaN where not traced); ``accepted``: whether the gate accepted the bar.
    """

    l1_probs: np.ndarray
    l1_passed: np.ndarray
    direction: np.ndarray
    modules: tuple[str, ...]
    score: np.ndarray
    threshold: np.ndarray
    passed: np.ndarray
    evaluated: np.ndarray
    size: np.ndarray
    accepted: np.ndarray

    def __len__(self) -> int:
        return len(self.l1_passed)

    def passes(self) -> dict[str, np.ndarray]:
        """Each fast layer's pass flag alone, per bar: ``L1`` then every module (boolean arrays)."""
        out = {"L1": self.l1_passed}
        for j, name in enumerate(self.modules):
            out[name] = self.passed[:, j]
        return out

    def to_frame(self, ts: np.ndarray) -> pd.DataFrame:
        """One row per replayed bar (``layers.parquet``): ts, the three L1 probabilities, L1 passed, direction,
        size, and ``<module>_score`` / ``_threshold`` / ``_passed`` for every module."""
        cols: dict[str, Any] = {"ts": pd.to_datetime(np.asarray(ts, dtype=np.int64), utc=True)}
        for j, m in enumerate(("xgboost", "lightgbm", "catboost")):
            cols[f"L1_{m}_p_up"] = self.l1_probs[:, j]
        cols["L1_passed"] = self.l1_passed
        cols["direction"] = self.direction
        cols["accepted"] = self.accepted
        cols["size_alone"] = self.size
        for j, name in enumerate(self.modules):
            cols[f"{name}_score"] = self.score[:, j]
            cols[f"{name}_threshold"] = self.threshold[:, j]
            cols[f"{name}_passed"] = self.passed[:, j]
            cols[f"{name}_evaluated"] = self.evaluated[:, j]
        return pd.DataFrame(cols)


@dataclass
class TraceBuilder:
    """Collects one row per replayed bar from :class:`~fxgate.engine.gate.BarRecord` s."""

    modules: tuple[str, ...]
    _probs: list[Any] = field(default_factory=list)
    _l1: list[bool] = field(default_factory=list)
    _dir: list[int] = field(default_factory=list)
    _rows: list[Any] = field(default_factory=list)
    _size: list[float] = field(default_factory=list)
    _acc: list[bool] = field(default_factory=list)

    def add(self, rec: Any) -> None:
        d: Decision = rec.decision
        p = [x.p_up for x in rec.probs]
        self._probs.append(p if len(p) == 3 else [np.nan] * 3)
        self._l1.append(bool(d.layer("L1").passed))
        self._dir.append(int(rec.direction))
        self._acc.append(rec.features is not None)
        by = {r.name: r for r in rec.isolated}
        self._rows.append([by.get(m) for m in self.modules])
        self._size.append(float(rec.size_alone))

    def build(self) -> LayerTrace:
        n, m = len(self._l1), len(self.modules)
        score = np.full((n, m), np.nan)
        thr = np.full((n, m), np.nan)
        ok = np.zeros((n, m), dtype=bool)
        ev = np.zeros((n, m), dtype=bool)
        for k, row in enumerate(self._rows):
            for j, r in enumerate(row):
                if r is not None:
                    score[k, j], thr[k, j], ok[k, j], ev[k, j] = r.score, r.threshold, bool(r.passed), True
        return LayerTrace(
            np.asarray(self._probs, dtype=float).reshape(n, 3),
            np.asarray(self._l1, dtype=bool),
            np.asarray(self._dir, dtype=np.int8),
            self.modules,
            score,
            thr,
            ok,
            ev,
            np.asarray(self._size, dtype=float),
            np.asarray(self._acc, dtype=bool),
        )
