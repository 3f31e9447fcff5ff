"""DoubleAdapt: ADWIN and Page–Hinkley against river (same detection points, exactly), PSI against a naive numpy
computation, detection delay of a planted loss rise, false alarms on stationary losses, the reference window
(in-sample rows, refit reset), fail-closed behaviour, twins == kernels."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import drift

from fxgate.engine import Bar
from fxgate.modules import Context, Matured, create
from fxgate.modules import double_adapt as da
from fxgate.modules._drift import ADW_TOTAL, ADW_VARIANCE, ADW_WIDTH, Adwin, PageHinkley

SEED = int(os.environ.get("FXGATE_TEST_SEED", "20260"))
HOUR = 3_600_000_000_000


def setup_module() -> None:
    print(f"test_double_adapt seed {SEED} (FXGATE_TEST_SEED overrides)")


# -- synthetic streams ----------------------------------------------------------------------------------------------
def brier_stream(rng: np.random.Generator, n: int, shift_at: int | None = None, better: bool = False):
    """Ensemble P(up) p around 0.5 and outcomes y ~ Bernoulli(p) (a calibrated model); from ``shift_at`` on the
    model is inverted (y ~ Bernoulli(1 − p): its loss rises), or with ``better`` it becomes sharper (y ~
    Bernoulli(p sharpened): its loss falls)."""
    p = np.clip(0.5 + rng.normal(0, 0.08, n), 0.01, 0.99)
    q = p.copy()
    if shift_at is not None:
        q[shift_at:] = np.clip(0.5 + 4 * (p[shift_at:] - 0.5), 0, 1) if better else 1 - p[shift_at:]
    up = rng.random(n) < q
    return p, up


def ctx_for(i: int, p: float | None, up: bool, features=None, in_sample=False, ensemble=None) -> Context:
    """Bar i, with one matured forecast of ensemble P(up) ``p`` (three equal members) whose price went up or down."""
    mat = ()
    if p is not None:
        probs = np.array([p, p, p])
        mat = (Matured(i, (i - 1) * HOUR, i * HOUR, 1.0, 1.001 if up else 0.999, probs, None),)
    bar = Bar(i * HOUR, 1.0, 1.0, 1.0, 1.0, 1.0, timeframe="H1")
    return Context(bar, features=features, matured=mat, bar_index=i, in_sample=in_sample, ensemble=ensemble)


def run_detections(m, p, up, features=None):
    """Feed the module; return the loss indices at which ADWIN and Page–Hinkley detected (flagged or not)."""
    ad, ph = [], []
    for i in range(len(p)):
        a0, p0 = int(m.ist[da.I_ADWIN_ALL]), int(m.ist[da.I_PH_ALL])
        m.update(ctx_for(i + 1, float(p[i]), bool(up[i]), None if features is None else features[i]))
        if m.ist[da.I_ADWIN_ALL] > a0:
            ad.append(i)
        if m.ist[da.I_PH_ALL] > p0:
            ph.append(i)
    return ad, ph


# -- ADWIN and Page–Hinkley against river ---------------------------------------------------------------------------
ADWIN_PARAMS = [
    {},
    {"delta": 0.01, "clock": 1, "max_buckets": 3, "min_window_length": 10, "grace_period": 20},
    {"delta": 0.1, "clock": 5, "max_buckets": 2, "min_window_length": 3, "grace_period": 5},
]


def _streams(rng):
    n = 3000
    yield np.r_[rng.uniform(0, 0.5, n // 2), rng.uniform(0, 1, n // 2)]
    yield np.r_[rng.normal(0, 1, n // 3), rng.normal(1, 1, n // 3), rng.normal(-1, 2, n // 3)]
    yield rng.binomial(1, np.where(np.arange(n) % 700 < 350, 0.2, 0.6)).astype(float)
    p, up = brier_stream(rng, n, shift_at=1500)
    yield (p - up) ** 2


@pytest.mark.parametrize("params", ADWIN_PARAMS, ids=["river-defaults", "clock1", "delta0.1"])
def test_adwin_detection_points_and_window_equal_rivers(params):
    rng = np.random.default_rng(SEED)
    total = 0
    for x in _streams(rng):
        ref, ours = drift.ADWIN(**params), Adwin(**params)
        for i, v in enumerate(x):
            ref.update(float(v))
            got = ours.update(v)
            assert got == ref.drift_detected, i
            # the window itself, bit for bit: width, sum and sum of squared deviations
            assert (ours.width, ours.afs[ADW_TOTAL], ours.afs[ADW_VARIANCE]) == (ref.width, ref.total, ref.variance)
            total += got
    assert total > 5  # the streams do drift: the comparison covers detections, not only silence


PH_PARAMS = [
    {},
    {"min_instances": 10, "delta": 0.05, "threshold": 5.0, "alpha": 0.99, "mode": "up"},
    {"min_instances": 50, "delta": 0.001, "threshold": 20.0, "alpha": 1.0, "mode": "down"},
]


@pytest.mark.parametrize("params", PH_PARAMS, ids=["river-defaults", "up", "down"])
def test_page_hinkley_detection_points_equal_rivers(params):
    rng = np.random.default_rng(SEED + 1)
    total = 0
    for x in _streams(rng):
        ref, ours = drift.PageHinkley(**params), PageHinkley(**params)
        a, b = [], []
        for i, v in enumerate(x):
            ref.update(float(v))
            if ref.drift_detected:
                a.append(i)
            if ours.update(v):
                b.append(i)
        assert a == b
        total += len(a)
    assert total > 3


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=300),
    st.integers(0, 2**32 - 1),
    st.floats(0.0, 0.5),
    st.sampled_from([1, 2, 7, 32]),
    st.sampled_from([0.002, 0.05, 0.5]),
    st.integers(2, 6),
)
def test_adwin_equals_river_on_any_bounded_stream(xs, seed, jump, clock, delta, max_buckets):
    """Property: any stream in [0, 1] (steps, ties, constants), then a noisy segment whose mean jumps by ``jump``
    halfway, gives river's detection points and window."""
    kw = {"clock": clock, "delta": delta, "max_buckets": max_buckets, "min_window_length": 3, "grace_period": 4}
    u = np.random.default_rng(seed).uniform(0.0, 0.5, 400)
    u[200:] += jump
    ref, ours = drift.ADWIN(**kw), Adwin(**kw)
    for v in [*xs, *u.tolist()]:
        ref.update(v)
        assert ours.update(v) == ref.drift_detected
        assert (ours.width, ours.afs[ADW_TOTAL], ours.afs[ADW_VARIANCE]) == (ref.width, ref.total, ref.variance)


