"""The ``fxgate`` command line. Subcommands are added as capabilities land; user errors print without a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from fxgate.engine._version import __version__
from fxgate.engine.errors import FxgateError

__all__ = ["main", "cli"]


class _Group(click.Group):
    """Turns user errors (bad files, bad arguments) into one clean message and exit status 2."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (FxgateError, ValueError) as exc:
            click.secho("error: " + str(exc).replace("\n", "\n       "), fg="red", err=True)
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
]


def _load_options(f):  # type: ignore[no-untyped-def]
    for opt in reversed(_LOAD_OPTIONS):
        f = opt(f)
    return f


@data.command("check")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@_load_options
def data_check(files: tuple[Path, ...], fmt: str, tz: str | None, symbol: str | None, policy: str) -> None:
    """Load FILES, validate every row and print what was read, repaired and found (gaps).

    With no FILES, checks the bundled EURUSD H1 sample. Exits 2 on the first file that fails.
    """
    from fxgate.engine.loader import load_bars, sample_path

    paths = list(files) or [sample_path()]
    for p in paths:
        bars = load_bars(p, format=fmt, symbol=symbol, tz=tz, policy=policy)  # type: ignore[arg-type]
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
    file: Path, out: Path, to: str | None, fmt: str, tz: str | None, symbol: str | None, policy: str
) -> None:
    """Load FILE (any supported format), optionally resample it, and write it as CSV or Parquet."""
    from fxgate.engine.loader import load_bars
    from fxgate.engine.resample import resample

    if out.suffix.lower() not in (".csv", ".parquet"):
        raise ValueError(f"--out {out}: use a .csv or .parquet file name")
    bars = load_bars(file, format=fmt, symbol=symbol, tz=tz, policy=policy)  # type: ignore[arg-type]
    if to:
        bars = resample(bars, to)
    if out.suffix.lower() == ".csv":
        bars.to_csv(out)
    else:
        bars.to_parquet(out)
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
def fit_cmd(data_path: Path | None, out: Path, horizon: int, label_kind: str, folds: int, threshold: float,
            spread: float, estimators: int, threads: int, fmt: str, tz: str | None, symbol: str | None,
            policy: str) -> None:  # fmt: skip
    """Fit the Layer-1 ensemble walk-forward and write a verified bundle.

    Prints out-of-sample figures per fold: accuracy with its Wilson 95% interval, log loss, AUC, IC and rank IC
    per booster, and the coverage and precision of the all-agree >= threshold rule.
    """
    from fxgate.engine.loader import load_bars, sample_path
    from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
    from fxgate.models.labels import LabelSpec
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console()
    path = data_path or sample_path()
    bars = load_bars(path, format=fmt, symbol=symbol, tz=tz, policy=policy)  # type: ignore[arg-type]
    console.print(f"data: {bars!r} from {path}")
    if bars.spread is None:
        console.print(f"cost: no spread column; labels net of an assumed spread of {spread} (--spread)")
    spec = LabelSpec(label_kind, horizon, default_spread=spread)  # type: ignore[arg-type]
    cfg = EnsembleConfig(n_estimators=estimators, folds=folds, threshold=threshold, threads=threads)
    ens = TreeEnsemble()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=False) as prog:  # fmt: skip
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

    if path.exists() and not force:
        raise ValueError(f"{path} exists; pass --force to overwrite it")
    path.write_text(DEFAULT_TOML)
    load_config(path)  # what we write must load
    click.echo(f"wrote {path}")


_STOP = {"flag": False}


def _on_sigint(signum: int, frame: object) -> None:
    _STOP["flag"] = True


