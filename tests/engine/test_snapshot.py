"""Gate snapshots: a restored gate continues exactly like the uninterrupted one (all 18 default modules, horizon 3,
the LLM judge's pending answers included); every identity mismatch, a truncated file and a flipped byte are refused
with the reason; a snapshot never needs pickle. And ``aon_bar``: the same Decisions as ``on_bar``, and a slow judge
on one symbol never stops another symbol's bars."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import threading
from dataclasses import replace

import numpy as np
import pytest

from fxgate.engine import Bars, sample_bars
from fxgate.engine.config import GateConfig, L1Config, L2Config, L3Config, L4Config
from fxgate.engine.gate import Gate
from fxgate.engine.layers import JudgeLayer, PromptFacts
from fxgate.engine.snapshot import SnapshotCorrupt, SnapshotMismatch, read, write
from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
from fxgate.models.labels import LabelSpec
from fxgate.models.llm import JudgeVerdict

BARS = sample_bars()
NO_LLM = {"l2": L2Config(enabled=False), "l3": L3Config(enabled=False)}
#: small windows (tests/modules/test_framework.py) so every module has an opinion within the bars replayed
SMALL = {
    "regime": {"fit_bars": 300},
    "vpin": {"min_history": 20, "history": 100},
    "uncertainty": {"min_history": 20},
    "bocpd": {"calib_bars": 50},
    "edge_proof": {"reps": 1000, "p_threshold": 0.01, "min_outcomes": 50, "window": 300},
}
#: all 18 default modules, horizon 3 so that outcomes and forecasts are pending at any bar
CFG = GateConfig(horizon=3, spread=8e-5, l1=L1Config(threshold=0.5), l4=L4Config(params=SMALL), **NO_LLM)
#: the judge's path: full mode asks it whenever the models lean one way; MCS is the module that learns from it
JUDGED = GateConfig(
    horizon=4,
    mode="full",
    spread=8e-5,
    l1=L1Config(threshold=0.5),
    l4=L4Config(modules=("vpin", "adverse_selection", "model_confidence_set"), params={"vpin": SMALL["vpin"]}),
    l2=L2Config(enabled=True, threshold=0.0),
    l3=L3Config(enabled=False),
)


@pytest.fixture(scope="module")
def ens():
    e = TreeEnsemble()
    e.fit(BARS[:2000], LabelSpec("next", 1), EnsembleConfig(n_estimators=30, max_depth=4), evaluate=False)
    return e


class HashJudge:
    """A deterministic judge: BUY or SELL and a certainty from the sha256 of the prompt's values (so two gates in
    the same state answer alike, and a different state answers differently). ``gate`` (optional) blocks the call
    until it is set, and ``entered`` says a call is in flight."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate, self.entered, self.calls = gate, threading.Event(), 0

    def judge(self, values, direction, *, timeout_s=None):
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(30)  # bounded: if the loop itself were blocked, the test fails instead of hanging
        h = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).digest()
        side, certainty = ("BUY" if h[0] % 2 else "SELL"), 0.5 + h[1] / 512
        ok = side == direction
        return JudgeVerdict(ok, side, certainty, f"hash judge: {side} {certainty:.3f}", None)


def with_judge(g: Gate, judge) -> Gate:
    """Put a real JudgeLayer with ``judge`` in place of the gate's L2 (which has no GGUF here)."""
    facts = PromptFacts(g.symbol, g.timeframe, g.config.horizon, g.modules, g.features.names)
    layer = JudgeLayer(g.config, judge, facts, None)
    g.layers = tuple(layer if la.name == "L2" else la for la in g.layers)
    g._slow_layers = tuple(la for la in g.layers if la.cost == "slow")
    g._reported["L2"] = layer
    return g


