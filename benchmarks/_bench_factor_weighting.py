"""FactorWeighting's streaming step next to what a non-streaming implementation does on each bar.

    python benchmarks/_bench_factor_weighting.py

Data: the bundled EURUSD H1 sample through the feature engine, synthetic Layer-1 probabilities, every bar's forecast
maturing one bar later (k = 7: the six default features and the ensemble signal). Ours: ``update`` + ``verdict`` per
bar after warm-up (EWMA moments O(k²), Ledoit–Wolf and a Cholesky solve O(k³), the 250-bar IC window O(window·k)).
Reference: per bar, ``sklearn.covariance.LedoitWolf().fit`` on the last 250 factor returns plus ``numpy.linalg.solve``
for the weights and ``numpy.corrcoef`` for the window's ICs — the window recompute the streaming state replaces.
Figures are p50/p99 per bar in microseconds, measured in one run. Streaming: the lead's bench_modules.py times
update + verdict for every module generically; this file adds the reference ratio.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.covariance import LedoitWolf

from fxgate.modules import create

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "modules"))
from conftest import context_stream  # the tests' gate-shaped stream, found through the path above


def _pct(ns: list[int]) -> dict[str, float]:
    a = np.asarray(ns, dtype=np.float64) / 1000.0
    return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99))}


def cases() -> dict[str, Any]:
    ctxs = context_stream()
    m = create("factor_weighting")
    m.warm_up()
    ours: list[int] = []
    upd: list[int] = []
    g_rows: list[np.ndarray] = []
    for c in ctxs:
        for mt in c.matured:  # the factor returns the module learns, for the reference (outside the timing)
            s = mt.entry_bar % len(m.ent)
            if m.ent[s] == mt.entry_bar and m.eflag[s] and np.isfinite(mt.log_return):
                g_rows.append(m.ez[s] * mt.log_return)
        t0 = time.perf_counter_ns()
        m.update(c)
        t1 = time.perf_counter_ns()
        m.verdict()
        ours.append(time.perf_counter_ns() - t0)
        upd.append(t1 - t0)
    ours, upd = ours[1000:], upd[1000:]  # steady state: features, z statistics and weights all warm
    g = np.array(g_rows)
    rng = np.random.default_rng(0)
    window, k = 250, g.shape[1]
    preds = rng.normal(size=(window, k + 1))
    ref: list[int] = []
    for end in range(window, min(len(g), window + 1000)):
        x = g[end - window : end]
        t0 = time.perf_counter_ns()
        lw = LedoitWolf().fit(x)
        np.linalg.solve(lw.covariance_, x.mean(0))
        np.corrcoef(preds.T, x[:, 0])
        ref.append(time.perf_counter_ns() - t0)
    o, r = _pct(ours), _pct(ref)
    return {
        "update_verdict": o,
        "update": _pct(upd),
        "reference": "sklearn LedoitWolf().fit(last 250 factor returns) + numpy solve + corrcoef, per bar",
        "reference_per_bar": r,
        "speedup_p50": r["p50_us"] / o["p50_us"],
        "k": k,
        "window": window,
    }


if __name__ == "__main__":
    print(json.dumps(cases(), indent=2))
