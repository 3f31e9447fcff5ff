"""Replay: bundles refused when they do not fit the data, trades that honour size and the spread convention,
strict-JSON metrics, precision beside its base rate, intervals that survive overlapping trades, the probabilistic
Sharpe ratio, and the backtesting.py cross-check of replayed trades (moved here from test_gate.py)."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from fxgate.engine import Bars, resample, sample_bars
from fxgate.engine.config import GateConfig, L1Config, L2Config, L3Config, L4Config, ReplayConfig, SizingConfig
from fxgate.engine.core.decision import Decision, LayerVerdict
from fxgate.engine.core.errors import FxgateError
from fxgate.engine.core.records import ModelProbability
from fxgate.engine.gate import Gate
from fxgate.engine.metrics import (
    deflated_sharpe_from,
    metrics_from,
    precision_interval,
    probabilistic_sharpe,
    trades_from,
)
from fxgate.engine.replaying import ReplayResult, replay, write_outputs
from fxgate.models._stats import hac_se
from fxgate.models.ensemble import MODEL_NAMES, EnsembleConfig, TreeEnsemble
from fxgate.models.labels import LabelSpec
from fxgate.modules._base import Outcome

# Permissive: Layer 1 at 0.5 and one always-passing module, so that signals are emitted and the trade path runs.
# L2/L3 are off explicitly (no GGUF in these tests), whatever the defaults are.
CFG = GateConfig(
    l1=L1Config(threshold=0.5),
    l2=L2Config(enabled=False),
    l3=L3Config(enabled=False),
    l4=L4Config(modules=("vpin",), params={"vpin": {"rule": "absolute", "absolute": 1.01, "n_buckets": 10}}),
)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not strict JSON")


def _decision(ts: int, action: str, size: float = 1.0, p_up: float | None = None) -> Decision:
    """A Decision as the gate shapes it (layers L1, L2, L3, L4), for tests of what is computed from decisions."""
    det = () if p_up is None else tuple(ModelProbability(m, p_up) for m in MODEL_NAMES)
    emitted = action != "NONE"
    layers = (
        LayerVerdict("L1", True, emitted, 0.6, 0.5, "test", 1.0, det),
        LayerVerdict("L2", False, False, None, None, "disabled by config", 0.0),
        LayerVerdict("L3", False, False, None, None, "disabled by config", 0.0),
        LayerVerdict("L4", True, emitted, 1.0, 1.0, "test", 1.0),
    )
    return Decision(int(ts), "EURUSD", action, size if emitted else 0.0, 0.6, layers, None if emitted else "L1", "x")


def _random_decisions(bars: Bars, start: int, rng: np.random.Generator, p_signal: float = 0.4) -> list[Decision]:
    out = []
    for i in range(start, len(bars)):
        u = rng.random()
        action = "BUY" if u < p_signal * 0.6 else ("SELL" if u < p_signal else "NONE")
        out.append(_decision(int(bars.ts[i]), action, float(rng.uniform(0.01, 2.0))))
    return out


def _with_spread(b: Bars, spread: np.ndarray, symbol: str = "EURUSD") -> Bars:
    return Bars(b.ts, b.open, b.high, b.low, b.close, b.volume, spread, symbol=symbol, timeframe=b.timeframe)


# -- bundles that do not fit the data are refused --------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A bundle fitted on the first 1500 sample bars, saved and loaded back as `fxgate replay --bundle` would."""
    e = TreeEnsemble()
    e.fit(sample_bars()[:1500], LabelSpec("next", 1), EnsembleConfig(n_estimators=10, max_depth=3), evaluate=False)
    d = tmp_path_factory.mktemp("bundle")
    e.save(d)
    return TreeEnsemble.load(d)


def test_a_partially_overlapping_bundle_is_refused_with_the_fix(bundle):
    """Regression (#12.5): the old replay silently started after the bundle's training labels."""
    bars = sample_bars()[1000:1800]
    last = bundle.manifest["training_window"]["last_label_end_ts"]
    inside = sum(1 for t in bars.ts if int(t) <= last)  # naive: bars the bundle had seen (or preceded its data)
    assert 0 < inside < len(bars)
    with pytest.raises(FxgateError) as err:
        replay(bars, CFG, bundle=bundle)
    msg = str(err.value)
    assert f"{inside} of this data's {len(bars)} bars" in msg and "not out of sample" in msg
    assert "Fix:" in msg and "--skip-trained-bars" in msg and "skip_trained_bars=True" in msg


