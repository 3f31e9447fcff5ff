"""EdgeProof: SPA / Reality Check p-values against arch on arch's own bootstrap indices, PSR/DSR against the closed
form and the published example, size and power over simulated nulls, and the module contract (fail closed,
schedule, determinism, snapshot)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from arch.bootstrap import SPA, RealityCheck, StationaryBootstrap
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fxgate.engine import Bar
from fxgate.engine.core.sharpe import (
    deflated_sharpe_from,
    expected_max_sharpe,
    probabilistic_sharpe_from,
    sharpe_moments,
)
from fxgate.modules import Context, Outcome, create
from fxgate.modules._bootstrap import bootstrap_means, optimal_block_length, stationary_means
from fxgate.modules.edge_proof import (
    F_P_CONSISTENT,
    F_RESAMPLES,
    I_BARS,
    I_LAST_BAR,
    I_PUSHES,
    I_RECOMPUTES,
    _edge_bar,
    _edge_bar_py,
    _edge_push,
    _edge_push_py,
    spa_pvalues,
    spa_sequential,
    spa_test,
)

H = 3_600_000_000_000


# -- helpers --------------------------------------------------------------------------------------------------------
def arch_indices(block: float, d: np.ndarray, reps: int, seed: int) -> np.ndarray:
    """The index matrix arch's SPA resamples with for this seed: SPA builds StationaryBootstrap(block, loss_diff,
    seed=seed) and iterates ``bootstrap(reps)``; an identical object yields the identical stream."""
    bs = StationaryBootstrap(block, d, seed=seed)
    rows = []
    for _ in bs.bootstrap(reps):
        rows.append(bs.index.copy())
    return np.array(rows)


def loss_panel(t: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Benchmark losses and k model losses: AR(1) noise, model means spread around the benchmark so that some are
    better, some worse and some inside the consistent-recentering band."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((t, k + 1))
    x = np.empty_like(e)
    x[0] = e[0]
    for s in range(1, t):
        x[s] = 0.3 * x[s - 1] + e[s]
    bench = 1.0 + x[:, 0]
    shift = np.linspace(-0.4, 0.08, k) if k > 1 else np.array([0.12])
    models = 1.0 + x[:, 1:] * 0.8 + 0.6 * x[:, :1] - shift
    return bench, models


def ar1(n: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    e = rng.standard_normal(n)
    x = np.empty(n)
    x[0] = e[0] / math.sqrt(1 - phi * phi)
    for s in range(1, n):
        x[s] = phi * x[s - 1] + e[s]
    return x


def outcome_stream(pnl: np.ndarray, spread: float = 0.0, price: float = 1.1):
    """Contexts delivering one outcome per bar whose P&L (after ``spread``) is exactly ``pnl[i]``."""
    out = []
    for i, x in enumerate(pnl):
        o = Outcome(i * H, (i + 1) * H, 1, price, price + float(x) + spread, spread=spread)
        out.append(Context(Bar((i + 1) * H, price, price, price, price, 1.0, timeframe="H1"), outcomes=(o,)))
    return out


# -- SPA / Reality Check == arch ------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3, 10])
@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("seed", [0, 17])
def test_spa_pvalues_equal_arch_on_arch_indices(k, nested, seed):
    t, reps, block = 400, 600, 6.0
    bench, models = loss_panel(t, k, seed)
    spa = SPA(bench, models, block_size=block, reps=reps, nested=nested, seed=seed)
    spa.compute()
    ref = spa.pvalues
    d = bench[:, None] - models
    bm = bootstrap_means(d, arch_indices(block, d, reps, seed))
    ours = spa_pvalues(d, bm, block, nested=nested, statistic="arch")
    assert ours.lower == pytest.approx(ref["lower"], abs=1e-12)
    assert ours.consistent == pytest.approx(ref["consistent"], abs=1e-12)
    assert ours.upper == pytest.approx(ref["upper"], abs=1e-12)
    # the p-values are not degenerate (a comparison of two zeros would prove nothing)
    assert 0 < ref["upper"] < 1 or k == 1
    if k == 1:  # one model with a positive mean: Hansen's studentized statistic gives the same number
        assert d.mean() > 0
        h = spa_pvalues(d, bm, block, nested=nested, statistic="hansen")
        assert (h.lower, h.consistent, h.upper) == (ours.lower, ours.consistent, ours.upper)


def test_spa_recentering_cases_are_exercised():
    """The panel used above has models worse than the benchmark, some inside and some outside the consistent
    band, so the three recenterings give three different p-values (each arch comparison tests all three)."""
    bench, models = loss_panel(400, 10, 0)
    spa = SPA(bench, models, block_size=6.0, reps=600, seed=0)
    spa.compute()
    p = spa.pvalues
    assert p["lower"] < p["consistent"] < p["upper"]


@pytest.mark.parametrize("k", [1, 5])
def test_reality_check_equals_arch(k):
    bench, models = loss_panel(300, k, 3)
    rc = RealityCheck(bench, models, block_size=5.0, reps=500, seed=4)
    rc.compute()
    d = bench[:, None] - models
    bm = bootstrap_means(d, arch_indices(5.0, d, 500, 4))
    for statistic in ("arch", "hansen"):
        ours = spa_pvalues(d, bm, 5.0, statistic=statistic)
        assert ours.reality_check == pytest.approx(rc.pvalues["upper"], abs=1e-12)


def test_spa_test_is_spa_pvalues_on_our_own_stream():
    bench, models = loss_panel(250, 4, 5)
    d = bench[:, None] - models
    got = spa_test(d, 300, 4.0, 9)
    want = spa_pvalues(d, stationary_means(d, 300, 4.0, 9), 4.0)
    assert got == want


def test_hansen_statistic_differs_from_arch_with_unequal_variances():
    """With several models of unequal variance, studentizing changes which model drives the maximum: the two
    statistics must not silently coincide (guards against ``statistic`` being ignored)."""
    rng = np.random.default_rng(2)
    d = rng.standard_normal((300, 2)) * np.array([0.2, 5.0]) + np.array([0.03, 0.5])
    bm = stationary_means(d, 2000, 2.0, 1)
    a = spa_pvalues(d, bm, 2.0, statistic="arch")
    h = spa_pvalues(d, bm, 2.0, statistic="hansen")
    assert abs(a.consistent - h.consistent) > 0.02


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(1, 4),
    shift=st.floats(-0.3, 0.3),
    statistic=st.sampled_from(["arch", "hansen"]),
)
def test_spa_pvalue_properties(seed, k, shift, statistic):
    """lower <= consistent <= upper (g_l >= g_c >= g_u), all in [0, 1], and invariant to rescaling the losses by a
    power of two (exact in floating point)."""
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((80, k)) + shift
    bm = stationary_means(d, 200, 3.0, seed)
    r = spa_pvalues(d, bm, 3.0, statistic=statistic)
    assert 0.0 <= r.lower <= r.consistent <= r.upper <= 1.0
    assert 0.0 <= r.reality_check <= 1.0
    assert spa_pvalues(d * 4.0, bm * 4.0, 3.0, statistic=statistic) == r


# -- PSR / DSR ------------------------------------------------------------------------------------------------------
def test_deflated_sharpe_reproduces_the_published_example():
    """Bailey & López de Prado (2014), *The Deflated Sharpe Ratio*, J. Portfolio Management 40(5), numerical
    example: annualized SR 2.5 over 5 years of daily returns (T = 1250), skewness -3, kurtosis 10, N = 100 trials
    with annualized variance of the trials' Sharpe ratios 0.5 -> DSR = 0.9004 (published to four decimals)."""
    sr = 2.5 / math.sqrt(250)
    assert deflated_sharpe_from(sr, 1250, -3.0, 10.0, 100, 0.5 / 250) == pytest.approx(0.9004, abs=5e-5)
    # one trial deflates by nothing
    assert deflated_sharpe_from(sr, 1250, -3.0, 10.0, 1) == probabilistic_sharpe_from(sr, 1250, -3.0, 10.0)


