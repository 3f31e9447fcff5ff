"""``fxgate replay --executor ray [--address ADDR]``: walk-forward replays on a Ray cluster, with the same outputs as
the local run (docs/cluster.md).

Two kinds of task, both exact:

1. one **fit** task per (file, scheduled fit): the Layer-1 ensemble for a window depends only on the bars before
   it and the config, never on the gate's state, so every fit of :func:`~fxgate.engine.replaying.fit_schedule`
   (each window's start, and each ``[certify]`` calibration block's) runs as soon as a core is free;
2. one **replay** task per file: ``Gate.on_bar`` over its bars in order (the gate's state at a window's start
   depends on every earlier bar, so a file's bars are never split), with the fits of phase 1 handed to
   :func:`~fxgate.engine.replaying.replay` as ``models``. It starts at once and waits for each window's fit only
   when it reaches that window. Drift-triggered refits (``[replay] refit_on_drift``) cannot be scheduled: they
   are fitted inside the replay task.

A fitted :class:`~fxgate.models.ensemble.TreeEnsemble` crosses process and node boundaries pickled whole (native
boosters, calibrators, winsorizer, compiled kernels' arrays and manifest): it predicts exactly what it predicted
before (tests/engine/test_ray_replay.py checks compiled and native outputs and the ``bundle_hash``). Saving it as a
bundle instead would add the files and the probe to its manifest and so change the ``bundle_hash`` that
``metrics.json`` records.

Floating point: the outputs are the same bits as the local run's only where the arithmetic is. Two things in the
stack depend on the process, so the tasks copy the driver's: the BLAS and OpenMP thread counts (Ray starts workers
with ``OMP_NUM_THREADS`` = the task's CPUs, and the regime module's HMM fit sums in another order with fewer BLAS
threads: 1e-13 apart), and the order the feature kernels are first compiled in (numba's fastmath code for the batch
features differs in the last bit when the live ``FeatureEngine.update`` was compiled first, as ``Gate.warm_up``
does before a replay's first fit; a fit task does the same). Nodes with another CPU or other library builds may
still differ in the last bits (numba compiles for the host CPU; OpenBLAS picks kernels per CPU).

Every node must see the data files, the config, a ``--bundle`` and ``--out`` at the same paths (a shared
filesystem): the replay task reads and writes them where it runs, and ``metrics.json`` records the data's path.

Stopping: the first SIGINT/SIGTERM sets a stop flag (a small Ray actor) that every replay task polls four times a
second; each stops after its current bar and writes its partial results as the local run does, fits not started are
cancelled, and a file whose replay had not started is not run. A second signal cancels every task at once (its
worker is killed): files already renamed into place stay whole, temporaries are removed by the next run. ``ray`` is
imported by :func:`import_ray` alone (an optional dependency: ``pip install 'fxgate[cluster]'``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import click
from threadpoolctl import threadpool_info, threadpool_limits

from fxgate.engine.cli._replay_file import Job, print_summary, replay_one
from fxgate.engine.cli._signals import Stop
from fxgate.engine.config import GateConfig
from fxgate.engine.core.bars import Bar, Bars
from fxgate.engine.core.errors import FxgateError
from fxgate.engine.loader import load_bars
from fxgate.engine.replaying import fit_schedule, fit_window
from fxgate.models.ensemble import EnsembleConfig
from fxgate.models.features import FeatureEngine

__all__ = ["import_ray", "run_ray", "timings_line", "RayFits"]

_POLL_S = 0.25  # how often a replay task looks at the stop flag, and a waiting fit at it


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`FxgateError` with the install hint."""
    try:
        import ray
    except ImportError as exc:
        raise FxgateError(
            f"--executor ray needs the ray package, which is not installed ({exc}). Fix: pip install "
            "'fxgate[cluster]', or replay with local processes (drop --executor ray; --jobs N)"
        ) from None
    return ray


def timings_line(t: dict[str, Any]) -> str:
    """One console line from :func:`~fxgate.engine.replaying.replay`'s ``timings``."""
    fits = t.get("refits") or []
    secs = [f["seconds"] for f in fits if f.get("seconds") is not None]
    head = "  timings (every fit in run.json): "
    fit = (
        f"{len(fits)} Layer-1 fits, {sum(secs):.1f} s ({sum(secs) / len(secs):.1f} s each, max {max(secs):.1f} s)"
        if secs
        else "no Layer-1 fit"
    )
    rate = t.get("bars_per_second")
    bars = f"{t.get('replayed_bars', 0)} bars in {t.get('bar_seconds', 0):.1f} s" + (
        f" ({rate:,.0f} bars/s without the fits)" if rate else ""
    )
    return head + fit + "; " + bars


