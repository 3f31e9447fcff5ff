"""Features against pandas references written from the published definitions; streaming == batch; no look-ahead."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from naive import alpha158_pandas, realized_vol_pandas

from fxgate.engine import Bars, sample_bars
from fxgate.models import _feature_kernels
from fxgate.models.features import FeatureEngine, MadWinsorizer, feature_names

N = 1500  # bars of the sample used for the slow pandas references


@pytest.fixture(scope="module")
def sample():
    return sample_bars()[:N]


@pytest.fixture(scope="module")
def feats(sample):
    return FeatureEngine("H1").batch(sample)


def test_names_and_shape(feats):
    names = feature_names()
    assert len(names) == len(set(names)) == feats.shape[1] == 170
    assert names[:3] == ["KMID", "KLEN", "KMID2"] and "ROC60" in names and "VSUMD5" in names


def test_alpha158_matches_qlib_expressions(sample, feats):
    ref = alpha158_pandas(sample.open, sample.high, sample.low, sample.close, sample.volume)
    names = feature_names()
    for col in ref.columns:
        ours = feats[:, names.index(col)]
        theirs = ref[col].to_numpy()
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs), err_msg=f"{col}: NaN pattern")
        ok = ~np.isnan(theirs)
        np.testing.assert_allclose(ours[ok], theirs[ok], rtol=1e-7, atol=1e-9, err_msg=col)


def test_realized_volatility_family(sample, feats):
    eng = FeatureEngine("H1")
    ref = realized_vol_pandas(sample.close, eng.bpd, eng.lm_k)
    names = feature_names()
    for col in ref.columns:
        ours = feats[:, names.index(col)]
        theirs = ref[col].to_numpy()
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs), err_msg=col)
        ok = ~np.isnan(theirs)
        np.testing.assert_allclose(ours[ok], theirs[ok], rtol=1e-9, atol=1e-15, err_msg=col)


def test_time_and_spread_features(sample, feats):
    names = feature_names()
    t = pd.DatetimeIndex(sample.times)
    sec = t.hour * 3600 + t.minute * 60 + t.second
    np.testing.assert_allclose(feats[:, names.index("TOD_SIN")], np.sin(2 * np.pi * sec / 86400), atol=1e-12)
    np.testing.assert_array_equal(feats[:, names.index("DOW")], t.day_of_week)
    np.testing.assert_array_equal(feats[:, names.index("SESS_LONDON")], ((t.hour >= 7) & (t.hour < 16)).astype(float))
    assert np.isnan(feats[:, names.index("SPREAD_REL")]).all()
    spread = np.full(len(sample), 1.2e-4)
    b = Bars(sample.ts, sample.open, sample.high, sample.low, sample.close, sample.volume, spread)
    np.testing.assert_allclose(FeatureEngine("H1").batch(b)[:, -1], spread / sample.close, rtol=1e-15)


def test_streaming_equals_batch_on_the_whole_sample():
    bars = sample_bars()
    eng = FeatureEngine("H1")
    batch = eng.batch(bars)
    live = np.array([eng.update(b) for b in bars])
    np.testing.assert_array_equal(np.isnan(live), np.isnan(batch))
    assert np.nanmax(np.abs(live - batch)) <= 1e-12


def test_no_look_ahead(sample, rng):
    base = FeatureEngine("H1").batch(sample)
    for t in (70, 600, 1200):
        k = len(sample) - t - 1
        scale = 1 + rng.normal(0, 0.01, k)
        o, h, lo, c = (
            np.r_[a[: t + 1], a[t + 1 :] * scale] for a in (sample.open, sample.high, sample.low, sample.close)
        )
        v = np.r_[sample.volume[: t + 1], rng.integers(1, 9999, k)]
        pert = FeatureEngine("H1").batch(Bars(sample.ts, o, h, lo, c, v))
        np.testing.assert_array_equal(pert[: t + 1], base[: t + 1])
        assert not np.array_equal(pert[t + 1 :], base[t + 1 :], equal_nan=True)


def test_state_dict_round_trip(sample):
    a = FeatureEngine("H1")
    for b in sample[:700]:
        a.update(b)
    snap = a.state_dict()
    b2 = FeatureEngine("H1")
    b2.load_state_dict(snap)
    for bar in sample[700:760]:
        np.testing.assert_array_equal(a.update(bar), b2.update(bar))
    with pytest.raises(ValueError, match="feature state is for H1"):
        FeatureEngine("M1").load_state_dict(snap)


def test_bad_bar_is_refused_and_state_untouched(sample):
    eng = FeatureEngine("H1")
    for b in sample[:100]:
        eng.update(b)
    snap = eng.state_dict()
    bad = sample[100]
    with pytest.raises(ValueError, match="not applied"):
        eng.update(replace(bad, close=float("nan")))
    for k, v in snap.items():
        assert np.array_equal(v, eng.state_dict()[k]) if isinstance(v, np.ndarray) else v == eng.state_dict()[k]


def test_constant_prices_and_zero_volume_do_not_crash():
    n = 200
    ts = np.arange(n, dtype=np.int64) * 3600 * 10**9
    ones = np.ones(n)
    x = FeatureEngine("H1").batch(Bars(ts, ones, ones, ones, ones, np.zeros(n)))
    names = feature_names()
    assert np.isnan(x[-1, names.index("RSQR20")]) and np.isnan(x[-1, names.index("CORR20")])
    assert x[-1, names.index("STD20")] == 0.0 and x[-1, names.index("RANK20")] == pytest.approx(0.525)


@pytest.mark.slow
def test_pure_python_twin_equals_compiled_kernel(sample, tmp_path):
    out = tmp_path / "twin.npy"
    code = (
        "import numpy as np; from fxgate.engine import sample_bars; from fxgate.models.features import FeatureEngine;"
        f"np.save(r'{out}', FeatureEngine('H1').batch(sample_bars()[:90]))"
    )
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=600)
    twin = np.load(out)
    compiled = FeatureEngine("H1").batch(sample_bars()[:90])
    np.testing.assert_array_equal(np.isnan(twin), np.isnan(compiled))
    # fastmath (reassociation, contraction) moves cancellation-prone sums such as 2c-h-l by ~1e-13
    np.testing.assert_allclose(twin, compiled, rtol=1e-9, atol=1e-12)


def test_mad_winsorizer_against_numpy(rng):
    x = rng.standard_t(2, size=(500, 3))
    x[5, 1] = np.nan
    w = MadWinsorizer(k=3.0).fit(x[:300])
    med = np.nanmedian(x[:300], axis=0)
    mad = np.nanmedian(np.abs(x[:300] - med), axis=0)
    y = w.transform(x)
    np.testing.assert_allclose(y[300:], np.clip(x[300:], med - 3 * mad, med + 3 * mad))
    assert np.isnan(y[5, 1])
    assert np.array_equal(MadWinsorizer.from_dict(w.to_dict()).transform(x), y, equal_nan=True)


def test_every_state_slot_has_one_name():
    """The kernel's state is indexed by named slots: each row of ``ring``/``rv_ring`` and each entry of ``ist``/``fst``
    has exactly one name (R_*, RV_*, I_*, F_*) and none points past its array."""
    eng = FeatureEngine("H1")
    for prefix, size in (
        ("R_", eng.ring.shape[0]),
        ("RV_", eng.rv_ring.shape[0]),
        ("I_", len(eng.ist)),
        ("F_", len(eng.fst)),
    ):
        values = sorted(v for k, v in vars(_feature_kernels).items() if k.startswith(prefix) and isinstance(v, int))
        assert values == list(range(size)), prefix
