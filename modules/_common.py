"""Helpers shared by several modules: return standardization and rolling-quantile thresholds."""

from __future__ import annotations

import math

import numpy as np
from fxgate.engine._jit import kernel


def _ring_quantile_py(buf, count, window, q):  # type: ignore[no-untyped-def]
    """Linear-interpolation quantile of the last ``min(count, window)`` values of ring ``buf``."""
    h = min(count, window)
    n = buf.shape[0]
    tmp = np.empty(h)
    for j in range(h):
        tmp[j] = buf[(count - 1 - j) % n]
    tmp.sort()
    pos = q * (h - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, h - 1)
    return tmp[lo] + (tmp[hi] - tmp[lo]) * (pos - lo)


ring_quantile = kernel(_ring_quantile_py)


def entropy(p: float) -> float:
    """Binary entropy in nats; 0 at p in {0, 1}."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))