def test_expected_max_sharpe_is_the_false_strategy_theorem():
    """E[max of N unskilled Sharpe estimates] against a Monte Carlo of N normal Sharpe estimates (5 standard
    errors)."""
    rng = np.random.default_rng(0)
    n, v = 50, 0.01
    sims = rng.normal(0.0, math.sqrt(v), (20_000, n)).max(axis=1)
    se = sims.std() / math.sqrt(len(sims))
    # the theorem is an approximation (Gumbel limit): within 2% of the simulated mean, and the simulation's error
    assert abs(expected_max_sharpe(n, v) - sims.mean()) < 0.02 * sims.mean() + 5 * se
    assert expected_max_sharpe(1, v) == 0.0


def test_psr_is_the_closed_form_with_raw_kurtosis():
    rng = np.random.default_rng(1)
    r = rng.standard_t(4, 300) * 0.01 + 0.002
    n = len(r)
    mu = r.mean()
    sd = math.sqrt(((r - mu) ** 2).sum() / (n - 1))
    sr = mu / sd
    m2 = ((r - mu) ** 2).mean()
    g3 = ((r - mu) ** 3).mean() / m2**1.5
    g4 = ((r - mu) ** 4).mean() / m2**2  # raw (non-excess) kurtosis
    got = sharpe_moments(r)
    assert got is not None
    assert got[0] == pytest.approx(sr, rel=1e-12) and got[1] == n
    assert got[2] == pytest.approx(g3, rel=1e-10) and got[3] == pytest.approx(g4, rel=1e-10)
    z = sr * math.sqrt(n - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr * sr)
    assert probabilistic_sharpe_from(*got) == pytest.approx(stats.norm.cdf(z), abs=1e-12)
    assert sharpe_moments(np.ones(10)) is None and sharpe_moments(r[:2]) is None


