"""QuantilePrediction and the bundle's quantile models: no crossing, compiled == native, the bundle round trip and
its refusals, the leak-free target, the pinball loss against sklearn, the calibration check's size and power, the
edge rule, and failing closed."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.metrics import mean_pinball_loss

from fxgate.engine import Bar, Bars, sample_bars
from fxgate.models.ensemble import BundleError, EnsembleConfig, TreeEnsemble
from fxgate.models.ensemble import quantiles as qmod
from fxgate.models.features import FeatureEngine
from fxgate.models.labels import LabelSpec, make_labels
from fxgate.modules import Context, Matured, create
from fxgate.modules import quantile_prediction as qp

from .conftest import context_stream

TINY = EnsembleConfig(n_estimators=8, max_depth=3, folds=1, test_frac=0.2)
TAUS = np.array(qp.TAUS)
H1 = 3_600_000_000_000


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    bars = sample_bars()[:1500]
    ens = TreeEnsemble()
    ens.fit(bars, LabelSpec("next", 1), TINY, evaluate=False)
    d = tmp_path_factory.mktemp("qbundle")
    ens.save(d)
    return bars, ens, d


@pytest.fixture(scope="module")
def feats(fitted):
    bars, _, _ = fitted
    return FeatureEngine(bars.timeframe).batch(bars)


# -- the quantile models ---------------------------------------------------------------------------------------------
def test_compiled_quantiles_equal_sorted_native_and_the_twin(fitted, feats):
    _, ens, _ = fitted
    x = feats[100:400]
    compiled = np.array([ens.predict_quantiles(r) for r in x])
    np.testing.assert_allclose(compiled, ens.predict_quantiles_native(x), rtol=0, atol=1e-13)
    out = np.empty(9)
    for r in x[:20]:
        qmod._quantile_row_py(np.ascontiguousarray(r), *ens._q_args, out)
        np.testing.assert_array_equal(out, ens.predict_quantiles(r))


def test_rearrangement_is_exercised_the_raw_quantiles_do_cross(fitted, feats):
    """Separately fitted quantiles cross on some rows (so the sort matters), and sorting them is what is served."""
    _, ens, _ = fitted
    z = ens.winsor.transform(feats[100:1500])
    raw = np.column_stack([m.predict(z) for m in ens.quantiles.models])
    assert (np.diff(raw, axis=1) < 0).any(axis=1).sum() > 0
    np.testing.assert_allclose(ens.predict_quantiles_native(feats[100:1500]), np.sort(raw, axis=1), atol=0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-1e3, 1e3)), min_size=1, max_size=1),
    st.integers(0, 2**31 - 1),
)
def test_no_crossing_on_any_row(fitted, fill, seed):
    """Hypothesis: for any feature row (random, extreme, NaN, inf) the served quantiles are non-decreasing."""
    _, ens, _ = fitted
    rng = np.random.default_rng(seed)
    n = len(ens.feature_names)
    med, mad = ens.winsor.median, np.where(ens.winsor.mad > 0, ens.winsor.mad, 1.0)
    x = med + rng.normal(0, 10, n) * mad
    x[rng.random(n) < 0.3] = fill[0]
    q = ens.predict_quantiles(x)
    assert np.all(np.isfinite(q)) and np.all(np.diff(q) >= 0)


def test_forward_returns_stop_at_the_last_label_end():
    close = np.exp(np.cumsum(np.full(20, 0.01)))
    close[7] = np.nan
    rows, r = qmod.forward_returns(close, np.arange(20), 3, 15)
    assert rows.max() + 3 <= 15 and 7 not in rows and 4 not in rows  # 4 + 3 = 7: a bad close at either end
    np.testing.assert_allclose(r, np.log(close[rows + 3] / close[rows]))


def test_quantile_targets_never_look_past_the_training_windows_last_label_end():
    """Triple-barrier labels can end before t + h: the bars after the window's last label end must not change
    the quantile models (their targets are h-bar returns), so perturbing those bars changes nothing."""
    b = sample_bars()[:1800]
    h = 12
    spec = LabelSpec("triple-barrier", h, 1.0, 1.0)
    end = make_labels(b, spec).end
    latest, pick = -1, None
    for m in range(900, len(b)):
        t = m - h - 1  # the last sample whose label fits in b[:m]
        latest = max(latest, int(end[t]))
        if latest < m - 1:
            pick = m
            break
    assert pick is not None
    cfg = EnsembleConfig(n_estimators=4, max_depth=2, quantile_trees=10)
    base = b[:pick]
    a = TreeEnsemble()
    a.fit(base, spec, cfg, evaluate=False)
    last_end = int(np.searchsorted(base.ts, a.manifest["training_window"]["last_label_end_ts"]))
    assert last_end < pick - 1
    k = last_end + 1
    close = base.close.copy()
    close[k:] *= 1.01  # a move after the last label end (high/low too, so the bars stay valid)
    after = np.arange(pick) >= k
    moved = Bars(
        base.ts,
        np.where(after, base.open * 1.01, base.open),
        np.where(after, base.high * 1.01, base.high),
        np.where(after, base.low * 1.01, base.low),
        close,
        base.volume,
        base.spread,
        symbol=base.symbol,
        timeframe=base.timeframe,
    )
    c = TreeEnsemble()
    c.fit(moved, spec, cfg, evaluate=False)
    x = FeatureEngine(base.timeframe).batch(base)[200:260]
    np.testing.assert_array_equal(a.predict_quantiles_native(x), c.predict_quantiles_native(x))


# -- the bundle ------------------------------------------------------------------------------------------------------
def _copy(d, tmp_path):
    t = tmp_path / "b"
    shutil.copytree(d, t)
    return t


def _rewrite_manifest(t, man):
    text = json.dumps(man, indent=1)
    (t / "manifest.json").write_text(text)
    (t / "manifest.json.sha256").write_text(hashlib.sha256(text.encode()).hexdigest() + "  manifest.json\n")


def test_bundle_round_trip_carries_verified_quantiles(fitted, feats):
    _, ens, d = fitted
    man = json.loads((d / "manifest.json").read_text())
    assert man["quantiles"]["taus"] == list(qp.TAUS)
    assert sorted(f["name"] for f in man["quantiles"]["files"].values()) == sorted(qmod.FILES)
    back = TreeEnsemble.load(d)
    assert back.has_quantiles and back.bundle_hash == ens.bundle_hash
    for r in feats[300:340]:
        np.testing.assert_array_equal(back.predict_quantiles(r), ens.predict_quantiles(r))


def _edit_a_leaf(p):
    """Change one digit of the first leaf value: the same length, so LightGBM's ``tree_sizes`` still parse."""
    text = p.read_text()
    m = re.search(r"leaf_value=-?\d\.(\d)", text)
    p.write_text(text[: m.start(1)] + str((int(m.group(1)) + 5) % 10) + text[m.end(1) :])


