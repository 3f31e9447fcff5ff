"""The replay's per-bar trace (every fast layer alone) and the figures computed from it (engine/diagnostics.py).

* Tracing changes no Decision: the replay with and without it gives the same Decisions on every bar.
* Each module's verdict alone equals the one a ``mode = "full"`` gate (which evaluates every module on every bar in
  its own layer loop) reports for that bar — an independent path through the gate.
* The diagnostics equal naive loops over the Decisions, the bars and the trace written here: the funnel, the pass
  rates alone, the layer-alone rules' precision after the spread, the precision–coverage points, the reliability
  bins, the pass-flag correlation (numpy's corrcoef on the flags) and the joint-vs-product figure.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from fxgate.engine import diagnostics as D
from fxgate.engine import sample_bars
from fxgate.engine.config import GateConfig, L1Config, L2Config, L3Config, ReplayConfig
from fxgate.engine.metrics import precision_interval
from fxgate.engine.pool import GatePool
from fxgate.engine.replaying import replay, write_outputs
from fxgate.modules.vpin import Vpin

# every default module (all 18). L1 at 0.5 passes wherever the three models lean one way, so Layer 4 runs and
# its modules' state decides the first veto (a trace that disturbed that state would change the Decisions); the
# cheapest gate still stops at the first failing module, and the trace must show the ones after it
CFG = GateConfig(
    horizon=2,
    l1=L1Config(threshold=0.5),
    spread=8e-5,
    l2=L2Config(enabled=False),
    l3=L3Config(enabled=False),
    replay=ReplayConfig(train_bars=2000, window_bars=600, n_estimators=20, folds=1),
)
BARS = sample_bars()[:2600]


def _strip(d):
    x = d.to_dict()
    for v in x["layers"]:
        v.pop("latency_us")
    return x


pytestmark = pytest.mark.slow  # three replays of 600 bars through all 18 modules (about a minute)


@pytest.fixture(scope="module")
def runs():
    traced = replay(BARS, CFG)
    plain = replay(BARS, CFG, trace=False)
    full = replay(BARS, replace(CFG, mode="full"), trace=False)
    return traced, plain, full


def test_tracing_changes_no_decision(runs):
    traced, plain, _ = runs
    assert plain.trace is None and traced.trace is not None
    assert len(traced.decisions) == len(plain.decisions) == len(traced.trace)
    assert [_strip(a) for a in traced.decisions] == [_strip(b) for b in plain.decisions]
    vetoes = {d.first_veto for d in plain.decisions}
    assert "L1" in vetoes and len({v for v in vetoes if v and v.startswith("L4:")}) >= 2  # L4's state matters here


def test_each_module_alone_is_what_a_full_mode_gate_reports(runs):
    traced, _, full = runs
    tr = traced.trace
    assert tr.modules == tuple(CFG.l4.modules)
    compared = 0
    for k, d in enumerate(full.decisions):
        got = {r.name: r for r in d.layer("L4").details}
        assert set(got) == set(tr.modules)  # full mode evaluates every module on every bar
        for j, name in enumerate(tr.modules):
            if not tr.evaluated[k, j]:
                continue
            r = got[name]
            assert tr.passed[k, j] == r.passed, (k, name)
            assert (math.isnan(r.score) and math.isnan(tr.score[k, j])) or tr.score[k, j] == r.score, (k, name)
            assert tr.threshold[k, j] == r.threshold or (math.isnan(r.threshold) and math.isnan(tr.threshold[k, j]))
            compared += 1
    # every module on every bar, except shap (trace_every = 10): on a tenth of them
    n = len(tr)
    assert compared == n * (len(tr.modules) - 1) + int(tr.evaluated[:, tr.modules.index("shap")].sum())
    assert n // 10 <= tr.evaluated[:, tr.modules.index("shap")].sum() <= n // 10 + 1
    # the L1 probabilities are the Decisions' own
    p = np.array([[x.p_up for x in d.layer("L1").details] or [np.nan] * 3 for d in traced.decisions])
    np.testing.assert_array_equal(np.isnan(p), np.isnan(tr.l1_probs))
    np.testing.assert_array_equal(p[~np.isnan(p)], tr.l1_probs[~np.isnan(tr.l1_probs)])
    # the modules the cheapest gate never reached on a bar (after the first failing one) are in the trace
    hidden = sum(len(tr.modules) - len(d.layer("L4").details) for d in traced.decisions if d.layer("L4").details)
    assert hidden > 0 and 0 < tr.l1_passed.sum() < len(tr)


def test_layers_parquet(runs, tmp_path):
    traced, _, _ = runs
    files = write_outputs(traced, tmp_path)
    df = pd.read_parquet(files["layers.parquet"])
    assert len(df) == len(traced.decisions)
    assert (df["ts"].astype("int64").to_numpy() == np.array([d.ts for d in traced.decisions])).all()
    np.testing.assert_array_equal(df["vpin_passed"].to_numpy(), traced.trace.passed[:, 0])
    assert {f"{m}_score" for m in CFG.l4.modules} <= set(df.columns)


# -- the diagnostics against naive loops -----------------------------------------------------------------------------
def _naive_outcomes(res):
    """Candidate direction and P&L after the spread per replayed bar, from the Decisions' own probabilities."""
    c, h = res.bars.close, res.horizon
    d, pnl = [], []
    for k, dec in enumerate(res.decisions):
        ps = [x.p_up for x in dec.layer("L1").details]
        lean = 0
        if len(ps) == 3 and all(p >= 0.5 for p in ps):
            lean = 1
        elif len(ps) == 3 and all(p < 0.5 for p in ps):
            lean = -1
        i = res.start + k
        d.append(lean)
        pnl.append(lean * (c[i + h] - c[i]) - CFG.spread if lean and i + h < len(c) else math.nan)
    return np.array(d), np.array(pnl)


