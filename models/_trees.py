"""Compiled evaluation of XGBoost, LightGBM and CatBoost models from flat arrays.

Each library's own dump is converted once into flat numpy arrays; numba kernels walk them. The conventions that
decide equality with native ``predict`` are each library's own:

* **XGBoost** (``Booster.save_raw("json")``, JSON model schema): inputs are float32 (DMatrix stores float32);
  a node sends ``x < split_condition`` left, NaN to ``default_left``; a leaf's value is its ``split_condition``;
  leaf values are added in float32, tree by tree, onto the base margin (``base_score``: a probability for
  ``binary:logistic``, turned into its logit; margins as stored for ``multi:softprob``). Trees map to classes by
  ``tree_info``.
* **LightGBM** (``Booster.dump_model()``): doubles throughout; a dense row keeps only |x| > ``kZeroThreshold``
  (``1e-35f``) and NaN, every other value is read as 0.0 (``RowPairFunctionFromDenseMatric`` in ``c_api.cpp``);
  ``NumericalDecision`` in ``tree.h``: NaN becomes 0 unless the node's ``missing_type`` is ``NaN``; a missing value
  (NaN for ``NaN``, zero for ``Zero``) goes to ``default_left``; otherwise ``x <= threshold`` goes left. The dump
  writes thresholds of +-inf (the last bin's bound) as +-1e300; they are read back as +-inf. Tree ``i`` belongs to class
  ``i % num_tree_per_iteration``; the margin is the sum of leaves (the initial score is folded into tree 0).
* **CatBoost** (``save_model(format="json")``): oblivious trees; split ``j`` of a tree sets bit ``j`` of the leaf
  index when ``float32(x) > border``; NaN takes the feature's ``nan_value_treatment`` (``AsFalse`` for the default
  ``nan_mode="Min"``, ``AsTrue`` for ``"Max"``); leaves store ``dim`` values each; margin = scale * sum + bias.

Outputs are raw margins ``(n, K)`` (K = 1 for binary); :func:`margins_to_proba` applies the sigmoid or softmax.
:func:`leaf` is the one tree walk both paths share: the batch kernels here and the one-row Layer-1 kernel
(:mod:`fxgate.models.ensemble.row`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fxgate.engine.core.jit import kernel

__all__ = [
    "FlatForest",
    "FlatOblivious",
    "from_xgboost",
    "from_lightgbm",
    "from_catboost",
    "margins_to_proba",
    "leaf",
]

#: ``FlatForest.rule``: whose split and accumulation conventions a forest follows (the module docstring)
XGB, LGBM = 0, 1
#: ``FlatForest.missing``: LightGBM's ``missing_type`` per node (XGBoost nodes carry ``MISSING_NONE``)
MISSING_NONE, MISSING_ZERO, MISSING_NAN = 0, 1, 2
#: LightGBM's ``kZeroThreshold`` (``1e-35f``, a float): a dense row's |x| <= it is read as 0.0 before any tree
LGBM_ZERO = float(np.float32(1e-35))
_MISSING = {"None": MISSING_NONE, "Zero": MISSING_ZERO, "NaN": MISSING_NAN}


@dataclass
class FlatForest:
    """Binary trees of XGBoost (``rule`` XGB) or LightGBM (``rule`` LGBM) as flat arrays; ``left < 0`` marks a leaf."""

    rule: int
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    default_left: np.ndarray
    missing: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    tree_class: np.ndarray
    base: np.ndarray
    n_class: int
    n_features: int

    def margins(self, x: np.ndarray, *, twin: bool = False) -> np.ndarray:
        x = _as_2d(x, self.n_features)
        out = np.zeros((x.shape[0], self.n_class))
        (_forest_py if twin else _forest)(
            x,
            self.feature,
            self.threshold,
            self.left,
            self.right,
            self.default_left,
            self.missing,
            self.value,
            self.roots,
            self.tree_class,
            self.base,
            self.rule,
            out,
        )
        return out


@dataclass
class FlatOblivious:
    """CatBoost oblivious trees: tree t uses splits ``split_off[t] .. split_off[t+1]`` and leaves from
    ``leaf_off[t]`` (``n_class`` values per leaf)."""

    split_off: np.ndarray
    split_feature: np.ndarray
    border: np.ndarray
    leaf_off: np.ndarray
    leaf_values: np.ndarray
    nan_true: np.ndarray
    scale: float
    bias: np.ndarray
    n_class: int
    n_features: int

    def margins(self, x: np.ndarray, *, twin: bool = False) -> np.ndarray:
        x = _as_2d(x, self.n_features)
        out = np.zeros((x.shape[0], self.n_class))
        (_oblivious_py if twin else _oblivious)(
            x,
            self.split_off,
            self.split_feature,
            self.border,
            self.leaf_off,
            self.leaf_values,
            self.nan_true,
            self.scale,
            self.bias,
            out,
        )
        return out


def _as_2d(x: np.ndarray, n_features: int) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.shape[1] != n_features:
        raise ValueError(f"model expects {n_features} features, got {x.shape[1]}")
    return x


# ------------------------------------------------------------------------------------------------------------------
# Kernels
# ------------------------------------------------------------------------------------------------------------------
def _leaf_py(x, node, feature, threshold, left, right, default_left, missing, rule):  # type: ignore[no-untyped-def]
    """Walk one tree from ``node`` for feature row ``x`` and return the leaf's index (rules in the module docstring)."""
    while left[node] >= 0:
        v = x[feature[node]]
        if rule == XGB:
            if np.isnan(v):
                node = left[node] if default_left[node] else right[node]
            elif np.float32(v) < threshold[node]:
                node = left[node]
            else:
                node = right[node]
        else:
            mt = missing[node]
            if abs(v) <= LGBM_ZERO or (np.isnan(v) and mt != MISSING_NAN):
                v = 0.0
            if (mt == MISSING_ZERO and v == 0.0) or (mt == MISSING_NAN and np.isnan(v)):
                node = left[node] if default_left[node] else right[node]
            elif v <= threshold[node]:
                node = left[node]
            else:
                node = right[node]
    return node