def test_a_tampered_quantile_file_is_refused(fitted, tmp_path):
    _, _, d = fitted
    t = _copy(d, tmp_path)
    _edit_a_leaf(t / qmod.FILES[1])
    with pytest.raises(BundleError, match=r"lightgbm_q20\.txt: sha256 .* does not match"):
        TreeEnsemble.load(t)


def test_a_re_hashed_edited_quantile_file_fails_the_probe(fitted, tmp_path):
    """Hashes updated consistently (a hand-made bundle): the probe still catches models that are not the trained."""
    _, _, d = fitted
    t = _copy(d, tmp_path)
    p = t / qmod.FILES[4]
    _edit_a_leaf(p)
    man = json.loads((t / "manifest.json").read_text())
    man["quantiles"]["files"]["q50"]["sha256"] = hashlib.sha256(p.read_bytes()).hexdigest()
    _rewrite_manifest(t, man)
    with pytest.raises(BundleError, match="quantile predictions differ from the training-time probe"):
        TreeEnsemble.load(t)


def test_the_manifest_cannot_send_a_quantile_hash_check_elsewhere(fitted, tmp_path):
    _, _, d = fitted
    t = _copy(d, tmp_path)
    man = json.loads((t / "manifest.json").read_text())
    man["quantiles"]["files"]["q10"] = {**man["quantiles"]["files"]["q20"]}
    _rewrite_manifest(t, man)
    with pytest.raises(BundleError, match="cannot send the hash check to another file"):
        TreeEnsemble.load(t)


