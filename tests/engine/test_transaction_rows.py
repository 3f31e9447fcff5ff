"""Rings saved by row in the per-bar transaction (engine/transaction.py): an owner's ``tx_rows()`` promise checked
on the whole sample, and a refused bar rolled back exactly with exceptions planted in a kernel, an ``after`` hook,
a ``prepare`` hook and an unfused update, at random bars, through ring wrap-arounds.

The contract is checked where it matters, in the arena's buffer: after every bar, no byte of it changed outside the
plain arrays (copied whole) and the row ranges the save copied (what the owners declared, or the whole rings of an
owner that declared None) — compared with a full copy of the buffer taken at the save.
"""

from __future__ import annotations

import numpy as np
import pytest

from fxgate.engine import sample_bars
from fxgate.engine.config import GateConfig, L1Config, L2Config, L3Config, L4Config
from fxgate.engine.gate import Gate
from fxgate.engine.transaction import StateArena
from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
from fxgate.models.labels import LabelSpec
from fxgate.modules import REGISTRY
from fxgate.modules.regime import F_SCALE

from .test_transaction import _equal

NO_LLM = {"l2": L2Config(enabled=False), "l3": L3Config(enabled=False)}
SMALL = {
    "edge_proof": {"reps": 200, "p_threshold": 0.05, "min_outcomes": 30, "window": 100, "every": 7, "lag": 2},
    "model_confidence_set": {"reps": 100, "min_rows": 30, "window": 100, "every": 5, "lag": 1},
}
#: the registered modules that declare rings
RINGED = sorted(n for n, cls in REGISTRY.items() if cls.tx_rings)


@pytest.fixture(scope="module")
def ens():
    e = TreeEnsemble()
    e.fit(sample_bars()[:1500], LabelSpec("next", 1), EnsembleConfig(n_estimators=20, max_depth=3), evaluate=False)
    return e


def _cfg(mode: str) -> GateConfig:
    mods = GateConfig().l4.modules
    if mode == "full":
        mods = tuple(m for m in mods if m != "shap")  # its verdict on every bar would be most of the test's time
    return GateConfig(l1=L1Config(threshold=0.5), l4=L4Config(modules=mods, params=SMALL), mode=mode, **NO_LLM)


class _Watch:
    """Wraps a gate's arena: at each save, a full copy of the buffer, the row ranges the save copied and what each
    ringed owner declared; :meth:`check` (after the bar) asserts the buffer changed only where the save copied."""

    def __init__(self, gate: Gate) -> None:
        self.arena = arena = gate._tx
        self.saves = self.promised = self.ring_writes = 0
        self.pending = False
        inner = arena.save

        def save():  # type: ignore[no-untyped-def]
            saved = inner()
            self.buf, self.pre, self.rows, self.plain = arena._buf, arena._buf.copy(), saved[1], arena._plain
            self.owners = list(arena._owners)
            self.declared = [(ow, ow.obj.tx_rows()) for ow in arena._ringed]
            self.saves += 1
            self.pending = True
            return saved

        arena.save = save

    def _where(self, byte: int) -> str:
        for ow in self.owners:
            for k, _dt, o, n, shape in ow.slots:
                if o <= byte < o + n:
                    row = (byte - o) // (n // shape[0]) if shape and shape[0] else 0
                    return f"{type(ow.obj).__name__}.{k} row {row} (declared {dict(self.declared).get(ow)})"
        return f"byte {byte} (padding)"

    def check(self, bar: int) -> None:
        if not self.pending:  # refused by the intake: no save, no update
            return
        self.pending = False
        for ow, decl in self.declared:
            if decl is None:
                continue
            for k, r in decl:
                assert k in ow.obj.tx_rings and k in ow.ring, (bar, type(ow.obj).__name__, k)
                assert 0 <= r < ow.ring[k][2], f"bar {bar}: {type(ow.obj).__name__}.{k} row {r} outside the ring"
        if all(d is not None for _, d in self.declared):
            self.promised += 1
        allowed = np.zeros(self.buf.size, dtype=bool)
        allowed[: self.plain] = True
        for a, b in self.rows:
            allowed[a:b] = True
        changed = np.flatnonzero(self.buf != self.pre)
        bad = changed[~allowed[changed]]
        assert bad.size == 0, f"bar {bar}: written outside the declared rows: {self._where(int(bad[0]))}"
        self.ring_writes += bool(changed.size and changed[-1] >= self.plain)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("mode", ["cheapest", "full"])
