"""The per-bar Layer-1 path on Python floats against the numpy rules it replaced.

``candidate_direction_of`` and ``mean_of`` (engine/core/records.py) and ``TreeEnsemble.verdict_from_probs`` run on
``probs.tolist()``: numpy on three numbers costs a microsecond a call. Each is checked here against the numpy rule
(the reference functions: ``candidate_direction``, ``np.mean`` and the numpy verdict below, kept as it was) on
hostile input, and whole gates are checked against a gate running the numpy rules, Decision for Decision, on the
bundled sample.
"""

from __future__ import annotations

import math
import struct
from dataclasses import replace

import numpy as np
import pytest

import fxgate.engine.gate as gate_module
from fxgate.engine import sample_bars
from fxgate.engine.config import GateConfig, L1Config, L2Config, L3Config, L4Config
from fxgate.engine.core.records import ModelProbability, candidate_direction, candidate_direction_of, mean_of
from fxgate.engine.gate import Gate
from fxgate.models.ensemble import MODEL_NAMES, EnsembleConfig, L1Verdict, TreeEnsemble
from fxgate.models.labels import LabelSpec

NO_LLM = {"l2": L2Config(enabled=False), "l3": L3Config(enabled=False)}
SMALL = {
    "edge_proof": {"reps": 200, "p_threshold": 0.05, "min_outcomes": 30, "window": 100, "every": 7, "lag": 0},
    "model_confidence_set": {"reps": 100, "min_rows": 30, "window": 100, "every": 5, "lag": 0},
}
HALF = 0.5
EDGES = [
    0.0,
    -0.0,
    HALF,
    np.nextafter(HALF, 0.0),
    np.nextafter(HALF, 1.0),
    1.0,
    1e-300,
    5e-324,
    0.95,
    0.05,
    math.nan,
    math.inf,
    -math.inf,
]
THRESHOLDS = [0.5, 0.52, 0.6, 0.95, 0.512345, 1.0, 0.0]


def reference_verdict(p: np.ndarray, thr: float) -> L1Verdict:
    """``TreeEnsemble.verdict_from_probs`` as it was, on numpy arrays (the reference)."""
    probs = tuple(ModelProbability(m, float(v)) for m, v in zip(MODEL_NAMES, p, strict=True))
    if not np.all(np.isfinite(p)):
        return L1Verdict(False, "NONE", probs, 0.0, thr, "non-finite model output")
    up = p >= 0.5
    if candidate_direction(p) == 0:
        votes = ", ".join(f"{m} {'up' if u else 'down'} {v:.3f}" for m, u, v in zip(MODEL_NAMES, up, p, strict=True))
        return L1Verdict(False, "NONE", probs, 0.0, thr, f"models disagree ({votes})")
    conf = np.where(up, p, 1 - p)
    direction = "BUY" if up[0] else "SELL"
    weakest = int(np.argmin(conf))
    if conf[weakest] < thr:
        return L1Verdict(
            False,
            "NONE",
            probs,
            float(conf[weakest]),
            thr,
            f"all say {direction} but {MODEL_NAMES[weakest]} confidence {conf[weakest]:.3f} < {thr}",
        )
    return L1Verdict(
        True,
        direction,
        probs,
        float(conf.min()),
        thr,
        f"all three say {direction} with confidence >= {thr} (min {conf.min():.3f})",
    )


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def hostile_rows(n: int, k: int = 3, seed: int = 0) -> list[np.ndarray]:
    """Random rows near 0.5 (where the rounding and the >= matter), with edge values and exact ties mixed in."""
    rng = np.random.default_rng(seed)
    rows = [np.array(t, dtype=np.float64) for t in ([HALF] * k, [-0.0] * k, [0.0] * k, [1.0] * k)]
    for _ in range(n):
        r = 0.5 + rng.normal(0, rng.choice([1e-4, 1e-2, 0.2]), size=k)
        for j in range(k):
            u = rng.random()
            if u < 0.15:
                r[j] = EDGES[rng.integers(len(EDGES))]
            elif u < 0.25:
                r[j] = r[rng.integers(k)]  # a tie: the weakest is the first of equals
            elif u < 0.3:
                r[j] = round(r[j], 4) + 0.0005  # on a .3f rounding boundary (as near as binary gets)
        rows.append(r)
    return rows