def _replay_one(path: str, config_path: str | None, bundle: str | None, out: str, load_kwargs: dict,
                show_progress: bool, probe_llm: bool = False) -> dict:  # fmt: skip
    """Replay one file into ``out`` (runs in a worker process with --jobs)."""
    import signal
    import time

    from fxgate.engine.config import load_config
    from fxgate.engine.loader import load_bars
    from fxgate.engine.replay import replay, write_outputs
    from fxgate.engine.report import write_report

    signal.signal(signal.SIGINT, _on_sigint)
    cfg = load_config(config_path)
    bars = load_bars(path, **load_kwargs)
    ens = None
    if bundle:
        from fxgate.models.ensemble import TreeEnsemble

        ens = TreeEnsemble.load(bundle)
    t0 = time.perf_counter()
    if show_progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} bars"),
                      TextColumn("{task.fields[rate]}"), TimeElapsedColumn()) as prog:  # fmt: skip
            task = prog.add_task(f"replay {bars.symbol}", total=None, rate="")

            def tick(done: int, total: int) -> None:
                el = time.perf_counter() - t0
                prog.update(task, completed=done, total=total, rate=f"{done / el:,.0f} bars/s" if el > 0 else "")

            res = replay(bars, cfg, bundle=ens, progress=tick, should_stop=lambda: _STOP["flag"],
                         fit_progress=lambda msg: prog.update(task, description=msg))  # fmt: skip
            prog.update(task, description=f"replay {bars.symbol}", completed=len(res.decisions))
    else:
        res = replay(bars, cfg, bundle=ens, should_stop=lambda: _STOP["flag"])
    files = write_outputs(res, out)
    rep = write_report(res, Path(out) / "report.html", cfg.hash)
    m = res.metrics
    probe = _probe_llm(res, cfg, Path(out)) if probe_llm and (cfg.l2.enabled or cfg.l3.enabled) else None
    return {"llm_layers": m.get("llm_layers", {}), "probe": probe, "file": path, "symbol": bars.symbol, "out": out,
            "report": str(rep), "files": files, "bars": m["bars"],
            "signals": m["signals"], "precision": m["precision"], "precision_ci95": m["precision_ci95"],
            "pnl_pips": m["pnl_pips"], "honesty": m["honesty"], "interrupted": res.interrupted,
            "seconds": time.perf_counter() - t0, "first_veto": m["first_veto"]}  # fmt: skip


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
    (out / "llm_probe.json").write_text(json.dumps(d.to_dict(), indent=1))
    return {"ts": str(bars.times[pick])[:16], "L1": d.layer("L1").reason, "L2": d.layer("L2").reason,
            "L3": d.layer("L3").reason, "file": str(out / "llm_probe.json")}  # fmt: skip


def _print_summary(r: dict) -> None:
    top = ", ".join(f"{k} {v}" for k, v in list(r["first_veto"].items())[:4]) or "none"
    click.echo(f"{r['symbol']}: {r['bars']} bars replayed out of sample in {r['seconds']:.0f} s, {r['signals']} "
               f"signals{' (interrupted: partial results)' if r['interrupted'] else ''}")  # fmt: skip
    click.echo(f"  first vetoes: {top}")
    for name, s in r.get("llm_layers", {}).items():
        click.echo(f"  {name}: evaluated on {s['evaluated']} bars (only bars every cheaper layer passed), passed "
                   f"{s['passed']}, no usable answer {s['failed_closed']}")  # fmt: skip
    if r.get("probe"):
        p = r["probe"]
        click.echo(f"  LLM diagnostic (mode=full, bar {p['ts']}, not a trade): L1 {p['L1']}")
        click.echo(f"    L2: {p['L2']}")
        click.echo(f"    L3: {p['L3']}")
        click.echo(f"    full Decision with the reasoning and the debate transcript: {p['file']}")
    click.echo(f"  {r['honesty']}")
    click.echo(f"  report: {r['report']}")


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
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory.")
@click.option(
    "--bundle",
    type=click.Path(path_type=Path),
    default=None,
    help="A fitted Layer-1 bundle (refused if its training window overlaps the replay). Default: walk-forward refits.",
)
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="Files replayed in parallel.")
@_load_options
def replay_cmd(data: tuple[Path, ...], config_path: Path | None, out: Path, bundle: Path | None, jobs: int,
               fmt: str, tz: str | None, symbol: str | None, policy: str) -> None:  # fmt: skip
    """Stream bars through Gate.on_bar and write decisions.parquet, trades.csv, metrics.json and report.html."""
    import signal
    from concurrent.futures import ProcessPoolExecutor

    load_kwargs = {"format": fmt, "tz": tz, "symbol": symbol, "policy": policy}
    outs = [str(out) if len(data) == 1 else str(out / p.stem) for p in data]
    if jobs == 1 or len(data) == 1:
        for p, o in zip(data, outs, strict=True):
            _print_summary(_replay_one(str(p), str(config_path) if config_path else None,
                                       str(bundle) if bundle else None, o, load_kwargs, True))  # fmt: skip
        return
    import multiprocessing

    signal.signal(signal.SIGINT, _on_sigint)
    # spawn, not fork: forking a process whose OpenMP/numba thread pools are running can deadlock the children
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futs = [pool.submit(_replay_one, str(p), str(config_path) if config_path else None,
                            str(bundle) if bundle else None, o, load_kwargs, False)
                for p, o in zip(data, outs, strict=True)]  # fmt: skip
        for f in futs:
            _print_summary(f.result())


