"""Exact TreeSHAP on the compiled trees (``models/_treeshap.py``) against independent references:

* each library's own TreeSHAP on the same rows: XGBoost ``pred_contribs``, LightGBM ``pred_contrib``, CatBoost
  ``ShapValues``;
* the shap package's TreeSHAP (its own C++) on the binary form of CatBoost's oblivious trees;
* the definition: Shapley values by enumeration of every coalition of the path-dependent value function, computed
  here from the model dumps with the split rules written out here (CatBoost's from the oblivious trees' leaf bits,
  not from their binary form).

Every check runs both ways a row can be explained: from the flattened leaf paths (CatBoost: its leaf-index table)
and by the tree walk.
"""

from __future__ import annotations

import itertools
import math

import catboost as cb
import lightgbm as lgb
import numpy as np
import pytest
import xgboost as xgb

from fxgate.models import _treeshap
from fxgate.models._trees import LGBM_ZERO, MISSING_NAN, MISSING_ZERO, XGB, FlatForest, FlatOblivious, from_lightgbm
from fxgate.models._treeshap import margin, shap_trees, tree_shap
from fxgate.models.ensemble.boosters import ADAPTERS

WAYS = [pytest.param(False, id="leaves"), pytest.param(True, id="walk")]


def _data(n: int = 900, k: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, k))
    y = (x[:, 0] + 0.7 * x[:, 1] * x[:, 2] - 0.5 * x[:, 0] ** 2 + 0.3 * x[:, 3] + rng.normal(size=n) > 0).astype(int)
    x[rng.random((n, k)) < 0.05] = np.nan
    x[rng.random((n, k)) < 0.03] = 0.0
    return x, y


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return _data()


@pytest.fixture(scope="module")
def xgb_model(data):
    x, y = data
    return xgb.train(
        {"objective": "binary:logistic", "max_depth": 5, "eta": 0.3, "nthread": 1, "seed": 1},
        xgb.DMatrix(x, label=y),
        40,
    )


@pytest.fixture(scope="module", params=["nan", "zero"])
def lgb_model(data, request):
    x, y = data
    params = {
        "objective": "binary",
        "num_leaves": 24,
        "verbose": -1,
        "num_threads": 1,
        "seed": 1,
        "min_data_in_leaf": 5,
        "zero_as_missing": request.param == "zero",
    }
    return lgb.train(params, lgb.Dataset(x, y), 40)


@pytest.fixture(scope="module", params=["Min", "Max"])
def cb_model(data, request):
    x, y = data
    return cb.CatBoostClassifier(
        iterations=30,
        depth=5,
        verbose=0,
        allow_writing_files=False,
        thread_count=1,
        random_seed=1,
        nan_mode=request.param,
    ).fit(x, y)


def _flat_cb(model) -> FlatOblivious:
    return ADAPTERS[2].flatten(model)


@pytest.mark.parametrize("walk", WAYS)
def test_xgboost_equals_its_own_tree_shap(data, xgb_model, walk):
    x, _ = data
    t = shap_trees(ADAPTERS[0].flatten(xgb_model))
    rows = x[:80]
    ref = xgb_model.predict(xgb.DMatrix(rows), pred_contribs=True)  # float32: its leaves and sums are float32
    for i, r in enumerate(rows):
        np.testing.assert_allclose(tree_shap(t, r, walk=walk), ref[i, :-1], rtol=0, atol=2e-6)
    assert t.expected == pytest.approx(float(ref[0, -1]), abs=2e-6)


@pytest.mark.parametrize("walk", WAYS)
def test_lightgbm_equals_its_own_tree_shap(data, lgb_model, walk):
    x, _ = data
    flat = from_lightgbm(lgb_model)
    t = shap_trees(flat)
    rows = x[:80]
    ref = lgb_model.predict(rows, pred_contrib=True, num_threads=1)
    for i, r in enumerate(rows):
        np.testing.assert_allclose(tree_shap(t, r, walk=walk), ref[i, :-1], rtol=0, atol=1e-10)
    assert t.expected == pytest.approx(float(ref[0, -1]), abs=1e-10)


@pytest.mark.parametrize("walk", WAYS)
def test_catboost_equals_its_own_tree_shap(data, cb_model, walk):
    x, _ = data
    t = shap_trees(_flat_cb(cb_model))
    rows = x[:80]
    ref = cb_model.get_feature_importance(cb.Pool(rows), type="ShapValues", thread_count=1)
    for i, r in enumerate(rows):
        np.testing.assert_allclose(tree_shap(t, r, walk=walk), ref[i, :-1], rtol=0, atol=1e-10)
    assert t.expected == pytest.approx(float(ref[0, -1]), abs=1e-10)


