"""The nine quantile forests packed for one compiled call per row, on binned thresholds.

:class:`QuantilePack` is derived at load (and fit) time from the flattened LightGBM forests
(:func:`~fxgate.models._trees.from_lightgbm`), so bundles need no new format. Every split threshold of all nine models
is collected per feature into one sorted list of cuts (:class:`~fxgate.models._trees.FeatureBins`, the Layer-1
binning); a row is winsorized and binned once (per binning slot: the count of its feature's cuts below the value) and
the bins are shared by the nine models, whose trees are laid end to end in one node array (siblings adjacent, a leaf
pointing at itself, :meth:`FeatureBins.forest <fxgate.models._trees.FeatureBins.forest>`) and walked with integer
compares, branch-free, all trees a level at a time (:func:`quantile_forests`).

Exactness. LightGBM sends ``x <= t`` left, so "right iff bin > k" for the k-th cut of the feature is the same
decision (:func:`~fxgate.models._trees.cut_lightgbm`); missing values (NaN, and zeros for ``missing_type`` Zero) take
their slot's fixed bin; ``missing_type`` None reads NaN and ``|x| <= kZeroThreshold`` as 0.0. Leaves are added in tree
order onto each model's base margin, as the float walk and LightGBM do: the outputs equal the float walk bit for bit
(``tests/models/test_quantiles_binned.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from fxgate.engine.core.jit import kernel
from fxgate.models._trees import _ZERO_MISSING, LGBM, LGBM_SLOT, LGBM_ZERO, FeatureBins, FlatForest

__all__ = ["QuantilePack", "quantile_pack", "quantile_forests"]

_ROOT = (1 << 40) - 1  # QuantForest.trees: root in bits 0-39, depth from bit 40


class QuantilePack(NamedTuple):
    """All the models' trees on one binning, as :func:`quantile_forests` reads them (a plain tuple of these fields)."""

    cuts: np.ndarray  # float64: per feature, the sorted distinct thresholds of every model (FeatureBins.cuts)
    off: np.ndarray  # int64: feature f's cuts are cuts[off[f]:off[f + 1]]
    slots: np.ndarray  # int64: feature | LightGBM flag << 16 | zero-is-missing flag << 17 | missing bin << 32
    # (FeatureBins.slots)
    words: np.ndarray  # int64 per node: cut index | slot << 16 | left child << 32 (right = left + 1)
    value: np.ndarray  # float64 leaf values by node
    trees: np.ndarray  # int64 per tree, models end to end: root | depth << 40
    model_off: np.ndarray  # int64: model m's trees are trees[model_off[m]:model_off[m + 1]]
    base: np.ndarray  # float64: each model's base margin


def quantile_pack(forests: Sequence[FlatForest]) -> QuantilePack:
    """Pack binary LightGBM forests (the quantile models, level order) on one shared binning."""
    if any(f.rule != LGBM or f.n_class != 1 for f in forests):
        raise ValueError("the quantile pack takes one-output LightGBM forests")
    bins = FeatureBins.build(list(forests))
    words, value, trees, model_off, base = [], [], [], [0], []
    nodes = 0
    for f in forests:
        q = bins.forest(f)
        words.append(q.words + (nodes << 32))  # the left child is an index into the model's own nodes
        trees.append(q.trees + nodes)
        value.append(q.value)
        model_off.append(model_off[-1] + len(q.trees))
        base.append(q.base)
        nodes += len(q.words)
    if nodes >= 1 << 31:
        raise ValueError("too many nodes for the packed quantile forests")
    if not np.all(bins.slots & LGBM_SLOT):  # LightGBM splits compare doubles only
        raise ValueError("a float32 slot in a LightGBM pack")
    return QuantilePack(
        bins.cuts,
        bins.off,
        bins.slots,  # after the conversions, which add the slots
        np.concatenate(words),
        np.concatenate(value),
        np.concatenate(trees),
        np.array(model_off, np.int64),
        np.array(base, np.float64),
    )


def _quantile_forests_py(x, lo, hi, pack, out):  # type: ignore[no-untyped-def]
    """``out[m]`` = model ``m``'s margin on the feature row ``x`` winsorized to [lo, hi] (NaN kept). ``pack``:
    :class:`QuantilePack`'s fields as a plain tuple.

    The row is clipped and binned per slot: a bin is the count of the feature's cuts below the value, a linear
    compare-and-add the compiler vectorizes (faster than a binary search on a dozen cuts: no dependent loads). The
    trees are walked level by level, every tree one step per level to the deepest tree's depth (a leaf points at
    itself, so extra steps keep it): independent steps the CPU overlaps, with no per-tree loop exits to mispredict.
    The leaves are then added in tree order per model, the float walk's (and LightGBM's) summation order."""
    cuts, off, slots, words, value, trees, model_off, base = pack
    bins = np.empty(len(slots), np.int64)
    for s in range(len(slots)):
        w = slots[s]
        f = w & 0xFFFF
        v = x[f]
        if np.isnan(v):
            bins[s] = w >> 32
            continue
        v = min(max(v, lo[f]), hi[f])
        if abs(v) <= LGBM_ZERO:  # LightGBM reads it as 0.0; missing_type Zero sends it the missing way
            if w & _ZERO_MISSING:
                bins[s] = w >> 32
                continue
            v = 0.0
        c = 0
        for i in range(off[f], off[f + 1]):
            c += cuts[i] < v
        bins[s] = c
    n = len(trees)
    nodes = np.empty(n, np.int64)
    depth = 0
    for t in range(n):
        nodes[t] = trees[t] & _ROOT
        depth = max(depth, trees[t] >> 40)
    for _ in range(depth):
        for t in range(n):
            w = words[nodes[t]]
            nodes[t] = (w >> 32) + (bins[(w >> 16) & 0xFFFF] > (w & 0xFFFF))
    for m in range(len(model_off) - 1):
        acc = base[m]
        for t in range(model_off[m], model_off[m + 1]):
            acc += value[nodes[t]]
        out[m] = acc


quantile_forests = kernel(_quantile_forests_py, fastmath=False)
