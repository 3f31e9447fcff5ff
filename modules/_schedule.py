"""Scheduled recomputes off the bar's critical path, with deterministic results.

A scheduled module (a bootstrap: edge_proof, model_confidence_set) keeps O(1) streaming state per bar and every
``every`` bars reruns an expensive test: 10,000 stationary-bootstrap resamples cost 20-50 ms, two hundred times a
streaming bar's whole budget. Run inside ``update``, that bar's Decision waits for it (the gate's on_bar p99 was
the bootstrap). :class:`ScheduledModule` runs it instead on a background thread and applies its result a fixed
number of bars later:

* **Submit.** On the bar a recompute is due, ``update`` captures the recompute's inputs (copies of the window,
  the seed, the parameters) and submits :meth:`ScheduledModule.compute` — a pure function of those inputs — to a
  process-wide worker thread. The numba kernels release the GIL (``nogil=True``), so the bootstrap runs beside the
  next bars' updates.
* **Apply.** The result is written into the module's state at the start of the ``lag``-th ``update`` call after
  the submit (``lag`` is a parameter, default 1: the next bar), before that bar's verdicts; if it is not finished
  by then, that update waits for it. Until then the verdict reads the previous result.

So *which* result a verdict reads depends on bar counts only, never on timing: a replay, a live run and a restored
snapshot apply each result on the same bar and give the same Decisions whatever the machine's load (tested: a
recompute slowed down on purpose changes no verdict). ``lag = 0`` runs the recompute inside ``update``, as before.
A recompute that raises is applied as a failed result: the verdict fails closed with the error until the next one.

State. The countdown and the applied-but-unread result are numpy state like the rest (``jst``, ``jres``, ``jerr``
among ``state_keys``); the in-flight job itself is a :class:`concurrent.futures.Future` (or, for a recompute split
into parts, a :class:`Parts`), kept in ``state_dict()``
under ``"future"`` so the gate's per-bar transaction (a state copy taken before the updates, restored if one
raises) neither waits for it nor loses it. :meth:`ScheduledModule.settle` waits for the job and stores its result
in ``jres``; the gate settles every module before it writes a snapshot file, which holds plain data only.

A recompute may be split (:meth:`ScheduledModule.split`: the MCS's four bootstrap streams) into independent parts;
the bar that must apply it runs the parts no worker has started itself (:class:`Parts`), so that a back-to-back
replay shares it across cores instead of waiting idle for one worker.

The workers. ``WORKERS`` threads per process (the cores but one; created on first use, and again in a forked child,
whose copy of the parent's threads does not run): the recomputes of every gate in the process share them, oldest
first. A bar waits only when the result it must apply is not ready by then: on a live feed (bars seconds to hours
apart) it is; in a replay or a warm-up (bars back to back), or with more gates reaching a due bar at once than
there are workers, that bar waits (under the gate's lock; with ``aon_bar``, on the event loop's thread).
"""

from __future__ import annotations

import math
import os
import threading
from abc import abstractmethod
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np

from fxgate.engine.core.jit import kernel
from fxgate.modules._base import CertaintyModule

__all__ = ["ScheduledModule", "worker"]

J_LEFT = 0  # updates left before the pending result is applied; -1: no job
#: a job's result is in jres (settled, or restored from a snapshot) instead of in the future
J_SETTLED = 1
#: what a scheduled module's fused kernel returns (bits; ``ScheduledModule.fused_after`` acts on them): the pending
#: result is applied on this update / a recompute falls due on it
FLAG_APPLY, FLAG_DUE = 1, 2

_LOCK = threading.Lock()
_POOL: tuple[int, ThreadPoolExecutor] | None = None
#: recompute threads per process: one core is left to the bars. The count changes no result (each is a pure,
#: seeded function of its inputs, applied on a bar fixed by counts), only how many gates' bootstraps run at once.
WORKERS = max(1, (os.cpu_count() or 2) - 1)


