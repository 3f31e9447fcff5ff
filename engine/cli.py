"""The ``fxgate`` command line. Subcommands are added as capabilities land; user errors print without a traceback."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from fxgate.engine.core.atomic import atomic_path, write_text
from fxgate.engine.core.errors import FxgateError
from fxgate.engine.core.version import __version__

__all__ = ["main", "cli"]


class _Group(click.Group):
    """Turns user errors (bad files, bad arguments) into one clean message and exit status 2."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (FxgateError, ValueError) as exc:
            click.secho("error: " + str(exc).replace("\n", "\n       "), fg="red", err=True)
            ctx.exit(2)
        except OSError as exc:  # a full disk, a permission, a path that is a directory: the file is in the message
            click.secho(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), fg="red", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fxgate")
def cli() -> None:
    """fxgate: live signal-gating inference engine for forex."""


@cli.group(cls=_Group)
def data() -> None:
    """Check, convert and resample bar files."""


_LOAD_OPTIONS = [
    click.option(
        "--format",
        "fmt",
        default="auto",
        show_default=True,
        type=click.Choice(["auto", "generic", "mt4", "mt5", "histdata", "dukascopy", "parquet"]),
        help="File format; auto sniffs it.",
    ),
    click.option(
        "--tz",
        default=None,
        help="Zone of times without one (mt4/mt5/generic), e.g. Europe/Athens. Default UTC.",
    ),
    click.option("--symbol", default=None, help="Instrument name (default: from the file name)."),
    click.option(
        "--policy",
        default="strict",
        show_default=True,
        type=click.Choice(["strict", "repair"]),
        help="strict: fail on any bad row; repair: drop/sort and report every change.",
    ),
    click.option(
        "--encoding",
        default=None,
        help="Text encoding, e.g. latin-1 or cp1252 (Windows exports). Default: UTF-8, or UTF-16 with a BOM.",
    ),
    click.option(
        "--decimal",
        default="auto",
        show_default=True,
        type=click.Choice(["auto", ".", ","]),
        help="Decimal mark of prices; auto reads 1,0716 (European Excel exports) when no price has a point.",
    ),
]


def _load_options(f):  # type: ignore[no-untyped-def]
    for opt in reversed(_LOAD_OPTIONS):
        f = opt(f)
    return f


@data.command("check")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@_load_options
def data_check(
    files: tuple[Path, ...],
    fmt: str,
    tz: str | None,
    symbol: str | None,
    policy: str,
    encoding: str | None,
    decimal: str,
) -> None:
    """Load FILES, validate every row and print what was read, repaired and found (gaps).

    With no FILES, checks the bundled EURUSD H1 sample. Exits 2 on the first file that fails.
    """
    from fxgate.engine.loader import load_bars, sample_path

    paths = list(files) or [sample_path()]
    for p in paths:
        bars = load_bars(
            p,
            format=fmt,
            symbol=symbol,
            tz=tz,
            policy=policy,
            encoding=encoding,  # type: ignore[arg-type]
            decimal=decimal,
        )
        click.echo(repr(bars))
        assert bars.report is not None
        click.echo(bars.report.summary())


@data.command("convert")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="Output file: .csv (generic format) or .parquet.",
)
@click.option("--to", "to", default=None, help="Resample to this timeframe first (M5 M15 M30 H1 H4 D1).")
@_load_options
def data_convert(
    file: Path,
    out: Path,
    to: str | None,
    fmt: str,
    tz: str | None,
    symbol: str | None,
    policy: str,
    encoding: str | None,
    decimal: str,
) -> None:
    """Load FILE (any supported format), optionally resample it, and write it as CSV or Parquet."""
    from fxgate.engine.loader import load_bars
    from fxgate.engine.resample import resample

    if out.suffix.lower() not in (".csv", ".parquet"):
        raise ValueError(f"--out {out}: use a .csv or .parquet file name")
    bars = load_bars(
        file,
        format=fmt,
        symbol=symbol,
        tz=tz,
        policy=policy,
        encoding=encoding,  # type: ignore[arg-type]
        decimal=decimal,
    )
    if to:
        bars = resample(bars, to)
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".csv":
            bars.to_csv(tmp)
        else:
            bars.to_parquet(tmp)
    click.echo(f"wrote {out}: {bars!r}")


