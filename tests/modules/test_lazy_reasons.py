"""Reasons formatted when read (``ModuleResult``): a verdict's reason read many bars later says what it said then.

A module may hand its verdict's reason as a function that formats it on first read. That function must hold copies
of the numbers, not the module's state arrays, which every later bar overwrites. The check: a full-mode gate with
all 18 default modules runs the EURUSD sample; on every bar each module's verdict is taken and its reason function
called once there (without keeping the string), and the verdicts are kept unread until the whole sample has run.
Their reasons read then must equal the ones formatted on their own bar, string for string.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from fxgate.engine import sample_bars
from fxgate.engine.config import GateConfig, L2Config, L3Config, L4Config
from fxgate.engine.core.records import ModuleResult
from fxgate.engine.gate import Gate
from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
from fxgate.models.labels import LabelSpec

NO_LLM = {"l2": L2Config(enabled=False), "l3": L3Config(enabled=False)}
#: bootstraps small and applied on the bar they fall due, so their verdicts (and reasons) move often
SMALL = {
    "edge_proof": {"reps": 200, "p_threshold": 0.05, "min_outcomes": 30, "window": 100, "every": 7, "lag": 0},
    "model_confidence_set": {"reps": 100, "min_rows": 30, "window": 100, "every": 5, "lag": 0},
}
#: modules whose reasons are always built at once (SHAP's is made from its explanation, on one bar in 10)
EAGER = {"shap"}


#: what a reason function may hold: immutable numbers and text (and containers of them, checked element by element)
_PLAIN = (type(None), bool, int, float, str, np.generic)


def _held(fn):
    """Every value a reason function holds: its closure cells, default arguments and bound object, and theirs for
    the functions among them."""
    seen, todo = set(), [fn]
    while todo:
        f = todo.pop()
        vals = [c.cell_contents for c in getattr(f, "__closure__", None) or ()]
        vals += list(getattr(f, "__defaults__", None) or ()) + list((getattr(f, "__kwdefaults__", None) or {}).values())
        if hasattr(f, "__self__"):
            vals.append(f.__self__)
        for v in vals:
            if id(v) in seen:
                continue
            seen.add(id(v))
            if callable(v) and not isinstance(v, type):
                todo.append(v)
            else:
                yield v


def _plain(v, params):
    """Whether ``v`` is a copy that later bars cannot change: a plain value, a container of them, or the module's
    parameter dict (never mutated in place)."""
    if isinstance(v, _PLAIN) or v is params:
        return True
    if isinstance(v, tuple | list):
        return all(_plain(x, params) for x in v)
    if isinstance(v, dict):
        return all(_plain(k, params) and _plain(x, params) for k, x in v.items())
    return False


@pytest.fixture(scope="module")
def run():
    bars = sample_bars()
    ens = TreeEnsemble()
    ens.fit(bars[:1500], LabelSpec("next", 1), EnsembleConfig(n_estimators=20, max_depth=3), evaluate=False)
    names = GateConfig().l4.modules
    cfg = GateConfig(l4=L4Config(modules=names, params=SMALL), mode="full", spread=8e-5, **NO_LLM)
    gate = Gate(cfg, ens, timeframe=bars.timeframe, symbol=bars.symbol)
    kept, read = [], []
    for b in bars:
        gate.on_bar(b)
        for m in gate.modules:
            m.settle()
        rs = [m.verdict() for m in gate.modules]  # not read until the sample is over
        # formatted now without being kept: a module that caches its verdict (bayesian_sizing) hands the same object
        # to every caller, and reading .reason would store the string in it
        read.append([r._reason() if callable(r._reason) else r._reason for r in rs])
        kept.append(rs)
    return gate, kept, read


def test_reasons_read_late_equal_reasons_read_at_once(run):
    gate, kept, read = run
    lazy_by_module: dict[str, int] = {}
    for k, (rs, now) in enumerate(zip(kept, read, strict=True)):
        for m, r, text in zip(gate.modules, rs, now, strict=True):
            if callable(r._reason):
                lazy_by_module[m.name] = lazy_by_module.get(m.name, 0) + 1
            assert r.reason == text, f"bar {k}, {m.name}: read late {r.reason!r}, on its bar {text!r}"
    # every module but the eager ones handed lazy reasons on this run (else the check above proved nothing for it)
    expected = {m.name for m in gate.modules} - EAGER
    assert set(lazy_by_module) == expected, sorted(expected - set(lazy_by_module))


def test_reason_functions_hold_no_module_or_state_array(run):
    gate, kept, _ = run
    for rs in kept[-200:] + kept[1500:1700]:
        for m, r in zip(gate.modules, rs, strict=True):
            fn = r._reason
            if not callable(fn):
                continue
            for v in _held(fn):
                assert _plain(v, m.params), (
                    f"{m.name}: a reason function holds a {type(v).__name__}, which later bars may change; copy its "
                    "numbers into locals first"
                )


def test_module_result_formats_once_compares_by_value_and_pickles():
    calls = []

    def fmt():
        calls.append(1)
        return "p = 0.25"

    a = ModuleResult("m", 0.25, True, 0.5, fmt)
    b = ModuleResult("m", 0.25, True, 0.5, "p = 0.25")
    assert calls == []
    assert a == b and hash(a) == hash(b) and a.reason == "p = 0.25"
    assert calls == [1]
    assert a.reason == "p = 0.25" and calls == [1]  # kept
    assert ModuleResult("m", 0.25, True, 0.5, "p = 0.3") != b
    c = pickle.loads(pickle.dumps(ModuleResult("m", math.nan, False, 0.5, lambda: "late")))
    assert c.reason == "late" and c.name == "m" and math.isnan(c.score) and c.passed is False
    assert c.to_dict() == {"module": "m", "passed": False, "score": None, "threshold": 0.5, "reason": "late"}
    with pytest.raises(AttributeError, match="immutable"):
        a.score = 1.0  # type: ignore[misc]


def test_a_reason_that_raises_says_so_instead_of_raising():
    r = ModuleResult("m", 1.0, True, 0.5, lambda: f"{None:.3f}")
    assert r.reason.startswith("(the reason could not be formatted: TypeError: ")
    assert r.passed is True and r.score == 1.0