def test_every_declared_ring_changes_only_in_its_declared_rows(ens, mode, fused):
    """The whole sample through the gate (the first 1,500 bars in sample: double_adapt fills its reference ring, then
    fixes it and pushes the PSI window, which wraps every 500 bars; the regime ring wraps after 1,000): after
    every bar, every ring changed only in the rows its owner declared before it."""
    gate = Gate(_cfg(mode), ens, timeframe="H1", fused=fused)
    w = _Watch(gate)
    bars = sample_bars()
    for i, b in enumerate(bars):
        gate.on_bar(b)
        w.check(i)
    assert sorted(ow.obj.name for ow in w.arena._ringed) == sorted(m for m in RINGED if m in _cfg(mode).l4.modules)
    assert w.saves == len(bars) and w.promised == w.saves  # every owner promised rows on every bar
    assert w.ring_writes > 4500  # the rings were written (the check is not vacuous)


def _plant_everywhere(gate: Gate, rng: np.random.Generator):
    """Arm a failure for one bar in one place (fused gate: the regime kernel, an ``after`` hook, a ``prepare``
    hook, the end of the step; unfused: a module's update after it ran). Returns (arm, disarm)."""
    armed: dict[str, object] = {}
    regime = next(m for m in gate.modules if m.name == "regime")
    if gate._updates is not None and gate._updates.fused:
        upd = gate._updates

        def wrap_after(f):  # type: ignore[no-untyped-def]
            def after(flag):  # type: ignore[no-untyped-def]
                f(flag)
                if armed.get("where") == "after":
                    raise RuntimeError("planted after failure")

            return after

        def wrap_prepare(f):  # type: ignore[no-untyped-def]
            def prepare(ctx):  # type: ignore[no-untyped-def]
                f(ctx)
                if armed.get("where") == "prepare" and armed.get("which") is f:
                    raise RuntimeError("planted prepare failure")

            return prepare

        preps = list(upd._prepares)
        upd._afters = [(j, wrap_after(f)) for j, f in upd._afters]
        upd._prepares = [wrap_prepare(f) for f in preps]
        step = upd._step

        def stepped(*a):  # type: ignore[no-untyped-def]
            r = step(*a)
            if armed.get("where") == "step":
                raise RuntimeError("planted failure after every kernel")
            return r

        upd._step = stepped
        places = ["kernel", "after", "prepare", "step"]
    else:
        for m in gate.modules:

            def update(ctx, f=m.update, m=m):  # type: ignore[no-untyped-def]
                f(ctx)
                if armed.get("where") == "update" and armed.get("which") is m:
                    raise RuntimeError(f"planted failure in {m.name}.update")

            m.update = update
        places = ["update"]
        preps = []

    def arm() -> str:
        where = places[int(rng.integers(len(places)))]
        if where == "kernel" and not regime.fitted:
            where = "step"  # the regime kernel divides by its scale only once the HMM is fitted
        armed["where"] = where
        if where == "kernel":  # a division by zero inside the regime kernel, after it wrote its ring and counter
            armed["scale"] = float(regime.fs[F_SCALE])
            regime.fs[F_SCALE] = 0.0
        elif where == "prepare":
            armed["which"] = preps[int(rng.integers(len(preps)))]
        elif where == "update":
            armed["which"] = gate.modules[int(rng.integers(len(gate.modules)))]
        return where

    def disarm() -> None:
        if armed.get("where") == "kernel":
            regime.fs[F_SCALE] = armed["scale"]
        armed.clear()

    return arm, disarm


def _settled(g: Gate):  # type: ignore[no-untyped-def]
    """The gate's state with no recompute in flight (two gates' in-flight jobs are different Futures)."""
    for m in g.modules:
        m.settle()
    return g._snapshot()


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_a_bar_refused_anywhere_restores_every_owner_exactly(ens, fused):
    """Failures planted at random bars in random places (see :func:`_plant_everywhere`), on the whole sample in full
    mode: the refused bar leaves the gate's whole state equal to a deep copy taken before it, and the gate then goes
    on exactly as one that never failed (decisions on every bar, the state every 50th)."""
    rng = np.random.default_rng(7)
    cfg = _cfg("full")
    a, b = Gate(cfg, ens, timeframe="H1", fused=fused), Gate(cfg, ens, timeframe="H1", fused=fused)
    arm, disarm = _plant_everywhere(a, rng)
    fails = set(rng.choice(np.arange(1450, 5000), size=120, replace=False).tolist())
    hits: dict[str, int] = {}
    for i, x in enumerate(sample_bars()):
        if i in fails:
            where = arm()
            before = a._snapshot()  # independent copies of every array (the snapshot file's path)
            d = a.on_bar(x)
            if d.first_veto == "internal":
                reason = d.layer("L1").reason
                assert ("ZeroDivisionError" if where == "kernel" else "planted") in reason, (where, reason)
                hits[where] = hits.get(where, 0) + 1
                _equal(a._snapshot(), before, f"bar {i}, failure in {where}")
                disarm()  # then the same bar again, unarmed (below)
            else:
                disarm()
                assert where == "after", where  # no after hook was due on this bar: the bar was accepted
                b.on_bar(x)
                continue
        da, db = a.on_bar(x), b.on_bar(x)
        assert (da.action, da.first_veto, da.size) == (db.action, db.first_veto, db.size), i
        if i % 50 == 0:
            _equal(_settled(a), _settled(b), f"bar {i}")
    _equal(_settled(a), _settled(b), "after the run")
    need = {"kernel", "after", "prepare", "step"} if fused else {"update"}
    assert set(hits) == need and sum(hits.values()) > 60, hits


