"""Walk-forward refits (issue #19): the schedule known up front, fits that cross a process boundary unchanged,
replays with pre-fitted models equal to replays that fit, and the seconds of every fit kept out of metrics.json."""

from __future__ import annotations

import dataclasses
import json
import pickle
import sys

import numpy as np
import pytest

from fxgate.engine import sample_bars
from fxgate.engine.config import CertifyConfig, GateConfig, L2Config, L3Config, ReplayConfig
from fxgate.engine.core.errors import FxgateError
from fxgate.engine.executors import import_ray, timings_line
from fxgate.engine.replaying import fit_schedule, fit_window, replay
from fxgate.models.features import FeatureEngine

CFG = GateConfig(
    l2=L2Config(enabled=False),
    l3=L3Config(enabled=False),
    replay=ReplayConfig(train_bars=2000, window_bars=300, n_estimators=20, folds=1),
)


def test_the_schedule_lists_every_window_and_calibration_block_once():
    assert fit_schedule(2600, CFG) == [2000, 2300]
    assert fit_schedule(2601, CFG) == [2000, 2300, 2600]
    cert = dataclasses.replace(CFG, certify=CertifyConfig(target=0.6, calibration_bars=300))
    assert fit_schedule(2600, cert) == [1700, 2000, 2300]  # 2000 and 2300 are also blocks' starts: fitted once
    cert = dataclasses.replace(CFG, certify=CertifyConfig(target=0.6, calibration_bars=1950))
    assert fit_schedule(2600, cert) == [350, 2000, 2300]  # 2000 - 1950 < 100 leaves no block there


@pytest.fixture(scope="module")
def window():
    bars = sample_bars()[:2300]
    ens, secs = fit_window(bars, CFG, 2000)
    return bars, ens, secs


def test_a_pickled_ensemble_predicts_exactly_what_it_did(window):
    bars, ens, secs = window
    assert secs > 0
    back = pickle.loads(pickle.dumps(ens))
    x = FeatureEngine(bars.timeframe).batch(bars)[1900:]
    x[::7, 3] = np.nan  # missing features take the same branch after the round trip
    assert np.array_equal(ens.predict_proba(x), back.predict_proba(x))
    assert np.array_equal(ens.predict_proba(x, native=True), back.predict_proba(x, native=True))
    assert all(np.array_equal(ens.predict_row(r), back.predict_row(r)) for r in x[:100])
    assert np.array_equal(ens.predict_quantiles(x[5]), back.predict_quantiles(x[5]))
    assert back.bundle_hash == ens.bundle_hash


@pytest.mark.slow
def test_a_replay_with_prefitted_models_equals_one_that_fits(window):
    bars, ens, secs = window
    own: dict = {}
    a = replay(bars, CFG, trace=False, timings=own)
    b = replay(bars, CFG, trace=False, models={2000: ens}, fit_times={2000: (secs, "elsewhere")})
    assert len(a.decisions) == 300 and [_plain(d) for d in a.decisions] == [_plain(d) for d in b.decisions]
    assert a.metrics["refits"] == b.metrics["refits"]
    assert own["refits"][0]["where"].startswith("this process") and own["refits"][0]["reason"] == "scheduled"
    assert b.timings["refits"] == [{"bars": 2000, "seconds": secs, "where": "elsewhere", "reason": "scheduled"}]
    assert b.timings["replayed_bars"] == 300 and b.timings["bar_seconds"] > 0
    assert "seconds" not in json.dumps(b.metrics["refits"])  # seconds differ between runs: not in metrics.json
    assert "1 Layer-1 fits" in timings_line(b.timings)
    # a model fitted on other bars (one bar too many) changes what is recorded: the comparison can fail
    wrong, _ = fit_window(bars, CFG, 2001)
    c = replay(bars, CFG, trace=False, models={2000: wrong})
    assert c.metrics["refits"] != a.metrics["refits"]


def _plain(d):
    x = d.to_dict()
    x.pop("latency_us", None)
    for layer in x["layers"]:
        layer.pop("latency_us", None)
    return x


def test_a_stopped_prefit_stops_the_replay(window):
    bars, _, _ = window
    res = replay(bars, CFG, trace=False, models={2000: None})
    assert res.interrupted and res.decisions == [] and res.metrics["refits"] == []


def test_without_ray_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(FxgateError, match=r"pip install 'fxgate\[cluster\]'"):
        import_ray()
