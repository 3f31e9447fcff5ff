"""The fused module step (engine/fused.py) against the reference: every module's own ``update(ctx)``.

Two gates, one with ``fused=True`` and one with ``fused=False``, run the same bars — the whole EURUSD sample with a
walk-forward style bundle (out-of-sample bars with probabilities, candidates, outcomes and matured forecasts), plus
hostile bars (refused ones, NaN volume, zero volume, a missing spread) — and must give the same Decision on every
bar (every field but the latencies) and the same module state after it, array for array, bit for bit.
"""

from __future__ import annotations

import math
import operator
import os
import subprocess
import sys
import types
from concurrent.futures import Future
from dataclasses import replace

import numpy as np
import pytest

from fxgate.engine import sample_bars
from fxgate.engine.config import GateConfig, L2Config, L3Config, L4Config
from fxgate.engine.core.bars import Bar
from fxgate.engine.fused import FusedModules, _gatherer, generate
from fxgate.engine.gate import Gate
from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
from fxgate.models.labels import LabelSpec
from fxgate.modules import REGISTRY, CertaintyModule, Context, Matured, create
from fxgate.modules._fusion import FusedStep
from fxgate.modules._schedule import Parts

NO_LLM = {"l2": L2Config(enabled=False), "l3": L3Config(enabled=False)}
SMALL = {
    "edge_proof": {"reps": 200, "p_threshold": 0.05, "min_outcomes": 30, "window": 100, "every": 7, "lag": 0},
    "model_confidence_set": {"reps": 100, "min_rows": 30, "window": 100, "every": 5, "lag": 0},
}
#: the registered modules that declare a fused part (the rest run their update on both gates)
FUSABLE = sorted(n for n, cls in REGISTRY.items() if cls.fused_step is not CertaintyModule.fused_step)


@pytest.fixture(scope="module")
def ens():
    e = TreeEnsemble()
    e.fit(sample_bars()[:1500], LabelSpec("next", 1), EnsembleConfig(n_estimators=20, max_depth=3), evaluate=False)
    return e


def _cfg(modules, mode="full", **kw):
    l4 = L4Config(modules=tuple(modules), params={k: v for k, v in SMALL.items() if k in modules})
    return GateConfig(l4=l4, mode=mode, **NO_LLM, **kw)


