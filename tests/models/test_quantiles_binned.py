"""The nine quantile forests packed on one binning (``models/ensemble/_quantile_forests.py``) equal LightGBM's own
``predict`` and the float tree walk they replace, bit for bit.

Rows are the sample's real feature rows (they vary bar to bar and carry NaN while features warm up), the same rows
with features set exactly on the models' own split thresholds and one double either side (a bin boundary on the
wrong side of LightGBM's ``x <= t`` flips leaves), and rows with NaN, zeros, values below ``kZeroThreshold`` and
+-inf; besides the bundle's quantile models, quantile boosters fitted with ``zero_as_missing`` and with
``use_missing = False`` cover LightGBM's three missing-value rules. A planted off-by-one is shown to fail the check.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from fxgate.engine import sample_bars
from fxgate.models import _trees
from fxgate.models._trees import LGBM_ZERO, MISSING_NAN, MISSING_NONE, MISSING_ZERO, FlatForest, from_lightgbm
from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
from fxgate.models.ensemble import quantiles as qmod
from fxgate.models.ensemble._quantile_forests import _quantile_forests_py, quantile_forests, quantile_pack
from fxgate.models.ensemble.quantiles import QuantileModels, forward_returns, quantile_row
from fxgate.models.ensemble.row import _forest_row, forest_row
from fxgate.models.features import FeatureEngine, MadWinsorizer
from fxgate.models.labels import LabelSpec

TINY = EnsembleConfig(n_estimators=8, max_depth=3, folds=1, test_frac=0.2)
N_TRAIN = 2000


@pytest.fixture(scope="module")
def fitted():
    bars = sample_bars()
    ens = TreeEnsemble()
    ens.fit(bars[:N_TRAIN], LabelSpec("next", 1), TINY, evaluate=False)
    return bars, ens, FeatureEngine(bars.timeframe).batch(bars)


@pytest.fixture(scope="module", params=["bundle", "zero_as_missing", "use_missing_false"])
def qmodels(fitted, request) -> tuple[QuantileModels, np.ndarray, str]:
    """Quantile models, winsorized real rows to test them on (all the sample's bars), the fixture's name."""
    bars, ens, x = fitted
    z = ens.winsor.transform(x)
    if request.param == "bundle":
        return ens.quantiles, z, request.param
    rows, r = forward_returns(bars.close, np.arange(N_TRAIN - 1), 1, N_TRAIN - 1)
    zt = z[rows].copy()
    rng = np.random.default_rng(7)
    zt[rng.random(zt.shape) < 0.05] = 0.0  # zeros for zero_as_missing to route
    extra = {"zero_as_missing": True} if request.param == "zero_as_missing" else {"use_missing": False}
    taus = (0.1, 0.5, 0.9)
    models = [lgb.train({**qmod.params(t, TINY), **extra}, lgb.Dataset(zt, r), 50) for t in taus]
    return QuantileModels(models, [from_lightgbm(qmod._Dump(m)) for m in models], taus), z, request.param


def _thresholds(forests: list[FlatForest]) -> dict[int, np.ndarray]:
    f = np.concatenate([m.feature[m.left >= 0] for m in forests])
    t = np.concatenate([m.threshold[m.left >= 0] for m in forests])
    return {int(k): np.unique(t[f == k]) for k in np.unique(f)}


def _edge_rows(z: np.ndarray, forests: list[FlatForest], rng: np.random.Generator) -> np.ndarray:
    """Real rows with each split feature, with probability 0.5, set to one of its thresholds or the double just
    below or above it; then NaN, zeros, +-kZeroThreshold-sized values and +-inf sprinkled in."""
    rows = z[rng.integers(0, len(z), 1500)].copy()
    n = len(rows)
    for f, ts in _thresholds(forests).items():
        ts = ts[np.isfinite(ts)]
        if len(ts) == 0:
            continue
        t = ts[rng.integers(0, len(ts), n)]
        step = rng.integers(0, 3, n)
        v = np.select([step == 0, step == 1], [t, np.nextafter(t, -np.inf)], np.nextafter(t, np.inf))
        pick = rng.random(n) < 0.5
        rows[pick, f] = v[pick]
    special = np.array([np.nan, 0.0, -0.0, 9.999999e-36, -LGBM_ZERO, np.inf, -np.inf])
    hit = rng.random(rows.shape) < 0.03
    rows[hit] = special[rng.integers(0, len(special), hit.sum())]
    return rows


def _packed(q: QuantileModels, rows: np.ndarray, *, twin: bool = False) -> np.ndarray:
    """Sorted quantiles of (already winsorized) rows from the packed kernel, no clipping."""
    lo, hi, pack = q.kernel_args(MadWinsorizer(5.0, np.zeros(rows.shape[1]), np.zeros(rows.shape[1])))
    out = np.empty((len(rows), len(q.models)))
    for i, r in enumerate(rows):
        if twin:
            _quantile_forests_py(np.ascontiguousarray(r), lo, hi, pack, out[i])
            out[i] = np.sort(out[i])
        else:
            quantile_row(np.ascontiguousarray(r), lo, hi, pack, out[i])
    return out


def _float_walk(q: QuantileModels, rows: np.ndarray) -> np.ndarray:
    """The float-threshold walk the pack replaced (one forest at a time, leaves added in tree order), sorted."""
    args = [tuple(forest_row(f)) for f in q.compiled]
    return np.sort([[_forest_row(np.ascontiguousarray(r), *a) for a in args] for r in rows], axis=1)


def test_missing_rules_are_covered(qmodels):
    """The three fixtures between them route missing values by each of LightGBM's rules."""
    q, _, name = qmodels
    rules = set(np.concatenate([f.missing[f.left >= 0] for f in q.compiled]).tolist())
    want = {"bundle": {MISSING_NONE, MISSING_NAN}, "zero_as_missing": {MISSING_ZERO}, "use_missing_false": set()}
    assert want[name] <= rules
    if name == "use_missing_false":
        assert rules == {MISSING_NONE}


def test_real_rows_equal_native_and_the_float_walk(fitted, qmodels):
    """Every sample row (3,000 out of the training window, NaN-carrying warm-up rows first)."""
    q, z, _ = qmodels
    assert np.isnan(z).any(axis=1).sum() > 10
    got = _packed(q, z)
    np.testing.assert_allclose(got, q.native(z), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(got, _float_walk(q, z))


def test_rows_on_thresholds_equal_native_and_the_float_walk(qmodels):
    q, z, _ = qmodels
    rows = _edge_rows(z, q.compiled, np.random.default_rng(19))
    thr = _thresholds(q.compiled)
    on = sum(int(np.isin(rows[:, f], ts).sum()) for f, ts in thr.items())
    assert on > 5000  # many (row, feature) pairs sit exactly on a split threshold
    got = _packed(q, rows)
    np.testing.assert_allclose(got, q.native(rows), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(got, _float_walk(q, rows))


def test_planted_cut_below_threshold_fails(qmodels, monkeypatch):
    """A cut one double below each threshold (``x < t`` left instead of LightGBM's ``x <= t``) must be caught."""
    q, z, _ = qmodels
    rows = _edge_rows(z, q.compiled, np.random.default_rng(19))
    monkeypatch.setattr(_trees, "cut_lightgbm", lambda t: float(np.nextafter(t, -np.inf)))
    assert np.max(np.abs(_packed(q, rows) - q.native(rows))) > 1e-9


def test_twin_equals_kernel(qmodels):
    q, z, _ = qmodels
    rows = np.vstack([z[::97], _edge_rows(z, q.compiled, np.random.default_rng(3))[::50]])
    np.testing.assert_array_equal(_packed(q, rows, twin=True), _packed(q, rows))


def test_ensemble_predict_quantiles_winsorizes_then_equals_native(fitted):
    """Through :meth:`TreeEnsemble.predict_quantiles`: raw rows (clipped in the kernel), extremes included."""
    _, ens, x = fitted
    rows = x[::3].copy()
    rows[::7, 4] = 1e6  # clipped to the winsorizer's bound
    rows[3::7, 9] = -np.inf
    got = np.array([ens.predict_quantiles(r) for r in rows])
    np.testing.assert_allclose(got, ens.predict_quantiles_native(rows), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(got, _float_walk(ens.quantiles, ens.winsor.transform(rows)))


def test_pack_lays_the_models_end_to_end(fitted):
    _, ens, x = fitted
    pack = quantile_pack(ens.quantiles.compiled)
    assert len(pack.model_off) == 10 and pack.model_off[-1] == len(pack.trees)
    assert len(pack.words) == sum(len(f.left) for f in ens.quantiles.compiled)
    out = np.empty(9)
    lo, hi, _ = ens._q_args
    quantile_forests(np.ascontiguousarray(x[2500]), lo, hi, tuple(pack), out)
    want = [m.predict(ens.winsor.transform(x[2500:2501]))[0] for m in ens.quantiles.models]
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-9)  # level order, before the sort
