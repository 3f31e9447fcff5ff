"""The gate: config, Decision schema, fail-closed input, no look-ahead, outcome timing, and the backtesting.py
cross-check of replayed trades."""

from __future__ import annotations

import math
import warnings
from dataclasses import replace

import jsonschema
import numpy as np
import pandas as pd
import pytest
from fxgate.engine import Bars, sample_bars
from fxgate.engine.config import DEFAULT_TOML, ConfigError, GateConfig, L1Config, L4Config, ReplayConfig, load_config
from fxgate.engine.decision import schema
from fxgate.engine.gate import Gate
from fxgate.engine.replay import replay, trades_from
from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
from fxgate.models.labels import LabelSpec
from fxgate.modules import REGISTRY, CertaintyModule, register
from fxgate.modules._base import insufficient

# A permissive configuration that emits signals, so the trade path is exercised (the defaults emit none on the
# sample, which is the honest result, not a test of trades).
LOOSE = GateConfig(l1=L1Config(threshold=0.5), l4=L4Config(modules=("vpin",), params={"vpin": {
    "rule": "absolute", "absolute": 1.01, "n_buckets": 10}}))  # fmt: skip


@pytest.fixture(scope="module")
def ens():
    b = sample_bars()[:2000]
    e = TreeEnsemble()
    e.fit(b, LabelSpec("next", 1), EnsembleConfig(n_estimators=30, max_depth=4), evaluate=False)
    return e


# -- config -----------------------------------------------------------------------------------------------------
def test_default_toml_is_the_defaults(tmp_path):
    p = tmp_path / "gate.toml"
    p.write_text(DEFAULT_TOML)
    assert load_config(p) == GateConfig() and load_config(p).hash == GateConfig().hash
    assert GateConfig(spread=1e-4).hash != GateConfig().hash


@pytest.mark.parametrize(("text", "fragment"), [
    ("horizn = 2\n", "unknown key 'horizn'; did you mean 'horizon'?"),
    ("[l1]\nthreshhold = 0.9\n", "[l1]: unknown key 'threshhold'; did you mean 'threshold'?"),
    ("[l1]\nthreshold = \"high\"\n", "[l1] threshold = 'high': must be a number"),
    ("[l2]\nenabled = true\n", "[llm] model is empty. Fix: set [llm] model to a GGUF file"),
    ("[llm]\non_load_error = \"ignore\"\n", '[llm] on_load_error = \'ignore\': use "raise" or "veto"'),
    ("[l3]\nthinking = 5\n", "unknown key 'thinking'"),
    ("[l4]\nmodules = [\"vpn\"]\n", "unknown module 'vpn'; did you mean 'vpin'?"),
    ("[l4.params.vpin]\nquantil = 0.8\n", "[l4.params.vpin]: module 'vpin' has no parameter 'quantil'"),
    ("mode = \"fast\"\n", "mode = 'fast' is not allowed"),
    ("horizon = 1.5\n", "horizon = 1.5: must be an integer"),
    ("[l1\n", "not valid TOML"),
])  # fmt: skip
def test_bad_config_names_key_and_fix(tmp_path, text, fragment):
    p = tmp_path / "gate.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert fragment in str(ei.value)


# -- decisions --------------------------------------------------------------------------------------------------
def test_decisions_validate_against_the_committed_schema(ens):
    bars = sample_bars()
    gate = Gate(LOOSE, ens, timeframe="H1", symbol="EURUSD")
    decisions = [gate.on_bar(b) for b in bars[2000:2600]]
    decisions.append(gate.on_bar(replace(bars[2600], close=math.nan)))
    assert any(d.action != "NONE" for d in decisions) and any(d.first_veto == "input" for d in decisions)
    validator = jsonschema.Draft202012Validator(schema())
    for d in decisions:
        validator.validate(d.to_dict())
        for v in d.layers:
            assert not (v.passed and not v.enabled)  # a disabled layer is never reported as passed
        assert d.layer("L2").enabled is False and d.layer("L2").reason == "disabled by config"
        assert d.why