leaf = kernel(_leaf_py, fastmath=False)


def _forest_py(x, feature, threshold, left, right, default_left, missing, value, roots, tree_class, base, rule, out):  # type: ignore[no-untyped-def]
    n_class = out.shape[1]
    acc32 = np.zeros(n_class, dtype=np.float32)
    for i in range(x.shape[0]):
        for k in range(n_class):
            out[i, k] = base[k]
            acc32[k] = np.float32(base[k])
        for t in range(len(roots)):
            node = leaf(x[i], roots[t], feature, threshold, left, right, default_left, missing, rule)
            k = tree_class[t]
            if rule == XGB:  # XGBoost adds leaves in float32
                acc32[k] = acc32[k] + np.float32(value[node])
            else:
                out[i, k] += value[node]
        if rule == XGB:
            for k in range(n_class):
                out[i, k] = acc32[k]


def _oblivious_py(x, split_off, split_feature, border, leaf_off, leaf_values, nan_true, scale, bias, out):  # type: ignore[no-untyped-def]
    n_class = out.shape[1]
    n_trees = len(split_off) - 1
    for i in range(x.shape[0]):
        for k in range(n_class):
            out[i, k] = 0.0
        for t in range(n_trees):
            idx = 0
            for j in range(split_off[t], split_off[t + 1]):
                f = split_feature[j]
                v = x[i, f]
                if np.isnan(v):
                    bit = nan_true[f]
                else:
                    bit = np.float32(v) > border[j]
                if bit:
                    idx |= 1 << (j - split_off[t])
            base = leaf_off[t] + idx * n_class
            for k in range(n_class):
                out[i, k] += leaf_values[base + k]
        for k in range(n_class):
            out[i, k] = scale * out[i, k] + bias[k]


