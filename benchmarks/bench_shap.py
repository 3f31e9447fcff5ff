"""TreeSHAP per row: fxgate's exact TreeSHAP on the compiled trees against each library's own, in one run.

    python benchmarks/bench_shap.py [--rows 300] [--rounds 3] [--json PATH]

The Layer-1 boosters (300 trees, depth 6, the 170 streaming features; fitted on the first 2,000 bars of the bundled
EURUSD H1 sample, as bench_gate does) explain one winsorized row per call on ``--rows`` varying bars after them,
single-threaded, methods alternating by round:

* native: XGBoost ``predict(pred_contribs=True)``, LightGBM ``predict(pred_contrib=True)``, CatBoost
  ``get_feature_importance(type="ShapValues")`` (the adapters' ``explain``, each with its margin call);
* ours: :func:`fxgate.models._treeshap.tree_shap` (CatBoost's leaf-index table, the other two leaf by leaf from
  their flattened paths); ours, walk: the same with ``walk=True`` (the tree walk);
* three models: ``TreeEnsemble.explain`` (what the SHAP module calls: ours and the float64 margins) against
  ``TreeEnsemble.explain_native``.

Also: each model's layout build time (``shap_trees``, what ``TreeEnsemble.prepare_explain`` runs) and size, and
max |ours − native| over every 10th row.
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


def pct(ns: list[int]) -> dict[str, float]:
    a = np.asarray(ns, dtype=np.float64) / 1000.0
    return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99)), "n": len(a)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from fxgate.engine import sample_bars
    from fxgate.models._treeshap import shap_trees, tree_shap
    from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
    from fxgate.models.ensemble.boosters import ADAPTERS
    from fxgate.models.features import FeatureEngine
    from fxgate.models.labels import LabelSpec

    bars = sample_bars()
    ens = TreeEnsemble()
    ens.fit(bars[:2000], LabelSpec("next", 1, default_spread=8e-5), EnsembleConfig(), evaluate=False)
    x = FeatureEngine(bars.timeframe).batch(bars)[2000 : 2000 + args.rows]
    z = ens.winsor.transform(x)
    out: dict = {"benchmark": "shap", "date": datetime.now(UTC).strftime("%Y-%m-%d"), "models": {}}
    layouts = {}
    for a in ADAPTERS:
        t0 = time.perf_counter()
        t = shap_trees(ens.compiled[a.name])
        build = time.perf_counter() - t0
        layouts[a.name] = t
        arrays = [v for v in vars(t).values() if isinstance(v, np.ndarray)]
        if t.leaves is not None:
            arrays += list(vars(t.leaves).values())
        size = sum(a.nbytes for a in arrays)  # the binary form, its table or leaf paths (shared dump arrays too)
        out["models"][a.name] = {"build_s": build, "layout_mb": size / 2**20, "max_abs_diff_vs_native": 0.0}
    ens.explain(x[0])  # the ensemble's own layouts (built once), and every kernel compiled
    for a in ADAPTERS:
        tree_shap(layouts[a.name], z[0])
        tree_shap(layouts[a.name], z[0], walk=True)

    methods = {}
    for a in ADAPTERS:
        t, model = layouts[a.name], ens.models[a.name]
        methods[f"{a.name}/ours"] = lambda i, t=t: tree_shap(t, z[i])
        methods[f"{a.name}/walk"] = lambda i, t=t: tree_shap(t, z[i], walk=True)
        methods[f"{a.name}/native"] = lambda i, a=a, model=model: a.explain(model, z[i]).phi
    methods["three/ours"] = lambda i: ens.explain(x[i])
    methods["three/native"] = lambda i: ens.explain_native(x[i])
    times: dict[str, list[int]] = {k: [] for k in methods}
    names = list(methods)
    for rnd in range(args.rounds):
        order = names[rnd % len(names) :] + names[: rnd % len(names)]
        for name in order:
            fn, acc = methods[name], times[name]
            for i in range(len(z)):
                t0 = time.perf_counter_ns()
                fn(i)
                acc.append(time.perf_counter_ns() - t0)
    for a in ADAPTERS:
        m = out["models"][a.name]
        m["max_abs_diff_vs_native"] = max(
            float(np.abs(tree_shap(layouts[a.name], z[i]) - a.explain(ens.models[a.name], z[i]).phi).max())
            for i in range(0, len(z), 10)
        )
        for way in ("ours", "walk", "native"):
            m[way] = pct(times[f"{a.name}/{way}"])
        m["native_over_ours_p50"] = m["native"]["p50_us"] / m["ours"]["p50_us"]
    three = {"ours": pct(times["three/ours"]), "native": pct(times["three/native"])}
    three["native_over_ours_p50"] = three["native"]["p50_us"] / three["ours"]["p50_us"]
    out["three"] = three

    print(
        f"{'model':<10}{'ours p50/p99 us':>18}{'walk p50 us':>13}{'native p50/p99 us':>20}{'ratio':>8}"
        f"{'build s':>9}{'MB':>7}{'max|d|':>10}"
    )
    for name, m in out["models"].items():
        print(
            f"{name:<10}{m['ours']['p50_us']:>9.1f}/{m['ours']['p99_us']:<8.1f}{m['walk']['p50_us']:>13.1f}"
            f"{m['native']['p50_us']:>11.1f}/{m['native']['p99_us']:<8.1f}{m['native_over_ours_p50']:>7.1f}x"
            f"{m['build_s']:>9.2f}{m['layout_mb']:>7.1f}{m['max_abs_diff_vs_native']:>10.1e}"
        )
    print(
        f"three (TreeEnsemble.explain): ours {three['ours']['p50_us']:.0f} us p50 (p99 {three['ours']['p99_us']:.0f}),"
        f" native {three['native']['p50_us']:.0f} us: {three['native_over_ours_p50']:.1f}x"
    )
    out["summary"] = [
        {
            "figure": "SHAP, three models, one row (TreeEnsemble.explain, p50)",
            "ours": f"{three['ours']['p50_us']:.0f} us",
            "reference": f"{three['native']['p50_us']:.0f} us (each library's own TreeSHAP)",
            "ratio": f"{three['native_over_ours_p50']:.1f}x",
            "target": "-",
            "met": "-",
        }
    ]
    out["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    write_json(args.json, out)


if __name__ == "__main__":
    main()
