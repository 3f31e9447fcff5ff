"""Block-bootstrap helpers shared by the bootstrap modules (edge_proof's SPA / Reality Check, model_confidence_set).

Everything here is a numba kernel with a plain-Python twin (``_x_py``; ``_x = kernel(_x_py)``) behind a small
wrapper that checks its inputs. The API is stable: other modules import it.

* :func:`stationary_indices` — Politis & Romano (1994) stationary bootstrap indices, shape (reps, n): blocks of
  consecutive indices (mod n, wrap-around) whose lengths are geometric with mean ``block``, each starting at a
  uniform index. The random stream comes from ``seed`` (how: below), so a seed gives one matrix.
* :func:`stationary_means` — the bootstrap means of the columns of ``x`` over exactly the resamples
  :func:`stationary_indices` would give for the same (n, reps, block, seed), without materializing the index
  matrix: each block's sum comes from prefix sums (O(blocks · k) per resample instead of O(n · k)). Equal to
  ``bootstrap_means(x, stationary_indices(...))`` up to summation rounding (~1e-15 relative).
* :func:`stationary_mean_batches` — the same means a batch of resamples at a time, for a test that stops once its
  outcome is decided (edge_proof's SPA).
* :func:`bootstrap_means` — column means of ``x[idx[r]]`` for every row r of an index matrix (any bootstrap: a
  reference library's own indices, for a test that must reproduce it to the last bit).
* :func:`optimal_block_length` — Politis & White (2004) automatic block length with the correction of Patton,
  Politis & White (2009), stationary-bootstrap value; the same estimator, tuning constants and numerics as
  ``arch.bootstrap.optimal_block_length(x)["stationary"]`` (the reference test).
* :func:`sb_variance` — the long-run variance of each column implied by the stationary bootstrap with mean block
  ``block`` (Hansen 2005, eq. 9's kernel κ(n, i) = (1 − i/n)(1 − p)^i + (i/n)(1 − p)^(n−i), p = 1/block; the
  estimator ``arch.bootstrap.SPA`` uses when ``nested=False``).

How the stationary stream is drawn (the contract of ``seed``): the two children of
``numpy.random.SeedSequence(seed).spawn(2)`` seed two generators (``default_rng``), one for the block lengths and
one for the block starts. With p = 1/block and λ = −log(1 − p), block j takes the j-th standard exponential E_j of
the first (``standard_exponential``) and the j-th uniform U_j of the second (``random``): its length is
L_j = ⌊E_j/λ⌋ + 1 (Geometric(p) on {1, 2, …}, mean 1/p) and its start S_j = ⌊U_j n⌋ (uniform on {0, …, n−1});
resample r is filled left to right with S_j, S_j + 1, … (mod n) for min(L_j, room left) positions, then the next
block. numpy draws each variate from its own generator's words in order, so how many are drawn at a time does not
change them: the draws are made as the resamples need them (a chunk sized for the resamples asked for, at most
``CHUNK_RESAMPLES`` of them, plus a margin), resample r is the same in a run of any length, and a sequential test
that stops after l resamples has drawn about l resamples' worth of random numbers
(:func:`stationary_mean_batches`; ``tests/modules/test_bootstrap.py`` rebuilds the stream one scalar draw at a
time). This is the law of arch's per-position construction (a new block starts at each position with
probability p) with far fewer random draws (numpy's geometric sampler is slow, hence the exponential); the stream,
not the law, differs from arch's, so tests that must reproduce arch bit for bit feed arch's own indices to
:func:`bootstrap_means`.
"""

from __future__ import annotations

import math

import numpy as np

from fxgate.engine.core.jit import kernel

__all__ = [
    "stationary_indices",
    "stationary_means",
    "stationary_mean_batches",
    "bootstrap_means",
    "optimal_block_length",
    "sb_variance",
]

#: slots of the resumable fill state (the kernels stop when a chunk of blocks runs out and resume on the next)
FILL_REP, FILL_POS, FILL_USED = 0, 1, 2
#: the most resamples one chunk of block draws is sized for (memory: ~1.1 MB of draws for 256 resamples of 500 rows
#: with mean block 2); a smaller request draws less. The chunking does not change the stream.
CHUNK_RESAMPLES = 256


