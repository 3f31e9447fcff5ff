"""GatePool: many symbols' bars interleaved answer exactly as one standalone gate per symbol; the unknown-symbol
policy; per-symbol bundles; warmth; snapshot_all / restore_all continue every symbol exactly."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from fxgate.engine import Bars, sample_bars
from fxgate.engine.config import GateConfig, L1Config, L2Config, L3Config, L4Config
from fxgate.engine.gate import Gate
from fxgate.engine.pool import GatePool, PoolError, UnknownSymbol
from fxgate.engine.snapshot import SnapshotMismatch
from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
from fxgate.models.labels import LabelSpec

BARS = sample_bars()
CFG = GateConfig(
    horizon=2,
    spread=8e-5,
    l1=L1Config(threshold=0.5),
    l4=L4Config(
        modules=("vpin", "bocpd", "adverse_selection", "robust_kelly", "conformal_prediction"),
        params={"vpin": {"min_history": 20, "history": 100}, "bocpd": {"calib_bars": 50}},
    ),
    l2=L2Config(enabled=False),
    l3=L3Config(enabled=False),
)
SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD", "USDCHF", "NZDUSD")


def series(symbol: str, lo: int, hi: int) -> Bars:
    """A distinct price path per symbol (the sample scaled, and shifted in time by the symbol's index)."""
    j = SYMBOLS.index(symbol)
    f = 1.0 + 0.1 * j
    sl = slice(lo + 37 * j, hi + 37 * j)
    return Bars(
        BARS.ts[sl],
        BARS.open[sl] * f,
        BARS.high[sl] * f,
        BARS.low[sl] * f,
        BARS.close[sl] * f,
        BARS.volume[sl],
        symbol=symbol,
        timeframe="H1",
    )


@pytest.fixture(scope="module")
def ens():
    e = TreeEnsemble()
    e.fit(BARS[:1000], LabelSpec("next", 1), EnsembleConfig(n_estimators=10, max_depth=3), evaluate=False)
    return e


def plain(d) -> dict:
    x = d.to_dict()
    for v in x["layers"]:
        v.pop("latency_us")
    return x


def interleaved(lo: int, hi: int, seed: int = 7) -> list[tuple[str, object]]:
    """Every symbol's bars in time order per symbol, the symbols shuffled among each other."""
    queues = {s: list(series(s, lo, hi)) for s in SYMBOLS}
    rng = np.random.default_rng(seed)
    out = []
    while any(queues.values()):
        s = rng.choice([s for s in SYMBOLS if queues[s]])
        out.append((str(s), queues[s].pop(0)))
    return out


def test_interleaved_symbols_equal_standalone_gates(ens, tmp_path):
    pool = GatePool(CFG, timeframe="H1", ensemble=ens)
    alone = {s: Gate(CFG, ens, timeframe="H1", symbol=s) for s in SYMBOLS}
    feed = interleaved(2000, 2300)
    feed.insert(50, feed[10])  # a duplicate bar of one symbol: refused by its gate only
    got = {s: [] for s in SYMBOLS}
    want = {s: [] for s in SYMBOLS}
    for s, b in feed:
        got[s].append(plain(pool.on_bar(s, b)))
        want[s].append(plain(alone[s].on_bar(b)))
    assert got == want
    assert sum(d["first_veto"] == "input" for s in SYMBOLS for d in got[s]) == 1
    assert len({d["first_veto"] for s in SYMBOLS for d in got[s]}) > 3
    st = {x.symbol: x for x in pool.symbols()}
    assert sorted(st) == sorted(SYMBOLS)
    for s in SYMBOLS:
        assert (st[s].bars, st[s].last_ts, st[s].rejected) == (
            alone[s]._bars,
            alone[s].intake.last_ts,
            alone[s].rejected,
        )

    # snapshot_all / restore_all: every symbol continues as its standalone gate
    pool.snapshot_all(tmp_path / "state")
    back = GatePool.restore_all(tmp_path / "state", CFG, timeframe="H1", ensemble=ens)
    assert sorted(x.symbol for x in back.symbols()) == sorted(SYMBOLS)
    for s, b in interleaved(2300, 2400, seed=8):
        assert plain(back.on_bar(s, b)) == plain(alone[s].on_bar(b))


def test_aon_bar_of_the_pool(ens):
    pool = GatePool(CFG, timeframe="H1", ensemble=ens, symbols=SYMBOLS[:3])
    alone = {s: Gate(CFG, ens, timeframe="H1", symbol=s) for s in SYMBOLS[:3]}
    feed = [(s, b) for s, b in interleaved(2000, 2100) if s in alone]

    async def drive():
        return [plain(await pool.aon_bar(s, b)) for s, b in feed]

    assert asyncio.run(drive()) == [plain(alone[s].on_bar(b)) for s, b in feed]


def test_unknown_symbols_by_policy(ens):
    strict = GatePool(CFG, timeframe="H1", ensemble=ens, unknown="refuse", symbols=("EURUSD",))
    assert "EURUSD" in strict and len(strict) == 1
    with pytest.raises(UnknownSymbol, match="unknown symbol 'GBPUSD'.*holds EURUSD"):
        strict.on_bar("GBPUSD", next(iter(series("GBPUSD", 2000, 2001))))
    assert len(strict) == 1
    lazy = GatePool(CFG, timeframe="H1", ensemble=ens)
    lazy.on_bar("GBPUSD", next(iter(series("GBPUSD", 2000, 2001))))
    assert "GBPUSD" in lazy
    for bad in ("../etc", "", ".hidden", "a/b"):
        with pytest.raises(PoolError, match="must be 1-64 letters"):
            lazy.gate(bad)
    with pytest.raises(PoolError, match="use 'create'"):
        GatePool(CFG, timeframe="H1", unknown="ignore")


def test_bundles_per_symbol(ens, tmp_path):
    other = TreeEnsemble()
    other.fit(BARS[:500], LabelSpec("next", 1), EnsembleConfig(n_estimators=2, max_depth=2), evaluate=False)
    other.save(tmp_path / "bundles" / "GBPUSD")
    pool = GatePool(CFG, timeframe="H1", bundles={"EURUSD": ens}, bundle_dir=tmp_path / "bundles")
    assert pool.gate("EURUSD").model_hashes["l1"] == ens.bundle_hash[:16]
    assert pool.gate("GBPUSD").model_hashes["l1"] == other.bundle_hash[:16]
    with pytest.raises(PoolError, match="no Layer-1 bundle for USDJPY"):
        pool.gate("USDJPY")
    # a snapshot restored with another symbol's bundle is refused (model hash)
    pool.on_bar("EURUSD", next(iter(series("EURUSD", 2000, 2001))))
    pool.snapshot_all(tmp_path / "s")
    with pytest.raises(SnapshotMismatch, match="model_hashes"):
        GatePool.restore_all(tmp_path / "s", CFG, timeframe="H1", bundles={"EURUSD": other})


def test_warm_means_no_module_lacks_data(ens):
    pool = GatePool(CFG, timeframe="H1", ensemble=ens)
    g = Gate(CFG, ens, timeframe="H1", symbol="EURUSD")
    seen_cold = False
    for b in series("EURUSD", 2000, 2400):
        pool.on_bar("EURUSD", b)
        g.on_bar(b)
        (st,) = pool.symbols()
        # the reference: every module's own verdict on the standalone gate
        lacking = tuple(m.name for m in g.modules if m.verdict().reason.startswith("insufficient data"))
        assert st.insufficient == lacking and st.warm == (not lacking)
        seen_cold |= not st.warm
        if st.warm:
            break
    assert seen_cold and st.warm  # it started cold and warmed up within the bars fed