def test_sharpe_moments_equal_scipys_skew_and_kurtosis_and_are_nan_where_scipys_are():
    rng = np.random.default_rng(7)
    for r in (rng.standard_t(3, 500) * 1e-4 + 1e-5, rng.normal(0, 1, 40), rng.exponential(1.0, 1000) - 1.0):
        got = sharpe_moments(r)
        assert got is not None
        assert got[2] == stats.skew(r) and got[3] == stats.kurtosis(r, fisher=False)
    near = 1.0 + np.array([0.0, 1e-17, 2e-16, 0.0, 0.0, 2.2e-16])  # a variance that is the mean's rounding residue
    got = sharpe_moments(near)
    with pytest.warns(RuntimeWarning, match="catastrophic cancellation"):
        assert math.isnan(stats.skew(near)) and math.isnan(stats.kurtosis(near, fisher=False))
    assert got is not None and math.isnan(got[2]) and math.isnan(got[3])


# -- size and power -------------------------------------------------------------------------------------------------
def _reject_rate(gen, sims: int, alpha: float, reps: int, horizon: int = 1, seed: int = 2024) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for s in range(sims):
        x = gen(rng)
        b = optimal_block_length(x)
        b = min(max(b if math.isfinite(b) else math.sqrt(len(x)), float(horizon), 1.0), float(len(x)))
        hits += spa_test(x, reps, b, s).consistent < alpha
    return hits / sims


NULLS = {
    "iid_normal": (lambda r: r.standard_normal(500), 1),
    "iid_student_t3": (lambda r: r.standard_t(3, 500), 1),
    "ar1_0.2": (lambda r: ar1(500, 0.2, r), 1),
    # overlapping 5-bar outcomes: MA(4), block at least the horizon
    "overlap_h5": (lambda r: np.convolve(r.standard_normal(504), np.ones(5), "valid"), 5),
}


@pytest.mark.parametrize("name", list(NULLS))
def test_size_under_the_null(name):
    """200 mean-zero series of 500 outcomes, alpha = 0.05: the rejection rate is at most alpha plus 2.33 binomial
    standard errors (0.086; the 99% one-sided bound for a correct test), deterministic (fixed seeds)."""
    gen, h = NULLS[name]
    sims, alpha = 200, 0.05
    rate = _reject_rate(gen, sims, alpha, reps=499, horizon=h)
    assert rate <= alpha + 2.33 * math.sqrt(alpha * (1 - alpha) / sims), rate


def test_power_with_a_planted_edge():
    """Mean 0.15 standard deviations per outcome over 500 iid outcomes (t ~ 3.4): rejected at alpha = 0.05 in at
    least 85% of 200 simulations (the normal-theory power is 96%)."""
    rate = _reject_rate(lambda r: r.standard_normal(500) + 0.15, 200, 0.05, reps=499)
    assert rate >= 0.85, rate


