"""ConformalPrediction against MAPIE 1.x (split conformal, ACI where MAPIE's definition agrees with the paper), a
naive loop of Gibbs & Candès' update, a direct weighted least-squares fit, and the statistics: binomial coverage on
exchangeable data and Prop. 4.1's long-run bound under a shift."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mapie.conformity_scores import AbsoluteConformityScore
from mapie.regression import SplitConformalRegressor, TimeSeriesRegressor
from scipy import stats
from sklearn.base import BaseEstimator, RegressorMixin

from fxgate.engine import Bar
from fxgate.modules import Context, Matured, create
from fxgate.modules._common import SW_N
from fxgate.modules.conformal_prediction import (
    F_ALPHA_T,
    F_YHAT,
    I_CHECKED,
    I_MISSES,
    I_SCORED,
    _cp_issue,
    _cp_issue_py,
    _cp_score,
    _cp_score_py,
    conformal_halfwidth,
)

H = 3_600_000_000_000  # one hour in ns


class Passthrough(RegressorMixin, BaseEstimator):
    """A 'prefit' regressor whose prediction is its only feature: MAPIE then scores exactly the ŷ our module issued
    at entry."""

    def fit(self, X, y):
        return self

    def predict(self, X):
        return np.asarray(X, dtype=float)[:, 0]

    def __sklearn_is_fitted__(self) -> bool:
        return True


def synth(s, r, horizon=1, spread=0.0, direction=None, close=1.0):
    """Contexts shaped like the gate's: signal s_i (P(up) = 0.5 + s_i for all three models) at bar i, realized log
    return r_i over the horizon, delivered as bar i's Matured ``horizon`` bars later (never earlier)."""
    n = len(s)
    d = np.ones(n, int) if direction is None else np.asarray(direction)
    probs = [np.full(3, 0.5 + float(x)) for x in s]
    out = []
    for i in range(n):
        matured = ()
        if i >= horizon:
            j = i - horizon
            matured = (Matured(j + 1, j * H, i * H, close, close * math.exp(r[j]), probs[j], None, int(d[j]), spread),)
        bar = Bar(i * H, close, close, close, close, 1.0, timeframe="H1")
        out.append(Context(bar, probs=probs[i], direction=int(d[i]), spread=spread, matured=matured, bar_index=i + 1))
    return out


def run(m, ctxs):
    """Feed ``ctxs``; per bar the issued ŷ, interval and α_t (after the bar's updates)."""
    y, lo, hi, a = [], [], [], []
    for c in ctxs:
        m.update(c)
        y.append(float(m.fs[F_YHAT]))
        lo.append(m.interval[0])
        hi.append(m.interval[1])
        a.append(m.alpha_t)
    return np.array(y), np.array(lo), np.array(hi), np.array(a)


def pairs(ctxs, yhat):
    """(ŷ issued at entry, realized r) per matured bar in arrival order (ctx.bar_index = i + 1 for ctxs[i])."""
    out = []
    for c in ctxs:
        for m in c.matured:
            out.append((yhat[m.entry_bar - 1], m.log_return))
    return np.array(out)


# -- references -----------------------------------------------------------------------------------------------------
def test_split_interval_equals_mapie_split_conformal_regressor(stream):
    """Same calibration residuals (the last ``window`` scores, ŷ as issued at entry), same α = 0.1 (MAPIE rounds α
    to 2 decimals; 0.1 is exact): MAPIE's finite-sample quantile (level ceil((n+1)(1-α))/n, numpy "lower") gives
    the same interval, to the last bit (tolerance 0)."""
    w = 200
    ctxs = stream[:1400]
    m = create("conformal_prediction", method="split", window=w, min_scores=w, alpha=0.1)
    y, lo, hi, _ = run(m, ctxs)
    pr = pairs(ctxs, y)
    checked = 0
    for t in range(w + 1, len(ctxs), 61):
        cal = pr[t - w : t]  # the pairs matured by bar t: entries t-w+1 .. t (bar index), in arrival order
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MAPIE warns that the passthrough "does not appear fitted"
            ref = SplitConformalRegressor(Passthrough(), confidence_level=0.9, prefit=True)
            ref.conformalize(cal[:, :1], cal[:, 1])
            _, iv = ref.predict_interval(np.array([[y[t]]]))
        assert (lo[t], hi[t]) == (iv[0, 0, 0], iv[0, 1, 0]), t
        checked += 1
    assert checked > 15
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = SplitConformalRegressor(Passthrough(), confidence_level=0.9, prefit=True)
        ref.conformalize(pr[-w:, :1], pr[-w:, 1])
    np.testing.assert_array_equal(np.sort(ref.conformity_scores), m.srt)


