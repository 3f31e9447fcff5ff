"""Labels against naive per-bar loops; label end times; no label past the data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fxgate.engine import Bars, sample_bars
from fxgate.models.labels import LabelSpec, make_labels


def _naive_next(c, cost, h):
    n = len(c)
    y = np.zeros(n, np.int8)
    valid = np.zeros(n, bool)
    for t in range(n - h):
        move = c[t + h] - c[t]
        y[t] = 1 if move > cost[t] else (-1 if move < -cost[t] else 0)
        valid[t] = True
    return y, valid


def _naive_triple(hi, lo, c, cost, h, pt, sl, span):
    r = pd.Series(np.log(c)).diff()
    sig = r.ewm(span=span, min_periods=min(span, 20)).std().to_numpy() * math.sqrt(h)
    y, end = [], []
    for t in range(len(c)):
        if t + h >= len(c) or not np.isfinite(sig[t]):
            y.append(0)
            end.append(-1)
            continue
        up, dn = c[t] * math.exp(pt * sig[t]), c[t] * math.exp(-sl * sig[t])
        for j in range(t + 1, t + h + 1):
            if hi[j] >= up or lo[j] <= dn:
                y.append(0 if (hi[j] >= up and lo[j] <= dn) else (1 if hi[j] >= up else -1))
                end.append(j)
                break
        else:
            move = c[t + h] - c[t]
            y.append(1 if move > cost[t] else (-1 if move < -cost[t] else 0))
            end.append(t + h)
    return np.array(y), np.array(end)


@pytest.mark.parametrize("h", [1, 3, 12])
def test_next_direction_net_of_spread(h):
    b = sample_bars()
    spread = np.full(len(b), 1.5e-4)
    bs = Bars(b.ts, b.open, b.high, b.low, b.close, b.volume, spread)
    lab = make_labels(bs, LabelSpec("next", h))
    y, valid = _naive_next(b.close, spread, h)
    np.testing.assert_array_equal(lab.y, y)
    np.testing.assert_array_equal(lab.valid, valid)
    np.testing.assert_array_equal(lab.end[valid], np.flatnonzero(valid) + h)
    assert not lab.valid[-h:].any() and (lab.y[-h:] == 0).all()
    assert (lab.y == 0).sum() > (make_labels(b, LabelSpec("next", h)).y == 0).sum()  # costs create NONE labels


@pytest.mark.parametrize(("h", "pt", "sl"), [(5, 1.0, 1.0), (24, 2.0, 1.5)])
def test_triple_barrier_against_loop(h, pt, sl):
    b = sample_bars()[:2000]
    lab = make_labels(b, LabelSpec("triple-barrier", h, pt, sl, default_spread=1e-4))
    y, end = _naive_triple(b.high, b.low, b.close, np.full(len(b), 1e-4), h, pt, sl, 100)
    np.testing.assert_array_equal(lab.y, y)
    np.testing.assert_array_equal(lab.end, end)
    ok = lab.valid
    assert (lab.end[ok] > np.flatnonzero(ok)).all() and (lab.end[ok] <= np.flatnonzero(ok) + h).all()
    np.testing.assert_allclose(lab.ret[ok], np.log(b.close[lab.end[ok]] / b.close[ok]))


def test_spec_validation():
    with pytest.raises(ValueError, match="label kind"):
        LabelSpec("meta")
    with pytest.raises(ValueError, match="horizon"):
        LabelSpec("next", 0)


def test_last_end_is_the_max_over_the_samples_not_the_last_samples_end():
    """Regression (#12.5): triple-barrier ends are not monotone, so the last bar a set of samples looked at is the
    max of their ends (naive loop), which can be later than the last sample's own end."""
    b = sample_bars()[:1500]
    h = 24
    lab = make_labels(b, LabelSpec("triple-barrier", h, 1.0, 1.0))
    _, end = _naive_triple(b.high, b.low, b.close, np.zeros(len(b)), h, 1.0, 1.0, 100)
    ok = np.flatnonzero(end >= 0)
    gaps = 0
    for stop in range(200, len(b), 7):
        idx = ok[ok < stop]
        latest = -1
        for t in idx:  # naive max
            latest = max(latest, int(end[t]))
        assert lab.last_end(idx) == latest
        gaps += latest > end[idx[-1]]
    assert gaps > 10  # the case that matters occurs on real bars: the last sample ended early
    with pytest.raises(ValueError, match="no valid label"):
        lab.last_end(np.array([len(b) - 1]))
    with pytest.raises(ValueError, match="no samples"):
        lab.last_end(np.array([], dtype=np.int64))