def test_drift_twins_equal_kernels():
    rng = np.random.default_rng(SEED + 2)
    for x in _streams(rng):
        a, b = Adwin(clock=4), Adwin(clock=4, python=True)
        c, d = PageHinkley(threshold=5.0), PageHinkley(threshold=5.0, python=True)
        for v in x:
            assert a.update(v) == b.update(v)
            assert c.update(v) == d.update(v)
        for k in ("tot", "var", "cnt", "aist", "afs"):
            np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
        np.testing.assert_array_equal(c.pfs, d.pfs)
        np.testing.assert_array_equal(c.pist, d.pist)


# -- the module's loss stream ---------------------------------------------------------------------------------------
def test_module_detections_equal_river_on_its_loss_stream():
    """The module's detectors see the Brier loss of the matured forecasts (ADWIN raw, Page–Hinkley divided by the
    standard deviation of the first ph_calib losses): river on the same stream detects at the same points."""
    rng = np.random.default_rng(SEED + 3)
    p, up = brier_stream(rng, 6000, shift_at=3000)
    m = create("double_adapt", direction="both", ph_delta=0.005)
    ad, ph = run_detections(m, p, up)
    loss = (p - up) ** 2
    scale = float(np.std(loss[:100], ddof=1))
    assert m.fs[da.F_PH_SCALE] == pytest.approx(scale, rel=1e-12)
    ra, rp = drift.ADWIN(), drift.PageHinkley(min_instances=30, delta=0.005, threshold=50.0, mode="both")
    want_a, want_p = [], []
    for i, v in enumerate(loss):
        ra.update(float(v))
        if ra.drift_detected:
            want_a.append(i)
        if i >= 100:
            rp.update(float(v) / float(m.fs[da.F_PH_SCALE]))
            if rp.drift_detected:
                want_p.append(i)
    assert ad == want_a and ph == want_p
    assert want_a and want_p