def test_aci_equals_mapie_time_series_regressor_where_they_agree(stream):
    """MAPIE's TimeSeriesRegressor(method="aci") with the symmetric absolute score (its default is the signed
    residual with two one-sided quantiles, a different interval), fitted on the first ``window`` matured pairs,
    then per bar: the interval before the outcome, ``adapt_conformal_inference`` (α_t step) and ``update`` (roll the
    scores). While α_t stays inside (0, 1) — where MAPIE's clipping does nothing — α_t and the intervals agree
    exactly."""
    w, gamma = 200, 0.01
    ctxs = stream[:1300]
    m = create("conformal_prediction", method="aci", window=w, min_scores=w, alpha=0.1, gamma=gamma)
    y, lo, hi, a = run(m, ctxs)
    pr = pairs(ctxs, y)  # pr[j] is the pair of entry bar_index j + 1 (ctxs[j]), matured at ctxs[j + 1]
    t0 = w  # ctxs[w] is the first bar with a full window: its interval comes from the pairs of ctxs[0 .. w-1]
    assert np.isnan(lo[t0 - 1]) and np.isfinite(lo[t0])
    ref = TimeSeriesRegressor(Passthrough(), method="aci", cv="prefit", conformity_score=AbsoluteConformityScore())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.fit(pr[:w, :1], pr[:w, 1])
        for t in range(t0, len(ctxs) - 1):
            x = np.array([[y[t]]])
            _, iv = ref.predict(x, confidence_level=0.9, allow_infinite_bounds=True)
            assert (lo[t], hi[t]) == (iv[0, 0, 0], iv[0, 1, 0]), t
            ref.adapt_conformal_inference(x, pr[t, 1:], gamma=gamma, confidence_level=0.9)
            ref.update(x, pr[t, 1:])
            assert 0 < ref.current_alpha[0.1] < 1  # MAPIE's clip did not act: the definitions agree
            assert a[t + 1] == ref.current_alpha[0.1], t  # α after entry t's outcome, known at bar t + 1
    assert np.ptp(a[t0:]) > 5 * gamma * 0.1  # α_t moved: the comparison exercised the update


def aci_naive(ctxs, yhat, alpha, gamma, window, min_scores, aci=True):
    """Gibbs & Candès (2021) eq. 2 written out: score each matured entry with the ŷ issued at its entry, step α by
    γ(α − err) with err = 1{r outside the closed interval issued at entry}, and issue ŷ ± S_(ceil((n+1)(1−α_t)))
    from the last ``window`` scores (k > n: unbounded; k ≤ 0: empty)."""
    a, scores, issued = alpha, [], {}
    out_a, out_lo, out_hi = [], [], []
    for i, c in enumerate(ctxs):
        for mt in c.matured:
            r = mt.log_return
            if mt.entry_bar in issued:
                y0, l0, h0 = issued.pop(mt.entry_bar)
                if not math.isnan(l0):
                    err = 0 if l0 <= r <= h0 else 1
                    if aci:
                        a += gamma * (alpha - err)
                scores.append(abs(r - y0))
        cal = sorted(scores[-window:])
        n = len(cal)
        lo = hi = math.nan
        if n >= min_scores:
            k = math.ceil((1.0 - (a if aci else alpha)) * (n + 1))
            q = math.inf if k > n else (-math.inf if k <= 0 else cal[k - 1])
            lo, hi = yhat[i] - q, yhat[i] + q
        issued[c.bar_index] = (yhat[i], lo, hi)
        out_a.append(a)
        out_lo.append(lo)
        out_hi.append(hi)
    return np.array(out_a), np.array(out_lo), np.array(out_hi)


