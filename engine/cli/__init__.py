"""The ``fxgate`` command line: one file per command group, each imported only when its command runs.

================  =====================================================================
file              commands
================  =====================================================================
``data.py``       ``fxgate data check``, ``fxgate data convert``
``fit.py``        ``fxgate fit`` (the Layer-1 ensemble, walk-forward, into a bundle)
``config.py``     ``fxgate config init``, ``fxgate config check``
``replay.py``     ``fxgate replay`` (bar files through the gate, into run directories)
``demo.py``       ``fxgate demo`` (the bundled sample through all four layers)
``train.py``      ``fxgate train data|formulas|eval|all|verify``
``bench.py``      ``fxgate bench`` (every script in benchmarks/, one table)
``calibrate.py``  ``fxgate calibrate`` (certified thresholds: engine/calibrate.py)
``serve.py``      ``fxgate serve`` (the HTTP API: engine/server.py, engine/service.py)
``audit.py``      ``fxgate audit verify``
================  =====================================================================

Shared pieces: ``_group.py`` (the root group: clean errors, lazy subcommands), ``_options.py`` (the loader's
options), ``_signals.py`` (SIGINT/SIGTERM: stop after the current bar), ``_runs.py`` (one or many replays into run
directories), ``_replay_file.py`` (one file: load, replay, write, report), ``_parallel.py`` (``replay --jobs``).
The CLI is orchestration: it may import every package, training included (the serving code may not).
"""

from __future__ import annotations

import click

from fxgate.engine.cli._group import LazyGroup
from fxgate.engine.core.version import __version__

__all__ = ["main", "cli"]

#: name -> ("module:command", its one-line help, as ``fxgate --help`` lists it)
COMMANDS = {
    "data": ("fxgate.engine.cli.data:data", "Check, convert and resample bar files."),
    "fit": ("fxgate.engine.cli.fit:fit_cmd", "Fit the Layer-1 ensemble walk-forward and write a verified bundle."),
    "config": ("fxgate.engine.cli.config:config_group", "Gate configuration files."),
    "replay": (
        "fxgate.engine.cli.replay:replay_cmd",
        "Stream bars through Gate.on_bar and write decisions.parquet, trades.csv, metrics.json, report.html and, "
        "last, run.json (the run's id, config hash, data sha256, status, and every file's size and sha256).",
    ),
    "demo": (
        "fxgate.engine.cli.demo:demo_cmd",
        "Replay the bundled EURUSD H1 sample walk-forward through all four layers and write the report.",
    ),
    "train": (
        "fxgate.engine.cli.train:train_group",
        "Training data, the formula catalogue, and the honest evaluation of a model.",
    ),
    "calibrate": (
        "fxgate.engine.cli.calibrate:calibrate_cmd",
        "Certify thresholds for a target precision (Learn-then-Test) and write the certified config, or refuse.",
    ),
    "serve": (
        "fxgate.engine.cli.serve:serve_cmd",
        "Serve the gate over HTTP for trading bots: many symbols, crash-safe state, audit log, metrics.",
    ),
    "audit": ("fxgate.engine.cli.audit:audit_group", "Check audit logs: hash chain, sequence, schema, bar times."),
    "bench": (
        "fxgate.engine.cli.bench:bench_cmd",
        "Run every script in benchmarks/ and print one table: figure, ours, reference, ratio, target, met.",
    ),
}


@click.group(cls=LazyGroup, lazy_subcommands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fxgate")
def cli() -> None:
    """fxgate: live signal-gating inference engine for forex."""


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="fxgate")