def test_margins_are_the_leaves_summed_in_float64(data, xgb_model, lgb_model, cb_model):
    """``margin`` is each model's own raw margin (XGBoost's to its float32 sums) and the attributions add up to it
    to float64 rounding."""
    x, _ = data
    rows = x[:40]
    cases = [
        (ADAPTERS[0].flatten(xgb_model), xgb_model.predict(xgb.DMatrix(rows), output_margin=True), 1e-5),
        (from_lightgbm(lgb_model), lgb_model.predict(rows, raw_score=True, num_threads=1), 1e-12),
        (_flat_cb(cb_model), cb_model.predict(rows, prediction_type="RawFormulaVal"), 1e-12),
    ]
    for flat, native, tol in cases:
        t = shap_trees(flat)
        for i, r in enumerate(rows):
            m = margin(t, r)
            assert m == pytest.approx(float(native[i]), abs=tol)
            assert tree_shap(t, r).sum() + t.expected == pytest.approx(m, abs=1e-12)


def _shap_package(t: _treeshap.ShapTrees, rows: np.ndarray) -> np.ndarray:
    """The shap package's path-dependent TreeSHAP (its C++) on the binary trees of ``t``. It refuses a model with a
    leaf no training row reached; such a leaf gets a weight of 1e-200 here (its share of every node's cover stays
    zero in float64)."""
    import shap

    ends = [*t.roots.tolist(), len(t.left)]
    trees = []
    for a, b in itertools.pairwise(ends):
        left, right = t.left[a:b], t.right[a:b]
        cl, cr = np.where(left >= 0, left - a, -1), np.where(right >= 0, right - a, -1)
        trees.append(
            {
                "children_left": cl,
                "children_right": cr,
                "children_default": np.where(t.default_left[a:b], cl, cr),
                "features": np.where(left >= 0, t.feature[a:b], -2),
                "thresholds": t.threshold[a:b],
                "values": t.value[a:b].reshape(-1, 1),
                "node_sample_weight": np.maximum(t.cover[a:b], 1e-200),
            }
        )
    explainer = shap.TreeExplainer({"trees": trees, "base_offset": t.base})
    # CatBoost compares float32(x) with its border: rows rounded to float32 make the package's x <= t the same test
    return explainer.shap_values(np.float32(rows).astype(np.float64))


@pytest.mark.parametrize("walk", WAYS)
def test_catboost_walk_equals_the_shap_package_on_the_same_trees(data, cb_model, walk):
    """The walk (and the table built from it) against the shap package's own TreeSHAP on the same binary trees."""
    x, _ = data
    t = shap_trees(_flat_cb(cb_model))
    rows = x[:60]
    ref = _shap_package(t, rows)
    for i, r in enumerate(rows):
        np.testing.assert_allclose(tree_shap(t, r, walk=walk), ref[i], rtol=0, atol=1e-10)


# -- the definition ------------------------------------------------------------------------------------------------
def _shapley(value, k: int) -> np.ndarray:
    """Shapley values of the k players of the set function ``value`` (a frozenset -> float), by enumeration."""
    phi = np.zeros(k)
    for i in range(k):
        others = [j for j in range(k) if j != i]
        for size in range(k):
            w = math.factorial(size) * math.factorial(k - size - 1) / math.factorial(k)
            for s in itertools.combinations(others, size):
                phi[i] += w * (value(frozenset(s) | {i}) - value(frozenset(s)))
    return phi


def _left(flat, node: int, v: float) -> bool:
    """The libraries' split rules, as their docs state them: XGBoost sends ``float32(x) < split_condition`` left,
    NaN to ``default_left``; LightGBM (``NumericalDecision``) reads |x| <= 1e-35f as 0, NaN as 0 unless the node's
    missing type is NaN, sends a missing value to ``default_left`` and ``x <= threshold`` left."""
    if flat.rule == XGB:
        return bool(flat.default_left[node]) if math.isnan(v) else bool(np.float32(v) < flat.threshold[node])
    mt = int(flat.missing[node])
    if abs(v) <= LGBM_ZERO or (math.isnan(v) and mt != MISSING_NAN):
        v = 0.0
    if (mt == MISSING_ZERO and v == 0.0) or (mt == MISSING_NAN and math.isnan(v)):
        return bool(flat.default_left[node])
    return bool(v <= flat.threshold[node])


