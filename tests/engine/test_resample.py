"""Resampling against pandas.resample on the FX-day clock (17:00 New York roll)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from naive import fx_day_local, random_walk_bars, resample_pandas

from fxgate.engine import Bars, resample, sample_bars

RULES = {"M5": "5min", "M15": "15min", "M30": "30min", "H1": "1h", "H4": "4h", "D1": "1D"}


@pytest.fixture(scope="module")
def m1() -> Bars:
    # Three weeks of M1 around the US DST start (2017-03-12), weekends removed, 2% of minutes missing.
    rng = np.random.default_rng(7)
    d = random_walk_bars(rng, "2017-03-01 00:00", 21 * 1440)
    keep = rng.random(len(d["ts"])) > 0.02
    d = {k: v[keep] for k, v in d.items()}
    return Bars(d["ts"], d["open"], d["high"], d["low"], d["close"], d["volume"], symbol="EURUSD", timeframe="M1")


@pytest.mark.parametrize("to", list(RULES))
def test_matches_pandas_resample(m1, to):
    ours = resample(m1, to)
    ref = resample_pandas(m1.ts, m1.open, m1.high, m1.low, m1.close, m1.volume, RULES[to])
    assert ours.timeframe == to and len(ours) == len(ref)
    np.testing.assert_array_equal(fx_day_local(ours.ts), ref.index)
    for col in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(ours, col), ref[col].to_numpy(), err_msg=col)


def test_d1_rolls_at_1700_new_york_across_dst(m1):
    d1 = resample(m1, "D1")
    ny = pd.DatetimeIndex(d1.times).tz_localize("UTC").tz_convert("America/New_York")
    assert set(ny.strftime("%H:%M")) == {"17:00"}
    # before the 2017-03-12 change the roll is 22:00 UTC, after it 21:00 UTC
    utc_hours = pd.DatetimeIndex(d1.times).hour
    assert set(utc_hours[d1.ts < pd.Timestamp("2017-03-12", tz="UTC").value]) == {22}
    assert set(utc_hours[d1.ts > pd.Timestamp("2017-03-13", tz="UTC").value]) == {21}
    # the Sunday-evening open belongs to Monday's FX day: no bar starts on Friday 17:00 NY
    assert not (ny.day_of_week == 4).any()


def test_h4_bins_start_at_1700_new_york(m1):
    h4 = resample(m1, "H4")
    ny = pd.DatetimeIndex(h4.times).tz_localize("UTC").tz_convert("America/New_York")
    assert set(ny.hour) <= {17, 21, 1, 5, 9, 13}


def test_spread_is_averaged_and_h1_to_d1_on_the_sample():
    s = sample_bars()
    spread = np.linspace(1e-5, 2e-5, len(s))
    b = Bars(s.ts, s.open, s.high, s.low, s.close, s.volume, spread, symbol="EURUSD")
    d1 = resample(b, "D1")
    ref = resample_pandas(s.ts, s.open, s.high, s.low, s.close, s.volume, "1D")
    np.testing.assert_array_equal(d1.close, ref["close"].to_numpy())
    loc = fx_day_local(s.ts)
    ref_spread = pd.Series(spread, index=loc).resample("1D").mean().dropna().to_numpy()
    np.testing.assert_allclose(d1.spread, ref_spread, rtol=1e-12)
    assert d1.volume.sum() == s.volume.sum()


@pytest.mark.parametrize(
    ("to", "fragment"),
    [
        ("M1", "larger than it"),
        ("90s", "whole multiple"),
        ("W1", "divide the FX day"),
        ("X9", "unknown timeframe"),
    ],
)
def test_bad_targets(m1, to, fragment):
    with pytest.raises(ValueError, match=fragment):
        resample(m1, to)


def test_unsorted_input_is_refused():
    b = Bars(
        [2 * 60 * 10**9, 60 * 10**9, 3 * 60 * 10**9],
        [1, 1, 1],
        [1, 1, 1],
        [1, 1, 1],
        [1, 1, 1],
        [0, 0, 0],
        timeframe="M1",
    )
    with pytest.raises(ValueError, match="strictly increasing"):
        resample(b, "M5")
