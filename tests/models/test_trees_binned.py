"""The one-row evaluator on thresholds quantized to per-feature bins equals each library's native predict.

Rows vary, carry NaN and zeros, and sit exactly on (and one float step either side of) the models' own split
thresholds, so a bin boundary on the wrong side of a library's ``<`` / ``<=`` / ``>`` flips leaves: each such
planted bug is shown to fail the check.
"""

from __future__ import annotations

import catboost as cb
import lightgbm as lgb
import numpy as np
import pytest
import xgboost as xgb

from fxgate.models import _trees
from fxgate.models._trees import (
    FeatureBins,
    FlatForest,
    FlatOblivious,
    _bin_row_py,
    _quant_forest_py,
    _quant_oblivious_py,
    bin_row,
    from_catboost,
    from_lightgbm,
    from_xgboost,
    quant_forest,
    quant_oblivious,
)
from fxgate.models.ensemble.calibration import Calibrator
from fxgate.models.ensemble.row import L1Row, _l1_row_py, binned_forest_row, binned_oblivious_row, l1_row
from fxgate.models.features import MadWinsorizer

NF = 12


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(19)
    x = rng.normal(size=(2000, NF))
    x[rng.random(x.shape) < 0.1] = np.nan
    x[rng.random(x.shape) < 0.05] = 0.0
    x[:, 5] = np.round(x[:, 5], 1)  # ties
    x[:, 7] = np.round(x[:, 7] * 3)  # few distinct values
    s = np.nan_to_num(x[:, 0]) - 0.5 * np.nan_to_num(x[:, 5]) + 0.3 * np.nan_to_num(x[:, 7]) + rng.normal(size=len(x))
    return x, (s > 0).astype(int), rng


def _on_thresholds(rng, base: np.ndarray, cuts: dict[int, np.ndarray], n: int) -> np.ndarray:
    """``n`` rows from ``base`` whose features are, each with probability 0.6, one of the model's thresholds for
    that feature, the double or float32 just below or above it, or the double just above that float32 below (it
    rounds down to float32, but is above it as a double)."""
    rows = base[rng.integers(0, len(base), n)].copy()
    with np.errstate(over="ignore"):  # float32 steps of LightGBM's +-inf / huge thresholds
        _set_on_thresholds(rng, rows, cuts)
    return rows


def _set_on_thresholds(rng, rows: np.ndarray, cuts: dict[int, np.ndarray]) -> None:
    n = len(rows)
    for f, ts in cuts.items():
        pick = rng.random(n) < 0.6
        t = ts[rng.integers(0, len(ts), n)]
        step = rng.integers(0, 6, n)
        below32 = np.nextafter(t.astype(np.float32), np.float32(-np.inf)).astype(np.float64)
        v = np.select(
            [step == 0, step == 1, step == 2, step == 3, step == 4],
            [
                t,
                np.nextafter(t, -np.inf),
                np.nextafter(t, np.inf),
                below32,
                np.nextafter(below32, np.inf),
            ],
            np.nextafter(t.astype(np.float32), np.float32(np.inf)).astype(np.float64),
        )
        pick &= np.abs(v) < 3e38  # XGBoost refuses inf and beyond float32 (LightGBM inf is checked on its own)
        rows[pick, f] = v[pick]


def _thresholds(m: FlatForest | FlatOblivious) -> dict[int, np.ndarray]:
    if isinstance(m, FlatOblivious):
        f, t = m.split_feature, m.border
    else:
        inner = m.left >= 0
        f, t = m.feature[inner], m.threshold[inner]
    return {int(k): np.unique(t[f == k]) for k in np.unique(f)}


def _rows(data, m, seed: int = 0) -> np.ndarray:
    x, _, _ = data
    rng = np.random.default_rng(seed)
    fresh = rng.normal(size=(1500, NF))
    fresh[rng.random(fresh.shape) < 0.1] = np.nan
    fresh[rng.random(fresh.shape) < 0.05] = 0.0
    return np.vstack([fresh, _on_thresholds(rng, x, _thresholds(m), 3000)])