def _forest_value(flat, x: np.ndarray):
    """v(S) of a binary forest (XGBoost / LightGBM dump): a split on a feature of S follows the row, any other
    split averages its children by cover (a child no training row reached weighs nothing)."""

    def ev(node: int, s: frozenset) -> float:
        if flat.left[node] < 0:
            return float(flat.value[node])
        a, b = int(flat.left[node]), int(flat.right[node])
        f = int(flat.feature[node])
        if f in s:
            return ev(a if _left(flat, node, float(x[f])) else b, s)
        c = float(flat.cover[node])
        if c == 0.0:
            return 0.0
        return sum(float(flat.cover[ch]) * ev(ch, s) for ch in (a, b) if flat.cover[ch] > 0.0) / c

    return lambda s: sum(ev(int(r), s) for r in flat.roots)


def _oblivious_value(m: FlatOblivious, x: np.ndarray, catboost_order: bool = True):
    """v(S) of CatBoost's oblivious trees from their leaf bits, the splits taken last one first (CatBoost's order;
    ``catboost_order=False``: first one first). At split j the row sets bit j when its feature is in S
    (float32(x) > border, NaN by the feature's nan treatment), else both values of bit j are averaged by the leaf
    weights under the bits fixed so far. A side with no weight carries none."""

    def tree(t: int, s: frozenset) -> float:
        s0, d, lo = int(m.split_off[t]), int(m.split_off[t + 1] - m.split_off[t]), int(m.leaf_off[t])
        order = list(range(d))[::-1] if catboost_order else list(range(d))

        def weight(fixed: dict[int, int]) -> float:  # the leaf weight of every index with these bits
            return sum(
                float(m.leaf_weights[lo + idx])
                for idx in range(1 << d)
                if all((idx >> j) & 1 == b for j, b in fixed.items())
            )

        def ev(level: int, fixed: dict[int, int]) -> float:
            if level == d:
                return float(m.scale) * float(m.leaf_values[lo + sum(b << j for j, b in fixed.items())])
            j = order[level]
            f = int(m.split_feature[s0 + j])
            if f in s:
                v = x[f]
                bit = bool(m.nan_true[f]) if np.isnan(v) else bool(np.float32(v) > m.border[s0 + j])
                return ev(level + 1, {**fixed, j: int(bit)})
            sides = [{**fixed, j: 0}, {**fixed, j: 1}]
            ws = [weight(side) for side in sides]
            if sum(ws) == 0.0:
                return 0.0
            return sum(w * ev(level + 1, side) for w, side in zip(ws, sides, strict=True) if w > 0.0) / sum(ws)

        return ev(0, {})

    return lambda s: sum(tree(t, s) for t in range(len(m.split_off) - 1))


def _small_model(library: str):
    x, y = _data(n=600, k=4, seed=3)
    if library == "xgboost":
        model = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1}, xgb.DMatrix(x, label=y), 4)
    elif library == "lightgbm":
        params = {"objective": "binary", "num_leaves": 7, "verbose": -1, "num_threads": 1, "min_data_in_leaf": 5}
        model = lgb.train(params, lgb.Dataset(x, y), 4)
    else:
        model = cb.CatBoostClassifier(
            iterations=4, depth=3, verbose=0, allow_writing_files=False, thread_count=1, random_seed=2
        ).fit(x, y)
    return x, model, {a.name: a for a in ADAPTERS}[library].flatten(model)


@pytest.mark.parametrize("walk", WAYS)
@pytest.mark.parametrize("library", ["xgboost", "lightgbm", "catboost"])
def test_values_are_the_shapley_values_of_the_path_dependent_game(library, walk):
    """Four features, trees of depth 3 that split on a feature twice on a path and (CatBoost) leave leaves empty."""
    x, _, flat = _small_model(library)
    t = shap_trees(flat)
    if library == "catboost":
        assert (flat.leaf_weights == 0).any()  # a leaf no training row reached
        paths = [flat.split_feature[a:b].tolist() for a, b in itertools.pairwise(flat.split_off.tolist())]
    else:
        lp = t.leaves
        assert lp is not None
        paths = [[int(flat.feature[n]) for n in lp.path_node[a:b]] for a, b in itertools.pairwise(lp.path_off.tolist())]
    assert any(len(set(p)) < len(p) for p in paths)  # a path that splits on one feature twice
    for r in x[:12]:
        value = _oblivious_value(flat, r) if library == "catboost" else _forest_value(flat, r)
        ref = _shapley(value, 4)
        np.testing.assert_allclose(tree_shap(t, r, walk=walk), ref, rtol=0, atol=1e-12)
        assert value(frozenset()) == pytest.approx(t.expected - t.base, abs=1e-12)