class _Ring:
    """A toy owner: a ring of 4 rows of 3 (float) and 4 (int8) written at row ``head % 4`` each step, a plain
    counter; ``lie`` makes it write the next row instead of the declared one; ``promise=False`` declares None."""

    tx_rings = ("ring", "tags", "const")

    def __init__(self, promise: bool = True) -> None:
        self.ring = np.zeros((4, 3))
        self.tags = np.zeros((4, 4), dtype=np.int8)
        self.const = np.arange(5.0)  # a declared ring never written in place
        self.head = np.zeros(1, dtype=np.int64)
        self.promise = promise
        self.lie = False

    def state_dict(self):  # type: ignore[no-untyped-def]
        return {k: getattr(self, k).copy() for k in ("ring", "tags", "const", "head")}

    def load_state_dict(self, st):  # type: ignore[no-untyped-def]
        for k, v in st.items():
            setattr(self, k, v.copy())

    def tx_rows(self):  # type: ignore[no-untyped-def]
        if not self.promise:
            return None
        r = int(self.head[0]) % 4
        return (("ring", r), ("tags", r))

    def step(self, v: float, fail: bool, rebind: bool = False) -> None:
        r = (int(self.head[0]) + self.lie) % 4
        self.ring[r] = v
        self.tags[r] = int(v) % 100
        self.head[0] += 1
        if rebind:
            self.ring = self.ring * 2.0  # a reallocation in the middle of the update
            self.ring[0] = -1.0
        if fail:
            raise RuntimeError("planted")


@pytest.mark.parametrize("promise", [True, False], ids=["rows", "no promise"])
def test_a_ring_restored_exactly_at_every_position_through_the_wrap(promise):
    """Each step of a toy ring fails once (after writing its row; every other time also after rebinding the ring)
    and is then retried: through 3 wrap-arounds, at every position (head 3 -> 0 among them), the restore gives back
    the state before the step, bit for bit, and the retried run equals one that never failed."""
    own, ref = _Ring(promise), _Ring(promise)
    arena = StateArena(lambda: [own])
    for i in range(13):
        before = own.state_dict()
        saved = arena.save()
        with pytest.raises(RuntimeError):
            own.step(float(i + 1), fail=True, rebind=i % 2 == 1)
        arena.restore(saved)
        _equal(own.state_dict(), before, f"step {i}")
        saved = arena.save()
        own.step(float(i + 1), fail=False)
        ref.step(float(i + 1), fail=False)
        _equal(own.state_dict(), ref.state_dict(), f"step {i} retried")
    assert arena._ringed and arena._ringed[0].ring.keys() == {"ring", "tags", "const"}
    rows = [b - a for a, b in saved[1]]
    assert rows == ([3 * 8, 4] if promise else [96 + 16 + 48])  # one row of each ring, or every ring (aligned)


def _fail_and_restore(own: _Ring) -> tuple[tuple[int, int], ...]:
    """Six steps of ``own``, each failing once after its writes and restored (exactly, checked), then retried;
    returns the byte ranges the next save copies."""
    arena = StateArena(lambda: [own])
    for i in range(6):
        before = own.state_dict()
        saved = arena.save()
        with pytest.raises(RuntimeError):
            own.step(float(i + 1), fail=True)
        arena.restore(saved)
        _equal(own.state_dict(), before, f"step {i}")
        own.step(float(i + 1), fail=False)
    return arena.save()[1]


