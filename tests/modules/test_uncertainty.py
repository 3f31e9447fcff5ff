"""UncertaintyDecomposition's fused kernel: the compiled decomposition gives decompose's bits, and the fused
kernel (and its twin) leave the state update leaves, on bars with, without and with non-finite probabilities.
(The references against scipy and the rolling quantile are in test_references.py.)"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from fxgate.modules import create
from fxgate.modules.uncertainty import _decompose, _decompose_py, _uncertainty_fused, _uncertainty_fused_py, decompose


def _bits(x):
    return np.array(x, dtype=np.float64).view(np.uint64).tolist()


def test_compiled_decomposition_equals_decompose_bit_for_bit():
    rng = np.random.default_rng(11)
    cases = [np.array(v) for v in ([0.0, 1.0, 0.5], [1e-300, 1 - 1e-16, 0.3], [0.7, 0.7, 0.7], [0.2], [0.5, 0.5])]
    for k in (1, 2, 3, 5, 8):
        cases += [rng.uniform(0, 1, k) for _ in range(300)]
        cases += [rng.uniform(0, 1e-6, k), 1 - rng.uniform(0, 1e-9, k)]
    for p in cases:
        ref = _bits(decompose(p))
        assert _bits(_decompose(p)) == ref, p
        assert _bits(_decompose_py(p)) == ref, p


def test_fused_kernel_and_twin_equal_update(stream):
    """The sample's contexts with some bars' probabilities dropped, some made NaN or infinite."""
    ctxs = []
    for i, c in enumerate(stream[:700]):
        if i % 7 == 3:
            c = replace(c, probs=None)
        elif i % 11 == 5 and c.probs is not None:
            p = np.array(c.probs, dtype=np.float64)
            p[i % len(p)] = math.nan if i % 2 else math.inf
            c = replace(c, probs=p)
        ctxs.append(c)
    ref = create("uncertainty", history=50, min_history=10)
    mods = [create("uncertainty", history=50, min_history=10) for _ in range(2)]
    s = mods[0].fused_step("H1")
    assert s.kernel is _uncertainty_fused and s.inputs == ("has_probs", "probs") and s.params == (0.9,)
    n_models = len(stream[0].probs)
    for c in ctxs:
        ref.update(c)
        has = int(c.probs is not None)
        probs = np.ascontiguousarray(c.probs, dtype=np.float64) if has else np.zeros(n_models)
        for fn, m in zip((_uncertainty_fused, _uncertainty_fused_py), mods, strict=True):
            fn(m.hist, m.srt, m.ist, m.fs, has, probs, float(m.params["quantile"]))
            for k in m.state_keys:
                a, b = getattr(m, k), getattr(ref, k)
                assert a.dtype == b.dtype and np.array_equal(a.view(np.uint8), b.view(np.uint8)), k