@pytest.mark.parametrize("seed", range(8))
def test_a_planted_loss_rise_is_flagged_within_300_losses(seed):
    """The model's edge inverts at loss 2,000 (mean Brier 0.243 -> 0.269, a third of its standard deviation): a
    drift is flagged within 300 losses (measured: 59–233 over these seeds), the verdict vetoes and a refit is
    recommended; nothing is flagged before the shift."""
    rng = np.random.default_rng(SEED + 100 + seed)
    p, up = brier_stream(rng, 2400, shift_at=2000)
    m = create("double_adapt", psi_window=10, ref_bars=10, psi_min_valid=5)
    first = None
    for i in range(len(p)):
        m.update(ctx_for(i + 1, float(p[i]), bool(up[i]), np.zeros(2)))
        if m.drift_flagged() and first is None:
            first = i
            r = m.verdict()
            assert r.passed is False and "drift flagged" in r.reason and m.refit_recommended()
    assert first is not None and 2000 <= first < 2300, first


def test_a_falling_loss_is_not_a_drift_by_default():
    """direction="up" flags only a rise of the loss: a model that got sharper is not vetoed (river's two-sided
    detectors still see the change: direction="both" flags it)."""
    rng = np.random.default_rng(SEED + 4)
    p, up = brier_stream(rng, 4000, shift_at=1500, better=True)
    flags = {}
    for direction in ("up", "both"):
        m = create("double_adapt", direction=direction)
        run_detections(m, p, up)
        flags[direction] = int(m.ist[da.I_ADWIN_FLAGS] + m.ist[da.I_PH_FLAGS])
        assert m.ist[da.I_ADWIN_ALL] > 0  # ADWIN (two-sided, river's) detects the change either way
    assert flags["up"] == 0 and flags["both"] > 0


def test_stationary_losses_false_alarm_rates():
    """80,000 stationary Brier losses (four streams): ADWIN at river's parameters never detects (river neither);
    Page–Hinkley detects where river does, at river's parameters about once per 1,700 losses, at the module's
    (delta 0.05, one-sided) at most once per 5,000 (measured about once per 10,000)."""
    ours_defaults = river_defaults = adwin = 0
    n_ph = 0
    for k in range(4):
        rng = np.random.default_rng(SEED + 200 + k)
        p, up = brier_stream(rng, 20_000)
        x = (p - up) ** 2
        s = float(np.std(x[:100], ddof=1))
        a, ra = Adwin(), drift.ADWIN()
        ph, rph = PageHinkley(), drift.PageHinkley()
        mod = PageHinkley(delta=0.05, mode="up")
        for i, v in enumerate(x):
            ra.update(float(v))
            assert a.update(v) == ra.drift_detected
            adwin += ra.drift_detected
            if i >= 100:
                z = float(v) / s
                rph.update(z)
                assert ph.update(z) == rph.drift_detected
                river_defaults += rph.drift_detected
                ours_defaults += mod.update(z)
                n_ph += 1
    assert adwin == 0
    assert 10 <= river_defaults <= 100  # about n_ph / 1,700
    assert ours_defaults <= n_ph / 5_000


