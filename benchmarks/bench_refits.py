"""Where a walk-forward refit's time goes (issue #19): one Layer-1 fit (``fit_window``, as a replay refit) on k
synthetic H1 bars, split into the feature batch, the labels, each booster's training, the calibration (each
booster's held-out predictions and the calibrator fits), the quantile models and the compile into the numba
kernels.

    python benchmarks/bench_refits.py [--sizes 2000,8000,32000] [--estimators 300] [--json PATH]

Each stage is timed by wrapping the function that does it (nothing in fxgate is changed). The boosters train with
their configured ``threads`` (2). A figure, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from collections import defaultdict
from typing import Any

import numpy as np

from fxgate.engine.config import GateConfig, ReplayConfig
from fxgate.engine.core.bars import Bars
from fxgate.engine.replaying import fit_window
from fxgate.models import features
from fxgate.models.ensemble import boosters, calibration, model, quantiles

SPENT: dict[str, float] = defaultdict(float)


def _timed(owner: Any, name: str, label: str) -> None:
    fn = getattr(owner, name)

    def wrapper(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            SPENT[label] += time.perf_counter() - t0

    setattr(owner, name, wrapper)


def _instrument() -> None:
    for a in boosters.ADAPTERS:
        _timed(a, "train", f"train {a.name}")
        _timed(a, "proba", f"calibration: {a.name} predictions")
    _timed(calibration.Calibrator, "fit", "calibration: calibrator fits")
    _timed(features.FeatureEngine, "batch", "features (batch)")
    _timed(model, "make_labels", "labels")
    _timed(quantiles.QuantileModels, "fit", "quantile models")
    _timed(model.TreeEnsemble, "_compile", "compile (numba kernels)")


def synthetic(n: int, seed: int = 0) -> Bars:
    rng = np.random.default_rng(seed)
    close = 1.1 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    open_ = np.r_[close[0], close[:-1]]
    wig = np.abs(rng.normal(0, 0.0005, n)) * close
    ts = (np.datetime64("2015-01-05T00:00", "ns") + np.arange(n) * np.timedelta64(3600, "s")).astype(np.int64)
    vol = rng.lognormal(6, 0.5, n)
    return Bars(ts, open_, np.maximum(open_, close) + wig, np.minimum(open_, close) - wig, close, vol, None,
                symbol="SYN", timeframe="H1")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="2000,8000,32000")
    ap.add_argument("--estimators", type=int, default=300)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    cfg = dataclasses.replace(GateConfig(), replay=ReplayConfig(n_estimators=args.estimators, folds=1))
    _instrument()
    fit_window(synthetic(1500), cfg, 1400)  # compile every kernel first: not part of a refit
    rows = []
    for k in sizes:
        SPENT.clear()
        bars = synthetic(k + 1)
        _, secs = fit_window(bars, cfg, k)
        row = {"bars": k, "seconds": round(secs, 3), **{s: round(v, 3) for s, v in sorted(SPENT.items())}}
        row["other (winsorizer, splits, manifest)"] = round(secs - sum(SPENT.values()), 3)
        rows.append(row)
        print(json.dumps(row))
    info = {"python": platform.python_version(), "estimators": args.estimators, "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(info, f, indent=1)


if __name__ == "__main__":
    main()