def same(a, b, where="state") -> None:
    """Deep equality with types: arrays by dtype, shape and value (NaN equal to NaN)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys differ"
        for k in a:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), f"{where}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), f"{where}: values differ"
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def state(g: Gate) -> tuple:
    return (*g._snapshot(), g.rejected, list(g.intake._gap_run))


def plain(d) -> dict:
    """A Decision as a dict without latencies (the only field two equal runs may differ in)."""
    x = d.to_dict()
    for v in x["layers"]:
        v.pop("latency_us")
    return x


def test_a_restored_gate_continues_exactly(ens, tmp_path):
    """Gate A: warm-up, 250 live bars (one refused), snapshot; B = restore. Bars after it: both answer alike, the
    refused duplicate included, and both end in the same state and write byte-identical snapshots."""
    a = Gate(CFG, ens, timeframe="H1", symbol="EURUSD")
    a.warm_up(BARS[1400:2000])
    k = 2250
    for i in range(2000, k):
        a.on_bar(BARS[i])
        if i == 2100:
            assert a.on_bar(BARS[i]).first_veto == "input"  # a duplicate: refused, counted
    while not a._pending:  # snapshot with candidate outcomes in flight
        a.on_bar(BARS[k])
        k += 1
    assert a._forecasts and a.rejected == 1
    path = a.snapshot(tmp_path / "a.fxgate-snapshot")
    b = Gate.restore(path, CFG, ens)
    assert (b.symbol, b.timeframe) == ("EURUSD", "H1")
    same(state(a), state(b))
    da, db = [], []
    for bar in [BARS[k - 1], *BARS[k:2550]]:  # first a duplicate of the last bar before the snapshot
        da.append(plain(a.on_bar(bar)))
        db.append(plain(b.on_bar(bar)))
    assert da[0]["first_veto"] == "input"
    assert da == db
    vetoes = {d["first_veto"] for d in da}
    assert len(vetoes) > 4 and any(v.startswith("L4:") for v in vetoes)  # the run exercised several modules
    same(state(a), state(b))
    a.snapshot(tmp_path / "a2")
    b.snapshot(tmp_path / "b2")
    assert (tmp_path / "a2").read_bytes() == (tmp_path / "b2").read_bytes()


def test_the_judges_pending_answers_survive_a_restore(ens, tmp_path):
    """With the judge on, its P(up) waits for its bar to mature (horizon 4): a restore carries it, so the module that
    learns from it (model_confidence_set) and every Decision after the restore equal the uninterrupted run's."""
    a = with_judge(Gate(JUDGED, ens, timeframe="H1", symbol="EURUSD"), HashJudge())
    a.warm_up(BARS[1500:2000])
    k = 2000
    while k < 2080 or not a._llm_probs:  # snapshot with judge answers waiting for their bars to mature
        a.on_bar(BARS[k])
        k += 1
    path = a.snapshot(tmp_path / "s")
    b = with_judge(Gate.restore(path, JUDGED, ens), HashJudge())
    same(state(a), state(b))
    da = [plain(a.on_bar(bar)) for bar in BARS[k : k + 60]]
    db = [plain(b.on_bar(bar)) for bar in BARS[k : k + 60]]
    assert da == db
    same(state(a), state(b))


def test_a_far_gap_run_in_progress_survives_a_restore(tmp_path):
    """A gap longer than [input] max_gap_days is accepted on its third consistent bar: a restore between the first
    and the third must not restart the count."""
    cfg = GateConfig(l4=L4Config(modules=("vpin",)), **NO_LLM)
    a = Gate(cfg, None, timeframe="H1", symbol="EURUSD")
    a.warm_up(BARS[:50])
    far = BARS.ts[49] + 60 * 86_400 * 10**9
    later = [replace(BARS[50 + i], ts=int(far + i * 3_600 * 10**9)) for i in range(3)]
    assert a.on_bar(later[0]).first_veto == "input"  # 1/3
    b = Gate.restore(a.snapshot(tmp_path / "gap"), cfg, None)
    assert [x.first_veto for x in map(a.on_bar, later[1:])] == [y.first_veto for y in map(b.on_bar, later[1:])]
    assert a.intake.last_ts == b.intake.last_ts == later[2].ts  # accepted on the third, in both