_forest = kernel(_forest_py, fastmath=False)
_oblivious = kernel(_oblivious_py, fastmath=False)


def margins_to_proba(m: np.ndarray) -> np.ndarray:
    """Sigmoid for one column (returns P(class 1) as a column), softmax for several."""
    if m.shape[1] == 1:
        return 1.0 / (1.0 + np.exp(-m))
    z = np.exp(m - m.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------------------------------------------------------
# Converters
# ------------------------------------------------------------------------------------------------------------------
def _floats(s: str | float | list) -> list[float]:
    if isinstance(s, list):
        return [float(v) for v in s]
    if isinstance(s, int | float):
        return [float(s)]
    return [float(v) for v in str(s).strip("[]").split(",") if v.strip()]


def from_xgboost(booster: Any) -> FlatForest:
    """Flatten an ``xgboost.Booster`` (numerical splits only; categorical splits are refused)."""
    j = json.loads(booster.save_raw("json"))
    learner = j["learner"]
    obj = learner["objective"]["name"]
    if obj not in ("binary:logistic", "multi:softprob", "multi:softmax"):
        raise ValueError(f"compiled evaluator supports binary:logistic and multi:softprob, not {obj}")
    param = learner["learner_model_param"]
    n_class = max(1, int(param["num_class"]))
    base = np.array(_floats(param["base_score"]), dtype=np.float32).astype(np.float64)
    if obj == "binary:logistic":
        p = np.float32(base[0])
        base = np.array([np.float32(math.log(p / (1 - p)))], dtype=np.float64)
    elif len(base) == 1:
        base = np.full(n_class, base[0])
    model = learner["gradient_booster"]["model"]
    feats, thr, lft, rgt, dl, val, roots = [], [], [], [], [], [], []
    offset = 0
    for tree in model["trees"]:
        if any(tree["split_type"]):
            raise ValueError("categorical splits are not supported by the compiled evaluator")
        left = np.array(tree["left_children"], dtype=np.int64)
        right = np.array(tree["right_children"], dtype=np.int64)
        roots.append(offset)
        leaf = left < 0
        feats.append(np.array(tree["split_indices"], dtype=np.int64))
        cond = np.array(tree["split_conditions"], dtype=np.float32).astype(np.float64)
        thr.append(cond)
        val.append(np.where(leaf, cond, 0.0))
        lft.append(np.where(leaf, -1, left + offset))
        rgt.append(np.where(leaf, -1, right + offset))
        dl.append(np.array(tree["default_left"], dtype=bool))
        offset += len(left)
    n_features = int(param["num_feature"])
    cat = np.concatenate
    return FlatForest(
        XGB,
        cat(feats),
        cat(thr),
        cat(lft),
        cat(rgt),
        cat(dl),
        np.full(offset, MISSING_NONE, np.int8),
        cat(val),
        np.array(roots, dtype=np.int64),
        np.array(model["tree_info"], dtype=np.int64),
        base,
        n_class,
        n_features,
    )


def from_lightgbm(booster: Any) -> FlatForest:
    """Flatten a ``lightgbm.Booster`` (numerical splits; categorical splits are refused)."""
    d = booster.dump_model()
    obj = d["objective"].split()[0]
    if obj not in ("binary", "multiclass", "multiclassova"):
        raise ValueError(f"compiled evaluator supports binary and multiclass, not {obj}")
    if obj == "binary" and "sigmoid:1" not in d["objective"]:
        raise ValueError(f"only sigmoid:1 is supported, got {d['objective']!r}")
    per_iter = int(d["num_tree_per_iteration"])
    feats: list[int] = []
    thr: list[float] = []
    lft: list[int] = []
    rgt: list[int] = []
    dl: list[bool] = []
    miss: list[int] = []
    val: list[float] = []
    roots: list[int] = []
    classes: list[int] = []

    def add(node: dict) -> int:
        i = len(feats)
        feats.append(0)
        thr.append(0.0)
        lft.append(-1)
        rgt.append(-1)
        dl.append(False)
        miss.append(0)
        val.append(0.0)
        if "leaf_value" in node and "split_feature" not in node:
            val[i] = float(node["leaf_value"])
            return i
        if node.get("decision_type", "<=") != "<=":
            raise ValueError("categorical splits are not supported by the compiled evaluator")
        feats[i] = int(node["split_feature"])
        # the JSON dump writes a threshold >= 1e300 as 1e300 (AvoidInf): the model's own threshold is inf
        t = float(node["threshold"])
        thr[i] = math.copysign(math.inf, t) if abs(t) >= 1e300 else t
        dl[i] = bool(node["default_left"])
        miss[i] = _MISSING[node["missing_type"]]
        lft[i] = add(node["left_child"])
        rgt[i] = add(node["right_child"])
        return i

    for t, info in enumerate(d["tree_info"]):
        roots.append(add(info["tree_structure"]))
        classes.append(t % per_iter)
    n_class = per_iter
    return FlatForest(
        LGBM,
        np.array(feats, np.int64),
        np.array(thr),
        np.array(lft, np.int64),
        np.array(rgt, np.int64),
        np.array(dl, bool),
        np.array(miss, np.int8),
        np.array(val),
        np.array(roots, np.int64),
        np.array(classes, np.int64),
        np.zeros(n_class),
        n_class,
        int(d["max_feature_idx"]) + 1,
    )


def from_catboost(model: Any, path_json: str) -> FlatOblivious:
    """Flatten a CatBoost model (float features only) via its JSON export written to ``path_json``."""
    model.save_model(path_json, format="json")
    with open(path_json) as fh:
        j = json.load(fh)
    ffeat = j["features_info"].get("float_features", [])
    if j["features_info"].get("categorical_features"):
        raise ValueError("categorical features are not supported by the compiled evaluator")
    n_features = max((f["flat_feature_index"] for f in ffeat), default=-1) + 1
    nan_true = np.zeros(max(n_features, 1), dtype=bool)
    float_to_flat = {}
    for f in ffeat:
        nan_true[f["flat_feature_index"]] = f.get("nan_value_treatment", "AsIs") == "AsTrue"
        float_to_flat[f["feature_index"]] = f["flat_feature_index"]
    trees = j["oblivious_trees"]
    scale, bias = j.get("scale_and_bias", [1.0, [0.0]])
    bias = np.array(_floats(bias), dtype=np.float64)
    n_class = len(bias)
    split_off = [0]
    sf: list[int] = []
    border: list[float] = []
    leaf_off = [0]
    leaves: list[float] = []
    for t in trees:
        for s in t["splits"]:
            if s["split_type"] != "FloatFeature":
                raise ValueError(f"split type {s['split_type']} is not supported by the compiled evaluator")
            sf.append(float_to_flat[s["float_feature_index"]])
            border.append(float(np.float32(s["border"])))
        split_off.append(len(sf))
        lv = t["leaf_values"]
        if len(lv) != (1 << len(t["splits"])) * n_class:
            raise ValueError("unexpected CatBoost leaf layout")
        leaves.extend(float(v) for v in lv)
        leaf_off.append(len(leaves))
    return FlatOblivious(
        np.array(split_off, np.int64),
        np.array(sf, np.int64),
        np.array(border),
        np.array(leaf_off, np.int64),
        np.array(leaves),
        nan_true,
        float(scale),
        bias,
        n_class,
        n_features,
    )


# ------------------------------------------------------------------------------------------------------------------
# Thresholds quantized to per-feature bins: the one-row layout
# ------------------------------------------------------------------------------------------------------------------
# Every split of every model is rewritten as "goes right iff x > c" with c a cut of its feature, in one of two
# domains: float32 (XGBoost and CatBoost compare float32(x)) or float64 (LightGBM compares the double). A row is
# binned once for all models: bin = the number of the feature's cuts below x (one branch-free binary search per
# feature and domain), and a split whose cut is the k-th of its feature goes right iff bin > k. The rewrite is
# exact, per library:
#
# * XGBoost: right iff float32(x) >= t  <=>  float32(x) > the largest float32 below t (no float32 lies between);
# * LightGBM: right iff x > t (left iff x <= t), cut t itself;
# * CatBoost: the bit is set iff float32(x) > border, cut border itself.
#
# Missing values are routed by *slots*: a split reads the bin of its slot, a (feature, domain, missing rule,
# missing bin) the row fills once. A missing value gets bin 0 (below every cut: left, bit clear) or BIN_RIGHT (above
# every cut: right, bit set); LightGBM's ``None`` replaces NaN by 0.0, whose bin is fixed when the model is built.
DOM32, DOM64 = 0, 1
BIN_RIGHT = 0xFFFF  # a bin above every cut; a leaf's cut BIN_RIGHT never sends a row on (its child is itself)
_ZERO_MISSING = 1 << 17  # slot flag: |x| <= LGBM_ZERO is missing too (LightGBM's missing_type Zero)
XGB_DOMAIN = DOM32  # XGBoost compares float32(x) (DMatrix stores float32)


def cut_xgboost(t: float) -> np.float32:
    """XGBoost sends ``float32(x) < t`` left: right iff float32(x) > the float32 just below ``t``."""
    return np.nextafter(np.float32(t), np.float32(-np.inf))


def cut_lightgbm(t: float) -> float:
    """LightGBM sends ``x <= t`` left: right iff x > ``t``."""
    return float(t)


def cut_catboost(border: float) -> np.float32:
    """CatBoost sets the bit iff ``float32(x) > border``."""
    return np.float32(border)


@dataclass
class FeatureBins:
    """The cuts of every split of a set of models, per feature and domain, and the slots their splits read.

    ``cut32[off32[f]:off32[f + 1]]`` are feature ``f``'s sorted float32 cuts (``cut64``/``off64`` the float64 ones);
    ``slots[s]`` packs feature (bits 0-15), domain (bit 16), the Zero flag (bit 17) and the missing bin (bits 32-47).
    Build one with :meth:`build`, then convert each model with :meth:`forest` / :meth:`oblivious`."""

    n_features: int
    cut32: np.ndarray
    off32: np.ndarray
    cut64: np.ndarray
    off64: np.ndarray
    slots: np.ndarray
    _slot_of: dict[int, int] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, models: list[FlatForest | FlatOblivious]) -> FeatureBins:
        n_features = max(m.n_features for m in models)
        c32: list[list[np.float32]] = [[] for _ in range(n_features)]
        c64: list[list[float]] = [[] for _ in range(n_features)]
        for m in models:
            for f, c, dom in _cuts(m):
                (c32 if dom == DOM32 else c64)[f].append(c)
        u32 = [np.unique(np.array(c, dtype=np.float32)) for c in c32]
        u64 = [np.unique(np.array(c, dtype=np.float64)) for c in c64]
        if max(max(map(len, u32)), max(map(len, u64))) >= BIN_RIGHT:
            raise ValueError(f"a feature has more than {BIN_RIGHT - 1} distinct split thresholds")
        return cls(
            n_features,
            np.concatenate([np.zeros(0, np.float32), *u32]),
            np.cumsum([0, *map(len, u32)]).astype(np.int64),
            np.concatenate([np.zeros(0), *u64]),
            np.cumsum([0, *map(len, u64)]).astype(np.int64),
            np.zeros(0, np.int64),
        )

    def _cut_index(self, f: int, c: float, dom: int) -> int:
        cuts, off = (self.cut32, self.off32) if dom == DOM32 else (self.cut64, self.off64)
        own = cuts[off[f] : off[f + 1]]
        k = int(np.searchsorted(own, c))
        if k >= len(own) or own[k] != c:  # every cut was collected by build()
            raise ValueError(f"cut {c} of feature {f} was not binned")
        return k

    def _slot(self, f: int, dom: int, zero_missing: bool, missing_bin: int) -> int:
        word = f | (dom << 16) | (_ZERO_MISSING if zero_missing else 0) | (missing_bin << 32)
        if word not in self._slot_of:
            if len(self._slot_of) >= 0xFFFF:
                raise ValueError("more than 65535 binning slots")
            self._slot_of[word] = len(self._slot_of)
            self.slots = np.array(list(self._slot_of), dtype=np.int64)
        return self._slot_of[word]

    def forest(self, m: FlatForest) -> QuantForest:
        """``m``'s trees with siblings adjacent (right child = left + 1) and each split packed into one int64:
        cut index (bits 0-15), slot (16-31), left child (32-63); a leaf points at itself with cut BIN_RIGHT."""
        n = len(m.left)
        words = np.zeros(n, np.int64)
        value = np.zeros(n)
        trees = np.zeros(len(m.roots), np.int64)
        new = 0
        for t, root in enumerate(m.roots):
            order = [int(root)]  # breadth first: the children of order[i] are appended together
            index = {int(root): new}
            depth = {int(root): 0}
            i = 0
            while i < len(order):
                node = order[i]
                if m.left[node] >= 0:
                    for c in (int(m.left[node]), int(m.right[node])):
                        index[c] = new + len(order)
                        depth[c] = depth[node] + 1
                        order.append(c)
                i += 1
            for node in order:
                me = index[node]
                if m.left[node] < 0:
                    words[me] = BIN_RIGHT | (me << 32)
                    value[me] = m.value[node]
                    continue
                f = int(m.feature[node])
                words[me] = self._split(m, node, f) | (index[int(m.left[node])] << 32)
            trees[t] = new | (max(depth.values()) << 40)
            new += len(order)
        return QuantForest(words[:new], value[:new], trees, float(m.base[0]), m.rule, m.n_class)

    def _split(self, m: FlatForest, node: int, f: int) -> int:
        """A forest split's cut index and slot bits."""
        right = 0 if m.default_left[node] else BIN_RIGHT
        if m.rule == XGB:
            k = self._cut_index(f, cut_xgboost(m.threshold[node]), XGB_DOMAIN)
            s = self._slot(f, XGB_DOMAIN, False, right)
        else:
            k = self._cut_index(f, cut_lightgbm(m.threshold[node]), DOM64)
            mt = int(m.missing[node])
            if mt == MISSING_NONE:  # NaN is 0.0: the bin of 0.0
                own = self.cut64[self.off64[f] : self.off64[f + 1]]
                s = self._slot(f, DOM64, False, int(np.searchsorted(own, 0.0, side="left")))
            else:
                s = self._slot(f, DOM64, mt == MISSING_ZERO, right)
        return k | (s << 16)

    def oblivious(self, m: FlatOblivious) -> QuantOblivious:
        """``m``'s splits packed into one int64 each: cut index (bits 0-15), slot (16-31)."""
        words = np.zeros(len(m.split_feature), np.int64)
        for j, (f, b) in enumerate(zip(m.split_feature, m.border, strict=True)):
            k = self._cut_index(int(f), cut_catboost(b), DOM32)
            words[j] = k | (self._slot(int(f), DOM32, False, BIN_RIGHT if m.nan_true[f] else 0) << 16)
        return QuantOblivious(m.split_off, words, m.leaf_off, m.leaf_values, m.scale, m.bias, m.n_class)

    def row_args(self) -> tuple:
        """What :func:`bin_row` takes after the row."""
        return (self.cut32, self.off32, self.cut64, self.off64, self.slots)


