"""InformationEdge's per-forecast window statistics next to the scipy/statsmodels recompute they replace, one run.

    python benchmarks/_bench_information_edge.py

Data: the bundled EURUSD H1 sample (5,000 bars), synthetic Layer-1 probabilities, every bar's forecast maturing one
bar later (the tests' ``context_stream``); window 250, horizon 3 (Newey–West lags 4). Figures are p50/p99 in
microseconds, after warm-up.

* ``module``: ``update`` + ``verdict`` per bar (one matured forecast per bar);
* ``window``: the module's one kernel call per forecast (EWMA co-moments, ring and exact integer ranks, window Pearson
  IC, RankIC and Newey–West t), next to ``scipy.stats.pearsonr`` + ``spearmanr`` + ``statsmodels`` OLS
  ``fit(cov_type="HAC")`` on the same 250-forecast window (timed on every 10th forecast).

Streaming module: the lead's bench_modules.py times update + verdict for every module generically (icir and
certainty_score included); this file adds the reference ratio.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import statsmodels.api as sm
from scipy import stats

from fxgate.modules import _ic, create

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "modules"))
from conftest import context_stream  # the tests' gate-shaped stream, found through the path above


def _pct(ns: list[int]) -> dict[str, float]:
    a = np.asarray(ns, dtype=np.float64) / 1000.0
    return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99))}


def cases() -> dict[str, Any]:
    ctxs = context_stream()
    m = create("information_edge", gate={"horizon": 3})
    m.warm_up()
    mod: list[int] = []
    for c in ctxs:
        t0 = time.perf_counter_ns()
        m.update(c)
        m.verdict()
        mod.append(time.perf_counter_ns() - t0)
    pairs = [(_ic.signal(x.probs), x.log_return) for c in ctxs for x in c.matured]
    win = _ic.IcWindow(250)
    lam, lags = _ic.decay(100.0), m.lags
    ours: list[int] = []
    ref: list[int] = []
    for i, (s, r) in enumerate(pairs):
        t0 = time.perf_counter_ns()
        win.push(s, r, lam, lags)
        ours.append(time.perf_counter_ns() - t0)
        if i >= 250 and i % 10 == 0:
            ws, wr = win.window()
            t0 = time.perf_counter_ns()
            stats.pearsonr(ws, wr)
            stats.spearmanr(ws, wr)
            sm.OLS(wr, sm.add_constant(ws)).fit(cov_type="HAC", cov_kwds={"maxlags": lags})
            ref.append(time.perf_counter_ns() - t0)
    o, rf = _pct(ours[250:]), _pct(ref)
    return {
        "module": _pct(mod[300:]),
        "window": {
            **o,
            "reference": "scipy pearsonr + spearmanr + statsmodels OLS HAC (window 250, maxlags 4)",
            "reference_p50_us": rf["p50_us"],
            "reference_p99_us": rf["p99_us"],
            "speedup_p50": rf["p50_us"] / o["p50_us"],
        },
    }


if __name__ == "__main__":
    print(json.dumps(cases(), indent=2))
