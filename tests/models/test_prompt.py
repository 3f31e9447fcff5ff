"""The prompt's values from typed layer records: the formula lines come from the modules' own catalogue entries
(``formulas_of``), in the order the modules are shown, and nothing of fxgate.training is needed to build them."""

from __future__ import annotations

import math

from fxgate.engine.core.records import ModelProbability, ModuleResult
from fxgate.models.prompt import formulas_of, prompt_values
from fxgate.modules import REGISTRY


class _Documented:
    def __init__(self, name: str, formula: str, citation: str) -> None:
        self.name, self.formula, self.citation = name, formula, citation


def _values(modules, formulas, probs=None):
    return prompt_values(
        symbol="EURUSD",
        timeframe="H1",
        ts_ns=1_500_000_000 * 10**9,
        bar={"open": 1.1, "high": 1.2, "low": 1.0, "close": 1.15, "volume": 10.0, "spread": 8e-5},
        direction="BUY",
        horizon=2,
        probs=probs,
        features={"ROC5": 0.5},
        modules=modules,
        formulas=formulas,
    )


def test_formulas_of_reads_each_modules_catalogue_entry():
    mods = [_Documented("a", "x + y", "Someone (1999)"), _Documented("b", "", "nobody"), _Documented("c", "z", "C")]
    assert formulas_of(mods) == {"a": "x + y (Someone (1999))", "c": "z (C)"}  # b documents no formula
    vpin = REGISTRY["vpin"]
    assert formulas_of([vpin]) == {"vpin": f"{vpin.formula} ({vpin.citation})"}


def test_the_prompt_shows_the_formulas_of_the_modules_shown_in_their_order():
    formulas = formulas_of([_Documented("a", "x + y", "S"), _Documented("c", "z", "C")])
    mods = [ModuleResult(n, 0.5, True, 0.9, "ok") for n in ("c", "b", "a")]
    v = _values(mods, formulas)
    assert v["formulas"] == "- c: z (C)\n- a: x + y (S)"  # b has no entry: no line
    assert v["modules"].splitlines()[0] == "- c: pass, score 0.5 (threshold 0.9): ok"
    assert _values(mods[1:2], formulas)["formulas"] == "(none)"
    assert _values([ModuleResult("a", math.nan, False, 0.9, "r")], formulas)["modules"] == (
        "- a: FAIL, score n/a (threshold 0.9): r"
    )


def test_the_proposal_lists_each_models_probability_in_order():
    probs = [ModelProbability("xgboost", 0.97), ModelProbability("catboost", 0.123456)]
    assert _values((), {}, probs)["proposal"].endswith("P(up): xgboost 0.97, catboost 0.1235.")
    assert _values((), {}, None)["proposal"].endswith("P(up): not available.")