def test_skipping_the_trained_bars_is_explicit_and_recorded(bundle, tmp_path):
    from fxgate.engine.report import write_report

    bars = sample_bars()[1000:1800]
    last = bundle.manifest["training_window"]["last_label_end_ts"]
    first_oos = next(i for i, t in enumerate(bars.ts) if int(t) > last)
    res = replay(bars, CFG, bundle=bundle, skip_trained_bars=True)
    assert res.start == first_oos and len(res.decisions) == len(bars) - first_oos
    assert all(d.ts > last for d in res.decisions)
    assert res.metrics["bundle"]["skipped_trained_bars"] == first_oos == res.metrics["warmup_bars"]
    assert res.metrics["bundle"]["bundle_hash"] == bundle.bundle_hash[:16]
    text = write_report(res, tmp_path / "r.html").read_text()
    assert f"The first {first_oos} bars of the file are inside the bundle's training window" in text


@pytest.mark.parametrize("skip", [False, True])
def test_a_bundle_that_saw_every_bar_is_refused_either_way(bundle, skip):
    for bars in (sample_bars()[:1500], sample_bars()[:40]):  # the training data; bars before its first sample
        with pytest.raises(FxgateError, match="nothing out of sample is left to replay. Fix:"):
            replay(bars, CFG, bundle=bundle, skip_trained_bars=skip)


def test_a_bundle_for_another_symbol_timeframe_or_horizon_is_refused(bundle):
    """Regression (#12.5): the old replay did not compare symbol or horizon (and the timeframe only deep in the
    gate, as a ValueError without a fix)."""
    later = sample_bars()[1600:2400]
    gbp = _with_spread(later, np.full(len(later), 1e-4), symbol="GBPUSD")
    with pytest.raises(FxgateError, match="fitted on EURUSD bars; this data is GBPUSD. Fix: fit a bundle on GBPUSD"):
        replay(gbp, CFG, bundle=bundle)
    with pytest.raises(FxgateError, match="fitted on H1 bars; this data is H4. Fix:"):
        replay(resample(later, "H4"), CFG, bundle=bundle)
    with pytest.raises(FxgateError, match=r"label_spec.horizon = 1\); the config's horizon is 3.*Fix: set horizon = 1"):
        replay(later, replace(CFG, horizon=3), bundle=bundle)


# -- trades: size and the spread convention --------------------------------------------------------------------
@pytest.mark.parametrize("column", [True, False])
def test_trades_honour_size_and_the_project_spread_convention(rng, column):
    """Regression (#12.6): P&L ignored Decision.size. Reference: fxgate's one cost convention, Outcome.pnl (mid
    prices, the full entry spread per round trip), times the decision's size, in a naive loop."""
    b = sample_bars()[:700]
    spread = rng.uniform(5e-5, 2e-4, len(b))
    bars = _with_spread(b, spread) if column else b
    cfg = replace(CFG, horizon=3, spread=0.5 if column else 8e-5)  # a spread column wins over the config's
    start = 150
    decs = _random_decisions(bars, start, rng)
    got = trades_from(bars, start, decs, cfg)
    want = []
    for k, d in enumerate(decs):
        i = start + k
        if d.action == "NONE" or i + 3 >= len(bars):
            continue
        cost = spread[i] if column else 8e-5
        o = Outcome(
            int(bars.ts[i]),
            int(bars.ts[i + 3]),
            1 if d.action == "BUY" else -1,
            float(bars.close[i]),
            float(bars.close[i + 3]),
            cost,
        )
        want.append((o.entry_ts, o.exit_ts, d.size, o.pnl, d.size * o.pnl))
    assert len(got) == len(want) > 50
    for t, (e, x, size, unit, sized) in zip(got, want, strict=True):
        assert (t["entry_ts"], t["exit_ts"], t["size"]) == (e, x, size)
        assert t["pnl_price_per_unit"] == pytest.approx(unit, abs=1e-15)
        assert t["pnl_price"] == pytest.approx(sized, abs=1e-15)
        assert t["pnl_pips"] == pytest.approx(sized / cfg.pip, abs=1e-11)
    m = metrics_from(bars, start, decs, got, cfg)
    equity = [0.0]
    for *_, sized in want:
        equity.append(equity[-1] + sized / cfg.pip)
    peak, mdd = 0.0, 0.0
    for v in equity:
        peak = max(peak, v)
        mdd = max(mdd, peak - v)
    assert m["pnl_pips"] == pytest.approx(equity[-1], abs=1e-9)
    assert m["pnl_pips_per_unit"] == pytest.approx(sum(u for *_, u, _ in want) / cfg.pip, abs=1e-9)
    assert m["max_drawdown_pips"] == pytest.approx(mdd, abs=1e-9)


