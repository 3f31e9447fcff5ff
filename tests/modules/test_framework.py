"""The module contract, for every registered module: fail closed, survive bad input, snapshot exactly."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from fxgate.engine import Bar
from fxgate.modules import REGISTRY, CertaintyModule, Context, ModuleResult, create, register

STREAMING = sorted(n for n, c in REGISTRY.items() if n != "shap")
SMALL = {"regime": {"fit_bars": 300}, "vpin": {"min_history": 20, "history": 100}, "uncertainty": {"min_history": 20},
         "bocpd": {"calib_bars": 50}}  # fmt: skip


def test_all_part_one_modules_are_registered():
    assert set(REGISTRY) >= {"vpin", "bocpd", "regime", "adverse_selection", "execution_cost", "robust_kelly",
                             "bayesian_sizing", "uncertainty", "shap"}  # fmt: skip


def test_duplicate_names_and_unknown_parameters_are_errors():
    with pytest.raises(ValueError, match="already registered"):

        @register("vpin")
        class Again(CertaintyModule):  # pragma: no cover - never instantiated
            pass

    with pytest.raises(ValueError, match="did you mean 'quantile'"):
        create("vpin", quantil=0.8)
    with pytest.raises(ValueError, match="did you mean 'bocpd'"):
        create("bocdp")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_fresh_module_fails_closed_with_a_reason(name):
    r = create(name).verdict()
    assert isinstance(r, ModuleResult) and r.passed is False and r.name == name
    assert "insufficient data" in r.reason


@pytest.mark.parametrize("name", STREAMING)
def test_bad_values_never_raise(name, stream):
    m = create(name, **SMALL.get(name, {}))
    for ctx in stream[:400]:
        m.update(ctx)
    bad_bars = [replace(stream[400].bar, close=math.nan), replace(stream[400].bar, close=math.inf),
                replace(stream[400].bar, volume=math.nan), replace(stream[400].bar, close=0.0)]  # fmt: skip
    for b in bad_bars:
        m.update(Context(b, probs=np.array([math.nan, 0.5, 0.5]), direction=1))
        r = m.verdict()
        assert isinstance(r, ModuleResult) and isinstance(r.reason, str)
        if not math.isfinite(r.score):
            assert r.passed is False


@pytest.mark.parametrize("name", STREAMING)
def test_constant_prices_and_zero_volume(name):
    m = create(name, **SMALL.get(name, {}))
    for i in range(600):
        m.update(Context(Bar(i * 3_600_000_000_000, 1.1, 1.1, 1.1, 1.1, 0.0, timeframe="H1"),
                         probs=np.array([0.5, 0.5, 0.5]), direction=1))  # fmt: skip
    r = m.verdict()
    assert isinstance(r, ModuleResult)


@pytest.mark.parametrize("name", STREAMING)
def test_state_dict_round_trip_reproduces_the_next_verdicts(name, stream):
    a = create(name, **SMALL.get(name, {}))
    for ctx in stream[:1500]:
        a.update(ctx)
    b = create(name, **SMALL.get(name, {}))
    b.load_state_dict(a.state_dict())
    for ctx in stream[1500:1700]:
        a.update(ctx)
        b.update(ctx)
        ra, rb = a.verdict(), b.verdict()
        assert ra.passed == rb.passed and ra.reason == rb.reason
        assert (math.isnan(ra.score) and math.isnan(rb.score)) or ra.score == rb.score


@pytest.mark.parametrize("name", STREAMING)
def test_warm_up_compiles_without_touching_state(name, stream):
    m = create(name, **SMALL.get(name, {}))
    for ctx in stream[:50]:
        m.update(ctx)
    before = m.state_dict()
    m.warm_up()
    after = m.state_dict()
    for k, v in before.items():
        w = after[k]
        assert np.array_equal(v, w, equal_nan=True) if isinstance(v, np.ndarray) else v == w, k
