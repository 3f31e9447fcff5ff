"""Each module against an independent reference: naive loops, scipy, hmmlearn, closed forms, Monte Carlo."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from naive import bocpd_naive, vpin_naive
from scipy import optimize, stats

from fxgate.engine import Bar, sample_bars
from fxgate.modules import Context, Outcome, create
from fxgate.modules._common import sw_push, sw_quantile
from fxgate.modules.adverse_selection import AdverseSelection
from fxgate.modules.bocpd import I_ACTIVE, I_SEEN, Bocpd, _bocpd_summary, _bocpd_summary_py
from fxgate.modules.execution_cost import ac_cost, ac_trajectory
from fxgate.modules.regime import F_SCALE, RegimeDetection
from fxgate.modules.robust_kelly import baker_mchale_factor, kelly_fraction
from fxgate.modules.uncertainty import decompose
from fxgate.modules.vpin import F_BUCKET_SIZE, I_HISTORY, _vpin_step, _vpin_step_py


# -- VPIN -----------------------------------------------------------------------------------------------------------
def test_vpin_equals_the_naive_definition():
    b = sample_bars()
    bucket = float(np.mean(b.volume))
    m = create("vpin", bucket_volume=bucket, sigma_window=100, n_buckets=50)
    ours = []
    for bar in b:
        m.update(Context(bar))
        ours.append(m.value)
    ref = vpin_naive(b.close, b.volume, bucket, 100, 50)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    ok = ~np.isnan(ref)
    assert ok.sum() > 4000
    np.testing.assert_allclose(np.array(ours)[ok], ref[ok], rtol=1e-9)


def test_vpin_quantile_rule_uses_only_past_buckets():
    b = sample_bars()
    m = create("vpin", bucket_volume=float(np.mean(b.volume)) * 2, n_buckets=20, history=200, min_history=50)
    values: list[float] = []
    for bar in b:
        nb = int(m.ist[I_HISTORY])
        m.update(Context(bar))
        new = [
            float(m.hist[k % len(m.hist)]) for k in range(nb, int(m.ist[I_HISTORY]))
        ]  # a bar may fill several buckets
        if new:
            values += new[:-1]
            if len(values) >= 50:
                r = m.verdict()
                past = np.array(values[-200:])
                assert r.threshold == pytest.approx(np.quantile(past, 0.9), rel=1e-12)
                assert r.passed == (m.value <= np.quantile(past, 0.9))
            values.append(new[-1])


def test_vpin_kernel_equals_twin():
    rng = np.random.default_rng(5)
    args = []
    for _ in range(2):
        a = [
            np.zeros(8),
            np.zeros(4, np.int64),
            np.zeros(30),
            np.zeros(10),
            np.zeros(40),
            np.zeros(40),
            np.zeros(2, np.int64),
        ]
        a[0][F_BUCKET_SIZE] = 700.0
        args.append(a)
    close = 1.1 + np.cumsum(rng.normal(0, 1e-4, 600))
    vol = rng.integers(0, 900, 600).astype(float)
    for c, v in zip(close, vol, strict=True):
        _vpin_step(*args[0], c, v, 30, 10, 0.9, 100, 1.0)
        _vpin_step_py(*args[1], c, v, 30, 10, 0.9, 100, 1.0)
    for x, y in zip(args[0], args[1], strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-15)
    assert args[0][1][I_HISTORY] > 100  # many buckets completed


def test_sorted_window_against_numpy(rng):
    ring, srt, ist = np.zeros(37), np.zeros(37), np.zeros(2, np.int64)
    xs = np.round(rng.normal(size=400), 1)  # ties
    for i, x in enumerate(xs):
        sw_push(srt, ring, ist, x)
        window = xs[max(0, i - 36) : i + 1]
        np.testing.assert_array_equal(srt[: ist[1]], np.sort(window))
        for q in (0.0, 0.2, 0.9, 1.0):
            assert sw_quantile(srt, ist, q) == pytest.approx(np.quantile(window, q), abs=1e-12)


def test_vpin_absolute_rule_from_the_original_design():
    m = create("vpin", rule="absolute", bucket_volume=500.0, n_buckets=10)
    for bar in sample_bars()[:300]:
        m.update(Context(bar))
    r = m.verdict()
    assert r.threshold == 0.3 and r.passed == (m.value < 0.3)


# -- BOCPD ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def returns():
    c = sample_bars().close
    r = np.diff(np.log(c))
    return r / np.std(r[:100], ddof=1)


def test_bocpd_untruncated_equals_exact_recursion(returns):
    x = returns[:250]
    m = Bocpd(max_run=300)
    ref = bocpd_naive(x)
    for t, xt in enumerate(x):
        m.observe(xt)
        np.testing.assert_allclose(m.run_length_probs(), ref[t], rtol=1e-9, atol=1e-300)
    assert m.truncated_mass == 0.0


def test_bocpd_verdict_reads_p_short_run_and_the_mode_from_the_exact_posterior(returns):
    """The verdict's score is P(r_t < k) and its reason the most probable run length, on every bar of the untruncated
    recursion, against the exact run-length distribution (tests/naive.py)."""
    x = returns[:250]
    ref = bocpd_naive(x)
    m = Bocpd(max_run=300, k=5)
    for t, xt in enumerate(x):
        m.observe(xt)
        m.ist[I_SEEN] = 10**6  # observe() skips the calibration count: the verdict's data requirement is met
        r = m.verdict()
        assert r.score == pytest.approx(ref[t][:5].sum(), rel=1e-9, abs=1e-300)
        assert r.passed == (r.score <= 0.5)
        assert f"most likely run length {int(np.argmax(ref[t]))} bars" in r.reason


def test_bocpd_verdict_kernel_equals_the_numpy_expression_and_its_twin_with_truncation(returns):
    """The whole sample at the default 100 run lengths (slots dropped and reused): the compiled summary equals the
    numpy expression the verdict used before it (glibc's exp against numpy's: equal to a few ulps) and its
    pure-Python twin exactly; the most probable run length is the same on every bar."""
    m = Bocpd(k=5)
    worst = 0.0
    for t, xt in enumerate(returns):
        m.observe(xt)
        n = int(m.ist[I_ACTIVE])
        lp, rl = m.logp[:n], m.rl[:n]
        short, mode = _bocpd_summary(m.rl, m.logp, n, 5)
        assert (short, mode) == _bocpd_summary_py(m.rl, m.logp, n, 5), t
        ref = float(np.exp(lp[rl < 5]).sum())
        worst = max(worst, abs(short - ref) / ref)
        assert mode == int(rl[int(np.argmax(lp))]), t
    assert n == 100 and m.truncated_mass > 0  # the truncation was exercised
    assert worst <= 8 * np.finfo(float).eps


@pytest.mark.parametrize(("max_run", "max_tv"), [(100, 0.15), (300, 0.02)])
def test_bocpd_truncation_error_is_bounded(returns, max_run, max_tv):
    """Dropping the least probable run lengths, on 1,500 bars of the sample: the error of the quantity the verdict
    uses, P(r < 5), stays below the accumulated dropped mass; the whole distribution's total-variation error stays
    below ``max_tv``; and the pass/fail decision equals the exact recursion's on every bar."""
    x = returns[:1500]
    ref = bocpd_naive(x)
    m = Bocpd(max_run=max_run)
    for t, xt in enumerate(x):
        m.observe(xt)
        p, exact = m.run_length_probs(), ref[t]
        n = max(len(p), len(exact))
        pp, ee = np.zeros(n), np.zeros(n)
        pp[: len(p)], ee[: len(exact)] = p, exact
        err = abs(pp[:5].sum() - ee[:5].sum())
        assert err <= m.truncated_mass + 1e-12
        assert 0.5 * np.abs(pp - ee).sum() <= max_tv
        assert (pp[:5].sum() <= 0.5) == (ee[:5].sum() <= 0.5)
    assert m.truncated_mass < (0.05 if max_run == 100 else 0.015)


