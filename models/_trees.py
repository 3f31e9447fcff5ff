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

#: ``FlatForest.rule``: whose split and accumulation conventions a forest follows (the module docstring); CB: a
#: CatBoost split walked as a binary node (``fxgate.models._treeshap``)
XGB, LGBM, CB = 0, 1, 2
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
    #: each node's cover, what TreeSHAP weighs its children by (XGBoost's ``sum_hessian``, LightGBM's data count)
    cover: np.ndarray | None = None

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
    #: the training rows (sample weight) of each leaf, what TreeSHAP weighs a split's sides by
    leaf_weights: np.ndarray | None = None

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
def _go_left_py(v, threshold, default_left, missing, rule):  # type: ignore[no-untyped-def]
    """Whether the value ``v`` goes left at a split (rules in the module docstring): XGBoost (``rule`` XGB),
    LightGBM (LGBM), or a CatBoost split walked as a binary node (CB: right iff the bit is set, i.e.
    ``float32(v) > threshold``; NaN left iff ``default_left``)."""
    if rule == XGB:
        if np.isnan(v):
            return default_left
        return np.float32(v) < threshold
    if rule == CB:
        if np.isnan(v):
            return default_left
        return not np.float32(v) > threshold
    if abs(v) <= LGBM_ZERO or (np.isnan(v) and missing != MISSING_NAN):
        v = 0.0
    if (missing == MISSING_ZERO and v == 0.0) or (missing == MISSING_NAN and np.isnan(v)):
        return default_left
    return v <= threshold


go_left = kernel(_go_left_py, fastmath=False)


def _leaf_py(x, node, feature, threshold, left, right, default_left, missing, rule):  # type: ignore[no-untyped-def]
    """Walk one tree from ``node`` for feature row ``x`` and return the leaf's index (rules in the module docstring)."""
    while left[node] >= 0:
        if go_left(x[feature[node]], threshold[node], default_left[node], missing[node], rule):
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
    feats, thr, lft, rgt, dl, val, roots, cov = [], [], [], [], [], [], [], []
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
        cov.append(np.array(tree["sum_hessian"], dtype=np.float64))
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
        cat(cov),
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
    cov: list[float] = []
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
        # a one-leaf tree's root carries no count: it is never split, and TreeSHAP gives it no attribution
        cov.append(float(node.get("leaf_count", node.get("internal_count", 0))))
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
        np.array(cov),
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
    weights: list[float] = []
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
        weights.extend(float(w) for w in t.get("leaf_weights", [math.nan] * (1 << len(t["splits"]))))
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
        np.array(weights),
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
BIN_RIGHT = 0xFFFF  # a bin above every cut; a leaf's cut BIN_RIGHT never sends a row on (its child is itself)
LGBM_SLOT = 1 << 16  # slot flag: a LightGBM split, which reads |x| <= LGBM_ZERO as 0.0
_ZERO_MISSING = 1 << 17  # slot flag: |x| <= LGBM_ZERO is missing too (LightGBM's missing_type Zero)
_F32_TOP = 2.0**128  # the float32 above float32's largest finite value, had it one: where rounding overflows to inf


def cut_xgboost(t: float) -> np.float32:
    """XGBoost sends ``float32(x) < t`` left: right iff float32(x) > the float32 just below ``t``."""
    return np.nextafter(np.float32(t), np.float32(-np.inf))


def cut_lightgbm(t: float) -> float:
    """LightGBM sends ``x <= t`` left: right iff x > ``t``."""
    return float(t)


def cut_catboost(border: float) -> np.float32:
    """CatBoost sets the bit iff ``float32(x) > border``."""
    return np.float32(border)


def above32(c: np.float32) -> float:
    """The double ``b`` with ``x > b`` iff ``float32(x) > c``, for every double ``x`` (NaN aside): the largest
    double that rounds to at most ``c`` (round to nearest, ties to even, as numpy and XGBoost's DMatrix and
    CatBoost convert). ``float32(x) > c`` iff x rounds to ``u``, the float32 after ``c``, or above: iff x is past
    the midpoint of ``c`` and ``u`` (exact in double), or on it when the tie goes to ``u``. So one sorted list of
    doubles per feature bins a row for every library's splits at once (:class:`FeatureBins`)."""
    c = np.float32(c)
    if np.isnan(c):
        raise ValueError("a NaN split threshold")
    if c == np.inf:
        return math.inf  # nothing is above it: x > inf never holds
    with np.errstate(over="ignore"):
        u = np.nextafter(c, np.float32(np.inf))
    lo = -_F32_TOP if c == -np.inf else float(c)
    hi = _F32_TOP if u == np.inf else float(u)
    mid = (lo + hi) / 2  # exact: two adjacent float32s and their mean fit a double's mantissa
    with np.errstate(over="ignore"):
        up = np.float32(mid) == u  # the tie rounds up to u: mid itself is above c
    b = float(np.nextafter(mid, -np.inf)) if up else mid
    with np.errstate(over="ignore"):
        assert np.float32(b) <= c and np.float32(np.nextafter(b, np.inf)) > c, (c, b)
    return b


