"""Replay: the live ``Gate.on_bar`` loop run over history — there is no separate vectorized backtest.

Walk-forward by default: the first ``replay.train_bars`` bars warm the gate's state and train the first Layer-1
fit; then, window by window (``replay.window_bars``), the ensemble is refit on every bar strictly before the
window (labels that would need a bar inside the window are invalid at fit time, so nothing from the window leaks
in) and the window is replayed bar by bar. A module that detects drift (``refit_recommended``: double_adapt) is
recorded in ``metrics.json`` (``drift.episodes``: the first bar of each flagged stretch); with ``[replay]
refit_on_drift = true`` the ensemble is also refit right after the flagged bar, on every bar up to it, at most once
per ``refit_min_bars`` bars, and ``refits`` says why each fit happened ("scheduled" or "drift: <modules>").
With ``[certify] target`` > 0, ``metrics.json`` also holds ``certification``: for each window, the thresholds
certified on the ``calibration_bars`` before it (models fitted before that block), the realized precision they had
on the window with its Wilson interval and base rate, and in how many windows the guarantee held
(:func:`fxgate.engine.calibrate.certify_walk_forward`).

With a given bundle (``replay(bars, cfg, bundle=...)``, ``fxgate replay --bundle``) the bundle is checked first and
refused, with the fix, when

* its symbol or timeframe is not the data's, or its label horizon is not the config's ``horizon`` (its
  probabilities would answer another question than the one the trades and outcome modules score);
* any bar of the data lies at or before the end of its training labels (``last_label_end_ts``, the last bar any
  training label looked at). Such a bar was either learned from or precedes bars that were — a model fitted on
  2021 "predicting" 2020 knows 2020's future — so scoring it is not out of sample. A trader who hands fxgate a
  file and a bundle expects every bar of the file to be replayed and scored; silently starting later would report
  figures on fewer bars than asked. So a partial overlap is refused too, unless the caller asks for it
  explicitly with ``skip_trained_bars=True``: the overlapping bars then only warm the gate's state (the bundle
  is not loaded for them), scoring starts at the first bar after ``last_label_end_ts``, and ``metrics.json``
  records how many were skipped (``bundle.skipped_trained_bars``). A bundle that covers the whole file is refused
  either way.

Pre-fitted models and timings (issue #19): every scheduled fit depends only on ``bars[:k]`` and the config, never
on the gate's state, so :func:`fit_schedule` lists them up front (each window's start, and with ``[certify] target`` >
0 each calibration block's start) and :func:`fit_window` makes one. ``replay(models=...)`` takes such fits made
elsewhere (``fxgate replay --executor ray`` fits every window of every file as its own Ray task) and replays with
them instead of fitting; the outputs are the same, since a fit is the same model wherever it ran (its
``bundle_hash`` in ``metrics.json`` ``refits`` says so). Drift-triggered refits (``refit_on_drift``) cannot be
scheduled: they are fitted inside the replay. ``replay(timings={})`` fills the dict with the seconds of every fit
and of the bar loop (``fxgate replay`` writes it into run.json): seconds differ between any two runs, so they are
kept out of ``metrics.json``, which is the same for the same bars and config.

Trades and figures: :mod:`fxgate.engine.metrics`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fxgate.engine.calibrate import METHOD, certify_walk_forward, fit_before, summary
from fxgate.engine.config import GateConfig
from fxgate.engine.core.atomic import atomic_path, write_text
from fxgate.engine.core.bars import Bars
from fxgate.engine.core.decision import Decision
from fxgate.engine.core.errors import FxgateError
from fxgate.engine.gate import Gate
from fxgate.engine.metrics import TRADE_COLUMNS, metrics_from, trades_from
from fxgate.engine.trace import LayerTrace, TraceBuilder
from fxgate.models._stats import strict_dumps
from fxgate.models.ensemble import TreeEnsemble

__all__ = [
    "replay",
    "ReplayResult",
    "check_bundle",
    "fit_schedule",
    "fit_window",
]


@dataclass
class ReplayResult:
    bars: Bars
    start: int  # index of the first replayed bar
    decisions: list[Decision]
    trades: list[dict[str, Any]]
    metrics: dict[str, Any]
    interrupted: bool = False
    fits: list[dict[str, Any]] = field(default_factory=list)
    ensemble: Any = None  # the Layer-1 models of the last window
    horizon: int = 1  # the config's horizon: what trades, metrics and the report's charts score
    #: every fast layer's verdict alone on every replayed bar (engine/trace.py); None with ``trace=False``
    trace: LayerTrace | None = None
    #: seconds of every fit and of the bar loop (see :func:`replay`'s ``timings``); never in ``metrics``
    timings: dict[str, Any] = field(default_factory=dict)


def _window_starts(n: int, cfg: GateConfig) -> list[int]:
    return list(range(cfg.replay.train_bars, n, cfg.replay.window_bars))


def _calibration_starts(n: int, cfg: GateConfig) -> list[int]:
    """The first bar of each window's ``[certify] calibration_bars`` block (as certify_walk_forward skips them: a
    block that leaves fewer than 100 bars before it is not certified)."""
    if cfg.certify.target <= 0:
        return []
    return [a - cfg.certify.calibration_bars for a in _window_starts(n, cfg) if a - cfg.certify.calibration_bars >= 100]


def fit_schedule(n: int, cfg: GateConfig) -> list[int]:
    """Every ``k`` that a walk-forward replay of ``n`` bars fits Layer 1 on ``bars[:k]`` for, known before it
    starts: each window's first bar and, with ``[certify] target`` > 0, each calibration block's first bar (sorted,
    each once: a block that starts where a window does shares its fit). Drift-triggered refits are not in it."""
    return sorted(set(_window_starts(n, cfg)) | set(_calibration_starts(n, cfg)))


def fit_window(bars: Bars, cfg: GateConfig, k: int) -> tuple[TreeEnsemble, float]:
    """The walk-forward fit on ``bars[:k]`` (the same model wherever it runs) and the seconds it took."""
    t0 = time.perf_counter()
    ens = fit_before(bars, cfg, k)
    return ens, time.perf_counter() - t0


def check_bundle(bundle: Any, bars: Bars, cfg: GateConfig, *, skip_trained_bars: bool = False) -> int:
    """Refuse a bundle that does not fit ``bars`` and ``cfg`` (see the module docstring); return the index of the
    first bar to replay (0, or with ``skip_trained_bars`` the first bar after the bundle's training labels)."""
    where = f"bundle {bundle.directory}" if getattr(bundle, "directory", None) else "the bundle"
    bs, ds = (bundle.symbol or "").upper(), (bars.symbol or "").upper()
    if bs and ds and bs != ds:
        raise FxgateError(
            f"{where} was fitted on {bundle.symbol} bars; this data is {bars.symbol}. Fix: fit a "
            f"bundle on {bars.symbol} (`fxgate fit --data FILE`), or replay {bundle.symbol} "
            "data"
        )
    if bundle.timeframe and bundle.timeframe != bars.timeframe:
        raise FxgateError(
            f"{where} was fitted on {bundle.timeframe} bars; this data is {bars.timeframe}. Fix: fit "
            f"a bundle on {bars.timeframe} bars, or resample the data to {bundle.timeframe} "
            f"(`fxgate data convert --to {bundle.timeframe}`)"
        )
    bh = int(bundle.label_spec.horizon)
    if bh != cfg.horizon:
        raise FxgateError(
            f"{where}'s labels look {bh} bar(s) ahead (label_spec.horizon = {bh}); the config's "
            f"horizon is {cfg.horizon}, so trades and outcome modules would score another question "
            f"than the one the models answer. Fix: set horizon = {bh} in the config, or refit the "
            f"bundle with `fxgate fit --horizon {cfg.horizon}`"
        )
    win = bundle.manifest["training_window"]
    first, last = int(win["first_ts"]), int(win["last_label_end_ts"])
    k = int(np.searchsorted(bars.ts, last, side="right"))  # data bars at or before the last bar a label saw

    def t(x: int) -> str:
        return str(np.datetime64(x, "ns"))[:16] + "Z"

    trained = f"{where} was trained on bars {t(first)} .. {t(last)} (the last bar its labels looked at)"
    if k >= len(bars):
        raise FxgateError(
            f"{trained}, the end of this data ({t(int(bars.ts[-1]))}): nothing out of sample is left "
            "to replay. Fix: replay later bars or refit on earlier ones"
        )
    if k and not skip_trained_bars:
        raise FxgateError(
            f"{trained}; {k} of this data's {len(bars)} bars ({t(int(bars.ts[0]))} .. "
            f"{t(int(bars.ts[k - 1]))}) are at or before that: the model learned from them, or from "
            "bars after them, so scoring them is not out of sample. Fix: replay only bars after "
            f"{t(last)}, refit the bundle on bars before {t(int(bars.ts[0]))}, or ask to skip them "
            "(`fxgate replay --skip-trained-bars`, `replay(..., skip_trained_bars=True)`): they then "
            "only warm the gate's state and the replay starts at "
            f"{t(int(bars.ts[k]))}"
        )
    return k


def replay(
    bars: Bars,
    cfg: GateConfig,
    *,
    bundle: Any = None,
    skip_trained_bars: bool = False,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    fit_progress: Callable[[str], None] | None = None,
    trace: bool = True,
    models: Mapping[int, Any] | None = None,
    fit_times: Mapping[int, tuple[float, str]] | None = None,
    timings: dict[str, Any] | None = None,
) -> ReplayResult:
    """Run ``Gate.on_bar`` over ``bars`` (see the module docstring for the bundle checks and
    ``skip_trained_bars``). With ``trace`` (the default) every module's verdict is also evaluated alone on every
    replayed bar (``ReplayResult.trace``, engine/trace.py); the Decisions are the same either way.

    ``models``: pre-fitted walk-forward fits, ``models[k]`` the :func:`fit_window` fit on ``bars[:k]`` for ``k`` in
    :func:`fit_schedule`; any ``k`` missing is fitted here. Looking one up may wait for it (a lazy mapping of Ray
    results); a mapping that gives None because the run was stopped meanwhile stops the replay there.
    ``fit_times[k]``, read after ``models[k]``: how many seconds that fit took, and where it ran. ``timings``: a dict
    filled with ``refits`` (one entry per fit: ``bars``, ``reason``, ``seconds``, ``where``), ``refit_seconds``,
    ``replayed_bars``, ``bar_seconds`` (the bar loop without the fits) and ``bars_per_second`` (also in
    ``ReplayResult.timings``)."""
    n = len(bars)
    pre: Mapping[int, Any] = models if models is not None else {}
    took: Mapping[int, tuple[float, str]] = fit_times if fit_times is not None else {}
    timing: dict[str, Any] = timings if timings is not None else {}
    timing.clear()
    fit_log: list[dict[str, Any]] = []
    bar_seconds = 0.0
    here = f"this process ({socket.gethostname()})"
    rc = cfg.replay
    fits: list[dict[str, Any]] = []
    if bundle is not None:
        start = check_bundle(bundle, bars, cfg, skip_trained_bars=skip_trained_bars)
        windows = [(start, n, bundle)]
    else:
        start = rc.train_bars
        if start + 10 > n:
            raise FxgateError(
                f"{n} bars: need more than replay.train_bars = {rc.train_bars} to replay anything. "
                "Fix: lower [replay] train_bars or give a longer file"
            )
        edges = _window_starts(n, cfg) + [n]
        windows = [(a, b, None) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    refit_at: dict[int, tuple[str, ...]] = {}  # window start -> the modules whose drift flag started it
    # k -> the walk-forward fit on bars[:k], kept only where the certification check reuses it
    cert_starts = set(_calibration_starts(n, cfg)) if bundle is None else set()
    kept: dict[int, Any] = {}

    def get_fit(k: int, say: str) -> Any:
        """The fit on bars[:k]: pre-fitted, or made here (timed either way); None: the pre-fit was stopped."""
        if k in pre:
            ens = pre[k]
            secs, where = took.get(k, (None, "pre-fitted"))
        else:
            if fit_progress:
                fit_progress(say)
            ens, secs = fit_window(bars, cfg, k)
            where = here
        if ens is not None:
            fit_log.append({"bars": k, "seconds": secs, "where": where})
        return ens

    gate = Gate(cfg, None, timeframe=bars.timeframe, symbol=bars.symbol)
    gate.warm_up()
    tracer = TraceBuilder(tuple(m.name for m in gate.modules)) if trace else None
    decisions: list[Decision] = []
    interrupted = False
    stop = should_stop or (lambda: False)
    if fit_progress and start:
        fit_progress(f"warming the gate's state on the first {start} bars (history: not scored)")
    for i, b in enumerate(bars[:start]):
        gate.on_bar(b)  # warm the state; these bars are history, not results (not traced)
        if i % 250 == 249 and stop():  # a signal during a long warm-up is answered within 250 bars
            interrupted = True
            break
    if interrupted or stop():
        windows, interrupted = [], True
    ens = None
    drift: list[dict[str, Any]] = []  # bars on which a module recommended a refit (the first of each episode)
    flagged = False
    k = 0
    while k < len(windows) and not interrupted:
        a, b, ens = windows[k]
        k += 1
        if ens is None:
            if stop():  # not after a refit that can take minutes
                interrupted = True
                break
            why = a in refit_at and f"drift: {', '.join(refit_at[a])}"
            say = f"fitting Layer 1 on bars 0..{a - 1} for bars {a}..{b - 1}" + (f" ({why})" if why else "")
            ens = get_fit(a, say)
            if ens is None:  # a pre-fit that the stop signal cancelled
                interrupted = True
                break
            fit_log[-1]["reason"] = why or "scheduled"
            if a in cert_starts:
                kept[a] = ens
            fits.append(
                {
                    "window_start_ts": int(bars.ts[a]),
                    "trained_until_ts": int(bars.ts[a - 1]),
                    "bundle_hash": ens.bundle_hash[:16],
                    "reason": why or "scheduled",
                }
            )
        gate.set_ensemble(ens)
        gate.trace = tracer is not None
        t_loop = time.perf_counter()
        for i in range(a, b):
            rec = gate.evaluate(bars[i])
            decisions.append(rec.decision)
            if tracer is not None:
                tracer.add(rec)
            if progress and (i - start) % 250 == 0:
                progress(i - start, n - start)
            if stop():
                interrupted = True
                break
            names = gate.refit_recommended
            if names and not flagged:
                drift.append({"ts": int(bars.ts[i]), "modules": list(names)})
            flagged = bool(names)
            # walk-forward only: refit now on every bar so far (labels reaching past bar i are invalid at fit
            # time), and the rest of this window is replayed with the new fit
            if names and rc.refit_on_drift and bundle is None and i + 1 < b and i + 1 - a >= rc.refit_min_bars:
                refit_at[i + 1] = names
                windows.insert(k, (i + 1, b, None))
                break
        bar_seconds += time.perf_counter() - t_loop
    metrics_drift = {"episodes": drift, "refit_on_drift": rc.refit_on_drift}
    trades = trades_from(bars, start, decisions, cfg)
    metrics = metrics_from(bars, start, decisions, trades, cfg)
    metrics["interrupted"] = interrupted
    metrics["refits"] = fits
    metrics["drift"] = metrics_drift
    metrics["warmup_bars"] = start
    metrics["costs"] = {"spread_from": "file" if bars.spread is not None else "config", "config_spread": cfg.spread}
    if bars.spread is None and cfg.spread == 0:
        metrics["costs"]["warning"] = (
            "no spread column and the config's spread = 0: every trade and cost check here "
            "assumed zero cost. Fix: set spread in the config (EURUSD ~0.00008)"
        )
    # what loading repaired (dropped, reordered rows; timeframe parts), so a repaired file is visible downstream
    metrics["data"] = bars.report.to_dict(max_items=100) if getattr(bars, "report", None) is not None else None
    if bundle is not None:
        win = bundle.manifest["training_window"]
        metrics["bundle"] = {
            "bundle_hash": bundle.bundle_hash[:16],
            "trained_first_ts": int(win["first_ts"]),
            "last_label_end_ts": int(win["last_label_end_ts"]),
            "skipped_trained_bars": start,
        }
    gate.close()
    if cfg.certify.target > 0 and bundle is None and not interrupted:
        for lo in sorted(cert_starts - set(kept)):  # the calibration blocks' fits, timed here like the windows'
            a = lo + cfg.certify.calibration_bars
            ens_lo = get_fit(lo, f"fitting Layer 1 on bars 0..{lo - 1} for the calibration block {lo}..{a - 1}")
            if ens_lo is None:
                interrupted = metrics["interrupted"] = True
                break
            fit_log[-1]["reason"] = "certification"
            kept[lo] = ens_lo
        if not interrupted:
            metrics["certification"] = certification_metrics(bars, cfg, kept, fit_progress)
    known = [f["seconds"] for f in fit_log if f["seconds"] is not None]
    timing.update(
        refits=fit_log,
        refit_seconds=sum(known),
        replayed_bars=len(decisions),
        bar_seconds=bar_seconds,
        bars_per_second=len(decisions) / bar_seconds if bar_seconds > 0 else None,
    )
    return ReplayResult(
        bars,
        start,
        decisions,
        trades,
        metrics,
        interrupted,
        fits,
        ens,
        cfg.horizon,
        tracer.build() if tracer is not None else None,
        dict(timing),
    )


def certification_metrics(
    bars: Bars, cfg: GateConfig, models: dict[int, Any], progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """``metrics["certification"]``: each walk-forward window's thresholds certified on the block before it, what
    they did on the window, and whether the guarantee held (engine/calibrate.py)."""
    c = cfg.certify
    checks = certify_walk_forward(bars, cfg, target=c.target, delta=c.delta, models=models, progress=progress)
    return {
        "summary": summary(checks, c.target, c.delta),
        "windows": [x.to_dict(bars) for x in checks],
        "method": METHOD,
        "path": list(c.path),
        "calibration_bars": c.calibration_bars,
    }


def write_outputs(res: ReplayResult, out_dir: Any) -> dict[str, str]:
    """decisions.parquet, trades.csv, metrics.json and (when traced) layers.parquet into ``out_dir``, each
    written to a temporary name and renamed into place (:mod:`fxgate.engine.core.atomic`): a kill mid-write never
    leaves half a file under a final name."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    rows = []
    for dec in res.decisions:
        row = {
            "ts": pd.Timestamp(dec.ts, tz="UTC"),
            "action": dec.action,
            "size": dec.size,
            "confidence": dec.confidence,
            "first_veto": dec.first_veto,
            "decision_json": dec.to_json(),
        }
        for v in dec.layers:
            row[f"{v.name}_enabled"], row[f"{v.name}_passed"] = v.enabled, v.passed
            row[f"{v.name}_score"], row[f"{v.name}_latency_us"] = v.score, v.latency_us
        rows.append(row)
    with atomic_path(d / "decisions.parquet") as tmp:
        pd.DataFrame(rows).to_parquet(tmp, index=False)
    with atomic_path(d / "trades.csv") as tmp:
        pd.DataFrame(res.trades, columns=list(TRADE_COLUMNS)).to_csv(tmp, index=False)
    names = ["decisions.parquet", "trades.csv", "metrics.json"]
    if res.trace is not None:
        with atomic_path(d / "layers.parquet") as tmp:
            start = res.start
            res.trace.to_frame(res.bars.ts[start : start + len(res.decisions)]).to_parquet(tmp, index=False)
        names.append("layers.parquet")
    write_text(d / "metrics.json", strict_dumps(res.metrics, indent=1))  # strict JSON: null, never NaN
    return {k: str(d / k) for k in names}
