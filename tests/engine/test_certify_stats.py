"""Certified precision, the statistics (engine/core/certify.py): the Hoeffding–Bentkus p-value against its closed
form + scipy and against MAPIE's own function, its exact super-uniformity, fixed-sequence LTT against a naive loop,
the coverage guarantee on a synthetic score with a known precision curve (and that it is not vacuous), the chosen
threshold against MAPIE's BinaryClassificationController, the betting monitor's false-alarm rate and detection delay,
thinning against a naive loop, and the monitor's state round trip.

The figures (coverage, MAPIE agreement, false-alarm rate, delay percentiles) are printed: ``pytest -s``.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mapie.risk_control import BinaryClassificationController
from mapie.risk_control import _base_controller as mapie_ltt
from mapie.risk_control.methods import compute_hoeffding_bentkus_p_value
from scipy import stats

from fxgate.engine.core.certify import (
    Certificate,
    PrecisionMonitor,
    certify_path,
    effective_selection,
    hb_p_value,
    min_signals,
    thin_non_overlapping,
)

# ---------------------------------------------------------------------------------------------------------------
# independent references, written from the formulas (LTT §3.1), not from the module


def _h1_ref(a: float, b: float) -> float:
    first = 0.0 if a == 0 else a * math.log(a / b)
    second = 0.0 if a == 1 else (1 - a) * math.log((1 - a) / (1 - b))
    return first + second


def ref_hb(r: float, k: int, n: int, alpha: float) -> float:
    """p^HB from the empirical risk r (Hoeffding term) and the error count k = ceil(n r) (Bentkus term)."""
    if n == 0:
        return 1.0
    hoeffding = math.exp(-n * _h1_ref(min(r, alpha), alpha))
    bentkus = math.e * float(stats.binom.cdf(k, n, alpha))
    return min(hoeffding, bentkus, 1.0)


def ref_certify(selected: np.ndarray, correct: np.ndarray, target: float, delta: float):
    """Fixed-sequence LTT as a plain loop: (index or None, p-values tested, n_signals, n_correct)."""
    ps, last, counts = [], None, []
    for row in selected.tolist():
        n = sum(1 for s in row if s)
        c = sum(1 for s, y in zip(row, correct.tolist(), strict=True) if s and y)
        counts.append((n, c))
        p = ref_hb((n - c) / n if n else 1.0, n - c, n, 1 - target)
        ps.append(p)
        if p > delta:
            break
        last = len(ps) - 1
    n, c = counts[0 if last is None else last]
    return last, ps, n, c


# ---------------------------------------------------------------------------------------------------------------
# 1. the p-value

N_GRID = [1, 2, 3, 5, 10, 29, 50, 100, 333, 1000, 5000]
ALPHA_GRID = [0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7]


def test_hb_p_value_equals_closed_form_and_scipy_on_a_grid():
    rng = np.random.default_rng(0)
    checked = 0
    for n in N_GRID:
        ks = sorted({0, 1, n // 10, n // 5, n // 3, n // 2, n - 1, n} & set(range(n + 1)))
        for alpha in ALPHA_GRID:
            for k in ks:  # r̂ on the count lattice: ceil(n r̂) is k itself
                assert hb_p_value(k / n, n, alpha) == pytest.approx(ref_hb(k / n, k, n, alpha), rel=1e-12, abs=1e-300)
                checked += 1
            for r in rng.random(5):  # off the lattice: ceil(n r̂) of an r̂ far from k/n
                assert hb_p_value(r, n, alpha) == pytest.approx(ref_hb(r, math.ceil(n * r), n, alpha), rel=1e-12)
                checked += 1
    assert hb_p_value(0.3, 0, 0.1) == 1.0
    assert hb_p_value(0.5, 40, 0.1) == 1.0  # r̂ above alpha: no evidence at all
    assert checked > 500


def test_hb_p_value_equals_mapie_compute_hoeffding_bentkus_p_value():
    """MAPIE 1.6, mapie/risk_control/methods.py::compute_hoeffding_bentkus_p_value(r_hat, n_obs, alpha,
    binary=False) is the same p^HB (min of Hoeffding and e·Bentkus). Compared on r̂ away from the count lattice,
    where MAPIE's ceil(n r̂) is unambiguous (on the lattice see the next test)."""
    rng = np.random.default_rng(1)
    for alpha in ALPHA_GRID:
        n = np.array([n for n in N_GRID for _ in range(8)], dtype=float)
        r = rng.random(n.size)
        r[::8] = 0.0
        theirs = compute_hoeffding_bentkus_p_value(r, n, alpha, binary=False)[:, 0]
        ours = np.array([hb_p_value(float(ri), int(ni), alpha) for ri, ni in zip(r, n, strict=True)])
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-300)