def test_funnel_and_pass_rates(runs):
    traced, _, _ = runs
    f = dict(D.funnel(traced))
    veto = {}
    for d in traced.decisions:
        veto[d.first_veto] = veto.get(d.first_veto, 0) + 1
    n = len(traced.decisions)
    assert f["replayed"] == n and f["L1"] == n - veto.get("L1", 0) - veto.get("input", 0)
    assert f["signals"] == sum(d.action != "NONE" for d in traced.decisions)
    tr = traced.trace
    pa = D.pass_alone(traced)
    for j, name in enumerate(tr.modules):
        ev = [k for k in range(n) if tr.evaluated[k, j]]
        assert pa[name]["evaluated"] == len(ev)
        assert pa[name]["passed"] == sum(bool(tr.passed[k, j]) for k in ev)
    assert pa["L1"]["passed"] == sum(d.layer("L1").passed for d in traced.decisions)


def test_layer_alone_rules_and_strongest(runs):
    traced, _, _ = runs
    d, pnl = _naive_outcomes(traced)
    tr = traced.trace
    rules = D.layer_alone_rules(traced, CFG.spread)
    base = [p > 0 for p in pnl if not math.isnan(p)]
    for j, name in enumerate(tr.modules):
        wins = [pnl[k] > 0 for k in range(len(d)) if tr.evaluated[k, j] and tr.passed[k, j] and not math.isnan(pnl[k])]
        r = rules[name]
        assert r.signals == len(wins), name
        if wins:
            assert r.precision == pytest.approx(sum(wins) / len(wins), abs=1e-12)
        if name != "shap":
            assert r.base_rate == pytest.approx(sum(base) / len(base), abs=1e-12)
    # the strongest rule, recomputed here: per rule, its first-half wins by a naive loop, their interval from
    # metrics.precision_interval (tested against statsmodels in test_replay) beside the first half's base rate;
    # rules firing on >= 95% of the candidates are the base rate itself and are left out
    half, h = len(d) // 2, traced.horizon

    def fires(name, k):
        if name == "L1":
            return bool(tr.l1_passed[k])
        j = tr.modules.index(name)
        return bool(tr.evaluated[k, j] and tr.passed[k, j])

    def wins_of(name, ks):
        return [pnl[k] > 0 for k in ks if not math.isnan(pnl[k]) and d[k] and fires(name, k)]

    def base_of(name, ks):
        j = None if name == "L1" else tr.modules.index(name)
        return [pnl[k] > 0 for k in ks if not math.isnan(pnl[k]) and (j is None or tr.evaluated[k, j])]

    first, second = range(half), range(half + h, len(d))
    score = {}
    for name in ["L1", *tr.modules]:
        w, b = wins_of(name, first), base_of(name, first)
        if len(w) >= 20 and len(w) < 0.95 * len(b):
            lo = precision_interval(np.array(w, float), h)[0][0]
            score[name] = (lo - sum(b) / len(b), len(w))
    s = D.strongest_rule(traced, CFG.spread, min_signals=20)
    assert s["scored_on_bars"] == [half + h, len(d)]  # purged: no price the choice saw is in a scored outcome
    assert score and s["rule"] == max(score, key=score.get)
    w2, b2 = wins_of(s["rule"], second), base_of(s["rule"], second)
    assert s["out_of_sample"]["signals"] == len(w2)
    assert s["out_of_sample"]["precision"] == pytest.approx(sum(w2) / len(w2), abs=1e-12)
    assert s["out_of_sample"]["base_rate"] == pytest.approx(sum(b2) / len(b2), abs=1e-12)