@cli.command("fit")
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Bar file (any format load_bars reads). Default: the bundled EURUSD H1 sample.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    default=Path("fxgate-bundle"),
    show_default=True,
    help="Bundle directory to write.",
)
@click.option("--horizon", type=click.IntRange(min=1), default=1, show_default=True, help="Label horizon in bars.")
@click.option("--label", "label_kind", type=click.Choice(["next", "triple-barrier"]), default="next", show_default=True)
@click.option("--folds", type=click.IntRange(min=1), default=5, show_default=True, help="Walk-forward test blocks.")
@click.option(
    "--threshold", type=float, default=0.95, show_default=True, help="Layer-1 confidence each model must reach."
)
@click.option(
    "--spread",
    type=float,
    default=0.0,
    show_default=True,
    help="Cost in price units for files without a spread column (e.g. 0.00008 = 0.8 pip on EURUSD).",
)
@click.option("--estimators", type=click.IntRange(min=1), default=300, show_default=True, help="Trees per booster.")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@_load_options
def fit_cmd(
    data_path: Path | None,
    out: Path,
    horizon: int,
    label_kind: str,
    folds: int,
    threshold: float,
    spread: float,
    estimators: int,
    threads: int,
    fmt: str,
    tz: str | None,
    symbol: str | None,
    policy: str,
    encoding: str | None,
    decimal: str,
) -> None:
    """Fit the Layer-1 ensemble walk-forward and write a verified bundle.

    Prints out-of-sample figures per fold: accuracy with its Wilson 95% interval, log loss, AUC, IC and rank IC
    per booster, and the coverage and precision of the all-agree >= threshold rule.
    """
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from fxgate.engine.loader import load_bars, sample_path
    from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
    from fxgate.models.labels import LabelSpec

    console = Console()
    path = data_path or sample_path()
    bars = load_bars(
        path,
        format=fmt,
        symbol=symbol,
        tz=tz,
        policy=policy,
        encoding=encoding,  # type: ignore[arg-type]
        decimal=decimal,
    )
    console.print(f"data: {bars!r} from {path}")
    if bars.spread is None:
        console.print(f"cost: no spread column; labels net of an assumed spread of {spread} (--spread)")
    spec = LabelSpec(label_kind, horizon, default_spread=spread)  # type: ignore[arg-type]
    cfg = EnsembleConfig(n_estimators=estimators, folds=folds, threshold=threshold, threads=threads)
    ens = TreeEnsemble()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=False
    ) as prog:
        task = prog.add_task("features and labels", total=None)
        report = ens.fit(bars, spec, cfg, progress=lambda msg: prog.update(task, description=msg))
        prog.update(task, description="writing bundle")
        ens.save(out)
        prog.update(task, description="done")
    _print_fit_report(console, report, threshold)
    console.print(f"bundle: {out} (sha256 {ens.bundle_hash[:16]}…)")


def _print_fit_report(console: object, report: dict, threshold: float) -> None:
    from fxgate.models.ensemble import MODEL_NAMES

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    def ci(t: tuple[float, float] | list[float]) -> str:
        return "" if t[0] != t[0] else f"[{100 * t[0]:.1f}, {100 * t[1]:.1f}]"

    lines = [
        "Layer 1, out of sample (walk-forward, purged). Accuracy counts bars whose move covered the cost.",
        f"{'fold':<5}{'bars':>6}  {'model':<9} {'accuracy [95% CI]':<22}{'logloss':>8}{'AUC':>7}{'IC':>8}"
        f"{'RankIC':>8}{'max conf':>10}",
    ]
    rows = [(str(f["fold"]), f) for f in report["folds"]] + [("all", report["overall_oos"])]
    for label, f in rows:
        for i, m in enumerate(MODEL_NAMES):
            r = f[m]
            lines.append(
                f"{label if i == 0 else '':<5}{f['decided_bars'] if i == 0 else '':>6}  {m:<9} "
                f"{pct(r['accuracy']) + ' ' + ci(r['accuracy_ci95']):<22}{r['logloss']:>8.4f}{r['auc']:>7.3f}"
                f"{r['ic']:>+8.3f}{r['rank_ic']:>+8.3f}{r['max_confidence']:>10.3f}"
            )
        rule = f["rule"]
        lines.append(
            f"{'':<13}rule (all agree, each >= {threshold}): {rule['signals']} signals in {f['bars']} bars "
            f"(coverage {pct(rule['coverage'])}), precision {pct(rule['precision'])} {ci(rule['precision_ci95'])}"
        )
    console.print("\n".join(lines), highlight=False, markup=False, soft_wrap=True)  # type: ignore[attr-defined]
    if report.get("silence"):
        console.print(f"note: {report['silence']}", highlight=False, soft_wrap=True)  # type: ignore[attr-defined]


@cli.group("config", cls=_Group)
def config_group() -> None:
    """Gate configuration files."""


@config_group.command("init")
@click.argument("path", type=click.Path(path_type=Path), default=Path("gate.toml"))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def config_init(path: Path, force: bool) -> None:
    """Write a commented default gate configuration to PATH (default gate.toml)."""
    from fxgate.engine.config import DEFAULT_TOML, load_config

    if path.is_dir():
        raise FxgateError(f"{path} is a directory. Fix: give a file name, e.g. {path / 'gate.toml'}")
    if path.exists() and not force:
        raise ValueError(f"{path} exists; pass --force to overwrite it")
    write_text(path, DEFAULT_TOML)
    load_config(path)  # what we write must load
    click.echo(f"wrote {path}")


@config_group.command("check")
@click.argument("path", type=click.Path(path_type=Path), default=Path("gate.toml"))
def config_check(path: Path) -> None:
    """Load the gate configuration at PATH, as `fxgate replay --config` would, and say what it enables."""
    from fxgate.engine.config import load_config

    cfg = load_config(path)
    on = {"L1": cfg.l1.enabled, "L4": cfg.l4.enabled, "L2": cfg.l2.enabled, "L3": cfg.l3.enabled}
    layers = ", ".join(
        f"{k} {'on' if v else 'off'}" + (f" ({len(cfg.l4.modules)} modules)" if k == "L4" and v else "")
        for k, v in on.items()
    )
    click.echo(f"OK: {path}: config hash {cfg.hash}; {layers}; horizon {cfg.horizon} bar(s), spread {cfg.spread}")