class _Flag:
    """The stop flag (a Ray actor): set by the driver on the first signal, polled by every replay task."""

    def __init__(self) -> None:
        self.on = False

    def set(self) -> None:
        self.on = True

    def is_set(self) -> bool:
        return self.on


def _load_task(path: str, load_kwargs: dict) -> tuple[int, Bars]:
    try:
        bars = load_bars(path, **load_kwargs)
    except FxgateError as exc:  # re-raised plain: subclasses such as BarDataError(problems) do not unpickle whole
        raise FxgateError(str(exc)) from None
    return len(bars), bars


def _threads() -> dict[str, int]:
    """The BLAS and OpenMP thread counts of this process (the driver's, for the tasks to copy)."""
    out: dict[str, int] = {}
    for lib in threadpool_info():
        out[lib["user_api"]] = max(out.get(lib["user_api"], 0), int(lib["num_threads"]))
    return out


def _as_driver(threads: dict[str, int], timeframe: str) -> None:
    """Make this worker compute as the driver's process does (see the module docstring): its thread counts, and the
    live feature kernel compiled before the batch one (as ``Gate.warm_up`` does before a replay's first fit)."""
    for api, n in threads.items():
        threadpool_limits(limits=n, user_api=api)
    FeatureEngine(timeframe).update(Bar(0, 1.0, 1.0, 1.0, 1.0, 1.0, timeframe=timeframe))


def _fit_task(bars: Bars, cfg: GateConfig, k: int, threads: dict[str, int]) -> tuple[Any, float, str]:
    _as_driver(threads, bars.timeframe)
    try:
        ens, secs = fit_window(bars, cfg, k)
    except FxgateError as exc:
        raise FxgateError(str(exc)) from None
    return ens, secs, f"ray task on {socket.gethostname()}"


class RayFits(Mapping):
    """``replay(models=...)`` for a replay task: ``k`` -> the ensemble of the Ray fit task for ``bars[:k]``, fetched
    when the replay reaches it (it waits, polling the stop flag; None once the run is stopped). Nothing is cached:
    the replay keeps what it needs. ``times`` (``replay(fit_times=...)``) is filled as fits are fetched."""

    def __init__(self, refs: dict[int, Any], stopped: threading.Event) -> None:
        self.refs, self.stopped = refs, stopped
        self.times: dict[int, tuple[float, str]] = {}

    def __getitem__(self, k: int) -> Any:
        ray = import_ray()
        ref = self.refs[k]
        while True:
            if self.stopped.is_set():
                return None
            try:  # ray.get, not ray.wait: a task blocked in ray.get lends its CPU to the fits it waits for
                ens, secs, where = ray.get(ref, timeout=_POLL_S)
            except ray.exceptions.GetTimeoutError:
                continue
            except ray.exceptions.TaskCancelledError:
                return None  # cancelled by the stop signal
            self.times[k] = (secs, where)
            return ens

    def __contains__(self, k: object) -> bool:
        return k in self.refs

    def __iter__(self) -> Iterator[int]:
        return iter(self.refs)

    def __len__(self) -> int:
        return len(self.refs)


def _replay_task(
    path: str,
    config_path: str | None,
    bundle: str | None,
    out: str,
    load_kwargs: dict,
    replay_kwargs: dict,
    probe_llm: bool,
    flag: Any,
    refs: list[tuple[int, Any]],  # nested in a list, so that Ray hands the refs over instead of waiting for them
    threads: dict[str, int],
) -> dict | None:
    ray = import_ray()
    for api, n in threads.items():  # the replay's own arithmetic (the regime HMM's BLAS sums) as the driver's
        threadpool_limits(limits=n, user_api=api)
    stopped = threading.Event()
    if ray.get(flag.is_set.remote()):
        return None  # stopped before this file's turn: not run (as the local run leaves it)
    done = threading.Event()

    def watch() -> None:
        while not done.wait(_POLL_S):
            try:
                if ray.get(flag.is_set.remote(), timeout=10):
                    stopped.set()
                    return
            except ray.exceptions.RayError:  # the driver and its actor are gone: stop, nobody records what we write
                stopped.set()
                return

    threading.Thread(target=watch, name="fxgate-ray-stop-watch", daemon=True).start()
    fits = RayFits(dict(refs), stopped)
    timings: dict[str, Any] = {}
    try:
        r = replay_one(
            path,
            config_path,
            bundle,
            out,
            load_kwargs,
            {**replay_kwargs, "models": fits, "fit_times": fits.times, "timings": timings},
            False,
            probe_llm,
            should_stop=stopped.is_set,
        )
    except FxgateError as exc:
        raise FxgateError(str(exc)) from None
    finally:
        done.set()
    r["timings"] = timings
    r["signum"] = None
    return r