def _equal(a, b, where=""):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), f"{where}: arrays differ"  # bit for bit
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _equal(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    elif isinstance(a, Future | Parts):
        pass  # a scheduled module's in-flight job (lag 0 here: none)
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _strip(d):
    """A Decision without its latencies (wall-clock, different on every run)."""
    return replace(d, layers=tuple(replace(v, latency_us=0.0) for v in d.layers))


def _hostile(bars):
    """The sample with varying spreads and hostile bars woven in: a NaN volume, a zero volume, a refused
    (non-positive) close, a bar repeated (refused: not after the last), a bar without a spread or timeframe."""
    out = []
    for i, b in enumerate(bars):
        b = replace(b, spread=4e-5 + 1e-5 * (i % 7))  # spreads that vary (the sample has none: the gate's 0 else)
        if i % 97 == 5:
            b = replace(b, volume=math.nan)
        elif i % 89 == 7:
            b = replace(b, volume=0.0)
        elif i % 83 == 11:
            out.append(replace(b, close=-1.0))  # refused by the intake
        elif i % 79 == 13:
            b = replace(b, timeframe="", spread=None)
        out.append(b)
        if i % 101 == 17:
            out.append(b)  # the same bar again: refused
    return out


def _run_both(cfg, ens, bars, every=1):
    """Both gates over ``bars``: every decision compared, the module state on bars ``i % every == 0`` (``every=1``:
    all) and every 3rd of the first 2,600."""
    a = Gate(cfg, ens, timeframe="H1", symbol="EURUSD", fused=True)
    b = Gate(cfg, ens, timeframe="H1", symbol="EURUSD", fused=False)
    assert a._updates is not None and a._updates.fused, "nothing was fused: the test would compare the twin to itself"
    n_signals_or_candidates = 0
    for i, bar in enumerate(bars):
        da, db = a.on_bar(bar), b.on_bar(bar)
        assert _strip(da) == _strip(db), f"bar {i}: decisions differ\n{da}\n{db}"
        n_signals_or_candidates += da.layers[0].passed is not None
        if (i < 2600 and i % 3 == 0) or i % every == 0 or i == len(bars) - 1:
            _equal([m.state_dict() for m in a.modules], [m.state_dict() for m in b.modules], f"bar {i}")
    return a, b


def test_fused_step_equals_every_module_update_on_the_sample(ens):
    """The default modules but SHAP (whose verdict, on every bar in full mode, would be most of the test's time; a
    module running unfused beside the step is tested below and in test_outcome_feed.py), full mode (every module's
    verdict on every bar), the whole sample with hostile bars: the decisions compared on every bar, every module's
    state on every 3rd bar of the first 2,600 (the first 1,100 out of sample) and every 25th after, so a wrong input
    column or parameter shows up within a few bars of the first bar it matters. (One module list: one step.)"""
    cfg = _cfg([n for n in GateConfig().l4.modules if n != "shap"])
    bars = _hostile(list(sample_bars()))
    a, b = _run_both(cfg, ens, bars, every=25)
    assert a.rejected == b.rejected > 0
    assert int(a._bars) > 4000
    assert sorted(m.name for m in a._updates.fused) == FUSABLE  # every module that declares a fused part ran fused


def test_state_rebound_by_a_restore_is_the_state_the_step_updates(ens, tmp_path):
    """A snapshot restore rebinds every state array; the step must update the new arrays, not the old ones. (The
    module list of the test above: the same compiled step.)"""
    cfg = _cfg([n for n in GateConfig().l4.modules if n != "shap"])
    bars = list(sample_bars())[:2200]
    ref = Gate(cfg, ens, timeframe="H1", symbol="EURUSD", fused=False)
    g = Gate(cfg, ens, timeframe="H1", symbol="EURUSD", fused=True)
    for bar in bars[:1800]:
        ref.on_bar(bar)
        g.on_bar(bar)
    g.snapshot(tmp_path / "s.snap")
    r = Gate.restore(tmp_path / "s.snap", cfg, ens, fused=True)
    for bar in bars[1800:]:
        assert _strip(r.on_bar(bar)) == _strip(ref.on_bar(bar))
    _equal([m.state_dict() for m in r.modules], [m.state_dict() for m in ref.modules], "after restore")


def test_generated_source_calls_each_kernel_with_its_state_inputs_and_literal_params():
    m = create("vpin")
    s = m.fused_step("H1")
    src = generate([s, FusedStep(s.kernel, s.state, s.inputs, (1, 2.5, math.nan, True, -math.inf))])
    assert "from fxgate.modules.vpin import _vpin_fused as k0" in src
    assert "k1(s1_0, s1_1, s1_2, s1_3, s1_4, s1_5, s1_6, close, volume, 1, 2.5, math.nan, True, -math.inf)" in src
    with pytest.raises(ValueError, match="unknown inputs"):
        FusedStep(s.kernel, s.state, ("closing",))
    with pytest.raises(TypeError, match="Python int, float or bool"):
        FusedStep(s.kernel, s.state, ("close",), (np.float32(1.0),))


def test_warm_up_compiles_without_touching_the_state():
    mods = [create(n, **SMALL.get(n, {})) for n in GateConfig().l4.modules if n != "shap"]  # the step above
    before = [m.state_dict() for m in mods]
    FusedModules(mods, "H1", n_features=4).warm_up()
    _equal(before, [m.state_dict() for m in mods], "warm-up")


def test_bar_without_timeframe_is_the_gates():
    """The intake gives a bar without a timeframe the gate's (a module that scales by timeframe reads the gate's)."""
    g = Gate(_cfg(["vpin"]), None, timeframe="M1", symbol="EURUSD")
    b = sample_bars()[0]
    clean, problem = g.intake.check(Bar(b.ts, b.open, b.high, b.low, b.close, b.volume, None, "", ""))
    assert problem is None and clean is not None and clean.timeframe == "M1"


RUN_FROM_CACHE = """
import hashlib, sys
from dataclasses import replace
from fxgate.engine import sample_bars
from fxgate.engine.config import GateConfig, L2Config, L3Config, L4Config
from fxgate.engine.gate import Gate
from fxgate.modules import REGISTRY, CertaintyModule
names = tuple(sorted(n for n, c in REGISTRY.items() if c.fused_step is not CertaintyModule.fused_step))
cfg = GateConfig(l4=L4Config(modules=names), mode="full", l2=L2Config(enabled=False), l3=L3Config(enabled=False))
g = Gate(cfg, None, timeframe="H1", symbol="EURUSD")
g.warm_up()
h = hashlib.sha256()
for b in list(sample_bars())[:400]:
    d = g.on_bar(b)
    h.update(repr(replace(d, layers=tuple(replace(v, latency_us=0.0) for v in d.layers))).encode())
s = g._updates._step.stats
print(len(g._updates.fused), sum(s.cache_hits.values()), sum(s.cache_misses.values()), h.hexdigest())
"""


@pytest.mark.slow
def test_the_compiled_step_loads_from_the_disk_cache_in_a_new_process(tmp_path):
    """The second process loads the step (and every kernel it calls) from the disk cache instead of compiling, and
    decides the same. (A step calling a recursive kernel compiled in the first process and crashed in the second:
    numba cannot link a cached caller of a recursive function.)"""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONDONTWRITEBYTECODE="1")
    runs = []
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", RUN_FROM_CACHE], capture_output=True, text=True, env=env, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        runs.append(r.stdout.split())
    (n1, hits1, miss1, h1), (n2, hits2, miss2, h2) = runs
    assert int(n1) == int(n2) == len(FUSABLE) > 0
    assert int(miss1) == 1 and int(hits1) == 0, "the first process compiles the step"
    assert int(hits2) == 1 and int(miss2) == 0, "the second loads it from the cache"
    assert h1 == h2