def test_a_row_outside_the_ring_is_no_promise():
    """A declared row out of range (a forgotten wrap) copies the owner's rings whole: the restore stays exact."""
    own = _Ring()
    own.tx_rows = lambda: (("ring", int(own.head[0])), ("tags", int(own.head[0]) % 4))  # no % 4 on the ring
    spans = _fail_and_restore(own)
    assert len(spans) == 1 and spans[0][1] - spans[0][0] == 96 + 16 + 48  # every ring of the owner, not one row


def _broken_raises(own):  # type: ignore[no-untyped-def]
    raise ZeroDivisionError("planted")


def _broken_generator(own):  # type: ignore[no-untyped-def]
    yield ("ring", int(own.head[0]) % 4)
    raise ZeroDivisionError("planted while iterated")


def _broken_pair(own):  # type: ignore[no-untyped-def]
    return (("ring", int(own.head[0]) % 4, 0),)  # three items, not (key, row)


def _broken_key(own):  # type: ignore[no-untyped-def]
    return ((["ring"], int(own.head[0]) % 4),)  # an unhashable key


def _broken_row(own):  # type: ignore[no-untyped-def]
    return (("ring", "0"),)  # a row that is not a number


def _float_row(own):  # type: ignore[no-untyped-def]
    return (("ring", 0.5),)  # in range, but no index


@pytest.mark.parametrize(
    "broken",
    [_broken_raises, _broken_generator, _broken_pair, _broken_key, _broken_row, _float_row],
    ids=["raises", "generator raises while iterated", "not a pair", "unhashable key", "row not a number", "float row"],
)
def test_a_tx_rows_that_raises_is_no_promise(broken):
    """An owner whose ``tx_rows()`` raises — when called, or while the save reads what it returned: a generator
    that raises, an item that is not a (key, row) pair, an unhashable key, a row that is no integer — copies its
    rings whole (nothing raises out of the save, which runs before the gate's try), and the restore stays exact."""
    own = _Ring()
    own.tx_rows = lambda: broken(own)
    spans = _fail_and_restore(own)
    assert len(spans) == 1 and spans[0][1] - spans[0][0] == 96 + 16 + 48


def test_a_bare_string_tx_rings_names_one_key_not_its_substrings():
    """``tx_rings`` given as a string, not a tuple: it names that one key. ``"rings"`` must not make the key
    ``"ring"`` (a substring of it) a ring; ``"tags"`` makes "tags" the owner's only ring."""
    own = _Ring()
    own.tx_rings = "rings"  # "ring" is a substring of "rings"; as a tuple it names no key at all
    arena = StateArena(lambda: [own])
    arena.save()
    assert not arena._ringed  # no ring: "rings" is no state key
    own2 = _Ring()
    own2.tx_rings = "tags"
    arena2 = StateArena(lambda: [own2])
    arena2.save()
    assert [list(ow.ring) for ow in arena2._ringed] == [["tags"]]


def test_a_wrong_promise_is_what_the_contract_check_catches():
    """The toy ring that writes the row after the one it declared: its restore is wrong — which is why every
    module's declaration is checked on the whole sample above."""
    own = _Ring()
    own.lie = True
    arena = StateArena(lambda: [own])
    own.step(1.0, fail=False)
    before = own.state_dict()
    saved = arena.save()
    with pytest.raises(RuntimeError):
        own.step(2.0, fail=True)
    arena.restore(saved)
    assert not np.array_equal(own.ring, before["ring"])


class _Notes:
    """A toy owner with non-array state: a string (kept as it is) and a dict mutated in place (must be copied)."""

    def __init__(self) -> None:
        self.arr = np.zeros(2)
        self.label = "a"
        self.seen: dict[str, int] = {}

    def state_dict(self):  # type: ignore[no-untyped-def]
        return {"arr": self.arr.copy(), "label": self.label, "seen": dict(self.seen)}

    def load_state_dict(self, st):  # type: ignore[no-untyped-def]
        self.arr, self.label, self.seen = st["arr"].copy(), st["label"], dict(st["seen"])


def test_non_array_state_mutated_in_place_is_restored():
    """A mutable non-array value is copied at the save (the fast path keeps only immutable ones and Futures)."""
    own, plain = _Notes(), _Ring()
    arena = StateArena(lambda: [plain, own])
    own.seen["x"] = 1
    saved = arena.save()
    own.seen["x"] = 2  # in place
    own.label = "b"
    own.arr[1] = 5.0
    arena.restore(saved)
    assert own.seen == {"x": 1} and own.label == "a" and own.arr.tolist() == [0.0, 0.0]
