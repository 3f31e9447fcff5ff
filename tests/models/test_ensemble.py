"""Walk-forward purging, calibration, the Layer-1 rule, bundles that refuse tampering, compiled == native."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fxgate.engine import Bars, sample_bars
from fxgate.models import _stats
from fxgate.models.ensemble import (
    MODEL_NAMES,
    BundleError,
    Calibrator,
    EnsembleConfig,
    TreeEnsemble,
    _rule,
    _split_calibration,
    purged_walk_forward,
)
from fxgate.models.features import FeatureEngine
from fxgate.models.labels import LabelSpec
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score
from statsmodels.stats.proportion import proportion_confint

SMALL = EnsembleConfig(n_estimators=40, max_depth=4, folds=2, test_frac=0.3)


@given(st.integers(200, 2000), st.integers(1, 30), st.integers(1, 6), st.integers(0, 10))
def test_walk_forward_is_purged_and_embargoed(n, h, folds, embargo):
    rng = np.random.default_rng(n)
    end = np.arange(n) + rng.integers(1, h + 1, n)
    usable = (end < n) & (rng.random(n) > 0.1)
    blocks = purged_walk_forward(usable, end, folds, 0.4, embargo)
    assert len(blocks) == folds
    tested = np.concatenate([t for _, t in blocks])
    assert len(np.unique(tested)) == len(tested)  # blocks do not overlap
    for train, test in blocks:
        if len(test) == 0:
            continue
        a = test[0]
        assert (train < a).all()
        assert (end[train] < a - embargo).all()  # no label window reaches into (or just before) the test block
        assert usable[train].all() and usable[test].all()
        fit, cal = _split_calibration(train, end, 0.2, embargo) if len(train) else (train, train)
        if len(cal):
            assert (end[fit] < cal[0] - embargo).all() and (fit < cal[0]).all()


def test_wilson_and_auc_against_references(rng):
    for k, n in ((0, 10), (7, 10), (10, 10), (523, 1000)):
        lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
        assert _stats.wilson(k, n) == pytest.approx((lo, hi), abs=1e-12)
    p = rng.random(500)
    y = (rng.random(500) < p).astype(int)
    p[:50] = np.round(p[:50], 1)  # ties
    assert _stats.auc(p, y) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_calibrator_picks_the_better_map_and_is_monotone(rng):
    n = 4000
    z = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    over = 1 / (1 + np.exp(-3 * z))  # over-confident but monotone in the truth: Platt recovers a = 1/3
    c = Calibrator.fit(over, y)
    assert c.kind in ("platt", "isotonic") and set(c.chosen_by) == {"logloss_isotonic", "logloss_platt"}
    assert c.chosen_by[f"logloss_{c.kind}"] == min(c.chosen_by.values())
    assert _stats.log_loss(c(over), y) < _stats.log_loss(over, y)
    grid = np.linspace(0.001, 0.999, 200)
    assert np.all(np.diff(c(grid)) >= -1e-12)
    platt = Calibrator._fit_kind("platt", over, y)
    assert platt.a == pytest.approx(1 / 3, rel=0.15)


def test_rule_matches_the_definition():
    probs = np.array([[0.96, 0.97, 0.99], [0.04, 0.02, 0.05], [0.96, 0.94, 0.99], [0.96, 0.03, 0.99],
                      [0.5, 0.6, 0.7], [0.95, 0.95, 0.95]])  # fmt: skip
    fires, direction = _rule(probs, 0.95)
    assert fires.tolist() == [True, True, False, False, False, True]
    assert direction.tolist()[:2] == [1, -1]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    bars = sample_bars()[:2500]
    ens = TreeEnsemble()
    report = ens.fit(bars, LabelSpec("next", 1), SMALL)
    d = tmp_path_factory.mktemp("bundle")
    ens.save(d)
    return bars, ens, report, d


def test_report_is_out_of_sample_and_honest(fitted):
    bars, ens, report, _ = fitted
    assert len(report["folds"]) == 2
    for f in report["folds"]:
        assert f["test_start"] > ens.manifest["training_window"]["first_ts"]
        for m in MODEL_NAMES:
            lo, hi = f[m]["accuracy_ci95"]
            assert lo <= f[m]["accuracy"] <= hi
    rule = report["overall_oos"]["rule"]
    if rule["signals"] == 0:
        assert "fired on no out-of-sample bar" in report["silence"]
    assert ens.manifest["training_window"]["last_label_end_ts"] <= int(bars.ts[-1])


def test_compiled_equals_native_on_every_bar(fitted):
    bars, ens, _, _ = fitted
    x = FeatureEngine(bars.timeframe).batch(bars)
    np.testing.assert_allclose(ens.predict_proba(x), ens.predict_proba(x, native=True), atol=1e-6, rtol=0)


def test_verdict_agrees_with_vectorized_rule(fitted):
    bars, ens, _, _ = fitted
    x = FeatureEngine(bars.timeframe).batch(bars)[100:400]
    p = ens.predict_proba(x)
    for thr in (0.95, 0.52):
        fires, direction = _rule(p, thr)
        for i in range(len(x)):
            v = ens.verdict(x[i], thr)
            assert v.passed == fires[i]
            assert v.probs == pytest.approx(dict(zip(MODEL_NAMES, p[i], strict=True)))
            if v.passed:
                assert v.direction == ("BUY" if direction[i] > 0 else "SELL")
            else:
                assert v.direction == "NONE" and v.reason


def test_bundle_round_trip_and_tamper_refusal(fitted, tmp_path):
    bars, ens, _, d = fitted
    back = TreeEnsemble.load(d)
    x = FeatureEngine(bars.timeframe).batch(bars)[200:260]
    np.testing.assert_array_equal(back.predict_proba(x), ens.predict_proba(x))
    assert back.bundle_hash == ens.bundle_hash
    import shutil

    t = tmp_path / "tampered"
    shutil.copytree(d, t)
    p = t / "lightgbm.txt"
    p.write_text(p.read_text().replace("shrinkage=", "shrinkage= ", 1))
    with pytest.raises(BundleError, match="lightgbm.txt: sha256 .* does not match"):
        TreeEnsemble.load(t)
    f = tmp_path / "features"
    shutil.copytree(d, f)
    man = json.loads((f / "manifest.json").read_text())
    man["feature_names"][3] = "KUP_OLD"
    (f / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match="feature list differs"):
        TreeEnsemble.load(f)
    v = tmp_path / "version"
    shutil.copytree(d, v)
    man = json.loads((v / "manifest.json").read_text())
    man["feature_engine_version"] = "0"
    (v / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match="feature engine v0"):
        TreeEnsemble.load(v)
    with pytest.raises(BundleError, match="no manifest.json"):
        TreeEnsemble.load(tmp_path)


@pytest.mark.slow
def test_no_edge_on_a_random_walk(rng):
    """A leak shows up as skill where none exists: on a driftless random walk every model's out-of-sample
    accuracy must be compatible with a coin."""
    n = 3000
    ts = np.arange(n, dtype=np.int64) * 3600 * 10**9 + np.datetime64("2020-01-06", "ns").astype(np.int64)
    c = 1.1 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    o = np.r_[c[0], c[:-1]]
    hi = np.maximum(o, c) * (1 + rng.uniform(0, 5e-4, n))
    lo = np.minimum(o, c) * (1 - rng.uniform(0, 5e-4, n))
    bars = Bars(ts, o, hi, lo, c, rng.integers(1, 500, n).astype(float), symbol="RANDOM")
    report = TreeEnsemble().fit(bars, LabelSpec("next", 1), SMALL)
    for m in MODEL_NAMES:
        lo_ci, hi_ci = report["overall_oos"][m]["accuracy_ci95"]
        assert lo_ci < 0.5 < hi_ci or abs(report["overall_oos"][m]["accuracy"] - 0.5) < 0.03, m


def test_one_row_kernel_equals_batch_prediction(fitted):
    bars, ens, _, _ = fitted
    x = FeatureEngine(bars.timeframe).batch(bars)[61:]
    rows = np.array([ens.predict_row(r) for r in x])
    np.testing.assert_allclose(rows, ens.predict_proba(x), atol=1e-12, rtol=0)
    from fxgate.models._trees import _l1_row_py

    out = np.empty(3)
    for r in x[:20]:
        _l1_row_py(r, *ens._row_args, out)
        np.testing.assert_allclose(out, ens.predict_row(r), atol=1e-12, rtol=0)


def test_isotonic_calibration_never_maps_a_small_block_to_certainty(rng):
    p = np.sort(rng.random(300))
    y = (rng.random(300) < p).astype(int)
    y[-6:] = 1  # the top block: six straight wins
    from sklearn.isotonic import IsotonicRegression

    assert IsotonicRegression(out_of_bounds="clip").fit(p, y).predict([1.0])[0] == 1.0  # the raw map says "certain"
    c = Calibrator._fit_kind("isotonic", p, y)
    assert 0.0 < min(c.y) and max(c.y) < 1.0
    assert np.all(np.diff(c(np.linspace(0, 1, 500))) >= -1e-12)
    assert c(np.array([1.0]))[0] < 1.0 and c(np.array([0.0]))[0] > 0.0