def test_hold_counts_bars_after_the_detection():
    """A flag lasts exactly ``hold`` bars: flagged on the detection bar and the hold - 1 bars after it."""
    rng = np.random.default_rng(SEED + 5)
    p, up = brier_stream(rng, 2600, shift_at=2000)
    m = create("double_adapt", hold=5, psi_window=10, ref_bars=10, psi_min_valid=5)
    i = 0
    while not m.drift_flagged():
        m.update(ctx_for(i + 1, float(p[i]), bool(up[i]), np.zeros(2)))
        i += 1
    at = int(m.ist[da.I_LAST_DRIFT])
    states = []
    for _ in range(6):  # bars without a matured forecast: no new detection possible
        m.update(ctx_for(i + 1, None, False, np.zeros(2)))
        i += 1
        states.append(m.drift_flagged())
    assert int(m.ist[da.I_LAST_DRIFT]) == at
    assert states == [True, True, True, True, False, False]


# -- PSI ------------------------------------------------------------------------------------------------------------
def psi_naive(ref: np.ndarray, recent: np.ndarray, bins: int, eps: float, min_valid: int) -> tuple[float, float]:
    """PSI per feature by the book (bins at the reference's quantiles, shares floored at eps), mean and max."""
    vals = []
    for f in range(ref.shape[1]):
        r = ref[:, f][np.isfinite(ref[:, f])]
        c = recent[:, f][np.isfinite(recent[:, f])]
        if len(r) < min_valid or len(c) < min_valid:
            continue
        cuts = np.unique(np.quantile(r, np.arange(1, bins) / bins))
        idx_r = np.searchsorted(cuts, r, side="right")
        idx_c = np.searchsorted(cuts, c, side="right")
        e = np.maximum(np.bincount(idx_r, minlength=len(cuts) + 1) / len(r), eps)
        a = np.maximum(np.bincount(idx_c, minlength=len(cuts) + 1) / len(c), eps)
        vals.append(float(np.sum((a - e) * np.log(a / e))))
    return (float(np.mean(vals)), float(np.max(vals))) if vals else (math.nan, math.nan)


def test_psi_equals_the_naive_computation_on_real_features(stream):
    """The real EURUSD feature rows (170 features, some NaN early, some discrete, 2% knocked out at random): the
    reference is the first ref_bars rows, the recent window the last psi_window rows after it; PSI (mean and max)
    equals the naive computation at every checked bar."""
    ref_bars, w = 600, 300
    m = create("double_adapt", ref_bars=ref_bars, psi_window=w)
    feats = np.array([c.features for c in stream[:2000]])
    holes = np.random.default_rng(SEED + 9).random(feats.shape) < 0.02  # missing values in the recent windows too
    feats[holes] = math.nan
    checked = 0
    for i, ctx in enumerate(stream[:2000]):
        m.update(replace(ctx, features=feats[i]))
        if i >= ref_bars + w - 1 and i % 97 == 0:
            mean, mx = psi_naive(feats[:ref_bars], feats[i - w + 1 : i + 1], 10, 1e-4, 50)
            assert m.fs[da.F_PSI_MEAN] == pytest.approx(mean, rel=1e-10)
            assert m.fs[da.F_PSI_MAX] == pytest.approx(mx, rel=1e-10)
            checked += 1
    assert checked >= 10
    assert np.isnan(feats[:ref_bars]).any()  # the NaN path is exercised


