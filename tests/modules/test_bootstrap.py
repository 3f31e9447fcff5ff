"""The shared block-bootstrap helpers (modules/_bootstrap.py): against arch, the python twins, and the stationary
bootstrap's defining properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from arch.bootstrap import StationaryBootstrap
from arch.bootstrap import optimal_block_length as arch_obl
from hypothesis import given, settings
from hypothesis import strategies as st

from fxgate.modules import _bootstrap as B
from fxgate.modules._bootstrap import (
    bootstrap_means,
    optimal_block_length,
    sb_variance,
    stationary_indices,
    stationary_means,
)


def _ar1(n: int, phi: float, seed: int) -> np.ndarray:
    e = np.random.default_rng(seed).standard_normal(n)
    x = np.empty(n)
    x[0] = e[0]
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    return x


def _series():
    rng = np.random.default_rng(11)
    yield "iid", rng.standard_normal(300)
    yield "ar1_0.5", _ar1(500, 0.5, 1)
    yield "ar1_0.9", _ar1(1000, 0.9, 2)
    yield "random_walk", np.cumsum(rng.standard_normal(400))
    yield "student_t", rng.standard_t(3, 250)
    yield "short", rng.standard_normal(20)


@pytest.mark.parametrize(("name", "x"), list(_series()))
def test_optimal_block_length_equals_arch(name, x):
    ref = float(arch_obl(x)["stationary"].iloc[0])
    assert optimal_block_length(x) == pytest.approx(ref, rel=1e-10, abs=1e-10), name
    assert B._opt_block_py(x) == pytest.approx(ref, rel=1e-10, abs=1e-10), name


def test_optimal_block_length_degenerate_inputs_are_nan():
    assert math.isnan(optimal_block_length(np.ones(100)))
    assert math.isnan(optimal_block_length(np.arange(5.0)))
    x = np.random.default_rng(0).standard_normal(100)
    x[7] = np.nan
    assert math.isnan(optimal_block_length(x))


def test_indices_are_consecutive_blocks_with_mean_length_block():
    n, reps, block = 200, 4000, 6.0
    idx = stationary_indices(n, reps, block, seed=5)
    assert idx.shape == (reps, n) and idx.dtype == np.int64
    assert idx.min() >= 0 and idx.max() < n
    # a step inside a block is +1 mod n; every other step is a new block (whose start is uniform, so it can also
    # land on +1 mod n by chance: probability 1/n)
    step = (np.diff(idx, axis=1) % n) == 1
    p = 1 / block
    p_cont = (1 - p) + p / n
    m = step.size
    # continuation rate within 4 binomial standard errors of (1 - p) + p/n
    assert abs(step.mean() - p_cont) < 4 * math.sqrt(p_cont * (1 - p_cont) / m)
    # mean block length over complete (interior) blocks: geometric mean 1/p, 4 standard errors
    lengths = []
    for row in step[:500]:
        breaks = np.flatnonzero(~row)
        lengths += list(np.diff(breaks))
    lengths = np.array(lengths)
    se = math.sqrt((1 - p) / p**2 / len(lengths))
    assert abs(lengths.mean() - block) < 4 * se + 0.2  # the 1/n accidental continuations lengthen a block a little
    # starts of rows are uniform on [0, n): chi-square over 10 bins at the 0.1% level
    counts = np.bincount(idx[:, 0] * 10 // n, minlength=10)
    from scipy.stats import chisquare

    assert chisquare(counts).pvalue > 1e-3


def test_indices_are_deterministic_per_seed_and_differ_across_seeds():
    a = stationary_indices(100, 50, 4.0, seed=1)
    np.testing.assert_array_equal(a, stationary_indices(100, 50, 4.0, seed=1))
    assert not np.array_equal(a, stationary_indices(100, 50, 4.0, seed=2))


def test_block_one_is_the_iid_bootstrap():
    idx = stationary_indices(50, 400, 1.0, seed=0)
    # with p = 1 every position starts a block: consecutive steps occur only by chance (1/n)
    assert ((np.diff(idx, axis=1) % 50) == 1).mean() < 0.05


def test_stationary_means_equal_means_over_the_index_matrix():
    rng = np.random.default_rng(3)
    for n, k, reps, block in [(100, 3, 300, 5.0), (37, 1, 200, 40.0), (500, 10, 100, 1.0), (10, 2, 50, 2.5)]:
        x = rng.standard_normal((n, k))
        idx = stationary_indices(n, reps, block, seed=9)
        ref = x[idx].mean(axis=1)
        np.testing.assert_allclose(bootstrap_means(x, idx), ref, rtol=0, atol=1e-13)
        np.testing.assert_allclose(stationary_means(x, reps, block, seed=9), ref, rtol=0, atol=1e-13)


def test_batches_are_the_rows_of_the_whole_run_and_a_run_is_a_prefix_of_a_longer_one():
    """The stream does not depend on ``reps`` or on the batching: the batches of a run, concatenated, are
    bit-identical to the whole run's means, and the first 300 resamples of a 1,000-resample run are those of a
    300-resample run (a sequential test that stops after 300 resamples reports what a 300-resample test would).
    Checked against the means over the index matrix, computed by numpy indexing here."""
    rng = np.random.default_rng(5)
    for n, k, block in [(500, 1, 3.0), (80, 2, 12.0), (30, 1, 1.0)]:
        x = rng.standard_normal((n, k))
        whole = stationary_means(x, 1000, block, seed=4)
        for batch, most in ((1, None), (7, None), (256, None), (999, None), (5000, None), (16, 1024), (3, 5)):
            got = list(B.stationary_mean_batches(x, 1000, block, 4, batch=batch, most=most))
            los, lo, b = [], 0, batch  # batch, then doubling up to most (most=None: every batch the same)
            while lo < 1000:
                los.append(lo)
                lo, b = lo + b, min(2 * b, most or batch)
            assert [lo for lo, _ in got] == los
            np.testing.assert_array_equal(np.concatenate([m for _, m in got]), whole)
        np.testing.assert_array_equal(stationary_means(x, 300, block, seed=4), whole[:300])
        ref = x[stationary_indices(n, 1000, block, seed=4)].mean(axis=1)
        np.testing.assert_allclose(whole, ref, rtol=0, atol=1e-13)
        short, long_ = stationary_indices(n, 300, block, seed=4), stationary_indices(n, 1000, block, seed=4)
        np.testing.assert_array_equal(short, long_[:300])


def test_the_stream_is_the_documented_one_drawn_one_scalar_at_a_time():
    """The contract of ``seed`` (the module docstring), rebuilt here one scalar draw per block: lengths from the
    first generator of ``SeedSequence(seed).spawn(2)``, starts from the second. The module draws them in chunks
    sized by how many resamples are asked for; the matrix must not depend on that."""
    for n, reps, block, seed in [(50, 40, 3.0, 7), (500, 300, 2.0, 11), (13, 700, 1.0, 0), (30, 20, 30.0, 123456789)]:
        lengths, starts = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
        p = 1.0 / block
        lam = -math.log(1.0 - p) if p < 1.0 else math.inf
        ref = np.empty((reps, n), dtype=np.int64)
        for r in range(reps):
            i = 0
            while i < n:
                length = int(lengths.standard_exponential() / lam) + 1
                s = min(int(starts.random() * n), n - 1)
                for _ in range(min(length, n - i)):
                    ref[r, i] = s
                    s = (s + 1) % n
                    i += 1
        np.testing.assert_array_equal(stationary_indices(n, reps, block, seed), ref)
        np.testing.assert_array_equal(stationary_indices(n, reps // 3, block, seed), ref[: reps // 3])


def test_bootstrap_means_reproduce_arch_resamples():
    x = np.random.default_rng(4).standard_normal((120, 2))
    bs = StationaryBootstrap(7, x, seed=12)
    rows, ref = [], []
    for pos, _ in bs.bootstrap(30):
        rows.append(bs.index.copy())
        ref.append(pos[0].mean(0))
    np.testing.assert_allclose(bootstrap_means(x, np.array(rows)), np.array(ref), rtol=0, atol=1e-14)


def test_twins_equal_kernels():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((60, 2))
    e, u, lam = rng.standard_exponential(400), rng.random(400), -math.log(1 - 0.2)
    for fill in ("idx", "sums"):
        outs = []
        for fn in (getattr(B, f"_sb_fill_{fill}_py"), getattr(B, f"_sb_fill_{fill}")):
            st_ = np.zeros(3, dtype=np.int64)
            if fill == "idx":
                out = np.zeros((20, 60), dtype=np.int64)
                done = fn(out, e, u, lam, st_, 20)
            else:
                csum = np.zeros((61, 2))
                np.cumsum(x, axis=0, out=csum[1:])
                out = np.zeros((20, 2))
                done = fn(out, csum, e, u, lam, st_, 20)
            outs.append((out, bool(done), st_.copy()))
        np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=0, atol=1e-13)
        assert outs[0][1:][0] == outs[1][1:][0]
        np.testing.assert_array_equal(outs[0][2], outs[1][2])
    idx = stationary_indices(60, 10, 3.0, 0)
    a, b = np.empty((10, 2)), np.empty((10, 2))
    B._bootstrap_means_py(a, x, idx)
    B._bootstrap_means(b, x, idx)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-14)
    v1, v2 = np.empty(2), np.empty(2)
    B._sb_variance_py(v1, x, 4.0)
    B._sb_variance(v2, x, 4.0)
    np.testing.assert_allclose(v1, v2, rtol=1e-12)


def test_resumes_across_chunks():
    """A tiny first chunk forces the kernels to stop and resume; the result must not depend on the chunking."""
    rng = np.random.default_rng(1)
    e, u, lam = rng.standard_exponential(2000), rng.random(2000), -math.log(1 - 0.25)
    whole = np.zeros((30, 40), dtype=np.int64)
    st_ = np.zeros(3, dtype=np.int64)
    assert B._sb_fill_idx(whole, e, u, lam, st_, 30)
    used = int(st_[B.FILL_USED])
    parts = np.zeros((30, 40), dtype=np.int64)
    st_ = np.zeros(3, dtype=np.int64)
    cut = 0
    for size in (7, 1, 50, 3, 10_000):
        st_[B.FILL_USED] = 0
        done = B._sb_fill_idx(parts, e[cut : cut + size], u[cut : cut + size], lam, st_, 30)
        cut += int(st_[B.FILL_USED])
        if done:
            break
    assert done and cut == used
    np.testing.assert_array_equal(whole, parts)


def test_sb_variance_equals_arch_spa_variance():
    from arch.bootstrap import SPA

    x = np.random.default_rng(8).standard_normal((150, 3)) + np.array([0.1, 0.0, -0.1])
    spa = SPA(np.zeros(150), -x, block_size=6, reps=10, seed=0)  # loss_diff = benchmark - models = x
    spa._compute_variance()
    np.testing.assert_allclose(sb_variance(x, 6.0), spa._loss_diff_var, rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 60),
    reps=st.integers(1, 20),
    block=st.floats(1.0, 100.0),
    seed=st.integers(0, 2**31),
)
def test_indices_property(n, reps, block, seed):
    idx = stationary_indices(n, reps, block, seed)
    assert idx.shape == (reps, n)
    assert idx.min() >= 0 and idx.max() < n
    x = np.arange(n, dtype=float) ** 0.5
    np.testing.assert_allclose(stationary_means(x, reps, block, seed)[:, 0], x[idx].mean(1), atol=1e-12)


@pytest.mark.parametrize("bad", [0.5, math.nan, math.inf, -3.0])
def test_bad_block_raises_with_the_fix(bad):
    with pytest.raises(ValueError, match="block length"):
        stationary_indices(10, 2, bad, 0)