# -- the scalar twins --------------------------------------------------------------------------------------------
def test_candidate_direction_of_equals_the_numpy_rule_on_hostile_rows():
    for k in (1, 2, 3, 4, 5):
        for r in hostile_rows(3000, k, seed=k):
            assert candidate_direction_of(r.tolist()) == candidate_direction(r), r
    assert candidate_direction_of(None) == candidate_direction(None) == 0
    assert candidate_direction_of([]) == candidate_direction(np.array([])) == 0
    assert candidate_direction_of(()) == 0
    assert candidate_direction_of([HALF, HALF, HALF]) == 1  # exactly 0.5 leans up
    assert candidate_direction_of([np.nextafter(HALF, 0.0)] * 3) == -1
    assert candidate_direction_of([-0.0, 0.0, 0.2]) == -1
    assert candidate_direction_of([0.9, 0.9, math.nan]) == 0
    assert candidate_direction_of([0.9, math.inf, 0.9]) == 0


def test_mean_of_equals_np_mean_bit_for_bit():
    rng = np.random.default_rng(7)
    for k in range(1, 8):
        for _ in range(4000):
            # magnitudes far apart make the summation order visible in the last bit
            r = rng.random(k) * rng.choice([1.0, 1e-3, 1e3, 1e-17], size=k)
            if rng.random() < 0.1:
                r[rng.integers(k)] = EDGES[rng.integers(len(EDGES))]
            ref = float(np.mean(r))
            got = mean_of(r.tolist())
            assert (math.isnan(ref) and math.isnan(got)) or bits(got) == bits(ref), (r, got, ref)
    assert bits(mean_of([-0.0, -0.0, -0.0])) == bits(float(np.mean(np.array([-0.0, -0.0, -0.0]))))


def test_verdict_from_probs_equals_the_numpy_verdict_on_hostile_rows():
    ens = TreeEnsemble()  # the rule needs no fitted models
    n_branch = {"non-finite": 0, "disagree": 0, "below": 0, "passed": 0}
    for i, r in enumerate(hostile_rows(6000)):
        thr = THRESHOLDS[i % len(THRESHOLDS)]
        ref, got = reference_verdict(r, thr), ens.verdict_from_probs(r, thr)
        assert got.reason == ref.reason, r
        assert (got.passed, got.direction, got.threshold) == (ref.passed, ref.direction, ref.threshold), r
        assert type(got.confidence) is float and bits(got.confidence) == bits(ref.confidence), r
        assert [(q.model, bits(q.p_up)) for q in got.probs] == [(q.model, bits(q.p_up)) for q in ref.probs], r
        assert all(type(q.p_up) is float for q in got.probs)
        key = (
            "passed"
            if ref.passed
            else "non-finite"
            if ref.reason.startswith("non")
            else "disagree"
            if ref.reason.startswith("models")
            else "below"
        )
        n_branch[key] += 1
    assert min(n_branch.values()) > 100, n_branch  # every branch of the rule was compared many times
    # the ensemble's own threshold when none is given
    r = np.array([0.97, 0.99, 0.96])
    assert ens.verdict_from_probs(r) == reference_verdict(r, ens.config.threshold)


# -- whole gates against a gate on the numpy rules ------------------------------------------------------------------
class _NumpyVerdicts:
    """The ensemble as Layer 1 sees it, with the numpy verdict (the reference)."""

    def __init__(self, ens: TreeEnsemble) -> None:
        self._ens = ens

    def verdict_from_probs(self, p: np.ndarray, threshold: float | None = None) -> L1Verdict:
        return reference_verdict(p, self._ens.config.threshold if threshold is None else threshold)


@pytest.fixture(scope="module")
def ens():
    e = TreeEnsemble()
    e.fit(sample_bars()[:1500], LabelSpec("next", 1), EnsembleConfig(n_estimators=20, max_depth=3), evaluate=False)
    return e


def _json(d):
    """A Decision's JSON without its latencies (wall-clock, different on every run)."""
    return replace(d, layers=tuple(replace(v, latency_us=0.0) for v in d.layers)).to_json()