def test_gates_with_one_module_list_share_one_compiled_step():
    """A pool's gates (one per symbol, one config) share the dispatcher: the step is loaded once per process."""
    a = FusedModules([create("vpin"), create("bocpd")], "H1", n_features=4)
    b = FusedModules([create("vpin"), create("bocpd")], "H1", n_features=4)
    c = FusedModules([create("vpin", n_buckets=20), create("bocpd")], "H1", n_features=4)
    assert a._step is b._step and a._step is not c._step


def test_probabilities_of_another_length_resize_the_inputs_and_mixed_lengths_are_refused():
    """A bundle with two models instead of three resizes the probability inputs before any row is written; one
    bar whose matured forecasts carry probabilities of different lengths is refused (the gate rolls it back)."""
    b = sample_bars()[0]
    mods = [create("information_edge"), create("uncertainty")]
    ref = [create("information_edge"), create("uncertainty")]
    fm = FusedModules(mods, "H1", n_features=3)

    def mat(i, probs):
        return Matured(i, 0, 1, 1.0 + i * 1e-3, 1.0 + i * 2e-3, probs, None)

    for i in range(1, 40):
        p2 = np.array([0.4 + 0.01 * (i % 5), 0.45])
        ctx = Context(b, features=np.zeros(3), probs=p2, bar_index=i, matured=(mat(i, p2), mat(i + 1, p2 + 0.01)))
        fm.update(ctx)
        for m in ref:
            m.update(ctx)
    _equal([m.state_dict() for m in mods], [m.state_dict() for m in ref], "two models")
    bad = Context(b, probs=None, bar_index=41, matured=(mat(1, np.array([0.5, 0.5])), mat(2, np.array([0.5] * 3))))
    with pytest.raises(ValueError, match="different lengths"):
        fm.update(bad)


READ_ONLY_CACHE = """
import warnings
from fxgate.engine import sample_bars
from fxgate.engine.config import GateConfig, L2Config, L3Config, L4Config
from fxgate.engine.gate import Gate
cfg = GateConfig(l4=L4Config(modules=("vpin", "bocpd")), l2=L2Config(enabled=False), l3=L3Config(enabled=False))
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    g = Gate(cfg, None, timeframe="H1", symbol="EURUSD")
for b in list(sample_bars())[:200]:
    d = g.on_bar(b)
    assert d.first_veto != "internal", d
print(len(g._updates.fused), any("cannot write the fused step" in str(x.message) for x in w))
"""