def _sb_fill_idx_py(out, e, u, lam, st, rows):  # type: ignore[no-untyped-def]
    """Fill rows up to ``rows`` of ``out`` (reps, n) with stationary-bootstrap indices from the block draws ``e``
    (standard exponential: length floor(e / lam) + 1, Geometric(1 - exp(-lam))) and ``u`` (uniform: start
    floor(u n)), resuming at ``st`` (rep, position, draws used). Returns True when row ``rows - 1`` is full, False
    when the draws ran out first."""
    n = out.shape[1]
    m = e.shape[0]
    r, i, j = st[FILL_REP], st[FILL_POS], st[FILL_USED]
    while r < rows:
        while i < n:
            if j >= m:
                st[FILL_REP], st[FILL_POS], st[FILL_USED] = r, i, j
                return False
            s = min(int(u[j] * n), n - 1)
            q = e[j] / lam
            length = n - i if q >= n - i else min(int(q) + 1, n - i)
            j += 1
            for _ in range(length):
                out[r, i] = s
                i += 1
                s += 1
                if s == n:
                    s = 0
        i = 0
        r += 1
    st[FILL_REP], st[FILL_POS], st[FILL_USED] = r, i, j
    return True


def _sb_fill_sums_py(out, csum, e, u, lam, st, rows):  # type: ignore[no-untyped-def]
    """Same block draws as :func:`_sb_fill_idx_py`, but accumulate each resample's column sums into ``out``
    (reps, k) from the prefix sums ``csum`` (n + 1, k) instead of writing indices."""
    k = out.shape[1]
    n = csum.shape[0] - 1
    m = e.shape[0]
    r, i, j = st[FILL_REP], st[FILL_POS], st[FILL_USED]
    while r < rows:
        while i < n:
            if j >= m:
                st[FILL_REP], st[FILL_POS], st[FILL_USED] = r, i, j
                return False
            s = min(int(u[j] * n), n - 1)
            q = e[j] / lam
            length = n - i if q >= n - i else min(int(q) + 1, n - i)
            j += 1
            f = s + length
            if f <= n:
                for c in range(k):
                    out[r, c] += csum[f, c] - csum[s, c]
            else:
                for c in range(k):
                    out[r, c] += (csum[n, c] - csum[s, c]) + csum[f - n, c]
            i += length
        i = 0
        r += 1
    st[FILL_REP], st[FILL_POS], st[FILL_USED] = r, i, j
    return True


def _bootstrap_means_py(out, x, idx):  # type: ignore[no-untyped-def]
    """out[r, c] = mean of x[idx[r, :], c] (summed in index order)."""
    reps, n = idx.shape
    k = x.shape[1]
    for r in range(reps):
        for c in range(k):
            out[r, c] = 0.0
        for i in range(n):
            t = idx[r, i]
            for c in range(k):
                out[r, c] += x[t, c]
        for c in range(k):
            out[r, c] /= n


def _opt_block_py(x):  # type: ignore[no-untyped-def]
    """Politis-White (2004) / Patton-Politis-White (2009) stationary-bootstrap block length of the series ``x``,
    following arch's ``_single_optimal_block`` step by step (same m selection, flat-top lag window, cap
    min(3√n, n/3)). NaN when the series is constant or too short to estimate (n < 10)."""
    nobs = x.shape[0]
    if nobs < 10:
        return math.nan
    mean = 0.0
    for t in range(nobs):
        mean += x[t]
    mean /= nobs
    eps = np.empty(nobs)
    for t in range(nobs):
        eps[t] = x[t] - mean
    b_max = math.ceil(min(3.0 * math.sqrt(nobs), nobs / 3.0))
    kn = max(5, int(math.log10(nobs)))
    m_max = int(math.ceil(math.sqrt(nobs))) + kn
    cv = 2.0 * math.sqrt(math.log10(nobs) / nobs)
    acv = np.zeros(m_max + 1)
    abs_acorr = np.zeros(m_max + 1)
    opt_m = -1
    for i in range(m_max + 1):
        v1 = 0.0
        for t in range(i + 1, nobs):
            v1 += eps[t] * eps[t]
        v2 = 0.0
        for t in range(0, nobs - i - 1):
            v2 += eps[t] * eps[t]
        cross = 0.0
        for t in range(i, nobs):
            cross += eps[t] * eps[t - i]
        acv[i] = cross / nobs
        den = math.sqrt(v1 * v2)
        abs_acorr[i] = abs(cross) / den if den > 0.0 else math.nan
        if i >= kn and opt_m < 0:
            inside = True
            for q in range(i - kn, i):
                if not abs_acorr[q] < cv:  # NaN counts as outside, as in arch (np.all(nan < cv) is False)
                    inside = False
                    break
            if inside:
                opt_m = i - kn
    m = 2 * max(opt_m, 1) if opt_m >= 0 else m_max
    m = min(m, m_max)
    g = 0.0
    lr_acv = acv[0]
    for k in range(1, m + 1):
        lam = 1.0 if k / m <= 0.5 else 2.0 * (1.0 - k / m)
        g += 2.0 * lam * k * acv[k]
        lr_acv += 2.0 * lam * acv[k]
    d_sb = 2.0 * lr_acv * lr_acv
    if not d_sb > 0.0:
        return math.nan
    b_sb = ((2.0 * g * g) / d_sb) ** (1.0 / 3.0) * nobs ** (1.0 / 3.0)
    return min(b_sb, b_max)