# -- refusals ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def snap(ens, tmp_path_factory):
    g = Gate(CFG, ens, timeframe="H1", symbol="EURUSD")
    g.warm_up(BARS[1800:2000])
    for bar in BARS[2000:2030]:
        g.on_bar(bar)
    return g.snapshot(tmp_path_factory.mktemp("snap") / "g.fxgate-snapshot")


def test_another_config_model_timeframe_or_symbol_is_refused(ens, snap):
    other = TreeEnsemble()
    other.fit(BARS[:500], LabelSpec("next", 1), EnsembleConfig(n_estimators=2, max_depth=2), evaluate=False)
    cases = [
        ("config_hash", dict(config=replace(CFG, spread=1e-4), ensemble=ens)),
        ("model_hashes", dict(config=CFG, ensemble=other)),
        ("model_hashes", dict(config=CFG, ensemble=None)),
        ("symbol", dict(config=CFG, ensemble=ens, symbol="GBPUSD")),
        ("timeframe", dict(config=CFG, ensemble=ens, timeframe="H4")),
    ]
    for field, kw in cases:
        with pytest.raises(SnapshotMismatch) as ei:
            Gate.restore(snap, **kw)
        assert ei.value.field == field, (field, str(ei.value))
        assert str(snap) in str(ei.value) and "Fix:" in str(ei.value)
    assert Gate.restore(snap, CFG, ens).symbol == "EURUSD"  # the right ones restore


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("fxgate_version", "0.0.1"),
        ("config_hash", "0" * 16),
        ("model_hashes", {"l1": "f" * 16}),
        ("timeframe", "M15"),
        ("symbol", "USDJPY"),
        ("modules", ("vpin", "bocpd")),
    ],
)
def test_each_identity_field_is_checked(ens, snap, tmp_path, field, value):
    """A well-formed snapshot (valid checksum) whose header differs from the gate in one field only."""
    s = read(snap)
    edited = tmp_path / "edited"
    write(edited, replace(s.identity, **{field: value}), s.bars, s.last_ts, s.state)
    with pytest.raises(SnapshotMismatch) as ei:
        Gate.restore(edited, CFG, ens, timeframe="H1", symbol="EURUSD")
    assert ei.value.field == field and repr(value if not isinstance(value, tuple) else list(value)) in str(ei.value)