def test_mapie_ceil_adds_a_phantom_error_on_the_lattice_and_we_do_not():
    """The one documented difference from MAPIE's p-value: it takes ceil(n r̂) of a floating r̂ = 1 - c/n, which is
    k + 1 ulp for many lattice points, so its Bentkus term counts one error too many there (conservative, not
    wrong). Ours counts k: on those points ours is the closed form with k errors and MAPIE's the one with k + 1."""
    hits = 0
    for n in (7, 9, 10, 25, 29, 100):
        for c in range(n + 1):
            r = 1 - c / n  # exactly MAPIE's precision risk arithmetic
            k = n - c
            if math.ceil(n * r) != k:
                hits += 1
                theirs = compute_hoeffding_bentkus_p_value(np.array([r]), np.array([float(n)]), 0.2)[0, 0]
                assert theirs == pytest.approx(ref_hb(r, k + 1, n, 0.2), rel=1e-12)
                assert hb_p_value(r, n, 0.2) == pytest.approx(ref_hb(r, k, n, 0.2), rel=1e-12)
    assert hits > 10


def test_hb_p_value_is_exactly_super_uniform():
    """Validity without simulation: with W ~ Binom(n, risk) errors and risk >= alpha (H0 at or beyond its
    boundary), P(p^HB(W/n) <= delta) = sum of the binomial pmf over the rejecting counts must be <= delta."""
    for n in (5, 20, 29, 60, 200, 1000):
        w = np.arange(n + 1)
        for alpha in (0.05, 0.1, 0.2, 0.4):
            p = np.array([hb_p_value(k / n, n, alpha) for k in w])
            for risk in (alpha, alpha + 0.02, alpha + 0.1):
                pmf = stats.binom.pmf(w, n, risk)
                for delta in (0.01, 0.05, 0.1, 0.2):
                    assert pmf[p <= delta].sum() <= delta + 1e-12, (n, alpha, risk, delta)


def test_min_signals_is_the_smallest_certifying_perfect_record():
    assert min_signals(0.9, 0.05) == 29
    for target in (0.5, 0.6, 0.75, 0.9, 0.95, 0.99):
        for delta in (0.01, 0.05, 0.1, 0.2):
            brute = next(n for n in range(1, 10_000) if ref_hb(0.0, 0, n, 1 - target) <= delta)
            assert min_signals(target, delta) == brute == math.ceil(math.log(delta) / math.log(target))
            # a perfect record of that many signals certifies the strictest point; one fewer does not
            for n, ok in ((brute, True), (brute - 1, False)):
                cert = certify_path(np.ones((1, n), dtype=bool), np.ones(n, dtype=bool), target, delta)
                assert cert.certified is ok


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((-0.1, 10, 0.1), "risk_hat"),
        ((1.5, 10, 0.1), "risk_hat"),
        ((float("nan"), 10, 0.1), "risk_hat"),
        ((0.1, -1, 0.1), "n must"),
        ((0.1, 2.5, 0.1), "n must"),
        ((0.1, 10, 0.0), "alpha"),
        ((0.1, 10, 1.0), "alpha"),
    ],
)
def test_hb_p_value_refuses_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        hb_p_value(*args)


# ---------------------------------------------------------------------------------------------------------------
# certify_path: against a naive loop, the reasons, the input checks


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(0, 80),
    st.sampled_from([0.5, 0.6, 0.7, 0.8, 0.9]),
    st.sampled_from([0.05, 0.1, 0.3, 0.6]),
    st.floats(0.05, 0.95),
    st.integers(0, 2**32 - 1),
)
def test_certify_path_equals_naive_fixed_sequence(n_points, n, target, delta, p_sel, seed):
    rng = np.random.default_rng(seed)
    selected = rng.random((n_points, n)) < p_sel
    correct = rng.random(n) < rng.uniform(0.3, 1.0)
    cert = certify_path(selected, correct, target, delta)
    index, ps, n_sig, n_cor = ref_certify(selected, correct, target, delta)
    assert cert.index == index and cert.certified == (index is not None)
    np.testing.assert_allclose(cert.p_values, ps, rtol=1e-12, atol=1e-300)
    assert (cert.n_signals, cert.n_correct, cert.n_outcomes) == (n_sig, n_cor, n)
    assert cert.precision == (n_cor / n_sig if n_sig else 0.0)
    d = cert.to_dict()
    assert json.loads(json.dumps(d)) == d and d["p_values"] == list(cert.p_values)


