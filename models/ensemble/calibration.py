"""Calibration of each booster's P(up): the :class:`Calibrator` (isotonic, Platt or identity), its kind codes, and
the compiled scalar map the one-row Layer-1 kernel applies.

A calibrator is fitted on the latest, purged part of each training set (see
:func:`~fxgate.models.ensemble.walk_forward.split_calibration`): isotonic regression (with Laplace-smoothed block
rates) or Platt scaling (Platt 1999, a logistic regression on the logit), whichever has the lower log loss on the
later half of that window. :meth:`Calibrator.__call__` (numpy, batch) and :func:`calibrate` (numba, one value) are
the same map; ``tests/models/test_ensemble.py`` checks the one-row kernel against the batch path to 1e-12.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from fxgate.engine.core.jit import kernel
from fxgate.models import _stats

__all__ = ["Calibrator", "CalibrationArrays", "KIND_CODES", "IDENTITY", "ISOTONIC", "PLATT", "calibrate"]

#: the calibrator kinds and the codes the compiled kernel reads (one place for both)
IDENTITY, ISOTONIC, PLATT = 0, 1, 2
KIND_CODES = {"identity": IDENTITY, "isotonic": ISOTONIC, "platt": PLATT}


class CalibrationArrays(NamedTuple):
    """A :class:`Calibrator` as :func:`calibrate` reads it."""

    kind: int  # IDENTITY, ISOTONIC or PLATT
    a: float  # Platt slope on logit(p)
    b: float  # Platt intercept
    x: np.ndarray  # isotonic knots (one dummy knot for the other kinds: numba needs a typed array)
    y: np.ndarray


@dataclass
class Calibrator:
    """Monotone map from a booster's P(up) to a calibrated P(up)."""

    kind: str = "identity"
    x: list[float] = field(default_factory=list)  # isotonic knots
    y: list[float] = field(default_factory=list)
    a: float = 1.0  # Platt: sigmoid(a * logit(p) + b)
    b: float = 0.0
    chosen_by: dict[str, float] = field(default_factory=dict)
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KIND_CODES:
            raise ValueError(f"calibrator kind {self.kind!r} is not one of {sorted(KIND_CODES)}")

    def __call__(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        if self.kind == "isotonic":
            return np.interp(p, self.x, self.y)
        if self.kind == "platt":
            z = self.a * _logit(p) + self.b
            return 1.0 / (1.0 + np.exp(-z))
        return p

    def arrays(self) -> CalibrationArrays:
        return CalibrationArrays(
            KIND_CODES[self.kind],
            float(self.a),
            float(self.b),
            np.array(self.x or [0.0], dtype=np.float64),
            np.array(self.y or [0.0], dtype=np.float64),
        )

    @staticmethod
    def _fit_kind(kind: str, p: np.ndarray, y: np.ndarray) -> Calibrator:
        if kind == "isotonic":
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, y)
            # A block of 6 calibration bars that all went up would map to exactly 1.0 and clear any confidence
            # threshold on its own; replace each block's rate k/n by the Laplace estimate (k + 1)/(n + 2), then
            # restore monotonicity.
            xs, ys = iso.X_thresholds_, iso.y_thresholds_
            levels = iso.predict(p)
            smoothed = ys.copy()
            for lv in np.unique(ys):
                m = levels == lv
                n, k = int(m.sum()), float(y[m].sum())
                smoothed[ys == lv] = (k + 1.0) / (n + 2.0) if n else lv
            smoothed = np.maximum.accumulate(smoothed)
            return Calibrator("isotonic", xs.tolist(), smoothed.tolist())
        lr = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(p)[:, None], y)
        return Calibrator("platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))

    @classmethod
    def fit(cls, p: np.ndarray, y: np.ndarray) -> Calibrator:
        """Pick isotonic or Platt by log loss on the later half of the window (each fitted on the earlier
        half), then refit the winner on the whole window."""
        n = len(p)
        if n < 40 or len(np.unique(y)) < 2:
            return cls(
                "identity",
                note=f"{n} calibration rows with {len(np.unique(y))} class(es): need >= 40 and "
                "both classes; probabilities left as the booster gives them",
            )
        half = n // 2
        scores = {}
        for kind in ("isotonic", "platt"):
            c = cls._fit_kind(kind, p[:half], y[:half])
            scores[kind] = _stats.log_loss(c(p[half:]), y[half:])
        best = min(scores, key=lambda k: scores[k])
        out = cls._fit_kind(best, p, y)
        out.chosen_by = {f"logloss_{k}": v for k, v in scores.items()}
        return out


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return np.log(p / (1 - p))


def _calibrate_py(p, kind, a, b, x, y):  # type: ignore[no-untyped-def]
    """:meth:`Calibrator.__call__` on one probability ``p`` (the other arguments: :class:`CalibrationArrays`'s
    fields): isotonic is linear interpolation clipped at the end knots, Platt the sigmoid of ``a * logit(p) + b``."""
    if kind == ISOTONIC:
        return np.interp(p, x, y)
    if kind == PLATT:
        q = min(max(p, 1e-12), 1 - 1e-12)
        return 1.0 / (1.0 + math.exp(-(a * math.log(q / (1 - q)) + b)))
    return p


calibrate = kernel(_calibrate_py, fastmath=False)