def test_psi_flags_a_shifted_feature_and_passes_a_stable_one():
    rng = np.random.default_rng(SEED + 6)
    n_ref, w = 1000, 500
    x = rng.normal(size=(n_ref + 2 * w, 4))
    x[n_ref + w :, 2] += 1.0  # one feature of four shifts by one standard deviation in the second window
    p, up = brier_stream(rng, len(x))
    m = create("double_adapt", ref_bars=n_ref, psi_window=w, psi_aggregate="max")
    psi = []
    for i in range(len(x)):
        m.update(ctx_for(i + 1, float(p[i]), bool(up[i]), x[i]))
        psi.append(m.psi)
    stable, shifted = psi[n_ref + w - 1], psi[-1]
    assert stable < 0.1 and shifted > 0.25  # iid: PSI ≈ (bins − 1)(1/n_ref + 1/w) ≈ 0.03; a 1-sd shift ≈ 1
    assert int(m.ist[da.I_PSI_FEATURE]) == 2
    r = m.verdict()
    assert r.passed is False and r.score == shifted and "feature 2" in r.reason


def test_reference_is_the_in_sample_window_when_there_is_one():
    """Rows the gate marks in sample form the reference (the last ref_bars of them); the first out-of-sample row
    fixes it and starts the recent window."""
    rng = np.random.default_rng(SEED + 7)
    x = rng.normal(size=(900, 3))
    x[:700] *= 3.0  # the in-sample rows have another spread than the out-of-sample ones
    m = create("double_adapt", ref_bars=500, min_ref=200, psi_window=100)
    for i in range(900):
        m.update(ctx_for(i + 1, 0.5, True, x[i], in_sample=i < 700))
    assert m.ist[da.I_FROZEN] == 1 and m.ist[da.I_REF_IN_SAMPLE] == 700 and m.ist[da.I_RECENT] == 200
    edges, nedges, ref_p = da.reference_bins(x[200:700], 10, 50)
    np.testing.assert_array_equal(m.edges, edges)
    np.testing.assert_array_equal(m.ref_p, ref_p)
    assert m.psi > 0.25  # out-of-sample spread differs from the training window's


@dataclass
class _Ens:
    bundle_hash: str


def test_a_refit_resets_reference_and_detectors():
    rng = np.random.default_rng(SEED + 8)
    p, up = brier_stream(rng, 600)
    x = rng.normal(size=(600, 2))
    m = create("double_adapt", ref_bars=100, psi_window=50, psi_min_valid=20, ph_calib=50)
    a = _Ens("a" * 64)
    for i in range(400):
        m.update(ctx_for(i + 1, float(p[i]), bool(up[i]), x[i], ensemble=a))
    assert m.verdict().reason.startswith("no loss drift")
    m.update(ctx_for(401, float(p[400]), bool(up[400]), x[400], ensemble=_Ens("a" * 64)))  # same bundle, new object
    assert m.ist[da.I_REFITS] == 0 and m.ist[da.I_LOSSES] == 401
    m.update(ctx_for(402, float(p[401]), bool(up[401]), x[401], ensemble=_Ens("b" * 64)))
    assert m.ist[da.I_REFITS] == 1 and m.bundle == "b" * 64
    assert m.ist[da.I_LOSSES] == 1 and m.ist[da.I_FROZEN] == 0 and m.ist[da.I_REF_ROWS] == 1
    assert m.afs[ADW_WIDTH] == 1 and not m.drift_flagged()
    assert "insufficient data" in m.verdict().reason


# -- fail closed ----------------------------------------------------------------------------------------------------
def test_short_nan_and_constant_inputs_fail_closed_or_pass_for_the_right_reason():
    m = create("double_adapt", ref_bars=50, psi_window=50)
    for i in range(100):  # features but no scored forecasts: insufficient outcomes
        m.update(ctx_for(i + 1, None, True, np.ones(3)))
    assert "insufficient data: 0/130 scored outcomes" in m.verdict().reason
    for i in range(100, 400):  # unscorable forecasts are skipped
        bad = [math.nan, -0.1, 1.5, math.inf][i % 4]
        m.update(ctx_for(i + 1, bad, True, np.ones(3)))
    assert m.ist[da.I_LOSSES] == 0
    for i in range(400, 600):  # constant losses and constant features: no drift, PSI 0 -> pass
        m.update(ctx_for(i + 1, 0.5, True, np.ones(3)))
    r = m.verdict()
    assert r.passed is True and r.score == 0.0 and m.ist[da.I_ADWIN_ALL] + m.ist[da.I_PH_ALL] == 0
    m2 = create("double_adapt", ref_bars=50, psi_window=50)
    for i in range(300):  # features all NaN: PSI undefined, fails closed with that reason
        m2.update(ctx_for(i + 1, 0.5, i % 2 == 0, np.full(3, math.nan)))
    r2 = m2.verdict()
    assert r2.passed is False and math.isnan(r2.score) and "PSI undefined" in r2.reason