def _path(sizes_and_correct):
    """A nested path: point k selects the first n_k bars, c_k of them correct (n_k, c_k non-decreasing)."""
    total = max(n for n, _ in sizes_and_correct)
    correct = np.zeros(total, dtype=bool)
    rows, prev_n, prev_c = [], 0, 0
    for n, c in sizes_and_correct:
        assert 0 <= c - prev_c <= n - prev_n
        correct[prev_n : prev_n + c - prev_c] = True
        row = np.zeros(total, dtype=bool)
        row[:n] = True
        rows.append(row)
        prev_n, prev_c = n, c
    return np.array(rows), correct


def test_certify_path_chooses_the_loosest_point_of_the_rejected_prefix():
    # point 1 fails, point 2 would pass on its own: fixed-sequence stops at point 1 and point 2 is never tested
    selected, correct = _path([(100, 98), (200, 150), (1000, 950)])
    cert = certify_path(selected, correct, 0.8, 0.05)
    assert cert.certified and cert.index == 0 and len(cert.p_values) == 2 and cert.p_values[1] > 0.05
    assert (cert.n_signals, cert.n_correct) == (100, 98)
    assert "certified" in cert.reason and "100 signals" in cert.reason and "98 correct" in cert.reason
    # everything passes: the loosest point is chosen and every point was tested
    selected, correct = _path([(100, 98), (200, 195), (400, 390)])
    cert = certify_path(selected, correct, 0.8, 0.05)
    assert cert.index == 2 and len(cert.p_values) == 3 and max(cert.p_values) <= 0.05


def test_refusal_reasons_name_the_cause():
    few = certify_path(np.ones((2, 4), dtype=bool), np.ones(4, dtype=bool), 0.9, 0.05)
    assert not few.certified and few.index is None and (few.n_signals, few.n_correct) == (4, 4)
    assert (
        few.reason
        == "too few signals: 4 at the strictest point, a perfect record needs >= 29 for target 0.9 at delta 0.05"
    )
    selected, correct = _path([(210, 111), (400, 200)])
    low = certify_path(selected, correct, 0.9, 0.05)
    assert low.reason.startswith("target above what the data supports: precision 0.53 at the strictest point (n=210")
    assert len(low.p_values) == 1
    selected, correct = _path([(40, 37)])
    weak = certify_path(selected, correct, 0.9, 0.05)
    assert weak.reason.startswith("not enough evidence: precision 0.93") and "more signals" in weak.reason
    empty = certify_path(np.zeros((3, 10), dtype=bool), np.ones(10, dtype=bool), 0.6, 0.1)
    assert empty.p_values == (1.0,) and empty.precision == 0.0 and empty.reason.startswith("too few signals: 0")


@pytest.mark.parametrize(
    ("selected", "correct", "target", "delta", "match"),
    [
        (np.ones((2, 3), dtype=int), np.ones(3, dtype=bool), 0.8, 0.1, "selected must be a bool array"),
        (np.ones((2, 3), dtype=bool), np.ones(3), 0.8, 0.1, "correct must be a bool array"),
        (np.ones(3, dtype=bool), np.ones(3, dtype=bool), 0.8, 0.1, "2-D"),
        (np.ones((2, 3), dtype=bool), np.ones((3, 1), dtype=bool), 0.8, 0.1, "1-D"),
        (np.ones((0, 3), dtype=bool), np.ones(3, dtype=bool), 0.8, 0.1, "no path points"),
        (np.ones((2, 3), dtype=bool), np.ones(4, dtype=bool), 0.8, 0.1, "3 columns but correct has 4"),
        (np.ones((2, 3), dtype=bool), np.ones(3, dtype=bool), 1.0, 0.1, "target"),
        (np.ones((2, 3), dtype=bool), np.ones(3, dtype=bool), 0.8, 0.0, "delta"),
    ],
)
def test_certify_path_refuses_bad_input(selected, correct, target, delta, match):
    with pytest.raises(ValueError, match=match):
        certify_path(selected, correct, target, delta)


