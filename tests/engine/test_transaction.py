"""The per-bar transaction through the state arena (engine/transaction.py): a bar whose update raises leaves every
owner's state exactly as it was, with all 18 default modules, through rebinds and re-layouts.

The reference is each owner's own ``state_dict()`` (``Gate._snapshot``: one independent copy per array, the path a
snapshot file takes), compared array by array with the state after the refused bar.
"""

from __future__ import annotations

import math
from concurrent.futures import Future
from dataclasses import replace

import numpy as np
import pytest

from fxgate.engine import sample_bars
from fxgate.engine.config import GateConfig, L1Config, L2Config, L3Config, L4Config
from fxgate.engine.gate import Gate
from fxgate.engine.transaction import StateArena
from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
from fxgate.models.labels import LabelSpec
from fxgate.modules import REGISTRY, CertaintyModule, create, register
from fxgate.modules._schedule import Parts

NO_LLM = {"l2": L2Config(enabled=False), "l3": L3Config(enabled=False)}
SMALL = {
    "edge_proof": {"reps": 200, "p_threshold": 0.05, "min_outcomes": 30, "window": 100, "every": 7, "lag": 2},
    "model_confidence_set": {"reps": 100, "min_rows": 30, "window": 100, "every": 5, "lag": 1},
}


class _Trap(CertaintyModule):
    """Raises in update() on a bar whose volume is 12345 — after every other module updated (it is listed last);
    on a bar whose volume is 777 it rebinds its array (a reallocation), which must take it out of the arena."""

    defaults = {}
    state_keys = ("arr", "note")

    def reset(self):
        self.arr = np.zeros(3)
        self.note = ""

    def update(self, ctx):
        if ctx.bar.volume == 12345.0:
            self.arr[0] += 1.0  # a change the rollback must undo
            raise RuntimeError("planted failure")
        if ctx.bar.volume == 777.0:
            self.arr = self.arr + 0.5  # rebinds
        self.arr[1] += 1.0
        self.note = f"{int(self.arr[1])} bars"

    def verdict(self):
        return self._result(float(self.arr[1]), True, 0.0, self.note)


@pytest.fixture
def trap():
    """The trap module registered for one test only (tests/modules/test_framework.py runs every registered module
    through its contract, which a trap does not keep)."""
    register("trap")(_Trap)
    yield
    del REGISTRY["trap"]


@pytest.fixture(scope="module")
def ens():
    e = TreeEnsemble()
    e.fit(sample_bars()[:1500], LabelSpec("next", 1), EnsembleConfig(n_estimators=20, max_depth=3), evaluate=False)
    return e


def _equal(a, b, where=""):
    """Deep equality of two state trees (arrays bit for bit, NaN equal to NaN)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), where
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _equal(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    elif isinstance(a, Future | Parts):
        assert a is b, where
    else:
        assert a == b, where


def test_a_refused_bar_restores_every_owner_exactly_with_all_modules(ens, trap):
    mods = (*GateConfig().l4.modules, "trap")
    cfg = GateConfig(l1=L1Config(threshold=0.5), l4=L4Config(modules=mods, params=SMALL), mode="full", **NO_LLM)
    bars = sample_bars()[1500:2300]
    a, b = Gate(cfg, ens, timeframe="H1"), Gate(cfg, ens, timeframe="H1")
    refused = 0
    for i, x in enumerate(bars):
        if i % 9 == 4 or i in (301, 302):  # the bar is refused after every other update ran
            before = a._snapshot()
            d = a.on_bar(replace(x, volume=12345.0))
            assert d.first_veto == "internal" and "planted failure" in d.layer("L1").reason
            _equal(a._snapshot(), before, "state after the refused bar")
            refused += 1
        if i in (150, 300):  # a rebind: the trap's array leaves the arena, which must be laid out again
            x = replace(x, volume=777.0)
        da, db = a.on_bar(x), b.on_bar(x)
        # no other bar is refused: a save with a bootstrap in flight (a Future, or the MCS's split job) works
        assert da.first_veto not in ("internal", "input"), da.layer("L1").reason
        assert da.to_dict()["layers"][0]["reason"] == db.to_dict()["layers"][0]["reason"]
        assert (da.action, da.first_veto, da.size) == (db.action, db.first_veto, db.size)
    _equal(a._snapshot(), b._snapshot(), "after the run")
    assert refused > 80 and a._tx.builds >= refused + 2  # each refusal and each rebind: laid out again


def test_a_save_that_fails_refuses_the_bar_in_on_bar_and_warm_up(ens):
    """The transaction's save runs before the gate's try: when it raises (here once, planted), ``on_bar`` answers
    NONE with the reason and ``warm_up`` counts the bar refused, neither raises, nothing is accepted, and the bar
    sent again is taken exactly as by a gate that never failed."""
    cfg = GateConfig(l1=L1Config(threshold=0.5), l4=L4Config(params=SMALL), **NO_LLM)
    bars = sample_bars()[1500:1700]
    a, b = Gate(cfg, ens, timeframe="H1"), Gate(cfg, ens, timeframe="H1")
    a.warm_up(bars[:100])
    b.warm_up(bars[:100])
    inner, fails = a._tx.save, []

    def save():  # type: ignore[no-untyped-def]
        if fails:
            fails.pop()
            raise MemoryError("planted")
        return inner()

    a._tx.save = save
    fails.append(1)
    before = a._snapshot()
    d = a.on_bar(bars[100])
    assert d.action == "NONE" and d.first_veto == "internal"
    assert "while saving the state: MemoryError: planted" in d.to_dict()["layers"][0]["reason"]
    _equal(a._snapshot(), before, "after the refused save")
    fails.append(1)
    assert a.warm_up(bars[100:101]) == 1  # refused, counted, not raised
    _equal(a._snapshot(), before, "after the refused warm-up bar")
    for x in bars[100:]:
        da, db = a.on_bar(x), b.on_bar(x)
        assert (da.action, da.first_veto, da.size) == (db.action, db.first_veto, db.size)
    _equal(a._snapshot(), b._snapshot(), "after the run")


def test_the_arena_holds_the_state_arrays_and_notices_a_rebind():
    """Owners' arrays become views of one buffer per dtype; a rebind (here: load_state_dict) is noticed at the next
    save, so no array is ever left out of the copy."""
    vp, rk = create("vpin", n_buckets=10), create("robust_kelly")
    owners = [vp, rk]
    arena = StateArena(lambda: owners)
    arena.save()
    assert arena.builds == 1
    for m in (vp, rk):
        for k in m.state_keys:
            v = getattr(m, k)
            if isinstance(v, np.ndarray):
                assert np.shares_memory(v, arena._buf), (m.name, k)
    arena.save()
    assert arena.builds == 1  # nothing rebound: the layout stays
    vp.load_state_dict(vp.state_dict())  # rebinds every array of vpin
    vp.fs[0] = 123.0
    s2 = arena.save()
    assert arena.builds == 2
    assert np.any(s2[0].view(np.float64) == 123.0)  # the copy holds the new array's values (16-byte aligned)
    owners.append(create("adverse_selection"))  # an owner added later joins the copy
    arena.save()
    assert arena.builds == 3 and np.shares_memory(owners[2].ist, arena._buf)