def shifted(n, seed):
    """Returns whose scale jumps (0.5x, 4x, 1x) and whose mean drifts: not exchangeable."""
    rng = np.random.default_rng(seed)
    s = rng.normal(0, 0.05, n)
    scale = np.r_[np.full(n // 3, 0.5), np.full(n // 3, 4.0), np.full(n - 2 * (n // 3), 1.0)] * 1e-3
    r = 0.02 * s + np.linspace(0, 3e-3, n) + scale * rng.standard_t(5, n)
    return s, r


@pytest.mark.parametrize("horizon", [1, 3])
def test_aci_equals_the_papers_formula_including_negative_alpha(horizon):
    """Against the naive loop of the paper's update, with a large γ and a shift so that α_t goes below 0 (unbounded
    intervals; MAPIE would clip there) — and a horizon of 3, where each err arrives three bars after its interval."""
    s, r = shifted(1500, 11)
    ctxs = synth(s, r, horizon=horizon)
    kw = {"window": 40, "min_scores": 20, "alpha": 0.1, "gamma": 0.2}
    m = create("conformal_prediction", method="aci", **kw, gate={"horizon": horizon})
    y, lo, hi, a = run(m, ctxs)
    na, nlo, nhi = aci_naive(ctxs, y, kw["alpha"], kw["gamma"], kw["window"], kw["min_scores"])
    np.testing.assert_array_equal(a, na)
    np.testing.assert_array_equal(lo, nlo)
    np.testing.assert_array_equal(hi, nhi)
    assert a.min() < 0 and np.isinf(lo).any()  # the paper's unclipped regime was exercised
    ms = create("conformal_prediction", method="split", **kw, gate={"horizon": horizon})
    y2, lo2, hi2, a2 = run(ms, ctxs)
    _, nlo2, nhi2 = aci_naive(ctxs, y2, kw["alpha"], kw["gamma"], kw["window"], kw["min_scores"], aci=False)
    np.testing.assert_array_equal(lo2, nlo2)
    np.testing.assert_array_equal(hi2, nhi2)
    assert np.all(a2 == kw["alpha"])


def test_ewma_predictor_equals_direct_weighted_least_squares():
    """ŷ at each bar = the weighted least-squares line through the pairs matured *before* it (weights 0.5^(age /
    halflife)), evaluated at the bar's signal: the recursion against the direct formula, rtol 1e-9."""
    rng = np.random.default_rng(4)
    n, hl = 400, 30.0
    s = rng.normal(0, 0.05, n)
    r = 0.01 * s + 1e-3 * rng.normal(size=n)
    ctxs = synth(s, r, horizon=2)
    m = create("conformal_prediction", halflife=hl, window=50, min_scores=10, gate={"horizon": 2})
    y, *_ = run(m, ctxs)
    lam = 0.5 ** (1 / hl)
    sig = np.array([float(np.mean(c.probs)) - 0.5 for c in ctxs])
    rr = np.array([math.log(math.exp(x)) for x in r])
    assert y[0] == 0.0 and y[1] == 0.0  # no pair matured yet
    for t in range(3, n):
        k = t - 1  # pairs of entries 0 .. k-1 have matured by bar t (horizon 2)
        wts = lam ** np.arange(k - 1, -1, -1.0)
        ms, mr = np.average(sig[:k], weights=wts), np.average(rr[:k], weights=wts)
        css, csr = np.sum(wts * (sig[:k] - ms) ** 2), np.sum(wts * (sig[:k] - ms) * (rr[:k] - mr))
        want = mr + csr / css * (sig[t] - ms)
        assert y[t] == pytest.approx(want, rel=1e-9, abs=1e-15), t
    z = create("conformal_prediction", predictor="zero", window=50, min_scores=10, gate={"horizon": 2})
    assert np.all(run(z, ctxs)[0] == 0.0)


# -- statistics -----------------------------------------------------------------------------------------------------
def test_split_coverage_on_exchangeable_data_is_binomial():
    """iid returns, ŷ ≡ 0: each interval covers with probability exactly k/(n+1), k = ceil((n+1)(1−α)) — for
    n = 24, α = 0.1: 23/25 = 0.92 ≥ 1 − α. Intervals n + 1 bars apart use disjoint data, so their hits are iid
    Bernoulli(0.92): the count must lie in the central 99.9% binomial interval. The mean over all bars is the mean
    of n + 1 such thinned means, so its deviation is at most the same 99.9% tolerance (seed 7, deterministic)."""
    n, alpha, T = 24, 0.1, 25 * 2000
    rng = np.random.default_rng(7)
    r = 1e-3 * rng.standard_t(4, T)
    ctxs = synth(rng.normal(0, 0.05, T), r, horizon=1)
    m = create("conformal_prediction", method="split", predictor="zero", window=n, min_scores=n, alpha=alpha)
    _, lo, hi, _ = run(m, ctxs)
    ok = np.isfinite(lo)
    idx = np.flatnonzero(ok)[:-1]
    hit = (lo[idx] <= r[idx]) & (r[idx] <= hi[idx])
    p = math.ceil((n + 1) * (1 - alpha)) / (n + 1)
    assert p == pytest.approx(0.92) and p >= 1 - alpha
    thin = hit[:: n + 1]
    a_lo, a_hi = stats.binom.ppf([0.0005, 0.9995], len(thin), p)
    assert a_lo <= thin.sum() <= a_hi, (thin.mean(), p)
    tol = (a_hi - a_lo) / 2 / len(thin)
    assert abs(hit.mean() - p) <= tol, (hit.mean(), p, tol)
    assert m.coverage() == pytest.approx(1 - int(m.ist[I_MISSES]) / int(m.ist[I_CHECKED]))
    assert abs(m.coverage() - hit.mean()) <= 1 / len(hit)  # the module's own tally counts the same events


@pytest.mark.parametrize("gamma", [0.005, 0.05])
def test_aci_long_run_coverage_under_shift_obeys_prop_4_1(gamma):
    """Gibbs & Candès Prop. 4.1: for every T, |(1/T) Σ err_t − α| ≤ (max(α_1, 1 − α_1) + γ)/(γT), whatever the
    data. Checked exactly at every T on returns whose scale and mean shift (split conformal has no such guarantee
    there: its error only averages out when the window catches up with each shift)."""
    s, r = shifted(6000, 5)
    ctxs = synth(s, r, horizon=1)
    alpha = 0.1
    m = create("conformal_prediction", method="aci", window=100, min_scores=100, alpha=alpha, gamma=gamma)
    worst = 0.0
    for c in ctxs:
        m.update(c)
        t = int(m.ist[I_CHECKED])
        if t:
            dev = abs(int(m.ist[I_MISSES]) / t - alpha)
            bound = (max(alpha, 1 - alpha) + gamma) / (gamma * t)
            assert dev <= bound, (t, dev, bound)
            worst = max(worst, dev / bound)
    t = int(m.ist[I_CHECKED])
    assert t > 5500 and worst > 0.03  # the bound is approached, not vacuous (worst dev/bound: 0.067 and 0.28)
    assert abs(m.coverage() - (1 - alpha)) < 0.01


# -- the pass rule --------------------------------------------------------------------------------------------------
def _up_market(spread, direction, n=300):
    """Returns of +1% ± 0.01%: the interval lies far above zero."""
    rng = np.random.default_rng(2)
    r = 0.01 + 1e-4 * rng.normal(size=n)
    return synth(rng.normal(0, 0.05, n), r, horizon=1, spread=spread, direction=np.full(n, direction), close=1.25)


@pytest.mark.parametrize("method", ["aci", "split"])
def test_pass_rule_uses_the_trade_side_and_the_cost(method):
    kw = {"method": method, "window": 100, "min_scores": 50}
    long_ = create("conformal_prediction", **kw)
    for c in _up_market(1e-4, 1):
        long_.update(c)
    v = long_.verdict()
    lo, hi = long_.interval
    cost = 1e-4 / 1.25
    assert 0.009 < lo < hi < 0.011
    assert v.passed and v.score == pytest.approx(lo - cost, rel=0, abs=1e-18) and "long" in v.reason
    short = create("conformal_prediction", **kw)
    for c in _up_market(1e-4, -1):
        short.update(c)
    v = short.verdict()
    assert not v.passed and v.score == pytest.approx(-cost - short.interval[1], abs=1e-18) and "short" in v.reason
    dear = create("conformal_prediction", **kw)
    for c in _up_market(0.0125 * 1.25, 1):  # a spread of 1.25% of the price: more than the lower bound
        dear.update(c)
    v = dear.verdict()
    assert not v.passed and v.score == pytest.approx(dear.interval[0] - 0.0125, abs=1e-15)
    # a bad bar after a passing one: no interval on it (the last good bar's interval is not reused)
    long_.update(Context(Bar(0, 1.0, 1.0, 1.0, math.nan, 1.0, timeframe="H1"), direction=1, bar_index=10_000))
    v = long_.verdict()
    assert not v.passed and "bad bar" in v.reason
    # α_t ≥ 1: the empty prediction set (Gibbs & Candès) never passes, though its "lower bound" is +inf
    if method == "aci":
        emp = create("conformal_prediction", **kw)
        ctxs = _up_market(1e-4, 1)
        for c in ctxs[:-1]:
            emp.update(c)
        emp.fs[F_ALPHA_T] = 1.5
        emp.update(ctxs[-1])
        v = emp.verdict()
        assert emp.interval == (math.inf, -math.inf) and not v.passed and "empty prediction set" in v.reason
    for d, spread, why in [(0, 1e-4, "no candidate"), (1, math.nan, "spread unknown")]:
        m = create("conformal_prediction", **kw)
        for c in _up_market(spread, d):
            m.update(c)
        v = m.verdict()
        assert not v.passed and why in v.reason and math.isnan(v.score)


# -- fail closed, bad input, state ----------------------------------------------------------------------------------
def test_short_history_nan_and_constant_input_fail_closed():
    m = create("conformal_prediction", window=100, min_scores=50)
    v = m.verdict()
    assert not v.passed and v.reason == "insufficient data: 0/50 scored outcomes"
    rng = np.random.default_rng(3)
    s, r = rng.normal(0, 0.05, 200), 1e-3 * rng.normal(size=200)
    ctxs = synth(s, r)
    for c in ctxs[:30]:
        m.update(c)
    assert m.verdict().reason == "insufficient data: 29/50 scored outcomes"
    # a NaN return, a NaN or missing probability at entry: skipped, the module equals a twin that never saw them
    twin = create("conformal_prediction", window=100, min_scores=50)
    for c in ctxs[:30]:
        twin.update(c)
    bad = synth(np.r_[s[:3]], np.r_[math.nan, math.inf, 0.0], horizon=1)
    bad_probs = [Matured(10_000 + k, 0, 0, 1.0, 1.0, p, None) for k, p in enumerate([np.array([math.nan] * 3), None])]
    bad_ctx = Context(ctxs[30].bar, probs=None, matured=(*bad[1].matured, *bad_probs), bar_index=99_999)
    m.update(bad_ctx)
    assert int(m.ist[I_SCORED]) == 29 and not m.verdict().passed
    assert "insufficient" in m.verdict().reason
    for c in ctxs[30:]:
        m.update(c)
        twin.update(c)
        a, b = m.verdict(), twin.verdict()
        assert (a.passed, a.reason) == (b.passed, b.reason)
    # enough scores but no probabilities on this bar (in sample): no interval, with the reason
    m.update(Context(ctxs[-1].bar, probs=None, direction=1, spread=1e-4, bar_index=1_000))
    v = m.verdict()
    assert not v.passed and "no model probabilities" in v.reason
    # constant returns (all scores 0): a zero-width interval around ŷ = 0 that the cost keeps from passing
    c0 = create("conformal_prediction", window=100, min_scores=50)
    for c in synth(np.zeros(200), np.zeros(200), spread=1e-4):
        c0.update(c)
    v = c0.verdict()
    assert c0.interval == (0.0, 0.0) and not v.passed and v.score == pytest.approx(-1e-4)


def test_state_round_trip_with_a_longer_horizon():
    s, r = shifted(900, 8)
    ctxs = synth(s, r, horizon=4, spread=1e-5)
    a = create("conformal_prediction", window=60, min_scores=30, gamma=0.05, gate={"horizon": 4})
    for c in ctxs[:500]:
        a.update(c)
    b = create("conformal_prediction", gate={"horizon": 4})
    b.load_state_dict(a.state_dict())
    for c in ctxs[500:]:
        a.update(c)
        b.update(c)
        va, vb = a.verdict(), b.verdict()
        assert (va.passed, va.reason, va.score) == (vb.passed, vb.reason, vb.score) or (
            math.isnan(va.score) and math.isnan(vb.score) and va.reason == vb.reason
        )
    for k in a.state_keys:
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))