def test_bocpd_detects_a_variance_change_and_never_thresholds_p_r0():
    rng = np.random.default_rng(2)
    m = Bocpd(hazard_lambda=100, max_run=200, k=10)
    for v in rng.normal(0, 1, 300):
        m.observe(v)
    calm = m.run_length_probs()[:10].sum()
    p0 = []
    for v in rng.normal(0, 6, 6):
        m.observe(v)
        p0.append(m.run_length_probs()[0])
    assert calm < 0.2 and m.run_length_probs()[:10].sum() > 0.8
    assert int(np.argmax(m.run_length_probs())) == 6  # the change happened 6 bars ago
    np.testing.assert_allclose(p0, 1 / 100, rtol=1e-9)  # P(r=0) is the hazard on every bar: useless as a test


# -- Regime ---------------------------------------------------------------------------------------------------------
def test_regime_filter_matches_hmmlearn_last_row_and_differs_from_smoothed():
    c = sample_bars().close
    r = np.diff(np.log(c))
    m = RegimeDetection(n_states=2)
    m.fit(r[:1000])
    assert np.all(np.diff(m.variances) > 0)  # relabelled: state 0 is the calmest
    ref = m.to_hmmlearn()
    x = r[:1400] / m.fs[F_SCALE]  # the fit window, then 400 live bars
    np.testing.assert_allclose(m.alpha, ref.predict_proba(x[:1000, None])[-1], atol=1e-8)  # filtered at the end
    filtered = []
    for xt in x[1000:]:
        m.observe(xt)
        filtered.append(m.alpha.copy())
    for t in (0, 1, 17, 150, 399):  # hmmlearn's last row of predict_proba is the filtered probability
        np.testing.assert_allclose(filtered[t], ref.predict_proba(x[: 1001 + t, None])[-1], atol=1e-8)
    smoothed = ref.predict_proba(x[:1400, None])[1000:]
    assert np.max(np.abs(smoothed - np.array(filtered))) > 1e-2  # smoothing uses the future