def _run(g, bars):
    """Each bar's Decision JSON, and the forecast probability of the newest pending outcome (what the gate
    averaged over the models: the outcome-based modules learn from it)."""
    out = []
    for b in bars:
        rec = g.evaluate(b)
        probs = [(q.model, bits(q.p_up)) for q in rec.probs]
        out.append((_json(rec.decision), bits(g._pending[-1][5]) if g._pending else b"", probs))
    return out


def _model_probabilities(c):
    """``Candidate.model_probabilities`` as it was: the records built from the probabilities (the reference)."""
    return (
        ()
        if c.probs is None
        else tuple(ModelProbability(n, float(p)) for n, p in zip(MODEL_NAMES, c.probs, strict=True))
    )


@pytest.mark.parametrize(
    ("mode", "fused"), [("cheapest", True), ("full", True), ("cheapest", False)], ids=["cheapest", "full", "unfused"]
)
def test_gate_decisions_equal_the_numpy_rules_on_the_sample(ens, mode, fused, monkeypatch):
    bars = sample_bars()
    modules = tuple(m for m in GateConfig().l4.modules if m != "shap")
    l4 = L4Config(modules=modules, params={k: v for k, v in SMALL.items() if k in modules})
    cfg = GateConfig(l1=L1Config(threshold=0.52), l4=l4, mode=mode, **NO_LLM)
    with monkeypatch.context() as mp:  # the reference: the numpy candidate rule, np.mean and the numpy verdict
        mp.setattr(
            gate_module, "candidate_direction_of", lambda ps: candidate_direction(None if ps is None else np.array(ps))
        )
        mp.setattr(gate_module, "mean_of", lambda ps: float(np.mean(np.array(ps))))
        mp.setattr(gate_module.Candidate, "model_probabilities", _model_probabilities)
        ref_gate = Gate(cfg, ens, timeframe=bars.timeframe, symbol=bars.symbol, fused=fused)
        ref_gate.layer("L1").ensemble = _NumpyVerdicts(ens)  # type: ignore[attr-defined]
        ref = _run(ref_gate, bars)
    got = _run(Gate(cfg, ens, timeframe=bars.timeframe, symbol=bars.symbol, fused=fused), bars)
    assert len(got) == len(ref) == len(bars)
    for i, (a, b) in enumerate(zip(got, ref, strict=True)):
        assert a == b, f"bar {i}:\n{a}\n{b}"
    l1 = [d.split('"name": "L1"', 1)[1].split('"latency_us"', 1)[0] for d, _, _ in ref]
    reasons = {
        "in sample": sum('"reason": "in sample' in x for x in l1),
        "disagree": sum('"reason": "models disagree' in x for x in l1),
        "below": sum('"reason": "all say' in x for x in l1),
        "passed": sum('"reason": "all three say' in x for x in l1),
    }
    assert min(reasons.values()) >= 20, reasons  # every branch of Layer 1 is on the sample


def test_disabled_layers_read_as_built_on_every_bar(ens):
    """A disabled layer's verdict (shared by the Decisions when nothing was spent on it) is the one ``off`` builds,
    on every bar, in both modes; a disabled Layer 1 still reports the time the features and models took."""
    bars = sample_bars()[1400:1700]
    off_l2 = {
        "name": "L2",
        "enabled": False,
        "passed": False,
        "score": None,
        "threshold": L2Config().threshold,
        "reason": "disabled by config",
        "latency_us": 0.0,
        "details": [],
    }
    for mode in ("cheapest", "full"):
        cfg = GateConfig(l1=L1Config(enabled=False), mode=mode, **NO_LLM)
        g = Gate(cfg, ens, timeframe=bars.timeframe, symbol=bars.symbol)
        for b in bars:
            d = g.on_bar(b).to_dict()
            layers = {v["name"]: v for v in d["layers"]}
            assert layers["L2"] == off_l2
            assert layers["L3"] == dict(off_l2, name="L3", threshold=L3Config().threshold)
            assert layers["L1"]["reason"].startswith("disabled by config: nothing proposes")
            assert layers["L1"]["latency_us"] > 0
            assert d["first_veto"] == "L1"