def test_precision_coverage_points(runs):
    traced, _, _ = runs
    d, pnl = _naive_outcomes(traced)
    p = traced.trace.l1_probs
    pc = D.precision_coverage(traced, CFG.spread, thresholds=np.array([0.5, 0.52, 0.55]))
    for pt in pc["points"]:
        t = pt["threshold"]
        wins = [
            pnl[k] > 0
            for k in range(len(d))
            if d[k] and not math.isnan(pnl[k]) and min(x if x >= 0.5 else 1 - x for x in p[k]) >= t
        ]
        assert pt["signals"] == len(wins)
        if wins:
            assert pt["precision"] == pytest.approx(np.mean(wins), abs=1e-12)


def test_reliability_bins_against_statsmodels_wilson(runs):
    res = runs[0]
    c, h = res.bars.close, res.horizon
    bins = D.reliability(res, bins=5)
    assert sum(b["bars"] for b in bins) == sum(
        len(ps) == 3 and i + h < len(c) and c[i + h] != c[i]
        for i, ps in ((res.start + k, [x.p_up for x in dec.layer("L1").details]) for k, dec in enumerate(res.decisions))
    )
    hits = {}
    for k, dec in enumerate(res.decisions):  # the bins by hand: mean P(up) folded, hit = direction of the h-bar move
        ps = [x.p_up for x in dec.layer("L1").details]
        i = res.start + k
        if len(ps) == 3 and i + h < len(c) and c[i + h] != c[i]:
            p = sum(ps) / 3
            conf = max(p, 1 - p)
            j = min(int((conf - 0.5) / 0.1), 4)
            hits.setdefault(j, []).append((p >= 0.5) == (c[i + h] > c[i]))
    for j, b in enumerate(bins):
        assert b["bars"] == len(hits.get(j, []))
        if b["bars"]:
            assert b["hit_rate"] == pytest.approx(np.mean(hits[j]), abs=1e-12)
    for b in bins:
        if b["bars"]:
            k = round(b["hit_rate"] * b["bars"])
            lo, hi = proportion_confint(k, b["bars"], alpha=0.05, method="wilson")
            assert b["ci95"] == pytest.approx([lo, hi], abs=1e-9)


def test_pass_correlation_is_numpys_corrcoef(runs):
    traced, _, _ = runs
    tr = traced.trace
    names, phi, joint = D.pass_correlation(traced)
    a, b = names.index("vpin"), names.index("regime")
    x, y = tr.passed[:, a - 1].astype(float), tr.passed[:, b - 1].astype(float)
    assert phi[a, b] == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    flags = np.column_stack([tr.l1_passed, tr.passed])
    cols = [names.index(n) for n in joint["layers"]]
    assert "shap" not in joint["layers"] and "L1" in joint["layers"]  # shap is traced on a sample of the bars
    assert joint["all_passed"] == pytest.approx(np.all(flags[:, cols], axis=1).mean(), abs=1e-12)
    assert joint["product_of_rates"] == pytest.approx(np.prod(flags[:, cols].mean(axis=0)), rel=1e-9)


