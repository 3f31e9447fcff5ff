"""ConformalPrediction's streaming step next to MAPIE's ACI step on the same stream.

    python benchmarks/_bench_conformal_prediction.py

Data: the bundled EURUSD H1 sample with synthetic Layer-1 probabilities, every bar's forecast maturing one bar later
(tests/modules/conftest.py's gate-shaped stream). Ours: ``update`` + ``verdict`` per bar after warm-up, defaults
(ACI, window 500: score the matured outcome, the α_t step, the sorted-window push, the EWMA regression, the new
interval). Reference: one step of ``mapie.regression.TimeSeriesRegressor(method="aci", cv="prefit")`` with the
symmetric absolute score on the same ŷ and returns — ``predict`` (the interval), ``adapt_conformal_inference``
(the α_t step) and ``update`` (roll the 500 scores) — the per-bar work a MAPIE-based gate would do; the two give the
same α_t and intervals (tests/modules/test_conformal_prediction.py). Figures are p50/p99 per bar in microseconds,
measured in one run. Streaming: the lead's bench_modules.py times update + verdict for every module generically;
this file adds the reference ratio.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from mapie.conformity_scores import AbsoluteConformityScore
from mapie.regression import TimeSeriesRegressor
from sklearn.base import BaseEstimator, RegressorMixin

from fxgate.modules import create
from fxgate.modules.conformal_prediction import F_YHAT

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "modules"))
from conftest import context_stream  # the tests' gate-shaped stream, found through the path above


class _Passthrough(RegressorMixin, BaseEstimator):
    """A prefit regressor whose prediction is its one feature: the ŷ our module issued."""

    def fit(self, X, y):
        return self

    def predict(self, X):
        return np.asarray(X, dtype=float)[:, 0]

    def __sklearn_is_fitted__(self) -> bool:
        return True


def _pct(ns: list[int]) -> dict[str, float]:
    a = np.asarray(ns, dtype=np.float64) / 1000.0
    return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99))}


def cases() -> dict[str, Any]:
    ctxs = context_stream()
    m = create("conformal_prediction")
    m.warm_up()
    w = int(m.params["window"])
    yhat: list[float] = []
    ours: list[int] = []
    for c in ctxs:
        t0 = time.perf_counter_ns()
        m.update(c)
        m.verdict()
        ours.append(time.perf_counter_ns() - t0)
        yhat.append(float(m.fs[F_YHAT]))
    ours = ours[1000:]  # steady state: a full window
    r = np.array([mt.log_return for c in ctxs for mt in c.matured])
    y = np.array(yhat[: len(r)])
    ref = TimeSeriesRegressor(_Passthrough(), method="aci", cv="prefit", conformity_score=AbsoluteConformityScore())
    times: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MAPIE warns on every update call (deprecated arguments) and on the estimator
        ref.fit(y[:w, None], r[:w])
        for t in range(w, min(len(r), w + 1000)):
            x, yt = y[t : t + 1, None], r[t : t + 1]
            t0 = time.perf_counter_ns()
            ref.predict(x, confidence_level=0.9, allow_infinite_bounds=True)
            ref.adapt_conformal_inference(x, yt, gamma=float(m.params["gamma"]), confidence_level=0.9)
            ref.update(x, yt)
            times.append(time.perf_counter_ns() - t0)
    o, rr = _pct(ours), _pct(times)
    return {
        "update_verdict": o,
        "reference": "mapie TimeSeriesRegressor(method='aci', cv='prefit') predict + adapt_conformal_inference + "
        "update, per bar",
        "reference_per_bar": rr,
        "speedup_p50": rr["p50_us"] / o["p50_us"],
        "window": w,
    }


if __name__ == "__main__":
    print(json.dumps(cases(), indent=2))