def _cuts(m: FlatForest | FlatOblivious) -> list[tuple[int, Any, int]]:
    """Every split of ``m`` as (feature, cut, domain)."""
    if isinstance(m, FlatOblivious):
        return [(int(f), cut_catboost(b), DOM32) for f, b in zip(m.split_feature, m.border, strict=True)]
    inner = np.flatnonzero(m.left >= 0)
    if m.rule == XGB:
        return [(int(m.feature[i]), cut_xgboost(m.threshold[i]), XGB_DOMAIN) for i in inner]
    return [(int(m.feature[i]), cut_lightgbm(m.threshold[i]), DOM64) for i in inner]


@dataclass
class QuantForest:
    """A :class:`FlatForest` on binned rows (:meth:`FeatureBins.forest`): ``trees[t]`` packs tree t's root (bits
    0-39) and depth (40-63)."""

    words: np.ndarray
    value: np.ndarray
    trees: np.ndarray
    base: float
    rule: int
    n_class: int


@dataclass
class QuantOblivious:
    """A :class:`FlatOblivious` on binned rows (:meth:`FeatureBins.oblivious`)."""

    split_off: np.ndarray
    words: np.ndarray
    leaf_off: np.ndarray
    leaf_values: np.ndarray
    scale: float
    bias: np.ndarray
    n_class: int