def test_bad_bars_fail_closed_and_leave_state_intact(ens):
    bars = sample_bars()[2000:2300]
    a = Gate(LOOSE, ens, timeframe="H1")
    b = Gate(LOOSE, ens, timeframe="H1")
    bad = [replace(bars[150], close=math.nan), replace(bars[150], high=bars[150].low * 0.5),
           replace(bars[150], ts=bars[148].ts), replace(bars[150], volume=-1.0), replace(bars[150], open=-1.0),
           replace(bars[150], timeframe="M1")]  # fmt: skip
    for i, bar in enumerate(bars):
        if i == 150:
            for x in bad:
                d = a.on_bar(x)
                assert d.action == "NONE" and d.first_veto == "input" and d.size == 0
        da, db = a.on_bar(bar), b.on_bar(bar)
        assert da.to_dict() | {"layers": None} == db.to_dict() | {"layers": None}
        assert [(v.passed, v.score, v.reason) for v in da.layers] == [(v.passed, v.score, v.reason) for v in db.layers]
    assert a.rejected == len(bad)


def test_no_look_ahead_in_decisions(ens, rng):
    bars = sample_bars()[2000:2800]
    base = [d.to_dict() for d in _run(ens, bars)]
    for t in (100, 500):
        k = len(bars) - t - 1
        s = 1 + rng.normal(0, 0.003, k)
        pert = Bars(bars.ts, *(np.r_[c[: t + 1], c[t + 1 :] * s] for c in (bars.open, bars.high, bars.low, bars.close)),
                    np.r_[bars.volume[: t + 1], rng.integers(1, 5000, k)], symbol="EURUSD")  # fmt: skip
        got = [d.to_dict() for d in _run(ens, pert)]
        strip = lambda d: {**d, "layers": [{**v, "latency_us": 0} for v in d["layers"]]}  # noqa: E731
        assert [strip(d) for d in got[: t + 1]] == [strip(d) for d in base[: t + 1]]


def _run(ens, bars):
    g = Gate(GateConfig(l1=L1Config(threshold=0.55), mode="full"), ens, timeframe="H1", symbol="EURUSD")
    return [g.on_bar(b) for b in bars]


class _Spy(CertaintyModule):
    defaults = {}
    seen: list = []

    def reset(self):
        self.n = 0

    def update(self, ctx):
        self.n += 1
        for o in ctx.outcomes:
            _Spy.seen.append((o, int(ctx.bar.ts), self.n))

    def verdict(self):
        return insufficient(self.name, 0, 1, 0.0)


def test_outcomes_arrive_exactly_horizon_bars_later(ens):
    if "spy_outcomes" not in REGISTRY:
        register("spy_outcomes")(_Spy)
    bars = sample_bars()[2000:2400]
    idx = {int(t): i for i, t in enumerate(bars.ts)}
    for h in (1, 5):
        _Spy.seen.clear()
        g = Gate(GateConfig(horizon=h, l4=L4Config(modules=("spy_outcomes",))), ens, timeframe="H1")
        for b in bars:
            g.on_bar(b)
        assert len(_Spy.seen) > 50
        for o, ts, _ in _Spy.seen:
            assert o.exit_ts == ts and idx[o.exit_ts] - idx[o.entry_ts] == h
            assert o.entry_price == bars.close[idx[o.entry_ts]] and o.exit_price == bars.close[idx[ts]]


def test_cheapest_mode_stops_at_the_first_veto_full_mode_does_not(ens):
    bars = sample_bars()[2000:2200]
    cheap = Gate(GateConfig(), ens, timeframe="H1")
    full = Gate(GateConfig(mode="full"), ens, timeframe="H1")
    for b in bars:
        dc, df = cheap.on_bar(b), full.on_bar(b)
    assert dc.first_veto == "L1" and dc.layer("L4").details == () and "not evaluated" in dc.layer("L4").reason
    assert len(df.layer("L4").details) == len(GateConfig().l4.modules)