def test_an_old_bundle_without_quantiles_loads_and_the_module_fails_closed(fitted, tmp_path, feats):
    _, _, d = fitted
    t = _copy(d, tmp_path)
    man = json.loads((t / "manifest.json").read_text())
    del man["quantiles"]
    _rewrite_manifest(t, man)
    old = TreeEnsemble.load(t)
    assert not old.has_quantiles
    with pytest.raises(Exception, match="no quantile models"):
        old.predict_quantiles(feats[300])
    m = create("quantile_prediction")
    m.update(Context(_bar(0, 1.1), features=feats[300], ensemble=old, spread=1e-4, direction=1, bar_index=1))
    r = m.verdict()
    assert not r.passed and "bundle has no quantile models; refit" in r.reason


def test_quantiles_off_in_the_config_skips_them(fitted, tmp_path):
    import copy

    _, ens, _ = fitted
    e = copy.copy(ens)
    e.quantiles = None  # a manifest that listed quantiles must not keep the stale entry
    e.save(tmp_path / "a")
    assert "quantiles" not in json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert not TreeEnsemble.load(tmp_path / "a").has_quantiles
    e = TreeEnsemble()
    e.fit(
        sample_bars()[:700],
        LabelSpec("next", 1),
        EnsembleConfig(n_estimators=3, max_depth=2, quantiles=False),
        evaluate=False,
    )
    e.save(tmp_path / "b")
    assert "quantiles" not in json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert not TreeEnsemble.load(tmp_path / "b").has_quantiles


# -- the module on synthetic streams ---------------------------------------------------------------------------------
class FakeEnsemble:
    """Serves the quantiles carried in the feature row (its first 9 values), sorted like the real one."""

    has_quantiles = True

    def predict_quantiles(self, x):
        return np.sort(np.asarray(x[:9], dtype=np.float64))


FAKE = FakeEnsemble()


def _bar(i, close):
    return Bar(i * H1, close, close, close, close, 1.0, timeframe="H1")


def stream(log_price, q, h=1, direction=1, spread=0.0, in_sample=None):
    """Contexts shaped like the gate's: bar i (bar_index i + 1) forecasts q[i] for log(close[i + h] / close[i]);
    its Matured record arrives on bar i + h, never earlier."""
    close = np.exp(log_price)
    out = []
    for i in range(len(close)):
        matured = ()
        if i >= h:
            j = i - h
            matured = (Matured(j + 1, j * H1, i * H1, close[j], close[i], None, None, direction, spread),)
        out.append(
            Context(
                _bar(i, close[i]),
                features=q[i] if i < len(q) else np.full(9, np.nan),
                direction=direction,
                spread=spread,
                ensemble=FAKE,
                matured=matured,
                bar_index=i + 1,
                in_sample=bool(in_sample[i]) if in_sample is not None else False,
            )
        )
    return out


def run(ctxs, horizon=1, **params):
    m = create("quantile_prediction", gate={"horizon": horizon}, **params)
    for c in ctxs:
        m.update(c)
    return m


def gaussian_case(rng, n, sigma=1e-3, shift=0.0, h=1):
    """n + h bars of a Gaussian random walk; forecasts are the exact h-bar return quantiles (shifted by
    ``shift`` standard deviations: a miscalibrated model)."""
    lp = np.concatenate([[0.0], np.cumsum(rng.normal(0, sigma, n + h - 1))])
    q = np.tile((stats.norm.ppf(TAUS) + shift) * sigma * math.sqrt(h), (n + h, 1))
    return lp, q