def _connect(ray: Any, address: str | None) -> bool:
    """Connect to the cluster at ``address`` (or start a local one); False when the caller already had Ray running
    (then it is left running)."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, log_to_driver=True, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"--address {address}" if address else "a local Ray instance"
        raise FxgateError(
            f"--executor ray: cannot connect to {where} ({exc}). Fix: start the cluster first (`ray start --head` "
            "on the head node, `ray start --address HEAD:6379` on each worker) and pass --address HEAD:6379 "
            "(or auto on a cluster node), or drop --address to start a local instance"
        ) from None
    return True


def _cause(ray: Any, exc: BaseException) -> BaseException:
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, FxgateError | ValueError | OSError):
            return cause
        return FxgateError(f"its Ray task failed: {str(exc).strip().splitlines()[-1]}")
    if isinstance(exc, ray.exceptions.RayError):
        return FxgateError(f"its Ray task died ({type(exc).__name__}). Fix: check the cluster (`ray status`)")
    return exc


def run_ray(
    jobs: list[Job], args: list[tuple], cfg: GateConfig, stop: Stop, probe_llm: bool, address: str | None
) -> None:
    """Replay ``jobs`` (``args``: :func:`replay_one`'s leading arguments for each) on Ray, filling in each job's
    result, error and status as :func:`~fxgate.engine.cli._parallel.run_parallel` does (see the module docstring)."""
    ray = import_ray()
    started = _connect(ray, address)
    cpus = max(1, EnsembleConfig().threads)  # the CPUs a fit task asks for: the threads its boosters use
    threads = _threads()
    load = ray.remote(num_returns=2, num_cpus=1, max_retries=0)(_load_task)
    fit = ray.remote(num_cpus=cpus, max_retries=0)(_fit_task)
    rep = ray.remote(num_cpus=1, max_retries=0)(_replay_task)
    flag = ray.remote(num_cpus=0)(_Flag).remote()
    fit_refs: list[Any] = []
    futs: dict[Any, Job] = {}
    try:
        loads = {}
        for j, a in zip(jobs, args, strict=True):
            path, bundle = a[0], a[2]
            if bundle is None:  # walk-forward: its fits are scheduled up front
                loads[id(j)] = load.remote(path, a[4])
        for j, a in zip(jobs, args, strict=True):
            refs: list[tuple[int, Any]] = []
            if id(j) in loads:
                n_ref, bars_ref = loads[id(j)]
                try:
                    n = ray.get(n_ref)
                except ray.exceptions.RayError as exc:
                    j.error, j.status = _cause(ray, exc), "failed"
                    continue
                if n >= cfg.replay.train_bars + 10:  # else the replay refuses it, with the fix
                    refs = [(k, fit.remote(bars_ref, cfg, k, threads)) for k in fit_schedule(n, cfg)]
                    fit_refs += [r for _, r in refs]
            futs[rep.remote(*a, probe_llm, flag, refs, threads)] = j
            if stop():
                break
        pending = set(futs)
        flagged = False
        while pending:
            done, still = ray.wait(list(pending), num_returns=1, timeout=0.2)
            pending = set(still)
            if stop() and not flagged:
                flagged = True
                flag.set.remote()  # every replay stops after its current bar and writes its partial results
                for r in fit_refs:
                    ray.cancel(r)  # fits not started are not started; one running is interrupted
            for f in done:
                j = futs[f]
                try:
                    j.result = ray.get(f)
                except ray.exceptions.RayError as exc:
                    j.error, j.status = _cause(ray, exc), "failed"
                    continue
                if j.result is None:  # its turn came after the stop signal: not run
                    continue
                print_summary(j.result)
                click.echo(timings_line(j.result["timings"]))
                j.status = "interrupted" if j.result["interrupted"] else "complete"
    except BaseException:  # a second signal (Abort) or a bug: no task outlives us
        for r in [*futs, *fit_refs]:
            with contextlib.suppress(ray.exceptions.RayError, ValueError):  # a finished task cannot be cancelled
                ray.cancel(r, force=r in futs)
        raise
    finally:
        if started:
            ray.shutdown()