# -- metrics: strict JSON, base rates ----------------------------------------------------------------------------
@pytest.mark.parametrize("n_signals", [0, 2])
def test_metrics_json_is_strict_even_when_figures_are_undefined(tmp_path, n_signals):
    """Regression (#12.6): with no trade (or two) the old metrics.json held NaN, which strict parsers reject."""
    bars = sample_bars()[:300]
    start = 200
    decs = [_decision(int(bars.ts[i]), "BUY" if i - start < n_signals else "NONE") for i in range(start, 300)]
    res = ReplayResult(bars, start, decs, trades_from(bars, start, decs, CFG), {}, horizon=1)
    res.metrics = metrics_from(bars, start, decs, res.trades, CFG)
    files = write_outputs(res, tmp_path / "out")
    m = json.loads(open(files["metrics.json"]).read(), parse_constant=_refuse_constant)
    assert m["sharpe_per_trade"] is None and m["probabilistic_sharpe"] is None and m["sharpe_annualized"] is None
    if n_signals == 0:
        assert m["precision"] is None and m["precision_ci95"] == [None, None] and m["mean_pips_per_trade"] is None
    else:
        assert m["trades_scored"] == 2 and m["precision_ci95"][0] is not None


def test_precision_sits_next_to_the_base_rate_of_the_same_directions(rng):
    """Regression (#12.6): the base rate (entering the same direction on every scorable replayed bar, net of the
    spread) beside each direction's precision, from a naive loop."""
    b = sample_bars()[:900]
    spread = rng.uniform(2e-5, 2e-4, len(b))
    bars = _with_spread(b, spread)
    cfg = replace(CFG, horizon=2)
    start = 300
    decs = _random_decisions(bars, start, rng)
    trades = trades_from(bars, start, decs, cfg)
    m = metrics_from(bars, start, decs, trades, cfg)
    won = {1: [0, 0], -1: [0, 0]}  # direction -> [bars where that entry won, bars]
    for i in range(start, len(bars)):
        if i + 2 >= len(bars):
            continue
        move = bars.close[i + 2] - bars.close[i]
        for direction in (1, -1):
            won[direction][0] += direction * move - spread[i] > 0
            won[direction][1] += 1
    base = {"BUY": won[1][0] / won[1][1], "SELL": won[-1][0] / won[-1][1]}
    prec, count = {}, {}
    for name, direction in (("BUY", 1), ("SELL", -1)):
        mine = [t for t in trades if t["direction"] == direction]
        count[name] = len(mine)
        prec[name] = sum(t["pnl_price_per_unit"] > 0 for t in mine) / len(mine)
        assert m["by_direction"][name] == {
            "trades": count[name],
            "precision": pytest.approx(prec[name]),
            "base_rate": pytest.approx(base[name]),
        }
    mix = (count["BUY"] * base["BUY"] + count["SELL"] * base["SELL"]) / (count["BUY"] + count["SELL"])
    assert m["base_rate"] == pytest.approx(mix) and m["base_rate_bars"] == won[1][1]
    assert f"would have won {mix:.1%}" in m["honesty"]


# -- intervals on overlapping trades ----------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", ["bartlett", "uniform"])
def test_hac_standard_error_against_statsmodels(rng, kernel):
    import statsmodels.api as sm

    c = np.cumsum(rng.normal(size=700))
    w = (c[5:] - c[:-5] > 0).astype(float)  # overlapping 5-bar outcomes: autocorrelated
    for lags in (0, 1, 4, 9):
        ref = (
            sm.OLS(w, np.ones(len(w)))
            .fit(cov_type="HAC", cov_kwds={"maxlags": lags, "kernel": kernel, "use_correction": False})
            .bse[0]
        )
        assert hac_se(w, lags, kernel) == pytest.approx(ref, rel=1e-10), lags