def test_the_order_of_an_oblivious_trees_levels_changes_its_shapley_values():
    """Path-dependent TreeSHAP is defined on a binary tree: the same oblivious trees walked first split first are
    another game, with other Shapley values. The binary form takes CatBoost's order (last split at the root), whose
    values CatBoost's own ``ShapValues`` are; on this small model the two orders differ by more than 1e-4."""
    x, model, flat = _small_model("catboost")
    own = model.get_feature_importance(cb.Pool(x[:12]), type="ShapValues", thread_count=1)[:, :-1]
    ours = np.array([tree_shap(shap_trees(flat), r) for r in x[:12]])
    first_first = np.array([_shapley(_oblivious_value(flat, r, catboost_order=False), 4) for r in x[:12]])
    np.testing.assert_allclose(ours, own, rtol=0, atol=1e-12)
    assert np.abs(first_first - own).max() > 1e-4


def test_a_side_no_training_row_reached_weighs_nothing():
    """A hand-made forest (XGBoost's rule) whose trees reuse a feature, have leaves and a whole subtree of cover 0,
    and one tree of a single leaf: the leaf paths and the walk equal the enumerated Shapley values, with no
    division by a zero cover, and the one-leaf tree is in the expected value only."""
    # tree 0 (nodes 0-8): x0 < 0 ? (x1 < 1 ? 1.0 : 5.0 [cover 0]) : (x0 < 2 ? -1.0 : (x2 < 0 ? 2.0 [cover 0] : 3.0))
    # tree 1 (nodes 9-15): x2 < 0.5 ? (x2 < -1 ? [a subtree of cover 0: x1 < 0 ? 4.0 : 6.0] : 0.5) : -0.5
    # tree 2 (node 16): one leaf, 0.25
    left = [1, 3, 5, -1, -1, -1, 7, -1, -1, 10, 12, -1, 13, -1, -1, -1, -1]
    right = [2, 4, 6, -1, -1, -1, 8, -1, -1, 15, 11, -1, 14, -1, -1, -1, -1]
    feature = [0, 1, 0, 0, 0, 0, 2, 0, 0, 2, 2, 0, 1, 0, 0, 0, 0]
    threshold = [0.0, 1.0, 2.0, 0, 0, 0, 0.0, 0, 0, 0.5, -1.0, 0, 0.0, 0, 0, 0, 0]
    value = [0, 0, 0, 1.0, 5.0, -1.0, 0, 2.0, 3.0, 0, 0, 0.5, 0, 4.0, 6.0, -0.5, 0.25]
    cover = [100, 60, 40, 60, 0, 25, 15, 0, 15, 80, 30, 30, 0, 0, 0, 50, 100]
    n = len(left)
    flat = FlatForest(
        XGB,
        np.array(feature),
        np.array(threshold, float),
        np.array(left),
        np.array(right),
        np.zeros(n, bool),
        np.zeros(n, np.int8),
        np.array(value, float),
        np.array([0, 9, 16]),
        np.zeros(3, np.int64),
        np.zeros(1),
        1,
        3,
        np.array(cover, float),
    )
    t = shap_trees(flat)
    assert t.leaves is not None
    rng = np.random.default_rng(4)
    for r in [np.array([-1.0, 2.0, -2.0]), np.array([3.0, 0.0, -0.5]), *rng.normal(0, 2, (20, 3))]:
        value_of = _forest_value(flat, r)
        ref = _shapley(value_of, 3)
        for walk in (False, True):
            np.testing.assert_allclose(tree_shap(t, r, walk=walk), ref, rtol=0, atol=1e-12)
        assert t.expected == pytest.approx(value_of(frozenset()), abs=1e-12)
        assert margin(t, r) == pytest.approx(value_of(frozenset({0, 1, 2})), abs=1e-12)