def test_pinball_loss_and_hits_match_sklearn_and_a_naive_count():
    rng = np.random.default_rng(7)
    n = 400
    lp = np.concatenate([[0.0], np.cumsum(rng.standard_t(4, n - 1) * 1e-3)])
    q = np.sort(rng.normal(0, 1e-3, (n, 9)), axis=1)  # a different forecast on every bar
    m = run(stream(lp, q), window=250, calibration=False)
    r = np.diff(lp)  # r[j]: the return forecast at bar j
    last = slice(n - 1 - 250, n - 1)  # the 250 forecasts that have matured, in order
    want = [mean_pinball_loss(r[last], q[last, t], alpha=tau) for t, tau in enumerate(qp.TAUS)]
    np.testing.assert_allclose(m.pinball_loss(), want, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(m.hcount, (r[last, None] <= q[last]).sum(axis=0))
    np.testing.assert_allclose([qmod.pinball_loss(r[last], q[last, t], tau) for t, tau in enumerate(qp.TAUS)], want)


def test_twin_equals_kernel(monkeypatch):
    rng = np.random.default_rng(3)
    lp, q = gaussian_case(rng, 300, h=2)
    q = q + rng.normal(0, 1e-4, q.shape)
    ctxs = stream(lp, q, h=2, spread=1e-5)
    a = run(ctxs, horizon=2, window=100, min_matured=50)
    monkeypatch.setattr(qp, "_qp_bar", qp._qp_bar_py)
    monkeypatch.setattr(qp, "_qp_score", qp._qp_score_py)
    monkeypatch.setattr(qp, "_calib_worst", qp._calib_worst_py)
    b = run(ctxs, horizon=2, window=100, min_matured=50)
    for k in qp.QuantilePrediction.state_keys:
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    _same(a.verdict(), b.verdict())


def _same(ra, rb):
    assert (ra.passed, ra.reason) == (rb.passed, rb.reason)
    assert (math.isnan(ra.score) and math.isnan(rb.score)) or ra.score == rb.score


def _pass_rate(shift, reps, seed, h=1, **params):
    rng = np.random.default_rng(seed)
    passed = 0
    for _ in range(reps):
        lp, q = gaussian_case(rng, 250 * h, shift=shift, h=h)
        m = run(stream(lp, q, h=h), horizon=h, window=250, min_matured=250, **params)
        assert m.n == 250
        passed += m.calibration()[0]
    return passed / reps


def test_calibrated_quantiles_pass_the_check_at_the_stated_rate():
    """Exact quantiles of an iid Gaussian stream: all nine hit rates inside their regions in >= ci_level of the
    streams (Bonferroni makes it conservative); tolerance 3 binomial sd of 300 streams at 0.95 (0.038)."""
    rate = _pass_rate(0.0, 300, seed=11)
    assert rate >= 0.95 - 0.038, rate


def test_overlapping_horizons_are_thinned_so_the_rate_still_holds():
    """h = 3: consecutive 3-bar returns overlap; scoring every third entry keeps the hits independent."""
    rate = _pass_rate(0.0, 150, seed=12, h=3)
    assert rate >= 0.95 - 0.054, rate  # 3 sd of 150 streams


def test_shifted_quantiles_fail_the_check():
    """Power: quantiles 0.4 sd too high (P(r <= q_0.5) = 0.66 instead of 0.5) fail in >= 95% of the streams."""
    assert _pass_rate(0.4, 100, seed=13) <= 0.05
    assert _pass_rate(-0.4, 100, seed=14) <= 0.05


def test_acceptance_regions_are_the_clopper_pearson_intervals():
    """k is accepted exactly when tau lies in the Clopper-Pearson interval of k/n at confidence 1 - 0.05/9: the
    beta-quantile form for every n <= 120, scipy's binomtest for spot checks."""
    lo, hi = qp.acceptance(120, 0.95)
    a = 0.05 / 9
    for n in range(1, 121):
        k = np.arange(n + 1)[:, None]
        with np.errstate(invalid="ignore"):
            low = np.where(k == 0, 0.0, stats.beta.ppf(a / 2, k, n - k + 1))
            up = np.where(k == n, 1.0, stats.beta.ppf(1 - a / 2, k + 1, n - k))
        inside = (low <= TAUS) & (TAUS <= up)
        np.testing.assert_array_equal(inside, (lo[n] <= k) & (k <= hi[n]), err_msg=str(n))
    for n, k, t in ((57, 3, 0), (57, 30, 4), (120, 110, 8), (120, 104, 8)):
        ci = stats.binomtest(k, n, qp.TAUS[t]).proportion_ci(1 - a, "exact")
        assert (ci.low <= qp.TAUS[t] <= ci.high) == (lo[n, t] <= k <= hi[n, t])


@pytest.mark.parametrize(
    ("direction", "q20", "q80", "passed"),
    [(1, 2e-4, 9e-4, True), (1, 0.5e-4, 9e-4, False), (-1, -9e-4, -2e-4, True), (-1, -9e-4, -0.5e-4, False)],
)
def test_the_edge_rule_side_and_cost(direction, q20, q80, passed):
    """cost = spread / price = 1e-4: long needs q_0.2 > 1e-4, short q_0.8 < -1e-4."""
    q = np.array([q20 - 1e-4, q20, q20, q20, q20, q80, q80, q80, q80 + 1e-4])
    ctx = Context(_bar(0, 1.0), features=q, ensemble=FAKE, spread=1e-4, direction=direction, bar_index=1)
    m = create("quantile_prediction", calibration=False)
    m.update(ctx)
    r = m.verdict()
    assert r.passed is passed, r.reason
    want = (q20 - 1e-4) if direction > 0 else (-1e-4 - q80)
    assert r.score == pytest.approx(want, abs=1e-15)
    assert ("long: q_0.2" if direction > 0 else "short: q_0.8") in r.reason


def test_the_prediction_scored_is_the_one_stored_at_entry():
    """Forecasts change every bar: each matured return is scored against its own entry's quantiles (not the
    current bar's, not a neighbour's)."""
    rng = np.random.default_rng(5)
    n, h = 200, 4
    lp = np.concatenate([[0.0], np.cumsum(rng.normal(0, 1e-3, n - 1))])
    q = np.sort(rng.normal(0, 2e-3, (n, 9)), axis=1)
    m = run(stream(lp, q, h=h), horizon=h, window=1000, thin=False, calibration=False)
    j = np.arange(n - h)
    r = lp[j + h] - lp[j]
    np.testing.assert_array_equal(m.hcount, (r[:, None] <= q[j]).sum(axis=0))
    assert m.n == n - h


def test_fail_closed_short_history_in_sample_no_ensemble_nan_and_unknown_spread():
    rng = np.random.default_rng(9)
    lp, q = gaussian_case(rng, 60)
    m = run(stream(lp, q), min_matured=100)
    r = m.verdict()
    assert not r.passed and r.reason == "insufficient data: 60/100 matured bars"
    # in sample: nothing stored, nothing scored later
    ins = np.ones(61, dtype=bool)
    m = run(stream(lp, q, in_sample=ins))
    assert not m.verdict().passed and "training window" in m.verdict().reason and m.n == 0
    m = create("quantile_prediction")
    m.update(Context(_bar(0, 1.1), features=q[0], bar_index=1))
    assert "no Layer-1 ensemble" in m.verdict().reason and not m.verdict().passed
    m = create("quantile_prediction", calibration=False)
    m.update(Context(_bar(0, 1.1), features=np.full(9, np.nan), ensemble=FAKE, spread=1e-4, direction=1, bar_index=1))
    assert not m.verdict().passed and "not finite" in m.verdict().reason
    m = create("quantile_prediction", calibration=False)
    m.update(Context(_bar(0, 1.1), features=q[0], ensemble=FAKE, spread=math.nan, direction=1, bar_index=1))
    assert not m.verdict().passed and "spread unknown" in m.verdict().reason
    m = create("quantile_prediction", calibration=False)
    m.update(Context(_bar(0, 1.1), features=q[0], ensemble=FAKE, spread=1e-4, direction=0, bar_index=1))
    assert not m.verdict().passed and "no direction" in m.verdict().reason


def test_a_nan_realized_return_is_skipped():
    rng = np.random.default_rng(10)
    lp, q = gaussian_case(rng, 50)
    ctxs = stream(lp, q)
    c = ctxs[20]
    bad = Matured(c.matured[0].entry_bar, 0, 0, math.nan, 1.0, None, None)
    ctxs[20] = Context(c.bar, c.features, direction=1, ensemble=FAKE, matured=(bad,), bar_index=c.bar_index)
    assert run(ctxs).n == 49  # 50 matured, one with a NaN entry price


def test_state_round_trip_mid_stream():
    rng = np.random.default_rng(4)
    lp, q = gaussian_case(rng, 400, h=2)
    ctxs = stream(lp, q, h=2, spread=1e-6)
    a = run(ctxs[:250], horizon=2, window=100, min_matured=50)
    b = create("quantile_prediction", gate={"horizon": 2}, window=100, min_matured=50)
    b.load_state_dict(a.state_dict())
    for c in ctxs[250:]:
        a.update(c)
        b.update(c)
        _same(a.verdict(), b.verdict())
    assert a.n == 100


def test_with_the_real_ensemble_on_the_sample_stream(fitted):
    """End to end: the fitted bundle's quantiles on the stream's bars after its training data."""
    _, ens, _ = fitted
    ctxs = context_stream(1900)
    m = create("quantile_prediction", min_matured=100, window=250)
    for c in ctxs[1500:]:
        c.ensemble = ens
        m.update(c)
    r = m.verdict()
    assert int(m.ist[qp.I_MATURED]) == 399 and m.n == 250  # bar 1499's forecast was never stored
    assert r.reason and "bundle has no" not in r.reason
    assert np.all(np.diff(m.last) >= 0)
