"""Layer-1 trees per row against what a user would otherwise reach for, per model, in one run.

    python benchmarks/bench_trees.py [--rows 3000] [--rounds 4] [--repeat 3] [--bundle DIR] [--json PATH]

The Layer-1 boosters (XGBoost, LightGBM, CatBoost; 300 trees, depth 6, the 170 streaming features of the bundled
EURUSD H1 sample; ``--bundle DIR`` keeps the fitted bundle for the next run) are timed one row per call on the last
``--rows`` bars (varying rows), every call single-threaded:

* native: ``xgboost.Booster.inplace_predict`` (nthread 1), ``lightgbm.Booster.predict(num_threads=1)``,
  ``catboost.CatBoostClassifier.predict(thread_count=1, prediction_type="Probability")``;
* ours: the one-row kernel (:func:`fxgate.models.ensemble.row.l1_row`) built for that model alone, identity
  winsorizer and calibrator, so its output is the booster's raw P(up) like every other column;
* tl2cgen: the model imported by ``treelite`` and compiled by ``tl2cgen.export_lib`` with the machine's gcc
  (-O3 -march=native), ``Predictor(nthread=1).predict(DMatrix(row))``; ``tl2cgen_q`` the same with tl2cgen's own
  threshold quantization (``quantize=1``); ``*_dm`` columns time ``predict`` on a DMatrix built beforehand;
* ort: ONNX Runtime 1 thread (intra and inter op) on ``onnxmltools.convert_xgboost`` / ``convert_lightgbm``
  (``zipmap=False``) and CatBoost's own ONNX export (ZipMap node removed), float32 input;
* lleaves (LightGBM) if it compiles on the installed llvmlite (the error is recorded if not);
* ours, three models: ``TreeEnsemble.predict_row`` (winsorize + 3 models + calibration, one call) against the sum of
  the three native calls per bar.

Methods alternate in ``--rounds`` rounds over the rows (each on a chunk in its own loop, the order rotated per
round), the whole set ``--repeat`` times; ratios are taken within a repeat and reported as median [min, max] over
repeats. Outputs: max |P - native P| over every timed call. ``--stages`` adds where ours spends its time: each stage
called on its own per row (p50, minus an empty compiled call with the same arguments), and that call overhead.

Targets (issue #19): three models <= 30 us p50 and >= 20x native; ours faster than each other method on its own
models; outputs within 1e-6 of native.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numba
import numpy as np
from _common import write_json

from fxgate.models._trees import bin_row, quant_forest, quant_oblivious
from fxgate.models.ensemble.calibration import calibrate

MODELS = ("xgboost", "lightgbm", "catboost")


def pct(ns: list[int]) -> dict[str, float]:
    a = np.asarray(ns, dtype=np.float64) / 1000.0
    return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99)), "n": len(a)}


def load_models(bundle_dir: Path | None) -> Any:
    from fxgate.engine import sample_bars
    from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
    from fxgate.models.labels import LabelSpec

    if bundle_dir is not None and (bundle_dir / "manifest.json").exists():
        return TreeEnsemble.load(bundle_dir), 0.0
    ens = TreeEnsemble()
    t0 = time.perf_counter()
    cfg = EnsembleConfig(n_estimators=300, max_depth=6, folds=1, test_frac=0.1, quantiles=False)
    ens.fit(sample_bars(), LabelSpec("next", 1), cfg, evaluate=False)
    fit_s = time.perf_counter() - t0
    if bundle_dir is not None:
        ens.save(bundle_dir)
    return ens, fit_s


@numba.njit(cache=False, nogil=True)
def _ours_forest(z, binning, f):  # type: ignore[no-untyped-def]
    """One forest's raw P(up) on winsorized row ``z``: the three-model kernel's binning and walk, nothing else."""
    return 1.0 / (1.0 + math.exp(-quant_forest(bin_row(z, *binning), *f)))


@numba.njit(cache=False, nogil=True)
def _ours_oblivious(z, binning, f):  # type: ignore[no-untyped-def]
    return 1.0 / (1.0 + math.exp(-quant_oblivious(bin_row(z, *binning), *f)))


def ours_single(ens: Any, name: str) -> Callable[[np.ndarray], float]:
    """Ours for model ``name`` alone: its own bins (only its thresholds), its walk, the sigmoid (raw P(up))."""
    from fxgate.models._trees import FeatureBins, FlatForest
    from fxgate.models.ensemble.row import binned_forest_row, binned_oblivious_row

    m = ens.compiled[name]
    bins = FeatureBins.build([m])
    if isinstance(m, FlatForest):
        f, kern = tuple(binned_forest_row(bins.forest(m))), _ours_forest
    else:
        f, kern = tuple(binned_oblivious_row(bins.oblivious(m))), _ours_oblivious
    binning = bins.row_args()
    return lambda r: kern(r, binning, f)


def tl2cgen_methods(ens: Any, wins: np.ndarray, workdir: Path) -> tuple[dict[str, Callable], dict[str, Any]]:
    import tl2cgen
    import treelite

    meta: dict[str, Any] = {"treelite": treelite.__version__, "tl2cgen": tl2cgen.__version__, "compile_s": {}}
    methods: dict[str, Callable] = {}
    imported = {
        "xgboost": treelite.frontend.from_xgboost(ens.models["xgboost"]),
        "lightgbm": treelite.frontend.from_lightgbm(ens.models["lightgbm"]),
    }
    for name, tm in imported.items():
        for tag, params in (("tl2cgen", {"parallel_comp": 8}), ("tl2cgen_q", {"parallel_comp": 8, "quantize": 1})):
            lib = workdir / f"{name}_{tag}.so"
            t0 = time.perf_counter()
            tl2cgen.export_lib(
                tm, toolchain="gcc", libpath=lib, params=params, nthread=2, options=["-O3", "-march=native"]
            )
            meta["compile_s"][f"{name}/{tag}"] = time.perf_counter() - t0
            pred = tl2cgen.Predictor(lib, nthread=1)
            dms = [tl2cgen.DMatrix(wins[i : i + 1]) for i in range(len(wins))]
            methods[f"{name}/{tag}"] = lambda r, p=pred: float(p.predict(tl2cgen.DMatrix(r)).ravel()[0])
            methods[f"{name}/{tag}_dm"] = lambda i, p=pred, d=dms: float(p.predict(d[i]).ravel()[0])
    return methods, meta


def _strip_zipmap(model: Any) -> Any:
    """Drop a trailing ZipMap so that the probabilities come back as a tensor (the map costs per call)."""
    import onnx

    g = model.graph
    for node in list(g.node):
        if node.op_type == "ZipMap":
            src = node.input[0]
            g.node.remove(node)
            for o in list(g.output):
                if o.name == node.output[0]:
                    g.output.remove(o)
            g.output.append(onnx.helper.make_tensor_value_info(src, onnx.TensorProto.FLOAT, None))
    return model


def ort_methods(ens: Any, nf: int, workdir: Path) -> tuple[dict[str, Callable], dict[str, Any]]:
    import onnx
    import onnxmltools
    import onnxruntime as ort
    from onnxmltools.convert.common.data_types import FloatTensorType

    types = [("input", FloatTensorType([None, nf]))]
    cbp = workdir / "catboost.onnx"
    ens.models["catboost"].save_model(str(cbp), format="onnx")
    protos = {
        "xgboost": onnxmltools.convert_xgboost(ens.models["xgboost"], initial_types=types),
        "lightgbm": onnxmltools.convert_lightgbm(ens.models["lightgbm"], initial_types=types, zipmap=False),
        "catboost": _strip_zipmap(onnx.load(str(cbp))),
    }
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    methods: dict[str, Callable] = {}
    for name, proto in protos.items():
        sess = ort.InferenceSession(_strip_zipmap(proto).SerializeToString(), so, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0].name
        outp = [o.name for o in sess.get_outputs() if "prob" in o.name.lower()] or [sess.get_outputs()[-1].name]

        def run(r: np.ndarray, s: Any = sess, i: str = inp, o: list[str] = outp) -> float:
            return float(np.asarray(s.run(o, {i: r.astype(np.float32)})[0]).reshape(-1)[-1])

        methods[f"{name}/ort"] = run
    return methods, {"onnxruntime": ort.__version__, "onnxmltools": onnxmltools.__version__}


def lleaves_methods(ens: Any, workdir: Path) -> tuple[dict[str, Callable], dict[str, Any]]:
    import llvmlite

    meta: dict[str, Any] = {"llvmlite": llvmlite.__version__}
    try:
        import lleaves

        meta["lleaves"] = getattr(lleaves, "__version__", "?")
        path = workdir / "lightgbm.txt"
        ens.models["lightgbm"].save_model(str(path))
        m = lleaves.Model(model_file=str(path))
        m.compile()
    except Exception as exc:  # noqa: BLE001  (the failure is the finding: lleaves 1.3 on llvmlite >= 0.45)
        meta["error"] = f"{type(exc).__name__}: {exc}"
        meta["where"] = traceback.format_exc().strip().splitlines()[-3].strip()
        return {}, meta
    return {"lightgbm/lleaves": lambda r: float(m.predict(r, n_jobs=1)[0])}, meta


@numba.njit(cache=False, nogil=True)
def _st_winsor(x, lo, hi):  # type: ignore[no-untyped-def]
    z = np.empty(len(x))
    for i in range(len(x)):
        v = x[i]
        z[i] = v if np.isnan(v) else min(max(v, lo[i]), hi[i])
    return z[0]


@numba.njit(cache=False, nogil=True)
def _st_winsor_t(x, a):  # type: ignore[no-untyped-def]
    return _st_winsor(x, *a)


@numba.njit(cache=False, nogil=True)
def _st_bins(z, binning):  # type: ignore[no-untyped-def]
    return bin_row(z, *binning)[0]


@numba.njit(cache=False, nogil=True)
def _st_forest(bins, f):  # type: ignore[no-untyped-def]
    return quant_forest(bins, *f)


@numba.njit(cache=False, nogil=True)
def _st_oblivious(bins, f):  # type: ignore[no-untyped-def]
    return quant_oblivious(bins, *f)


@numba.njit(cache=False, nogil=True)
def _st_calibrate(p, c):  # type: ignore[no-untyped-def]
    return calibrate(p, *c)


@numba.njit(cache=False, nogil=True)
def _st_noop(z, a):  # type: ignore[no-untyped-def]
    return z[0]


@numba.njit(cache=False, nogil=True)
def _st_noop_scalar(p, a):  # type: ignore[no-untyped-def]
    return p


def _stages(ens: Any, rows: np.ndarray) -> dict[str, float]:
    """p50 ns per row of each stage of the three-model kernel, each called on its own per row, minus the p50 of an
    empty compiled call with the same arguments (the call overhead, reported on its own)."""
    lo, hi, binning, forests, oblivious, calibration = ens._row_args
    z = ens.winsor.transform(rows)
    bins = [bin_row(r, *binning) for r in z]
    p = [0.5 + 0.4 * np.sin(i) for i in range(len(rows))]

    def p50(fn: Callable, arg_of: Callable[[int], Any], extra: Any) -> float:
        fn(arg_of(0), extra)
        ts = []
        for i in range(len(rows)):
            a = arg_of(i)
            s = time.perf_counter_ns()
            fn(a, extra)
            ts.append(time.perf_counter_ns() - s)
        return float(np.percentile(ts, 50))

    res: dict[str, float] = {}
    res["call overhead (empty call, same arguments)"] = p50(_st_noop, lambda i: rows[i], ens._row_args)
    base2 = p50(_st_noop, lambda i: rows[i], (lo, hi))
    res["winsorize"] = p50(_st_winsor_t, lambda i: rows[i], (lo, hi)) - base2
    res["binning"] = p50(_st_bins, lambda i: z[i], binning) - p50(_st_noop, lambda i: z[i], binning)
    for k, f in enumerate(forests):
        res[f"walk {MODELS[k]}"] = p50(_st_forest, lambda i: bins[i], f) - p50(_st_noop, lambda i: bins[i], f)
    for k, f in enumerate(oblivious):
        name = MODELS[len(forests) + k]
        res[f"walk {name}"] = p50(_st_oblivious, lambda i: bins[i], f) - p50(_st_noop, lambda i: bins[i], f)
    res["calibration (3)"] = sum(
        p50(_st_calibrate, lambda i: p[i], c) - p50(_st_noop_scalar, lambda i: p[i], c) for c in calibration
    )
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=3000, help="bars to time predictions on")
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds per repeat")
    ap.add_argument("--repeat", type=int, default=3, help="repeats of the whole alternation (ratios per repeat)")
    ap.add_argument("--bundle", type=Path, default=None, help="keep/reuse the fitted bundle here")
    ap.add_argument("--stages", action="store_true", help="also time ours stage by stage")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import catboost
    import lightgbm
    import xgboost

    from fxgate.models.features import FeatureEngine

    load_start = os.getloadavg()
    ens, fit_s = load_models(args.bundle)
    from fxgate.engine import sample_bars

    bars = sample_bars()
    x = FeatureEngine(bars.timeframe).batch(bars)
    rows = np.ascontiguousarray(x[len(x) - args.rows :])
    wins = np.ascontiguousarray(ens.winsor.transform(rows))
    nf = rows.shape[1]
    xb, lb, cb = ens.models["xgboost"], ens.models["lightgbm"], ens.models["catboost"]
    xb.set_param({"nthread": 1})
    methods: dict[str, Callable] = {
        "xgboost/native": lambda r: float(xb.inplace_predict(r, predict_type="value")[0]),
        "lightgbm/native": lambda r: float(lb.predict(r, num_threads=1)[0]),
        "catboost/native": lambda r: float(cb.predict(r, thread_count=1, prediction_type="Probability")[0, 1]),
    }
    for m in MODELS:
        methods[f"{m}/ours"] = ours_single(ens, m)
    meta: dict[str, Any] = {}
    workdir = Path(tempfile.mkdtemp(prefix="bench_trees_"))
    for fn in (lambda: tl2cgen_methods(ens, wins, workdir), lambda: ort_methods(ens, nf, workdir)):
        more, info = fn()
        methods.update(more)
        meta.update(info)
    more, meta["lleaves"] = lleaves_methods(ens, workdir)
    methods.update(more)
    three = "three/ours"  # raw rows: winsorizes inside
    p3 = np.empty(3)

    def ours_three(r: np.ndarray) -> float:
        p3[:] = ens.predict_row(r)
        return p3[0]

    methods[three] = ours_three
    # reference outputs: native batch on the winsorized rows (raw P(up)); the three-model path is checked against
    # the calibrated native batch
    ref = {
        "xgboost": xb.inplace_predict(wins, predict_type="value"),
        "lightgbm": lb.predict(wins, num_threads=1),
        "catboost": cb.predict_proba(wins, thread_count=1)[:, 1],
    }
    ref3 = ens.predict_proba(rows, native=True)

    def arg(name: str, i: int) -> Any:
        """Each method's input for row ``i``: ours a 1-D row (three models: the raw row), the prebuilt-DMatrix
        columns the index, the libraries a (1, n) array."""
        if name == three:
            return rows[i]
        if name.endswith("_dm"):
            return i
        return wins[i] if name.endswith("/ours") else wins[i : i + 1]

    for name, f in methods.items():  # warm-up (compiles, caches)
        f(arg(name, 0))
    names = list(methods)
    times: list[dict[str, list[int]]] = []
    err: dict[str, float] = {n: 0.0 for n in names}
    loads = [load_start]
    per = len(rows) // args.rounds
    for _rep in range(args.repeat):
        t: dict[str, list[int]] = {n: [] for n in names}
        for k in range(args.rounds):
            chunk = range(k * per, (k + 1) * per)
            order = names[k % len(names) :] + names[: k % len(names)]
            for name in order:
                f, acc, e = methods[name], t[name], 0.0
                model = name.split("/")[0]
                for i in chunk:
                    a = arg(name, i)
                    s = time.perf_counter_ns()
                    v = f(a)
                    acc.append(time.perf_counter_ns() - s)
                    if name == three:
                        e = max(e, float(np.max(np.abs(p3 - ref3[i]))))
                    else:
                        e = max(e, float(abs(v - ref[model][i])))
                err[name] = max(err[name], e)
        times.append(t)
        loads.append(os.getloadavg())
    # per repeat: p50/p99 of each method, ratios theirs/ours within the repeat
    reps = [{n: pct(v) for n, v in t.items()} for t in times]
    for rep, t in zip(reps, times, strict=True):
        nat = [
            a + b + c for a, b, c in zip(t["xgboost/native"], t["lightgbm/native"], t["catboost/native"], strict=True)
        ]
        rep["three/native"] = pct(nat)
    summary_rows = []
    ratio: dict[str, dict[str, float]] = {}
    for name in [*names, "three/native"]:
        model, how = name.split("/")
        if how == "ours":
            continue
        ours_name = f"{model}/ours"
        rs = [rep[name]["p50_us"] / rep[ours_name]["p50_us"] for rep in reps]
        ratio[name] = {"median": float(np.median(rs)), "min": float(min(rs)), "max": float(max(rs))}
    lat = {
        n: {
            "p50_us": float(np.median([r[n]["p50_us"] for r in reps])),
            "p99_us": float(np.median([r[n]["p99_us"] for r in reps])),
            "p50_us_range": [float(min(r[n]["p50_us"] for r in reps)), float(max(r[n]["p50_us"] for r in reps))],
        }
        for n in reps[0]
    }
    print(f"load average (1, 5, 15 min) at start {load_start}, after each repeat {loads[1:]}")
    print(f"{'method':<26}{'p50 us':>9}{'p99 us':>9}  {'p50 range':<16}{'theirs/ours p50':>18}  {'max|dP|':>9}")
    for n in [*names, "three/native"]:
        r = ratio.get(n)
        rtxt = f"{r['median']:.1f}x [{r['min']:.1f}, {r['max']:.1f}]" if r else "-"
        lo_, hi_ = lat[n]["p50_us_range"]
        e = f"{err[n]:.1e}" if n in err else "-"
        print(
            f"{n:<26}{lat[n]['p50_us']:>9.1f}{lat[n]['p99_us']:>9.1f}  {f'{lo_:.1f}-{hi_:.1f}':<16}{rtxt:>18}  {e:>9}"
        )
        model, how = n.split("/")
        if how != "ours":
            summary_rows.append(
                {
                    "figure": f"{model}: ours vs {how} (p50, one row)",
                    "ours": f"{lat[f'{model}/ours']['p50_us']:.1f} us",
                    "reference": f"{lat[n]['p50_us']:.1f} us",
                    "ratio": f"{r['median']:.1f}x" if r else "-",
                    "target": ">= 20x" if n == "three/native" else "> 1x",
                    "met": bool(r and r["min"] >= (20 if n == "three/native" else 1)),
                }
            )
    if meta["lleaves"].get("error"):
        print(
            f"lleaves: {meta['lleaves']['error']} ({meta['lleaves']['where']}; llvmlite {meta['lleaves']['llvmlite']})"
        )
    stages = _stages(ens, rows) if args.stages else None
    if stages:
        stages["the whole call (p50, this run)"] = lat[three]["p50_us"] * 1000
        print("ours, three models, per stage (p50 ns per row, each stage called on its own, call overhead removed):")
        for k, v in stages.items():
            print(f"  {k:<44}{v:>8.0f}")
    three_ok = lat[three]["p50_us"] <= 30 and ratio["three/native"]["min"] >= 20
    out = {
        "benchmark": "trees",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "model": {"trees": 300, "depth": 6, "features": nf, "fit_seconds": fit_s},
        "rows": len(rows),
        "rounds": args.rounds,
        "repeat": args.repeat,
        "latency": lat,
        "per_repeat": reps,
        "ratio_theirs_over_ours_p50": ratio,
        "max_abs_diff_vs_native": err,
        "stages_ns_per_row": stages,
        "loadavg": loads,
        "targets": {"three_p50_us": 30, "three_ratio": 20, "each_ratio": 1, "max_abs_diff": 1e-6},
        "met": {
            "three": three_ok,
            "faster_than_each": all(v["min"] > 1 for k, v in ratio.items() if k != "three/native"),
        },
        "libraries": meta,
        "summary": summary_rows,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "numba": numba.__version__,
            "xgboost": xgboost.__version__,
            "lightgbm": lightgbm.__version__,
            "catboost": catboost.__version__,
        },
    }
    write_json(args.json, out)


if __name__ == "__main__":
    main()