@dataclass
class FeatureBins:
    """The cuts of every split of a set of models in one sorted list of doubles per feature, and the slots their
    splits read.

    Every split is rewritten as "right iff v > b" for one double ``b``: LightGBM's ``x <= t`` as ``b = t`` on the
    value LightGBM reads (``|x| <= kZeroThreshold`` as 0.0); the float32 compares of XGBoost and CatBoost as
    ``b = above32(c)`` on the double itself. ``cuts[off[f]:off[f + 1]]`` are feature ``f``'s distinct ``b``,
    sorted; a row's bin for ``f`` is how many of them are below its value, so "right iff bin > k" for the k-th cut.
    ``zero_bin[f]`` is the bin of 0.0 (a LightGBM split's tiny values); ``slots[s]`` packs feature (bits 0-15), the
    LightGBM flag (bit 16), the Zero flag (bit 17) and the missing bin (bits 32-47). Build one with :meth:`build`,
    then convert each model with :meth:`forest` / :meth:`oblivious`.

    The search layout (:func:`bin_row`): ``order`` lists the features by decreasing ``steps`` (``2**steps`` > their
    number of cuts); ``padded[poff[j]:poff[j + 1]]`` are feature ``order[j]``'s cuts padded with +inf to
    ``2**steps[j]``, so its bin is ``steps[j]`` halvings whatever the value (:func:`_bin_row_py`)."""

    n_features: int
    cuts: np.ndarray
    off: np.ndarray
    zero_bin: np.ndarray
    slots: np.ndarray
    padded: np.ndarray
    poff: np.ndarray
    order: np.ndarray
    steps: np.ndarray
    _slot_of: dict[int, int] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, models: list[FlatForest | FlatOblivious]) -> FeatureBins:
        n_features = max(m.n_features for m in models)
        per: list[list[float]] = [[] for _ in range(n_features)]
        for m in models:
            for f, b in _cuts(m):
                per[f].append(b)
        own = [np.unique(np.array(c, dtype=np.float64)) for c in per]
        if max(map(len, own)) >= BIN_RIGHT:
            raise ValueError(f"a feature has more than {BIN_RIGHT - 1} distinct split thresholds")
        steps = np.array([int(len(c)).bit_length() for c in own], dtype=np.int64)  # 2**steps > len(c)
        order = np.argsort(-steps, kind="stable").astype(np.int64)
        padded = [np.concatenate([own[f], np.full((1 << steps[f]) - len(own[f]), np.inf)]) for f in order]
        return cls(
            n_features,
            np.concatenate([np.zeros(0), *own]),
            np.cumsum([0, *map(len, own)]).astype(np.int64),
            np.array([np.searchsorted(c, 0.0, side="left") for c in own], dtype=np.int64),
            np.zeros(0, np.int64),
            np.concatenate([np.zeros(0), *padded]),
            np.cumsum([0, *map(len, padded)]).astype(np.int64),
            order,
            steps[order],
        )

    def _cut_index(self, f: int, b: float) -> int:
        own = self.cuts[self.off[f] : self.off[f + 1]]
        k = int(np.searchsorted(own, b))
        if k >= len(own) or own[k] != b:  # every cut was collected by build()
            raise ValueError(f"cut {b} of feature {f} was not binned")
        return k

    def _slot(self, f: int, lgbm: bool, zero_missing: bool, missing_bin: int) -> int:
        word = f | (LGBM_SLOT if lgbm else 0) | (_ZERO_MISSING if zero_missing else 0) | (missing_bin << 32)
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
            k = self._cut_index(f, above32(cut_xgboost(m.threshold[node])))
            s = self._slot(f, False, False, right)
        else:
            k = self._cut_index(f, cut_lightgbm(m.threshold[node]))
            mt = int(m.missing[node])
            if mt == MISSING_NONE:  # NaN is 0.0: the bin of 0.0
                s = self._slot(f, True, False, int(self.zero_bin[f]))
            else:
                s = self._slot(f, True, mt == MISSING_ZERO, right)
        return k | (s << 16)

    def oblivious(self, m: FlatOblivious) -> QuantOblivious:
        """``m``'s splits packed into one int64 each: cut index (bits 0-15), slot (16-31)."""
        words = np.zeros(len(m.split_feature), np.int64)
        for j, (f, b) in enumerate(zip(m.split_feature, m.border, strict=True)):
            k = self._cut_index(int(f), above32(cut_catboost(b)))
            words[j] = k | (self._slot(int(f), False, False, BIN_RIGHT if m.nan_true[f] else 0) << 16)
        return QuantOblivious(m.split_off, words, m.leaf_off, m.leaf_values, m.scale, m.bias, m.n_class)

    def row_args(self) -> tuple:
        """What :func:`bin_row` takes after the row."""
        return (self.padded, self.poff, self.order, self.steps, self.zero_bin, self.slots)


