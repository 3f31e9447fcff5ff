"""ModelConfidenceSet's scheduled recompute next to ``arch.bootstrap.MCS`` at equal reps, on the same data.

    python benchmarks/_bench_model_confidence_set.py

Data: T = 500 loss rows, k = 5 forecasters (the module's window without the LLM: three members, the ensemble,
the benchmark), Brier losses of synthetic forecasts of a real up/down sequence (the bundled EURUSD H1 sample).
Ours: ``ModelConfidenceSet.recompute()`` on a full window — window copy, Politis–White block, stationary bootstrap
means from prefix sums, the MCS elimination — at the default reps and at 1,000 / 10,000; arch: ``MCS(...).compute()``
with the same losses, reps, block and method (its bootstrap draws its own resamples; the p-values are equal when
both get the same resamples — tests/modules/test_model_confidence_set.py). Figures are p50 over repeats, ours and
arch's calls alternated in one run. Target (issue #15): ours >= 10x faster than arch at equal reps.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
from arch.bootstrap import MCS

from fxgate.engine import Bar, sample_bars
from fxgate.modules import Context, Matured, create


def _module(window: int = 500, reps: int | None = None):  # type: ignore[no-untyped-def]
    close = sample_bars().close
    rng = np.random.default_rng(0)
    kw = {"window": window, "every": 10**9, "min_rows": window}
    if reps is not None:
        kw["reps"] = reps
    m = create("model_confidence_set", **kw)
    m.update(Context(Bar(0, 1.0, 1.0, 1.0, 1.0, 1.0, timeframe="H1"), bar_index=1))
    for i in range(1, window + 1):
        up = close[i] > close[i - 1]
        probs = np.clip(0.5 + 0.04 * (1 if up else -1) + rng.normal(0, 0.08, 3), 0.01, 0.99)
        mt = Matured(i, i - 1, i, float(close[i - 1]), float(close[i]), probs, None)
        m.update(Context(Bar(i, 1.0, 1.0, 1.0, 1.0, 1.0, timeframe="H1"), matured=(mt,), bar_index=i + 1))
    return m


def _pair(reps: int, repeats: int) -> dict[str, Any]:
    """p50 of ours and of arch at ``reps``, the two calls alternated so that both see the same machine load."""
    m = _module(reps=reps)
    m.warm_up()
    m.recompute()
    losses, _ = m.design()
    block = m.block_length(losses)

    def ref() -> None:
        MCS(losses, size=0.1, reps=reps, block_size=block, method="R", bootstrap="stationary", seed=0).compute()

    ours, theirs = [], []
    for _ in range(repeats):
        for fn, out in ((m.recompute, ours), (ref, theirs)):
            t0 = time.perf_counter_ns()
            fn()
            out.append(time.perf_counter_ns() - t0)
    ours_ms, arch_ms = float(np.median(ours)) / 1e6, float(np.median(theirs)) / 1e6
    return {
        "reps": reps,
        "T": int(losses.shape[0]),
        "k": int(losses.shape[1]),
        "block": round(float(block), 3),
        "recompute_ms": round(ours_ms, 3),
        "recompute_p99_ms": round(float(np.percentile(ours, 99)) / 1e6, 3),
        "reference_ms": round(arch_ms, 3),
        "ratio": round(arch_ms / ours_ms, 1),
    }


def cases() -> dict[str, Any]:
    """The recompute cost at the default reps next to arch's, and the same pair at 1,000 and 10,000 reps."""
    default = int(create("model_confidence_set").params["reps"])
    d = _pair(default, 9)
    by = {str(r): _pair(r, 9 if r <= 2000 else 5) for r in (1000, 10000)}
    return {
        "scheduled": True,
        "recompute_ms": d["recompute_ms"],
        "reference": f"arch.bootstrap.MCS(losses, size=0.1, reps={default}, block_size=b, method='R', "
        f"bootstrap='stationary').compute()",
        "reference_ms": d["reference_ms"],
        "ratio": d["ratio"],
        "data": f"T={d['T']}, k={d['k']}, block={d['block']}",
        "by_reps": by,
        "target": "ours >= 10x faster than arch at equal reps",
    }


if __name__ == "__main__":
    print(json.dumps(cases(), indent=2))