def test_joint_by_depth_against_a_naive_loop(runs):
    traced, _, _ = runs
    tr = traced.trace
    names = ["L1", *tr.modules]
    acc = [k for k in range(len(tr)) if tr.accepted[k]]
    flag = {"L1": [bool(tr.l1_passed[k]) for k in acc]}
    for j, m in enumerate(tr.modules):
        if all(tr.evaluated[k, j] for k in acc):
            flag[m] = [bool(tr.passed[k, j]) for k in acc]
    rate = {m: sum(v) / len(v) for m, v in flag.items() if 0 < sum(v) < len(v)}
    order = sorted(rate, key=lambda m: -rate[m])
    depth = D.joint_by_depth(traced)
    assert len(depth) == len(order) - 1
    for k, row in enumerate(depth, start=2):
        assert row["layers"] == order[:k]
        together = sum(all(flag[m][i] for m in order[:k]) for i in range(len(acc)))
        assert row["all_passed_bars"] == together and row["all_passed"] == pytest.approx(together / len(acc))
        assert row["product_of_rates"] == pytest.approx(math.prod(rate[m] for m in order[:k]), rel=1e-12)
    assert set(names) >= set(order)
    # the layers are not independent: somewhere the observed joint share is off the product by more than 10%
    assert any(abs(r["all_passed"] - r["product_of_rates"]) > 0.1 * r["product_of_rates"] for r in depth)


def test_a_sampled_module_is_traced_on_a_fixed_sample_not_where_the_gate_reached_it():
    """shap (trace_every = 10) first in the list: the cheapest gate evaluates it on every bar Layer 1 passes, but the
    trace keeps only every 10th accepted bar — bars the gate reached are those L1 passed, so keeping them would bias
    shap's figures toward them."""
    cfg = replace(CFG, l4=replace(CFG.l4, modules=("shap", "vpin")), replay=replace(CFG.replay, window_bars=400))
    res = replay(BARS[:2400], cfg)
    tr = res.trace
    ev = tr.evaluated[:, 0]
    reached = np.array([any(r.name == "shap" for r in dec.layer("L4").details) for dec in res.decisions])
    assert reached.sum() > 2 * ev.sum()  # the gate reached shap on many more bars than the sample holds
    gaps = np.diff(np.flatnonzero(ev))
    assert len(gaps) >= 30 and set(gaps.tolist()) == {10}
    assert tr.evaluated[:, 1].all()


def test_an_internal_error_in_layer_4_is_a_funnel_stage(monkeypatch):
    """A module whose verdict raises makes Layer 4 fail closed (first veto "L4"); the funnel counts those bars, so
    its last stage still equals the signals."""
    calls = {"n": 0}
    real = Vpin.verdict

    def flaky(self):
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            raise RuntimeError("planted")
        return real(self)

    monkeypatch.setattr(Vpin, "verdict", flaky)
    cfg = replace(CFG, l4=replace(CFG.l4, modules=("vpin", "regime")), replay=replace(CFG.replay, window_bars=400))
    res = replay(BARS[:2400], cfg)
    veto = {}
    for dec in res.decisions:
        veto[dec.first_veto] = veto.get(dec.first_veto, 0) + 1
    assert veto.get("L4", 0) > 0
    f = D.funnel(res)
    names = [k for k, _ in f]
    assert names.index("L4") == names.index("L4:regime") + 1
    alive = dict(f)
    assert alive["L4:regime"] - alive["L4"] == veto["L4"]
    assert f[-2][1] == f[-1][1] == sum(d.action != "NONE" for d in res.decisions)  # after L3: the signals


def test_serving_gates_never_trace():
    pool = GatePool(CFG, timeframe="H1")
    assert pool.gate("EURUSD").trace is False