# ---------------------------------------------------------------------------------------------------------------
# Interrupts. SIGINT (Ctrl-C) and SIGTERM (systemd, Docker, `kill`, tmux kill-session) ask a replay to stop after
# the current bar; it then writes its partial results, marks run.json "interrupted" and exits 128 + the signal
# (130, 143) so scripts notice. A second signal aborts at once without results (files already renamed into place
# stay whole; temporaries are cleaned by the next run).


class _Abort(BaseException):
    """A second SIGINT/SIGTERM: stop now, write nothing more."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class _Stop:
    """The first stop signal of one command; call it to ask whether to stop."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[_Stop]:
    """Catch SIGINT and SIGTERM for the duration of one command (the previous handlers come back after it)."""
    stop = _Stop()
    if threading.current_thread() is not threading.main_thread():  # signal handlers can only be set there
        yield stop
        return

    def handler(signum: int, frame: object) -> None:
        if stop.signum is not None:
            raise _Abort(signum)
        stop.signum = signum
        # os.write, not print: a handler may run while the main thread is inside a write to the same stream
        os.write(
            2,
            f"\nfxgate: {signal.Signals(signum).name}: stopping after the current bar (a Layer-1 fit in "
            "progress finishes first), then writing partial results; send it again to abort without "
            "them\n".encode(),
        )

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    except _Abort as exc:
        click.secho(f"aborted by a second {signal.Signals(exc.signum).name}", fg="red", err=True)
        raise click.exceptions.Exit(128 + exc.signum) from None
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# A worker process of `replay --jobs`: the parent's stop event and pid, and the first signal it got itself.
_WORKER: dict[str, Any] = {}


def _worker_init(event: Any, parent_pid: int) -> None:
    def handler(signum: int, frame: object) -> None:
        if _WORKER["signum"] is None:
            _WORKER["signum"] = signum

    _WORKER.update(event=event, ppid=parent_pid, signum=None)
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    # the parent blocked both while it started us, so that none could arrive before these handlers
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="fxgate-parent-watch", daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    """Exit when the parent is gone (kill -9): nobody would record what we write, and an idle pool worker would
    otherwise wait for work forever (it holds both ends of its own task pipe, so it never sees EOF)."""
    import time

    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)  # a file being written stays a temporary, which the next run removes


def _worker_should_stop() -> bool:
    return _WORKER["signum"] is not None or _WORKER["event"].is_set()


def _replay_worker(
    path: str,
    config_path: str | None,
    bundle: str | None,
    out: str,
    load_kwargs: dict,
    replay_kwargs: dict,
    probe_llm: bool,
) -> dict:
    try:
        r = _replay_one(
            path,
            config_path,
            bundle,
            out,
            load_kwargs,
            replay_kwargs,
            False,
            probe_llm,
            should_stop=_worker_should_stop,
        )
    except FxgateError as exc:  # re-raised plain: subclasses such as BarDataError(problems) do not unpickle whole
        raise FxgateError(str(exc)) from None
    r["signum"] = _WORKER["signum"]
    return r


def _replay_one(
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
    """Replay one file into ``out`` (in a worker process with --jobs). Every file goes in through a temporary name;
    run.json is the caller's."""
    import time

    from fxgate.engine.config import load_config
    from fxgate.engine.loader import load_bars
    from fxgate.engine.replay import replay, write_outputs
    from fxgate.engine.report import write_report

    cfg = load_config(config_path)
    bars = load_bars(path, **load_kwargs)
    rep_ = bars.report
    if rep_ is not None and (rep_.repaired or len(rep_.segments) > 1):  # repairs are said before the replay starts
        click.secho(rep_.summary(), fg="yellow", err=True)
    ens = None
    if bundle:
        from fxgate.models.ensemble import TreeEnsemble

        ens = TreeEnsemble.load(bundle)
    t0 = time.perf_counter()
    if show_progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

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
    }


def _probe_llm(res: object, cfg: object, out: Path) -> dict | None:
    """Diagnostic for the demo: the last replayed bar on which Layer 1's three models agree on a direction, run
    through a gate in ``mode = "full"`` so that L2 and L3 answer even though the bar did not pass L1. Written to
    llm_probe.json; not part of the replay's decisions or metrics."""
    import dataclasses
    import json

    from fxgate.engine.gate import Gate

    decs, bars = res.decisions, res.bars  # type: ignore[attr-defined]
    pick = None
    for k in range(len(decs) - 1, -1, -1):
        ps = [x["p_up"] for x in decs[k].layer("L1").details]
        if ps and (all(p >= 0.5 for p in ps) or all(p < 0.5 for p in ps)):
            pick = res.start + k  # type: ignore[attr-defined]
            break
    if pick is None or res.ensemble is None:  # type: ignore[attr-defined]
        return None
    g = Gate(dataclasses.replace(cfg, mode="full"), res.ensemble, timeframe=bars.timeframe, symbol=bars.symbol)  # type: ignore[attr-defined, type-var]
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