# -- replay and the backtesting.py cross-check ------------------------------------------------------------------
def test_replay_trades_match_backtesting_py():
    from backtesting import Backtest, Strategy

    bars = sample_bars()[:3200]
    cfg = replace(LOOSE, replay=ReplayConfig(train_bars=2000, window_bars=600, n_estimators=30, folds=1))
    res = replay(bars, cfg)
    assert res.metrics["bars"] == 1200 and len(res.trades) > 20
    assert res.trades == trades_from(bars, res.start, res.decisions, cfg)
    signals = {int(bars.ts[res.start + k]): (1 if d.action == "BUY" else -1)
               for k, d in enumerate(res.decisions) if d.action != "NONE"}  # fmt: skip
    df = bars.to_pandas().rename(columns=str.capitalize)
    df.index = df.index.tz_localize(None)
    stamps = [int(t) for t in bars.ts]

    class FromSignals(Strategy):
        def init(self):
            pass

        def next(self):
            i = len(self.data) - 1
            for t in list(self.trades):
                if t.entry_bar == i - cfg.horizon:
                    t.close()
            d = signals.get(stamps[i])
            # backtesting.py does not call next() on the last bar, so a trade exiting there cannot be closed
            if d and i + cfg.horizon < len(stamps) - 1:
                (self.buy if d > 0 else self.sell)(size=1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = Backtest(df, FromSignals, cash=1e6, trade_on_close=True, hedging=True, finalize_trades=True).run()
    bt = stats["_trades"].sort_values("EntryTime")
    ours = pd.DataFrame(res.trades)
    ours = ours[ours["exit_ts"] < int(bars.ts[-1])]
    assert len(bt) == len(ours)
    # one unit per trade in backtesting.py; ours is P&L per unit (LOOSE has no spread, backtesting.py none either)
    np.testing.assert_allclose(bt["PnL"].to_numpy(), ours["pnl_price"].to_numpy(), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(bt["EntryPrice"].to_numpy(), ours["entry"].to_numpy())
    np.testing.assert_array_equal(bt["ExitPrice"].to_numpy(), ours["exit"].to_numpy())
    m = res.metrics
    assert m["trades_scored"] == len(res.trades) and 0 <= m["precision"] <= 1
    assert m["pnl_pips"] == pytest.approx(sum(t["pnl_pips"] for t in res.trades))
    assert "claimed 99.999%" in m["honesty"]


def test_deflated_sharpe_reproduces_the_published_example():
    """Bailey & Lopez de Prado (2014), section 6: annualized SR 2.5 over 5 years of daily returns (T = 1250),
    skewness -3, kurtosis 10, N = 100 trials with annualized variance of Sharpe estimates 0.5 -> DSR = 0.9004."""
    from fxgate.engine.replay import deflated_sharpe_from

    sr = 2.5 / math.sqrt(250)
    assert deflated_sharpe_from(sr, 1250, -3.0, 10.0, 100, 0.5 / 250) == pytest.approx(0.9004, abs=5e-4)


def test_replay_of_a_non_fx_series_and_interruption_keeps_partial_results():
    import backtesting
    from fxgate.engine import load_bars

    goog = load_bars(__import__("pathlib").Path(backtesting.__file__).parent / "test" / "GOOG.csv", symbol="GOOG")
    assert goog.timeframe == "D1"
    cfg = replace(LOOSE, pip=0.01, replay=ReplayConfig(train_bars=1500, window_bars=400, n_estimators=20, folds=1))
    res = replay(goog, cfg)
    assert res.metrics["bars"] == len(goog) - 1500 and not res.interrupted
    calls = {"n": 0}

    def stop_after_100():
        calls["n"] += 1
        return calls["n"] >= 100

    part = replay(goog, cfg, should_stop=stop_after_100)
    assert part.interrupted and part.metrics["interrupted"] and part.metrics["bars"] == 100
    assert [d.to_dict()["action"] for d in part.decisions] == [d.to_dict()["action"] for d in res.decisions[:100]]