def _sb_variance_py(out, x, block):  # type: ignore[no-untyped-def]
    """out[c] = stationary-bootstrap long-run variance of column c of ``x`` (Hansen 2005 eq. 9, κ weights,
    p = 1/block), the estimator arch's SPA uses without nesting."""
    t, k = x.shape
    p = 1.0 / block
    for c in range(k):
        mean = 0.0
        for s in range(t):
            mean += x[s, c]
        mean /= t
        v = 0.0
        for s in range(t):
            d = x[s, c] - mean
            v += d * d
        v /= t
        for i in range(1, t):
            kappa = (1.0 - i / t) * (1.0 - p) ** i + (i / t) * (1.0 - p) ** (t - i)
            acc = 0.0
            for s in range(t - i):
                acc += (x[s, c] - mean) * (x[s + i, c] - mean)
            v += 2.0 * kappa * acc / t
        out[c] = v


_sb_fill_idx = kernel(_sb_fill_idx_py, fastmath=False)
_sb_fill_sums = kernel(_sb_fill_sums_py, fastmath=False)
_bootstrap_means = kernel(_bootstrap_means_py, fastmath=False)
_opt_block = kernel(_opt_block_py, fastmath=False)
_sb_variance = kernel(_sb_variance_py, fastmath=False)


def _check_stream(n: int, reps: int, block: float) -> tuple[int, int, float]:
    n, reps, block = int(n), int(reps), float(block)
    if n < 1:
        raise ValueError(f"stationary bootstrap needs n >= 1 observations; got n={n}")
    if reps < 1:
        raise ValueError(f"stationary bootstrap needs reps >= 1; got reps={reps}")
    if not (math.isfinite(block) and block >= 1.0):
        raise ValueError(f"stationary bootstrap mean block length must be a finite number >= 1; got {block!r}")
    return n, reps, 1.0 / block


class _Stream:
    """The block stream of the module docstring for ``n`` rows, mean block 1/``p``, and the resumable fill state:
    :meth:`fill_sums` and :meth:`fill_idx` fill resamples up to a row, drawing chunks of blocks as they run out,
    each sized for the resamples still to fill (at most ``CHUNK_RESAMPLES``) plus 10% and 64 blocks."""

    def __init__(self, seed: int, n: int, p: float) -> None:
        self.lengths, self.starts = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
        self.n, self.blocks, self.lam = n, 1.0 + (n - 1) * p, _rate(p)
        self.st = np.zeros(3, dtype=np.int64)
        self.e = self.u = np.empty(0)

    def _draw(self, rows: int) -> None:
        want = min(max(rows - int(self.st[FILL_REP]), 1), CHUNK_RESAMPLES)
        m = int(math.ceil(1.1 * want * self.blocks)) + 64
        self.e, self.u = self.lengths.standard_exponential(m), self.starts.random(m)
        self.st[FILL_USED] = 0

    def fill_sums(self, out: np.ndarray, csum: np.ndarray, rows: int) -> None:
        while not _sb_fill_sums(out, csum, self.e, self.u, self.lam, self.st, rows):
            self._draw(rows)

    def fill_idx(self, out: np.ndarray, rows: int) -> None:
        while not _sb_fill_idx(out, self.e, self.u, self.lam, self.st, rows):
            self._draw(rows)


def _rate(p: float) -> float:
    """λ = −log(1 − p): floor(E/λ) + 1 with E ~ Exp(1) is Geometric(p) on {1, 2, …} (inf for p = 1: every block
    has length 1)."""
    return math.inf if p >= 1.0 else -math.log1p(-p)


