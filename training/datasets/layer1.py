"""Layer 1 out of sample in every split: the out-of-fold models that give the training scenarios their
probabilities (validation and test scenarios get the bundle's)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fxgate.models.ensemble import TreeEnsemble, purged_walk_forward
from fxgate.models.labels import make_labels
from fxgate.training.errors import DatasetError

__all__ = ["L1Model", "oof_schedule"]


@dataclass(frozen=True)
class L1Model:
    """A Layer-1 model the dataset gate switches to at bar ``start`` of a file; ``info`` names it and the last bar
    it saw (``meta.layer1`` of its scenarios)."""

    start: int
    ens: Any
    info: dict[str, Any]


def oof_schedule(
    bars: Any, train_end: int, ens: Any, embargo: int, say: Callable[[str], None] | None = None
) -> list[L1Model]:
    """Out-of-fold Layer-1 models for the training part ``bars[:train_end]`` of one file.

    The blocks are those of :func:`fxgate.models.ensemble.purged_walk_forward` (the bundle's ``folds`` and
    ``test_frac``) over the training part; the model of a block starting at bar ``a`` is
    :meth:`TreeEnsemble.fit <fxgate.models.ensemble.TreeEnsemble.fit>` (the bundle's label spec and config) on
    ``bars[:a - embargo]`` — so every bar it saw, label windows included, is at least ``embargo`` bars before the
    first bar it predicts. Training bars before the first block get no model (and no scenario)."""
    cfg, spec = ens.config, ens.label_spec
    head = bars[:train_end]
    lab = make_labels(head, spec)
    folds = purged_walk_forward(np.ones(train_end, dtype=bool), lab.end, cfg.folds, cfg.test_frac, embargo)
    out = []
    for k, (_, test) in enumerate(folds):
        if len(test) == 0:
            continue
        a = int(test[0])
        c = a - embargo
        if c - 61 - spec.horizon < 200:
            raise DatasetError(
                f"out-of-fold Layer-1 probabilities: block {k + 1} of the training split starts at "
                f"bar {a}, leaving {max(0, c)} bars to fit its model on (need >= {261 + spec.horizon})"
                f". Fix: more bars before the validation cut, or a bundle fitted with fewer folds or "
                f"a smaller test_frac"
            )
        if say:
            say(f"out-of-fold Layer-1 model {k + 1}/{len(folds)}: fit on bars 0..{c - 1}, predicts bars from {a}")
        m = TreeEnsemble()
        m.fit(head[:c], spec, cfg, evaluate=False)
        info = {
            "model": f"oof-{k + 1}",
            "block_first_ts": int(bars.ts[a]),
            "block_last_ts": int(bars.ts[test[-1]]),
            "fit_bars": c,
            "fit_last_ts": int(bars.ts[c - 1]),
            "bundle_hash": m.bundle_hash[:16],
        }
        out.append(L1Model(a, m, info))
    return out