def _binned_margins(m: FlatForest | FlatOblivious, rows: np.ndarray, *, twin: bool = False) -> np.ndarray:
    bins = FeatureBins.build([m])
    if isinstance(m, FlatForest):
        args, walk = tuple(binned_forest_row(bins.forest(m))), (_quant_forest_py if twin else quant_forest)
    else:
        args, walk = tuple(binned_oblivious_row(bins.oblivious(m))), (_quant_oblivious_py if twin else quant_oblivious)
    binning = bins.row_args()
    b = _bin_row_py if twin else bin_row
    return np.array([walk(b(r, *binning), *args) for r in rows])


@pytest.fixture(scope="module")
def xgb_model(data):
    x, y, _ = data
    params = {"objective": "binary:logistic", "max_depth": 6, "eta": 0.1, "nthread": 1, "seed": 1}
    return xgb.train(params, xgb.DMatrix(x, label=y), 120)


@pytest.fixture(scope="module", params=["nan", "zero_as_missing", "use_missing_false"])
def lgb_model(data, request):
    x, y, _ = data
    params = {"objective": "binary", "num_leaves": 63, "max_depth": 6, "verbose": -1, "num_threads": 1, "seed": 1}
    if request.param == "zero_as_missing":
        params["zero_as_missing"] = True
    if request.param == "use_missing_false":
        params["use_missing"] = False
    return lgb.train(params, lgb.Dataset(x, y), 120)


@pytest.fixture(scope="module", params=["Min", "Max"])
def cb_model(data, request, tmp_path_factory):
    x, y, _ = data
    model = cb.CatBoostClassifier(
        iterations=120, depth=6, verbose=0, thread_count=1, random_seed=1, allow_writing_files=False
    )
    model.set_params(nan_mode=request.param)
    model.fit(x, y)
    return model, from_catboost(model, str(tmp_path_factory.mktemp("cb") / "m.json"))


def _xgb_check(data, b) -> float:
    f = from_xgboost(b)
    rows = _rows(data, f)
    return float(np.max(np.abs(_binned_margins(f, rows) - b.predict(xgb.DMatrix(rows), output_margin=True))))


def _lgb_check(data, b) -> float:
    f = from_lightgbm(b)
    rows = _rows(data, f)
    rows[::11, 3] = np.inf  # a threshold of inf (the dump's 1e300) sends inf left
    rows[5::11, 8] = -np.inf
    rows[7::11, 7] = 9.999999462560281e-36  # below kZeroThreshold (1e-35f): read as 0.0
    return float(np.max(np.abs(_binned_margins(f, rows) - b.predict(rows, raw_score=True))))


def _cb_check(data, model, f) -> float:
    rows = _rows(data, f)
    native = model.predict(rows, prediction_type="RawFormulaVal")
    return float(np.max(np.abs(_binned_margins(f, rows) - native)))


def test_xgboost_binned_equals_native(data, xgb_model):
    assert _xgb_check(data, xgb_model) <= 1e-6


def test_lightgbm_binned_equals_native(data, lgb_model):
    assert _lgb_check(data, lgb_model) <= 1e-6


def test_catboost_binned_equals_native(data, cb_model):
    assert _cb_check(data, *cb_model) <= 1e-6


def test_planted_xgboost_le_fails(data, xgb_model, monkeypatch):
    """XGBoost sends x < t left; a cut at t itself (x <= t left) must be caught."""
    monkeypatch.setattr(_trees, "cut_xgboost", lambda t: np.float32(t))
    assert _xgb_check(data, xgb_model) > 1e-3


def test_planted_lightgbm_lt_fails(data, lgb_model, monkeypatch):
    """LightGBM sends x <= t left; a cut just below t (x < t left) must be caught."""
    monkeypatch.setattr(_trees, "cut_lightgbm", lambda t: float(np.nextafter(t, -np.inf)))
    assert _lgb_check(data, lgb_model) > 1e-3


