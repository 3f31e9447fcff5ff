"""Purged, embargoed walk-forward splits (Lopez de Prado 2018, *Advances in Financial Machine Learning*, ch. 7.4).

A training sample is kept only if its label window ends before the test block (or the calibration window) starts,
minus an ``embargo``: a label that reaches into the block would leak the block's outcome into training.
"""

from __future__ import annotations

import numpy as np

__all__ = ["purged_walk_forward", "split_calibration"]


def purged_walk_forward(
    usable: np.ndarray, end: np.ndarray, folds: int, test_frac: float, embargo: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train_idx, test_idx)`` per fold: test blocks tile the last ``test_frac`` of the bars; a training
    sample must precede its block and have its label known before ``block_start - embargo``."""
    n = len(usable)
    idx = np.arange(n)
    start = int(n * (1 - test_frac))
    edges = np.linspace(start, n, folds + 1).astype(int)
    out = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        train = idx[usable & (idx < a) & (end < a - embargo)]
        test = idx[usable & (idx >= a) & (idx < b)]
        out.append((train, test))
    return out


def split_calibration(train: np.ndarray, end: np.ndarray, frac: float, embargo: int) -> tuple[np.ndarray, np.ndarray]:
    """Latest ``frac`` of ``train`` for calibration; fit rows must have their labels known before it starts."""
    k = max(1, int(len(train) * frac))
    calib = train[-k:]
    c0 = calib[0]
    fit = train[(train < c0) & (end[train] < c0 - embargo)]
    return fit, calib
