"""``fxgate replay``: bar files streamed through ``Gate.on_bar`` into run directories (one per file), in parallel
processes with ``--jobs``, or as Ray tasks with ``--executor ray`` (engine/executors.py, docs/cluster.md)."""

from __future__ import annotations

from pathlib import Path

import click

from fxgate.engine.cli._options import load_kwargs, load_options
from fxgate.engine.cli._replay_file import Job
from fxgate.engine.cli._runs import check_out_path, run_replays
from fxgate.engine.cli._signals import stop_on_signals
from fxgate.engine.config import load_config
from fxgate.engine.core.errors import FxgateError

__all__ = ["replay_cmd", "out_dirs"]


@click.command("replay")
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
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="ray: one Ray task per (file, walk-forward fit) and one per file's replay, on the cluster at --address "
    "(a local one without it); same outputs as local. Needs pip install 'fxgate[cluster]'.",
)
@click.option(
    "--address",
    default=None,
    help="With --executor ray: the cluster to run on (HEAD:6379, or auto on a node of a running cluster). "
    "Every node must see --data, --config, --bundle and --out at the same paths.",
)
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
@load_options
def replay_cmd(
    data: tuple[Path, ...],
    config_path: Path | None,
    out: Path,
    bundle: Path | None,
    jobs: int,
    executor: str,
    address: str | None,
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
    if address is not None and executor != "ray":
        raise FxgateError(
            f"--address {address}: names a Ray cluster, which only --executor ray uses. Fix: add --executor ray, "
            "or drop --address"
        )
    if executor == "ray" and jobs != 1:
        raise FxgateError(
            f"--jobs {jobs}: with --executor ray the cluster's CPUs decide how many tasks run at once. Fix: drop "
            "--jobs (or use --executor local --jobs N)"
        )
    with stop_on_signals() as stop:
        check_out_path(out)  # an existing file: refused at once, before the config or any bar is read
        cfg = load_config(config_path)
        outs = out_dirs(out, data)
        if len(data) > 1:
            for p, o in zip(data, outs, strict=True):
                if o.name != p.stem:
                    click.echo(f"{p} -> {o} (another --data file has the stem {p.stem!r})")
        jobs_list = [Job(p, o) for p, o in zip(data, outs, strict=True)]
        run_replays(
            jobs_list,
            cfg,
            config_path,
            bundle,
            load_kwargs(fmt, tz, symbol, policy, encoding, decimal),
            jobs,
            force,
            stop,
            replay_kwargs={"skip_trained_bars": skip_trained_bars},
            executor=executor,
            address=address,
        )


def out_dirs(out: Path, data: tuple[Path, ...]) -> list[Path]:
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