def test_precision_interval_uses_the_effective_number_of_overlapping_trades(rng):
    import statsmodels.api as sm

    c = np.cumsum(rng.normal(size=500))
    w = (c[4:] - c[:-4] > 0).astype(float)
    ci1, how1 = precision_interval(w, 1)
    assert ci1 == pytest.approx(proportion_confint(int(w.sum()), len(w), method="wilson"), abs=1e-12)
    assert "independent" in how1
    ci4, how4 = precision_interval(w, 4)
    se = (
        sm.OLS(w, np.ones(len(w)))
        .fit(cov_type="HAC", cov_kwds={"maxlags": 3, "kernel": "uniform", "use_correction": False})
        .bse[0]
    )
    p = w.mean()
    n_eff = min(len(w), p * (1 - p) / se**2)
    assert ci4 == pytest.approx(proportion_confint(p * n_eff, n_eff, method="wilson"), abs=1e-12)
    assert ci4[1] - ci4[0] > ci1[1] - ci1[0] and "overlap" in how4 and f"{n_eff:.1f} of {len(w)}" in how4


def test_precision_interval_holds_its_level_when_trades_overlap(rng):
    """Statistics tested as statistics: 5-bar trades entered on every bar of a driftless random walk win half the
    time; the 95% interval must cover 0.5 in about 95% of runs. The i.i.d. Wilson interval does not."""
    h, sims, ours, iid = 5, 400, 0, 0
    for _ in range(sims):
        c = np.cumsum(rng.normal(size=400 + h))
        w = (c[h:] - c[:-h] > 0).astype(float)
        lo, hi = precision_interval(w, h)[0]
        ours += lo <= 0.5 <= hi
        lo, hi = proportion_confint(int(w.sum()), len(w), method="wilson")
        iid += lo <= 0.5 <= hi
    assert ours / sims >= 0.895, ours / sims
    assert iid / sims <= 0.8, iid / sims  # what the correction is for


# -- the probabilistic Sharpe ratio -----------------------------------------------------------------------------
def test_probabilistic_sharpe_is_the_published_closed_form(rng):
    """Bailey & López de Prado (2012), eq. 11, computed here from raw moments (scipy only for the normal CDF)."""
    r = rng.standard_t(5, 400) * 1e-3 + 2e-4
    n = len(r)
    mu = r.sum() / n
    sr = mu / math.sqrt(((r - mu) ** 2).sum() / (n - 1))
    m2 = ((r - mu) ** 2).mean()
    g3, g4 = ((r - mu) ** 3).mean() / m2**1.5, ((r - mu) ** 4).mean() / m2**2
    for bench in (0.0, 0.05):
        z = (sr - bench) * math.sqrt(n - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2)
        assert probabilistic_sharpe(r, bench) == pytest.approx(stats.norm.cdf(z), abs=1e-12)
    assert probabilistic_sharpe(r[:2]) is None and probabilistic_sharpe(np.ones(10)) is None
    # one trial: the "deflated" Sharpe ratio deflates by nothing, it is the PSR
    sk, ku = float(stats.skew(r)), float(stats.kurtosis(r, fisher=False))
    assert deflated_sharpe_from(sr, n, sk, ku, 1) == pytest.approx(probabilistic_sharpe(r), abs=1e-15)


def test_deflated_sharpe_reproduces_the_published_example():
    """Bailey & López de Prado (2014), section 6: annualized SR 2.5 over 5 years of daily returns (T = 1250),
    skewness -3, kurtosis 10, N = 100 trials with annualized variance of Sharpe estimates 0.5 -> DSR = 0.9004."""
    sr = 2.5 / math.sqrt(250)
    assert deflated_sharpe_from(sr, 1250, -3.0, 10.0, 100, 0.5 / 250) == pytest.approx(0.9004, abs=5e-4)


def test_probabilistic_sharpe_is_uniform_under_the_null(rng):
    """With zero-mean i.i.d. returns the PSR against 0 is a p-value: uniform on (0, 1)."""
    vals = [probabilistic_sharpe(rng.normal(0, 1e-3, 250)) for _ in range(500)]
    assert stats.kstest(vals, "uniform").pvalue > 1e-3


