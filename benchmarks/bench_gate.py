"""The gate per bar: ``Gate.on_bar`` latency without the LLM layers, and replay throughput, in one run.

    python benchmarks/bench_gate.py [--json PATH]

A Layer-1 ensemble (300 trees, depth 6) is fitted on the first 2,000 bars of the bundled EURUSD H1 sample; the gate
(compiled ensemble + every built Layer-4 module, default config) is warmed up on those bars and then times
``on_bar`` on the remaining 3,000 — in the default "cheapest" mode (stop at the first veto, the live setting) and in
"full" mode without SHAP (every module's verdict on every bar). Replay throughput is bars per second of the
cheapest-mode loop, refits excluded.

Targets (issue #8): on_bar p99 <= 100 us; replay >= 20,000 bars/s without LLM layers.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from _common import write_json


def pct(xs: list[int]) -> dict[str, float]:
    a = np.asarray(xs, dtype=np.float64) / 1000.0
    return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from fxgate.engine import sample_bars
    from fxgate.engine.config import GateConfig, L2Config, L3Config, L4Config
    from fxgate.engine.gate import Gate
    from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
    from fxgate.models.labels import LabelSpec

    bars = sample_bars()
    ens = TreeEnsemble()
    ens.fit(bars[:2000], LabelSpec("next", 1, default_spread=8e-5), EnsembleConfig(), evaluate=False)
    out: dict = {"benchmark": "gate", "date": datetime.now(UTC).strftime("%Y-%m-%d"), "modes": {}}
    full_modules = tuple(m for m in GateConfig().l4.modules if m != "shap")
    fast = {"l2": L2Config(enabled=False), "l3": L3Config(enabled=False)}  # the fast layers only (bench_llm: L2/L3)
    full_cfg = GateConfig(spread=8e-5, mode="full", l4=L4Config(modules=full_modules), **fast)
    for mode, cfg in (("cheapest", GateConfig(spread=8e-5, **fast)), ("full_without_shap", full_cfg)):
        gate = Gate(cfg, ens, timeframe=bars.timeframe, symbol=bars.symbol)
        gate.warm_up(bars[:2000])
        live = bars[2000:]
        ts: list[int] = []
        t_all = time.perf_counter()
        for b in live:
            t0 = time.perf_counter_ns()
            gate.on_bar(b)
            ts.append(time.perf_counter_ns() - t0)
        wall = time.perf_counter() - t_all
        # the per-bar transaction: the state copied before the updates (restored if one raises)
        snap: list[int] = []
        for _ in range(2000):
            t0 = time.perf_counter_ns()
            gate._snapshot()
            snap.append(time.perf_counter_ns() - t0)
        out["modes"][mode] = {
            **pct(ts),
            "bars": len(live),
            "bars_per_s": len(live) / wall,
            "snapshot_p50_us": float(np.percentile(snap, 50)) / 1e3,
        }
    c = out["modes"]["cheapest"]
    out["targets"] = {"on_bar_p99_us": 100, "replay_bars_per_s": 20000}
    out["met"] = {"on_bar_p99": c["p99_us"] <= 100, "replay_throughput": c["bars_per_s"] >= 20000}
    out["summary"] = [
        {
            "figure": "Gate.on_bar p99 (cheapest mode)",
            "ours": f"{c['p99_us']:.0f} us",
            "reference": "-",
            "ratio": "-",
            "target": "<= 100 us",
            "met": out["met"]["on_bar_p99"],
        },
        {
            "figure": "replay throughput (no LLM)",
            "ours": f"{c['bars_per_s']:,.0f} bars/s",
            "reference": "-",
            "ratio": "-",
            "target": ">= 20,000 bars/s",
            "met": out["met"]["replay_throughput"],
        },
    ]
    out["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    print(f"{'mode':<20}{'p50 us':>9}{'p99 us':>9}{'bars/s':>10}{'snapshot p50 us':>17}")
    for mode, v in out["modes"].items():
        print(f"{mode:<20}{v['p50_us']:>9.1f}{v['p99_us']:>9.1f}{v['bars_per_s']:>10.0f}{v['snapshot_p50_us']:>17.1f}")
    print("targets: on_bar p99 <= 100 us, replay >= 20,000 bars/s")
    write_json(args.json, out)


if __name__ == "__main__":
    main()
