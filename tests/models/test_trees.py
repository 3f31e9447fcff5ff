"""The compiled evaluator equals each library's native predict (margins and probabilities), NaNs included."""

from __future__ import annotations

import catboost as cb
import lightgbm as lgb
import numpy as np
import pytest
import xgboost as xgb

from fxgate.models._trees import from_catboost, from_lightgbm, from_xgboost, margins_to_proba


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(2000, 12))
    x[rng.random(x.shape) < 0.1] = np.nan
    x[rng.random(x.shape) < 0.03] = 0.0
    x[:, 5] = np.round(x[:, 5], 1)  # ties at split thresholds
    signal = np.nan_to_num(x[:, 0]) - 0.5 * np.nan_to_num(x[:, 5]) + rng.normal(size=len(x))
    y2 = (signal > 0).astype(int)
    y3 = np.digitize(signal, [-0.7, 0.7])
    xt = rng.normal(size=(10_000, 12))
    xt[rng.random(xt.shape) < 0.1] = np.nan
    xt[rng.random(xt.shape) < 0.03] = 0.0
    xt[:, 5] = np.round(xt[:, 5], 1)
    xt[:50] = x[:50]  # rows whose values sit exactly on training thresholds
    return x, y2, y3, xt


def _check(margins, proba, native_margin, native_proba):
    np.testing.assert_allclose(margins, native_margin, rtol=0, atol=1e-6)
    np.testing.assert_allclose(proba, native_proba, rtol=0, atol=1e-6)


@pytest.mark.parametrize("k", [2, 3])
def test_xgboost(data, k):
    x, y2, y3, xt = data
    params = {"max_depth": 6, "eta": 0.1, "nthread": 1, "seed": 1}
    params |= {"objective": "multi:softprob", "num_class": 3} if k == 3 else {"objective": "binary:logistic"}
    b = xgb.train(params, xgb.DMatrix(x, label=y3 if k == 3 else y2), 150)
    f = from_xgboost(b)
    m = f.margins(xt)
    native_m = b.predict(xgb.DMatrix(xt), output_margin=True).reshape(len(xt), -1)
    native_p = b.predict(xgb.DMatrix(xt)).reshape(len(xt), -1)
    _check(m, margins_to_proba(m), native_m, native_p)
    np.testing.assert_array_equal(f.margins(xt[:300], twin=True), m[:300])


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("missing", ["nan", "zero_as_missing", "use_missing_false"])
def test_lightgbm(data, k, missing):
    x, y2, y3, xt = data
    params = {"num_leaves": 31, "verbose": -1, "num_threads": 1, "seed": 1}
    params |= {"objective": "multiclass", "num_class": 3} if k == 3 else {"objective": "binary"}
    if missing == "zero_as_missing":
        params["zero_as_missing"] = True
    if missing == "use_missing_false":
        params["use_missing"] = False
    b = lgb.train(params, lgb.Dataset(x, y3 if k == 3 else y2), 120)
    f = from_lightgbm(b)
    m = f.margins(xt)
    _check(
        m, margins_to_proba(m), b.predict(xt, raw_score=True).reshape(len(xt), -1), b.predict(xt).reshape(len(xt), -1)
    )
    np.testing.assert_array_equal(f.margins(xt[:300], twin=True), m[:300])


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("nan_mode", ["Min", "Max"])
def test_catboost(data, k, nan_mode, tmp_path):
    x, y2, y3, xt = data
    model = cb.CatBoostClassifier(
        iterations=150,
        depth=6,
        verbose=0,
        thread_count=1,
        random_seed=1,
        allow_writing_files=False,
        nan_mode=nan_mode,
        loss_function="MultiClass" if k == 3 else "Logloss",
    )
    model.fit(x, y3 if k == 3 else y2)
    f = from_catboost(model, str(tmp_path / "m.json"))
    m = f.margins(xt)
    p = model.predict_proba(xt)
    _check(
        m,
        margins_to_proba(m),
        model.predict(xt, prediction_type="RawFormulaVal").reshape(len(xt), -1),
        p[:, 1:] if k == 2 else p,
    )
    np.testing.assert_array_equal(f.margins(xt[:300], twin=True), m[:300])


def test_wrong_width_is_refused(data):
    x, y2, _, _ = data
    b = xgb.train({"objective": "binary:logistic", "nthread": 1}, xgb.DMatrix(x, label=y2), 3)
    with pytest.raises(ValueError, match="expects 12 features, got 3"):
        from_xgboost(b).margins(np.zeros((1, 3)))
