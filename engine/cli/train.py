"""``fxgate train``: training data from bar files, the formula catalogue, the whole training run, its
verification, and the honest evaluation of a model against the baselines."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from fxgate.engine.cli._options import load_kwargs, load_options
from fxgate.engine.config import load_config
from fxgate.engine.core.atomic import write_text
from fxgate.training import datasets
from fxgate.training.evaluate import evaluate, table
from fxgate.training.formulas import listing, sft_samples
from fxgate.training.pipeline import run_all, verify

__all__ = ["train_group"]


#: ``--config``: the gate.toml the trained judge will be served with
_serving_config = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="The gate.toml the judge will be served with: the data's prompts are built for its [l4] modules, "
    "[l2] template, horizon and budget (default: the default config). The gate refuses a model trained on them "
    "under another [l4].",
)


@click.group("train")
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
@_serving_config
@click.option("--horizon", type=click.IntRange(min=1), default=None, help="Bars ahead (default: the config's, 1).")
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
@load_options
def train_data_cmd(
    bars: tuple[Path, ...],
    jsonl: tuple[Path, ...],
    out: Path,
    config_path: Path | None,
    horizon: int | None,
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
    cfg = load_config(config_path)
    spec = datasets.SplitSpec(
        horizon=cfg.horizon if horizon is None else horizon,
        spread=spread,
        val_frac=val_frac,
        test_frac=test_frac,
        embargo=embargo,
        n_ctx=cfg.llm.n_ctx,
        think_budget=cfg.l2.think_budget,
        answer_budget=cfg.l2.answer_budget,
    )
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
            load_kwargs=load_kwargs(fmt, tz, symbol, policy, encoding, decimal),
            config=cfg if config_path is not None else None,
            config_source=str(config_path) if config_path is not None else None,
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
@_serving_config
def train_all_cmd(preset: str, out: Path, bars: tuple[str, ...], base: str | None, config_path: Path | None) -> None:
    """Data, SFT, DPO, merge, GGUF F16 + Q8_0, parity check, Modelfile, evaluation, manifest, verify."""
    if preset == "nano":
        click.echo(
            "preset nano: a 2-layer model trained for minutes on CPU. It checks the pipeline, not a trading "
            "edge; its evaluation is printed next to the baselines so you can see that."
        )
    cfg = load_config(config_path) if config_path is not None else None
    m = run_all(
        preset,
        out,
        bars=list(bars) or None,
        base=base,
        log=click.echo,
        config=cfg,
        config_source=str(config_path) if config_path is not None else None,
    )
    click.echo(table({"model_scores": m["evaluation"]["model_scores"], "baselines": m["evaluation"]["baselines"]}))
    click.echo(f"parity: {m['parity']}")


@train_group.command("verify")
@click.argument("run_dir", type=click.Path(path_type=Path))
def train_verify_cmd(run_dir: Path) -> None:
    """Check a (downloaded) run directory against its manifest.json; exit 1 on any missing, short or altered file."""
    problems = verify(run_dir)
    if problems:
        for x in problems:
            click.echo(f"FAIL {x}", err=True)
        raise SystemExit(1)
    n = len(json.loads((run_dir / "manifest.json").read_text())["files"])
    click.echo(f"OK: {n} files match {run_dir / 'manifest.json'} (size and sha256)")
