"""SHAP module: ``TreeEnsemble.explain`` (fxgate's TreeSHAP on the compiled trees) is additive and equals the
shap package's TreeExplainer on the native models (for CatBoost the package returns CatBoost's own values)."""

from __future__ import annotations

import numpy as np
import pytest
import shap
import xgboost as xgb

from fxgate.engine import sample_bars
from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
from fxgate.models.features import FeatureEngine
from fxgate.models.labels import LabelSpec
from fxgate.modules import Context, create


@pytest.fixture(scope="module")
def ens_and_x():
    bars = sample_bars()[:1500]
    ens = TreeEnsemble()
    ens.fit(bars, LabelSpec("next", 1), EnsembleConfig(n_estimators=30, max_depth=4, folds=1, test_frac=0.2))
    x = FeatureEngine(bars.timeframe).batch(bars)
    return bars, ens, x


def _tree_shap(ens, x_row):
    """model name -> (attributions, base value, raw margin) for one (raw) feature row."""
    return {e.model: (e.phi, e.base, e.margin) for e in ens.explain(x_row)}


def test_tree_shap_is_additive_and_matches_the_shap_package(ens_and_x):
    _, ens, x = ens_and_x
    raw = x[[200, 700, 1400]]
    rows = ens.winsor.transform(raw)
    for r in raw:
        out = _tree_shap(ens, r)
        assert list(out) == ["xgboost", "lightgbm", "catboost"]
        for model, (phi, base, margin) in out.items():
            assert abs(phi.sum() + base - margin) <= 1e-9 * max(1.0, abs(margin)), model
    ref = shap.TreeExplainer(ens.models["lightgbm"]).shap_values(rows)
    ref = ref[1] if isinstance(ref, list) else ref
    for i, r in enumerate(raw):
        np.testing.assert_allclose(_tree_shap(ens, r)["lightgbm"][0], ref[i], atol=1e-6)
    ref_x = shap.TreeExplainer(ens.models["xgboost"]).shap_values(xgb.DMatrix(rows))
    for i, r in enumerate(raw):
        np.testing.assert_allclose(_tree_shap(ens, r)["xgboost"][0], ref_x[i], atol=1e-5)
    ref_c = shap.TreeExplainer(ens.models["catboost"]).shap_values(rows)
    for i, r in enumerate(raw):
        np.testing.assert_allclose(_tree_shap(ens, r)["catboost"][0], ref_c[i], atol=1e-6)


def test_shap_verdict_names_top_contributors_and_applies_the_share_rule(ens_and_x):
    bars, ens, x = ens_and_x
    m = create("shap")
    m.update(Context(bars[900], features=x[900], ensemble=ens))
    r = m.verdict()
    assert "top contributors xgboost:" in r.reason and 0 < r.score <= 1
    strict = create("shap", max_share=0.0)
    strict.update(Context(bars[900], features=x[900], ensemble=ens))
    assert not strict.verdict().passed and "carries" in strict.verdict().reason
    top = r.reason.split("xgboost: ")[1].split(" ")[0]
    black = create("shap", blacklist=(top,))
    black.update(Context(bars[900], features=x[900], ensemble=ens))
    assert not black.verdict().passed and f"blacklisted {top}" in black.verdict().reason
