"""Replay runs: claim each output directory (run.json "running"), replay each file (in worker processes with
``--jobs``), write each run.json last, and exit 128 + the signal when a stop signal cut the run short. Shared by
``fxgate replay`` and ``fxgate demo``."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from fxgate.engine.cli._parallel import run_parallel
from fxgate.engine.cli._replay_file import Job, print_summary, replay_one
from fxgate.engine.cli._signals import Abort, Stop
from fxgate.engine.config import GateConfig
from fxgate.engine.core.errors import FxgateError
from fxgate.engine.core.hashing import file_sha256
from fxgate.engine.core.version import __version__
from fxgate.engine.executors import run_ray, timings_line
from fxgate.engine.rundir import OUTPUT_NAMES, check_run_dir, finish_run, start_run
from fxgate.engine.summary_page import write_summary
from fxgate.training.nano import ensure_nano

__all__ = ["check_out_path", "check_data_file", "run_replays"]


def check_out_path(out: Path) -> None:
    """Refuse an ``--out`` that is an existing file, or lies under one, before any work."""
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


def check_data_file(p: Path) -> None:
    """Refuse a bar file that is missing or a directory, before any output directory is claimed."""
    if not p.exists():
        raise FxgateError(f"{p}: no such file. Fix: check the path (relative paths start from the current directory)")
    if not p.is_file():
        raise FxgateError(f"{p}: is a directory, not a bar file. Fix: pass the file itself")


def _jsonable(v: Any) -> Any:
    """A command option's value as run.json records it."""
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    return v if v is None or isinstance(v, bool | int | float | str) else str(v)


def run_replays(
    jobs: list[Job],
    cfg: GateConfig,
    config_path: Path | None,
    bundle: Path | None,
    load_kwargs: dict,
    n_jobs: int,
    force: bool,
    stop: Stop,
    *,
    probe_llm: bool = False,
    extra_files: tuple[str, ...] = (),
    before: Callable[[], None] | None = None,
    replay_kwargs: dict | None = None,
    executor: str = "local",
    address: str | None = None,
) -> None:
    """Claim every output directory (run.json "running"), replay each file (in worker processes with
    ``n_jobs`` > 1; as Ray tasks with ``executor="ray"``, engine/executors.py), write each run.json last with the
    seconds of every Layer-1 fit and of the bar loop (``timings``: they differ between runs, so they are kept out of
    metrics.json), and exit 128 + the signal if a stop signal cut the run short.
    ``cfg`` is the loaded ``config_path`` (loaded by the caller, so that a bad config fails before anything else).
    A config whose LLM layers run the nano model gets it built here, before any gate reads it from the cache."""
    ctx = click.get_current_context()
    refusals = [r for j in jobs for r in check_run_dir(j.out).refusals]
    if refusals and not force:
        raise FxgateError("\n".join(refusals))  # before any work: nothing was loaded or written yet
    for j in jobs:
        check_data_file(j.data)
    l3 = cfg.l3
    named = {cfg.llm.model} if cfg.l2.enabled else set()
    named |= {cfg.llm.model, l3.bull_model, l3.bear_model, l3.risk_model} if l3.enabled else set()
    if "nano" in named:  # the debate's roles may name their own model ("" = [llm] model)
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
        if executor == "ray":
            run_ray(jobs, args, cfg, stop, probe_llm, address)
        elif n_jobs == 1 or len(jobs) == 1:
            for j, a in zip(jobs, args, strict=True):
                # a signal before or during this file stops it after its first/current bar; later files are not run
                timings: dict[str, Any] = {}
                try:
                    j.result = replay_one(*a[:5], {**a[5], "timings": timings}, True, probe_llm, should_stop=stop)
                except (FxgateError, ValueError, OSError) as exc:
                    j.error, j.status = exc, "failed"
                else:
                    j.result["timings"] = timings
                    print_summary(j.result)
                    click.echo(timings_line(timings))
                    j.status = "interrupted" if j.result["interrupted"] else "complete"
                if stop():
                    break
        else:
            run_parallel(jobs, args, n_jobs, stop, probe_llm)
    except Abort as exc:
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
    rows: dict[str, dict[str, Any]] = {}  # summary.html: one row per file, with its status and error
    for j in jobs:
        if j.run is None:
            continue
        err = None
        if isinstance(j.error, Abort):
            err = (
                f"aborted by a second {signal.Signals(j.error.signum).name}: the results are incomplete (only "
                "the files listed here were written)"
            )
        elif j.error is not None:
            err = str(j.error)
        elif j.result is None:
            err = "not run: stopped by a signal before this file's turn"
        if j.result is not None and j.result.get("timings"):
            j.run = {**j.run, "timings": j.result["timings"]}
        finish_run(j.out, j.run, j.status, [n for n in written if (j.out / n).exists()], error=err)
        status = j.status if j.result is not None or j.status == "failed" else "not run"
        rows[j.out.name] = {**(j.result or {}), "status": status, "error": err}
    if len(jobs) > 1 and rows and len({j.out.parent for j in jobs}) == 1:
        page = write_summary(rows, jobs[0].out.parent / "summary.html")
        click.echo(f"summary of {len(rows)} files: {page.resolve().as_uri()}")
    failed = [j for j in jobs if j.status == "failed"]
    if failed:
        if len(jobs) == 1:
            raise failed[0].error  # type: ignore[misc]
        raise FxgateError("\n".join(f"{j.data}: {j.error}" for j in failed))
    signum = stop.signum or next((j.result.get("signum") for j in jobs if j.result and j.result.get("signum")), None)
    if signum is None and any(j.status == "interrupted" for j in jobs):
        signum = signal.SIGINT
    if signum is not None:
        if any(isinstance(j.error, Abort) for j in jobs):
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
