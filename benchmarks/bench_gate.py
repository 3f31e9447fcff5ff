"""The gate per bar: ``Gate.on_bar`` latency without the LLM layers, and replay throughput, in one run.

    python benchmarks/bench_gate.py [--json PATH] [--profile]

A Layer-1 ensemble (300 trees, depth 6) is fitted on the first 2,000 bars of the bundled EURUSD H1 sample; the gate
(compiled ensemble + every Layer-4 module of the default config) is warmed up on those bars and then times
``on_bar`` on the remaining 3,000 — in the default "cheapest" mode (stop at the first veto, the live setting) and in
"full" mode without SHAP (every module's verdict on every bar). Each mode runs twice on fresh gates:

* **replay**: bars back to back, as a replay feeds them. Replay throughput is bars per second of this loop, refits
  excluded. A bar that must apply a scheduled recompute still running (edge_proof's and the MCS's bootstraps,
  ``modules/_schedule.py``) waits for it here, so the bootstraps' CPU time is in this figure.
* **replay_traced** (cheapest mode only): replay with ``Gate.trace`` on, as ``fxgate replay`` runs it: every
  module's verdict is also evaluated alone on every bar (SHAP on one bar in 10), for ``layers.parquet``. Every
  verdict is read on every bar, so every bootstrap result is waited for.
* **live**: the same bars, but before each one (outside the timed region) the gate's scheduled recomputes are
  allowed to finish, as they have on any live feed (the bootstraps take 5-50 ms; bars are seconds to hours apart).
  This is the latency a live bar sees.

``--profile`` adds where a cheapest-mode live bar's time goes, stage by stage (each stage timed on its own call
inside the gate, one run; the stages' sum is a little above the plain p50 because of the timers), the fused module
step's parts included (its ``prepare`` and ``after`` hooks, the state gather, the compiled call): per stage its
p50, p99 and mean per bar, and its mean over the slowest 1% of bars, which says what the p99 is made of.

Targets (issues #8, #19): on_bar p99 <= 100 us; replay >= 20,000 bars/s without LLM layers.
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


def profile(gate, live) -> dict[str, dict[str, float]]:  # type: ignore[no-untyped-def]
    """Each stage of ``on_bar`` timed on its own call: the stage's method is wrapped by a timer on this gate only.
    Per stage: its time per bar (0 on a bar it does not run) at p50 and p99, its mean, and its mean over the
    slowest 1% of bars (by the whole ``on_bar``): what the tail is made of."""
    times: dict[str, list[tuple[int, int]]] = {}  # stage -> (bar, ns) per call
    bar = [0]

    def timed(name, fn):  # type: ignore[no-untyped-def]
        acc = times.setdefault(name, [])

        def w(*a, **k):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter_ns()
            try:
                return fn(*a, **k)
            finally:
                acc.append((bar[0], time.perf_counter_ns() - t0))

        return w

    gate.intake.check = timed("validate (intake.check)", gate.intake.check)
    gate._tx_save = timed("transaction copy (_tx_save)", gate._tx_save)
    gate.features.update = timed("features (FeatureEngine.update)", gate.features.update)
    if gate.ensemble is not None:
        gate.ensemble.predict_row = timed("L1 (compiled trees + calibration)", gate.ensemble.predict_row)
    for m in gate.modules:
        m.update = timed(f"update {m.name}", m.update)
        m.verdict = timed(f"verdict {m.name}", m.verdict)
    u = gate._updates
    if u is not None:  # the fused step and the unfused modules' update calls, together, and the fused step's parts
        u._prepares = [timed(f"  prepare {p.__self__.name}", p) for p in u._prepares]
        u._afters = [(j, timed(f"  after {a.__self__.name}", a)) for j, a in u._afters]
        u._state = timed("  state gather (generated attribute reads)", u._state)
        if u._step is not None:
            u._step = timed("  compiled step call", u._step)
        u.update = timed("module updates (fused step + the rest)", u.update)
    gate._run = timed("layer loop (_run, verdicts included)", gate._run)
    gate._decision = timed("Decision assembly (_decision)", gate._decision)
    total = times.setdefault("on_bar (whole, timed)", [])
    for i, b in enumerate(live):
        for m in gate.modules:
            m.settle()
        bar[0] = i
        t0 = time.perf_counter_ns()
        gate.on_bar(b)
        total.append((i, time.perf_counter_ns() - t0))
    n = len(live)
    per_bar = {}
    for k, v in times.items():
        a = np.zeros(n)
        for i, dt in v:
            a[i] += dt / 1e3
        per_bar[k] = a
    slow = np.argsort(per_bar["on_bar (whole, timed)"])[-max(1, n // 100) :]  # the slowest 1% of bars
    return {
        k: {
            "p50_us": float(np.percentile(a, 50)),
            "p99_us": float(np.percentile(a, 99)),
            "mean_us": float(a.mean()),
            "slowest_1pct_mean_us": float(a[slow].mean()),
            "calls": len(times[k]),
        }
        for k, a in per_bar.items()
        if times[k]
    }


def fused_vs_twins(cfg, ens, bars) -> dict:  # type: ignore[no-untyped-def]
    """Cheapest mode, live feed: a gate on the fused module step (engine/fused.py) and one calling every module's
    ``update`` (``fused=False``), bar by bar interleaved in one run; on_bar and the modules' update time each."""
    from fxgate.engine.gate import Gate

    res: dict = {}
    gates = {
        k: Gate(cfg, ens, timeframe=bars.timeframe, symbol=bars.symbol, fused=k == "fused") for k in ("fused", "twins")
    }
    upd: dict[str, list[int]] = {k: [] for k in gates}
    for k, g in gates.items():
        g.warm_up(bars[:2000])
        acc = upd[k]
        if g._updates is not None:
            inner = g._updates.update

            def w(ctx, inner=inner, acc=acc):  # type: ignore[no-untyped-def]
                t0 = time.perf_counter_ns()
                inner(ctx)
                acc.append(time.perf_counter_ns() - t0)

            g._updates.update = w
        else:  # the twins: one timer around the loop over the modules, through the last module's update
            ms = g.modules

            def first(ctx, f=ms[0].update, acc=acc):  # type: ignore[no-untyped-def]
                acc.append(-time.perf_counter_ns())
                f(ctx)

            def last(ctx, f=ms[-1].update, acc=acc):  # type: ignore[no-untyped-def]
                f(ctx)
                acc[-1] += time.perf_counter_ns()

            if len(ms) == 1:

                def both(ctx, f=ms[0].update, acc=acc):  # type: ignore[no-untyped-def]
                    t0 = time.perf_counter_ns()
                    f(ctx)
                    acc.append(time.perf_counter_ns() - t0)

                ms[0].update = both
            else:
                ms[0].update, ms[-1].update = first, last
        res[k] = {"n_fused": len(g._updates.fused) if g._updates is not None else 0}
    on: dict[str, list[int]] = {k: [] for k in gates}
    for b in bars[2000:]:
        for k, g in gates.items():
            for m in g.modules:
                m.settle()
            t0 = time.perf_counter_ns()
            g.on_bar(b)
            on[k].append(time.perf_counter_ns() - t0)
    for k in gates:
        res[k].update({"on_bar": pct(on[k]), "module_updates": pct(upd[k])})
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--profile", action="store_true", help="time each stage of a cheapest-mode live bar")
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
        for feed in ("replay", "replay_traced", "live"):
            if feed == "replay_traced" and mode != "cheapest":
                continue  # a full-mode gate already evaluates every verdict: its trace adds little
            gate = Gate(cfg, ens, timeframe=bars.timeframe, symbol=bars.symbol)
            gate.warm_up(bars[:2000])
            gate.trace = feed == "replay_traced"
            live = bars[2000:]
            ts: list[int] = []
            settle = [m.settle for m in gate.modules] if feed == "live" else []
            wall = 0.0
            for b in live:
                for f in settle:
                    f()
                t0 = time.perf_counter_ns()
                gate.on_bar(b)
                dt = time.perf_counter_ns() - t0
                ts.append(dt)
                wall += dt / 1e9
            # the per-bar transaction: the state copied before the updates (restored if one raises)
            snap: list[int] = []
            for _ in range(2000):
                t0 = time.perf_counter_ns()
                gate._tx_save()
                snap.append(time.perf_counter_ns() - t0)
            out["modes"][f"{mode}_{feed}"] = {
                **pct(ts),
                "bars": len(live),
                "bars_per_s": len(live) / wall,
                "snapshot_p50_us": float(np.percentile(snap, 50)) / 1e3,
            }
    out["fused_vs_twins"] = fused_vs_twins(GateConfig(spread=8e-5, **fast), ens, bars)
    if args.profile:
        gate = Gate(GateConfig(spread=8e-5, **fast), ens, timeframe=bars.timeframe, symbol=bars.symbol)
        gate.warm_up(bars[:2000])
        out["profile"] = profile(gate, bars[2000:])
        print(f"{'stage':<40}{'p50 us':>9}{'p99 us':>9}{'mean us':>9}{'slowest 1% mean':>17}")
        for k, v in out["profile"].items():
            print(
                f"{k:<40}{v['p50_us']:>9.1f}{v['p99_us']:>9.1f}{v['mean_us']:>9.1f}{v['slowest_1pct_mean_us']:>17.1f}"
            )
    c, r, rt = out["modes"]["cheapest_live"], out["modes"]["cheapest_replay"], out["modes"]["cheapest_replay_traced"]
    out["targets"] = {"on_bar_p99_us": 100, "replay_bars_per_s": 20000}
    out["met"] = {"on_bar_p99": c["p99_us"] <= 100, "replay_throughput": r["bars_per_s"] >= 20000}
    out["summary"] = [
        {
            "figure": "Gate.on_bar p99 (cheapest mode, live feed)",
            "ours": f"{c['p99_us']:.0f} us",
            "reference": "-",
            "ratio": "-",
            "target": "<= 100 us",
            "met": out["met"]["on_bar_p99"],
        },
        {
            "figure": "replay throughput (no LLM)",
            "ours": f"{r['bars_per_s']:,.0f} bars/s",
            "reference": "-",
            "ratio": "-",
            "target": ">= 20,000 bars/s",
            "met": out["met"]["replay_throughput"],
        },
        {
            "figure": "replay throughput, traced as fxgate replay runs it (no LLM)",
            "ours": f"{rt['bars_per_s']:,.0f} bars/s",
            "reference": "-",
            "ratio": "-",
            "target": "-",
            "met": "-",
        },
    ]
    out["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    print(f"{'mode':<26}{'p50 us':>9}{'p99 us':>9}{'bars/s':>10}{'snapshot p50 us':>17}")
    for mode, v in out["modes"].items():
        print(f"{mode:<26}{v['p50_us']:>9.1f}{v['p99_us']:>9.1f}{v['bars_per_s']:>10.0f}{v['snapshot_p50_us']:>17.1f}")
    fv = out["fused_vs_twins"]
    print("cheapest live, interleaved:  on_bar p50/p99 us   module updates p50/p99 us")
    for k, v in fv.items():
        o, u = v["on_bar"], v["module_updates"]
        row = f"{o['p50_us']:>7.1f} {o['p99_us']:>7.1f}   {u['p50_us']:>9.1f} {u['p99_us']:>7.1f}"
        print(f"  {k:<8}({v['n_fused']:>2} fused)  {row}")
    print("targets: on_bar p99 <= 100 us, replay >= 20,000 bars/s")
    write_json(args.json, out)


if __name__ == "__main__":
    main()