def test_power_at_the_default_threshold():
    """The default rule's level, p < 0.001 at 10,000 resamples: an edge of 0.25 sd per outcome over 500 outcomes
    (t ~ 5.6) is detected in at least 90% of 30 AR(0.2) simulations, and a zero edge in none."""
    edge = _reject_rate(lambda r: ar1(500, 0.2, r) * math.sqrt(1 - 0.04) + 0.25, 30, 0.001, reps=10_000)
    null = _reject_rate(lambda r: ar1(500, 0.2, r), 30, 0.001, reps=10_000)
    assert edge >= 0.9 and null == 0.0, (edge, null)


# -- the module -----------------------------------------------------------------------------------------------------
SMALL = {"reps": 1000, "p_threshold": 0.01, "min_outcomes": 50, "window": 300, "every": 25}


def test_fresh_and_short_history_fail_closed():
    m = create("edge_proof", **SMALL)
    r = m.verdict()
    assert not r.passed and "insufficient data: 0/50 outcomes" in r.reason
    for ctx in outcome_stream(np.full(49, 1e-3)):
        m.update(ctx)
    r = m.verdict()
    assert not r.passed and "insufficient data: 49/50 outcomes" in r.reason


def test_constant_pnl_fails_closed():
    """A constant positive P&L would give p = 0 and an infinite Sharpe: no test is possible, so no pass."""
    m = create("edge_proof", **SMALL)
    for ctx in outcome_stream(np.full(120, 2e-4)):
        m.update(ctx)
    r = m.verdict()
    assert not r.passed and math.isnan(r.score) and "constant P&L" in r.reason


def test_nan_outcomes_and_bad_bars_are_skipped():
    rng = np.random.default_rng(5)
    pnl = rng.standard_normal(200) * 1e-4 + 5e-5
    clean = create("edge_proof", **SMALL)
    dirty = create("edge_proof", **SMALL)
    for i, ctx in enumerate(outcome_stream(pnl)):
        clean.update(ctx)
        dirty.update(ctx)
        if i % 7 == 0:
            o = Outcome(0, 1, 1, 1.1, math.nan, spread=1e-5)
            dirty.update(Context(Bar(i * H, 1.1, 1.1, 1.1, math.nan, 1.0, timeframe="H1"), outcomes=(o,)))
            bad = Outcome(0, 1, 1, math.inf, 1.1, spread=1e-5)
            dirty.update(Context(Bar(i * H, 1.1, 1.1, 1.1, 0.0, 1.0, timeframe="H1"), outcomes=(bad,)))
        assert dirty.verdict() == clean.verdict()
    np.testing.assert_array_equal(dirty.ist, clean.ist)


def test_the_window_holds_the_last_outcomes_in_order():
    m = create("edge_proof", **SMALL)
    pnl = np.arange(1, 451) * 1e-6
    for ctx in outcome_stream(pnl):
        m.update(ctx)
    np.testing.assert_allclose(m.values(), pnl[-300:], rtol=0, atol=1e-12)


def test_module_pvalues_are_spa_test_on_its_window_with_the_documented_seed():
    rng = np.random.default_rng(6)
    # lag = 0: the recompute inside the due bar's update (tests/modules/test_schedule.py checks that the default,
    # deferred one is this result applied lag bars later)
    m = create("edge_proof", **SMALL, seed=11, lag=0)
    full = early = 0
    for ctx in outcome_stream(rng.standard_normal(400) * 1e-4 + 2e-5):
        m.update(ctx)
        if m.ist[I_LAST_BAR] == m.ist[I_BARS]:  # a recompute ran on this bar
            x = m.values()
            b = min(max(optimal_block_length(x), 1.0), len(x))
            seed = 11 + int(m.ist[I_PUSHES])
            want = spa_test(x, 1000, b, seed)
            used = int(m.fs[F_RESAMPLES])
            if used == 1000:  # run to the end: the full test's p
                assert m.fs[F_P_CONSISTENT] == want.consistent
                full += 1
            else:  # stopped once p >= 0.01 was certain: what a test of its resamples gives, and the full one fails
                assert m.fs[F_P_CONSISTENT] == spa_test(x, used, b, seed).consistent >= 0.01 and want.consistent >= 0.01
                early += 1
    assert m.ist[I_RECOMPUTES] >= 10 and full and early, (full, early)


