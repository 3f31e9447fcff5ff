"""Walk-forward purging, calibration, the Layer-1 rule, bundles that refuse tampering, compiled == native."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score
from statsmodels.stats.proportion import proportion_confint

from fxgate.engine import Bars, sample_bars
from fxgate.models import _stats
from fxgate.models.ensemble import (
    MODEL_NAMES,
    BundleError,
    Calibrator,
    EnsembleConfig,
    TreeEnsemble,
    purged_walk_forward,
)
from fxgate.models.ensemble.metrics import l1_rule, silence_note
from fxgate.models.ensemble.row import _l1_row_py
from fxgate.models.ensemble.walk_forward import split_calibration
from fxgate.models.features import FeatureEngine
from fxgate.models.labels import LabelSpec

SMALL = EnsembleConfig(n_estimators=40, max_depth=4, folds=2, test_frac=0.3)


def _refuse_constant(name):
    raise ValueError(f"{name} is not strict JSON")


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
        fit, cal = split_calibration(train, end, 0.2, embargo) if len(train) else (train, train)
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
    probs = np.array(
        [
            [0.96, 0.97, 0.99],
            [0.04, 0.02, 0.05],
            [0.96, 0.94, 0.99],
            [0.96, 0.03, 0.99],
            [0.5, 0.6, 0.7],
            [0.95, 0.95, 0.95],
        ]
    )
    fires, direction = l1_rule(probs, 0.95)
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


def test_fold_report_matches_an_independent_purged_split(fitted):
    """Each fold's figures come from the bars a naive purged, embargoed walk-forward split gives (labels from a
    naive loop), and each accuracy interval is statsmodels' Wilson interval of that fold's counts."""
    bars, ens, report, _ = fitted
    n, c, ts = len(bars), bars.close, bars.ts
    h = embargo = 1
    usable = [t for t in range(n) if t >= 61 and t + h < n]
    first = int(n * (1 - SMALL.test_frac))
    edges = [first + (n - first) * k // SMALL.folds for k in range(SMALL.folds + 1)]
    assert len(report["folds"]) == SMALL.folds
    for f, a, b in zip(report["folds"], edges[:-1], edges[1:], strict=True):
        train = [t for t in usable if t < a and t + h < a - embargo]
        test = [t for t in usable if a <= t < b]
        decided = sum(c[t + h] != c[t] for t in test)
        assert (f["train_bars"], f["bars"], f["decided_bars"]) == (len(train), len(test), decided)
        assert (f["test_start"], f["test_end"]) == (int(ts[test[0]]), int(ts[test[-1]]))
        for m in MODEL_NAMES:
            k = f[m]["accuracy"] * decided
            assert k == pytest.approx(round(k), abs=1e-9)
            lo, hi = proportion_confint(round(k), decided, alpha=0.05, method="wilson")
            assert f[m]["accuracy_ci95"] == pytest.approx((lo, hi), abs=1e-12)
    win = ens.manifest["training_window"]
    assert (win["first_ts"], win["last_ts"], win["last_label_end_ts"]) == (int(ts[61]), int(ts[n - 2]), int(ts[n - 1]))
    assert (report["silence"] is None) == (report["overall_oos"]["rule"]["signals"] > 0)


def test_silence_note_says_which_model_never_reached_the_threshold():
    overall = {
        "rule": {"signals": 0},
        "xgboost": {"max_confidence": 0.7},
        "lightgbm": {"max_confidence": 0.97},
        "catboost": {"max_confidence": 0.8},
    }
    note = silence_note(overall, 0.95)
    assert "xgboost 0.700" in note and "catboost 0.800" in note and "lightgbm" not in note
    for m in MODEL_NAMES:
        overall[m]["max_confidence"] = 0.99
    assert "no bar had all three models >= 0.95 together" in silence_note(overall, 0.95)
    overall["rule"]["signals"] = 3
    assert silence_note(overall, 0.95) is None


@pytest.mark.slow
def test_training_window_ends_at_the_latest_label_end_for_triple_barrier_labels():
    """Regression (#12.5): the manifest took the last training sample's label end; with triple-barrier labels an
    earlier sample can end later (up to h - 1 bars), and replay would start inside its label window."""
    from .test_labels import _naive_triple

    b = sample_bars()[:2600]
    h = 24
    _, end = _naive_triple(b.high, b.low, b.close, np.zeros(len(b)), h, 1.0, 1.0, 100)  # prefix-stable
    latest, pick = -1, None
    for m in range(1200, len(b)):
        t = m - h - 1  # the last sample whose label fits in b[:m]
        latest = max(latest, int(end[t]))
        if latest > end[t]:
            pick = m
            break
    assert pick is not None
    ens = TreeEnsemble()
    ens.fit(
        b[:pick], LabelSpec("triple-barrier", h, 1.0, 1.0), EnsembleConfig(n_estimators=10, max_depth=3), evaluate=False
    )
    win = ens.manifest["training_window"]
    assert win["last_label_end_ts"] == int(b.ts[latest]) > int(b.ts[end[pick - h - 1]])
    assert win["last_ts"] == int(b.ts[pick - h - 1])


def test_compiled_equals_native_on_every_bar(fitted):
    bars, ens, _, _ = fitted
    x = FeatureEngine(bars.timeframe).batch(bars)
    np.testing.assert_allclose(ens.predict_proba(x), ens.predict_proba(x, native=True), atol=1e-6, rtol=0)


def test_verdict_agrees_with_vectorized_rule(fitted):
    bars, ens, _, _ = fitted
    x = FeatureEngine(bars.timeframe).batch(bars)[100:400]
    p = ens.predict_proba(x)
    for thr in (0.95, 0.52):
        fires, direction = l1_rule(p, thr)
        for i in range(len(x)):
            v = ens.verdict(x[i], thr)
            assert v.passed == fires[i]
            assert [q.model for q in v.probs] == list(MODEL_NAMES)
            assert [q.p_up for q in v.probs] == pytest.approx(p[i].tolist())
            if v.passed:
                assert v.direction == ("BUY" if direction[i] > 0 else "SELL")
            else:
                assert v.direction == "NONE" and v.reason


def _bundle_copy(d, tmp_path, name="t"):
    t = tmp_path / name
    shutil.copytree(d, t)
    return t


def _write_manifest(t, man, *, sidecar=True, allow_nan=False):
    """Write ``man`` as the bundle's manifest; with ``sidecar`` also its matching hash (a consistent but foreign or
    hand-made manifest, so that the checks after the hash are reached)."""
    text = json.dumps(man, indent=1, allow_nan=allow_nan)
    (t / "manifest.json").write_text(text)
    if sidecar:
        (t / "manifest.json.sha256").write_text(hashlib.sha256(text.encode()).hexdigest() + "  manifest.json\n")


def test_bundle_round_trip_is_strict_json_and_verified(fitted):
    bars, ens, _, d = fitted
    text = (d / "manifest.json").read_text()
    json.loads(text, parse_constant=_refuse_constant)  # strict JSON: no NaN anywhere
    want = hashlib.sha256(text.encode()).hexdigest()
    assert (d / "manifest.json.sha256").read_text().split() == [want, "manifest.json"]
    back = TreeEnsemble.load(d)
    x = FeatureEngine(bars.timeframe).batch(bars)[200:260]
    np.testing.assert_array_equal(back.predict_proba(x), ens.predict_proba(x))
    assert back.bundle_hash == ens.bundle_hash
    # the bundle hash covers what replay trusts, not the creation time
    for key, value in (
        ("training_window", {**ens.manifest["training_window"], "first_ts": 0}),
        ("symbol", "GBPUSD"),
        ("timeframe", "H4"),
        ("label_spec", {**ens.manifest["label_spec"], "horizon": 2}),
        ("files", {}),
    ):
        other = TreeEnsemble()
        other.manifest = {**ens.manifest, key: value}
        assert other.bundle_hash != ens.bundle_hash, key
    other.manifest = {**ens.manifest, "created": "2000-01-01T00:00:00+00:00"}
    assert other.bundle_hash == ens.bundle_hash


def test_a_saved_manifest_is_strict_json_even_with_undefined_figures(fitted, tmp_path):
    """Regression (#13.4): the manifest was written with allow_nan=True (an identity calibrator or an undefined
    IC wrote NaN, which strict JSON parsers reject)."""
    import copy

    _, ens, _, _ = fitted
    e = copy.copy(ens)
    e.manifest = {**ens.manifest, "metrics": {"ic": float("nan"), "auc": float("inf"), "ci": (float("nan"), 0.5)}}
    e.save(tmp_path / "b")
    man = json.loads((tmp_path / "b" / "manifest.json").read_text(), parse_constant=_refuse_constant)
    assert man["metrics"] == {"ic": None, "auc": None, "ci": [None, 0.5]}
    assert TreeEnsemble.load(tmp_path / "b").manifest["metrics"]["ic"] is None


def test_a_swapped_model_file_is_refused(fitted, tmp_path):
    import xgboost as xgb

    _, _, _, d = fitted
    t = _bundle_copy(d, tmp_path)
    rng = np.random.default_rng(1)
    dm = xgb.DMatrix(rng.normal(size=(50, 3)), label=rng.random(50) > 0.5)
    other = xgb.train({"objective": "binary:logistic"}, dm, 2)
    other.save_model(str(t / "xgboost.json"))
    with pytest.raises(BundleError, match=r"xgboost.json: sha256 .* does not match the manifest's"):
        TreeEnsemble.load(t)
    p = _bundle_copy(d, tmp_path, "edited")
    f = p / "lightgbm.txt"
    f.write_text(f.read_text().replace("shrinkage=", "shrinkage= ", 1))
    with pytest.raises(BundleError, match=r"lightgbm.txt: sha256 .* does not match"):
        TreeEnsemble.load(p)


@pytest.mark.parametrize("edit", ["window", "symbol", "timeframe", "label_spec"])
def test_an_edited_manifest_is_refused(fitted, tmp_path, edit):
    """Regression (#13.4): nothing protected the manifest itself; moving the training window let a replay score
    bars the model was trained on."""
    _, _, _, d = fitted
    t = _bundle_copy(d, tmp_path)
    man = json.loads((t / "manifest.json").read_text())
    if edit == "window":
        man["training_window"]["last_label_end_ts"] -= 500 * 3600 * 10**9
        man["training_window"]["last_ts"] -= 500 * 3600 * 10**9
    elif edit == "label_spec":
        man["label_spec"]["horizon"] = 3
    else:
        man[edit] = {"symbol": "GBPUSD", "timeframe": "H4"}[edit]
    _write_manifest(t, man, sidecar=False)
    with pytest.raises(
        BundleError,
        match=r"manifest.json: sha256 .* does not match manifest.json.sha256.*changed "
        r"after `fxgate fit` wrote it.*Fix:",
    ):
        TreeEnsemble.load(t)
    (t / "manifest.json.sha256").unlink()
    with pytest.raises(BundleError, match=r"manifest.json.sha256: missing.*Fix:"):
        TreeEnsemble.load(t)


def test_a_manifest_cannot_send_the_hash_check_elsewhere(fitted, tmp_path):
    """Regression (#13.4): the hash check read the file names from the manifest, and loading used fixed names."""
    import xgboost as xgb

    _, _, _, d = fitted
    # outside the bundle: a faithful copy of the model beside the bundle, the manifest pointing at it
    t = _bundle_copy(d, tmp_path, "in")
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(d / "xgboost.json", tmp_path / "elsewhere" / "xgboost.json")
    man = json.loads((t / "manifest.json").read_text())
    man["files"]["xgboost"]["name"] = "../elsewhere/xgboost.json"
    _write_manifest(t, man)
    with pytest.raises(BundleError, match=r"files.xgboost.name = '../elsewhere/xgboost.json' is outside the bundle"):
        TreeEnsemble.load(t)
    man["files"]["xgboost"]["name"] = str(tmp_path / "elsewhere" / "xgboost.json")
    _write_manifest(t, man)
    with pytest.raises(BundleError, match="is outside the bundle directory"):
        TreeEnsemble.load(t)
    # inside: the manifest names the original under another name while a different model sits in xgboost.json
    u = _bundle_copy(d, tmp_path, "swap")
    shutil.copy(u / "xgboost.json", u / "original.json")
    rng = np.random.default_rng(2)
    xgb.train(
        {"objective": "binary:logistic"}, xgb.DMatrix(rng.normal(size=(40, 3)), label=rng.random(40) > 0.5), 2
    ).save_model(str(u / "xgboost.json"))
    man = json.loads((u / "manifest.json").read_text())
    man["files"]["xgboost"]["name"] = "original.json"
    _write_manifest(u, man)
    with pytest.raises(
        BundleError, match="files.xgboost.name = 'original.json', but fxgate loads xgboost from 'xgboost.json'"
    ):
        TreeEnsemble.load(u)


def test_a_model_file_linked_from_outside_is_refused(fitted, tmp_path):
    _, _, _, d = fitted
    t = _bundle_copy(d, tmp_path)
    (tmp_path / "store").mkdir()
    shutil.move(t / "catboost.cbm", tmp_path / "store" / "catboost.cbm")
    (t / "catboost.cbm").symlink_to(tmp_path / "store" / "catboost.cbm")
    with pytest.raises(BundleError, match="catboost.cbm: a link to .* outside the bundle directory"):
        TreeEnsemble.load(t)


def test_a_malformed_manifest_is_a_clear_error_naming_the_file(fitted, tmp_path):
    """Regression (#13.4): a truncated manifest raised JSONDecodeError and a missing key KeyError."""
    _, _, _, d = fitted
    t = _bundle_copy(d, tmp_path)
    text = (t / "manifest.json").read_text()
    (t / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(BundleError, match=r"manifest.json:\d+:\d+: not valid JSON .*truncated.*Fix:"):
        TreeEnsemble.load(t)
    man = json.loads(text)
    for key in ("label_spec", "training_window", "files", "calibrators", "probe"):
        broken = {k: v for k, v in man.items() if k != key}
        _write_manifest(t, broken)
        with pytest.raises(BundleError, match=f"manifest.json: missing key '{key}'. Fix:"):
            TreeEnsemble.load(t)
    _write_manifest(t, {**man, "training_window": {"first_ts": 1, "last_ts": 2}})
    with pytest.raises(BundleError, match="training_window.last_label_end_ts = None, expected an integer"):
        TreeEnsemble.load(t)
    _write_manifest(t, {**man, "label_spec": {**man["label_spec"], "horizon": 0}})
    with pytest.raises(BundleError, match="manifest.json: label_spec is malformed .*horizon"):
        TreeEnsemble.load(t)
    _write_manifest(t, {**man, "calibrators": {**man["calibrators"], "xgboost": {"kind": "platt", "slope": 2}}})
    with pytest.raises(BundleError, match="manifest.json: calibrators is malformed"):
        TreeEnsemble.load(t)
    _write_manifest(t, {**man, "calibrators": {**man["calibrators"], "lightgbm": {"kind": "sigmoid"}}})
    with pytest.raises(BundleError, match="calibrators is malformed .*kind 'sigmoid' is not one of"):
        TreeEnsemble.load(t)
    nan = json.loads(text)
    nan["probe"]["proba"][0][0] = float("nan")
    _write_manifest(t, nan, allow_nan=True)
    with pytest.raises(BundleError, match="NaN is not JSON"):
        TreeEnsemble.load(t)
    _write_manifest(t, [1, 2])
    with pytest.raises(BundleError, match="top level is a JSON list"):
        TreeEnsemble.load(t)


def test_a_bundle_from_another_feature_engine_is_refused(fitted, tmp_path):
    _, _, _, d = fitted
    f = _bundle_copy(d, tmp_path, "features")
    man = json.loads((f / "manifest.json").read_text())
    man["feature_names"][3] = "KUP_OLD"
    _write_manifest(f, man)
    with pytest.raises(BundleError, match="feature list differs"):
        TreeEnsemble.load(f)
    v = _bundle_copy(d, tmp_path, "version")
    man = json.loads((v / "manifest.json").read_text())
    man["feature_engine_version"] = "0"
    _write_manifest(v, man)
    with pytest.raises(BundleError, match="feature engine v0"):
        TreeEnsemble.load(v)
    old = _bundle_copy(d, tmp_path, "format1")
    man = json.loads((old / "manifest.json").read_text())
    man["bundle_format"] = 1
    _write_manifest(old, man)
    with pytest.raises(BundleError, match="bundle_format 1 != 2 .*refit it"):
        TreeEnsemble.load(old)
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
    out = np.empty(3)
    for r in x[:20]:
        _l1_row_py(r, ens._row_args, out)
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