def _print_summary(r: dict) -> None:
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
    click.echo(f"  {r['honesty']}")
    click.echo(f"  report: {r['report']}")


# ---------------------------------------------------------------------------------------------------------------
# Replay runs: output directories, run.json, parallel workers.


@dataclass
class _Job:
    """One input file and the directory its outputs (and its run.json) go to."""

    data: Path
    out: Path
    run: dict[str, Any] | None = None  # the run.json written at its start
    result: dict[str, Any] | None = None
    error: BaseException | None = None
    status: str = "interrupted"  # until it is known to have completed or failed


def _out_dirs(out: Path, data: tuple[Path, ...]) -> list[Path]:
    """One output directory per input file: ``out`` itself for one file, else ``out/<stem>``. Files that share a
    stem (``x/EURUSD.csv``, ``y/EURUSD.csv``) get their parent folders added (``EURUSD-x``, ``EURUSD-y``), or
    their whole file names when they sit in one folder, so no two write into one directory."""
    if len(data) == 1:
        return [out]
    first: dict[Path, Path] = {}
    for p in data:
        key = p.resolve()
        if key in first:
            raise FxgateError(
                f"--data {p}: the same file is given twice (also as {first[key]}). Fix: list each file once"
            )
        first[key] = p
    names = [p.stem for p in data]
    for stem in {n for n in names if names.count(n) > 1}:
        idx = [i for i, n in enumerate(names) if n == stem]
        parents = [data[i].resolve().parent.parts[1:] for i in idx]
        for k in range(1, max(len(x) for x in parents) + 1):
            cand = [stem + "-" + "-".join(x[-k:]) if x else stem for x in parents]
            if len(set(cand)) == len(cand):
                break
        else:
            cand = [data[i].name for i in idx]
        for i, c in zip(idx, cand, strict=True):
            names[i] = c
    taken: set[str] = set()
    for i, n in enumerate(names):  # a derived name can still meet another file's stem
        c, k = n, 2
        while c in taken:
            c, k = f"{n}-{k}", k + 1
        taken.add(c)
        names[i] = c
    return [out / n for n in names]


