"""Certified thresholds (engine/calibrate.py, ``fxgate calibrate``) on bars whose predictability is known: an AR(1)
return series (momentum a booster learns: about 67% of moves follow the last one) and a plain random walk (nothing
to learn). The statistics themselves (Hoeffding–Bentkus, fixed-sequence testing, the e-process, 1,000-calibration
coverage) are tested in tests/engine/test_certify_stats.py; here, what the gate does with them."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from fxgate.engine.calibrate import (
    MONITOR,
    _uncertified,
    calibrate,
    certify_walk_forward,
    path_values,
    run_records,
    summary,
    with_thresholds,
)
from fxgate.engine.cli import cli
from fxgate.engine.config import config_from_dict, dump_toml, load_config
from fxgate.engine.core.bars import Bars
from fxgate.engine.core.errors import FxgateError
from fxgate.engine.gate import Gate
from fxgate.models._stats import wilson

pytestmark = pytest.mark.slow
BASE = {"l2": {"enabled": False}, "l3": {"enabled": False}, "replay": {"n_estimators": 60}}


def synth(n: int, phi: float | list[tuple[int, float]], seed: int = 3) -> Bars:
    """H1 bars whose log returns follow r_t = phi r_{t-1} + e_t (phi may change at given bars)."""
    rng = np.random.default_rng(seed)
    e = rng.normal(0, 1e-3, n)
    changes = [(0, phi)] if isinstance(phi, float) else phi
    r = np.zeros(n)
    for i in range(1, n):
        f = [p for at, p in changes if at <= i][-1]
        r[i] = f * r[i - 1] + e[i]
    close = 1.1 * np.exp(np.cumsum(r))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 2e-4, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 2e-4, n)))
    ts = np.datetime64("2020-01-06T00:00", "ns").astype(np.int64) + np.arange(n, dtype=np.int64) * 3600 * 10**9
    return Bars(ts, open_, high, low, close, rng.uniform(100, 1000, n), symbol="SYNTH", timeframe="H1")


def cfg(**extra):
    return config_from_dict({**BASE, "l4": {"modules": ["vpin", "certainty_score"]}} | extra)


@pytest.fixture(scope="module")
def momentum():
    return synth(3000, 0.5)


@pytest.fixture(scope="module")
def certified(momentum):
    c = cfg(certify={"path": ["l1"]})
    return c, calibrate(momentum, c, target=0.6, delta=0.05)


def test_the_certified_selection_is_what_a_live_gate_with_those_thresholds_emits(momentum, certified):
    """calibrate scores every bar once at the loosest thresholds and derives each stricter point's signals from the
    scores; a real gate run with the chosen thresholds must emit exactly those signals on the block."""
    c, cal = certified
    assert cal.certificate.certified and cal.value is not None, cal.certificate.reason
    lo, hi = cal.block
    rec = run_records(momentum, c, cal.ensemble, lo, hi)
    for v in (cal.value, float(path_values(c)[5]), 0.7):  # the certified point and two stricter ones
        live = Gate(with_thresholds(_uncertified(c), v), cal.ensemble, timeframe="H1", symbol="SYNTH")
        emitted = np.array([live.on_bar(momentum[i]).action != "NONE" for i in range(hi)])[lo:hi]
        sel = rec.selection(np.array([v]), c.horizon)[0]
        assert np.array_equal(sel, emitted & rec.has_outcome), v
    # the counts behind the certificate, recomputed from the live gate's signals and the bars
    v = cal.value
    live = Gate(with_thresholds(_uncertified(c), v), cal.ensemble, timeframe="H1", symbol="SYNTH")
    ds = [live.on_bar(momentum[i]) for i in range(hi)]
    close = momentum.close
    wins = [
        (1 if d.action == "BUY" else -1) * (close[i + 1] - close[i]) > 0
        for i, d in enumerate(ds)
        if i >= lo and d.action != "NONE" and i + 1 < len(momentum)
    ]
    assert (cal.certificate.n_signals, cal.certificate.n_correct) == (len(wins), sum(wins))


def test_a_certified_config_carries_its_certificate_and_its_monitor(tmp_path, momentum, certified):
    c, cal = certified
    out = cal.config
    assert out.l4.modules[0] == MONITOR and out.l1.threshold == cal.value
    assert out.certify.target == 0.6 and out.certify.n_signals == cal.certificate.n_signals
    p = tmp_path / "gate.toml"
    p.write_text(dump_toml(out, "a header"))
    back = load_config(p)
    assert back == out and back.hash == out.hash  # the file says everything that decides
    # a judge trained for the config it was calibrated from is not refused under it (here the path is l1 only)
    from fxgate.engine.config import serving_mismatch
    from fxgate.training.datasets.spec import serving_record

    record = json.loads(json.dumps(serving_record(c, None)))  # as the data manifest gives it back
    assert serving_mismatch(record, back.l4) is None
    assert serving_mismatch(record, replace(back.l4, modules=(MONITOR, "vpin"))) is not None
    d = Gate(back, cal.ensemble, timeframe="H1", symbol="SYNTH").on_bar(momentum[0])
    cert = d.to_dict()["certification"]
    assert cert["target"] == 0.6 and cert["thresholds"] == {"l1": cal.value} and cert["n_signals"] > 100
    assert Gate(c, None, timeframe="H1").on_bar(momentum[0]).certification is None
    # the certificate holds for what was certified only: another bundle, symbol, or an edited threshold carry none
    other = calibrate(momentum[:2600], c, target=0.6, delta=0.05, calibration_bars=700).ensemble  # fit on 1,900
    assert Gate(back, other, timeframe="H1", symbol="SYNTH").certification is None
    assert Gate(back, cal.ensemble, timeframe="H1", symbol="GBPUSD").certification is None
    edited = replace(back, l1=replace(back.l1, threshold=min(0.99, cal.value + 0.01)))
    assert Gate(edited, cal.ensemble, timeframe="H1", symbol="SYNTH").certification is None
    import jsonschema

    from fxgate.engine.core.decision import schema

    jsonschema.validate(d.to_dict(), schema())


def test_no_predictability_no_certificate(tmp_path):
    walk = synth(3000, 0.0, seed=11)
    cal = calibrate(walk, cfg(), target=0.6, delta=0.05)
    assert not cal.certificate.certified and cal.config is None
    assert "target above what the data supports" in cal.certificate.reason or "too few" in cal.certificate.reason
    k, n = cal.base_rate
    lo, hi = wilson(k, n)
    assert lo < 0.6 and hi > 0.4  # the base rate is a coin: nothing here supports 60%


def test_a_bundle_that_saw_the_block_is_refused(momentum, certified):
    _, cal = certified
    with pytest.raises(FxgateError, match="inside the calibration block"):
        calibrate(momentum[:2500], cfg(), ensemble=cal.ensemble, target=0.6, delta=0.05, calibration_bars=600)


def test_the_monitor_halts_a_certified_gate_when_precision_collapses(momentum):
    """After the calibration block the momentum turns into mean reversion: the certified thresholds now pick
    losers. The e-process must reject and the gate must stop emitting, saying why. (Calibrated with VPIN alone:
    certainty_score would see the information coefficient turn and veto most of the losers itself.)"""
    cal = calibrate(momentum, cfg(l4={"modules": ["vpin"]}), target=0.6, delta=0.05)
    flipped = synth(4500, [(0, 0.5), (3000, -0.5)])
    assert np.array_equal(flipped.close[:3000], momentum.close[:3000])
    g = Gate(cal.config, cal.ensemble, timeframe="H1", symbol="SYNTH")
    ds = [g.on_bar(b) for b in flipped]
    late = ds[3000:]
    halted = [i for i, d in enumerate(late) if d.first_veto == f"L4:{MONITOR}"]
    assert halted, "the monitor never halted"
    first = halted[0]
    assert all(d.action == "NONE" for d in late[first:])  # halted for good
    assert any(d.action != "NONE" for d in ds[:3000])  # it did trade while the certificate held ...
    assert not any(d.first_veto == f"L4:{MONITOR}" for d in ds[:3000])  # ... and was not halted then
    assert "halted: live precision below 0.60" in late[-1].why, late[-1].why


def test_fxgate_calibrate_writes_a_config_and_bundle_or_refuses(tmp_path, momentum):
    df = momentum.to_pandas() if hasattr(momentum, "to_pandas") else None
    assert df is not None
    csv = tmp_path / "SYNTH_H1.csv"
    df.reset_index().rename(columns={"index": "time"}).to_csv(csv, index=False)
    conf = tmp_path / "gate.toml"
    conf.write_text(dump_toml(cfg()))
    out = tmp_path / "gate.calibrated.toml"
    r = CliRunner().invoke(
        cli,
        [
            "calibrate",
            "--data",
            str(csv),
            "--config",
            str(conf),
            "--target-precision",
            "0.6",
            "--out",
            str(out),
            "--json",
            str(tmp_path / "cal.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert (
        "certified" in r.output and out.is_file() and (tmp_path / "gate.calibrated.bundle" / "manifest.json").is_file()
    )
    g = Gate.from_config(out, bundle=tmp_path / "gate.calibrated.bundle")
    assert g.certification is not None and g.certification["target"] == 0.6
    rep = json.loads((tmp_path / "cal.json").read_text())
    assert rep["certificate"]["certified"] and len(rep["curve"]) == 50
    bad = tmp_path / "none.toml"
    r = CliRunner().invoke(
        cli, ["calibrate", "--data", str(csv), "--config", str(conf), "--target-precision", "0.95", "--out", str(bad)]
    )
    assert r.exit_code == 1 and "not certified" in r.output and not bad.exists()


def fits_model(bars, c, end):
    from fxgate.engine.calibrate import fit_before

    return fit_before(bars, c, end)


def test_walk_forward_windows_check_the_guarantee_on_the_next_window():
    bars = synth(5000, 0.5, seed=5)
    c = cfg(replay={"train_bars": 2000, "window_bars": 1000, "n_estimators": 60})
    checks = certify_walk_forward(bars, c, target=0.6, delta=0.05)
    assert [(x.start, x.end, x.block) for x in checks] == [
        (2000, 3000, (1000, 2000)),
        (3000, 4000, (2000, 3000)),
        (4000, 5000, (3000, 4000)),
    ]
    for x in checks:
        assert x.certificate.certified, x.certificate.reason
        # no calibration outcome may need a bar of the window it judges (the exit bar of the last one < start)
        assert x.extra["last_exit_bar"] is not None and x.extra["last_exit_bar"] < x.start
        # the window's own figures, recounted from the bars with a plain loop over a live gate's signals
        gate = Gate(with_thresholds(_uncertified(c), x.value), fits_model(bars, c, x.block[0]), timeframe="H1")
        ds = [gate.on_bar(bars[i]) for i in range(x.end)]
        wins = [
            (1 if ds[i].action == "BUY" else -1) * (bars.close[i + 1] - bars.close[i]) - c.spread > 0
            for i in range(x.start, x.end)
            if ds[i].action != "NONE" and i + 1 < len(bars)
        ]
        assert (x.signals, x.correct) == (len(wins), sum(wins))
        assert x.held == (sum(wins) / len(wins) >= 0.6)
    s = summary(checks, 0.6, 0.05)
    assert s["judged_windows"] == 3 and s["held_windows"] == sum(x.held for x in checks)
    assert "too few windows" in s["verdict"]


def test_a_walk_forward_replay_reports_each_windows_certificate(tmp_path):
    from fxgate.engine.replaying import replay
    from fxgate.engine.report import write_report

    bars = synth(4000, 0.5, seed=7)
    c = cfg(certify={"target": 0.6}, replay={"train_bars": 2000, "window_bars": 1000, "n_estimators": 60})
    res = replay(bars, c)
    cert = res.metrics["certification"]
    assert [w["window"][0] for w in cert["windows"]] == [_iso(bars.ts[2000]), _iso(bars.ts[3000])]
    html = write_report(res, tmp_path / "r.html", c.hash).read_text()
    assert "Certified precision ≥ 0.6 with probability ≥ 0.95 (walk-forward)" in html
    for w in cert["windows"]:
        assert w["certified"], w["reason"]
        assert f"<td>{w['threshold']:.3f}</td><td>{w['calibration_signals']}</td><td>{w['signals']}</td>" in html
        lo, hi = wilson(w["correct"], w["signals"])
        assert w["ci95"] == [lo, hi] and w["held"] == (w["correct"] / w["signals"] >= 0.6)
    assert cert["summary"]["verdict"] in html
    # the Bokeh chart of the last block's curve marks the certified point (drawn only for a certified threshold)
    assert "Precision vs coverage on the last calibration block" in html and '"certified point"' in html


def _iso(ts) -> str:
    return str(np.datetime64(int(ts), "ns"))[:19] + "Z"