@cli.command("demo")
@click.option("--out", type=click.Path(path_type=Path), default=Path("fxgate-demo"), show_default=True)
@click.option("--no-llm", is_flag=True, help="Replay layers 1 and 4 only (no nano model, no torch needed).")
def demo_cmd(out: Path, no_llm: bool) -> None:
    """Replay the bundled EURUSD H1 sample walk-forward through all four layers and write the report.

    The sample has no spread column: costs assume a 0.8-pip EURUSD spread. Layer 1 is refit on all earlier bars
    before each 1,000-bar window; the first 2,000 bars are history only. Layers 2 and 3 run fxgate's nano model —
    random weights, built on first use — which shows the machinery, not a trading edge: point [llm] model at a
    trained GGUF for that.
    """
    from fxgate.engine.config import DEFAULT_TOML
    from fxgate.engine.loader import sample_path

    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "gate.toml"
    text = DEFAULT_TOML.replace("spread = 0.0 ", "spread = 0.00008", 1)
    if not no_llm:
        text = (text.replace('model = ""           # path', 'model = "nano"       # path', 1)
                .replace("[l2]                 # LLM judge: same direction as Layer 1 and certainty >= threshold\n"
                         "enabled = false", "[l2]                 # LLM judge: same direction as Layer 1 and certainty "
                         ">= threshold\nenabled = true", 1)
                .replace("enabled = false      # and the risk manager", "enabled = true       # and the risk "
                         "manager", 1))  # fmt: skip
    cfg_path.write_text(text)
    click.echo(f"demo: bundled EURUSD H1 sample ({sample_path()}), config {cfg_path}")
    if not no_llm:
        click.echo("demo: layers 2 and 3 use the nano LLM (random weights: it exercises the machinery; its verdicts "
                   "are noise)")  # fmt: skip
    r = _replay_one(str(sample_path()), str(cfg_path), None, str(out), {"symbol": "EURUSD"}, True,
                    probe_llm=not no_llm)  # fmt: skip
    _print_summary(r)


@cli.group("train")
def train_group() -> None:
    """Training data, the formula catalogue, and the honest evaluation of a model."""


@train_group.command("data")
@click.option("--bars", "bars", multiple=True, type=click.Path(path_type=Path), required=True,
              help="Bar file; repeat for several pairs.")
@click.option("--jsonl", multiple=True, type=click.Path(path_type=Path), help="Your own JSONL (Alpaca, chat "
              "messages, TRL prompt/chosen/rejected); repeat.")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--horizon", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--spread", type=float, default=0.0, show_default=True, help="Price units, for bars without one.")
@click.option("--val-frac", type=float, default=0.15, show_default=True)
@click.option("--test-frac", type=float, default=0.15, show_default=True)
@click.option("--embargo", type=click.IntRange(min=0), default=0, help="Bars between splits (default: horizon).")
@click.option("--bundle", type=click.Path(path_type=Path), default=None,
              help="A Layer-1 bundle fitted before the validation cut: its probabilities go into the prompts.")