def test_planted_catboost_ge_fails(data, cb_model, monkeypatch):
    """CatBoost sets the bit on x > border; a cut just below the border (x >= border) must be caught."""
    monkeypatch.setattr(_trees, "cut_catboost", lambda b: np.nextafter(np.float32(b), np.float32(-np.inf)))
    assert _cb_check(data, *cb_model) > 1e-3


def test_planted_float64_compare_for_xgboost_fails(data, xgb_model, monkeypatch):
    """XGBoost compares float32(x): binning the double against the float32 threshold as a double must be caught."""
    monkeypatch.setattr(_trees, "above32", lambda c: float(c))
    assert _xgb_check(data, xgb_model) > 1e-3


def _near(rng, c: np.float32, n: int) -> np.ndarray:
    """Doubles around the float32 ``c`` and the float32 after it: the midpoint, a few doubles either side, random
    doubles in between and beyond."""
    with np.errstate(over="ignore", invalid="ignore"):
        u = np.nextafter(c, np.float32(np.inf))
        lo, hi = float(c), float(u) if np.isfinite(u) else 2.0**128
        if not np.isfinite(lo):
            lo = -(2.0**128)
        mid = (lo + hi) / 2
        pts = [mid, lo, hi]
        for p in (mid, lo, hi):
            q = p
            for _ in range(3):
                q = np.nextafter(q, np.inf)
                pts.append(q)
            q = p
            for _ in range(3):
                q = np.nextafter(q, -np.inf)
                pts.append(q)
        span = hi - lo
        pts += list(lo + rng.uniform(-2, 3, n) * span)
    return np.array([p for p in pts if np.isfinite(p)])


def test_above32_is_the_float32_compare(rng_seed=5):
    """``x > above32(c)`` iff ``float32(x) > c`` (numpy's conversion, round to nearest, ties to even), for doubles
    on and around the rounding midpoints of ordinary, tiny, subnormal, signed-zero, largest and infinite ``c``."""
    rng = np.random.default_rng(rng_seed)
    f32 = np.finfo(np.float32)
    cs = [0.0, -0.0, 1.0, -1.0, 0.1, -0.1, 3.0, 1e-38, -1e-38, f32.smallest_subnormal, -f32.smallest_subnormal,
          float(f32.max), -float(f32.max), float(f32.tiny), np.inf, -np.inf]  # fmt: skip
    cs += list(rng.normal(size=40) * 10.0 ** rng.integers(-30, 30, 40))
    ties_down = ties_up = 0
    for c in np.array(cs, dtype=np.float32):
        b = _trees.above32(c)
        xs = _near(rng, c, 200)
        with np.errstate(over="ignore"):
            want = xs.astype(np.float32) > c
        np.testing.assert_array_equal(xs > b, want, err_msg=f"c={c!r} b={b!r}")
        with np.errstate(over="ignore"):
            u = np.nextafter(c, np.float32(np.inf))
        if np.isfinite(c) and np.isfinite(u):
            mid = (float(c) + float(u)) / 2
            ties_up += mid > b
            ties_down += mid <= b
    assert ties_up and ties_down  # both tie directions were exercised


def test_planted_tie_always_up_fails(monkeypatch):
    """A bound that ignores ties-to-even (the midpoint always above ``c``) must be caught."""
    real = _trees.above32

    def wrong(c):  # type: ignore[no-untyped-def]
        b = real(c)
        with np.errstate(over="ignore"):
            u = np.nextafter(np.float32(c), np.float32(np.inf))
        if np.isfinite(c) and np.isfinite(u) and b == (float(c) + float(u)) / 2:
            return float(np.nextafter(b, -np.inf))
        return b

    monkeypatch.setattr(_trees, "above32", wrong)
    with pytest.raises(AssertionError):
        test_above32_is_the_float32_compare()


def _library_right(m: FlatForest | FlatOblivious, v: np.ndarray, t: float) -> np.ndarray:
    """Whether a split on threshold/border ``t`` sends each non-missing value of ``v`` right, by the library's rule
    (the module docstring of fxgate.models._trees), computed directly."""
    if isinstance(m, FlatOblivious):
        return v.astype(np.float32) > np.float32(t)
    if m.rule == _trees.XGB:
        return ~(v.astype(np.float32) < np.float32(t))
    return np.where(np.abs(v) <= _trees.LGBM_ZERO, 0.0, v) > t