def _forget_after_fork() -> None:
    global _LOCK, _POOL
    _LOCK, _POOL = threading.Lock(), None  # the parent's threads do not run in the child


os.register_at_fork(after_in_child=_forget_after_fork)


def worker() -> ThreadPoolExecutor:
    """The process's recompute threads (``WORKERS``; made anew in a forked child)."""
    global _POOL
    with _LOCK:
        if _POOL is None or _POOL[0] != os.getpid():
            _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="fxgate-recompute"))
        return _POOL[1]


def _tick_count_py(jst):  # type: ignore[no-untyped-def]
    """:meth:`ScheduledModule._tick`'s count in a kernel (a fused step): count one update down; FLAG_APPLY when the
    pending result is applied on it (the caller's ``after`` applies it), else 0."""
    if jst[J_LEFT] < 0:
        return 0
    jst[J_LEFT] -= 1
    return FLAG_APPLY if jst[J_LEFT] <= 0 else 0


tick_count = kernel(_tick_count_py, fastmath=False)


def _run(fn: Any, inputs: Any) -> tuple[np.ndarray | None, str]:
    try:
        return np.asarray(fn(inputs), dtype=np.float64), ""
    except Exception as exc:  # noqa: BLE001 - applied as a failed recompute; the verdict fails closed with it
        return None, f"{type(exc).__name__}: {exc}"


def _part(fn: Callable[[], Any]) -> tuple[Any, str]:
    try:
        return fn(), ""
    except Exception as exc:  # noqa: BLE001 - the whole recompute fails with it (see Parts.result)
        return None, f"{type(exc).__name__}: {exc}"


class Parts:
    """A recompute split into independent parts (:meth:`ScheduledModule.split`), shared between the workers and
    the thread that needs the result. On submission, one task per worker (as many as there are parts, at most
    ``WORKERS``) starts taking parts from the first one on. The thread that needs the result (:meth:`result`: the
    bar applying it, or ``settle``) takes the parts no one has taken yet from the last one back and runs them
    itself, then waits for the parts still running, and combines the results in part order. In a replay a bar
    otherwise waits idle for the whole recompute on the one worker a 2-core machine has; this way both cores work
    on it. Each part is a pure function of inputs captured at submission, so the result does not depend on which
    thread ran which part. A part that raises fails the whole recompute with its error (the first in part order).

    Stands in for the :class:`concurrent.futures.Future` of an unsplit recompute: ``result()`` gives the same
    ``(result, error)`` pair. The gate's per-bar state copy keeps it as it is, like a Future (``state_copy_as_is``:
    the gate never mutates a job, and a copy could not share its threads' work)."""

    state_copy_as_is: ClassVar[bool] = True

    def __init__(self, parts: list[Callable[[], Any]], combine: Callable[[list[Any]], np.ndarray]) -> None:
        self._parts = list(parts)
        self._combine = combine
        n = len(self._parts)
        self._got: list[tuple[Any, str] | None] = [None] * n
        self._next, self._last = 0, n  # parts [next, last) are not taken: workers take next, the asker last - 1
        self._left = n  # parts not recorded
        self._mine = -1  # the part the asker took and has not recorded (an interrupt left it: run it again)
        self._lock = threading.Lock()  # guards the fields above; only the asker moves _last and _mine
        self._cond = threading.Condition(self._lock)
        self._asking = threading.Lock()  # one asker at a time; the combined result is kept
        self._out: tuple[np.ndarray | None, str] | None = None
        self._pid = os.getpid()
        #: how many parts the thread that asked for the result ran itself (tests; a diagnostic)
        self.ran_here = 0
        if n:
            pool = worker()
            for _ in range(min(WORKERS, n)):
                pool.submit(self._drain)

    def _record(self, i: int, r: tuple[Any, str]) -> None:
        """Part ``i``'s result; a part recorded twice (re-run after an interrupt that came after its first record)
        counts once."""
        with self._lock:
            if self._got[i] is None:
                self._got[i] = r
                self._left -= 1
            if self._mine == i:
                self._mine = -1
            if self._left == 0:
                self._cond.notify_all()

    def _take_first(self) -> int:
        with self._lock:
            if self._next >= self._last:
                return -1
            self._next += 1
            return self._next - 1

    def _take_last(self) -> int:
        """The asker's next part: the one an interrupt left unrecorded, else the last untaken one (-1: none). Taken
        and remembered in one locked step, so no interrupt can fall between the two."""
        with self._lock:
            if self._mine < 0 and self._next < self._last:
                self._last -= 1
                self._mine = self._last
            return self._mine

    def _drain(self) -> None:
        while (i := self._take_first()) >= 0:
            try:
                r = _part(self._parts[i])
            except BaseException as exc:  # noqa: BLE001 - SystemExit in a worker: a failed part, not a lost one
                r = (None, f"{type(exc).__name__}: {exc}")
            self._record(i, r)

    def done(self) -> bool:
        """Every part has finished (the result can be combined without running or waiting for any)."""
        with self._lock:
            return self._left == 0

    def _adopt(self) -> None:
        """In a forked child: the parent's workers (and any lock they held) are not here. Fresh locks, and every
        part not recorded is run in this thread."""
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._asking = threading.Lock()
        self._pid = os.getpid()
        for i, g in enumerate(self._got):
            if g is None:
                self._got[i] = _part(self._parts[i])
                self._left -= 1
                self.ran_here += 1
        self._next, self._last, self._mine = 0, 0, -1

    def result(self) -> tuple[np.ndarray | None, str]:
        if self._pid != os.getpid():
            self._adopt()
        with self._asking:
            if self._out is None:
                while (i := self._take_last()) >= 0:
                    self._record(i, _part(self._parts[i]))  # an interrupt here leaves it in _mine: run again
                    self.ran_here += 1
                with self._cond:
                    self._cond.wait_for(lambda: self._left == 0)
                outs = self._got
                if any(g is None for g in outs):  # cannot happen: every part is recorded before _left reaches 0
                    self._out = (None, "a part of the recompute was lost")
                else:
                    err = next((e for _, e in outs if e), "")  # type: ignore[misc]
                    self._out = (None, err) if err else _run(self._combine, [r for r, _ in outs])  # type: ignore[misc]
            return self._out


