"""Out-of-sample figures of a walk-forward fit: per model and for the Layer-1 rule, the reliability table, and the
sentence that says why the rule never fired when it did not.

The rule (:func:`l1_rule`) is the vectorized :meth:`TreeEnsemble.verdict
<fxgate.models.ensemble.model.TreeEnsemble.verdict>`: the candidate rule of :mod:`fxgate.engine.core.records` (all
models lean the same way) and every model's confidence ``max(p, 1 - p)`` at least the threshold.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fxgate.engine.core.records import candidate_directions
from fxgate.models import _stats
from fxgate.models.ensemble.boosters import MODEL_NAMES

__all__ = ["l1_rule", "block_metrics", "reliability", "silence_note"]


def l1_rule(probs: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The Layer-1 rule over rows of calibrated P(up) ``(n, models)``: (fires, direction +1/-1, 0 where the
    models do not agree)."""
    direction = candidate_directions(probs)
    conf = np.where(probs >= 0.5, probs, 1 - probs)
    fires = (direction != 0) & (conf >= threshold).all(axis=1)
    return fires, direction


def block_metrics(p: dict[str, np.ndarray], y: np.ndarray, ret: np.ndarray, threshold: float) -> dict[str, Any]:
    """Out-of-sample figures for one block: per model and for the all-agree rule."""
    out: dict[str, Any] = {"bars": int(len(y)), "decided_bars": int((y != 0).sum())}
    dec = y != 0
    yb = (y[dec] > 0).astype(float)
    for name, pm in p.items():
        hit = (pm[dec] >= 0.5) == (yb == 1)
        k = int(hit.sum())
        out[name] = {
            "accuracy": k / max(1, dec.sum()),
            "accuracy_ci95": _stats.wilson(k, int(dec.sum())),
            "logloss": _stats.log_loss(pm[dec], yb),
            "auc": _stats.auc(pm[dec], yb),
            "ic": _stats.pearson(pm - 0.5, ret),
            "rank_ic": _stats.spearman(pm, ret),
            "max_confidence": float(np.max(np.maximum(pm, 1 - pm))) if len(pm) else math.nan,
        }
    probs = np.column_stack([p[m] for m in MODEL_NAMES])
    fires, direction = l1_rule(probs, threshold)
    n_sig = int(fires.sum())
    correct = int(((direction == y) & fires).sum())  # label 0 (move did not pay the cost) counts as wrong
    out["rule"] = {
        "threshold": threshold,
        "signals": n_sig,
        "coverage": n_sig / max(1, len(y)),
        "precision": correct / n_sig if n_sig else None,
        "precision_ci95": _stats.wilson(correct, n_sig),
        "bars_all_agree": int((direction != 0).sum()),
    }
    return out


def reliability(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Reliability table of confidence max(p, 1-p) in bins over [0.5, 1]: mean confidence vs hit rate."""
    conf = np.maximum(p, 1 - p)
    hit = (p >= 0.5) == (y == 1)
    edges = np.linspace(0.5, 1.0, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf >= lo) & ((conf < hi) if hi < 1 else (conf <= hi))
        rows.append(
            {
                "lo": float(lo),
                "hi": float(hi),
                "count": int(m.sum()),
                "mean_confidence": float(conf[m].mean()) if m.any() else None,
                "hit_rate": float(hit[m].mean()) if m.any() else None,
            }
        )
    return rows


def silence_note(overall: dict[str, Any], threshold: float) -> str | None:
    """Why the rule never fired out of sample, in words, when it did not."""
    if overall["rule"]["signals"]:
        return None
    maxes = {m: overall[m]["max_confidence"] for m in MODEL_NAMES}
    below = [f"{m} {v:.3f}" for m, v in maxes.items() if v < threshold]
    if below:
        return (
            f"the Layer-1 rule fired on no out-of-sample bar: the highest calibrated confidence of "
            f"{', '.join(below)} never reached {threshold}"
        )
    return f"the Layer-1 rule fired on no out-of-sample bar: no bar had all three models >= {threshold} together"