def _regime_stream(m, closes):
    bar = sample_bars()[0]
    for c in closes:
        m.update(Context(replace(bar, close=float(c), high=float(c), low=float(c), open=float(c))))


def test_regime_continues_from_the_filtered_state_of_its_fit_window():
    """The automatic fit (after fit_bars returns) must not restart the filter from the start probabilities: the
    state after each live bar equals hmmlearn's filtered probability over *all* returns so far."""
    c = sample_bars().close[:1101]
    r = np.diff(np.log(c))
    m = RegimeDetection(n_states=2, fit_bars=1000)
    _regime_stream(m, c[:1001])  # 1000 returns: fitted on them
    assert m.fitted
    ref = m.to_hmmlearn()
    x = r / m.fs[F_SCALE]
    for t in range(1001, 1101):
        _regime_stream(m, c[t : t + 1])
        np.testing.assert_allclose(m.alpha, ref.predict_proba(x[:t, None])[-1], atol=1e-8)


def test_regime_refits_on_its_schedule_on_the_last_fit_bars_returns():
    c = sample_bars().close[:1402]
    r = np.diff(np.log(c))
    m = RegimeDetection(n_states=2, fit_bars=1000, refit_every=200)
    _regime_stream(m, c[:1201])  # fit at 1000 returns, refit at 1200 on returns 200..1199
    want = RegimeDetection(n_states=2, fit_bars=1000).fit(r[200:1200])
    np.testing.assert_allclose(m.transmat, want.transmat, rtol=1e-10)
    np.testing.assert_allclose(m.alpha, want.alpha, atol=1e-12)
    _regime_stream(m, c[1201:1301])  # no refit between schedule points
    np.testing.assert_allclose(m.transmat, want.transmat, rtol=1e-10)
    never = RegimeDetection(n_states=2, fit_bars=1000)
    _regime_stream(never, c[:1201])
    assert not np.allclose(never.transmat, want.transmat, rtol=1e-6)  # the default never refits