@pytest.mark.slow
def test_a_read_only_cache_location_still_builds_and_runs_a_fused_gate(tmp_path):
    """A deployment whose kernel cache folder cannot be written (found by review: the gate failed to build)."""
    env = dict(os.environ, NUMBA_CACHE_DIR="/proc/fxgate-no-cache", PYTHONDONTWRITEBYTECODE="1")
    r = subprocess.run([sys.executable, "-c", READ_ONLY_CACHE], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["2", "True"]


def test_an_after_hook_that_raises_refuses_the_bar_and_rolls_the_fused_state_back(ens, monkeypatch):
    """The first HMM fit of each gate raises (in ``after`` on the fused gate, inside ``update`` on the other): both
    refuse that bar, both roll every module back, and they go on identically (the next bar fits)."""
    failed: set[int] = set()
    fit = REGISTRY["regime"].fit

    def flaky(self, returns):
        if id(self) not in failed:
            failed.add(id(self))
            raise RuntimeError("planted fit failure")
        return fit(self, returns)

    monkeypatch.setattr(REGISTRY["regime"], "fit", flaky)
    l4 = L4Config(modules=("vpin", "regime", "bocpd"), params={"regime": {"fit_bars": 300, "refit_every": 150}})
    cfg = GateConfig(l4=l4, mode="full", **NO_LLM)
    a, b = _run_both(cfg, ens, list(sample_bars())[:1200], every=1)
    assert len(failed) == 2 and a.rejected == b.rejected == 1


def test_a_module_added_to_the_gate_after_it_was_built_is_updated(ens):
    """``gate.modules`` changed after construction (a test spy, a module added by hand): the next bar rebuilds the
    step for the new list (found by tests/engine/test_outcome_feed.py, whose spy saw no bar)."""
    bars = list(sample_bars())[1400:1700]
    gates = [Gate(_cfg(["vpin"]), ens, timeframe="H1", symbol="EURUSD", fused=f) for f in (True, False)]
    for g in gates:
        g.modules.append(create("bocpd", calib_bars=20))
        for b in bars:
            g.on_bar(b)
    a, b = (g.modules[1].state_dict() for g in gates)
    assert a["ist"][1] == len(bars) - 1  # every return after the first was seen
    _equal(a, b, "bocpd added after construction")


def test_the_state_gather_reads_every_path_as_held_now():
    """The generated gather returns what ``operator.attrgetter`` over the same dotted paths returns (the reference),
    after the owners rebind attributes at either level of a path; a path that is not dotted identifiers is refused
    before any source is written."""
    owners = [types.SimpleNamespace(a=np.zeros(2), sub=types.SimpleNamespace(b=np.ones(3))), types.SimpleNamespace(c=1)]
    paths = [(0, "a"), (0, "sub.b"), (1, "c"), (0, "a")]
    gather = _gatherer(paths, owners)
    holder = types.SimpleNamespace(m0=owners[0], m1=owners[1])
    ref = operator.attrgetter(*(f"m{i}.{p}" for i, p in paths))
    for step in range(3):
        got, want = gather(), ref(holder)
        assert len(got) == len(want) == 4 and all(x is y for x, y in zip(got, want, strict=True)), step
        owners[0].a = np.zeros(2)  # a rebound array
        owners[0].sub = types.SimpleNamespace(b=np.ones(3))  # a rebound holder of one
        owners[1].c = step
    assert _gatherer([], owners)() == ()
    assert len(_gatherer([(1, "c")], owners)()) == 1  # one path is a 1-tuple too
    # "ａ" (fullwidth a) is an identifier the compiler folds (NFKC) to "a": the read would name another attribute
    for bad in ("a; import os", "a.b-c", "class", "a..b", "__import__('os')", "\uff41", "sub.\uff42"):
        with pytest.raises(ValueError, match="dotted ASCII attribute name"):
            _gatherer([(0, bad)], owners)
