"""Shared kernels of fxgate.modules._common against numpy, their independent reference."""

from __future__ import annotations

import pytest

from fxgate.modules._common import np_sum

SIZES = [*range(0, 300), 1000, 4095, 4096, 4097, 5000, 8191, 8192, 8193, 20_000]


@pytest.mark.parametrize("square", [False, True])
def test_np_sum_is_numpys_sum_bit_for_bit(rng, square):
    """Values spread over ten orders of magnitude, so any other summation order changes the last bits."""
    for n in SIZES:
        a = rng.standard_normal(n + 5) * 10.0 ** rng.integers(-5, 5, n + 5)
        ref = (a[5 : 5 + n] * a[5 : 5 + n]).sum() if square else a[5 : 5 + n].sum()
        got = np_sum(a, 5, n, square)
        assert got.hex() == float(ref).hex(), (n, square)
