"""The prompt's values from typed layer records: the formula lines come from the modules' own catalogue entries
(``formulas_of``), in the order the modules are shown, and nothing of fxgate.training is needed to build them.

The compact (version 2) templates on real bars that a gate asks its judge about: the static prefix is
byte-identical across bars (the formula catalogue of the configured modules is in it), every per-bar value can be
read back from the per-bar part, that part is smaller than version 1's for the same bar, and the budget still drops
sections least important first."""

from __future__ import annotations

import math
import re

import pytest
from llm_common import install_judge

from fxgate.engine import sample_bars
from fxgate.engine.config import GateConfig, L1Config, L2Config, L3Config, L4Config
from fxgate.engine.core.records import ModelProbability, ModuleResult
from fxgate.engine.gate import Gate
from fxgate.engine.layers import PromptFacts
from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
from fxgate.models.labels import LabelSpec
from fxgate.models.llm import JudgeVerdict, load_llama
from fxgate.models.prompt import (
    KEY_FEATURES,
    R1_CHAT_TEMPLATE,
    ContextOverflow,
    TemplateError,
    build_prompt,
    first_clause,
    formulas_of,
    load_template,
    module_line,
    prompt_values,
)
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


# -- the compact (version 2) templates on real bars ----------------------------------------------------------------
ROLES = ("judge", "bull", "bear", "risk")
BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
#: cheap modules (each with an opinion within the bars replayed) and small windows
MODS = ("vpin", "bocpd", "execution_cost", "adverse_selection", "robust_kelly", "bayesian_sizing")
PARAMS = {"vpin": {"min_history": 20, "history": 100}, "bocpd": {"calib_bars": 50}}
JUDGE = "BUY, certainty 0.97: ROC20 and SUMP20 agree"
TRANSCRIPT = "Round 1, bull (confidence 0.96):\n- every P(up) above 0.5 (strength 0.7)"