def test_bins_decide_every_split_as_the_library(data, xgb_model, lgb_model, cb_model):
    """For every split threshold of the three models and every row, "bin > the threshold's cut index" (the walk's
    compare) is the library's own decision on the raw value, missing values aside (they take the slot's bin)."""
    models = [from_xgboost(xgb_model), from_lightgbm(lgb_model), cb_model[1]]
    bins = FeatureBins.build(models)
    for m in models[:2]:
        bins.forest(m)
    bins.oblivious(models[2])
    rows = np.vstack([_rows(data, m)[::9] for m in models])
    splits = []  # (model, feature, threshold, cut index, slot)
    for m in models:
        for f, ts in _thresholds(m).items():
            for t in ts:
                if isinstance(m, FlatOblivious):
                    k = bins._cut_index(f, _trees.above32(_trees.cut_catboost(t)))
                    lgbm = False
                elif m.rule == _trees.XGB:
                    k = bins._cut_index(f, _trees.above32(_trees.cut_xgboost(t)))
                    lgbm = False
                else:
                    k = bins._cut_index(f, _trees.cut_lightgbm(t))
                    lgbm = True
                ss = [i for i, w in enumerate(bins.slots) if w & 0xFFFF == f and bool(w & _trees.LGBM_SLOT) == lgbm]
                splits.append((m, f, t, k, ss))
    got = np.array([bin_row(r, *bins.row_args()) for r in rows])
    for r, g in zip(rows, got, strict=True):
        np.testing.assert_array_equal(_bin_row_py(r, *bins.row_args()), g)
    checked = 0
    for m, f, t, k, ss in splits:
        v = rows[:, f]
        right = _library_right(m, v, t)
        for s in ss:
            w = bins.slots[s]
            missing = np.isnan(v) | (bool(w & _trees._ZERO_MISSING) & (np.abs(v) <= _trees.LGBM_ZERO))
            np.testing.assert_array_equal(got[missing, s], w >> 32)  # a missing value takes the slot's bin
            bad = np.flatnonzero((got[~missing, s] > k) != right[~missing])
            assert not len(bad), (m.__class__.__name__, f, t, v[~missing][bad[:5]])
            checked += int((~missing).sum())
    assert checked > 10_000


def test_twins_equal_kernels(data, xgb_model, cb_model):
    f = from_xgboost(xgb_model)
    rows = _rows(data, f)[::20]
    np.testing.assert_array_equal(_binned_margins(f, rows, twin=True), _binned_margins(f, rows))
    o = cb_model[1]
    np.testing.assert_array_equal(_binned_margins(o, rows, twin=True), _binned_margins(o, rows))


def test_three_models_share_one_binning(data, xgb_model, lgb_model, cb_model):
    """The Layer-1 kernel (one binning for all three models) equals each native predict_proba, NaN included."""
    model, o = cb_model
    models = [from_xgboost(xgb_model), from_lightgbm(lgb_model), o]
    ident = MadWinsorizer(5.0, np.zeros(NF), np.zeros(NF))
    args = L1Row.build(ident, models, [Calibrator()] * 3).kernel_args()
    x, _, rng = data
    rows = np.vstack([_rows(data, models[0])[::3], _on_thresholds(rng, x, _thresholds(models[1]), 500)])
    native = np.column_stack(
        [xgb_model.predict(xgb.DMatrix(rows)), lgb_model.predict(rows), model.predict_proba(rows)[:, 1]]
    )
    out = np.empty(3)
    got = np.empty_like(native)
    for i, r in enumerate(rows):
        l1_row(r, args, out)
        got[i] = out
    np.testing.assert_allclose(got, native, rtol=0, atol=1e-6)
    for r, want in zip(rows[:10], got[:10], strict=True):
        _l1_row_py(r, args, out)
        np.testing.assert_array_equal(out, want)