def _check_out_path(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise FxgateError(
            f"--out {out}: is an existing file, not a directory. Fix: pass a directory path (it is created if missing)"
        )
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise FxgateError(
                    f"--out {out}: {parent} is a file, so no directory can be made under it. Fix: pass another path"
                )
            break


def _check_data_file(p: Path) -> None:
    if not p.exists():
        raise FxgateError(f"{p}: no such file. Fix: check the path (relative paths start from the current directory)")
    if not p.is_file():
        raise FxgateError(f"{p}: is a directory, not a bar file. Fix: pass the file itself")


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    return v if v is None or isinstance(v, bool | int | float | str) else str(v)


def _run_replays(
    jobs: list[_Job],
    cfg: Any,
    config_path: Path | None,
    bundle: Path | None,
    load_kwargs: dict,
    n_jobs: int,
    force: bool,
    stop: _Stop,
    *,
    probe_llm: bool = False,
    extra_files: tuple[str, ...] = (),
    before: Callable[[], None] | None = None,
    replay_kwargs: dict | None = None,
) -> None:
    """Claim every output directory (run.json "running"), replay each file (in worker processes with
    ``n_jobs`` > 1), write each run.json last, and exit 128 + the signal if a stop signal cut the run short.
    ``cfg`` is the loaded ``config_path`` (loaded by the caller, so that a bad config fails before anything else)."""
    import uuid

    from fxgate.engine.core.atomic import OUTPUT_NAMES, check_run_dir, finish_run, start_run
    from fxgate.engine.core.hashing import file_sha256

    ctx = click.get_current_context()
    refusals = [r for j in jobs for r in check_run_dir(j.out).refusals]
    if refusals and not force:
        raise FxgateError("\n".join(refusals))  # before any work: nothing was loaded or written yet
    for j in jobs:
        _check_data_file(j.data)
    if cfg.llm.model == "nano" and (cfg.l2.enabled or cfg.l3.enabled):
        from fxgate.training.nano import ensure_nano

        ensure_nano()  # building the model is training's job; the gate only reads it from the cache
    record = {
        "id": uuid.uuid4().hex[:16],
        "command": ctx.command_path,
        "options": {k: _jsonable(v) for k, v in ctx.params.items()},
        "fxgate_version": __version__,
        "config": str(config_path) if config_path else None,
        "config_hash": cfg.hash,
        "bundle": str(bundle) if bundle else None,
    }
    written = (*OUTPUT_NAMES, *extra_files)
    try:
        for j in jobs:
            data_rec = {"path": str(j.data.resolve()), "size": j.data.stat().st_size, "sha256": file_sha256(j.data)}
            j.run, state = start_run(j.out, {**record, "data": data_rec}, force=force)
            for msg in state.notes + (state.refusals if force else ()):
                click.secho(("note: " if msg in state.notes else "--force: ") + msg, fg="yellow", err=True)
        if before is not None:
            before()
        args = [
            (
                str(j.data),
                str(config_path) if config_path else None,
                str(bundle) if bundle else None,
                str(j.out),
                load_kwargs,
                dict(replay_kwargs or {}),
            )
            for j in jobs
        ]
        if n_jobs == 1 or len(jobs) == 1:
            for j, a in zip(jobs, args, strict=True):
                # a signal before or during this file stops it after its first/current bar; later files are not run
                try:
                    j.result = _replay_one(*a, True, probe_llm, should_stop=stop)
                except (FxgateError, ValueError, OSError) as exc:
                    j.error, j.status = exc, "failed"
                else:
                    _print_summary(j.result)  # type: ignore[arg-type]
                    j.status = "interrupted" if j.result["interrupted"] else "complete"  # type: ignore[index]
                if stop():
                    break
        else:
            _run_parallel(jobs, args, n_jobs, stop, probe_llm)
    except _Abort as exc:
        stop.signum = exc.signum
        for j in jobs:
            if j.run is not None and j.status != "complete":
                j.status, j.error = "interrupted", exc
    except BaseException as exc:  # a bug: record it in every unfinished run.json, then let it surface
        for j in jobs:
            if j.run is not None and j.status not in ("complete", "failed"):
                finish_run(
                    j.out,
                    j.run,
                    "failed",
                    [n for n in written if (j.out / n).exists()],
                    error=f"fxgate crashed: {type(exc).__name__}: {exc}",
                )
        raise
    for j in jobs:
        if j.run is None:
            continue
        err = None
        if isinstance(j.error, _Abort):
            err = (
                f"aborted by a second {signal.Signals(j.error.signum).name}: the results are incomplete (only "
                "the files listed here were written)"
            )
        elif j.error is not None:
            err = str(j.error)
        elif j.result is None:
            err = "not run: stopped by a signal before this file's turn"
        finish_run(j.out, j.run, j.status, [n for n in written if (j.out / n).exists()], error=err)
    failed = [j for j in jobs if j.status == "failed"]
    if failed:
        if len(jobs) == 1:
            raise failed[0].error  # type: ignore[misc]
        raise FxgateError("\n".join(f"{j.data}: {j.error}" for j in failed))
    signum = stop.signum or next((j.result.get("signum") for j in jobs if j.result and j.result.get("signum")), None)
    if signum is None and any(j.status == "interrupted" for j in jobs):
        signum = signal.SIGINT
    if signum is not None:
        if any(isinstance(j.error, _Abort) for j in jobs):
            click.secho(
                f"aborted by a second {signal.Signals(signum).name}: results incomplete; each run.json says "
                '"interrupted" and lists only the files written whole',
                fg="red",
                err=True,
            )
        else:
            click.secho(
                f'interrupted by {signal.Signals(signum).name}: partial results; each run.json says "interrupted"',
                fg="yellow",
                err=True,
            )
        ctx.exit(128 + signum)


def _run_parallel(jobs: list[_Job], args: list[tuple], n_jobs: int, stop: _Stop, probe_llm: bool) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, ProcessPoolExecutor, wait

    # spawn, not fork: forking a process whose OpenMP/numba thread pools are running can deadlock the children
    mp = multiprocessing.get_context("spawn")
    event = mp.Event()
    sigs = {signal.SIGINT, signal.SIGTERM}
    # Blocked while the workers start, so that they inherit the mask and no signal reaches one before its handler
    # (a KeyboardInterrupt traceback from a half-started worker); a signal meanwhile waits, then reaches our handler.
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    unblocked = False
    pool = ProcessPoolExecutor(
        max_workers=min(n_jobs, len(jobs)), mp_context=mp, initializer=_worker_init, initargs=(event, os.getpid())
    )
    try:
        futs = {pool.submit(_replay_worker, *a, probe_llm): j for a, j in zip(args, jobs, strict=True)}
        signal.pthread_sigmask(signal.SIG_UNBLOCK, sigs)
        unblocked = True
        pending = set(futs)
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            if stop() and not event.is_set():
                event.set()  # every worker stops after its current bar and writes its partial results
                for f in pending:
                    f.cancel()  # files not started yet are not started
            for f in done:
                j = futs[f]
                if f.cancelled():
                    continue
                try:
                    j.result = f.result()
                except (FxgateError, ValueError, OSError) as exc:
                    j.error, j.status = exc, "failed"
                    continue
                except BrokenExecutor:
                    if stop():  # a worker hit by the signal as it started: interrupted, not a failure
                        continue
                    j.status = "failed"
                    j.error = FxgateError(
                        "its worker process died (killed, or out of memory). Fix: retry with fewer --jobs"
                    )
                    continue
                _print_summary(j.result)  # type: ignore[arg-type]
                j.status = "interrupted" if j.result["interrupted"] else "complete"  # type: ignore[index]
        pool.shutdown(wait=True)
    except BaseException:
        event.set()
        for p in list((getattr(pool, "_processes", None) or {}).values()):  # abort: no worker outlives us
            with contextlib.suppress(Exception):
                p.kill()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        if not unblocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, sigs)


