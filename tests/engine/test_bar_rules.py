"""The bar validation rules (fxgate.engine.core.validate): the gate's messages, and one verdict from all three forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxgate.engine.core.validate import FAULT_KINDS, bad_rows, bar_fault, row_faults

GOOD = {"open": 1.1, "high": 1.2, "low": 1.0, "close": 1.15, "volume": 10.0, "spread": 0.0001}
NAN, INF = float("nan"), float("inf")


def _bar(**edit):
    return {**GOOD, **edit}


# (edit of GOOD, the exact message the gate refuses the bar with), written out by hand
MESSAGES = [
    ({"open": NAN}, "open = nan: must be finite"),
    ({"high": INF}, "high = inf: must be finite"),
    ({"low": -INF}, "low = -inf: must be finite"),
    ({"close": NAN}, "close = nan: must be finite"),
    ({"volume": INF}, "volume = inf: must be finite"),
    ({"spread": NAN}, "spread = nan: must be finite"),
    ({"open": 0.0, "low": 0.0}, "open = 0.0: a price must be > 0"),
    ({"low": -1.0}, "low = -1.0: a price must be > 0"),
    ({"close": -0.5, "low": -0.5}, "low = -0.5: a price must be > 0"),
    ({"volume": -1.0}, "volume = -1.0: must be >= 0"),
    ({"high": 1.14}, "high = 1.14 / low = 1.0 do not contain open = 1.1 and close = 1.15"),
    ({"low": 1.11}, "high = 1.2 / low = 1.11 do not contain open = 1.1 and close = 1.15"),
    ({"spread": -0.0002}, "spread = -0.0002: must be >= 0"),
    # order: a non-finite value is reported before a bad price, a bad price before a negative volume, ...
    ({"open": -1.0, "close": NAN}, "close = nan: must be finite"),
    ({"volume": -1.0, "high": 0.5}, "volume = -1.0: must be >= 0"),
    ({"high": 1.0, "spread": -1.0}, "high = 1.0 / low = 1.0 do not contain open = 1.1 and close = 1.15"),
]


@pytest.mark.parametrize(("edit", "message"), MESSAGES, ids=[m for _, m in MESSAGES])
def test_bar_fault_says_what_the_gate_says(edit, message):
    assert bar_fault(**_bar(**edit)) == message


@pytest.mark.parametrize(
    "edit",
    [
        {},
        {"spread": None},
        {"spread": 0.0},
        {"volume": 0.0},
        # the range may touch the body: high == max(open, close), low == min(open, close)
        {"high": 1.15, "low": 1.1},
        {"open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0},
    ],
)
def test_bar_fault_accepts_a_valid_bar(edit):
    assert bar_fault(**_bar(**edit)) is None


def _naive_valid(b):
    """The rules written out once more, value by value."""
    vals = [b[k] for k in ("open", "high", "low", "close", "volume")]
    if b["spread"] is not None:
        vals.append(b["spread"])
    if not all(math.isfinite(v) for v in vals):
        return False
    if min(b["open"], b["high"], b["low"], b["close"]) <= 0 or b["volume"] < 0:
        return False
    if b["spread"] is not None and b["spread"] < 0:
        return False
    return b["high"] >= max(b["open"], b["close"]) and b["low"] <= min(b["open"], b["close"])


_VALUE = st.sampled_from([NAN, INF, -INF, -1.0, 0.0, 0.9, 1.0, 1.1, 1.2, 2.0])


@given(st.lists(st.tuples(_VALUE, _VALUE, _VALUE, _VALUE, _VALUE, _VALUE), min_size=1, max_size=30), st.booleans())
def test_the_three_forms_agree_with_the_rules(rows, with_spread):
    """bar_fault (gate), the row kernel, its twin and the per-rule masks (loader) give one verdict per bar."""
    cols = {k: np.array([r[i] for r in rows]) for i, k in enumerate(("open", "high", "low", "close", "volume"))}
    if with_spread:
        cols["spread"] = np.array([r[5] for r in rows])
    names = ("open", "high", "low", "close", "volume")

    def bar(i):
        return {k: float(cols[k][i]) for k in names} | {"spread": float(cols["spread"][i]) if with_spread else None}

    expected = np.array([not _naive_valid(bar(i)) for i in range(len(rows))])
    scalar = np.array([bar_fault(**bar(i)) is not None for i in range(len(rows))])
    faults = row_faults(cols)
    masked = np.zeros(len(rows), dtype=bool)
    for f in faults:
        assert f.kind in FAULT_KINDS and f.column in cols and f.mask.any()
        masked |= f.mask
    np.testing.assert_array_equal(scalar, expected)
    np.testing.assert_array_equal(bad_rows(cols), expected)
    np.testing.assert_array_equal(bad_rows(cols, twin=True), expected)
    np.testing.assert_array_equal(masked, expected)


def test_row_faults_name_column_and_kind():
    cols = {
        "open": np.array([1.1, NAN, 1.1, 1.1, 1.1]),
        "high": np.array([1.2, 1.2, 1.0, 1.2, 1.2]),
        "low": np.array([1.0, 1.0, 1.0, 1.0, 1.0]),
        "close": np.array([1.15, 1.15, 1.15, 1.15, 1.15]),
        "volume": np.array([1.0, 1.0, 1.0, -2.0, 1.0]),
        "spread": np.array([0.0, 0.0, 0.0, 0.0, INF]),
    }
    got = [(f.column, f.kind, np.flatnonzero(f.mask).tolist()) for f in row_faults(cols)]
    assert got == [
        ("open", "nan", [1]),
        ("spread", "inf", [4]),
        ("high", "high_below_body", [2]),
        ("volume", "negative_volume", [3]),
    ]