def test_metrics_call_one_trial_probabilistic_not_deflated(rng):
    b = sample_bars()[:500]
    decs = _random_decisions(b, 200, rng)
    m = metrics_from(b, 200, decs, trades_from(b, 200, decs, CFG), CFG)
    assert "deflated_sharpe" not in m
    pips = np.array([t["pnl_pips"] for t in trades_from(b, 200, decs, CFG)])
    assert m["probabilistic_sharpe"] == pytest.approx(probabilistic_sharpe(pips))
    assert m["sharpe_assumes"] == "independent trades"
    assert (
        "overlap"
        in metrics_from(b, 200, decs, trades_from(b, 200, decs, replace(CFG, horizon=4)), replace(CFG, horizon=4))[
            "sharpe_assumes"
        ]
    )


# -- the backtesting.py cross-check (moved from tests/engine/test_gate.py) ---------------------------------------
@pytest.fixture(scope="module")
def walk_forward():
    """A real walk-forward replay: 3-bar trades, a 0.8-pip spread, sizes of 0.37 (scale), two Layer-1 refits."""
    cfg = replace(
        CFG,
        horizon=3,
        spread=8e-5,
        sizing=SizingConfig(scale=0.37),
        replay=ReplayConfig(train_bars=1500, window_bars=400, n_estimators=20, folds=1),
    )
    bars = sample_bars()[:2300]
    return bars, cfg, replay(bars, cfg)