# -- Adverse selection ----------------------------------------------------------------------------------------------
def _outcome(d, entry, exit_, spread):
    return Outcome(0, 1, d, entry, exit_, spread)


def test_adverse_selection_equals_windowed_mean(rng):
    m = AdverseSelection(window=50, min_outcomes=10)
    outs = [
        _outcome(int(rng.choice([-1, 1])), 1.1, 1.1 + rng.normal(0, 1e-3), abs(rng.normal(1e-4, 2e-5)))
        for _ in range(237)
    ]
    bar = sample_bars()[0]
    for i in range(0, 237, 3):
        m.update(Context(bar, outcomes=tuple(outs[i : i + 3])))
    last = outs[-50:]
    # the round trip pays the full spread, as replay's trades do: the mean of (direction * move - spread)
    want = np.mean([o.direction * (o.exit_price - o.entry_price) - o.spread for o in last])
    assert m.net_markout() == pytest.approx(want, rel=1e-10)
    assert m.verdict().passed == (want >= 0)


def test_adverse_selection_sign_and_the_full_spread():
    bar = sample_bars()[0]
    good, bad, half = (AdverseSelection(min_outcomes=5) for _ in range(3))
    good.update(Context(bar, outcomes=tuple(_outcome(1, 1.0, 1.001, 1e-4) for _ in range(10))))
    bad.update(Context(bar, outcomes=tuple(_outcome(1, 1.0, 1.00003, 1e-4) for _ in range(10))))
    # moved 7e-5: covers half the 1e-4 spread but not the round trip, so a trade there loses after costs
    half.update(Context(bar, outcomes=tuple(_outcome(1, 1.0, 1.00007, 1e-4) for _ in range(10))))
    assert good.verdict().passed and not bad.verdict().passed and not half.verdict().passed


# -- Execution cost -------------------------------------------------------------------------------------------------
def test_almgren_chriss_zero_risk_aversion_is_twap():
    x = ac_trajectory(1e6, 10, 1.0, 1e-3, 1e-7, 1e-8, 0.0)
    np.testing.assert_allclose(x, np.linspace(1e6, 0, 11))
    x_small = ac_trajectory(1e6, 10, 1.0, 1e-3, 1e-7, 1e-8, 1e-12)
    np.testing.assert_allclose(x_small, np.linspace(1e6, 0, 11), rtol=1e-6)


def test_almgren_chriss_trajectory_solves_the_difference_equation_and_cost_formulas():
    big_x, n, tau, sigma, eta, gamma, lam = 1e5, 12, 0.5, 2e-3, 2e-6, 1e-7, 1e-4
    x = ac_trajectory(big_x, n, tau, sigma, eta, gamma, lam)
    eta_t = eta - gamma * tau / 2
    kt2 = lam * sigma**2 / eta_t  # (kappa~)^2 of Almgren-Chriss eq. 18: second difference / tau^2 = kt2 * x
    second = (x[:-2] - 2 * x[1:-1] + x[2:]) / tau**2
    np.testing.assert_allclose(second, kt2 * x[1:-1], rtol=1e-8)
    assert x[0] == big_x and abs(x[-1]) < 1e-9
    eps = 5e-5
    e, v = ac_cost(x, tau, sigma, eta, gamma, eps)
    nk = -np.diff(x)
    assert e == pytest.approx(0.5 * gamma * big_x**2 + eps * nk.sum() + eta_t / tau * (nk**2).sum())
    assert v == pytest.approx(sigma**2 * tau * (x[1:] ** 2).sum())
    # the optimum beats the TWAP on E + lam * V
    twap = np.linspace(big_x, 0, n + 1)
    e2, v2 = ac_cost(twap, tau, sigma, eta, gamma, eps)
    assert e + lam * v < e2 + lam * v2


