"""Compiled evaluation of XGBoost, LightGBM and CatBoost models from flat arrays.

Each library's own dump is converted once into flat numpy arrays; numba kernels walk them. The conventions that
decide equality with native ``predict`` are each library's own:

* **XGBoost** (``Booster.save_raw("json")``, JSON model schema): inputs are float32 (DMatrix stores float32);
  a node sends ``x < split_condition`` left, NaN to ``default_left``; a leaf's value is its ``split_condition``;
  leaf values are added in float32, tree by tree, onto the base margin (``base_score``: a probability for
  ``binary:logistic``, turned into its logit; margins as stored for ``multi:softprob``). Trees map to classes by
  ``tree_info``.
* **LightGBM** (``Booster.dump_model()``): doubles throughout; ``NumericalDecision`` in ``tree.h``: NaN becomes 0
  unless the node's ``missing_type`` is ``NaN``; a missing value (NaN for ``NaN``, |x| <= 1e-35 for ``Zero``)
  goes to ``default_left``; otherwise ``x <= threshold`` goes left. Tree ``i`` belongs to class
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
from dataclasses import dataclass
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
            if np.isnan(v) and mt != MISSING_NAN:
                v = 0.0
            if (mt == MISSING_ZERO and abs(v) <= 1e-35) or (mt == MISSING_NAN and np.isnan(v)):
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
        thr[i] = float(node["threshold"])
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