@pytest.mark.slow
def test_replay_trades_match_backtesting_py_with_size_and_spread(walk_forward):
    """Every replayed trade against backtesting.py trade for trade, with the same size and a non-zero spread
    (charged as backtesting.py commission: half the spread per fill, the project's convention)."""
    from backtesting import Backtest, Strategy

    bars, cfg, res = walk_forward
    h, units = cfg.horizon, 10**6  # backtesting.py wants whole units: sizes in micro-units
    assert res.metrics["bars"] == 800 and len(res.trades) > 20
    assert all(t["size"] == pytest.approx(0.37) for t in res.trades)
    signals = {
        int(bars.ts[res.start + k]): (1 if d.action == "BUY" else -1, d.size)
        for k, d in enumerate(res.decisions)
        if d.action != "NONE"
    }
    df = bars.to_pandas().rename(columns=str.capitalize)
    df.index = df.index.tz_localize(None)
    stamps = [int(t) for t in bars.ts]

    class FromSignals(Strategy):
        def init(self):
            pass

        def next(self):
            i = len(self.data) - 1
            for t in list(self.trades):
                if t.entry_bar == i - h:
                    t.close()
            s = signals.get(stamps[i])
            # backtesting.py does not call next() on the last bar, so a trade exiting there cannot be closed
            if s and i + h < len(stamps) - 1:
                (self.buy if s[0] > 0 else self.sell)(size=round(s[1] * units))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats_ = Backtest(
            df,
            FromSignals,
            cash=1e12,
            commission=lambda size, price: abs(size) * cfg.spread / 2,
            trade_on_close=True,
            hedging=True,
            finalize_trades=True,
        ).run()
    bt = stats_["_trades"].sort_values("EntryTime")
    ours = pd.DataFrame(res.trades)
    ours = ours[ours["exit_ts"] < int(bars.ts[-1])]
    assert len(bt) == len(ours) > 20
    np.testing.assert_allclose(bt["Size"].abs().to_numpy() / units, ours["size"].to_numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(bt["PnL"].to_numpy() / units, ours["pnl_price"].to_numpy(), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(bt["EntryPrice"].to_numpy(), ours["entry"].to_numpy())
    np.testing.assert_array_equal(bt["ExitPrice"].to_numpy(), ours["exit"].to_numpy())
    m = res.metrics
    assert m["pnl_pips"] == pytest.approx(
        bt["PnL"].sum() / units / cfg.pip + sum(t["pnl_pips"] for t in res.trades if t["exit_ts"] >= int(bars.ts[-1])),
        abs=1e-6,
    )


@pytest.mark.slow
def test_a_real_replay_writes_strict_json(walk_forward, tmp_path):
    _, _, res = walk_forward
    files = write_outputs(res, tmp_path)
    m = json.loads(open(files["metrics.json"]).read(), parse_constant=_refuse_constant)
    assert m["horizon"] == 3 and m["trades_scored"] == len(res.trades)
    assert "Hansen–Hodrick" in m["precision_ci95_method"] or "Newey–West" in m["precision_ci95_method"]
    assert list(pd.read_csv(files["trades.csv"]).columns)[-4:] == [
        "pnl_price_per_unit",
        "pnl_pips_per_unit",
        "pnl_price",
        "pnl_pips",
    ]


def test_repairs_made_on_loading_reach_metrics_and_the_report(bundle, tmp_path):
    """A file loaded with policy="repair" (a duplicated row, two rows swapped) says so in metrics.json and the
    report: counts and lines, as the loader's own report lists them."""
    from fxgate.engine import load_bars
    from fxgate.engine.report import write_report

    b = sample_bars()[1500:1800]
    df = b.to_pandas().reset_index()
    df["time"] = df["time"].dt.strftime("%Y-%m-%d %H:%M:%S") if "time" in df else df.iloc[:, 0]
    rows = df.to_dict("records")
    rows.insert(51, dict(rows[50]))  # a duplicate of line 52 at line 53 (header = line 1)
    rows[100], rows[101] = rows[101], rows[100]  # out of order
    p = tmp_path / "EURUSD_H1.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    bars = load_bars(p, policy="repair", symbol="EURUSD")
    want = bars.report.counts()
    assert want["dropped"] >= 1 and want["moved"] >= 1
    res = replay(bars, CFG, bundle=bundle)
    got = res.metrics["data"]["repairs"]
    assert {a: v["count"] for a, v in got.items()} == want
    json.dumps(res.metrics, allow_nan=False)
    text = write_report(res, tmp_path / "report.html").read_text()
    assert "The data file was repaired on loading (policy repair)" in text and "row(s) dropped" in text


def test_the_report_says_which_bars_the_outcome_modules_learn_from(tmp_path):
    from fxgate.engine.report import write_report

    bars = sample_bars()[:2400]
    cfg = replace(CFG, mode="full", replay=ReplayConfig(train_bars=2000, window_bars=400, n_estimators=10, folds=1))
    text = write_report(replay(bars, cfg), tmp_path / "r.html").read_text()
    assert "learn from every candidate" in text and "whether or not a signal was emitted" in text


def test_a_stop_during_warm_up_or_before_a_refit_is_answered_at_once():
    """should_stop is polled in the warm-up loop and before each Layer-1 refit, not only between replayed bars."""
    bars = sample_bars()[:3000]
    cfg = replace(CFG, replay=ReplayConfig(train_bars=2000, window_bars=400, n_estimators=10, folds=1))
    calls = {"n": 0}

    def stop_at(k):
        def f():
            calls["n"] += 1
            return calls["n"] >= k

        return f

    res = replay(bars, cfg, should_stop=stop_at(3))  # third poll: inside the 2000-bar warm-up
    assert res.interrupted and res.decisions == [] and res.fits == [] and calls["n"] == 3
    calls["n"] = 0
    n_warm = 2000 // 250  # polls during warm-up, then one before the first fit
    res = replay(bars, cfg, should_stop=stop_at(n_warm + 2))  # stop right before the first refit
    assert res.interrupted and res.fits == [] and res.decisions == []


@pytest.mark.parametrize("on", [False, True])
def test_a_drift_flag_is_recorded_and_refits_early_only_when_asked(monkeypatch, on):
    """A module's refit recommendation (faked here on bars 2100-2110: the detector has its own tests) is recorded
    as one drift episode; with refit_on_drift the ensemble is refit right after the first flagged bar on every bar
    up to it, once (refit_min_bars), and no bar is lost or replayed twice."""
    bars = sample_bars()[:2600]
    lo, hi = int(bars.ts[2100]), int(bars.ts[2110])
    monkeypatch.setattr(
        Gate, "refit_recommended", property(lambda g: ("double_adapt",) if lo <= g.intake.last_ts <= hi else ())
    )
    rc = ReplayConfig(train_bars=2000, window_bars=400, n_estimators=10, folds=1, refit_on_drift=on, refit_min_bars=50)
    res = replay(bars, replace(CFG, replay=rc))
    assert [d.ts for d in res.decisions] == [int(t) for t in bars.ts[2000:2600]]
    assert res.metrics["drift"]["episodes"] == [{"ts": lo, "modules": ["double_adapt"]}]
    got = [(f["window_start_ts"], f["trained_until_ts"], f["reason"]) for f in res.metrics["refits"]]
    want = [(int(bars.ts[2000]), int(bars.ts[1999]), "scheduled")]
    if on:
        want.append((int(bars.ts[2101]), lo, "drift: double_adapt"))
    want.append((int(bars.ts[2400]), int(bars.ts[2399]), "scheduled"))
    assert got == want