def test_execution_cost_verdict():
    bars = sample_bars()[:300]
    m = create("execution_cost")
    for bar in bars:
        m.update(Context(bar, probs=np.array([0.9, 0.9, 0.9]), direction=1, spread=1e-4))
    est = m.estimate()
    assert est["edge"] == pytest.approx(0.8 * np.mean(np.abs(np.diff(bars.close[-201:]))))
    assert est["cost"] == pytest.approx(1e-4, rel=1e-12)  # one clip, no impact: the round trip pays the full spread
    assert est["cost_sd"] == pytest.approx(0.0, abs=1e-9)  # a constant spread: nothing uncertain about it
    assert m.verdict().passed == (est["cost"] < est["edge"])
    m.update(Context(bars[-1], probs=np.array([0.51, 0.5, 0.52]), direction=1, spread=1e-4))
    assert not m.verdict().passed  # a coin flip does not pay a 1-pip spread
    m.update(Context(bars[-1], spread=1e-4))
    assert "no candidate" in m.verdict().reason
    m.update(Context(bars[-1], probs=np.array([0.9, 0.9, 0.9]), direction=1))  # no spread known at all
    assert not m.verdict().passed and "no spread known" in m.verdict().reason


def test_execution_cost_sd_term_is_the_exit_spread_uncertainty_and_can_veto(rng):
    bars = sample_bars()[:400]
    spreads = np.abs(rng.normal(1e-4, 4e-5, len(bars)))
    # independent figures: mean |1-bar move| and the sd of the exit's half spread over the last 200 bars
    move = np.mean(np.abs(np.diff(bars.close[-201:])))
    sd = np.std(spreads[-200:], ddof=1) / 2
    p_up = 0.5 + (spreads[-1] + 1.5 * sd) / (2 * move)  # edge = cost + 1.5 sd: z = 1 passes, z = 3 does not
    passed = {}
    for z in (0.0, 1.0, 3.0):
        m = create("execution_cost", z=z, window=200)
        for bar, s in zip(bars, spreads, strict=True):
            m.update(Context(bar, probs=np.full(3, p_up), direction=1, spread=float(s)))
        est = m.estimate()
        assert est["cost"] == pytest.approx(spreads[-1], rel=1e-12)
        assert est["cost_sd"] == pytest.approx(sd, rel=1e-9)
        assert est["edge"] == pytest.approx(spreads[-1] + 1.5 * sd, rel=1e-9)
        passed[z] = m.verdict().passed
    assert passed == {0.0: True, 1.0: True, 3.0: False}


def test_modules_take_gate_settings_from_the_gate_only():
    assert create("execution_cost", gate={"horizon": 5}).params["horizon"] == 5
    assert create("vpin", gate={"horizon": 5}).params.get("horizon") is None  # not a vpin setting
    with pytest.raises(ValueError, match="top-level setting"):
        create("execution_cost", horizon=5)


# -- Kelly ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("p", "b"), [(0.55, 1.0), (0.6, 0.8), (0.4, 2.5), (0.7, 1.3)])
def test_kelly_is_the_argmax_of_expected_log_growth(p, b):
    res = optimize.minimize_scalar(
        lambda f: -(p * math.log1p(f * b) + (1 - p) * math.log1p(-f)),
        bounds=(-0.999, 0.999),
        method="bounded",
        options={"xatol": 1e-10},
    )
    assert kelly_fraction(p, b) == pytest.approx(res.x, abs=1e-6)