@click.option("--skip-bad", is_flag=True, help="Drop (and count) bad JSONL lines instead of failing.")
@_load_options
def train_data_cmd(bars: tuple[Path, ...], jsonl: tuple[Path, ...], out: Path, horizon: int, spread: float,
                   val_frac: float, test_frac: float, embargo: int, bundle: Path | None, skip_bad: bool, fmt: str,
                   tz: str | None, symbol: str | None, policy: str) -> None:  # fmt: skip
    """Build SFT/DPO/test sets from bar files with a leak-proof time split; write a manifest."""
    from fxgate.training import datasets
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn
    from rich.table import Table

    spec = datasets.SplitSpec(horizon=horizon, spread=spread, val_frac=val_frac, test_frac=test_frac,
                              embargo=embargo)  # fmt: skip
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}")) as prog:
        tasks: dict[str, int] = {}

        def tick(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = prog.add_task(f"bars of {name}", total=total)
            prog.update(tasks[name], completed=done)

        m = datasets.build(bars, out, spec, bundle=bundle, jsonl=jsonl, skip_bad=skip_bad, progress=tick,
                           load_kwargs={"format": fmt, "tz": tz, "symbol": symbol, "policy": policy})  # fmt: skip
    con = Console()
    tb = Table(title=f"{out} (cuts: val from {m['cuts']['val_from']}, test from {m['cuts']['test_from']}; "
                     f"embargo {m['embargo_bars']} bars)")  # fmt: skip
    kinds = sorted({k for v in m["counts"].values() for k in v})
    tb.add_column("split")
    for k in kinds:
        tb.add_column(k, justify="right")
    for split, c in m["counts"].items():
        tb.add_row(split, *[str(c.get(k, "")) for k in kinds])
    con.print(tb)
    if m["imported"]:
        ti = Table(title="imported JSONL")
        for col in ("source", "lines", "bad", "exact_duplicates", "near_duplicates", "sft", "dpo"):
            ti.add_column(col, justify="left" if col == "source" else "right")
        for r in m["imported"]["sources"]:
            ti.add_row(*[str(r[c]) for c in ("source", "lines", "bad", "exact_duplicates", "near_duplicates", "sft",
                                             "dpo")])  # fmt: skip
        con.print(ti)
    c = m["certainty_targets"]
    click.echo(f"certainty targets (training-split base rates): proposal right {c['same']:.3f}, no move past the "
               f"spread {c['none']:.3f}, opposite {c['opposite']:.3f}; manifest: {out / 'manifest.json'}")  # fmt: skip


@train_group.command("formulas")
@click.option("--list", "list_", is_flag=True, help="Print the number of entries per category.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the formula SFT samples (JSONL).")
def train_formulas_cmd(list_: bool, out: Path | None) -> None:
    """The formula catalogue: counts per category, or its SFT samples."""
    import json

    from fxgate.training.formulas import counts, sft_samples

    if not list_ and out is None:
        raise click.UsageError("give --list and/or --out FILE")
    if list_:
        c = counts()
        click.echo(f"{'category':<20}{'entries':>9}{'computable':>12}")
        for k, v in c.items():
            click.echo(f"{k:<20}{v['entries']:>9}{v['computable']:>12}")
        click.echo(f"{'total':<20}{sum(v['entries'] for v in c.values()):>9}"
                   f"{sum(v['computable'] for v in c.values()):>12}")  # fmt: skip
    if out is not None:
        s = sft_samples()
        out.write_text("".join(json.dumps(x) + "\n" for x in s))
        click.echo(f"wrote {len(s)} samples to {out}")


@train_group.command("eval")
@click.option("--model", type=click.Path(path_type=Path), required=True, help="A GGUF file.")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="A directory from `fxgate train data`.")
@click.option("--threshold", type=float, default=0.95, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Score the first N test scenarios only.")
@click.option("--think-budget", type=click.IntRange(min=0), default=384, show_default=True)
@click.option("--gpu-layers", type=int, default=0, show_default=True)
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None)
def train_eval_cmd(model: Path, data: Path, threshold: float, limit: int | None, think_budget: int, gpu_layers: int,
                   json_out: Path | None) -> None:  # fmt: skip
    """Score a model on the test split against the baselines (accuracy, precision with Wilson CI, coverage, ECE)."""
    import json

    from fxgate.training.evaluate import evaluate, table

    r = evaluate(model, data, threshold=threshold, limit=limit, think_budget=think_budget, n_gpu_layers=gpu_layers)
    click.echo(table(r))
    if r["errors"]:
        click.echo(f"no usable answer: {r['errors']}")
    if json_out is not None:
        json_out.write_text(json.dumps(r, indent=1))
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
        click.echo("preset nano: a 2-layer model trained for minutes on CPU. It checks the pipeline, not a trading "
                   "edge; its evaluation is printed next to the baselines so you can see that.")  # fmt: skip
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
    (out / "SUMMARY.md").write_text(text)
    click.echo("\n" + text)


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="fxgate")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