def stationary_indices(n: int, reps: int, block: float, seed: int) -> np.ndarray:
    """Stationary-bootstrap index matrix, int64 (reps, n): each row is a resample of range(n) made of blocks of
    consecutive indices mod n with Geometric(1/block) lengths (mean ``block``) and uniform starts. Deterministic:
    the same (n, reps, block, seed) gives the same matrix (stream: the module docstring)."""
    n, reps, p = _check_stream(n, reps, block)
    out = np.empty((reps, n), dtype=np.int64)
    _Stream(seed, n, p).fill_idx(out, reps)
    return out


def stationary_mean_batches(
    x: np.ndarray, reps: int, block: float, seed: int, batch: int = CHUNK_RESAMPLES, most: int | None = None
):
    """:func:`stationary_means` a batch of resamples at a time, in order: yields ``(lo, means)`` with ``means`` the
    (hi − lo, k) bootstrap means of resamples lo..hi − 1, each bit-identical to those rows of
    ``stationary_means(x, reps, block, seed)``. The first batch holds ``batch`` resamples and each next one twice
    the last, up to ``most`` (default ``batch``: every batch the same size; the last one may be smaller). A caller
    that has seen enough stops iterating: the resamples after it are never drawn (a sequential test's early
    stop)."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"stationary_means needs a 1-d or 2-d array; got shape {a.shape}")
    n, reps, p = _check_stream(a.shape[0], reps, block)
    if not np.all(np.isfinite(a)):
        raise ValueError("stationary_means needs finite data; drop or fill NaN/inf first")
    b, most = int(batch), int(batch) if most is None else int(most)
    if b < 1 or most < b:
        raise ValueError(f"stationary_mean_batches needs 1 <= batch <= most; got batch={batch}, most={most}")
    csum = np.zeros((n + 1, a.shape[1]))
    np.cumsum(a, axis=0, out=csum[1:])
    out = np.zeros((reps, a.shape[1]))
    stream = _Stream(seed, n, p)
    lo = 0
    while lo < reps:
        hi = min(lo + b, reps)
        stream.fill_sums(out, csum, hi)
        got = out[lo:hi]
        got /= n
        yield lo, got
        lo, b = hi, min(2 * b, most)


def stationary_means(x: np.ndarray, reps: int, block: float, seed: int) -> np.ndarray:
    """Bootstrap column means, float64 (reps, k), of ``x`` (n,) or (n, k) over the resamples
    ``stationary_indices(n, reps, block, seed)`` — computed from prefix sums, without the index matrix. ``x``
    must be finite (a NaN would spread through the prefix sums)."""
    parts = [m for _, m in stationary_mean_batches(x, reps, block, seed, batch=max(int(reps), 1))]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def bootstrap_means(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Column means of ``x`` (n,) or (n, k) over each row of the index matrix ``idx`` (reps, m), float64
    (reps, k). Indices must lie in [0, n)."""
    a = np.ascontiguousarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    ix = np.ascontiguousarray(idx, dtype=np.int64)
    if ix.ndim != 2 or a.ndim != 2:
        raise ValueError(f"bootstrap_means needs x (n,) or (n, k) and idx (reps, m); got {a.shape} and {ix.shape}")
    if ix.size and (ix.min() < 0 or ix.max() >= a.shape[0]):
        raise ValueError(f"bootstrap indices must lie in [0, {a.shape[0]}); got [{ix.min()}, {ix.max()}]")
    out = np.empty((ix.shape[0], a.shape[1]))
    _bootstrap_means(out, a, ix)
    return out


def optimal_block_length(x: np.ndarray) -> float:
    """Politis & White (2004) optimal mean block length for the stationary bootstrap, with the Patton, Politis &
    White (2009) correction; equals ``arch.bootstrap.optimal_block_length(x)["stationary"]``. NaN for a constant
    or non-finite series, or fewer than 10 observations (callers fall back to a fixed block)."""
    a = np.ascontiguousarray(x, dtype=np.float64).ravel()
    if not np.all(np.isfinite(a)):
        return math.nan
    return float(_opt_block(a))


def sb_variance(x: np.ndarray, block: float) -> np.ndarray:
    """Per-column long-run variance under the stationary bootstrap with mean block ``block`` (Hansen 2005 eq. 9),
    float64 (k,); O(n²·k), as arch computes it."""
    a = np.ascontiguousarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    b = float(block)
    if not (math.isfinite(b) and b >= 1.0):
        raise ValueError(f"sb_variance needs a finite mean block length >= 1; got {block!r}")
    out = np.empty(a.shape[1])
    _sb_variance(out, a, b)
    return out
