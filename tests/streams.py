"""Module contexts shaped like the gate's, over any bars: for the module tests (tests/modules/conftest.py) and the
module benchmark (benchmarks/bench_modules.py), so both feed the modules the same way."""

from __future__ import annotations

from typing import Any

import numpy as np

from fxgate.engine import Bars
from fxgate.models.features import FeatureEngine
from fxgate.modules import Context, Matured, Outcome


def contexts(bars: Bars, seed: int = 3, horizon: int = 1, ensemble: Any = None) -> list[Context]:
    """The bar's real feature row, synthetic model probabilities, a candidate on every other bar, each candidate's
    Outcome and every bar's Matured forecast delivered ``horizon`` bars later (never earlier), a 0.8-pip spread,
    and ``ensemble`` for the modules that query it."""
    feats = FeatureEngine("H1").batch(bars)
    rng = np.random.default_rng(seed)
    pending: list[tuple[int, Outcome]] = []
    out = []
    for i, bar in enumerate(bars):
        probs = np.clip(0.5 + rng.normal(0, 0.05, 3), 0.01, 0.99)
        direction = (1 if probs.mean() >= 0.5 else -1) if i % 2 == 0 else 0
        due = tuple(o for j, o in pending if j == i)
        pending = [(j, o) for j, o in pending if j != i]
        matured = ()
        if i >= horizon:
            e = out[i - horizon]
            matured = (
                Matured(
                    i - horizon + 1,
                    int(e.bar.ts),
                    int(bar.ts),
                    e.bar.close,
                    bar.close,
                    e.probs,
                    e.features,
                    e.direction,
                    8e-5,
                ),
            )
        if direction and i + horizon < len(bars):
            o = Outcome(
                int(bar.ts),
                int(bars.ts[i + horizon]),
                direction,
                bar.close,
                float(bars.close[i + horizon]),
                spread=8e-5,
                prob=float(probs.mean() if direction > 0 else 1 - probs.mean()),
            )
            pending.append((i + horizon, o))
        out.append(
            Context(
                bar,
                features=feats[i],
                probs=probs,
                direction=direction,
                outcomes=due,
                spread=8e-5,
                matured=matured,
                bar_index=i + 1,
                ensemble=ensemble,
            )
        )
    return out
