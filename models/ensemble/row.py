"""The per-bar Layer-1 path in one compiled call: winsorize a feature row, evaluate every booster, calibrate.

The gate calls :meth:`~fxgate.models.ensemble.model.TreeEnsemble.predict_row` once per bar; one numba call keeps
it at microseconds where the three native ``predict`` calls take far longer (``benchmarks/bench_ensemble.py``).

Each kernel's arguments are the fields of a named tuple (:class:`BinnedForestRow`, :class:`BinnedObliviousRow`,
:class:`L1Row`, :class:`~fxgate.models.ensemble.calibration.CalibrationArrays`) that documents them and builds them in
order; the kernels take them as plain tuples unpacked into named locals, because numba types a plain tuple argument on
a C fast path and a named one through Python, on every call.

The Layer-1 kernel bins the winsorized row once for all three models (every split threshold quantized to its
feature's sorted cuts, one list of doubles per feature, :class:`~fxgate.models._trees.FeatureBins`; the features
searched in lockstep) and walks integer compares, branch-free, the trees level by level; the rewrite is exact per
library (``<`` for XGBoost on float32, ``<=`` for LightGBM on doubles, ``>`` for CatBoost on float32: a float32
compare is a compare with one double, :func:`~fxgate.models._trees.above32`), so it equals
:meth:`FlatForest.margins <fxgate.models._trees.FlatForest.margins>` and native predict
(``tests/models/test_trees_binned.py``). :class:`ForestRow` / :func:`_forest_row` (the float walk with
:func:`fxgate.models._trees.leaf`) remain as the float-walk reference the binned quantile kernel
(``_quantile_forests.py``) is tested against.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from fxgate.engine.core.jit import kernel
from fxgate.models._trees import (
    XGB,
    FeatureBins,
    FlatForest,
    FlatOblivious,
    QuantForest,
    QuantOblivious,
    bin_row,
    leaf,
    quant_forest,
    quant_oblivious,
)
from fxgate.models.ensemble.calibration import CalibrationArrays, Calibrator, calibrate
from fxgate.models.features import MadWinsorizer

__all__ = ["ForestRow", "ObliviousRow", "L1Row", "l1_row"]


class ForestRow(NamedTuple):
    """A binary :class:`FlatForest` as the one-row kernel reads it."""

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    default_left: np.ndarray
    missing: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    base: float  # the base margin of the one class
    rule: int  # XGB or LGBM


class ObliviousRow(NamedTuple):
    """A binary :class:`FlatOblivious` as the one-row kernel reads it."""

    split_off: np.ndarray
    split_feature: np.ndarray
    border: np.ndarray
    leaf_off: np.ndarray
    leaf_values: np.ndarray
    nan_true: np.ndarray
    scale: float
    bias: float  # the bias of the one class


def _forest_row_py(x, feature, threshold, left, right, default_left, missing, value, roots, base, rule):  # type: ignore[no-untyped-def]
    """One row through a binary forest (the arguments: :class:`ForestRow`'s fields): the margin, with the leaf walk
    of the batch kernel."""
    acc32 = np.float32(base)
    acc = base
    for t in range(len(roots)):
        node = leaf(x, roots[t], feature, threshold, left, right, default_left, missing, rule)
        if rule == XGB:  # XGBoost adds leaves in float32
            acc32 = acc32 + np.float32(value[node])
        else:
            acc += value[node]
    return float(acc32) if rule == XGB else acc


def _oblivious_row_py(x, split_off, split_feature, border, leaf_off, leaf_values, nan_true, scale, bias):  # type: ignore[no-untyped-def]
    """One row through binary oblivious trees (the arguments: :class:`ObliviousRow`'s fields): the margin."""
    s = 0.0
    for t in range(len(split_off) - 1):
        idx = 0
        for j in range(split_off[t], split_off[t + 1]):
            v = x[split_feature[j]]
            bit = nan_true[split_feature[j]] if np.isnan(v) else np.float32(v) > border[j]
            if bit:
                idx |= 1 << (j - split_off[t])
        s += leaf_values[leaf_off[t] + idx]
    return scale * s + bias


_forest_row = kernel(_forest_row_py, fastmath=False)
_oblivious_row = kernel(_oblivious_row_py, fastmath=False)


def forest_row(f: FlatForest) -> ForestRow:
    if f.n_class != 1:
        raise ValueError("the one-row Layer-1 kernel takes binary models")
    return ForestRow(
        f.feature,
        f.threshold,
        f.left,
        f.right,
        f.default_left,
        f.missing,
        f.value,
        f.roots,
        float(f.base[0]),
        f.rule,
    )


def oblivious_row(f: FlatOblivious) -> ObliviousRow:
    if f.n_class != 1:
        raise ValueError("the one-row Layer-1 kernel takes binary models")
    return ObliviousRow(
        f.split_off, f.split_feature, f.border, f.leaf_off, f.leaf_values, f.nan_true, float(f.scale), float(f.bias[0])
    )


class BinnedForestRow(NamedTuple):
    """A binary forest on binned rows (:class:`~fxgate.models._trees.QuantForest`) as the one-row kernel reads it."""

    words: np.ndarray  # per node: cut index, slot, left child (right = left + 1); a leaf points at itself
    value: np.ndarray  # leaf values by node
    trees: np.ndarray  # per tree: root | depth << 40
    base: float  # the base margin of the one class
    rule: int  # XGB or LGBM


class BinnedObliviousRow(NamedTuple):
    """Binary oblivious trees on binned rows (:class:`~fxgate.models._trees.QuantOblivious`) as the kernel reads
    them."""

    split_off: np.ndarray
    words: np.ndarray  # per split: cut index | slot << 16
    leaf_off: np.ndarray
    leaf_values: np.ndarray
    scale: float
    bias: float  # the bias of the one class


def binned_forest_row(f: QuantForest) -> BinnedForestRow:
    if f.n_class != 1:
        raise ValueError("the one-row Layer-1 kernel takes binary models")
    return BinnedForestRow(f.words, f.value, f.trees, float(f.base), f.rule)


def binned_oblivious_row(f: QuantOblivious) -> BinnedObliviousRow:
    if f.n_class != 1:
        raise ValueError("the one-row Layer-1 kernel takes binary models")
    return BinnedObliviousRow(f.split_off, f.words, f.leaf_off, f.leaf_values, float(f.scale), float(f.bias[0]))


class L1Row(NamedTuple):
    """Everything :func:`l1_row` reads: the winsorizer's clips, the models, their calibrators. Output slot ``k`` is
    model ``k`` in model order; the forest models come first in that order, then the oblivious ones."""

    lo: np.ndarray  # per feature: median - k * MAD (-inf where the MAD is 0: the feature is not clipped)
    hi: np.ndarray  # median + k * MAD (+inf likewise)
    binning: tuple  # FeatureBins.row_args(): every model's split thresholds per feature, and the slots
    forests: tuple[BinnedForestRow, ...]
    oblivious: tuple[BinnedObliviousRow, ...]
    calibration: tuple[CalibrationArrays, ...]  # one per model, model order

    @classmethod
    def build(
        cls, winsor: MadWinsorizer, models: Sequence[FlatForest | FlatOblivious], calibrators: Sequence[Calibrator]
    ) -> L1Row:
        """From the fitted winsorizer and, in model order, the flattened models and their calibrators."""
        forests = [m for m in models if isinstance(m, FlatForest)]
        if any(isinstance(m, FlatForest) for m in models[len(forests) :]):
            raise ValueError("the one-row kernel takes the forest models first in model order, then the oblivious")
        w = winsor
        bins = FeatureBins.build(list(models))
        binned_forests = tuple(binned_forest_row(bins.forest(m)) for m in forests)
        binned_oblivious = tuple(binned_oblivious_row(bins.oblivious(m)) for m in models[len(forests) :])
        return cls(
            np.where(w.mad > 0, w.median - w.k * w.mad, -np.inf),
            np.where(w.mad > 0, w.median + w.k * w.mad, np.inf),
            bins.row_args(),  # after the conversions, which add the slots
            binned_forests,
            binned_oblivious,
            tuple(c.arrays() for c in calibrators),
        )

    def kernel_args(self) -> tuple:
        """The same fields as plain nested tuples, what :func:`l1_row` takes (a named tuple argument costs 5 us more
        per call on a 45 us call, measured: numba types it through Python)."""
        return (
            self.lo,
            self.hi,
            self.binning,
            tuple(tuple(f) for f in self.forests),
            tuple(tuple(f) for f in self.oblivious),
            tuple(tuple(c) for c in self.calibration),
        )


def _l1_row_py(x, a, out):  # type: ignore[no-untyped-def]
    """Winsorize the feature row ``x``, evaluate every model, calibrate: ``out[k]`` = model ``k``'s calibrated P(up).
    ``a``: :meth:`L1Row.kernel_args`, each tuple in its named tuple's field order."""
    lo, hi, binning, forests, oblivious, calibration = a
    n = len(x)
    z = np.empty(n)
    for i in range(n):
        v = x[i]
        z[i] = v if np.isnan(v) else min(max(v, lo[i]), hi[i])
    bins = bin_row(z, *binning)
    k = 0
    for f in forests:
        out[k] = calibrate(1.0 / (1.0 + math.exp(-quant_forest(bins, *f))), *calibration[k])
        k += 1
    for f in oblivious:
        out[k] = calibrate(1.0 / (1.0 + math.exp(-quant_oblivious(bins, *f))), *calibration[k])
        k += 1


l1_row = kernel(_l1_row_py, fastmath=False)
