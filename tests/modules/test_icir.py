"""ICIR: a naive loop over periods (numpy) as the reference, dropped periods, twin == kernel, fail-closed cases and
the ratio's null distribution (a t with k − 1 degrees of freedom for independent, near-normal period ICs)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from fxgate.engine import Bar
from fxgate.modules import Context, Matured, _ic, create
from fxgate.modules.icir import F_IC_MEAN, F_IC_SD, F_ICIR, F_LAST_IC, I_DROPPED, I_FILL, I_PERIODS


def _naive_icir(pairs, period, periods):
    """Chunk the pairs into consecutive periods, Pearson IC of each full one (a constant one dropped), the last
    ``periods`` of them; (ICs, ICIR)."""
    ics = []
    for k in range(len(pairs) // period):
        chunk = pairs[k * period : (k + 1) * period]
        if np.ptp(chunk[:, 0]) == 0 or np.ptp(chunk[:, 1]) == 0:
            continue
        ics.append(np.corrcoef(chunk[:, 0], chunk[:, 1])[0, 1])
    ics = np.array(ics[-periods:])
    return ics, (ics.mean() / ics.std(ddof=1) if len(ics) >= 2 else math.nan)


def _pairs(ctxs):
    out = []
    for c in ctxs:
        for m in c.matured:
            if m.probs is not None:
                out.append((float(np.mean(m.probs)) - 0.5, math.log(m.exit_price / m.entry_price)))
    return np.array(out)


def test_icir_equals_a_naive_loop(stream):
    # every seventh period's signals are constant: that period has no IC and is dropped, by both
    ctxs = []
    for i, c in enumerate(stream[:3000]):
        if i >= 1 and ((i - 1) // 10) % 7 == 3:  # pair i - 1: the stream matures from bar 1 on
            c = replace(c, matured=tuple(replace(m, probs=np.full(3, 0.6)) for m in c.matured))
        ctxs.append(c)
    m = create("icir", period=10, periods=15, min_periods=5)
    checked = 0
    for i, c in enumerate(ctxs):
        m.update(c)
        if i % 61 == 0 and int(m.ist[I_PERIODS]) >= 2:
            pairs = _pairs(ctxs[: i + 1])
            ics, ref = _naive_icir(pairs, 10, 15)
            assert int(m.ist[I_FILL]) == len(pairs) % 10
            assert int(m.ist[I_PERIODS]) + int(m.ist[I_DROPPED]) == len(pairs) // 10
            assert m.fs[F_LAST_IC] == pytest.approx(ics[-1], abs=1e-12)
            assert m.fs[F_IC_MEAN] == pytest.approx(ics.mean(), abs=1e-12)
            assert m.fs[F_IC_SD] == pytest.approx(ics.std(ddof=1), abs=1e-12)
            assert m.fs[F_ICIR] == pytest.approx(ref, rel=1e-10)
            checked += 1
    assert checked > 40 and int(m.ist[I_DROPPED]) > 10


def test_kernel_equals_twin():
    rng = np.random.default_rng(3)
    a, b = _ic.PeriodIc(8, 5), _ic.PeriodIc(8, 5)
    out_a, out_b = np.zeros(3), np.zeros(3)
    s = np.round(rng.normal(0, 0.05, 400), 2)
    s[80:96] = 0.1  # two constant periods
    for x, y in zip(s, rng.normal(0, 1e-3, 400), strict=True):
        _ic._icir_push(a.ps, a.pr, a.pics, a.ist, a.fs, out_a, x, y)
        _ic._icir_push_py(b.ps, b.pr, b.pics, b.ist, b.fs, out_b, x, y)
        for u, v in ((a.ps, b.ps), (a.pr, b.pr), (a.pics, b.pics), (a.ist, b.ist), (a.fs, b.fs)):
            np.testing.assert_allclose(u, v, rtol=1e-13, atol=1e-15, equal_nan=True)
    assert int(a.ist[I_DROPPED]) == 2


def _ctx(i, s, r):
    mat = Matured(i, 0, 1, 1.0, math.exp(r), None if s is None else np.full(3, 0.5 + s), None)
    return Context(Bar(i * 3_600_000_000_000, 1.0, 1.0, 1.0, 1.0, 1.0, timeframe="H1"), matured=(mat,))


def test_short_history_and_bad_pairs_fail_closed():
    rng = np.random.default_rng(4)
    m = create("icir", period=10, periods=6, min_periods=4)
    for i in range(39):
        m.update(_ctx(i, rng.normal(0, 0.05), rng.normal(0, 1e-3)))
    r = m.verdict()
    assert not r.passed and math.isnan(r.score) and "insufficient data: 3/4 periods" in r.reason
    for s, x in ((None, 0.001), (math.nan, 0.001), (0.05, math.nan), (0.05, math.inf)):
        m.update(_ctx(39, s, x))
    assert int(m.ist[I_FILL]) == 9 and "3/4 periods" in m.verdict().reason
    m.update(_ctx(39, 0.01, 0.001))
    assert int(m.ist[I_PERIODS]) == 4 and math.isfinite(m.verdict().score)


def test_identical_period_ics_have_no_icir():
    """Every period holds the same pairs, so every period IC is the same number: sd 0, the ratio undefined (not
    the 1e16 that rounding would make of it)."""
    rng = np.random.default_rng(10)  # a seed whose ten equal ICs leave a rounding sd of 7e-18
    s, r = rng.normal(0, 0.05, 12), rng.normal(0, 1e-3, 12)
    m = create("icir", period=12, periods=10, min_periods=3)
    for k in range(10):
        for x, y in zip(s, r, strict=True):
            m.update(_ctx(k, x, y))
    assert 0 < m.fs[F_IC_SD] <= _ic.SD_FLOOR
    v = m.verdict()
    assert not v.passed and math.isnan(v.score) and "undefined" in v.reason
    assert int(m.ist[I_PERIODS]) == 10


def test_passes_on_a_stable_edge():
    rng = np.random.default_rng(6)
    m = create("icir")
    for i in range(24 * 25):
        r = rng.normal(0, 1e-3)
        m.update(_ctx(i, 0.02 * (0.5 * r / 1e-3 + rng.normal()), r))
    v = m.verdict()
    assert v.passed and v.score > 1.0 and v.threshold == 0.5, v.reason


def test_null_distribution_of_the_ratio():
    """Under no edge (iid normal signal and move), √k·ICIR of k = 20 periods of 24 is close to a t with 19 degrees of
    freedom: over 600 simulated histories (seed 8) the rate of ICIR >= 0.5 (the default pass rule) is within 3
    binomial sds of P(t_19 >= 0.5·√20) = 1.9%, and the median |√k·ICIR| within 0.1 of t_19's."""
    rng = np.random.default_rng(8)
    k, period, sims = 20, 24, 600
    vals = np.empty(sims)
    for j in range(sims):
        st = _ic.PeriodIc(period, k)
        for x, y in zip(rng.normal(size=k * period), rng.normal(size=k * period), strict=True):
            st.push(x, y)
        vals[j] = st.fs[F_ICIR]
    p0 = stats.t.sf(0.5 * math.sqrt(k), k - 1)
    rate = float(np.mean(vals >= 0.5))
    assert abs(rate - p0) <= 3 * math.sqrt(p0 * (1 - p0) / sims) + 1 / sims, (rate, p0)
    assert abs(np.median(np.abs(vals * math.sqrt(k))) - stats.t.ppf(0.75, k - 1)) < 0.1