class ScheduledModule(CertaintyModule):
    """A module whose verdict comes from a periodic recompute run off the bar's critical path (module docstring).

    Subclasses define ``result_size`` and three methods, and call :meth:`_tick` first in ``update`` and
    :meth:`_due` where a recompute falls due:

    * ``inputs()``: capture what the recompute needs (copies: the state moves on) and do the schedule's own
      bookkeeping (when it last ran);
    * ``compute(inputs)`` (static, pure, thread-safe): the recompute; returns ``result_size`` floats;
    * ``apply(result, error)``: write a result (or the error text of a failed one, ``result`` None) into the
      state the verdict reads.
    """

    scheduled = True
    result_size: ClassVar[int] = 0

    def _reset_job(self) -> None:
        lag = self.params.get("lag", 1)
        if not isinstance(lag, int | np.integer) or isinstance(lag, bool) or not 0 <= lag <= int(self.params["every"]):
            raise ValueError(
                f"The 'lag' parameter of {self.name} must be an integer between 0 (recompute inside the bar's "
                f"update) and every ({self.params['every']}). Got {lag!r} instead."
            )
        self.jst = np.array([-1, 0], dtype=np.int64)
        self.jres = np.full(self.result_size, math.nan)
        self.jerr = ""
        self.future: Future[tuple[np.ndarray | None, str]] | Parts | None = None

    # -- subclass hooks --------------------------------------------------------------------------------------------
    @abstractmethod
    def inputs(self) -> Any:
        """Capture the recompute's inputs (copies) and record the schedule."""

    @staticmethod
    @abstractmethod
    def compute(inputs: Any) -> np.ndarray:
        """The recompute: pure and thread-safe; ``result_size`` floats."""

    @abstractmethod
    def apply(self, result: np.ndarray | None, error: str) -> None:
        """Write a result (or a failed recompute's ``error``, ``result`` None) into the state the verdict reads."""

    @staticmethod
    def split(inputs: Any) -> tuple[list[Callable[[], Any]], Callable[[list[Any]], np.ndarray]] | None:
        """Optionally, ``compute(inputs)`` as independent parts (pure functions of no argument, inputs bound) and
        the function that combines their results, in part order, into ``compute(inputs)``'s result; the scheduled
        path then runs them as :class:`Parts`. A subclass that splits defines ``compute`` through it, so that
        ``lag = 0`` and the workers compute the same thing. None (the default): not split."""
        return None

    # -- the schedule ----------------------------------------------------------------------------------------------
    def recompute(self) -> None:
        """Run the recompute now, in this thread, and apply it (what ``lag = 0`` does on a due bar)."""
        self.apply(*_run(self.compute, self.inputs()))

    def _tick(self) -> None:
        """Count one update; apply the pending result on the ``lag``-th."""
        if _tick_count_py(self.jst):  # the count, shared with the fused kernel (run as plain Python here)
            self._apply_pending()

    def fused_after(self, flag: int) -> None:
        """The Python part of a fused update (``fxgate.modules._fusion``), after the kernel counted the update down
        (:func:`tick_count`) and pushed the bar's data: apply the pending result (``FLAG_APPLY``: what
        :meth:`_tick` does at the start of ``update``), then submit the recompute that fell due (``FLAG_DUE``). The
        result writes only the verdict's state, which the bar's pushes and schedule count neither read nor write, so
        applying it after them leaves the state ``update`` leaves."""
        if flag & FLAG_APPLY:
            self._apply_pending()
        if flag & FLAG_DUE:
            self._due()

    def _due(self) -> None:
        """A recompute is due on this bar: run it (``lag`` 0) or submit it."""
        lag = int(self.params["lag"])
        if lag == 0:
            self.recompute()
            return
        if self.jst[J_LEFT] >= 0:  # the previous result is not applied yet (lag == every): it goes first
            self._apply_pending()
        inputs = self.inputs()
        split = self.split(inputs)
        self.future = worker().submit(_run, self.compute, inputs) if split is None else Parts(*split)
        self.jst[J_LEFT], self.jst[J_SETTLED] = lag, 0

    def _apply_pending(self) -> None:
        if self.jst[J_SETTLED]:
            res, err = (None if self.jerr else self.jres.copy()), self.jerr
        elif self.future is not None:
            res, err = self.future.result()
        else:  # unreachable through the public API: a job counted in jst always has its future or its result
            res, err = None, "the pending recompute was lost (state restored without it)"
        self.jst[J_LEFT], self.jst[J_SETTLED] = -1, 0
        self.jres[:] = math.nan
        self.jerr = ""
        self.future = None
        try:
            self.apply(res, err)
        except Exception as exc:  # noqa: BLE001 - a result that cannot be applied is a failed recompute
            # (raising here would refuse this bar, and the restored state would apply it again on every later one)
            self.apply(None, f"its result could not be applied: {type(exc).__name__}: {exc}")

    @property
    def pending(self) -> bool:
        """A recompute has been submitted and its result not yet applied."""
        return bool(self.jst[J_LEFT] >= 0)

    def settle(self) -> None:
        """Wait for the in-flight recompute and keep its result in the state (``jres``/``jerr``), still to be
        applied on the same bar as before: afterwards ``state_dict()`` is plain data (a snapshot file can hold
        it)."""
        if self.jst[J_LEFT] >= 0 and not self.jst[J_SETTLED] and self.future is not None:
            res, err = self.future.result()
            self.jres[:] = math.nan if res is None else res
            self.jerr = err
            self.jst[J_SETTLED] = 1
            self.future = None

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        out["future"] = self.future
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        f = state.get("future")
        self.future = f if isinstance(f, Future | Parts) else None
