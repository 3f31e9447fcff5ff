"""One replay job: a bar file loaded, replayed through the gate, written into its directory with its report, and
summarised on the console. Run in the command's process, or in a worker process with ``replay --jobs``."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fxgate.engine.config import GateConfig, load_config
from fxgate.engine.core.atomic import atomic_path, write_text
from fxgate.engine.core.records import candidate_direction
from fxgate.engine.gate import Gate
from fxgate.engine.loader import load_bars
from fxgate.engine.replaying import ReplayResult, replay, write_outputs
from fxgate.engine.report import write_report
from fxgate.models.ensemble import TreeEnsemble

__all__ = ["Job", "replay_one", "print_summary"]


@dataclasses.dataclass
class Job:
    """One input file and the directory its outputs (and its run.json) go to."""

    data: Path
    out: Path
    run: dict[str, Any] | None = None  # the run.json written at its start
    result: dict[str, Any] | None = None
    error: BaseException | None = None
    status: str = "interrupted"  # until it is known to have completed or failed


def replay_one(
    path: str,
    config_path: str | None,
    bundle: str | None,
    out: str,
    load_kwargs: dict,
    replay_kwargs: dict,
    show_progress: bool,
    probe_llm: bool = False,
    *,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict:
    """Replay one file into ``out``. Every file goes in through a temporary name; run.json is the caller's.
    Returns the summary :func:`print_summary` prints (plain data: it crosses a process boundary with --jobs)."""
    cfg = load_config(config_path)
    bars = load_bars(path, **load_kwargs)
    rep_ = bars.report
    if rep_ is not None and (rep_.repaired or len(rep_.segments) > 1):  # repairs are said before the replay starts
        click.secho(rep_.summary(), fg="yellow", err=True)
    ens = TreeEnsemble.load(bundle) if bundle else None
    t0 = time.perf_counter()
    if show_progress:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} bars"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
        ) as prog:
            task = prog.add_task(f"replay {bars.symbol}", total=None, rate="")

            def tick(done: int, total: int) -> None:
                el = time.perf_counter() - t0
                prog.update(task, completed=done, total=total, rate=f"{done / el:,.0f} bars/s" if el > 0 else "")

            res = replay(
                bars,
                cfg,
                bundle=ens,
                progress=tick,
                should_stop=should_stop,
                fit_progress=lambda msg: prog.update(task, description=msg),
                **replay_kwargs,
            )
            prog.update(task, description=f"replay {bars.symbol}", completed=len(res.decisions))
    else:
        res = replay(bars, cfg, bundle=ens, should_stop=should_stop, **replay_kwargs)
    files = write_outputs(res, out)
    rep = Path(out) / "report.html"
    with atomic_path(rep) as tmp:
        write_report(res, tmp, cfg.hash)
    m = res.metrics
    probe = None
    if probe_llm and (cfg.l2.enabled or cfg.l3.enabled) and not res.interrupted:
        probe = _probe_llm(res, cfg, Path(out))
    return {
        "llm_layers": m.get("llm_layers", {}),
        "probe": probe,
        "file": path,
        "symbol": bars.symbol,
        "out": out,
        "report": str(rep),
        "files": files,
        "bars": m["bars"],
        "signals": m["signals"],
        "precision": m["precision"],
        "precision_ci95": m["precision_ci95"],
        "pnl_pips": m["pnl_pips"],
        "honesty": m["honesty"],
        "interrupted": res.interrupted,
        "seconds": time.perf_counter() - t0,
        "first_veto": m["first_veto"],
        "cost_warning": (m.get("costs") or {}).get("warning"),
        "certification": m.get("certification"),
    }


def _probe_llm(res: ReplayResult, cfg: GateConfig, out: Path) -> dict | None:
    """Diagnostic for the demo: the last replayed bar with a candidate (Layer 1's three models lean the same way),
    run through a gate in ``mode = "full"`` so that L2 and L3 answer even though the bar did not pass L1. Written to
    llm_probe.json; not part of the replay's decisions or metrics."""
    decs, bars = res.decisions, res.bars
    pick = None
    for k in range(len(decs) - 1, -1, -1):
        probs = np.array([mp.p_up for mp in decs[k].layer("L1").details], dtype=float)
        if candidate_direction(probs) != 0:
            pick = res.start + k
            break
    if pick is None or res.ensemble is None:
        return None
    g = Gate(dataclasses.replace(cfg, mode="full"), res.ensemble, timeframe=bars.timeframe, symbol=bars.symbol)
    g.warm_up(bars[:pick])
    d = g.on_bar(bars[pick])
    g.close()
    write_text(out / "llm_probe.json", json.dumps(d.to_dict(), indent=1))
    return {
        "ts": str(bars.times[pick])[:16],
        "L1": d.layer("L1").reason,
        "L2": d.layer("L2").reason,
        "L3": d.layer("L3").reason,
        "file": str(out / "llm_probe.json"),
    }


def print_summary(r: dict) -> None:
    """What :func:`replay_one` returned, as the console lines of one replayed file."""
    top = ", ".join(f"{k} {v}" for k, v in list(r["first_veto"].items())[:4]) or "none"
    click.echo(
        f"{r['symbol']}: {r['bars']} bars replayed out of sample in {r['seconds']:.0f} s, {r['signals']} "
        f"signals{' (interrupted: partial results)' if r['interrupted'] else ''}"
    )
    click.echo(f"  first vetoes: {top}")
    if r.get("cost_warning"):
        click.secho(f"  warning: {r['cost_warning']}", fg="yellow")
    for name, s in r.get("llm_layers", {}).items():
        click.echo(
            f"  {name}: evaluated on {s['evaluated']} bars (only bars every cheaper layer passed), passed "
            f"{s['passed']}, no usable answer {s['failed_closed']}"
        )
    if r.get("probe"):
        p = r["probe"]
        click.echo(f"  LLM diagnostic (mode=full, bar {p['ts']}, not a trade): L1 {p['L1']}")
        click.echo(f"    L2: {p['L2']}")
        click.echo(f"    L3: {p['L3']}")
        click.echo(f"    full Decision with the reasoning and the debate transcript: {p['file']}")
    click.echo(f"  fixed thresholds (as configured): {r['honesty']}")
    cert = r.get("certification")
    if cert:
        s = cert["summary"]
        click.echo(
            f"  certified thresholds (precision >= {s['target']:g} with probability >= {1 - s['delta']:g}, each "
            f"window calibrated on the {cert['calibration_bars']} bars before it): {s['verdict']}"
        )
        for w in cert["windows"]:
            head = f"    {w['window'][0][:10]}..{w['window'][1][:10]}: "
            if w["threshold"] is None:
                click.echo(head + f"not certified: {w['reason']}")
                continue
            lo, hi = w["ci95"]
            prec = f"precision {w['precision']:.1%} [{lo:.1%}, {hi:.1%}]" if w["signals"] else "no signal"
            base = f"base rate {w['base_rate']:.1%}" if w["base_rate"] is not None else "no candidates"
            click.echo(
                head
                + f"threshold {w['threshold']:.3f} -> {w['signals']} signals, {prec}, {base}, held: "
                + {True: "yes", False: "NO", None: "-"}[w["held"]]
            )
    click.echo(f"  report: {r['report']}")