def _below_py(cuts, lo, hi, v):  # type: ignore[no-untyped-def]
    """How many of ``cuts[lo:hi]`` (sorted) are < ``v``: a binary search whose steps depend only on the length."""
    n = hi - lo
    if n == 0:
        return 0
    base = lo
    while n > 1:
        half = n >> 1
        if cuts[base + half] < v:
            base += half
        n -= half
    return base - lo + (1 if cuts[base] < v else 0)


_below = kernel(_below_py, fastmath=False)


def _bin_row_py(z, cut32, off32, cut64, off64, slots):  # type: ignore[no-untyped-def]
    """The bin of every slot for feature row ``z`` (:class:`FeatureBins`): int64 array, one per slot."""
    nf = len(off32) - 1
    b32 = np.empty(nf, np.int64)
    b64 = np.empty(nf, np.int64)
    for f in range(nf):
        v = z[f]
        b32[f] = _below(cut32, off32[f], off32[f + 1], np.float32(v))
        b64[f] = _below(cut64, off64[f], off64[f + 1], 0.0 if abs(v) <= LGBM_ZERO else v)
    bins = np.empty(len(slots), np.int64)
    for s in range(len(slots)):
        w = slots[s]
        f = w & 0xFFFF
        v = z[f]
        missing = np.isnan(v) or ((w & _ZERO_MISSING) != 0 and abs(v) <= LGBM_ZERO)
        if missing:
            bins[s] = w >> 32
        elif (w >> 16) & 1:
            bins[s] = b64[f]
        else:
            bins[s] = b32[f]
    return bins