def test_the_loss_is_brier_or_log_loss_of_the_members_mean():
    m = create("double_adapt", loss="log")
    m.update(ctx_for(1, 0.8, False))
    assert m.fs[da.F_LAST_LOSS] == pytest.approx(-math.log(0.2), rel=1e-15)
    m.update(ctx_for(2, 0.8, True))
    assert m.fs[da.F_LAST_LOSS] == pytest.approx(-math.log(0.8), rel=1e-15)
    b = create("double_adapt")
    members = (Matured(1, 0, HOUR, 1.0, 0.999, np.array([0.6, 0.8, 1.0]), None),)  # the ensemble's mean: 0.8
    b.update(Context(Bar(HOUR, 1.0, 1.0, 1.0, 1.0, 1.0, timeframe="H1"), matured=members))
    assert b.fs[da.F_LAST_LOSS] == pytest.approx(0.64, rel=1e-14)
    with pytest.raises(ValueError, match="use 'brier' or 'log'"):
        create("double_adapt", loss="hinge")


def test_module_kernels_equal_their_twins(stream):
    """_loss_step and _psi_step, compiled and plain Python, on the same state and inputs."""
    a = create("double_adapt", ref_bars=300, psi_window=200, ph_calib=50)
    for ctx in stream[:600]:
        a.update(ctx)
    b = create("double_adapt", ref_bars=300, psi_window=200, ph_calib=50)
    b.load_state_dict(a.state_dict())
    for ctx in stream[600:1200]:
        for m in ctx.matured:
            args = (m.probs, m.entry_price, m.exit_price, *a._args)
            da._loss_step(*a._loss_state(), *args)
            da._loss_step_py(*b._loss_state(), *args)
        for mod, step in ((a, da._psi_step), (b, da._psi_step_py)):
            step(
                *(getattr(mod, k) for k in ("rb", "rcnt", "rvalid", "term", "edges", "nedges", "ref_p", "ist", "fs")),
                ctx.features,
                1e-4,
                50,
            )
    for k in a.state_keys:
        u, v = getattr(a, k), getattr(b, k)
        assert np.array_equal(u, v, equal_nan=True) if isinstance(u, np.ndarray) else u == v, k


def test_a_restore_takes_the_snapshots_parameters():
    """load_state_dict into a module built with other parameters continues exactly like the original (the
    kernels' arguments come from the restored parameters, not the constructor's)."""
    rng = np.random.default_rng(SEED + 10)
    p, up = brier_stream(rng, 3000, shift_at=1500)
    kw = {"direction": "both", "ph_delta": 0.005, "ph_threshold": 20.0, "hold": 7, "psi_window": 20, "ref_bars": 20}
    a = create("double_adapt", **kw)
    x = rng.normal(size=(3000, 2))
    for i in range(1000):
        a.update(ctx_for(i + 1, float(p[i]), bool(up[i]), x[i]))
    b = create("double_adapt")
    b.load_state_dict(a.state_dict())
    flags = 0
    for i in range(1000, 3000):
        c = ctx_for(i + 1, float(p[i]), bool(up[i]), x[i])
        a.update(c)
        b.update(c)
        ra, rb = a.verdict(), b.verdict()
        assert (ra.passed, ra.reason, a.refit_recommended()) == (rb.passed, rb.reason, b.refit_recommended())
        flags += a.refit_recommended()
    assert flags > 0
