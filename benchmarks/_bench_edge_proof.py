"""EdgeProof's scheduled recompute next to ``arch.bootstrap.SPA`` at equal reps (10,000), T = 500, k = 1 and 10.

    python benchmarks/_bench_edge_proof.py        (prints the figures; bench_modules.py imports ``cases``)

* ``recompute_ms``: ``EdgeProof.recompute()`` at the defaults on a full 500-outcome window — Politis–White block,
  10,000 stationary-bootstrap resamples (numba, prefix sums), SPA/RC p-values, PSR/DSR;
* ``spa_k1_ms`` / ``spa_k10_ms``: our ``spa_test`` (bootstrap + long-run variance + p-values) on the same loss
  differentials arch gets, at the same block and reps;
* ``reference_ms`` / ``reference_k10_ms``: ``SPA(benchmark, models, block_size, reps=10_000).compute()``.

Each figure is the median of ``repeat`` timings after one untimed warm-up call. Target (issue #15): ours >= 10x
faster than arch at equal reps.
"""

from __future__ import annotations

import time

import numpy as np
from arch.bootstrap import SPA

from fxgate.engine import Bar
from fxgate.modules import Context, Outcome, create
from fxgate.modules.edge_proof import spa_test

T, REPS, BLOCK = 500, 10_000, 5.0


def _median_ms(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(out))


def _panel(k: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    bench = rng.standard_normal(T)
    models = rng.standard_normal((T, k)) + 0.6 * bench[:, None] - 0.05
    return bench, models


def cases(repeat: int = 3) -> dict:
    m = create("edge_proof")
    m.warm_up()
    rng = np.random.default_rng(1)
    h = 3_600_000_000_000
    for i, x in enumerate(rng.standard_normal(T) * 1e-4 + 1e-5):
        o = Outcome(i * h, (i + 1) * h, 1, 1.1, 1.1 + float(x))
        m.update(Context(Bar((i + 1) * h, 1.1, 1.1, 1.1, 1.1, 1.0, timeframe="H1"), outcomes=(o,)))
    out: dict = {"scheduled": True, "reps": REPS, "T": T, "block": BLOCK}
    out["recompute_ms"] = _median_ms(m.recompute, repeat)
    for k in (1, 10):
        bench, models = _panel(k)
        d = bench[:, None] - models
        ours = _median_ms(lambda d=d: spa_test(d, REPS, BLOCK, 0), repeat)

        def ref(bench=bench, models=models) -> None:
            SPA(bench, models, block_size=BLOCK, reps=REPS, seed=0).compute()

        theirs = _median_ms(ref, repeat)
        out[f"spa_k{k}_ms"] = ours
        out["reference_ms" if k == 1 else f"reference_k{k}_ms"] = theirs
        out[f"speedup_k{k}"] = theirs / ours
    out["reference"] = f"arch.bootstrap.SPA(benchmark, models, block_size={BLOCK}, reps={REPS}).compute(), T={T}"
    return out


if __name__ == "__main__":
    for key, val in cases().items():
        print(f"{key:>18}: {val:.3f}" if isinstance(val, float) else f"{key:>18}: {val}")
