"""The fused steps of the scheduled modules (edge_proof, model_confidence_set) and of double_adapt against their
``update`` (the reference), through the gate's fused-step machinery (engine/fused.py), on streams the gate test
(tests/engine/test_fused.py: lag 0, one bundle) does not cover: a deferred result (lag 1, 2 and lag = every),
rolled-back bars and a snapshot restore with a job in flight, a failed recompute, bad closes; for double_adapt a
refit (bundle change), a reference fixed by filling it out of sample, losses that rise (detections) and missing
probabilities. State bit for bit after every bar.

The properties of tests/modules/test_schedule.py (deferred == synchronous shifted by lag, rollbacks and restores
apply the same results, failures fail closed) hold for the update path there; the fused path equal to it bar for
bar, rollbacks included, holds them too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pytest

from fxgate.engine import Bar
from fxgate.engine.fused import FusedModules
from fxgate.engine.snapshot import Identity, decode, encode
from fxgate.modules import Context, Matured, Outcome, create
from fxgate.modules import double_adapt as da
from fxgate.modules.edge_proof import EdgeProof

H = 3_600_000_000_000
# the streams, parameters and views of tests/modules/test_schedule.py (tests import no other test module here)
EDGE = {"reps": 400, "p_threshold": 0.05, "min_outcomes": 40, "window": 120, "every": 10}
MCS = {"min_rows": 40, "every": 10, "reps": 200, "window": 120}


def edge_stream(n: int, seed: int = 0) -> list[Context]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = float(rng.standard_normal() * 1e-4 + 3e-5)
        d = -1 if i % 3 == 0 else 1
        # (here, unlike test_schedule's: short outcomes, spreads, and a NaN spread now and then: a P&L not pushed)
        spread = math.nan if i % 23 == 5 else 1e-5 * (i % 4)
        o = Outcome(i * H, (i + 1) * H, d, 1.1, 1.1 + d * x, spread)
        out.append(Context(Bar((i + 1) * H, 1.1, 1.1, 1.1, 1.1, 1.0, timeframe="H1"), outcomes=(o,), bar_index=i + 1))
    return out


def mcs_stream(n: int, seed: int = 0) -> list[Context]:
    rng = np.random.default_rng(seed)
    price, out = 1.1, []
    entries: list[tuple[int, float, np.ndarray | None]] = []
    for i in range(1, n + 1):
        new = price * math.exp(float(rng.standard_normal()) * 1e-3)
        p = np.clip(0.5 + rng.standard_normal(3) * 0.05, 0.01, 0.99)
        mat = ()
        if entries:
            e_bar, e_price, e_p = entries.pop()
            # (here, unlike test_schedule's: bars without probabilities (in sample), a member outside [0, 1], the
            # LLM's answer on some bars (one outside [0, 1]), a NaN exit price now and then)
            llm = float(rng.random()) if i % 3 == 0 else 1.5 if i % 31 == 2 else math.nan
            x = math.nan if i % 37 == 8 else new
            mat = (Matured(e_bar, (e_bar) * H, i * H, e_price, x, e_p, None, 0, 1e-5, llm),)
        if i % 11 == 3:
            p = None
        elif i % 19 == 4:
            p[1] = 1.2
        entries.append((i, new, p))
        price = new
        out.append(Context(Bar(i * H, price, price, price, price, 1.0, timeframe="H1"), matured=mat, bar_index=i))
    return out


def _view(m) -> tuple:
    """What the verdict reads: the verdict itself and the result arrays."""
    arrays = (m.fs.copy(),) if isinstance(m, EdgeProof) else (m.fs.copy(), m.pvals.copy())
    return (m.verdict(), *arrays)


def _same(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and all(np.array_equal(x, y, equal_nan=True) for x, y in zip(a[1:], b[1:], strict=True))


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


def _state_equal(a: dict, b: dict, where: str) -> None:
    assert a.keys() == b.keys(), where
    for k, x in a.items():
        y = b[k]
        if k == "future":
            assert (x is None) == (y is None), f"{where}: {k}"
        elif isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, f"{where}: {k}"
            assert np.array_equal(x.view(np.uint8), y.view(np.uint8)), f"{where}: {k} differs"
        elif isinstance(x, float) and math.isnan(x):
            assert isinstance(y, float) and math.isnan(y), f"{where}: {k}"
        else:
            assert x == y, f"{where}: {k}: {x!r} != {y!r}"


def _bad_closes(ctxs: list[Context]) -> list[Context]:
    """Every 13th context's bar with a NaN close and every 17th's with a negative one (skipped whole by edge_proof
    and double_adapt; model_confidence_set does not read the close)."""
    out = []
    for i, c in enumerate(ctxs):
        if i % 13 == 6:
            c = replace(c, bar=replace(c.bar, close=math.nan))
        elif i % 17 == 9:
            c = replace(c, bar=replace(c.bar, close=-1.0))
        out.append(c)
    return out


SCHEDULED = [("edge_proof", EDGE, edge_stream), ("model_confidence_set", MCS, mcs_stream)]


@pytest.mark.parametrize(("name", "kw", "stream"), SCHEDULED)
@pytest.mark.parametrize("lag", [0, 1, 2, 10])
def test_scheduled_fused_step_equals_update_deferred_rolled_back_and_restored(name, kw, stream, lag):
    ctxs = _bad_closes(stream(260, seed=11))
    ref = create(name, **kw, lag=lag)
    m = create(name, **kw, lag=lag)
    fm = FusedModules([m], "H1", n_features=1)
    assert fm.fused == [m]
    rolled = used_llm = 0
    for i, c in enumerate(ctxs):
        ref.update(c)
        used_llm += name == "model_confidence_set" and int(ref.ist[6])  # I_USED_LLM
        if i % 3 == 1:  # refused after the update ran: the gate's transaction puts the state back
            st = m.state_dict()
            fm.update(c)
            rolled += int(not np.array_equal(m.jst, st["jst"]))
            m.load_state_dict(st)
        fm.update(c)
        assert _same(_view(m), _view(ref)), i
        _state_equal(m.state_dict(), ref.state_dict(), f"bar {i}")
        if i == 131:  # a snapshot file's round trip (settled: a job in flight keeps its bar)
            m.settle()
            ref.settle()
            ident = Identity("v", "c", {}, "H1", "X", (name,))
            snap = decode(encode(ident, i, None, {"m": m.state_dict()}), "mem")
            m = create(name, **kw, lag=lag)
            m.load_state_dict(snap.state["m"])
            fm = FusedModules([m], "H1", n_features=1)
    assert int(m.ist[1 if name == "edge_proof" else 4]) > 0
    if lag:
        assert rolled >= 5
    assert name == "edge_proof" or used_llm > 0  # the judge's column was in some MCS


def test_a_failed_recompute_fails_the_fused_verdict_closed_until_the_next_one(monkeypatch):
    orig = EdgeProof.compute
    calls = {"n": 0}

    def flaky(inputs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise FloatingPointError("planted")
        return orig(inputs)

    monkeypatch.setattr(EdgeProof, "compute", staticmethod(flaky))
    m = create("edge_proof", **EDGE, lag=1)
    fm = FusedModules([m], "H1", n_features=1)

    class Fused:  # _fails_closed_then_recovers calls update and verdict
        update = staticmethod(fm.update)
        verdict = staticmethod(m.verdict)

    _fails_closed_then_recovers(Fused, edge_stream(200, seed=2), "failed: FloatingPointError: planted")


@dataclass
class _Ens:
    bundle_hash: str


DA = {
    "ph_calib": 30,
    "ph_min_instances": 5,
    "psi_window": 40,
    "ref_bars": 80,
    "min_ref": 30,
    "psi_min_valid": 10,
    "hold": 6,
}


def _da_stream(n: int, seed: int) -> list[Context]:
    """Bars with a 4-feature row (a NaN now and then, one feature shifting), one matured forecast each (no
    probabilities on some, one out of [0, 1] on others, a NaN exit price now and then) whose loss rises twice,
    in-sample bars first, a refit (another bundle) at n // 2 with its own in-sample bars, bad closes."""
    rng = np.random.default_rng(seed)
    a, b = _Ens("a" * 64), _Ens("b" * 64)
    price, out = 1.1, []
    for i in range(1, n + 1):
        new = price * math.exp(float(rng.standard_normal()) * 1e-3)
        up = new > price
        skill = 0.25 if (i // 150) % 2 == 0 else -0.2  # the loss rises on alternate stretches
        p = np.clip(0.5 + (skill if up else -skill) + rng.standard_normal(3) * 0.1, 0.0, 1.0)
        probs: np.ndarray | None = p
        r = rng.random()
        if r < 0.1:
            probs = None
        elif r < 0.13:
            probs = np.array([p[0], 1.5, p[2]])
        exit_ = math.nan if rng.random() < 0.02 else new
        mat = (Matured(i - 1, (i - 1) * H, i * H, price, exit_, probs, None),)
        x = rng.standard_normal(4) + np.array([0.0, 0.0, 0.0, 2.0 * (i > 0.4 * n)])
        if rng.random() < 0.05:
            x[int(rng.integers(0, 4))] = math.nan
        close = new if i % 29 != 7 else math.nan
        ens = a if i < n // 2 else b
        in_sample = i < 60 or n // 2 <= i < n // 2 + 20
        out.append(
            Context(
                Bar(i * H, close, close, close, close, 1.0, timeframe="H1"),
                features=x,
                matured=mat,
                bar_index=i,
                ensemble=ens,
                in_sample=in_sample,
            )
        )
        price = new
    return out


@pytest.mark.parametrize("params", [{}, {"loss": "log", "direction": "both", "psi_aggregate": "max"}])
def test_double_adapt_fused_step_equals_update(params):
    ctxs = _da_stream(900, seed=5)
    ref = create("double_adapt", **DA, **params)
    m = create("double_adapt", **DA, **params)
    fm = FusedModules([m], "H1", n_features=4)
    assert fm.fused == [m]
    for i, c in enumerate(ctxs):
        ref.update(c)
        if i % 7 == 3:  # a rolled-back bar (restore rebinds the state arrays)
            st = m.state_dict()
            fm.update(c)
            m.load_state_dict(st)
        fm.update(c)
        _state_equal(m.state_dict(), ref.state_dict(), f"bar {i}")
        va, vb = m.verdict(), ref.verdict()
        assert (va.passed, va.reason) == (vb.passed, vb.reason), i
    ist = m.ist
    assert ist[da.I_REFITS] == 1 and ist[da.I_FROZEN] == 1 and ist[da.I_RECENT] > 40
    assert ist[da.I_ADWIN_ALL] + ist[da.I_PH_ALL] > 0  # detections happened


def test_double_adapt_reference_fixed_out_of_sample():
    """No in-sample rows: the reference fills out of sample and is fixed when full (the row that fills it stays
    out of the PSI window)."""
    ctxs = [replace(c, in_sample=False, ensemble=None) for c in _da_stream(300, seed=8)]
    ref = create("double_adapt", **DA)
    m = create("double_adapt", **DA)
    fm = FusedModules([m], "H1", n_features=4)
    for i, c in enumerate(ctxs):
        ref.update(c)
        fm.update(c)
        _state_equal(m.state_dict(), ref.state_dict(), f"bar {i}")
    assert m.ist[da.I_FROZEN] == 1
