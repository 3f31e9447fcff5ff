"""The fused steps of conformal_prediction, quantile_prediction and factor_weighting against their modules' ``update``
(the twin), through the gate's own fused path (``FusedModules``: the generated step, ``prepare`` included), on
streams the sample does not hold: several forecasts maturing on one bar (out of order, repeated, unknown entries),
non-finite, zero and negative prices, missing, non-finite and out-of-range probabilities and feature rows, bad
closes, unknown and negative spreads, bars without an ensemble or without quantile models, non-finite quantile
forecasts, horizons > 1, small wrapped windows and (factor_weighting) more than EXACT_EVERY scored bars (the exact
re-sums). State and verdict bit for bit after every bar."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fxgate.engine import Bar
from fxgate.engine.fused import FusedModules
from fxgate.modules import REGISTRY, Context, Matured
from fxgate.modules._common import EXACT_EVERY

N_FEATURES = 12


class FakeEnsemble:
    """Serves quantiles from the feature row (its first 9 values, sorted; a NaN stays: a non-finite forecast)."""

    has_quantiles = True

    def predict_quantiles(self, x):
        return np.sort(np.asarray(x[:9], dtype=np.float64))


class NoQuantiles:
    has_quantiles = False


FAKE, NOQ = FakeEnsemble(), NoQuantiles()


def _price(rng: np.random.Generator, p: float) -> float:
    u = rng.random()
    if u < 0.02:
        return math.nan
    if u < 0.03:
        return 0.0
    if u < 0.04:
        return -p
    return p  # (no infinite price: the intake refuses one, and Matured.log_return raises on log(x / inf))


def _stream(rng: np.random.Generator, n_bars: int, horizon: int):
    close = 1.1
    closes: list[float] = []
    for i in range(n_bars):
        close *= math.exp(rng.normal(0, 2e-3))
        closes.append(close)
        u = rng.random()
        c = math.nan if u < 0.01 else -1.0 if u < 0.02 else close
        bar_index = i + 1
        mats = []
        e = bar_index - horizon
        if e >= 1 and rng.random() < 0.9:
            mats.append(e)
        if rng.random() < 0.1:  # several on one bar: an older one, a repeat, an unknown or negative entry
            mats += [int(rng.choice([e - 1, e, e + 5, -1, bar_index - 1])) for _ in range(int(rng.integers(1, 4)))]
        matured = tuple(
            Matured(
                m,
                0,
                0,
                _price(rng, closes[m - 1] if 1 <= m <= len(closes) else close),
                _price(rng, close),
                None,
                None,
            )
            for m in mats
        )
        x = rng.normal(0, 1e-3, N_FEATURES) if rng.random() < 0.93 else None
        if x is not None and rng.random() < 0.05:
            x[int(rng.integers(0, N_FEATURES))] = float(rng.choice([math.nan, math.inf]))
        probs = rng.random(3) if rng.random() < 0.85 else None
        if probs is not None and rng.random() < 0.04:
            probs[int(rng.integers(0, 3))] = float(rng.choice([math.nan, math.inf, -math.inf]))
        u = rng.random()
        ens = FAKE if u < 0.9 else (NOQ if u < 0.95 else None)
        spread = float(rng.choice([8e-5, 1e-4, math.nan, -1e-5, 5e-5 * rng.random()]))
        yield Context(
            Bar(i, c, c, c, c, 1.0, timeframe="H1"),
            features=x,
            probs=probs,
            direction=int(rng.choice([-1, 0, 1, 2])),
            spread=spread,
            ensemble=ens,
            matured=matured,
            bar_index=bar_index,
            in_sample=bool(i < n_bars // 20 or rng.random() < 0.03),
        )


def _state_equal(a: dict, b: dict) -> str | None:
    for k, x in a.items():
        y = b[k]
        if isinstance(x, np.ndarray):
            if x.dtype != y.dtype or x.shape != y.shape or not np.array_equal(x.view(np.uint8), y.view(np.uint8)):
                return k
        elif x != y and not (isinstance(x, float) and math.isnan(x) and math.isnan(y)):
            return k
    return None


CASES = [
    ("conformal_prediction", {"window": 37, "min_scores": 5, "halflife": 20.0, "horizon": 3}, 3000),
    ("conformal_prediction", {"window": 50, "min_scores": 50, "method": "split", "predictor": "zero"}, 1500),
    ("conformal_prediction", {"window": 20, "min_scores": 3, "gamma": 0.2, "horizon": 1}, 1500),
    ("quantile_prediction", {"window": 20, "min_matured": 5, "horizon": 3, "thin": True}, 2500),
    ("quantile_prediction", {"window": 7, "min_matured": 3, "horizon": 2, "thin": False}, 1500),
    (
        "factor_weighting",
        {
            "factors": (0, 3, 7),
            "window": 8,
            "min_outcomes": 3,
            "min_fit": 5,
            "z_min": 5,
            "horizon": 3,
            "halflife": 30.0,
            "z_halflife": 40.0,
        },
        7000,
    ),  # fmt: skip
    (
        "factor_weighting",
        {
            "factors": (1, 11),
            "window": 5,
            "min_outcomes": 2,
            "min_fit": 3,
            "z_min": 3,
            "halflife": 0.0,
            "assume_centered": True,
            "include_signal": False,
        },
        1200,
    ),  # fmt: skip
    ("factor_weighting", {"factors": (), "window": 6, "min_outcomes": 2, "min_fit": 3, "z_min": 3}, 1200),
]


@pytest.mark.parametrize(("name", "params", "n_bars"), CASES)
def test_fused_step_equals_update_bit_for_bit(name, params, n_bars):
    cls = REGISTRY[name]
    ref, m = cls(**params), cls(**params)
    fm = FusedModules([m], "H1", n_features=N_FEATURES)
    assert fm.fused == [m]
    several = 0
    for i, ctx in enumerate(_stream(np.random.default_rng(3), n_bars, int(params.get("horizon", 1)))):
        ref.update(ctx)
        fm.update(ctx)
        several += len(ctx.matured) > 1
        # repr: NaN scores compare, -0.0 differs from 0.0
        assert repr(ref.verdict()) == repr(m.verdict()), f"{name}: verdicts differ at bar {i}"
        bad = _state_equal(ref.state_dict(), m.state_dict())
        assert bad is None, f"{name}: state {bad!r} differs at bar {i}"
    assert several > 50
    assert int(ref.ist[0]) > int(params["window"])  # scored / matured / fitted past a full window
    if name == "factor_weighting" and n_bars > EXACT_EVERY:
        assert int(ref.ist[1]) > EXACT_EVERY  # the exact re-sums ran