class _Recorder(PromptFacts):
    """The gate's own PromptFacts, keeping what each asked bar's prompt was built from."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.seen: list[dict] = []

    def values(self, c):
        v = super().values(c)
        self.seen.append(
            {"values": v, "bar": c.bar, "spread": c.spread, "direction": c.proposed, "size": c.size}
            | {
                "probs": c.model_probabilities(),
                "modules": c.modules,
                "features": dict(zip(self.names, map(float, c.features), strict=True)),
            }
        )
        return v


class _Yes:
    def judge(self, values, direction, *, timeout_s=None):
        return JudgeVerdict(True, direction, 1.0, "recorded", None)


@pytest.fixture(scope="module")
def gate_bars():
    """Real EURUSD H1 bars through a gate (full mode, Layer 1 out of sample from bar 500) whose judge records the
    prompt values the gate builds: what the LLM layers are served."""
    bars = sample_bars()[:900]
    ens = TreeEnsemble()
    ens.fit(bars[:500], LabelSpec("next", 1), EnsembleConfig(n_estimators=10, max_depth=3), evaluate=False)
    cfg = GateConfig(
        horizon=2,
        mode="full",
        spread=8e-5,
        l1=L1Config(threshold=0.5),
        l4=L4Config(modules=MODS, params=PARAMS),
        l2=L2Config(enabled=True, threshold=0.0),
        l3=L3Config(enabled=False),
    )
    g = Gate(cfg, ens, timeframe=bars.timeframe, symbol=bars.symbol)
    facts = _Recorder(g.symbol, g.timeframe, cfg.horizon, g.modules, g.features.names)
    install_judge(g, cfg, _Yes(), facts)
    for i in range(len(bars)):
        g.evaluate(bars[i])
    g.close()
    assert len(facts.seen) >= 50 and any(not m.passed for s in facts.seen for m in s["modules"])
    return {"seen": facts.seen, "formulas": formulas_of(g.modules), "modules": [m.name for m in g.modules]}


def _render(role: str, version: int, values: dict, count=len, budget: int = 10**9):
    v = dict(values, judge=JUDGE, transcript=TRANSCRIPT if role == "risk" else "(no turns yet)")
    tpl = load_template(f"{role}.v{version}")
    return build_prompt(
        tpl, v, chat_template=R1_CHAT_TEMPLATE, bos_token=BOS, eos_token=EOS, count_tokens=count, budget=budget
    )


@pytest.mark.parametrize("role", ROLES)
def test_the_static_prefix_is_byte_identical_across_bars_and_the_bar_comes_after_it(gate_bars, role):
    seen = gate_bars["seen"]
    a, b = _render(role, 2, seen[0]["values"]), _render(role, 2, seen[-1]["values"])
    assert a.text != b.text and a.prefix_text and a.prefix_text == b.prefix_text
    for p in (a, b):
        assert p.text.startswith(p.prefix_text) and not p.dropped
        assert p.text[len(p.prefix_text) :].startswith("## This bar\n")  # the first per-bar section follows it
    if role == "judge":  # the formula catalogue of every configured module is in the prefix, none after it
        assert list(gate_bars["formulas"]) == gate_bars["modules"]  # each of these modules documents a formula
        for name, text in gate_bars["formulas"].items():
            assert f"\n- {name}: {text}\n" in a.prefix_text
            assert text not in a.text[len(a.prefix_text) :]


def _num(s: str) -> float:
    return math.nan if s in ("n/a", "none") else float(s)


def _close(text: str, x: float, rel: float) -> bool:
    v = _num(text)
    return (math.isnan(v) and not math.isfinite(x)) or math.isclose(v, x, rel_tol=rel, abs_tol=1e-12)


@pytest.mark.parametrize("role", ROLES)
def test_the_per_bar_part_carries_every_value(gate_bars, role):
    """Parse each bar's per-bar text back: direction, horizon, each model's P(up), each module's verdict, score and
    threshold, the key features and the bar's prices, to the digits shown."""
    for s in gate_bars["seen"][:: max(1, len(gate_bars["seen"]) // 25)]:
        p = _render(role, 2, s["values"])
        sections = dict(
            x.split("\n", 1)
            for x in p.text[len(p.prefix_text) :].removesuffix("<｜Assistant｜><think>\n").split("\n\n## ")
        )
        bar_line, prop = sections["## This bar"].split("\n")
        b = s["bar"]
        got = dict(re.findall(r"(open|high|low|close|volume|spread) (\S+)", bar_line))
        want = {"open": b.open, "high": b.high, "low": b.low, "close": b.close, "volume": b.volume}
        assert all(_close(got[k], x, 1e-5) for k, x in want.items()) and _close(got["spread"], s["spread"], 5e-3)
        m = re.fullmatch(r"Proposal: (BUY|SELL) over (\d+) bars?; P\(up\) (.+?)(; size (\S+) of capital)?", prop)
        assert m and m[1] == s["direction"] and int(m[2]) == 2
        probs = dict(x.split(" ") for x in m[3].split(", "))
        assert list(probs) == [q.model for q in s["probs"]] == ["xgboost", "lightgbm", "catboost"]
        assert all(_close(probs[q.model], q.p_up, 5e-3) for q in s["probs"])
        assert (m[5] is None) == (role == "judge")  # the size is for the debate (the risk manager cuts it)
        if m[5] is not None:
            assert _close(m[5], s["size"], 5e-4)
        lines = sections["Checks"].split("\n")
        assert len(lines) == len(s["modules"])
        for line, r in zip(lines, s["modules"], strict=True):
            mm = re.fullmatch(r"(\w+) (pass|FAIL) (\S+)/(\S+?)(: (.+))?", line)
            assert mm and mm[1] == r.name and (mm[2] == "pass") == r.passed, line
            assert _close(mm[3], r.score, 5e-3) and _close(mm[4], r.threshold, 5e-3), line
            assert (mm[6] is None) == r.passed and (r.passed or r.reason.startswith(mm[6])), line
        if role != "risk":
            feats = dict(x.split(" ") for x in sections["Features"].split(", "))
            assert list(feats) == list(KEY_FEATURES)
            assert all(_close(feats[k], s["features"][k], 5e-3) for k in KEY_FEATURES)


@pytest.mark.parametrize("role", ROLES)
def test_the_per_bar_part_is_smaller_than_version_1s(gate_bars, nano, role):
    """Tokens of the served model's tokenizer (the nano GGUF's, through llama.cpp), v1 against v2 for the same bar:
    the per-bar part (what each call evaluates) shrinks, the prompt as a whole too."""
    llm = load_llama(nano["q8"], vocab_only=True)

    def count(text: str) -> int:
        return len(llm.tokenize(text.encode(), add_bos=False, special=True))

    for s in gate_bars["seen"][::10]:
        old, new = _render(role, 1, s["values"], count), _render(role, 2, s["values"], count)
        per_old, per_new = old.n_tokens - count(old.prefix_text), new.n_tokens - count(new.prefix_text)
        assert per_new < 0.75 * per_old and new.n_tokens < old.n_tokens, (role, per_old, per_new)


def test_the_budget_drops_version_2_sections_least_important_first(gate_bars):
    values = gate_bars["seen"][-1]["values"]
    p, order = _render("judge", 2, values), []
    while True:
        try:
            p = _render("judge", 2, values, budget=p.n_tokens - 1)
        except ContextOverflow:
            break
        order = list(p.dropped)
        assert p.text.startswith(p.prefix_text) and "## This bar" in p.text
    assert order == ["formulas", "glossary", "features", "modules"]
    assert "formula catalogue" not in p.prefix_text and p.sections == ("instructions", "bar")


def test_a_static_section_may_use_only_configuration_values(tmp_path):
    base = 'name = "judge"\nversion = 9\noutput = "judge"\nsystem = "s"\n[[section]]\nname = "a"\nstatic = true\n'
    ok = tmp_path / "ok.toml"
    ok.write_text(base + 'text = "{catalogue}"\n')
    assert load_template(ok).placeholders == ("catalogue",)
    bad = tmp_path / "bad.toml"
    bad.write_text(base + 'text = "{catalogue} {bar_line}"\n')
    with pytest.raises(TemplateError, match=r"placeholder with a per-bar value \(\{bar_line\}\)"):
        load_template(bad)
    with pytest.raises(TemplateError, match="Bundled templates: bear.v1, bull.v1, judge.v1, risk.v1, bear.v2, bull.v2"):
        load_template("judge.v0")


def test_a_module_line_is_name_verdict_score_and_threshold_with_a_failed_modules_first_clause():
    assert module_line(ModuleResult("vpin", 0.51579, True, 0.72016, "VPIN 0.516 <= 0.720")) == "vpin pass 0.516/0.72"
    r = ModuleResult("q", math.nan, False, 0.0, "a (x; y) [1; 2] ok; the rest; more")
    assert module_line(r) == "q FAIL none/0: a (x; y) [1; 2] ok"
    assert first_clause("no clause") == "no clause"
