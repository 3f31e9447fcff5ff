"""Scheduled recomputes off the bar's critical path (modules/_schedule.py): a result is applied on a bar fixed by
bar counts, never by timing; rollbacks, restores and failures keep that.

The reference for every deferred run is the same module run synchronously (``lag = 0``: the recompute inside the
due bar's update, which tests/modules/test_edge_proof.py and test_model_confidence_set.py check against
``spa_test``/arch and ``mcs``): with ``lag = L``, the state a verdict reads on bar i is the synchronous module's
state on the last due bar k with k + L <= i.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from fxgate.engine import Bar
from fxgate.engine.snapshot import Identity, decode, encode
from fxgate.modules import Context, Matured, Outcome, create
from fxgate.modules import model_confidence_set as mcs_module
from fxgate.modules._schedule import WORKERS, Parts, worker
from fxgate.modules.edge_proof import I_BARS, I_RECOMPUTES, EdgeProof
from fxgate.modules.model_confidence_set import I_RECOMPUTED, ModelConfidenceSet

H = 3_600_000_000_000
EDGE = {"reps": 400, "p_threshold": 0.05, "min_outcomes": 40, "window": 120, "every": 10}
MCS = {"min_rows": 40, "every": 10, "reps": 200, "window": 120}


def edge_stream(n: int, seed: int = 0) -> list[Context]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = float(rng.standard_normal() * 1e-4 + 3e-5)
        o = Outcome(i * H, (i + 1) * H, 1, 1.1, 1.1 + x)
        out.append(Context(Bar((i + 1) * H, 1.1, 1.1, 1.1, 1.1, 1.0, timeframe="H1"), outcomes=(o,), bar_index=i + 1))
    return out


def mcs_stream(n: int, seed: int = 0) -> list[Context]:
    rng = np.random.default_rng(seed)
    price, out = 1.1, []
    entries: list[tuple[int, float, np.ndarray]] = []
    for i in range(1, n + 1):
        new = price * math.exp(float(rng.standard_normal()) * 1e-3)
        p = np.clip(0.5 + rng.standard_normal(3) * 0.05, 0.01, 0.99)
        mat = ()
        if entries:
            e_bar, e_price, e_p = entries.pop()
            mat = (Matured(e_bar, (e_bar) * H, i * H, e_price, new, e_p, None, 0, 1e-5, math.nan),)
        entries.append((i, new, p))
        price = new
        out.append(Context(Bar(i * H, price, price, price, price, 1.0, timeframe="H1"), matured=mat, bar_index=i))
    return out


CASES = [("edge_proof", EDGE, edge_stream), ("model_confidence_set", MCS, mcs_stream)]


def _view(m) -> tuple:
    """What the verdict reads: the verdict itself and the result arrays."""
    arrays = (m.fs.copy(),) if isinstance(m, EdgeProof) else (m.fs.copy(), m.pvals.copy())
    return (m.verdict(), *arrays)


def _same(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and all(np.array_equal(x, y, equal_nan=True) for x, y in zip(a[1:], b[1:], strict=True))


def _due_bars(name: str, kw: dict, ctxs: list[Context]) -> list[int]:
    """The updates (0-based) on which a synchronous module runs its recompute."""
    m = create(name, **kw, lag=0)
    slot = I_RECOMPUTES if isinstance(m, EdgeProof) else I_RECOMPUTED
    due = []
    for i, c in enumerate(ctxs):
        before = int(m.ist[slot])
        m.update(c)
        if int(m.ist[slot]) != before:
            due.append(i)
    return due


@pytest.mark.parametrize(("name", "kw", "stream"), CASES)
@pytest.mark.parametrize("lag", [1, 3, 10])
def test_a_deferred_result_is_the_synchronous_one_applied_lag_bars_later(name, kw, stream, lag):
    ctxs = stream(260)
    sync = create(name, **kw, lag=0)
    views = []
    for c in ctxs:
        sync.update(c)
        views.append(_view(sync))
    due = _due_bars(name, kw, ctxs)
    assert len(due) >= 15  # the schedule ran often enough to mean something
    late = create(name, **kw, lag=lag)
    empty = _view(create(name, **kw, lag=0))
    for i, c in enumerate(ctxs):
        late.update(c)
        applied = [k for k in due if k + lag <= i]
        want = views[applied[-1]] if applied else None
        got = _view(late)
        if want is None:
            assert np.array_equal(got[1], empty[1], equal_nan=True), i  # nothing applied yet
            assert not got[0].passed
        else:
            # the verdict's reason may name a newer count of outcomes/rows; the numbers it reads are the old result's
            assert all(np.array_equal(x, y, equal_nan=True) for x, y in zip(got[1:], want[1:], strict=True)), i
            assert (got[0].score, got[0].passed) == (want[0].score, want[0].passed) or (
                math.isnan(got[0].score) and math.isnan(want[0].score)
            ), i


@pytest.mark.parametrize(("name", "kw", "stream"), CASES)
def test_the_verdicts_do_not_depend_on_how_long_a_recompute_takes(name, kw, stream, monkeypatch):
    """The same stream with recomputes slowed by a random 0-15 ms: every verdict equal, bar by bar (a result applied
    when it happens to be ready, instead of on its bar, fails this)."""
    ctxs = stream(200, seed=3)
    fast = create(name, **kw, lag=2)
    ref = []
    for c in ctxs:
        fast.update(c)
        ref.append(_view(fast))
    cls = type(fast)
    orig = cls.compute
    rng = np.random.default_rng(5)
    delays = iter(rng.uniform(0, 0.015, 10_000))

    def slow(inputs):
        time.sleep(next(delays))
        return orig(inputs)

    monkeypatch.setattr(cls, "compute", staticmethod(slow))
    split = cls.split  # a split recompute (the MCS): each part slowed, so the parts finish in any order

    def slow_split(inputs):
        got = split(inputs)
        if got is None:
            return None
        parts, combine = got
        waits = [next(delays) for _ in parts]
        return [lambda f=f, d=d: (time.sleep(d), f())[1] for f, d in zip(parts, waits, strict=True)], combine

    monkeypatch.setattr(cls, "split", staticmethod(slow_split))
    m = create(name, **kw, lag=2)
    for i, c in enumerate(ctxs):
        m.update(c)
        assert _same(_view(m), ref[i]), i
        if i % 7 == 0:
            time.sleep(0.01)  # sometimes the result is ready before its bar: it still waits for its bar


@pytest.mark.parametrize(("name", "kw", "stream"), CASES)
def test_a_rolled_back_bar_and_a_restored_snapshot_apply_the_same_results(name, kw, stream):
    """The gate's per-bar transaction: state_dict before the update, load_state_dict if the bar is refused. A
    submit or an apply undone that way happens again on the next good bar, exactly as in a run without the
    refusal; and a snapshot taken with a recompute in flight (settled, encoded to a snapshot file's bytes and
    decoded: plain data) continues identically."""
    ctxs = stream(220, seed=9)
    ref_m = create(name, **kw, lag=3)
    ref = []
    for c in ctxs:
        ref_m.update(c)
        ref.append(_view(ref_m))
    m = create(name, **kw, lag=3)
    rolled = 0
    for i, c in enumerate(ctxs):
        if i % 4 == 1:  # this bar is "refused" after the module's update ran: the state goes back
            st = m.state_dict()
            m.update(c)
            rolled += int(not np.array_equal(m.jst, st["jst"]))  # a job was submitted, counted down or applied
            m.load_state_dict(st)
        m.update(c)
        assert _same(_view(m), ref[i]), i
        if i == 111:  # restore through a snapshot file's encoding, job in flight or not
            m.settle()
            st = m.state_dict()
            assert st["future"] is None
            ident = Identity("v", "c", {}, "H1", "X", (name,))
            snap = decode(encode(ident, i, None, {"m": st}), "mem")
            m = create(name, **kw, lag=3)
            m.load_state_dict(snap.state["m"])
    assert rolled >= 10  # refusals hit bars where a job was submitted or applied


def _fails_closed_then_recovers(m, ctxs, needle: str) -> None:
    """Feed ``ctxs``: update never raises; some verdict fails closed with ``needle`` in its reason, and a later one
    has a finite score again (the next recompute)."""
    seen_error = recovered = False
    for c in ctxs:
        m.update(c)
        r = m.verdict()
        if needle in r.reason:
            assert not r.passed and math.isnan(r.score)
            seen_error = True
        elif seen_error and math.isfinite(r.score):
            recovered = True
    assert seen_error and recovered


def test_a_failed_recompute_fails_the_verdict_closed_until_the_next_one(monkeypatch):
    ctxs = edge_stream(200, seed=2)
    m = create("edge_proof", **EDGE, lag=1)
    orig = EdgeProof.compute
    calls = {"n": 0}

    def flaky(inputs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise FloatingPointError("planted")
        return orig(inputs)

    monkeypatch.setattr(EdgeProof, "compute", staticmethod(flaky))
    _fails_closed_then_recovers(m, ctxs, "failed: FloatingPointError: planted")


def test_a_failed_part_of_the_mcs_recompute_fails_the_verdict_closed_until_the_next_one(monkeypatch):
    base = mcs_module._mcs_part
    calls, lock = {"n": 0}, threading.Lock()

    def flaky(*args):
        with lock:  # parts run on several threads
            calls["n"] += 1
            n = calls["n"]
        if n == 10:  # one part of the third recompute (four parts each)
            raise FloatingPointError("planted")
        return base(*args)

    monkeypatch.setattr(mcs_module, "_mcs_part", flaky)
    m = create("model_confidence_set", **MCS, lag=1)
    _fails_closed_then_recovers(m, mcs_stream(200, seed=2), "failed: FloatingPointError: planted")
    assert calls["n"] > 12


def test_lag_is_checked_and_lag_zero_never_uses_the_worker(monkeypatch):
    with pytest.raises(ValueError, match="'lag' parameter of edge_proof must be an integer between 0"):
        create("edge_proof", **EDGE, lag=11)
    with pytest.raises(ValueError, match="'lag' parameter of model_confidence_set"):
        create("model_confidence_set", **MCS, lag=-1)
    threads = []
    for cls in (EdgeProof, ModelConfidenceSet):
        base = cls.compute

        def record(inputs, base=base):
            threads.append(threading.current_thread().name)
            return base(inputs)

        monkeypatch.setattr(cls, "compute", staticmethod(record))
    base_part = mcs_module._mcs_part  # the MCS's scheduled path runs its split parts, not compute

    def part(*args):
        threads.append(threading.current_thread().name)
        return base_part(*args)

    monkeypatch.setattr(mcs_module, "_mcs_part", part)
    main = threading.current_thread().name
    for name, kw, stream in CASES:
        threads.clear()
        m = create(name, **kw, lag=0)
        for c in stream(80):
            m.update(c)
        assert threads and set(threads) == {main}, name  # lag 0: every recompute inside the bar's own update
        threads.clear()
        d = create(name, **kw, lag=1)
        for c in stream(80):
            d.update(c)
            time.sleep(0.002)  # bars apart, as live: the workers start the recompute before the next bar
        assert any(t.startswith("fxgate-recompute") for t in threads), name
    assert worker() is worker()


def test_edge_proof_skips_a_bad_bar_whole_countdown_included():
    """A bad bar (NaN close) is skipped whole by edge_proof, the pending recompute's countdown included: it is
    applied on the lag-th good bar after the submit."""
    ctxs = edge_stream(120, seed=4)
    m = create("edge_proof", **EDGE, lag=2)
    for c in ctxs[:40]:
        m.update(c)
    assert m.pending  # submitted on update 40 (min_outcomes)
    bars = int(m.ist[I_BARS])
    for _ in range(3):
        m.update(Context(Bar(41 * H, 1.1, 1.1, 1.1, math.nan, 1.0, timeframe="H1")))
    assert m.pending and int(m.ist[I_BARS]) == bars
    m.update(ctxs[40])
    assert m.pending
    m.update(ctxs[41])
    assert not m.pending and math.isfinite(m.verdict().score)


def test_a_result_that_cannot_be_applied_fails_the_verdict_closed_and_the_next_bars_go_on(monkeypatch):
    """An error while applying a finished result (a compute that returned something apply cannot read) is that
    recompute's failure, not the bar's: raising from update would refuse the bar, and the restored state would
    apply the same result again on every later bar."""
    ctxs = edge_stream(200, seed=6)
    m = create("edge_proof", **EDGE, lag=1)
    orig = EdgeProof.apply
    calls = {"n": 0}

    def bad_once(self, result, error):
        calls["n"] += 1
        if calls["n"] == 2 and result is not None:
            raise IndexError("planted: result too short")
        return orig(self, result, error)

    monkeypatch.setattr(EdgeProof, "apply", bad_once)
    _fails_closed_then_recovers(m, ctxs, "could not be applied: IndexError: planted")


# -- a split recompute (Parts) ----------------------------------------------------------------------------------------
def _busy_worker():
    """Occupy every recompute thread until the returned event is set (so no worker starts a part meanwhile)."""
    go, started = threading.Event(), []
    for _ in range(WORKERS):
        started.append(threading.Event())
        worker().submit(lambda s=started[-1]: (s.set(), go.wait(10)))
    for s in started:
        assert s.wait(10)
    return go


def test_parts_the_workers_have_not_started_run_in_the_asking_thread_and_combine_in_part_order():
    go = _busy_worker()
    try:
        ran = []
        job = Parts([lambda i=i: ran.append((i, threading.current_thread())) or i for i in range(5)], lambda rs: rs)
        res, err = job.result()
    finally:
        go.set()
    assert err == "" and res.tolist() == [0, 1, 2, 3, 4] and job.ran_here == 5
    assert ran == [(i, threading.current_thread()) for i in (4, 3, 2, 1, 0)]  # here, from the last part back
    assert job.result() is job.result()  # combined once


def _result_within(job, seconds=20.0):
    """``job.result()`` in another thread: a hang fails the test instead of blocking it."""
    out = []
    t = threading.Thread(target=lambda: out.append(job.result()), daemon=True)
    t.start()
    t.join(seconds)
    assert out, "Parts.result() hung"
    return out[0]


def test_parts_shared_with_a_free_worker_give_the_sequential_result_each_part_run_once():
    runs, lock = [], threading.Lock()

    def part(i):
        time.sleep(0.01)
        with lock:
            runs.append((i, threading.current_thread()))
        return np.full(3, float(i))

    for _ in range(3):
        runs.clear()
        job = Parts([lambda i=i: part(i) for i in range(4)], lambda rs: np.concatenate(rs))
        res, err = _result_within(job)
        assert err == "" and res.tolist() == [float(i) for i in range(4) for _ in range(3)]
        assert sorted(i for i, _ in runs) == [0, 1, 2, 3]  # every part once, whoever ran it
        asker = [t for _, t in runs if not t.name.startswith("fxgate-recompute")]
        assert job.ran_here == len(asker) and job.done()


def test_an_interrupt_in_a_part_the_asker_runs_leaves_it_to_the_next_call():
    calls = [0] * 4

    def part(i):
        calls[i] += 1
        if i == 1 and calls[i] == 1:
            raise KeyboardInterrupt
        return float(i)

    go = _busy_worker()
    try:
        job = Parts([lambda i=i: part(i) for i in range(4)], lambda rs: rs)
        with pytest.raises(KeyboardInterrupt):
            job.result()
        res, err = _result_within(job, 5.0)
    finally:
        go.set()
    assert err == "" and res.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert calls == [1, 2, 1, 1]  # the interrupted part again, the others once


def test_a_base_exception_in_a_workers_part_fails_the_recompute_instead_of_hanging_it():
    release = threading.Event()

    def first():
        release.wait(10)
        raise SystemExit("planted")

    job = Parts([first, lambda: 1.0, lambda: 2.0], lambda rs: np.asarray(rs))
    for _ in range(2000):  # a worker holds part 0
        if job._next > 0:
            break
        time.sleep(0.001)
    assert job._next > 0
    release.set()
    assert _result_within(job) == (None, "SystemExit: planted")


def test_a_part_that_raises_fails_the_whole_recompute_with_the_first_error_in_part_order():
    def boom(msg):
        raise ValueError(msg)

    go = _busy_worker()
    try:
        job = Parts([lambda: 1.0, lambda: boom("second"), lambda: boom("third")], lambda rs: np.asarray(rs))
        res, err = job.result()
    finally:
        go.set()
    assert res is None and err == "ValueError: second"
    bad = Parts([lambda: 1.0], lambda rs: boom("combine"))
    assert bad.result() == (None, "ValueError: combine")


def test_the_mcs_recompute_split_equals_it_run_whole_and_uses_every_resample():
    ctxs = mcs_stream(120, seed=2)
    m = create("model_confidence_set", **MCS, lag=0)
    for c in ctxs:
        m.update(c)
    inputs = m.inputs()
    whole = ModelConfidenceSet.compute(inputs)
    parts, combine = ModelConfidenceSet.split(inputs)
    assert len(parts) == 4  # 200 resamples in 4 streams of 50
    on_workers = Parts(parts, combine)  # every part run by the workers: waited for before asking
    for _ in range(2000):
        if on_workers.done():
            break
        time.sleep(0.005)
    assert on_workers.done()
    res, err = on_workers.result()
    assert err == "" and on_workers.ran_here == 0 and np.array_equal(res, whole, equal_nan=True)
    go = _busy_worker()
    try:
        here = Parts(parts, combine)  # every part run by the asking thread
        res_here, err = here.result()
    finally:
        go.set()
    assert err == "" and here.ran_here == 4 and np.array_equal(res_here, whole, equal_nan=True)
    seen = [f() for f in parts]
    assert [len(mb) for _, mb in seen] == [50, 50, 50, 50]
    assert len({mb.tobytes() for _, mb in seen}) == 4  # four distinct streams, not one drawn four times