def test_refused_inputs_name_the_problem(data, xgb_model, lgb_model, cb_model):
    t = shap_trees(ADAPTERS[0].flatten(xgb_model))
    for short in (data[0][0, :7], np.zeros(9)):
        with pytest.raises(ValueError, match=f"row of 8 features; got {short.shape[0]}"):
            tree_shap(t, short)
        with pytest.raises(ValueError, match=f"row of 8 features; got {short.shape[0]}"):
            margin(t, short)
    flat = ADAPTERS[0].flatten(xgb_model)
    flat.cover = None
    with pytest.raises(ValueError, match="no \\(or invalid\\) node covers"):
        shap_trees(flat)
    flat = from_lightgbm(lgb_model)
    flat.cover = np.zeros_like(flat.cover)  # a dump without counts
    with pytest.raises(ValueError, match="no cover at its root"):
        shap_trees(flat)
    flat = _flat_cb(cb_model)
    flat.leaf_weights = np.full_like(flat.leaf_weights, np.nan)  # an export without them (from_catboost: NaN)
    with pytest.raises(ValueError, match="no \\(or invalid\\) leaf weights"):
        shap_trees(flat)


def test_a_path_of_too_many_features_is_walked(data, xgb_model, monkeypatch):
    monkeypatch.setattr(_treeshap, "MAX_PATH_FEATURES", 2)
    x, _ = data
    t = shap_trees(ADAPTERS[0].flatten(xgb_model))
    assert t.leaves is None
    ref = xgb_model.predict(xgb.DMatrix(x[:20]), pred_contribs=True)
    for i, r in enumerate(x[:20]):
        np.testing.assert_allclose(tree_shap(t, r), ref[i, :-1], rtol=0, atol=2e-6)


def test_ensemble_explains_with_the_compiled_trees_and_rebuilds_after_a_refit():
    """TreeEnsemble.explain on the sample equals each library's own TreeSHAP; the layouts are built once, and again
    for a new fit; a gate whose modules explain builds them with its models, before any bar."""
    from fxgate.engine import sample_bars
    from fxgate.engine.config import GateConfig, L4Config
    from fxgate.engine.gate import Gate
    from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
    from fxgate.models.features import FeatureEngine
    from fxgate.models.labels import LabelSpec

    bars = sample_bars()[:1500]
    ens = TreeEnsemble()
    cfg = EnsembleConfig(n_estimators=30, max_depth=4, folds=1, test_frac=0.2)
    ens.fit(bars, LabelSpec("next", 1), cfg, evaluate=False)
    assert ens._shap is None
    Gate(GateConfig(), ens, timeframe=bars.timeframe, symbol=bars.symbol)  # the default modules include shap
    layouts = ens._shap
    assert layouts is not None
    x = FeatureEngine(bars.timeframe).batch(bars)
    for r in x[[300, 900, 1400]]:
        ours, native = ens.explain(r), ens.explain_native(r)
        for o, n in zip(ours, native, strict=True):
            assert abs(o.phi.sum() + o.base - o.margin) <= o.tolerance * max(1.0, abs(o.margin))
            assert o.margin == pytest.approx(n.margin, abs=1e-5)
            np.testing.assert_allclose(o.phi, n.phi, rtol=0, atol=1e-5)
            assert o.base == pytest.approx(n.base, abs=1e-5)
    assert ens._shap is layouts
    ens.fit(bars[:1200], LabelSpec("next", 1), cfg, evaluate=False)
    assert ens._shap is None
    no_shap = GateConfig(l4=L4Config(modules=tuple(m for m in GateConfig().l4.modules if m != "shap")))
    Gate(no_shap, ens, timeframe=bars.timeframe, symbol=bars.symbol)
    assert ens._shap is None  # no module explains: nothing built


def test_a_bundle_that_cannot_be_explained_is_refused_before_the_swap():
    """set_ensemble builds the layouts first: a model without covers is refused with the fix, and the gate keeps
    its models, hashes and certification."""
    import copy

    from fxgate.engine import sample_bars
    from fxgate.engine.config import GateConfig
    from fxgate.engine.gate import Gate
    from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
    from fxgate.models.labels import LabelSpec

    bars = sample_bars()[:1200]
    ens = TreeEnsemble()
    ens.fit(bars, LabelSpec("next", 1), EnsembleConfig(n_estimators=10, max_depth=3, folds=1), evaluate=False)
    gate = Gate(GateConfig(), ens, timeframe=bars.timeframe, symbol=bars.symbol)
    bad = copy.copy(ens)
    bad.compiled = dict(ens.compiled)
    bad.compiled["xgboost"] = copy.copy(ens.compiled["xgboost"])
    bad.compiled["xgboost"].cover = None
    bad._shap = None
    before = (gate.ensemble, dict(gate.model_hashes), gate.certification, gate.layers)
    with pytest.raises(ValueError, match="node covers"):
        gate.set_ensemble(bad)
    assert (gate.ensemble, dict(gate.model_hashes), gate.certification, gate.layers) == before
