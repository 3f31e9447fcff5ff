"""ModelConfidenceSet: arch's MCS with the same bootstrap resamples, kernel == twin, the loss rows (Brier, a
past-only base rate), the LLM rule, scheduling and restore, fail-closed cases, and the MCS's size and power."""

from __future__ import annotations

import math

import numpy as np
import pytest
from arch.bootstrap import MCS
from hypothesis import given, settings
from hypothesis import strategies as st

from fxgate.engine import Bar, sample_bars
from fxgate.modules import Context, Matured, create
from fxgate.modules._bootstrap import bootstrap_means, stationary_indices, stationary_means
from fxgate.modules.model_confidence_set import (
    C_BENCHMARK,
    C_ENSEMBLE,
    C_LLM,
    I_OUTCOMES,
    I_RECOMPUTED,
    I_ROWS,
    I_USED_LLM,
    I_USED_ROWS,
    PARTS,
    _mcs,
    _mcs_count,
    _mcs_count_py,
    _mcs_push,
    _mcs_push_py,
    _mcs_py,
    _mcs_snapshot,
    _mcs_snapshot_py,
    mcs,
    mcs_pvalues,
    part_seed,
)

H = 3_600_000_000_000  # one hour in ns


def arch_mcs(losses, idx, method, size=0.1, block=5):
    """arch's MCS fed the index matrix ``idx`` (its bootstrap's update_indices replaced, one row per call):
    (p-value per column, included columns, the indices arch used)."""
    ref = MCS(losses, size=size, reps=idx.shape[0], block_size=block, method=method, bootstrap="stationary", seed=0)
    rows = iter(idx)
    ref.bootstrap.update_indices = lambda: next(rows).copy()
    ref.compute()
    p = np.full(losses.shape[1], np.nan)
    for i, v in ref.pvalues["Pvalue"].items():
        p[int(i)] = v
    return p, list(ref.included), np.array(ref._bootstrap_indices)


def _matrices():
    rng = np.random.default_rng(11)
    t, k = 300, 5
    equal = rng.normal(size=(t, k)) ** 2
    worse = rng.normal(size=(t, k)) ** 2
    worse[:, 2] += 0.6  # clearly worse: eliminated first
    e = rng.normal(size=(t + 50, k))
    ar = np.empty_like(e)
    ar[0] = e[0]
    for s in range(1, len(e)):
        ar[s] = 0.6 * ar[s - 1] + e[s]
    graded = ar[50:] ** 2 + np.linspace(0.0, 1.2, k)  # autocorrelated, a ladder of means
    brier = (rng.uniform(0.3, 0.7, (200, 6)) - (rng.random((200, 1)) < 0.5)) ** 2  # six Brier columns
    brier[:, 5] = (0.5 - (rng.random(200) < 0.5)) ** 2 + 0.02  # a constant-forecast column, a little worse
    return {"equal": equal, "worse": worse, "graded": graded, "brier": brier}


MATRICES = _matrices()


