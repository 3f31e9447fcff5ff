"""The fused kernels of adverse_selection, robust_kelly, bayesian_sizing and execution_cost against their modules'
``update`` (the twin), called as the gate's generated step calls them, on streams the sample does not hold: more
than 2 x EXACT_EVERY outcomes and bars (the exact re-sums), small windows (wrapped rings), non-finite outcome P&L
and spreads, outcomes of exactly zero P&L, refused closes and unknown spreads. State bit for bit after every bar."""

from __future__ import annotations

import math
import operator

import numpy as np
import pytest

from fxgate.engine import Bar
from fxgate.modules import REGISTRY, Context, Outcome, create
from fxgate.modules._common import COMPENSATED_SUM, _pairwise_sum_py, pairwise_sum, py_sum
from fxgate.modules._fusion import O_COLUMNS

CASES = [
    ("adverse_selection", {"window": 37}, 5000),
    ("adverse_selection", {"window": 300}, 5000),
    ("robust_kelly", {"window": 37}, 5000),
    ("robust_kelly", {"window": 300}, 5000),
    ("bayesian_sizing", {"window": 37, "min_outcomes": 5}, 5000),
    ("execution_cost", {"window": 37, "horizon": 3}, 9000),
    ("execution_cost", {"window": 300, "horizon": 1}, 9000),
]


def _state_equal(a: dict, b: dict) -> str | None:
    for k, x in a.items():
        y = b[k]
        if isinstance(x, np.ndarray):
            if x.dtype != y.dtype or not np.array_equal(x.view(np.uint8), y.view(np.uint8)):
                return k
        elif x != y and not (isinstance(x, float) and math.isnan(x) and math.isnan(y)):
            return k
    return None


def _stream(rng: np.random.Generator, n_bars: int):
    close = 1.1
    for i in range(n_bars):
        close *= math.exp(rng.normal(0, 1e-3))
        r = rng.random()
        c = math.nan if r < 0.02 else -1.0 if r < 0.03 else close
        spread = float(rng.choice([8e-5, 1e-4, math.nan, 5e-5 * rng.random()]))
        outs = []
        for _ in range(int(rng.integers(0, 4))):
            e = 1.1 + rng.normal(0, 1e-3)
            x, s = e + rng.normal(0, 1e-3), 8e-5
            u = rng.random()
            if u < 0.03:
                x = math.nan
            elif u < 0.06:
                s = float(rng.choice([math.nan, math.inf]))
            elif u < 0.1:
                x, s = e, 0.0  # P&L exactly zero (a loss)
            outs.append(Outcome(0, 1, int(rng.choice([-1, 1])), float(e), float(x), s, 0.6))
        yield Context(
            Bar(i, c, c, c, c, 1.0, timeframe="H1"),
            probs=rng.random(3) if rng.random() < 0.8 else None,
            direction=int(rng.choice([-1, 0, 1])),
            size=float(rng.choice([1.0, 2.5])),
            outcomes=tuple(outs),
            spread=spread,
            bar_index=i + 1,
        )


def _run(name: str, params: dict, n_bars: int, python_twin: bool) -> None:
    cls = REGISTRY[name]
    ref, m = cls(**params), cls(**params)
    s = m.fused_step("H1")
    assert s is not None
    fn = s.kernel.py_func if python_twin else s.kernel
    get = operator.attrgetter(*s.state)
    out = np.zeros((8, O_COLUMNS))
    for i, ctx in enumerate(_stream(np.random.default_rng(7), n_bars)):
        ref.update(ctx)
        for j, o in enumerate(ctx.outcomes):
            out[j] = (o.direction, o.entry_price, o.exit_price, o.spread, o.prob)
        inputs = {
            "close": float(ctx.bar.close),
            "spread": float(ctx.spread),
            "direction": int(ctx.direction),
            "size": float(ctx.size),
            "has_probs": int(ctx.probs is not None),
            "probs": ctx.probs if ctx.probs is not None else np.zeros(3),
            "n_out": len(ctx.outcomes),
            "out": out,
        }
        flag = fn(*get(m), *(inputs[k] for k in s.inputs), *s.params)
        if s.after is not None and flag:
            s.after(int(flag))
        # the verdict too (bayesian_sizing's cache must be dropped); repr: NaN scores compare, -0.0 differs from 0.0
        assert repr(ref.verdict()) == repr(m.verdict()), f"{name}: verdicts differ at bar {i}"
        bad = _state_equal(ref.state_dict(), m.state_dict())
        assert bad is None, f"{name}: state {bad!r} differs at bar {i}"
    assert ref.ist.max() > 4096  # the exact re-sums ran


