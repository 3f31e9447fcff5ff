"""The fixed-width time kernel against its pure-Python twin and against datetime.strptime."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxgate.engine.loader import _timeparse as tp

FORMATS = [
    "%Y.%m.%d %H:%M",
    "%Y.%m.%d",
    "%H:%M:%S",
    "%Y%m%d %H%M%S",
    "%d.%m.%Y %H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%SZ",
]


def _reference(values: list[str], fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """datetime.strptime, restricted to exactly fixed-width strings (strptime also accepts '9:00')."""
    ns = np.zeros(len(values), np.int64)
    ok = np.zeros(len(values), bool)
    for i, v in enumerate(values):
        try:
            dt = datetime.strptime(v, fmt)
        except ValueError:
            continue
        canonical = dt.strftime(fmt)[:-3] if "%f" in fmt else dt.strftime(fmt)
        if v != canonical:  # strptime also takes ' 8' or '8' for %d; fixed-width layouts do not
            continue
        if not tp.MIN_YEAR <= dt.year <= tp.MAX_YEAR:
            continue
        base = datetime(1900, 1, 1) if "%Y" not in fmt else datetime(1970, 1, 1)
        delta = dt - base
        ns[i] = (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000
        ok[i] = True
    return ns, ok


@pytest.mark.parametrize("fmt", FORMATS)
def test_kernel_twin_and_strptime_agree_on_valid_and_invalid_values(rng, fmt):
    n = 3000
    secs = rng.integers(0, 4_000_000_000, n)
    good = [datetime.utcfromtimestamp(int(s)).strftime(fmt.replace("%f", "%f")) for s in secs]
    if "%f" in fmt:
        good = [g[:-3] for g in good]  # millisecond exports
    bad = []
    for g in good[:800]:
        j = int(rng.integers(0, len(g)))
        bad.append(g[:j] + str(rng.choice(list("0123456789x: -."))) + g[j + 1 :])
    bad += ["2017.02.29 10:00", "2016.02.30", "24:00:00", "2017.13.01", "", "2017.04.19 09:00 "]
    values = good + bad
    arr = pa.array(values)
    k_ns, k_ok = tp.parse_fixed(arr, fmt)
    t_ns, t_ok = tp.parse_fixed(arr, fmt, twin=True)
    np.testing.assert_array_equal(k_ok, t_ok)
    np.testing.assert_array_equal(k_ns, t_ns)
    r_ns, r_ok = _reference(values, fmt)
    np.testing.assert_array_equal(k_ok, r_ok)
    assert k_ok[:n].all()
    np.testing.assert_array_equal(k_ns[k_ok], r_ns[r_ok] if "%Y" in fmt else r_ns[r_ok] % (86400 * 10**9))


@given(st.lists(st.text(alphabet="0123456789.:- TZ", min_size=0, max_size=20), max_size=30))
def test_kernel_equals_twin_on_arbitrary_strings(values):
    arr = pa.array(values, type=pa.string())
    for fmt in ("%Y.%m.%d %H:%M", "%Y-%m-%dT%H:%M:%SZ"):
        k = tp.parse_fixed(arr, fmt)
        t = tp.parse_fixed(arr, fmt, twin=True)
        np.testing.assert_array_equal(k[0], t[0])
        np.testing.assert_array_equal(k[1], t[1])


def test_sliced_and_chunked_arrow_input():
    arr = pa.chunked_array([pa.array(["2017.04.19", "2017.04.20"]), pa.array(["2017.04.21"])])
    ns, ok = tp.parse_fixed(arr, "%Y.%m.%d")
    assert ok.all() and np.diff(ns).tolist() == [86400 * 10**9] * 2
    ns2, ok2 = tp.parse_fixed(pa.array(["x", "2017.04.19", "2017.04.20"]).slice(1), "%Y.%m.%d")
    assert ok2.all() and ns2.tolist() == ns[:2].tolist()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2017-04-19 09:00:00", "iso"),
        ("2017-04-19T09:00:00Z", "iso"),
        ("2017-04-19 09:00:00+02:00", "iso"),
        ("2017.04.19 09:00", "%Y.%m.%d %H:%M"),
        ("19.04.2017 09:00:00.000", "%d.%m.%Y %H:%M:%S.%f"),
        ("20170419 090000", "%Y%m%d %H%M%S"),
        ("1492592400", "epoch"),
        ("04/05/2017 10:00", None),
        ("soon", None),
    ],
)
def test_sniff_time_format(value, expected):
    assert tp.sniff_time_format(value) == expected


def test_epoch_units_by_magnitude():
    s = 1492592400
    for scale in (1, 1000, 10**6, 10**9):
        assert tp.epoch_to_ns(np.array([s * scale]))[0] == s * 10**9
