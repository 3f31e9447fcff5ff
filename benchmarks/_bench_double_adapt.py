"""DoubleAdapt's streaming costs next to river's detectors and a naive PSI recompute, measured in one run.

    python benchmarks/_bench_double_adapt.py

Data: the bundled EURUSD H1 sample through the feature engine (170 features), synthetic Layer-1 probabilities,
every bar's forecast maturing one bar later (the tests' ``context_stream``). Figures are p50/p99 in microseconds.

* ``module``: ``update`` + ``verdict`` per bar after warm-up, once the reference is fixed and the PSI window full;
* ``detectors``: the module's one kernel call per matured forecast (its Brier loss, one ADWIN and one Page–Hinkley
  update), next to ``river.drift.ADWIN`` + ``river.drift.PageHinkley`` updates on the same losses (loss computed
  outside river's timing);
* ``psi``: our incremental PSI step per bar, next to the naive numpy recompute over the window (quantile bins of
  the reference, ``np.searchsorted`` + ``np.bincount`` per feature) that it replaces.

Streaming module: the lead's bench_modules.py times update + verdict for every module generically; this file adds
the reference ratios.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from river import drift

from fxgate.modules import create
from fxgate.modules import double_adapt as da

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "modules"))
from conftest import context_stream  # the tests' gate-shaped stream, found through the path above


def _pct(ns: list[int]) -> dict[str, float]:
    a = np.asarray(ns, dtype=np.float64) / 1000.0
    return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99))}


def _psi_naive(ref_cuts: list[np.ndarray | None], ref_p: list[np.ndarray | None], recent: np.ndarray) -> float:
    vals = []
    for f, cuts in enumerate(ref_cuts):
        if cuts is None:
            continue
        c = recent[:, f][np.isfinite(recent[:, f])]
        a = np.maximum(np.bincount(np.searchsorted(cuts, c, side="right"), minlength=len(cuts) + 1) / len(c), 1e-4)
        e = np.maximum(ref_p[f], 1e-4)
        vals.append(float(np.sum((a - e) * np.log(a / e))))
    return float(np.mean(vals))


def cases() -> dict[str, Any]:
    ctxs = context_stream()
    m = create("double_adapt")
    m.warm_up()
    ours: list[int] = []
    for c in ctxs:
        t0 = time.perf_counter_ns()
        m.update(c)
        m.verdict()
        ours.append(time.perf_counter_ns() - t0)
    steady = ours[int(m.params["ref_bars"]) + int(m.params["psi_window"]) :]

    mats = [mt for c in ctxs for mt in c.matured] * 4  # 20,000 matured forecasts
    d = create("double_adapt")
    state = d._loss_state()
    det_ours, det_ref = [], []
    ra, rph = drift.ADWIN(), drift.PageHinkley()
    for mt in mats:
        pr, e, x = mt.probs, mt.entry_price, mt.exit_price
        t0 = time.perf_counter_ns()
        da._loss_step(*state, pr, e, x, *d._args)  # the module's one call per loss: Brier, ADWIN, Page-Hinkley
        t1 = time.perf_counter_ns()
        v = float((pr.mean() - (x > e)) ** 2)
        t2 = time.perf_counter_ns()
        ra.update(v)
        rph.update(v)
        t3 = time.perf_counter_ns()
        det_ours.append(t1 - t0)
        det_ref.append(t3 - t2)

    # PSI: our kernel step vs the naive window recompute, on the same rows and reference
    feats = np.array([c.features for c in ctxs])
    n_ref, w = int(m.params["ref_bars"]), int(m.params["psi_window"])
    p = create("double_adapt")
    for c in ctxs[: n_ref + w]:
        p.update(c)
    cuts = [p.edges[f, : p.nedges[f]] if p.nedges[f] >= 0 else None for f in range(len(p.nedges))]
    shares = [p.ref_p[f, : p.nedges[f] + 1] if p.nedges[f] >= 0 else None for f in range(len(p.nedges))]
    psi_ours, psi_ref = [], []
    args = ("rb", "rcnt", "rvalid", "term", "edges", "nedges", "ref_p", "ist", "fs")
    for i in range(n_ref + w, min(len(feats), n_ref + w + 1500)):
        state = [getattr(p, k) for k in args]
        t0 = time.perf_counter_ns()
        da._psi_step(*state, feats[i], 1e-4, 50)
        t1 = time.perf_counter_ns()
        _psi_naive(cuts, shares, feats[i - w + 1 : i + 1])
        t2 = time.perf_counter_ns()
        psi_ours.append(t1 - t0)
        psi_ref.append(t2 - t1)

    mod, do, dr, po, pr = _pct(steady), _pct(det_ours), _pct(det_ref), _pct(psi_ours), _pct(psi_ref)
    return {
        "module": mod,
        "detectors": do,
        "reference": "river.drift.ADWIN().update + river.drift.PageHinkley().update",
        "detectors_reference": dr,
        "detectors_speedup_p50": dr["p50_us"] / do["p50_us"],
        "psi": po,
        "psi_reference": "numpy quantile-bin PSI recomputed over the 500-bar window, 170 features",
        "psi_naive": pr,
        "psi_speedup_p50": pr["p50_us"] / po["p50_us"],
    }


if __name__ == "__main__":
    print(json.dumps(cases(), indent=2))
