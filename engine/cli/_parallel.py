"""``replay --jobs N``: files replayed in worker processes, stopped together by the parent's signal, and never
left behind by a parent that dies (kill -9)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, ProcessPoolExecutor, wait
from typing import Any

import click

from fxgate.engine.cli._replay_file import Job, print_summary, replay_one
from fxgate.engine.cli._signals import Stop
from fxgate.engine.core.errors import FxgateError
from fxgate.engine.executors import timings_line

__all__ = ["run_parallel"]

# A worker process's state: the parent's stop event and pid, and the first signal it got itself.
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
    timings: dict[str, Any] = {}
    try:
        r = replay_one(
            path,
            config_path,
            bundle,
            out,
            load_kwargs,
            {**replay_kwargs, "timings": timings},
            False,
            probe_llm,
            should_stop=_worker_should_stop,
        )
    except FxgateError as exc:  # re-raised plain: subclasses such as BarDataError(problems) do not unpickle whole
        raise FxgateError(str(exc)) from None
    r["signum"] = _WORKER["signum"]
    r["timings"] = timings
    return r


def run_parallel(jobs: list[Job], args: list[tuple], n_jobs: int, stop: Stop, probe_llm: bool) -> None:
    """Replay ``jobs`` (``args``: :func:`replay_one`'s leading arguments for each) in up to ``n_jobs`` worker
    processes, filling in each job's result, error and status. A stop signal reaches every worker, which stops
    after its current bar; files not started yet are not started."""
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
                print_summary(j.result)
                click.echo(timings_line(j.result["timings"]))
                j.status = "interrupted" if j.result["interrupted"] else "complete"
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