def test_truncated_flipped_or_foreign_files_are_refused(ens, snap, tmp_path):
    data = snap.read_bytes()
    bad = tmp_path / "bad"
    rng = np.random.default_rng(16)
    cases = [("truncated", data[: len(data) // 2]), ("truncated", data[:60]), ("truncated", data + b"\0")]
    cases.append(("magic", b"PK\x03\x04" + data[4:]))  # a zip (np.savez) or anything else
    for pos in [20, 50, 80, len(data) // 2, len(data) - 1, *rng.integers(48, len(data), 5)]:
        flipped = bytearray(data)
        flipped[pos] ^= 0x10
        cases.append(("truncated" if 56 <= pos < 72 else "checksum", bytes(flipped)))
    for field, blob in cases:
        bad.write_bytes(blob)
        with pytest.raises(SnapshotCorrupt) as ei:
            Gate.restore(bad, CFG, ens)
        assert ei.value.field == field, (field, str(ei.value))
    bad.write_bytes(data)
    assert Gate.restore(bad, CFG, ens)._bars == read(snap).bars


def test_a_newer_format_version_is_refused(ens, snap, tmp_path):
    data = bytearray(snap.read_bytes())
    data[48] = 2  # format version 2, checksum recomputed: a whole file of a format this fxgate does not read
    data[16:48] = hashlib.sha256(bytes(data[48:])).digest()
    (tmp_path / "v2").write_bytes(bytes(data))
    with pytest.raises(SnapshotMismatch) as ei:
        Gate.restore(tmp_path / "v2", CFG, ens)
    assert ei.value.field == "format_version"


def test_loading_never_unpickles(snap, monkeypatch):
    """The reader builds only plain data and numeric arrays: with pickle disabled it still loads; an object array
    is refused when writing."""
    import pickle

    def no(*a, **k):
        raise AssertionError("a snapshot must never be unpickled")

    monkeypatch.setattr(pickle, "loads", no)
    monkeypatch.setattr(pickle, "load", no)
    s = read(snap)
    assert s.state["modules"] and s.bars > 0
    with pytest.raises(TypeError, match="dtype object"):
        write(snap.with_name("x"), s.identity, 0, None, {"bad": np.array([{}], dtype=object)})


# -- aon_bar -------------------------------------------------------------------------------------------------------
def test_aon_bar_answers_what_on_bar_answers(ens):
    sync = with_judge(Gate(JUDGED, ens, timeframe="H1", symbol="EURUSD"), HashJudge())
    asy = with_judge(Gate(JUDGED, ens, timeframe="H1", symbol="EURUSD"), HashJudge())
    for g in (sync, asy):
        g.warm_up(BARS[1500:2000])
    bars = [*BARS[2000:2060], BARS[2030]]  # and a refused one

    async def drive():
        return [plain(await asy.aon_bar(b)) for b in bars]

    want = [plain(sync.on_bar(b)) for b in bars]
    assert asyncio.run(drive()) == want
    assert asy._slow_layers[0].judge.calls > 10  # the worker path ran, not only the inline one
    same(state(sync), state(asy))


def test_a_slow_judge_on_one_symbol_never_stops_another(ens):
    """EURUSD's judge blocks until released; meanwhile GBPUSD's bars go through aon_bar on the same event loop."""
    release = threading.Event()
    judge = HashJudge(release)
    slow = with_judge(Gate(JUDGED, ens, timeframe="H1", symbol="EURUSD"), judge)
    other = Gate(replace(JUDGED, **NO_LLM), ens, timeframe="H1", symbol="GBPUSD")
    slow.warm_up(BARS[1500:2000])
    other.warm_up(Bars(BARS.ts[1500:2000], *(x[1500:2000] for x in _prices()), symbol="GBPUSD", timeframe="H1"))
    gb = Bars(BARS.ts[2000:2100], *(x[2000:2100] for x in _prices()), symbol="GBPUSD", timeframe="H1")

    async def drive():
        pending = None
        for b in BARS[2000:2100]:  # until a bar reaches the judge (the models lean one way)
            t = asyncio.create_task(slow.aon_bar(b))
            while not t.done() and not judge.entered.is_set():
                await asyncio.sleep(0)
            if judge.entered.is_set():
                pending = t
                break
        assert pending is not None, "no bar reached the judge"
        before = other._bars
        done = [await other.aon_bar(b) for b in gb]  # the other symbol, while EURUSD's judge is thinking
        assert not pending.done() and other._bars == before + len(gb)
        release.set()
        return done, await pending

    done, d = asyncio.run(drive())
    assert len(done) == 100 and all(x.symbol == "GBPUSD" and x.first_veto != "input" for x in done)
    assert d.layer("L2").enabled and d.layer("L2").reason.startswith("hash judge")


def _prices():
    return (BARS.open * 1.2, BARS.high * 1.2, BARS.low * 1.2, BARS.close * 1.2, BARS.volume)


def test_a_snapshot_of_an_older_module_state_layout_is_refused(ens, snap, tmp_path):
    """edge_proof's state gained a slot (state_version 2): a snapshot that lists it as the old layout (plain
    "edge_proof", as a gate before the change wrote it) is refused as another gate's, naming the modules, instead of
    being loaded into arrays of the wrong size."""
    s = read(snap)
    assert "edge_proof@2" in s.identity.modules
    old = tuple("edge_proof" if m == "edge_proof@2" else m for m in s.identity.modules)
    edited = tmp_path / "old-layout"
    write(edited, replace(s.identity, modules=old), s.bars, s.last_ts, s.state)
    with pytest.raises(SnapshotMismatch) as ei:
        Gate.restore(edited, CFG, ens, timeframe="H1", symbol="EURUSD")
    assert ei.value.field == "modules" and "edge_proof@2" in str(ei.value)