@cli.command("replay")
@click.option(
    "--data",
    "data",
    multiple=True,
    type=click.Path(path_type=Path),
    required=True,
    help="Bar file; repeat for several pairs.",
)
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None, help="gate.toml")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Output directory (one sub-directory per file when several are given).",
)
@click.option(
    "--bundle",
    type=click.Path(path_type=Path),
    default=None,
    help="A fitted Layer-1 bundle (refused if its training window overlaps the replay). Default: walk-forward refits.",
)
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="Files replayed in parallel.")
@click.option(
    "--force",
    is_flag=True,
    help="Write into --out even if its run.json says another run is in progress or its files do not match.",
)
@click.option(
    "--skip-trained-bars",
    is_flag=True,
    help="With --bundle: bars up to the end of its training labels only warm the state (not scored), "
    "instead of refusing the bundle.",
)
@_load_options
def replay_cmd(
    data: tuple[Path, ...],
    config_path: Path | None,
    out: Path,
    bundle: Path | None,
    jobs: int,
    force: bool,
    skip_trained_bars: bool,
    fmt: str,
    tz: str | None,
    symbol: str | None,
    policy: str,
    encoding: str | None,
    decimal: str,
) -> None:
    """Stream bars through Gate.on_bar and write decisions.parquet, trades.csv, metrics.json, report.html and, last,
    run.json (the run's id, config hash, data sha256, status, and every file's size and sha256).

    Ctrl-C or SIGTERM stops after the current bar and writes partial results (exit status 130 or 143). A directory
    whose run.json shows a run still in progress, or files that do not match it, is refused unless --force.
    """
    from fxgate.engine.config import load_config

    with _stop_on_signals() as stop:
        _check_out_path(out)  # an existing file: refused at once, before the config or any bar is read
        cfg = load_config(config_path)
        outs = _out_dirs(out, data)
        if len(data) > 1:
            for p, o in zip(data, outs, strict=True):
                if o.name != p.stem:
                    click.echo(f"{p} -> {o} (another --data file has the stem {p.stem!r})")
        jobs_list = [_Job(p, o) for p, o in zip(data, outs, strict=True)]
        load_kwargs = {
            "format": fmt,
            "tz": tz,
            "symbol": symbol,
            "policy": policy,
            "encoding": encoding,
            "decimal": decimal,
        }
        _run_replays(
            jobs_list,
            cfg,
            config_path,
            bundle,
            load_kwargs,
            jobs,
            force,
            stop,
            replay_kwargs={"skip_trained_bars": skip_trained_bars},
        )


def _toml_set(text: str, section: str | None, key: str, value: str) -> str:
    """``text`` with the value of ``key`` in ``[section]`` (None: the top level) replaced, its comment kept."""
    import re

    lines = text.split("\n")
    cur: str | None = None
    for i, line in enumerate(lines):
        head = re.match(r"^\[([^\]]+)\]", line)
        if head:
            cur = head.group(1).strip()
            continue
        m = re.match(rf"^({re.escape(key)}\s*=\s*)(\"[^\"]*\"|[^\s#]+)(.*)$", line)
        if m and cur == section:
            pad = max(1, len(m.group(2)) + len(m.group(3)) - len(m.group(3).lstrip()) - len(value))
            rest = m.group(3).lstrip()
            lines[i] = m.group(1) + value + (" " * pad + rest if rest else "")
            return "\n".join(lines)
    raise RuntimeError(f"fxgate bug: DEFAULT_TOML has no {key!r} in [{section or 'top level'}]")


def _demo_config(llm: bool, where: str) -> tuple[str, Any]:
    """The demo's gate.toml: the commented defaults with a 0.8-pip spread and, with ``llm``, layers 2 and 3 on the
    nano model (else off). Returns the text and the config it loads as (checked: the defaults file may change)."""
    import tomllib

    from fxgate.engine.config import DEFAULT_TOML, config_from_dict

    text = _toml_set(DEFAULT_TOML, None, "spread", "0.00008")
    text = _toml_set(text, "llm", "model", '"nano"' if llm else '""')
    for layer in ("l2", "l3"):
        text = _toml_set(text, layer, "enabled", "true" if llm else "false")
    cfg = config_from_dict(tomllib.loads(text), where)
    if (cfg.spread, cfg.llm.model, cfg.l2.enabled, cfg.l3.enabled) != (0.00008, "nano" if llm else "", llm, llm):
        raise RuntimeError("fxgate bug: the demo's gate.toml does not load as the demo's settings")
    return text, cfg


@cli.command("demo")
@click.option("--out", type=click.Path(path_type=Path), default=Path("fxgate-demo"), show_default=True)
@click.option("--no-llm", is_flag=True, help="Replay layers 1 and 4 only (no nano model, no torch needed).")
@click.option("--force", is_flag=True, help="Write into --out even if its run.json does not match its files.")
def demo_cmd(out: Path, no_llm: bool, force: bool) -> None:
    """Replay the bundled EURUSD H1 sample walk-forward through all four layers and write the report.

    The sample has no spread column: costs assume a 0.8-pip EURUSD spread. Layer 1 is refit on all earlier bars
    before each 1,000-bar window; the first 2,000 bars are history only. Layers 2 and 3 run fxgate's nano model —
    random weights, built on first use — which shows the machinery, not a trading edge: point [llm] model at a
    trained GGUF for that.
    """
    from fxgate.engine.loader import sample_path

    text, cfg = _demo_config(llm=not no_llm, where=str(out / "gate.toml"))
    cfg_path = out / "gate.toml"
    with _stop_on_signals() as stop:
        _check_out_path(out)

        def announce() -> None:
            write_text(cfg_path, text)
            click.echo(f"demo: bundled EURUSD H1 sample ({sample_path()}), config {cfg_path}")
            if not no_llm:
                click.echo(
                    "demo: layers 2 and 3 use the nano LLM (random weights: it exercises the machinery; its "
                    "verdicts are noise)"
                )

        _run_replays(
            [_Job(sample_path(), out)],
            cfg,
            cfg_path,
            None,
            {"symbol": "EURUSD"},
            1,
            force,
            stop,
            probe_llm=not no_llm,
            extra_files=("gate.toml",),
            before=announce,
        )


