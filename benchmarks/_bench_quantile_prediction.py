"""QuantilePrediction's per-bar quantile forecast next to LightGBM's own predict, and the module's per-bar cost.

    python benchmarks/_bench_quantile_prediction.py

Data: the bundled EURUSD H1 sample; a Layer-1 bundle fitted on its first 3,000 bars (boosters 30 trees, the
quantile models at their defaults: 9 levels x 50 trees x 7 leaves), then bars 3,000..5,000 out of sample. Figures
are p50/p99 in microseconds, after warm-up.

* ``row``: ``TreeEnsemble.predict_quantiles`` (one numba call: winsorize, nine forests, sort) next to the native
  path (winsorize, nine ``lightgbm.Booster.predict`` calls on one row, ``np.sort``);
* ``module``: ``update`` + ``verdict`` per bar with the real ensemble (one matured forecast per bar);
* ``fit_s``: seconds to fit the nine quantile models on the training rows (one thread).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fxgate.engine import sample_bars
from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
from fxgate.models.ensemble.quantiles import QuantileModels, forward_returns
from fxgate.models.features import FeatureEngine
from fxgate.models.labels import LabelSpec
from fxgate.modules import create

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "modules"))
from conftest import context_stream  # the tests' gate-shaped stream, found through the path above


def _pct(ns: list[int]) -> dict[str, float]:
    a = np.asarray(ns, dtype=np.float64) / 1000.0
    return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99))}


def cases() -> dict[str, Any]:
    bars = sample_bars()
    cfg = EnsembleConfig(n_estimators=30, max_depth=4, folds=1)
    ens = TreeEnsemble()
    ens.fit(bars[:3000], LabelSpec("next", 1), cfg, evaluate=False)
    x = FeatureEngine(bars.timeframe).batch(bars)
    rows, r = forward_returns(bars.close, np.arange(61, 2999), 1, 2999)
    t0 = time.perf_counter()
    QuantileModels.fit(ens.winsor.transform(x[rows]), r, cfg)
    fit_s = time.perf_counter() - t0

    oos = x[3000:]
    ens.predict_quantiles(oos[0])
    ours, ref = [], []
    for row in oos:
        t0 = time.perf_counter_ns()
        ens.predict_quantiles(row)
        ours.append(time.perf_counter_ns() - t0)
    for row in oos[::4]:
        t0 = time.perf_counter_ns()
        z = ens.winsor.transform(row[None, :])
        np.sort(np.array([m.predict(z)[0] for m in ens.quantiles.models]))
        ref.append(time.perf_counter_ns() - t0)

    ctxs = context_stream()[3000:]
    m = create("quantile_prediction")
    m.warm_up()
    mod = []
    for c in ctxs:
        c.ensemble = ens
        t0 = time.perf_counter_ns()
        m.update(c)
        m.verdict()
        mod.append(time.perf_counter_ns() - t0)
    o, rf = _pct(ours[50:]), _pct(ref[10:])
    return {
        "row": {
            **o,
            "reference": "winsorize + 9 x lightgbm Booster.predict(one row) + np.sort",
            "reference_p50_us": rf["p50_us"],
            "reference_p99_us": rf["p99_us"],
            "speedup_p50": rf["p50_us"] / o["p50_us"],
        },
        "module": _pct(mod[50:]),
        "fit_s": fit_s,
    }


if __name__ == "__main__":
    print(json.dumps(cases(), indent=2))