def _cuts(m: FlatForest | FlatOblivious) -> list[tuple[int, float]]:
    """Every split of ``m`` as (feature, its double cut ``b``: right iff v > b)."""
    if isinstance(m, FlatOblivious):
        return [(int(f), above32(cut_catboost(b))) for f, b in zip(m.split_feature, m.border, strict=True)]
    inner = np.flatnonzero(m.left >= 0)
    if m.rule == XGB:
        return [(int(m.feature[i]), above32(cut_xgboost(m.threshold[i]))) for i in inner]
    return [(int(m.feature[i]), cut_lightgbm(m.threshold[i])) for i in inner]


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


def _bin_row_py(z, padded, poff, order, steps, zero_bin, slots):  # type: ignore[no-untyped-def]
    """The bin of every slot for feature row ``z`` (:class:`FeatureBins`): int64 array, one per slot.

    A feature's bin is how many of its cuts are below its value: a binary search over its cuts padded to
    ``2**steps`` (+inf pads are never below), one halving per step, no data-dependent branch. The features are
    searched in lockstep, step by step, so the loads of one step are independent of each other and the CPU
    overlaps them (one feature after another, each search is a chain of dependent loads: 3x slower here)."""
    nf = len(order)
    v = np.empty(nf)
    base = np.zeros(nf, np.int64)
    for j in range(nf):
        v[j] = z[order[j]]
    for s in range(steps[0] if nf else 0):
        for j in range(nf):
            k = steps[j]
            if k <= s:
                break  # the rest have fewer steps (order is by decreasing steps)
            half = np.int64(1) << (k - s - 1)
            i = base[j]
            base[j] = i + half * (padded[poff[j] + i + half - 1] < v[j])
    b = np.empty(nf, np.int64)
    for j in range(nf):
        b[order[j]] = base[j]
    bins = np.empty(len(slots), np.int64)
    for s in range(len(slots)):
        w = slots[s]
        f = w & 0xFFFF
        x = z[f]
        if np.isnan(x) or ((w & _ZERO_MISSING) != 0 and abs(x) <= LGBM_ZERO):
            bins[s] = w >> 32
        elif (w & LGBM_SLOT) != 0 and abs(x) <= LGBM_ZERO:  # LightGBM reads it as 0.0
            bins[s] = zero_bin[f]
        else:
            bins[s] = b[f]
    return bins


bin_row = kernel(_bin_row_py, fastmath=False)


def _quant_forest_py(bins, words, value, trees, base, rule):  # type: ignore[no-untyped-def]
    """A binary :class:`QuantForest`'s margin on binned row ``bins``. The trees are walked level by level, every
    tree one step per level to the deepest tree's depth (a leaf points at itself, so extra steps keep it): the
    steps of one level are independent loads the CPU overlaps, with no per-tree loop exit to mispredict. The
    leaves are then added in tree order (float32 for XGBoost), the float walk's and the library's order."""
    n = len(trees)
    nodes = np.empty(n, np.int64)
    depth = 0
    for t in range(n):
        nodes[t] = trees[t] & 0xFFFFFFFFFF
        depth = max(depth, trees[t] >> 40)
    for _ in range(depth):
        for t in range(n):
            w = words[nodes[t]]
            nodes[t] = (w >> 32) + (bins[(w >> 16) & 0xFFFF] > (w & 0xFFFF))
    acc32 = np.float32(base)
    acc = base
    for t in range(n):
        if rule == XGB:  # XGBoost adds leaves in float32
            acc32 = acc32 + np.float32(value[nodes[t]])
        else:
            acc += value[nodes[t]]
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