def test_bad_parameters_are_errors_that_tell_the_fix():
    for kw, msg in [
        ({"method": "cqr"}, "use 'aci' or 'split'"),
        ({"predictor": "rls"}, "use 'ewma' or 'zero'"),
        ({"alpha": 1.0}, "strictly between 0 and 1"),
        ({"gamma": -0.1}, "must lie in"),
        ({"min_scores": 600}, "between 1 and window"),
        ({"halflife": 0}, "must be > 0"),
    ]:
        with pytest.raises(ValueError, match=msg):
            create("conformal_prediction", **kw)
    with pytest.raises(ValueError, match="top-level setting"):
        create("conformal_prediction", horizon=2)
    assert len(create("conformal_prediction", gate={"horizon": 5}).ebar) == 6


# -- kernels ---------------------------------------------------------------------------------------------------------
def test_kernels_equal_their_python_twins():
    rng = np.random.default_rng(9)
    cap, w = 4, 16

    def fresh():
        return [
            np.full(cap, -1, np.int64),
            np.full(cap, np.nan),
            np.full(cap, np.nan),
            np.full(cap, np.nan),
            np.full(cap, np.nan),
            np.zeros(w),
            np.zeros(w),
            np.zeros(2, np.int64),
            np.zeros(5, np.int64),
            np.r_[0.1, np.zeros(10)],
        ]

    a, b = fresh(), fresh()
    lam = 0.5 ** (1 / 20)
    sig = rng.normal(0, 0.05, 600)
    ret = 0.01 * sig + 1e-3 * rng.standard_t(3, 600)
    for i in range(600):
        if i >= 3:
            j = i - 3 + 1
            _cp_score(*a, j, ret[j - 1], 0.1, 0.1, True, lam)
            _cp_score_py(*b, j, ret[j - 1], 0.1, 0.1, True, lam)
        si = math.nan if i % 37 == 5 else sig[i]
        _cp_issue(*a[:5], *a[6:], i + 1, si, 1e-4, 1, 0.1, True, True, 8)
        _cp_issue_py(*b[:5], *b[6:], i + 1, si, 1e-4, 1, 0.1, True, True, 8)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    assert a[9][F_ALPHA_T] != 0.1 and a[8][I_CHECKED] > 500