def test_baker_mchale_shrinkage_against_monte_carlo():
    p, b = 0.56, 1.0
    for n in (100, 400):
        k = baker_mchale_factor(p, b, n)
        assert 0 < k < 1
        rng = np.random.default_rng(n)
        # Baker & McHale shrink the unconstrained plug-in estimate f^ = p^ - (1 - p^)/b (it may be negative)
        p_hat = rng.binomial(n, p, 200_000) / n
        f_hat = p_hat - (1 - p_hat) / b

        def growth(c, f_hat=f_hat):
            f = np.clip(c * f_hat, -0.99, 0.99)
            return -np.mean(p * np.log1p(f * b) + (1 - p) * np.log1p(-f))

        best = optimize.minimize_scalar(growth, bounds=(0, 1.5), method="bounded", options={"xatol": 1e-6}).x
        assert k == pytest.approx(best, abs=0.01)  # k(100) = 0.594, k(400) = 0.854: far apart at this tolerance
    assert baker_mchale_factor(p, b, 10**7) > 0.99


def test_robust_kelly_module(stream):
    m = create("robust_kelly")
    pnls = []
    for ctx in stream:
        m.update(ctx)
        pnls += [o.pnl for o in ctx.outcomes]
    last = np.array(pnls[-200:])
    p = (last > 0).mean()
    b = last[last > 0].mean() / np.abs(last[last <= 0]).mean()
    est = m.estimate()
    assert est["p"] == pytest.approx(p) and est["b"] == pytest.approx(b)
    u = min(1, 1.96 * math.sqrt(p * (1 - p) / 200) / p)
    assert est["fraction"] == pytest.approx(0.5 * (p - (1 - p) / b) * (1 - u))
    assert m.verdict().passed == (est["fraction"] > 0)


# -- Bayesian sizing ------------------------------------------------------------------------------------------------
def test_bayesian_sizing_against_monte_carlo_posterior():
    m = create("bayesian_sizing", min_outcomes=10, cost=0.05)
    bar = sample_bars()[0]
    outs = [_outcome(1, 1.0, 1.0 + (0.002 if i % 5 < 3 else -0.0018), 0.0) for i in range(120)]
    m.update(Context(bar, outcomes=tuple(outs)))
    post = m.posterior()
    rng = np.random.default_rng(0)
    ps = rng.beta(post["a"], post["b"], 2_000_000)
    mc = np.mean(ps * (1 + post["payoff"]) - 1 > 0.05)
    assert m.prob_edge(post) == pytest.approx(mc, abs=2e-3)
    grid = np.linspace(0, 0.9, 1801)
    g = [np.mean(ps[:200_000] * np.log1p(f * post["payoff"]) + (1 - ps[:200_000]) * np.log1p(-f)) for f in grid]
    assert m.size(post) == pytest.approx(grid[int(np.argmax(g))], abs=1e-3)
    assert m.verdict().passed == (m.prob_edge(post) >= 0.95)


# -- Uncertainty ----------------------------------------------------------------------------------------------------
def test_uncertainty_decomposition_against_scipy(rng):
    for _ in range(50):
        p = rng.uniform(0.01, 0.99, 3)
        t, a, e = decompose(p)
        H = lambda q: stats.entropy([q, 1 - q])  # noqa: E731
        assert t == pytest.approx(H(p.mean())) and a == pytest.approx(np.mean([H(q) for q in p]))
        assert e == pytest.approx(t - a) and e >= -1e-15
    assert decompose(np.array([0.7, 0.7, 0.7]))[2] == pytest.approx(0.0, abs=1e-15)


def test_uncertainty_threshold_is_the_quantile_of_past_values(stream):
    m = create("uncertainty", history=100, min_history=30)
    eps = []
    for ctx in stream[:400]:
        m.update(ctx)
        e = decompose(ctx.probs)[2]
        if len(eps) >= 30:
            r = m.verdict()
            assert r.threshold == pytest.approx(np.quantile(eps[-100:], 0.9), rel=1e-12)
            assert r.passed == (e <= r.threshold)
        eps.append(e)


def test_bar_type_is_used_unchanged():
    assert Bar(0, 1, 1, 1, 1, 1).spread is None