@pytest.mark.parametrize("method", ["R", "max"])
@pytest.mark.parametrize("case", sorted(MATRICES))
def test_equals_arch_mcs_with_the_same_bootstrap_indices(case, method):
    """Same losses, same resamples (fed to arch row by row), same size: the same p-values (to 1e-12) and included
    set, through the index-matrix path and through the prefix-sum path the module uses."""
    losses = MATRICES[case]
    t = losses.shape[0]
    reps, block, seed = 700, 4.0, 5
    idx = stationary_indices(t, reps, block, seed)
    ref, inc, used = arch_mcs(losses, idx, method)
    np.testing.assert_array_equal(used, idx)  # arch resampled exactly these rows
    ours_idx = mcs_pvalues(losses, bootstrap_means(losses, idx), method)
    ours = mcs(losses, reps, block, seed, method)
    np.testing.assert_allclose(ours_idx, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    assert [j for j in range(losses.shape[1]) if ours[j] > 0.1] == inc
    if case == "worse":
        assert 2 not in inc and ours[2] <= 0.01  # elimination happened, of the right model
    if case == "graded":
        assert len(inc) < losses.shape[1]


def test_equals_arch_mcs_on_arch_own_draws():
    """arch drawing its own stationary resamples (its generator, its construction): the indices it used, fed to
    our kernel, give its p-values."""
    losses = MATRICES["graded"]
    for method in ("R", "max"):
        ref = MCS(losses, size=0.1, reps=400, block_size=6, method=method, seed=42)
        ref.compute()
        idx = np.array(ref._bootstrap_indices)
        ours = mcs_pvalues(losses, bootstrap_means(losses, idx), method)
        want = np.array([ref.pvalues["Pvalue"][j] for j in range(losses.shape[1])])
        np.testing.assert_allclose(ours, want, rtol=0, atol=1e-12)


def _same(losses):
    k = losses.shape[1]
    return np.array([[np.array_equal(losses[:, i], losses[:, j]) for j in range(k)] for i in range(k)])


def test_kernels_equal_their_python_twins(rng):
    for losses in (*MATRICES.values(), np.column_stack([MATRICES["equal"][:, :3], MATRICES["equal"][:, :1]])):
        mb = stationary_means(losses, 300, 3.0, 1)
        m = losses.mean(axis=0)
        for use_max in (False, True):
            a, b = np.full(losses.shape[1], np.nan), np.full(losses.shape[1], np.nan)
            _mcs(m, mb, use_max, _same(losses), a)
            _mcs_py(m, mb, use_max, _same(losses), b)
            np.testing.assert_array_equal(a, b)
    states = []
    for _ in range(2):
        states.append(
            [np.full((7, 6), np.nan), np.full((4, 3), -1, dtype=np.int64), np.array([0, 0, 0, -1, -1, 0, 0], np.int64)]
        )
    for bar in range(1, 60):
        p = rng.uniform(0, 1, 3)
        llm = rng.uniform() if bar % 4 == 0 else math.nan
        up = float(rng.random() < 0.5)
        for (losses, snap, ist), push, count, shot in (
            (states[0], _mcs_push, _mcs_count, _mcs_snapshot),
            (states[1], _mcs_push_py, _mcs_count_py, _mcs_snapshot_py),
        ):
            push(losses, snap, ist, p[0], p[1], p[2], llm, up, bar - 3, bar % 7 == 0)
            count(ist, up)
            shot(snap, ist, bar)
    for u, v in zip(states[0], states[1], strict=True):
        np.testing.assert_array_equal(u, v)


def test_identical_columns_are_indistinguishable_and_stop_the_elimination():
    """arch divides 0 by 0 here (and its max method never terminates): ours keeps identical models together."""
    rng = np.random.default_rng(2)
    base = rng.normal(size=(150, 1)) ** 2
    for method in ("R", "max"):
        p = mcs(np.repeat(base, 4, axis=1), 200, 3.0, 0, method)
        np.testing.assert_array_equal(p, np.ones(4))
        p = mcs(np.full((150, 3), 0.25), 200, 3.0, 0, method)
        np.testing.assert_array_equal(p, np.ones(3))
        twins = np.column_stack([base, base, base + 0.5, rng.normal(size=(150, 1)) ** 2 + 0.4])
        p = mcs(twins, 500, 3.0, 0, method)
        assert p[0] == p[1] == 1.0 and p[2] < 0.1


def context_stream(n, horizon, seed=3):
    """Contexts over the first ``n`` sample bars shaped like the gate's: synthetic member probabilities, each bar's
    forecast delivered as a Matured ``horizon`` bars later (never earlier), bar_index = i + 1; every 10th entry has
    no probabilities (in sample), every 7th an LLM answer."""
    bars = sample_bars()[:n]
    rng = np.random.default_rng(seed)
    probs = np.clip(0.5 + rng.normal(0, 0.05, (n, 3)), 0.01, 0.99)
    out = []
    for i, bar in enumerate(bars):
        matured = ()
        if i >= horizon:
            e = i - horizon
            mt = Matured(
                e + 1,
                int(bars.ts[e]),
                int(bar.ts),
                float(bars.close[e]),
                float(bar.close),
                None if e % 10 == 0 else probs[e],
                None,
                1,
                8e-5,
                float(rng.uniform(0.3, 0.7)) if e % 7 == 0 else math.nan,
            )
            matured = (mt,)
        out.append(Context(bar, probs=probs[i], matured=matured, bar_index=i + 1))
    return out


# -- the module on a stream -----------------------------------------------------------------------------------------
def _naive_rows(ctxs, benchmark="base_rate"):
    """The loss rows from first principles: per matured forecast with three finite probabilities, the Brier score of
    each member, their mean, the benchmark and the LLM; the base rate from the outcomes matured by the entry bar."""
    ups_at, n_at = {}, {}
    ups = n = 0
    rows = []
    for c in ctxs:
        for mt in c.matured:
            up = float(mt.exit_price > mt.entry_price)
            if mt.probs is not None and np.all(np.isfinite(mt.probs)):
                if benchmark == "half":
                    b = 0.5
                else:
                    b = (ups_at[mt.entry_bar] + 1) / (n_at[mt.entry_bar] + 2)
                q = [*mt.probs, np.mean(mt.probs), b, mt.llm_prob]
                rows.append([(v - up) ** 2 for v in q])
            ups += int(up)
            n += 1
        ups_at[c.bar_index], n_at[c.bar_index] = ups, n
    return np.array(rows)


@pytest.mark.parametrize("benchmark", ["base_rate", "half"])
def test_loss_rows_are_brier_scores_with_a_base_rate_known_at_entry(benchmark):
    ctxs = context_stream(700, horizon=4)
    m = create("model_confidence_set", gate={"horizon": 4}, window=250, min_rows=50, reps=50, benchmark=benchmark)
    for c in ctxs:
        m.update(c)
    want = _naive_rows(ctxs, benchmark)
    assert m.rows == len(want) == 696 - 70
    np.testing.assert_allclose(m.window_losses(), want[-250:], rtol=0, atol=1e-15)


def _ctx(i, probs, up, llm=math.nan, entry=None):
    """Bar i (bar_index i + 1) with one matured forecast entered at bar index ``entry`` (default: the previous bar)."""
    bar = Bar(i * H, 1.1, 1.1, 1.1, 1.1, 100.0, timeframe="H1")
    e = i if entry is None else entry
    mt = Matured(e, (i - 1) * H, i * H, 1.0, 1.001 if up else 0.999, probs, None, 1, 1e-4, llm)
    return Context(bar, matured=(mt,), bar_index=i + 1)


def _synthetic(n, skill, seed=0, llm_every=0, llm_skill=0.0):
    """Contexts whose members forecast P(up) = 0.5 + skill·(±1) + noise (skill < 0: anti-informative)."""
    rng = np.random.default_rng(seed)
    out = [Context(Bar(0, 1.1, 1.1, 1.1, 1.1, 100.0, timeframe="H1"), bar_index=1)]  # the first entry bar
    for i in range(1, n + 1):
        up = rng.random() < 0.5
        s = 1.0 if up else -1.0
        probs = np.clip(0.5 + skill * s + rng.normal(0, 0.05, 3), 0.01, 0.99)
        llm = (
            float(np.clip(0.5 + llm_skill * s + rng.normal(0, 0.05), 0.01, 0.99))
            if llm_every and i % llm_every == 0
            else math.nan
        )
        out.append(_ctx(i, probs, up, llm))
    return out


def test_pass_when_the_ensemble_is_in_the_mcs_and_fail_when_it_is_worse_than_no_skill():
    good = create("model_confidence_set", reps=500)
    for c in _synthetic(400, 0.1):
        good.update(c)
    r = good.verdict()
    assert r.passed and r.score > 0.1 and "ensemble in the 90% MCS" in r.reason
    assert good.pvals[C_BENCHMARK] <= 0.1  # the no-skill benchmark is out
    bad = create("model_confidence_set", reps=500)
    for c in _synthetic(400, -0.1):
        bad.update(c)
    r = bad.verdict()
    assert not r.passed and r.score <= 0.1 and "not in" in r.reason
    assert bad.pvals[C_BENCHMARK] == 1.0


def test_recompute_is_scheduled_seeded_by_rows_and_restores_exactly():
    ctxs = _synthetic(500, 0.03, seed=4)
    # lag = 0: the recompute inside the due bar's update (test_schedule.py: the deferred default is this result
    # applied lag bars later)
    kw = {"min_rows": 100, "every": 40, "reps": 300, "window": 200, "lag": 0}
    a = create("model_confidence_set", **kw)
    b = create("model_confidence_set", **kw)
    last = []
    for i, c in enumerate(ctxs):
        a.update(c)
        if i == 250:
            b.load_state_dict(a.state_dict())
        if i > 250:
            b.update(c)
            np.testing.assert_array_equal(a.pvals, b.pvals)
            assert a.verdict() == b.verdict()
        last.append(int(a.ist[I_RECOMPUTED]))
    assert sorted(set(last)) == [-1, *range(100, 501, 40)]  # first at min_rows, then every 40 rows
    # the last recompute is the MCS of the window with the documented seed (seed + rows pushed) and block: its
    # resamples are PARTS streams of 75 each, part s seeded part_seed(seed, s); rebuilt here as index matrices
    lw = a.window_losses()[:, :C_LLM]
    b_len = a.block_length(lw)
    idx = np.vstack([stationary_indices(200, 75, b_len, part_seed(500, s)) for s in range(PARTS)])
    want = mcs_pvalues(lw, bootstrap_means(lw, idx), "R")
    np.testing.assert_allclose(a.pvals[:C_LLM], want, rtol=0, atol=1e-12)
    assert int(a.ist[I_USED_ROWS]) == 200 and a.rows == 500
    got = a.pvals.copy()
    a.recompute()  # the same count, the same seed: the same resamples
    np.testing.assert_array_equal(a.pvals, got)
    c = create("model_confidence_set", **kw, seed=1)
    for ctx in ctxs:
        c.update(ctx)
    assert not np.array_equal(c.pvals[:C_LLM], want)


def test_llm_joins_only_with_min_rows_answers_and_then_on_its_rows_only():
    kw = {"min_rows": 60, "every": 1000, "reps": 200, "window": 500}
    few = create("model_confidence_set", **kw)
    for c in _synthetic(300, 0.05, llm_every=6, llm_skill=0.1):  # 50 answers < 60
        few.update(c)
    assert few.ist[I_USED_LLM] == 0 and math.isnan(few.pvals[C_LLM]) and "llm left out" in few.verdict().reason
    many = create("model_confidence_set", **kw)
    ctxs = _synthetic(300, 0.05, llm_every=4, llm_skill=0.1)  # 75 answers >= 60
    for c in ctxs:
        many.update(c)  # the one scheduled recompute, at 60 rows: 15 answers, the LLM left out
    assert many.ist[I_USED_LLM] == 0
    many.recompute()
    lw = many.window_losses()
    sub = lw[np.isfinite(lw[:, C_LLM])]
    assert many.ist[I_USED_LLM] == 1 and int(many.ist[I_USED_ROWS]) == len(sub) == 75
    want = mcs(sub, 200, many.block_length(sub), many.rows, "R", parts=PARTS)
    np.testing.assert_array_equal(many.pvals, want)
    off = create("model_confidence_set", **kw, include_llm=False)
    for c in ctxs:
        off.update(c)
    off.recompute()
    assert off.ist[I_USED_LLM] == 0 and int(off.ist[I_USED_ROWS]) == 300


def test_fails_closed_when_short_and_skips_bad_forecasts():
    m = create("model_confidence_set", min_rows=50, reps=100)
    assert "insufficient data: 0/50 loss rows" in m.verdict().reason
    ctxs = _synthetic(49, 0.1)
    for c in ctxs:
        m.update(c)
    r = m.verdict()
    assert not r.passed and math.isnan(r.score) and "insufficient data: 49/50 loss rows" in r.reason
    for i, pr in enumerate(([math.nan, 0.5, 0.5], [0.5, math.inf, 0.5], [1.5, 0.5, 0.5], None, [0.5, 0.5]), 50):
        m.update(_ctx(i, None if pr is None else np.array(pr), True))
    assert m.rows == 49 and int(m.ist[I_ROWS]) == 49 and "insufficient data" in m.verdict().reason
    assert int(m.ist[I_OUTCOMES]) == 54  # the outcomes still count in the base rate
    m.update(_ctx(55, np.array([0.6, 0.6, 0.6]), True))  # llm_prob NaN: a row without the judge
    r = m.verdict()  # the first recompute is submitted on this bar and applied on the next (lag 1)
    assert m.rows == 50 and not r.passed and "first MCS recompute over 50 loss rows not applied yet" in r.reason
    m.update(_ctx(56, None, True))
    assert m.verdict().name == "model_confidence_set" and math.isfinite(m.verdict().score)


# -- the statistics of the MCS --------------------------------------------------------------------------------------
def _sims(shift, sims=200, t=250, k=4, seed=123):
    rng = np.random.default_rng(seed)
    out = np.empty((sims, k))
    for s in range(sims):
        losses = rng.standard_normal((t, k)) ** 2  # chi-square(1): skewed, like squared errors
        losses[:, 0] += shift
        out[s] = mcs(losses, 300, 2.0, s, "R")
    return out


def test_size_equal_models_stay_in_the_mcs():
    """HLN Theorem 1: with equal expected losses the whole set is the superior set, and the MCS keeps all of it with
    probability >= 1 − α (asymptotically). Over 200 simulated windows (seeded), the rate of excluding any model is
    at most α + 3 binomial standard errors."""
    p = _sims(0.0)
    rate = float((p.min(axis=1) <= 0.1).mean())
    assert rate <= 0.1 + 3 * math.sqrt(0.1 * 0.9 / len(p)), rate


def test_power_a_worse_model_is_eliminated():
    """One model's expected loss is higher by 0.4 (0.28 sd of a chi-square(1) loss, T = 250): the 90% MCS excludes
    it in at least 90% of 200 windows, and keeps the others."""
    p = _sims(0.4)
    assert (p[:, 0] <= 0.1).mean() >= 0.9
    assert (p[:, 1:].min(axis=1) > 0.1).mean() >= 0.8


@settings(max_examples=60, deadline=None)
@given(
    st.integers(8, 40),
    st.integers(2, 5),
    st.integers(0, 2**31 - 1),
    st.sampled_from(["R", "max"]),
    st.floats(1.0, 6.0),
)
def test_pvalues_are_a_valid_mcs(t, k, seed, method, block):
    """Property: p-values lie in [0, 1]; the last model standing has p = 1, so the MCS is never empty; the kernel
    equals its twin; the R method's p-values follow the models when the columns are permuted."""
    rng = np.random.default_rng(seed)
    losses = rng.standard_normal((t, k)) ** 2 + rng.uniform(0, 0.5, k)
    p = mcs(losses, 50, block, seed, method)
    assert np.all((p >= 0) & (p <= 1)) and p.max() == 1.0
    mb = stationary_means(losses, 50, block, seed)
    q = np.full(k, np.nan)
    _mcs_py(losses.mean(axis=0), mb, method == "max", _same(losses), q)
    np.testing.assert_array_equal(p, q)
    if method == "R":
        perm = rng.permutation(k)
        pp = mcs_pvalues(losses[:, perm], mb[:, perm], "R")
        np.testing.assert_array_equal(pp, p[perm])


def test_bad_parameters_are_errors_that_name_the_fix():
    with pytest.raises(ValueError, match="'R' or 'max'"):
        create("model_confidence_set", method="r")
    with pytest.raises(ValueError, match="'base_rate' or 'half'"):
        create("model_confidence_set", benchmark="zero")
    with pytest.raises(ValueError, match="min_rows <= window"):
        create("model_confidence_set", window=50, min_rows=100)
    with pytest.raises(ValueError, match="horizon"):
        create("model_confidence_set", horizon=2)
    assert create("model_confidence_set").params["horizon"] == 1
    assert C_ENSEMBLE == 3
