"""``fxgate serve``: the gate behind an HTTP API (engine/server.py) for trading bots, many symbols at once."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click

from fxgate.engine.config import load_config
from fxgate.engine.server import is_loopback, openapi_spec, read_token, run
from fxgate.engine.service import BarService
from fxgate.models.ensemble import TreeEnsemble

__all__ = ["serve_cmd"]


@click.command("serve")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Gate config (TOML; `fxgate config init` writes one). Default: every default.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Any non-loopback address needs a token.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8750, show_default=True)
@click.option(
    "--state",
    "state_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("fxgate-state"),
    show_default=True,
    help="Snapshots and the audit log; a restart on the same directory continues.",
)
@click.option(
    "--bundle",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Layer-1 bundle (fxgate fit) shared by every symbol.",
)
@click.option(
    "--bundle-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Directory of per-symbol bundles, BUNDLE_DIR/<SYMBOL>/ (falls back to --bundle).",
)
@click.option("--timeframe", default=None, help="Bar timeframe, e.g. H1. Default: the bundle's.")
@click.option("--symbol", "symbols", multiple=True, help="A symbol whose gate exists from the start (repeatable).")
@click.option(
    "--token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="File holding the bearer token (mode 600). Or set $FXGATE_TOKEN. Never on the command line.",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="warning",
    show_default=True,
)
@click.option(
    "--openapi",
    "openapi_out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the OpenAPI spec to this file and exit (no server, no state).",
)
def serve_cmd(
    config_path: Path | None,
    host: str,
    port: int,
    state_dir: Path,
    bundle: Path | None,
    bundle_dir: Path | None,
    timeframe: str | None,
    symbols: tuple[str, ...],
    token_file: Path | None,
    log_level: str,
    openapi_out: Path | None,
) -> None:
    """Serve the gate over HTTP for trading bots: many symbols, crash-safe state, audit log, metrics.

    POST /v1/bars, GET /v1/health, /v1/config, /v1/symbols, /metrics.

    Every accepted bar's Decision (and the bar) is appended to the audit log in STATE/audit before the answer is
    sent; each symbol's state is snapshotted to STATE/snapshots; a restart after a crash restores both and loses no
    acknowledged bar."""
    config = load_config(config_path)
    if openapi_out is not None:
        spec = openapi_spec(config.server.max_bars)
        openapi_out.write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
        click.echo(f"wrote {openapi_out}")
        return
    token = read_token(token_file)
    if not is_loopback(host) and not token:  # before any model is loaded
        raise click.UsageError(
            f"--host {host} is not a loopback address and no token is set: anyone who can reach it could trade "
            "through this gate. Fix: export FXGATE_TOKEN=<long random token> or pass --token-file FILE (mode 600); "
            "or serve on 127.0.0.1"
        )
    if symbols:
        config = replace(
            config, server=replace(config.server, symbols=tuple(sorted({*config.server.symbols, *symbols})))
        )
    ensemble = TreeEnsemble.load(bundle) if bundle is not None else None
    tf = timeframe or (ensemble.timeframe if ensemble is not None else None)
    if not tf:
        raise click.UsageError("--timeframe is needed when no --bundle says it (e.g. --timeframe H1)")

    service = BarService(config, timeframe=tf, state_dir=state_dir, ensemble=ensemble, bundle_dir=bundle_dir)
    refed = sum(service.refed.values())
    click.echo(
        f"fxgate serve: http://{host}:{port}  {tf}  config {config.hash}  state {state_dir}  "
        f"{len(service.pool)} symbol(s) restored, {refed} bar(s) re-fed from the audit log, "
        f"auth {'on' if token else 'off (loopback only)'}",
        err=True,
    )
    for m in service.refeed_mismatches:
        click.secho(f"warning: re-fed bar decided differently from its log: {m}", fg="yellow", err=True)
    run(service, host=host, port=port, token=token, log_level=log_level)