def test_certificate_is_frozen():
    cert = certify_path(np.ones((1, 50), dtype=bool), np.ones(50, dtype=bool), 0.9, 0.05)
    assert isinstance(cert, Certificate)
    with pytest.raises(AttributeError):
        cert.certified = False  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------------------------
# 2. the guarantee, on a score with a known precision curve
#
# s ~ U(0, 1), P(correct | s) = 0.3 + 0.6 s, a signal when s >= t: precision(t) = ∫_t^1 (0.3 + 0.6 s) ds / (1 - t)
# = 0.6 + 0.3 t, increasing, with supremum 0.9 (t -> 1).

THRESHOLDS = np.round(np.arange(0.9, -1e-9, -0.01), 2)  # strictest first, fixed before any data


def true_precision(t: float) -> float:
    return 0.6 + 0.3 * t


def _calibration(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    s = rng.random(n)
    return s, rng.random(n) < 0.3 + 0.6 * s


def _binomial_floor(n_sims: int, p: float) -> float:
    """One-sided 99.9% lower bound of a Binomial(n_sims, p) fraction."""
    return float(stats.binom.ppf(0.001, n_sims, p)) / n_sims


@pytest.mark.slow
def test_coverage_guarantee_holds_and_is_not_vacuous():
    rng = np.random.default_rng(17)
    n_sims, n, target, delta = 1000, 3000, 0.8, 0.1
    chosen = []
    for _ in range(n_sims):
        s, correct = _calibration(rng, n)
        cert = certify_path(s[None, :] >= THRESHOLDS[:, None], correct, target, delta)
        chosen.append(np.nan if cert.index is None else THRESHOLDS[cert.index])
    chosen = np.array(chosen)
    certified = ~np.isnan(chosen)
    # a refusal never states a false precision: it counts as covered
    covered = ~certified | (true_precision(np.nan_to_num(chosen)) >= target - 1e-12)
    floor = _binomial_floor(n_sims, 1 - delta)
    true_at_chosen = true_precision(chosen[certified])
    print(
        f"\n[coverage] {n_sims} calibrations of {n} bars, target {target} delta {delta}: P(true precision >= target)"
        f" = {covered.mean():.3f} (floor {floor:.3f}); certified {certified.mean():.3f}; true precision at the chosen"
        f" point median {np.median(true_at_chosen):.3f}, min {true_at_chosen.min():.3f}"
        f" (t* = {(target - 0.6) / 0.3:.3f})"
    )
    assert covered.mean() >= floor
    # not vacuous: it certifies in most calibrations, and close to the true boundary rather than at the strictest point
    assert certified.mean() >= 0.85
    assert np.median(true_at_chosen) <= target + 0.05

    # a target above the curve's maximum (0.9) is refused
    refused = 0
    for _ in range(300):
        s, correct = _calibration(rng, n)
        refused += not certify_path(s[None, :] >= THRESHOLDS[:, None], correct, 0.92, delta).certified
    print(f"[coverage] target 0.92 above the curve's maximum 0.9: refused in {refused}/300")
    assert refused / 300 >= _binomial_floor(300, 1 - delta) and refused >= 295


# ---------------------------------------------------------------------------------------------------------------
# 3. against MAPIE's BinaryClassificationController (mapie 1.6, risk "precision", fwer_method="fixed_sequence")
#
# Two differences, both documented and controlled for here:
# * MAPIE's controller calls ltt_procedure(..., binary=True): its Bentkus term is the plain binomial tail
#   P(Binom(n, α) <= k), without LTT's factor e (valid for 0/1 losses, and up to e times smaller). Ours is the general
#   p^HB of the spec (binary=False).
# * its ceil(n r̂) of r̂ = 1 - c/n counts one phantom error on many lattice points (test above).
# With both undone in a wrapper around MAPIE's own p-value function, the whole procedure must agree exactly: same
# p-values, same chosen threshold. As shipped, MAPIE's p-values are bounded by ours, and the agreement is printed.

MAPIE_THRESHOLDS = np.round(np.arange(0.0, 0.9001, 0.02), 2)  # MAPIE's ascending grid; our path is its reverse


def _mapie_choice(s: np.ndarray, correct: np.ndarray, target: float, delta: float):
    bcc = BinaryClassificationController(
        predict_function=lambda x: np.column_stack([1 - x[:, 0], x[:, 0]]),
        risk="precision",
        target_level=target,
        confidence_level=1 - delta,
        list_predict_params=MAPIE_THRESHOLDS,
        fwer_method="fixed_sequence",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bcc.calibrate(s[:, None], correct.astype(int))
    return bcc.best_predict_param, bcc.p_values[::-1, 0]  # p-values in our order (strictest first)


def _ours(s, correct, target, delta):
    path = MAPIE_THRESHOLDS[::-1]
    selected = s[None, :] >= path[:, None]
    return certify_path(selected, correct, target, delta), selected, path


@pytest.mark.slow
def test_same_choice_as_mapie_controller_with_the_general_hb_p_value(monkeypatch):
    original = compute_hoeffding_bentkus_p_value

    def general_hb(r_hat, n_obs, alpha, binary=False):
        # binary=False: LTT's p^HB; r̂ - 1e-12 takes back only the phantom-error ulp of ceil(n r̂)
        return original(np.maximum(np.asarray(r_hat, dtype=float) - 1e-12, 0.0), n_obs, alpha, binary=False)

    monkeypatch.setattr(mapie_ltt, "compute_hoeffding_bentkus_p_value", general_hb)
    rng = np.random.default_rng(3)
    n_sims, same, n_certified = 200, 0, 0
    for i in range(n_sims):
        target, delta = (0.75, 0.1) if i % 2 else (0.8, 0.05)
        s, correct = _calibration(rng, int(rng.integers(400, 2500)))
        cert, selected, path = _ours(s, correct, target, delta)
        best, p_mapie = _mapie_choice(s, correct, target, delta)
        np.testing.assert_allclose(cert.p_values, p_mapie[: len(cert.p_values)], rtol=1e-8, atol=1e-300)
        if cert.index is None:
            assert best is None
        else:
            n_certified += 1
            # compare the selected sets: equal sets at two thresholds are the same rule
            assert best is not None and np.array_equal(s >= best, selected[cert.index])
        same += 1
    print(f"\n[mapie] general HB p-value: same chosen rule in {same}/{n_sims} calibrations ({n_certified} certified)")
    assert n_certified >= n_sims // 2


@pytest.mark.slow
def test_mapie_controller_as_shipped_bounds_our_p_values():
    rng = np.random.default_rng(4)
    n_sims, agree, mapie_looser, ours_looser = 200, 0, 0, 0
    for i in range(n_sims):
        target, delta = (0.75, 0.1) if i % 2 else (0.8, 0.05)
        s, correct = _calibration(rng, int(rng.integers(400, 2500)))
        cert, selected, path = _ours(s, correct, target, delta)
        best, p_mapie = _mapie_choice(s, correct, target, delta)
        n_k = selected.sum(axis=1)
        c_k = (selected & correct).sum(axis=1)
        k_mapie = np.ceil(n_k * (1 - c_k / n_k))  # MAPIE's own arithmetic
        p_ours = np.array([hb_p_value(1 - c / n, int(n), 1 - target) for n, c in zip(n_k, c_k, strict=True)])
        # min(H, B) >= min(H, e·B)/e always; where its error count is exact, MAPIE's p-value is <= ours
        assert np.all(p_mapie >= p_ours / math.e * (1 - 1e-12))
        exact = k_mapie == n_k - c_k
        assert np.all(p_mapie[exact] <= p_ours[exact] * (1 + 1e-12))
        ours_rule = None if cert.index is None else selected[cert.index]
        mapie_rule = None if best is None else s >= best
        if (ours_rule is None and mapie_rule is None) or (
            ours_rule is not None and mapie_rule is not None and np.array_equal(ours_rule, mapie_rule)
        ):
            agree += 1
        elif mapie_rule is not None and (ours_rule is None or mapie_rule.sum() > ours_rule.sum()):
            mapie_looser += 1
        else:
            ours_looser += 1
    print(
        f"\n[mapie] as shipped (binary binomial tail, no factor e): same chosen rule in {agree}/{n_sims}; "
        f"MAPIE looser in {mapie_looser}, ours looser in {ours_looser}"
    )
    assert agree + mapie_looser + ours_looser == n_sims and agree >= n_sims // 4


# ---------------------------------------------------------------------------------------------------------------
# 4. the live monitor


def ref_monitor_log_wealth(xs: list[bool], target: float, half_life: float, c: float = 0.5) -> list[float]:
    """The class docstring's formula as a loop: log K_t with aGRAPA bets on exponentially weighted estimates."""
    w = 0.5 ** (1 / half_life)
    mu, var, log_k, out = target, target * (1 - target), 0.0, []
    for x in xs:
        g = target - mu
        lam = min(max(g / (var + g * g), 0.0), c / (1 - target))
        log_k += math.log(1 + lam * (target - float(x)))
        out.append(log_k)
        var = w * var + (1 - w) * (float(x) - mu) ** 2
        mu = w * mu + (1 - w) * float(x)
    return out


@settings(max_examples=100, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=300), st.sampled_from([0.5, 0.6, 0.75, 0.9]))
def test_monitor_wealth_equals_the_formula(xs, target):
    mon = PrecisionMonitor(target, alpha=1e-12)  # never halts here
    ref = ref_monitor_log_wealth(xs, target, 100.0)
    for x, want in zip(xs, ref, strict=True):
        mon.update(x)
        assert mon.state_dict()["log_e_value"] == pytest.approx(want, abs=1e-9)
        assert mon.e_value == pytest.approx(math.exp(want), rel=1e-9)
    assert mon.n == len(xs) and mon.n_correct == sum(xs)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.booleans(), max_size=200), st.sampled_from([0.55, 0.7, 0.9]))