def test_halfwidth_is_the_kth_order_statistic():
    srt = np.arange(1.0, 11.0)  # ten scores 1..10
    assert conformal_halfwidth(srt, 10, 0.1) == 10.0  # k = ceil(11 * 0.9) = ceil(9.9) = 10
    assert conformal_halfwidth(srt, 9, 0.1) == 9.0  # k = ceil(10 * 0.9) = 9
    assert conformal_halfwidth(srt, 8, 0.1) == math.inf  # k = ceil(8.1) = 9 > n
    assert conformal_halfwidth(srt, 10, 0.2) == 9.0  # k = ceil(8.8) = 9
    assert conformal_halfwidth(srt, 10, 0.5) == 6.0  # k = ceil(5.5) = 6
    assert conformal_halfwidth(srt, 10, 0.0) == math.inf and conformal_halfwidth(srt, 10, -0.3) == math.inf
    assert conformal_halfwidth(srt, 10, 1.0) == -math.inf  # the empty set


# -- property --------------------------------------------------------------------------------------------------------
_num = st.one_of(st.floats(-0.02, 0.02), st.sampled_from([math.nan, math.inf, -math.inf, 0.0]))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(_num, st.one_of(st.floats(-0.4, 0.4), st.just(math.nan)), st.integers(-1, 1), st.booleans()),
        min_size=1,
        max_size=80,
    ),
    st.sampled_from(["aci", "split"]),
    st.integers(1, 3),
)
def test_any_stream_keeps_the_window_sorted_and_a_pass_clears_the_cost(rows, method, horizon):
    """Property: whatever the returns (NaN, inf), signals (NaN) and directions, the sorted window holds exactly the
    last ``window`` scores, and a pass has a finite score equal to the margin past the cost on the trade's side."""
    s = np.array([x[1] for x in rows])
    r = np.array([x[0] for x in rows])
    ctxs = synth(np.nan_to_num(s), np.zeros(len(rows)), horizon=horizon, spread=1e-4)
    m = create("conformal_prediction", method=method, window=6, min_scores=3, gamma=0.1, gate={"horizon": horizon})
    for i, c in enumerate(ctxs):
        mat = []
        for mt in c.matured:
            x = r[mt.entry_bar - 1]
            mat.append(Matured(mt.entry_bar, 0, 0, 1.0, math.exp(x) if math.isfinite(x) else x, mt.probs, None))
        probs = None if rows[i][3] else np.full(3, 0.5 + s[i])
        ctx = Context(c.bar, probs=probs, direction=rows[i][2], spread=1e-4, matured=tuple(mat), bar_index=c.bar_index)
        m.update(ctx)
        n = int(m.sst[SW_N])
        np.testing.assert_array_equal(m.srt[:n], np.sort(m.scores[:n]))
        v = m.verdict()
        if v.passed:
            lo, hi = m.interval
            assert math.isfinite(v.score) and v.score > 0
            assert v.score == (lo - 1e-4 if rows[i][2] > 0 else -1e-4 - hi)