bin_row = kernel(_bin_row_py, fastmath=False)


def _quant_forest_py(bins, words, value, trees, base, rule):  # type: ignore[no-untyped-def]
    """A binary :class:`QuantForest`'s margin on binned row ``bins``: each tree walks its depth, branch-free."""
    acc32 = np.float32(base)
    acc = base
    for t in range(len(trees)):
        node = trees[t] & 0xFFFFFFFFFF
        for _ in range(trees[t] >> 40):
            w = words[node]
            node = (w >> 32) + (bins[(w >> 16) & 0xFFFF] > (w & 0xFFFF))
        if rule == XGB:  # XGBoost adds leaves in float32
            acc32 = acc32 + np.float32(value[node])
        else:
            acc += value[node]
    return float(acc32) if rule == XGB else acc


def _quant_oblivious_py(bins, split_off, words, leaf_off, leaf_values, scale, bias):  # type: ignore[no-untyped-def]
    """A binary :class:`QuantOblivious`'s margin on binned row ``bins``: each tree's leaf index from its bits."""
    s = 0.0
    for t in range(len(split_off) - 1):
        idx = 0
        j0 = split_off[t]
        for j in range(j0, split_off[t + 1]):
            w = words[j]
            idx |= np.int64(bins[w >> 16] > (w & 0xFFFF)) << (j - j0)
        s += leaf_values[leaf_off[t] + idx]
    return scale * s + bias


quant_forest = kernel(_quant_forest_py, fastmath=False)
quant_oblivious = kernel(_quant_oblivious_py, fastmath=False)