@cli.group("train")
def train_group() -> None:
    """Training data, the formula catalogue, and the honest evaluation of a model."""


@train_group.command("data")
@click.option(
    "--bars",
    "bars",
    multiple=True,
    type=click.Path(path_type=Path),
    required=True,
    help="Bar file; repeat for several pairs.",
)
@click.option(
    "--jsonl",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Your own JSONL (Alpaca, chat messages, TRL prompt/chosen/rejected); repeat.",
)
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--horizon", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--spread", type=float, default=0.0, show_default=True, help="Price units, for bars without one.")
@click.option("--val-frac", type=float, default=0.15, show_default=True)
@click.option("--test-frac", type=float, default=0.15, show_default=True)
@click.option("--embargo", type=click.IntRange(min=0), default=0, help="Bars between splits (default: horizon).")
@click.option(
    "--bundle",
    type=click.Path(path_type=Path),
    default=None,
    help="A Layer-1 bundle fitted before the validation cut: its probabilities go into the prompts.",
)
@click.option("--skip-bad", is_flag=True, help="Drop (and count) bad JSONL lines instead of failing.")
@click.option(
    "--tokenizer",
    type=click.Path(path_type=Path),
    default=None,
    help="The served model's GGUF (or HF directory): store prompts as served, under the judge's budget.",
)
@_load_options
def train_data_cmd(
    bars: tuple[Path, ...],
    jsonl: tuple[Path, ...],
    out: Path,
    horizon: int,
    spread: float,
    val_frac: float,
    test_frac: float,
    embargo: int,
    bundle: Path | None,
    skip_bad: bool,
    tokenizer: Path | None,
    fmt: str,
    tz: str | None,
    symbol: str | None,
    policy: str,
    encoding: str | None,
    decimal: str,
) -> None:
    """Build SFT/DPO/test sets from bar files with a leak-proof time split; write a manifest."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn
    from rich.table import Table

    from fxgate.training import datasets

    spec = datasets.SplitSpec(horizon=horizon, spread=spread, val_frac=val_frac, test_frac=test_frac, embargo=embargo)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}")) as prog:
        tasks: dict[str, int] = {}

        def tick(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = prog.add_task(f"bars of {name}", total=total)
            prog.update(tasks[name], completed=done)

        m = datasets.build(
            bars,
            out,
            spec,
            bundle=bundle,
            jsonl=jsonl,
            skip_bad=skip_bad,
            progress=tick,
            tokenizer=tokenizer,
            load_kwargs={
                "format": fmt,
                "tz": tz,
                "symbol": symbol,
                "policy": policy,
                "encoding": encoding,
                "decimal": decimal,
            },
        )
    con = Console()
    tb = Table(
        title=f"{out} (cuts: val from {m['cuts']['val_from']}, test from {m['cuts']['test_from']}; "
        f"embargo {m['embargo_bars']} bars)"
    )
    kinds = sorted({k for v in m["counts"].values() for k in v})
    tb.add_column("split")
    for k in kinds:
        tb.add_column(k, justify="right")
    for split, c in m["counts"].items():
        tb.add_row(split, *[str(c.get(k, "")) for k in kinds])
    con.print(tb)
    if m["imported"]:
        ti = Table(title="imported JSONL")
        cols = ("source", "lines", "bad", "after_cut", "exact_duplicates", "near_duplicates", "sft", "dpo")
        for col in cols:
            ti.add_column(col, justify="left" if col == "source" else "right")
        for r in m["imported"]["sources"]:
            ti.add_row(*[str(r.get(c, "")) for c in cols])
        con.print(ti)
    for w in m.get("warnings") or []:
        click.secho(f"warning: {w}", fg="yellow", err=True)
    c = m["certainty_targets"]
    click.echo(
        f"certainty targets (training-split base rates): proposal right {c['same']:.3f}, no move past the "
        f"spread {c['none']:.3f}, opposite {c['opposite']:.3f}; manifest: {out / 'manifest.json'}"
    )


@train_group.command("formulas")
@click.option(
    "--list",
    "list_",
    is_flag=True,
    help="List every entry: name, category, formula, citation, computed or described only.",
)
@click.option("--category", default=None, help="With --list: only this category (alpha158, alpha101, volatility, ...).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the formula SFT samples (JSONL).")
def train_formulas_cmd(list_: bool, category: str | None, out: Path | None) -> None:
    """The formula catalogue: every entry (with --list), or its SFT samples."""
    import json

    from fxgate.training.formulas import listing, sft_samples

    if not list_ and out is None:
        raise click.UsageError("give --list and/or --out FILE")
    if category is not None and not list_:
        raise click.UsageError("--category goes with --list")
    if list_:
        try:
            click.echo(listing(category))
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    if out is not None:
        s = sft_samples()
        write_text(out, "".join(json.dumps(x) + "\n" for x in s))
        click.echo(f"wrote {len(s)} samples to {out}")


@train_group.command("eval")
@click.option("--model", type=click.Path(path_type=Path), required=True, help="A GGUF file.")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="A directory from `fxgate train data`.")
@click.option("--threshold", type=float, default=0.95, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Score the first N test scenarios only.")
@click.option("--think-budget", type=click.IntRange(min=0), default=384, show_default=True)
@click.option("--gpu-layers", type=int, default=0, show_default=True)
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None)
def train_eval_cmd(
    model: Path,
    data: Path,
    threshold: float,
    limit: int | None,
    think_budget: int,
    gpu_layers: int,
    json_out: Path | None,
) -> None:
    """Score a model on the test split against the baselines (accuracy, precision with Wilson CI, coverage, ECE)."""
    import json

    from fxgate.training.evaluate import evaluate, table

    r = evaluate(model, data, threshold=threshold, limit=limit, think_budget=think_budget, n_gpu_layers=gpu_layers)
    click.echo(table(r))
    if r["errors"]:
        click.echo(f"no usable answer: {r['errors']}")
    if json_out is not None:
        write_text(json_out, json.dumps(r, indent=1))
        click.echo(f"wrote {json_out}")


@train_group.command("all")
@click.option("--preset", type=click.Choice(["nano", "h100-7b"]), default="nano", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("fxgate-train"), show_default=True)
@click.option("--bars", multiple=True, help="Bar files (default: the bundled EURUSD H1 sample).")
@click.option("--base", default=None, help="Base model directory or hub id (default: the preset's).")
def train_all_cmd(preset: str, out: Path, bars: tuple[str, ...], base: str | None) -> None:
    """Data, SFT, DPO, merge, GGUF F16 + Q8_0, parity check, Modelfile, evaluation, manifest, verify."""
    from fxgate.training.pipeline import run_all

    if preset == "nano":
        click.echo(
            "preset nano: a 2-layer model trained for minutes on CPU. It checks the pipeline, not a trading "
            "edge; its evaluation is printed next to the baselines so you can see that."
        )
    m = run_all(preset, out, bars=list(bars) or None, base=base, log=click.echo)
    from fxgate.training.evaluate import table

    click.echo(table({"model_scores": m["evaluation"]["model_scores"], "baselines": m["evaluation"]["baselines"]}))
    click.echo(f"parity: {m['parity']}")


@train_group.command("verify")
@click.argument("run_dir", type=click.Path(path_type=Path))
def train_verify_cmd(run_dir: Path) -> None:
    """Check a (downloaded) run directory against its manifest.json; exit 1 on any missing, short or altered file."""
    import json

    from fxgate.training.pipeline import verify

    problems = verify(run_dir)
    if problems:
        for x in problems:
            click.echo(f"FAIL {x}", err=True)
        raise SystemExit(1)
    n = len(json.loads((run_dir / "manifest.json").read_text())["files"])
    click.echo(f"OK: {n} files match {run_dir / 'manifest.json'} (size and sha256)")


@cli.command("bench")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("benchmarks/out"),
    show_default=True,
    help="Where each script's JSON and the summary table go.",
)
@click.option("--only", multiple=True, help="Run only these scripts (e.g. --only gate --only load).")
def bench_cmd(out: Path, only: tuple[str, ...]) -> None:
    """Run every script in benchmarks/ and print one table: figure, ours, reference, ratio, target, met.

    Writes each script's JSON and SUMMARY.md (a table for benchmarks/RESULTS.md, with the command and date) to --out.
    Needs a source checkout (benchmarks/ is not part of the installed package).
    """
    import json
    import subprocess
    from datetime import UTC, datetime

    import fxgate.engine

    root = Path(fxgate.engine.__file__).resolve().parents[1] / "benchmarks"
    scripts = sorted(root.glob("bench_*.py"))
    if not scripts:
        raise ValueError(f"no benchmark scripts under {root}: run `fxgate bench` from a source checkout")
    if only:
        scripts = [p for p in scripts if p.stem.removeprefix("bench_") in only]
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for script in scripts:
        dest = out / f"{script.stem.removeprefix('bench_')}.json"
        click.echo(f"==> python {script.relative_to(root.parent)} --json {dest}")
        done = subprocess.run([sys.executable, str(script), "--json", str(dest)])
        if done.returncode != 0:
            raise ValueError(f"{script.name} failed with exit status {done.returncode}")
        rows += json.loads(dest.read_text()).get("summary", [])
    head = ("figure", "ours", "reference", "ratio", "target", "met")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        met = {True: "yes", False: "no", None: "-"}[r["met"]]
        lines.append("| " + " | ".join(str(r[k]) for k in head[:-1]) + f" | {met} |")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    text = f"`fxgate bench` ({stamp}, {len(scripts)} scripts)\n\n" + "\n".join(lines) + "\n"
    write_text(out / "SUMMARY.md", text)
    click.echo("\n" + text)


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="fxgate")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