@pytest.mark.parametrize(("name", "params", "n_bars"), CASES)
def test_fused_kernel_equals_update_bit_for_bit(name, params, n_bars):
    _run(name, params, n_bars, python_twin=False)


@pytest.mark.parametrize("name", sorted({c[0] for c in CASES}))
def test_python_twin_equals_update(name):
    params = next(p for c, p, _ in CASES if c == name)
    _run(name, params, 4400, python_twin=True)


@pytest.mark.parametrize("square", [False, True])
def test_pairwise_sum_is_numpys_sum_bit_for_bit(square):
    rng = np.random.default_rng(5)
    for n in [*range(0, 300), 1000, 4095, 4096, 4097, 8193, 20_000]:
        a = rng.standard_normal(n + 5) * 10.0 ** rng.integers(-5, 5, n + 5)
        ref = float((a[5 : 5 + n] * a[5 : 5 + n]).sum() if square else a[5 : 5 + n].sum())
        assert pairwise_sum(a, 5, n, square).hex() == ref.hex(), (n, square)
        assert _pairwise_sum_py(a, 5, n, square).hex() == ref.hex(), (n, square)
    for n in [*range(1, 300), 4096]:  # signed zeros: numpy's sum of -0.0s is 0.0 (found by review: was -0.0)
        for a in (np.full(n + 5, -0.0), np.where(rng.random(n + 5) < 0.5, -0.0, 0.0)):
            ref = float((a[5 : 5 + n] * a[5 : 5 + n]).sum() if square else a[5 : 5 + n].sum())
            assert pairwise_sum(a, 5, n, square).hex() == ref.hex(), (n, square, "signed zeros")


def _neumaier(vals):
    """CPython 3.12's float sum() (``builtin_sum_impl``), written from its description: from int 0, Neumaier's
    compensation, the compensation added at the end when it is finite and non-zero."""
    if not vals:
        return 0
    f, c = 0.0 + vals[0], 0.0
    for x in vals[1:]:
        t = f + x
        c += (f - t) + x if abs(f) >= abs(x) else (x - t) + f
        f = t
    return f + c if c != 0.0 and math.isfinite(c) else f


@pytest.mark.parametrize("compensated", [False, True])
def test_both_sum_modes_match_their_reference(compensated):
    """Both branches of py_sum, whichever interpreter runs the tests: the plain left-to-right loop and 3.12's
    compensated sum (reference above)."""
    rng = np.random.default_rng(12)
    for _ in range(3000):
        n = int(rng.integers(0, 6))
        a = rng.random(n) * 10.0 ** rng.integers(-16, 16, n)
        vals = [float(v) for v in a]
        ref = (_neumaier(vals) if compensated else _plain(vals)) if vals else 0.0
        assert py_sum(a, compensated).hex() == float(ref).hex(), vals


def _plain(vals):
    f = 0.0 + vals[0]
    for x in vals[1:]:
        f += x
    return f


def test_probability_sum_is_this_interpreters_sum():
    """``update`` averages the probabilities with sum() (compensated from CPython 3.12): the kernel adds them the
    same way, for the interpreter it runs under."""
    rng = np.random.default_rng(11)
    special = np.array([0.0, -0.0, math.inf, -math.inf, math.nan, 1e308, 5e-324, 1.0])
    for _ in range(5000):
        n = int(rng.integers(0, 6))
        a = rng.random(n) * 10.0 ** rng.integers(-16, 16, n)
        if rng.random() < 0.3:
            a = np.where(rng.random(n) < 0.5, rng.choice(special, n), a)
        ref = sum(float(v) for v in a)
        got = py_sum(a, COMPENSATED_SUM)
        assert got.hex() == float(ref).hex() or (math.isnan(got) and math.isnan(ref)), list(a)


def test_bocpd_refuses_a_calibration_too_short_for_a_scale():
    """calib_bars < 2 left the scale 0: the twin divided numpy scalars into inf, the kernel raised on every bar."""
    with pytest.raises(ValueError, match="calib_bars = 1: must be >= 2"):
        create("bocpd", calib_bars=1)
