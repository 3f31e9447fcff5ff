"""``fxgate calibrate``: certify the gate's thresholds for a target precision (engine/calibrate.py) and write the
certified config; or refuse, saying why."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from fxgate.engine.calibrate import calibrate
from fxgate.engine.cli._options import load_kwargs, load_options
from fxgate.engine.config import dump_toml, load_config
from fxgate.engine.core.atomic import write_text
from fxgate.engine.loader import load_bars, sample_path
from fxgate.models.ensemble import TreeEnsemble

__all__ = ["calibrate_cmd"]


@click.command("calibrate")
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Bar file (any format load_bars reads). Default: the bundled EURUSD H1 sample.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Gate config whose [certify] path thresholds are certified. Default: every default.",
)
@click.option(
    "--target-precision",
    "target",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    required=True,
    help="Precision to certify, e.g. 0.6 (a signal is correct when its P&L after the spread > 0).",
)
@click.option(
    "--delta",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="The certificate may fail with probability at most delta (default [certify] delta, 0.05).",
)
@click.option(
    "--calibration-bars",
    type=click.IntRange(min=10),
    default=None,
    help="The most recent bars used to calibrate (default [certify] calibration_bars, 1000).",
)
@click.option(
    "--bundle",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Layer-1 bundle fitted before the calibration block (refused if its labels reach into it). "
    "Default: fit one on the bars before the block and write it to --bundle-out.",
)
@click.option(
    "--bundle-out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where the fitted bundle goes (default: beside --out, <out>.bundle/). Serve it with the config.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("gate.calibrated.toml"),
    show_default=True,
    help="The certified config to write.",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also write the certificate and the precision-coverage curve as JSON.",
)
@load_options
def calibrate_cmd(
    data_path: Path | None,
    config_path: Path | None,
    target: float,
    delta: float | None,
    calibration_bars: int | None,
    bundle: Path | None,
    bundle_out: Path | None,
    out: Path,
    json_out: Path | None,
    fmt: str,
    tz: str | None,
    symbol: str | None,
    policy: str,
    encoding: str | None,
    decimal: str,
) -> None:
    """Certify thresholds for a target precision (Learn-then-Test) and write the certified config, or refuse.

    The thresholds on [certify] path are chosen so that P(precision >= target) >= 1 - delta over the most recent
    bars (Hoeffding-Bentkus p-values, fixed-sequence testing) and written into the config with the certificate and
    the live precision monitor. Exit 0 when certified; 1, writing nothing, when no threshold can be certified (the
    reason is printed)."""
    console = Console()
    cfg = load_config(config_path)
    path = data_path or sample_path()
    bars = load_bars(path, **load_kwargs(fmt, tz, symbol, policy, encoding, decimal))
    console.print(f"data: {bars!r} from {path}", highlight=False, markup=False)
    if bars.spread is None and cfg.spread == 0:
        console.print(
            "warning: no spread column and the config's spread = 0: a signal counts as correct on any favourable "
            "move, before costs. Fix: set spread in the config (EURUSD ~0.00008)",
            style="yellow",
            markup=False,
        )
    ens = TreeEnsemble.load(bundle) if bundle is not None else None
    cal = calibrate(
        bars,
        cfg,
        ensemble=ens,
        target=target,
        delta=delta,
        calibration_bars=calibration_bars,
        progress=lambda m: console.print(f"  {m}", markup=False),
    )
    cert = cal.certificate
    k, n = cal.base_rate
    w0, w1 = cal.to_dict()["window"]
    console.print(
        f"calibration block: {w0} .. {w1} ({cal.block[1] - cal.block[0]} "
        f"bars, {n} with a Layer-1 candidate; trading every candidate: {k}/{n} correct after the spread"
        + (f", {k / n:.1%})" if n else ")"),
        highlight=False,
    )
    if json_out is not None:
        write_text(json_out, json.dumps(cal.to_dict(), indent=1, allow_nan=False) + "\n")
    if cal.config is None:
        console.print(f"[bold]not certified[/bold]: {escape(cert.reason)}. Nothing written: the answer is no trade.")
        raise SystemExit(1)
    if ens is None:
        dest = bundle_out or out.with_suffix(".bundle")
        cal.ensemble.save(dest)
        saved = TreeEnsemble.load(dest)  # the certificate names the bundle as it is served: its hash as loaded
        cal.config = replace(cal.config, certify=replace(cal.config.certify, bundle_hash=saved.bundle_hash[:16]))
        console.print(f"bundle: {dest} (fitted on the bars before the block; serve it with this config)")
    header = (
        f"fxgate calibrate: certified precision >= {cert.target:g} with probability >= {1 - cert.delta:g}\n"
        f"over {w0} .. {w1} of {path.name} "
        f"({cert.n_signals} signals, {cert.n_correct} correct).\n{cert.reason}"
    )
    write_text(out, dump_toml(cal.config, header))
    console.print(f"[bold]certified[/bold]: {escape(cert.reason)}")
    console.print(f"thresholds: {cal.thresholds}; config: {out}")