def test_recompute_schedule():
    """First test as soon as the window holds min_outcomes, then every `every` good bars (only if outcomes
    arrived)."""
    m = create("edge_proof", **SMALL)
    bars_at = []
    rng = np.random.default_rng(7)
    ctxs = outcome_stream(rng.standard_normal(200) * 1e-4)
    for ctx in ctxs:
        before = int(m.ist[I_RECOMPUTES])
        m.update(ctx)
        if m.ist[I_RECOMPUTES] > before:
            bars_at.append(int(m.ist[I_BARS]))
    assert bars_at == [50, 75, 100, 125, 150, 175, 200]
    # no new outcomes: no recompute, however many bars pass
    for i in range(100):
        m.update(Context(Bar((300 + i) * H, 1.1, 1.1, 1.1, 1.1, 1.0, timeframe="H1")))
    assert m.ist[I_RECOMPUTES] == 7


def test_passes_with_an_edge_and_fails_without():
    rng = np.random.default_rng(8)
    sd = 1e-4
    good = create("edge_proof", **SMALL)
    for ctx in outcome_stream(rng.standard_normal(300) * sd + 0.3 * sd, spread=2e-5):
        good.update(ctx)
    r = good.verdict()
    assert r.passed and r.score < 0.01 and "DSR" in r.reason, r.reason
    # the same markouts paying a spread that eats the edge: the net P&L has no edge
    flat = create("edge_proof", **SMALL)
    x = rng.standard_normal(300) * sd
    for ctx in outcome_stream(x, spread=2e-5):
        flat.update(ctx)
    assert not flat.verdict().passed
    # costs=False tests the markout before the spread
    gross = create("edge_proof", **SMALL, costs=False)
    for ctx in outcome_stream(x - 0.4 * sd, spread=0.7 * sd):  # markout = x + 0.3 sd
        gross.update(ctx)
    assert gross.verdict().passed


def test_n_trials_deflates():
    rng = np.random.default_rng(9)
    pnl = rng.standard_normal(300) * 1e-4 + 0.17e-4
    ms = [create("edge_proof", **{**SMALL, "dsr_threshold": 0.9}, n_trials=n) for n in (1, 1000)]
    for ctx in outcome_stream(pnl):
        for m in ms:
            m.update(ctx)
    one, many = ms[0].verdict(), ms[1].verdict()
    assert one.passed and not many.passed, (one.reason, many.reason)


def test_snapshot_and_replay_give_the_same_pvalues():
    rng = np.random.default_rng(10)
    ctxs = outcome_stream(rng.standard_normal(500) * 1e-4 + 1e-5)
    a = create("edge_proof", **SMALL)
    for ctx in ctxs[:260]:
        a.update(ctx)
    b = create("edge_proof", **SMALL)
    b.load_state_dict(a.state_dict())
    c = create("edge_proof", **SMALL)
    for ctx in ctxs[:260]:
        c.update(ctx)
    for ctx in ctxs[260:]:
        for m in (a, b, c):
            m.update(ctx)
        assert a.verdict() == b.verdict() == c.verdict()
        np.testing.assert_array_equal(a.fs, b.fs)


