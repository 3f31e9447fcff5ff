"""CertaintyScore: bounded and monotone (hypothesis), p_edge against statsmodels' HAC mean test, its IC and ICIR
equal to the standalone modules' on the same stream, C equal to its formula, fail-closed cases, power on a planted
edge, twin == kernel for the HAC mean."""

from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fxgate.engine import Bar
from fxgate.modules import Context, Matured, Outcome, _ic, create
from fxgate.modules.certainty_score import certainty

_t = st.floats(-50.0, 50.0, allow_nan=False)
_p = st.floats(0.0, 1.0, allow_nan=False)
_w = st.floats(0.0, 10.0, allow_nan=False)
_up = st.floats(0.0, 20.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(_t, _t, st.integers(2, 200), _p, _w, _w, _w, _up, _up, _p)
def test_certainty_is_bounded_and_monotone(t_ic, icir, k, p_edge, w1, w2, w3, d_t, d_icir, p_lower):
    """C ∈ [0, 1], and raising t_IC or ICIR, or lowering p_edge, never lowers it (any non-negative weights)."""
    if w1 + w2 + w3 <= 0:
        return
    c = certainty(t_ic, icir, k, p_edge, w1, w2, w3)
    assert 0.0 <= c <= 1.0
    assert certainty(t_ic + d_t, icir, k, p_edge, w1, w2, w3) >= c
    assert certainty(t_ic, icir + d_icir, k, p_edge, w1, w2, w3) >= c
    assert certainty(t_ic, icir, k, p_edge * p_lower, w1, w2, w3) >= c


def test_certainty_extremes_and_formula():
    assert certainty(40, 40, 20, 0.0) == 1.0
    assert certainty(-40, -40, 20, 1.0) == 0.0
    assert certainty(0.0, 0.0, 20, 0.5) == pytest.approx(0.5, abs=1e-15)
    want = (2 * stats.norm.cdf(1.3) + 1 * stats.norm.cdf(0.4 * math.sqrt(12)) + 3 * (1 - 0.07)) / 6
    assert certainty(1.3, 0.4, 12, 0.07, 2.0, 1.0, 3.0) == pytest.approx(want, rel=1e-14)
    # a zero weight drops its piece, NaN or not
    assert certainty(math.nan, 0.4, 12, 0.07, 0.0, 1.0, 3.0) == pytest.approx(
        (stats.norm.cdf(0.4 * math.sqrt(12)) + 3 * 0.93) / 4, rel=1e-14
    )
    assert math.isnan(certainty(math.nan, 0.4, 12, 0.07))


def test_components_equal_the_standalone_modules_and_statsmodels(stream):
    """Same stream, same settings: CertaintyScore's t_IC is InformationEdge's, its ICIR is ICIR's, its p_edge is
    the one-sided normal p-value of statsmodels' HAC test of the candidates' mean P&L, and its score is C."""
    h = 3
    cs = create("certainty_score", gate={"horizon": h})
    ie = create("information_edge", gate={"horizon": h})
    ir = create("icir")
    pnl = []
    checked = 0
    for i, c in enumerate(stream[:2200]):
        for m in (cs, ie, ir):
            m.update(c)
        pnl += [o.pnl for o in c.outcomes]
        if i % 151 == 150 and len(pnl) >= 30:
            comp = cs.components()
            np.testing.assert_equal(comp["t_ic"], ie.stats()["nw_t"])
            np.testing.assert_equal(comp["icir"], float(ir.fs[_ic.F_ICIR]))
            assert comp["k"] == ir.st.n
            x = np.array(pnl[-250:])
            ols = sm.OLS(x, np.ones_like(x)).fit(cov_type="HAC", cov_kwds={"maxlags": ie.lags})
            assert comp["t_pnl"] == pytest.approx(ols.tvalues[0], rel=1e-8)
            assert comp["p_edge"] == pytest.approx(stats.norm.sf(ols.tvalues[0]), rel=1e-8, abs=1e-14)
            v = cs.verdict()
            if "insufficient" not in v.reason:
                want = certainty(comp["t_ic"], comp["icir"], int(comp["k"]), comp["p_edge"])
                assert v.score == want and v.passed == (want >= 0.9)
                assert "uncertified default" in v.reason and "#17" in v.reason
                checked += 1
    assert checked >= 5


def test_hac_mean_kernel_equals_twin():
    rng = np.random.default_rng(9)
    a, b = _ic.HacMean(30, 4), _ic.HacMean(30, 4)
    x = rng.normal(0, 1e-4, 200)
    x[50:90] = 3e-5  # a constant stretch longer than the window
    for v in x:
        _ic._hac_mean_push(a.vals, a.hp, a.ist, a.fs, v)
        _ic._hac_mean_push_py(b.vals, b.hp, b.ist, b.fs, v)
        for u, w in ((a.vals, b.vals), (a.hp, b.hp), (a.ist, b.ist), (a.fs, b.fs)):
            np.testing.assert_allclose(u, w, rtol=1e-13, atol=1e-18, equal_nan=True)


def _ctx(i, s, r, pnl=None):
    mat = Matured(i, 0, 1, 1.0, math.exp(r), np.full(3, 0.5 + s), None)
    outs = () if pnl is None else (Outcome(0, 1, 1, 1.0, 1.0 + pnl, 0.0),)
    return Context(Bar(i * 3_600_000_000_000, 1.0, 1.0, 1.0, 1.0, 1.0, timeframe="H1"), matured=(mat,), outcomes=outs)


def _run(rho, n, seed, **params):
    rng = np.random.default_rng(seed)
    m = create("certainty_score", **params)
    for i in range(n):
        r = rng.normal(0, 1e-3)
        s = 0.02 * (rho * r / 1e-3 + rng.normal())
        d = 1 if s >= 0 else -1
        m.update(_ctx(i, s, r, pnl=d * r - 2e-5 if i % 2 == 0 else None))
    return m


def test_fail_closed_when_short_and_weights_drop_requirements():
    m = _run(0.5, 150, 1)  # 150 forecasts: IC ready, 6 of 10 periods
    r = m.verdict()
    assert not r.passed and math.isnan(r.score) and "insufficient data: 6/10 periods (ICIR)" in r.reason
    m = _run(0.5, 150, 1, w_icir=0.0)
    assert "insufficient" not in m.verdict().reason
    m = create("certainty_score", w_ic=0.0, w_icir=0.0)
    m.update(_ctx(0, 0.1, 0.001))
    assert "insufficient data: 0/30 candidate outcomes (P&L)" in m.verdict().reason
    for bad in ({"w_ic": -1.0}, {"w_ic": 0.0, "w_icir": 0.0, "w_edge": 0.0}, {"w_edge": math.nan}):
        with pytest.raises(ValueError, match="weights"):
            create("certainty_score", **bad)


def test_constant_pnl_fails_closed():
    rng = np.random.default_rng(2)
    m = create("certainty_score", w_ic=0.0, w_icir=0.0, min_outcomes=5)
    for i in range(40):
        m.update(_ctx(i, rng.normal(0, 0.05), rng.normal(0, 1e-3), pnl=0.7))
    x = Outcome(0, 1, 1, 1.0, 1.7, 0.0).pnl
    assert sum([x] * 40) / 40 != x  # the window's mean is off by rounding: a naive se would be tiny, not 0
    r = m.verdict()
    assert not r.passed and math.isnan(r.score) and "undefined" in r.reason


def test_high_on_a_planted_edge_and_near_one_half_without():
    hi = _run(0.5, 1500, 3).verdict()
    lo = _run(0.0, 1500, 3).verdict()
    assert hi.passed and hi.score > 0.99, hi.reason
    assert not lo.passed and 0.1 < lo.score < 0.9, lo.reason