def test_monitor_bet_is_predictable_and_in_range(xs, target):
    """The bet on signal t is the same whatever X_t turns out to be (solved from the two possible next wealths)."""
    mon = PrecisionMonitor(target, alpha=1e-12)
    for x in xs:
        mon.update(x)
    lams = []
    for outcome in (True, False):
        twin = PrecisionMonitor(target, alpha=1e-12)
        twin.load_state_dict(mon.state_dict())
        before = twin.state_dict()["log_e_value"]
        twin.update(outcome)
        lams.append(math.expm1(twin.state_dict()["log_e_value"] - before) / (target - float(outcome)))
    assert lams[0] == pytest.approx(lams[1], rel=1e-9, abs=1e-12)
    assert -1e-12 <= lams[0] <= 0.5 / (1 - target) + 1e-12


def _run_streams(p_of_t: np.ndarray, n_streams: int, target: float, alpha: float, seed: int) -> np.ndarray:
    """rejected_at (0: never) of ``n_streams`` monitors fed Bernoulli(p_of_t[t]) outcomes."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n_streams, dtype=int)
    for i in range(n_streams):
        xs = (rng.random(p_of_t.size) < p_of_t).tolist()
        mon = PrecisionMonitor(target, alpha)
        for x in xs:
            if mon.update(x):
                break
        out[i] = mon.rejected_at or 0
    return out


@pytest.mark.slow
def test_monitor_false_alarm_rate_is_at_most_alpha():
    target, alpha, n_streams = 0.6, 0.05, 2000
    ceiling = float(stats.binom.ppf(0.999, n_streams, alpha)) / n_streams
    for p in (target, target + 0.05):
        alarms = _run_streams(np.full(500, p), n_streams, target, alpha, seed=int(p * 100))
        rate = float((alarms > 0).mean())
        print(f"\n[monitor] true precision {p:.2f}, target {target}: false alarms {rate:.4f} in {n_streams} x 500")
        assert rate <= ceiling


@pytest.mark.slow
def test_monitor_detects_a_drop():
    target, alpha, n_streams, before, after = 0.6, 0.05, 2000, 200, 500
    p = np.r_[np.full(before, target), np.full(after, target - 0.15)]
    at = _run_streams(p, n_streams, target, alpha, seed=11)
    early = (at > 0) & (at <= before)
    delay = np.where(at > before, at - before, np.inf)[~early]
    detected = np.isfinite(delay)
    print(
        f"\n[monitor] precision {target} for {before} signals then {target - 0.15:.2f}: alarm before the drop "
        f"{early.mean():.4f}; detected within {after} after it {detected.mean():.4f}; delay median "
        f"{np.median(delay):.0f}, 90th percentile {np.percentile(delay, 90):.0f} signals"
    )
    assert early.mean() <= float(stats.binom.ppf(0.999, n_streams, alpha)) / n_streams
    assert detected.mean() >= 0.9
    assert np.median(delay) <= 250


def test_monitor_halts_and_explains():
    mon = PrecisionMonitor(0.6, alpha=0.05)
    assert mon.e_value == 1.0 and not mon.rejected and mon.rejected_at is None
    assert mon.reason().startswith("live precision not shown below 0.60: e-value 1.00 < 1/alpha = 20 after 0 signals")
    for i in range(1000):  # 25% correct against a target of 60%
        if mon.update(i % 4 == 0):
            break
    assert mon.rejected, mon.reason()
    n, k = mon.n, mon.n_correct
    assert mon.rejected_at == n and mon.e_value >= 20
    assert mon.reason() == (
        f"live precision below 0.60: e-value {mon.e_value:.1f} >= 1/alpha = 20 after {n} signals ({k} correct)"
    )
    assert mon.update(True) is True and mon.n == n  # halted: nothing more is counted


def test_monitor_refuses_bad_input():
    for kw in ({"target": 0.0}, {"target": 1.0}, {"target": 0.6, "alpha": 0.0}, {"target": 0.6, "half_life": 0}):
        with pytest.raises(ValueError):
            PrecisionMonitor(**kw)
    with pytest.raises(ValueError, match="target"):
        PrecisionMonitor(0.7).load_state_dict(PrecisionMonitor(0.6).state_dict())


# ---------------------------------------------------------------------------------------------------------------
# 5. thinning and the state round trip


def naive_thin(entry: list[int], horizon: int) -> list[bool]:
    keep, last = [], None
    for e in entry:
        ok = last is None or e >= last + horizon
        keep.append(ok)
        if ok:
            last = e
    return keep


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 500), max_size=200), st.integers(1, 40))
def test_thin_non_overlapping_equals_naive_loop(entries, horizon):
    entry = np.array(sorted(entries), dtype=np.int64)
    assert thin_non_overlapping(entry, horizon).tolist() == naive_thin(entry.tolist(), horizon)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 5), st.integers(0, 120), st.integers(1, 12), st.integers(0, 2**32 - 1))
def test_effective_selection_thins_each_row(n_points, n, horizon, seed):
    rng = np.random.default_rng(seed)
    entry = np.sort(rng.integers(0, 3 * n + 1, n))
    selected = rng.random((n_points, n)) < 0.5
    got = effective_selection(selected, entry, horizon)
    for k in range(n_points):
        idx = [i for i in range(n) if selected[k, i]]
        kept = naive_thin([int(entry[i]) for i in idx], horizon)
        want = np.zeros(n, dtype=bool)
        want[[i for i, ok in zip(idx, kept, strict=True) if ok]] = True
        assert got[k].tolist() == want.tolist()


def test_thinning_refuses_bad_input():
    with pytest.raises(ValueError, match="sorted"):
        thin_non_overlapping(np.array([3, 1]), 2)
    with pytest.raises(ValueError, match="horizon"):
        thin_non_overlapping(np.array([1, 3]), 0)
    with pytest.raises(ValueError, match="integer"):
        thin_non_overlapping(np.array([1.0, 3.0]), 2)
    with pytest.raises(ValueError, match="columns"):
        effective_selection(np.ones((2, 3), dtype=bool), np.arange(4), 2)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), max_size=250), st.data(), st.sampled_from([0.5, 0.6, 0.8]))
def test_state_round_trip_continues_like_uninterrupted(xs, data, target):
    cut = data.draw(st.integers(0, len(xs)))
    whole = PrecisionMonitor(target, alpha=0.05)
    for x in xs:
        whole.update(x)
    first = PrecisionMonitor(target, alpha=0.05)
    for x in xs[:cut]:
        first.update(x)
    state = json.loads(json.dumps(first.state_dict()))  # plain numbers only
    resumed = PrecisionMonitor(target, alpha=0.05)
    resumed.load_state_dict(state)
    for x in xs[cut:]:
        resumed.update(x)
    assert resumed.state_dict() == whole.state_dict()
    assert (resumed.e_value, resumed.rejected, resumed.rejected_at) == (
        whole.e_value,
        whole.rejected,
        whole.rejected_at,
    )