def test_no_look_ahead():
    """Changing every outcome and bar after t leaves every verdict up to t unchanged."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal(300) * 1e-4 + 2e-5
    y = x.copy()
    y[200:] = rng.standard_normal(100) * 1e-3 - 5e-4
    a, b = create("edge_proof", **SMALL), create("edge_proof", **SMALL)
    va, vb = [], []
    for ca, cb in zip(outcome_stream(x), outcome_stream(y), strict=True):
        a.update(ca)
        b.update(cb)
        va.append(a.verdict())
        vb.append(b.verdict())
    assert va[:200] == vb[:200] and va[200:] != vb[200:]


def test_p_threshold_below_the_bootstrap_resolution_is_a_config_error():
    with pytest.raises(ValueError, match=r"Fix: set reps >= 10000"):
        create("edge_proof", reps=9999)
    with pytest.raises(ValueError, match=r"Fix: set reps >= 100000"):
        create("edge_proof", p_threshold=1e-4)
    create("edge_proof", reps=1000, p_threshold=0.01)  # exactly 10 exceedances: accepted
    with pytest.raises(ValueError, match="p_value"):
        create("edge_proof", p_value="consistant")
    with pytest.raises(ValueError, match="min_outcomes"):
        create("edge_proof", min_outcomes=600)


def test_kernels_equal_their_twins():
    rng = np.random.default_rng(13)
    pa, pb = np.zeros(7), np.zeros(7)
    ia, ib = np.zeros(7, np.int64), np.zeros(7, np.int64)
    for x in rng.standard_normal(30):
        _edge_push(pa, ia, x)
        _edge_push_py(pb, ib, x)
        due_a = _edge_bar(ia, 4, 5, 7)
        due_b = _edge_bar_py(ib, 4, 5, 7)
        assert bool(due_a) == bool(due_b)
        if due_a:
            ia[I_RECOMPUTES] += 1
            ib[I_RECOMPUTES] += 1
            ia[I_LAST_BAR] = ib[I_LAST_BAR] = ia[I_BARS]
    np.testing.assert_array_equal(pa, pb)
    np.testing.assert_array_equal(ia, ib)


def test_no_model_beating_the_benchmark_is_p_one():
    """T^SPA = 0 (every model worse in sample) is no evidence against H0: p = 1, whatever the recentering (a
    strictly-greater count of T* > 0 would reject here, since the recentered T* of far-worse models are ~0)."""
    rng = np.random.default_rng(14)
    d = rng.standard_normal((300, 3)) - np.array([0.5, 0.8, 1.0])
    r = spa_test(d, 500, 3.0, 0)
    assert (r.lower, r.consistent, r.upper) == (1.0, 1.0, 1.0)
    assert r.reality_check > 0.5


@pytest.mark.parametrize("statistic", ["hansen", "arch"])
@pytest.mark.parametrize("p_value", ["consistent", "lower", "upper", "rc"])
def test_the_early_stop_never_changes_the_outcome_of_the_full_test(statistic, p_value):
    """spa_sequential against the full spa_test on the same stream, over 60 windows from no edge to a strong one
    (most near the threshold): the outcome "p < threshold" is the full test's every time; a test run to the end
    reports the full test's p-values bit for bit; one stopped after l resamples reports exactly what a run of l
    resamples gives (spa_pvalues over stationary_means(x, l, ...)), stopped on the h-th exceedance (Besag &
    Clifford: l - 1 resamples hold h - 1), its chosen p is >= the threshold, and the full test's is too. Losing
    windows stop within 512 resamples."""
    reps, thr = 2000, 0.05
    outcomes = {"early": 0, "full": 0, "pass": 0}
    for i in range(60):
        rng = np.random.default_rng(1000 + i)
        shift = (-0.1, 0.0, 0.05, 0.08, 0.1, 0.12, 0.3)[i % 7]
        x = ar1(300, 0.1, rng) + shift
        b = min(max(optimal_block_length(x), 1.0), len(x))
        full = spa_test(x, reps, b, seed=i, statistic=statistic)
        seq, used = spa_sequential(x, reps, b, seed=i, threshold=thr, p_value=p_value, statistic=statistic)
        field = "reality_check" if p_value == "rc" else p_value
        want, got = getattr(full, field), getattr(seq, field)
        assert (got < thr) == (want < thr), (i, got, want, used)
        if used == reps:
            assert seq == full, i
            outcomes["full"] += 1
        else:
            assert got >= thr and want >= thr, (i, got, want, used)
            assert seq == spa_pvalues(x, stationary_means(x, used, b, seed=i), b, statistic=statistic), i
            fixed = statistic == "hansen" and p_value != "rc" and got == 1.0 and used == 16  # p = 1: one batch
            if not fixed:  # stopped on the resample that made the 100th exceedance (h = 0.05 * 2000)
                before = spa_pvalues(x, stationary_means(x, used - 1, b, seed=i), b, statistic=statistic)
                assert (round(got * used), round(getattr(before, field) * (used - 1))) == (100, 99), (i, used)
            outcomes["early"] += 1
        outcomes["pass"] += want < thr
        if shift < 0.0:  # a losing strategy
            assert used <= 512, (i, used)
    assert outcomes["early"] >= 20 and outcomes["full"] >= 5 and outcomes["pass"] >= 5, outcomes
