"""One replay job: a bar file loaded, replayed through the gate, written into its directory with its report, and
summarised on the console. Run in the command's process, or in a worker process with ``replay --jobs``."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from fxgate.engine import diagnostics
from fxgate.engine.config import GateConfig, load_config
from fxgate.engine.core.atomic import atomic_path, write_text
from fxgate.engine.core.records import candidate_direction
from fxgate.engine.gate import Gate
from fxgate.engine.loader import load_bars
from fxgate.engine.replaying import ReplayResult, replay, write_outputs
from fxgate.engine.report import write_report
from fxgate.models.ensemble import TreeEnsemble

__all__ = ["Job", "replay_one", "print_summary", "Steps"]


class Steps:
    """Console progress for a replay: one line per step (warm-up, each Layer-1 refit, each certification window,
    the report, the LLM diagnostic) with its elapsed time, and one bar for the replayed bars with their rate.
    ``step(msg)`` ends the current step and starts the next; a replay tick ends a refit (its bars are running)."""

    def __init__(self, prog: Progress, symbol: str) -> None:
        self.prog, self.symbol = prog, symbol
        self.current: TaskID | None = None
        self.bars: TaskID | None = None
        self.t0 = time.perf_counter()

    def step(self, msg: str) -> None:
        self.done()
        self.current = self.prog.add_task(msg, total=None, count="")

    def done(self) -> None:
        if self.current is not None:
            self.prog.update(self.current, total=1, completed=1)
            self.current = None

    def tick(self, done: int, total: int) -> None:
        self.done()
        if self.bars is None:
            self.t0 = time.perf_counter()
            self.bars = self.prog.add_task(f"replay {self.symbol}", total=total, count="")
        el = time.perf_counter() - self.t0
        rate = f" {done / el:,.0f} bars/s" if el > 0 and done else ""
        self.prog.update(self.bars, completed=done, total=total, count=f"{done}/{total} bars{rate}")

    def finish_bars(self, done: int) -> None:
        if self.bars is not None:
            self.prog.update(self.bars, completed=done, total=done, count=f"{done} bars")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[count]}"),
        TimeElapsedColumn(),
    )


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
    steps: Steps | None = None
    prog = _progress() if show_progress else None
    with prog if prog is not None else contextlib.nullcontext():
        if prog is not None:
            steps = Steps(prog, bars.symbol)
        res = replay(
            bars,
            cfg,
            bundle=ens,
            progress=steps.tick if steps else None,
            should_stop=should_stop,
            fit_progress=steps.step if steps else None,
            **replay_kwargs,
        )
        if steps:
            steps.finish_bars(len(res.decisions))
        probe = None
        if probe_llm and (cfg.l2.enabled or cfg.l3.enabled) and not res.interrupted:
            if steps:
                steps.step("LLM diagnostic: one candidate bar through layers 2 and 3 (mode = full)")
            probe = _probe_llm(res, cfg, Path(out))
        if steps:
            steps.step("writing decisions.parquet, layers.parquet, trades.csv, metrics.json")
        files = write_outputs(res, out)
        rep = Path(out) / "report.html"
        if steps:
            steps.step("writing report.html")
        with atomic_path(rep) as tmp:
            write_report(res, tmp, cfg.hash, probe=probe.pop("decision") if probe else None)
        if steps:
            steps.done()
    m = res.metrics
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
        "base_rate": m.get("base_rate"),
        "pnl_pips": m["pnl_pips"],
        "honesty": m["honesty"],
        "interrupted": res.interrupted,
        "seconds": time.perf_counter() - t0,
        "first_veto": m["first_veto"],
        "cost_warning": (m.get("costs") or {}).get("warning"),
        "certification": m.get("certification"),
        "layers": _layer_summary(res, cfg) if res.trace is not None and len(res.decisions) else None,
    }


def _layer_summary(res: ReplayResult, cfg: GateConfig) -> dict[str, Any]:
    """Plain data for the console summary and the multi-file summary page: the funnel, each layer's pass rate
    alone, the joint-vs-product figure and the strongest layer-alone rule (engine/diagnostics.py)."""
    names, phi, joint = diagnostics.pass_correlation(res)
    off = np.where(np.eye(len(names), dtype=bool) | ~np.isfinite(phi), 0.0, phi)
    a, b = np.unravel_index(int(np.argmax(np.abs(off))), off.shape) if len(names) > 1 else (0, 0)
    pair = {"layers": [names[a], names[b]], "phi": float(off[a, b])} if off[a, b] else None
    depth = diagnostics.joint_by_depth(res)
    # the depth that departs most from independence, its p-value multiplied by the number of depths looked at
    best = min(depth, key=lambda x: x["p_independent"]) if depth else None
    if best is not None:
        best = dict(best, p_adjusted=min(1.0, best["p_independent"] * len(depth)), depths=len(depth))
    return {
        "depth": best,
        "pair": pair,
        "funnel": diagnostics.funnel(res),
        "alone": diagnostics.pass_alone(res),
        "joint": joint,
        "strongest": diagnostics.strongest_rule(res, cfg.spread),
        "l1_threshold": cfg.l1.threshold,
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
    full = d.to_dict()
    write_text(out / "llm_probe.json", json.dumps(full, indent=1))
    return {
        "decision": full,  # for the report (removed before this summary crosses a process boundary)
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
    if r.get("layers"):
        _print_layers(r["layers"])  # where the bars stopped (the first vetoes), each layer alone, the best one
    else:
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
    click.echo(f"  report: {Path(r['report']).resolve().as_uri()}")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _print_layers(s: dict[str, Any]) -> None:
    """Where the bars stopped, each layer alone, the joint figure and the strongest layer-alone rule."""
    f = s["funnel"]
    alive = dict(f)
    lost, prev = [], alive["accepted"]
    for name, n in f[2:-1]:
        if prev - n:
            lost.append(f"{name} {prev - n}")
        prev = n
    refused = alive["replayed"] - alive["accepted"]
    click.echo(
        f"  where bars stopped (cheapest layer first): {', '.join(lost) or 'nowhere'}"
        + (f"; {refused} bars refused as input" if refused else "")
        + f"; {alive['signals']} signals"
    )
    alone = s["alone"]
    l1 = alone.get("L1", {})
    mods = sorted(
        ((k, v) for k, v in alone.items() if k != "L1" and v["rate"] is not None), key=lambda kv: kv[1]["rate"]
    )
    never = [k for k, v in mods if v["passed"] == 0]
    always = [k for k, v in mods if v["passed"] == v["evaluated"]]
    parts = [f"L1 (>= {s['l1_threshold']:g}) {_pct(l1.get('rate'))}"]
    parts += [f"{k} {_pct(v['rate'])}" for k, v in mods if k not in never and k not in always]
    click.echo("  each layer alone passes: " + ", ".join(parts))
    if never:
        click.echo(f"    never passed: {', '.join(never)}")
    if always:
        click.echo(f"    always passed: {', '.join(always)}")
    pair = s.get("pair")
    dp = s.get("depth")
    if dp:
        expect = dp["product_of_rates"] * dp["bars"]
        verdict = "not independent" if dp["p_adjusted"] < 0.01 else "consistent with independence on these bars"
        click.echo(
            f"  {verdict}: the {len(dp['layers'])} layers that pass most often all passed together on "
            f"{dp['all_passed_bars']} of {dp['bars']} bars; multiplying their pass rates predicts {expect:.1f} "
            f"(binomial p = {dp['p_adjusted']:.2g}, x{dp['depths']} depths looked at)"
        )
    if pair:
        click.echo(
            f"  most correlated pass flags: {pair['layers'][0]} and {pair['layers'][1]} (phi {pair['phi']:+.2f}); "
            "the report shows every pair"
        )
    st = s["strongest"]
    if st.get("rule") is None:
        click.echo(f"  strongest layer-alone rule: none ({st['reason']})")
        return
    o = st["out_of_sample"]
    lo, hi = o["ci95"]
    a, b = st["scored_on_bars"]
    prec = f"{_pct(o['precision'])} [{_pct(lo)}, {_pct(hi)}] of {o['signals']}" if o["signals"] else "no signal"
    click.echo(
        f"  strongest layer-alone rule (chosen on the first half of the replayed bars, scored on bars {a}..{b - 1}): "
        f"trade every candidate {st['rule']} passes -> {prec} correct after the spread; base rate "
        f"{_pct(o['base_rate'])} (every candidate on the same bars)"
    )
