"""The intake's conversion: whatever number types a bar carries, the bar the gate goes on with has plain ``float``
prices, volume and spread, each ``float(v)`` of what came in (plain floats take a fast path, anything else is
converted field by field: both must give this)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fxgate.engine import sample_bars
from fxgate.engine.config import GateConfig
from fxgate.engine.intake import Intake

FIELDS = ("open", "high", "low", "close", "volume", "spread")


class Price(float):
    """A float subclass (as some bots' decimal wrappers are)."""


@pytest.mark.parametrize("kind", ["float", "float64", "float32", "int", "int64", "one_field_each"])
def test_fields_come_out_plain_floats(kind):
    bars = sample_bars()[:300]
    it = Intake(bars.timeframe, bars.symbol, GateConfig().input)
    conv = {"float": float, "float64": np.float64, "float32": np.float32, "int": int, "int64": np.int64, "sub": Price}
    for i, b in enumerate(bars):
        vals = {f: getattr(b, f) for f in FIELDS}
        vals["spread"] = None if i % 3 == 0 else 1e-4 * (1 + i % 5)
        if kind in ("int", "int64", "float32"):  # whole numbers (pips as units): exact in every type
            vals = {f: None if v is None else round(v * 1e5) for f, v in vals.items()}
        for j, f in enumerate(FIELDS):
            if vals[f] is None:
                continue
            k = kind if kind != "one_field_each" else ("float64", "sub")[i % 2]
            if kind == "one_field_each" and j != i % 6:
                k = "float"
            vals[f] = conv[k](vals[f])
        bar = replace(b, **vals)
        got, problem = it.check(bar)
        assert problem is None, problem
        for f in FIELDS:
            if vals[f] is None:
                assert getattr(got, f) is None
                continue
            assert type(getattr(got, f)) is float, (kind, f, type(getattr(got, f)))
            assert getattr(got, f) == float(vals[f])
        it.settle()
        it.accept(got.ts)
