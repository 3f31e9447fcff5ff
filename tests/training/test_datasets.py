"""Training data: the time split never lets a test-period bar or label reach training (perturbation test), the
manifest is exact, completions are what the judge's grammar can produce, and certainty targets are base rates."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from llm_common import install_judge

from fxgate.engine import Bars, sample_bars
from fxgate.engine.config import DEFAULT_MODULES, GateConfig, L1Config, L2Config, L4Config
from fxgate.engine.gate import Gate
from fxgate.engine.layers import PromptFacts
from fxgate.engine.loader import load_bars
from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
from fxgate.models.labels import LabelSpec
from fxgate.models.llm import JudgeVerdict
from fxgate.models.prompt import formulas_of, load_template
from fxgate.modules import REGISTRY
from fxgate.training.datasets import SPLITS, DatasetError, SplitSpec, build, check_served_by
from fxgate.training.datasets.layer1 import L1Model
from fxgate.training.datasets.prompts import prompt_messages
from fxgate.training.datasets.scenarios import rows_for
from fxgate.training.datasets.spec import l4_hash

#: a served config without the slow modules, for the tests that build with a Layer-1 bundle (with one, SHAP in the
#: default list costs tens of ms a bar); the default list's parity is tested on fewer bars below
LIGHT = ("vpin", "bocpd", "regime", "uncertainty", "execution_cost", "adverse_selection", "robust_kelly")


def light(horizon: int) -> GateConfig:
    return GateConfig(horizon=horizon, l4=L4Config(modules=LIGHT))


# the judge's GBNF grammar, restated as a regular expression
NUM = r"(0(\.[0-9]{1,4})?|1(\.0{1,4})?)"
STR = r'"[\x20\x21\x23-\x5B\x5D-\x7E]{1,120}"'
ANSWER = re.compile(
    r'\{"direction": "(BUY|SELL|NONE)", "certainty": ' + NUM + r', "reasons": \[' + STR + r"(, " + STR + r"){0,2}\]\}"
)


def lines(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("ds")
    src = d / "EURUSD.csv"
    sample_bars().to_csv(src)
    m = build([src], d / "out", SplitSpec(horizon=3, spread=8e-5, embargo=5))
    return src, d / "out", m


def test_splits_respect_the_cuts_and_the_embargo(built):
    src, out, m = built
    t1, t2 = m["cuts"]["val_from_ns"], m["cuts"]["test_from_ns"]
    ts = np.asarray(sample_bars().ts)
    a, b = int(np.searchsorted(ts, t1)), int(np.searchsorted(ts, t2))
    for split, lo, hi in (("train", None, t1), ("val", ts[a + 5], t2), ("test", ts[b + 5], None)):
        for kind in ("features", "scenarios", "dpo"):
            rows = lines(out / split / f"{kind}.jsonl")
            assert rows, (split, kind)
            for r in rows:
                meta = r["meta"]
                assert meta["label_end_ts"] > meta["ts"]
                if lo is not None:
                    assert meta["ts"] >= lo
                if hi is not None:
                    assert meta["label_end_ts"] < hi  # the label window ends before the next split starts
    assert m["embargo_bars"] == 5 and m["horizon"] == 3


def test_no_future_bar_reaches_training(built, tmp_path):
    """Rewrite every bar from the validation cut on (prices and volumes): the training files must not change."""
    src, out, m = built
    bars = sample_bars()
    a = int(np.searchsorted(np.asarray(bars.ts), m["cuts"]["val_from_ns"]))
    rng = np.random.default_rng(7)
    f = np.ones(len(bars))
    f[a:] = np.exp(np.cumsum(rng.normal(0, 0.01, len(bars) - a)))
    vol = np.asarray(bars.volume, float).copy()
    vol[a:] = rng.integers(1, 5000, len(bars) - a)
    other = Bars(
        np.asarray(bars.ts),
        np.asarray(bars.open) * f,
        np.asarray(bars.high) * f,
        np.asarray(bars.low) * f,
        np.asarray(bars.close) * f,
        vol,
        symbol=bars.symbol,
        timeframe=bars.timeframe,
    )
    p = tmp_path / "EURUSD.csv"
    other.to_csv(p)
    m2 = build([p], tmp_path / "out", SplitSpec(horizon=3, spread=8e-5, embargo=5))
    assert m2["cuts"] == m["cuts"]
    new = tmp_path / "out"
    for kind in ("features", "scenarios", "dpo", "formulas"):
        assert (new / "train" / f"{kind}.jsonl").read_bytes() == (out / "train" / f"{kind}.jsonl").read_bytes()
    assert (new / "test" / "scenarios.jsonl").read_bytes() != (out / "test" / "scenarios.jsonl").read_bytes()
    assert m2["certainty_targets"] == m["certainty_targets"]


def test_manifest_is_exact(built):
    src, out, m = built
    s = m["sources"][0]
    assert s["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest() and s["bars"] == 5000
    for split in ("train", "val", "test"):
        for kind in ("features", "scenarios", "dpo"):
            assert m["counts"][split][kind] == len(lines(out / split / f"{kind}.jsonl"))
        assert s["splits"][split]["examples"] == m["counts"][split]["scenarios"]
    assert m["counts"]["train"]["formulas"] == len(lines(out / "train" / "formulas.jsonl"))
    tpl = load_template(L2Config().template)  # the template the served judge renders by default
    assert m["template"] == {"id": tpl.id, "sha256": tpl.sha256}
    for r in lines(out / "train" / "scenarios.jsonl")[:50]:
        assert list(r["values"]) == list(tpl.placeholders)  # what the template shows, nothing else
    # no config given: the prompts are the default served gate's (its 18 modules, SHAP included)
    d = GateConfig().l4
    assert m["serving"] == {
        "config": None,
        "l4": {"enabled": True, "modules": list(d.modules), "params": {}},
        "l4_hash": l4_hash(d),
    }
    assert len(d.modules) == 18 and "shap" in d.modules
    check_served_by(m, GateConfig())


def test_completions_are_grammar_answers_and_targets_are_base_rates(built):
    _, out, m = built
    train = lines(out / "train" / "scenarios.jsonl")
    n = len(train)
    same = sum(r["meta"]["target"] == r["meta"]["proposal"] for r in train) / n
    none = sum(r["meta"]["target"] == "NONE" for r in train) / n
    c = m["certainty_targets"]
    assert c["same"] == pytest.approx(same) and c["none"] == pytest.approx(none)
    for split in ("train", "test"):
        for r in lines(out / split / "scenarios.jsonl")[:500]:
            think, answer = r["completion"].split("\n</think>\n\n")
            assert ANSWER.fullmatch(answer), answer
            a = json.loads(answer)
            meta = r["meta"]
            assert a["direction"] == meta["target"]
            move, sp = meta["move"], meta["spread"]
            assert meta["target"] == ("BUY" if move > sp else "SELL" if -move > sp else "NONE")
            exp = same if meta["target"] == meta["proposal"] else none if meta["target"] == "NONE" else 1 - same - none
            assert a["certainty"] == pytest.approx(exp, abs=1e-4)
            assert f"{meta['move']:.6f}" not in think  # the reasoning is built from inputs only
            assert r["prompt"][0]["role"] == "system" and meta["proposal"] in r["prompt"][1]["content"]
    for r in lines(out / "train" / "dpo.jsonl")[:500]:
        c = json.loads(r["chosen"].split("</think>\n\n")[1])
        w = json.loads(r["rejected"].split("</think>\n\n")[1])
        assert c["direction"] == r["meta"]["target"] != w["direction"] and w["certainty"] == 0.99
        assert ANSWER.fullmatch(r["rejected"].split("</think>\n\n")[1])


def test_scenario_prompt_tokenizes_like_serving(built, nano):
    """Prompt + completion, rendered by the served model's chat template, is exactly the token sequence the live
    judge has in its context after generating that answer."""
    from fxgate.models.llm import LlmRuntime, LlmSettings
    from fxgate.models.prompt import render_chat

    _, out, _ = built
    rt = LlmRuntime(LlmSettings(model=str(nano["q8"]), n_ctx=4096))
    r = lines(out / "test" / "scenarios.jsonl")[0]
    text = render_chat(rt.chat_template, r["prompt"], bos_token=rt.bos_token, eos_token=rt.eos_token)
    assert text.endswith("<｜Assistant｜><think>\n")
    think, answer = r["completion"].split("\n</think>\n\n")
    served = rt.tokenize(text) + rt.tokenize(think + "\n") + rt.tokenize("</think>\n\n") + rt.tokenize(answer)
    assert rt.tokenize(text + r["completion"]) == served
    rt.close()


def test_bundle_past_the_cut_is_refused_and_one_before_it_is_used(built, tmp_path):
    from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
    from fxgate.models.labels import LabelSpec

    src, _, m = built
    bars = sample_bars()
    a = int(np.searchsorted(np.asarray(bars.ts), m["cuts"]["val_from_ns"]))
    late = TreeEnsemble()
    late.fit(bars[: a + 200], LabelSpec("next", 3), EnsembleConfig(n_estimators=10, folds=1), evaluate=False)
    late.save(tmp_path / "late")
    with pytest.raises(DatasetError, match="past the validation cut"):
        build([src], tmp_path / "x", SplitSpec(horizon=3), bundle=tmp_path / "late", config=light(3))
    early = TreeEnsemble()
    early.fit(bars[: a - 100], LabelSpec("next", 3), EnsembleConfig(n_estimators=10, folds=1), evaluate=False)
    early.save(tmp_path / "early")
    m2 = build([src], tmp_path / "y", SplitSpec(horizon=3), bundle=tmp_path / "early", config=light(3))
    rows = lines(tmp_path / "y" / "test" / "scenarios.jsonl")
    assert rows and all(set(r["meta"]["probs"]) == {"xgboost", "lightgbm", "catboost"} for r in rows)
    for r in rows:  # the proposal is Layer 1's candidate direction
        ps = list(r["meta"]["probs"].values())
        assert r["meta"]["proposal"] == ("BUY" if min(ps) >= 0.5 else "SELL") and (min(ps) >= 0.5 or max(ps) < 0.5)
    assert m2["bundle"]["sha256"] == early.bundle_hash
    with pytest.raises(DatasetError, match=r"predicts 3 bar\(s\) ahead, the scenarios ask about 1"):
        build([src], tmp_path / "z", SplitSpec(horizon=1), bundle=tmp_path / "early", config=light(1))


def test_bad_inputs_name_the_fix(tmp_path):
    with pytest.raises(DatasetError, match="embargo = 2 bars is shorter than the horizon"):
        SplitSpec(horizon=3, embargo=2)
    with pytest.raises(DatasetError, match="no bar files given"):
        build([], tmp_path, SplitSpec())
    p = tmp_path / "short.csv"
    sample_bars()[:300].to_csv(p)
    with pytest.raises(DatasetError, match="needs at least 500"):
        build([p], tmp_path / "o", SplitSpec())


def test_two_pairs_share_one_calendar_cut(tmp_path):
    a, b = tmp_path / "A.csv", tmp_path / "B.csv"
    sample_bars()[:3000].to_csv(a)
    sample_bars()[1000:].to_csv(b)
    m = build([a, b], tmp_path / "o", SplitSpec(horizon=1))
    t1 = m["cuts"]["val_from_ns"]
    for r in lines(tmp_path / "o" / "train" / "scenarios.jsonl"):
        assert r["meta"]["label_end_ts"] < t1
    assert {r["meta"]["source"] for r in lines(tmp_path / "o" / "train" / "scenarios.jsonl")} == {0, 1}


# -- Layer-1 probabilities in training prompts are out of fold (#12.3) ---------------------------------------------
OOF_BARS = 2500


def _oof_build(bars, d, name):
    """A user's workflow: fit a bundle on bars before the validation cut, then build the data with it."""
    from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
    from fxgate.models.labels import LabelSpec

    src = d / f"{name}.csv"
    bars.to_csv(src)
    spec = SplitSpec(horizon=3, spread=8e-5)
    ts = np.asarray(bars.ts)
    t1 = int(np.sort(ts)[int(len(ts) * (1 - spec.val_frac - spec.test_frac))])
    a = int(np.searchsorted(ts, t1))
    ens = TreeEnsemble()
    ens.fit(bars[: a - 50], LabelSpec("next", 3), EnsembleConfig(n_estimators=8, folds=2), evaluate=False)
    ens.save(d / f"{name}-bundle")
    m = build([src], d / f"{name}-data", spec, bundle=d / f"{name}-bundle", config=light(3))
    return m, d / f"{name}-data", ens


@pytest.fixture(scope="module")
def oof(tmp_path_factory):
    d = tmp_path_factory.mktemp("oof")
    bars = sample_bars()[:OOF_BARS]
    m, out, ens = _oof_build(bars, d, "EURUSD")
    return bars, m, out, ens, d


@pytest.mark.slow
def test_training_probabilities_come_from_a_model_fitted_strictly_before_the_bar(oof):
    """Each training scenario's P(up) equals that of a model fitted, independently here, on bars that end at least
    the purge (the label horizon) before the scenario's bar — not the bundle, which saw the scenario's label."""
    from fxgate.models.ensemble import TreeEnsemble
    from fxgate.models.features import FeatureEngine

    bars, m, out, ens, _ = oof
    ts = np.asarray(bars.ts)
    rows = lines(out / "train" / "scenarios.jsonl")
    assert len(rows) > 200
    x = FeatureEngine(bars.timeframe).batch(bars)
    by_fit: dict[int, list] = {}
    for r in rows:
        i = int(np.searchsorted(ts, r["meta"]["ts"]))
        c = r["meta"]["layer1"]["fit_bars"]
        assert c + ens.label_spec.horizon <= i, (i, c)  # every label the model saw ended before the bar
        by_fit.setdefault(c, []).append((i, r))
    assert len(by_fit) == 2  # the bundle's two walk-forward blocks
    bundle_differs = 0
    for c, rs in by_fit.items():
        ref = TreeEnsemble()
        ref.fit(bars[:c], ens.label_spec, ens.config, evaluate=False)
        for i, r in rs[:: max(1, len(rs) // 25)]:
            want = ref.predict_row(x[i])
            got = [r["meta"]["probs"][k] for k in ("xgboost", "lightgbm", "catboost")]
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
            bundle_differs += not np.allclose(ens.predict_row(x[i]), want, atol=1e-6)
    assert bundle_differs > 0  # the in-sample bundle would have shown other numbers
    # validation and test scenarios: the bundle, trained before the cut
    for r in lines(out / "test" / "scenarios.jsonl")[:20]:
        i = int(np.searchsorted(ts, r["meta"]["ts"]))
        assert r["meta"]["layer1"]["model"] == "bundle"
        np.testing.assert_allclose(list(r["meta"]["probs"].values()), ens.predict_row(x[i]), atol=1e-12)
    assert [s["model"] for s in m["sources"][0]["layer1_oof"]] == ["oof-1", "oof-2"]


@pytest.mark.slow
def test_perturbing_a_training_rows_label_does_not_move_its_prompt(oof, tmp_path):
    """Rewrite every bar after one training scenario (its label window included) and refit the bundle as a user
    would: that scenario's prompt — probabilities included — and every earlier one stay byte-identical. With
    in-sample probabilities (a bundle fitted on the whole training split) they would all move."""
    bars, m, out, _, _ = oof
    rows = lines(out / "train" / "scenarios.jsonl")
    ts = np.asarray(bars.ts)
    a = int(np.searchsorted(ts, m["cuts"]["val_from_ns"]))
    # the last scenario well inside the bundle's fit window (bars before a - 50): a bundle fitted on the whole
    # training split saw its label
    inside = [r for r in rows if np.searchsorted(ts, r["meta"]["ts"]) < a - 100]
    assert inside, "no training scenario inside the bundle's fit window"
    pick = inside[-1]
    j = int(np.searchsorted(ts, pick["meta"]["ts"])) + 1  # bars from j on change: pick's label changes
    f = np.ones(len(bars))
    f[j:] = np.exp(np.cumsum(np.random.default_rng(3).normal(0, 0.004, len(bars) - j)))
    other = Bars(
        ts,
        np.asarray(bars.open) * f,
        np.asarray(bars.high) * f,
        np.asarray(bars.low) * f,
        np.asarray(bars.close) * f,
        np.asarray(bars.volume),
        symbol=bars.symbol,
        timeframe=bars.timeframe,
    )
    m2, out2, _ = _oof_build(other, tmp_path, "EURUSD")
    assert m2["cuts"] == m["cuts"]
    new = {r["meta"]["ts"]: r for r in lines(out2 / "train" / "scenarios.jsonl")}
    before = [r for r in rows if r["meta"]["ts"] <= pick["meta"]["ts"]]
    assert len(before) > 100
    for r in before:
        twin = new[r["meta"]["ts"]]
        assert twin["prompt"] == r["prompt"] and twin["meta"]["probs"] == r["meta"]["probs"]
    assert new[pick["meta"]["ts"]]["meta"]["move"] != pick["meta"]["move"]  # its label did change


# -- imports cannot smuggle validation/test-period bars into training (#12.3) -------------------------------------
def test_an_import_dated_after_the_cut_is_refused_before_anything_is_written(built, tmp_path):
    src, out, m = built
    smuggled = lines(out / "test" / "dpo.jsonl")[0]  # fxgate's own test pair, fed back in as "my data"
    j = tmp_path / "mine.jsonl"
    j.write_text(json.dumps(smuggled) + "\n" + json.dumps({"instruction": "q", "output": "a"}) + "\n")
    with pytest.raises(DatasetError, match=r"mine.jsonl:1: dated .* at or after the validation cut"):
        build([src], tmp_path / "o", SplitSpec(horizon=3, spread=8e-5, embargo=5), jsonl=[j])
    assert not (tmp_path / "o").exists()


def test_dated_imports_are_routed_out_of_training_with_skip_bad(built, tmp_path):
    from fxgate.training.imports import import_jsonl

    _, out, m = built
    t1 = m["cuts"]["val_from_ns"]
    day = str(np.datetime64(t1, "ns"))[:10]
    before = str(np.datetime64(t1 - 3 * 86_400 * 10**9, "ns"))[:16].replace("T", " ")
    j = tmp_path / "mine.jsonl"
    recs = [
        lines(out / "test" / "dpo.jsonl")[0],  # meta.ts after the cut
        {"prompt": "p", "chosen": "c", "rejected": "r", "meta": {"ts": t1}},  # exactly at the cut
        {"instruction": f"EURUSD on {day}: buy?", "output": "no"},  # a date-only text: the whole day
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "ts": t1 + 1},
        {"instruction": f"EURUSD at {before}: buy?", "output": "no"},  # before the cut: kept
        {"instruction": "What is VPIN?", "output": "toxicity"},
    ]
    j.write_text("".join(json.dumps(r) + "\n" for r in recs))
    r = import_jsonl([j], tmp_path / "imp", skip_bad=True, cut_ns=t1)
    assert r["sources"][0]["after_cut"] == 4 and r["written"] == {"sft": 2, "dpo": 0}
    kept = lines(tmp_path / "imp" / "imported_sft.jsonl")
    assert [k["messages"][0]["content"] for k in kept] == [f"EURUSD at {before}: buy?", "What is VPIN?"]
    assert all("validation cut" in p for p in r["problems"])


# -- a failed build leaves the previous one untouched (#13.6) -------------------------------------------------------
def _snapshot(d):
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_a_failed_build_leaves_the_previous_build_byte_identical(built, tmp_path, monkeypatch):
    import shutil

    from fxgate.training.datasets import builder

    src, out, _ = built
    d = tmp_path / "data"
    shutil.copytree(out, d)
    before = _snapshot(d)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "q", "output": "a"}\n{"instruction": "no output"}\n')
    with pytest.raises(DatasetError, match="bad.jsonl:2: output: missing"):
        build([src], d, SplitSpec(horizon=1, spread=1e-4), jsonl=[bad])
    assert _snapshot(d) == before
    calls = {"n": 0}
    real = builder.rejected

    def dies(r):
        calls["n"] += 1
        if calls["n"] == 1500:
            raise OSError(28, "No space left on device")
        return real(r)

    monkeypatch.setattr(builder, "rejected", dies)
    with pytest.raises(OSError, match="No space left"):
        build([src], d, SplitSpec(horizon=1, spread=1e-4))
    assert calls["n"] == 1500 and _snapshot(d) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "data"]  # no temporary directory left
    from fxgate.training.pipeline import verify

    assert verify(d) == []


def test_a_data_directory_verifies_and_its_inputs_are_checked_first(built, tmp_path):
    import shutil

    from fxgate.training.pipeline import verify

    src, out, m = built
    assert verify(out) == [] and set(m["files"]) >= {"train/scenarios.jsonl", "test/dpo.jsonl"}
    d = tmp_path / "copy"
    shutil.copytree(out, d)
    with (d / "val" / "dpo.jsonl").open("a") as fh:
        fh.write("{}\n")
    assert verify(d)[0].startswith("val/dpo.jsonl: ")
    old = json.loads((d / "manifest.json").read_text())
    del old["files"], old["kind"]
    (d / "manifest.json").write_text(json.dumps(old))
    assert "`fxgate train data` manifest" in verify(d)[0]
    with pytest.raises(DatasetError, match="the same bars as"):
        build([src, src], tmp_path / "x", SplitSpec())
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not a `fxgate train data` build"):
        build([src], tmp_path / "mine", SplitSpec())
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


class _Recorder(PromptFacts):
    """The gate's own PromptFacts, keeping the prompt values of each bar it asks the judge about."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.seen: dict[int, dict[str, str]] = {}

    def values(self, c):
        v = super().values(c)
        self.seen[int(c.bar.ts)] = v
        return v


class _Yes:
    """Passes every bar, so the recording gate decides (and its modules learn) exactly as the builder's."""

    def judge(self, values, direction, *, timeout_s=None):
        return JudgeVerdict(True, direction, 1.0, "recorded", None)


V1_SIZE = (
    "judge.v1's proposal shows the size the served gate has sized (0 on a vetoed bar in full mode); the builder "
    "knows no size. judge.v2 does not show the judge a size (the risk manager is the one that cuts it)"
)
#: a served config with its own module list and parameters (not a prefix of the default order)
CUSTOM = GateConfig(
    l4=L4Config(
        modules=("execution_cost", "bocpd", "vpin", "robust_kelly"),
        params={"vpin": {"quantile": 0.8}, "bocpd": {"threshold": 0.4}},
    )
)


def _served_and_built(bars, serving, template, mode="full"):
    """The builder's scenarios (rows_for with ``serving``) and the prompt values the served code path builds for
    its judge on the same bars: a Gate of ``serving`` itself (Layer 2 on, its threshold 0 so that it decides as
    the builder's gate does), with the gate's own PromptFacts recording what the judge is asked."""
    ens = TreeEnsemble()
    ens.fit(bars[:450], LabelSpec("next", 1), EnsembleConfig(n_estimators=10, max_depth=3), evaluate=False)
    spec = SplitSpec(horizon=1, spread=8e-5)
    rows = rows_for(bars, 0, spec, [L1Model(0, ens, {"model": "bundle"})], True, None, serving)
    cfg = dataclasses.replace(
        serving,
        spread=8e-5,
        mode=mode,
        l1=dataclasses.replace(serving.l1, enabled=True),
        l2=dataclasses.replace(serving.l2, enabled=True, threshold=0.0, template=template),
        l3=dataclasses.replace(serving.l3, enabled=False),
    )
    g = Gate(cfg, None, timeframe=bars.timeframe, symbol=bars.symbol)
    g.warm_up()
    g.set_ensemble(ens)
    facts = _Recorder(g.symbol, g.timeframe, cfg.horizon, g.modules, g.features.names)
    install_judge(g, cfg, _Yes(), facts)
    for i in range(len(bars)):
        g.evaluate(bars[i])
    g.close()
    return rows, facts.seen, g


def _assert_same_prompts(tpl, rows, seen):
    for r in rows:
        ours, served = prompt_messages(tpl, r.values), prompt_messages(tpl, seen[r.ts])
        diff = [
            (a, b)
            for a, b in zip(ours[1]["content"].split("\n"), served[1]["content"].split("\n"), strict=True)
            if a != b
        ]
        assert ours == served, (np.datetime64(r.ts, "ns"), diff[:3])


#: the default config with model_confidence_set judging Layer 1 without the judge's own past answers
NO_LLM_MCS = GateConfig(l4=L4Config(params={"model_confidence_set": {"include_llm": False}}))


@pytest.mark.parametrize(
    ("serving", "template", "n"),
    [
        pytest.param(NO_LLM_MCS, "judge.v2", 900, id="default-modules-v2"),
        pytest.param(CUSTOM, "judge.v2", 800, id="custom-v2"),
        pytest.param(CUSTOM, "judge.v1", 800, id="custom-v1", marks=pytest.mark.xfail(strict=True, reason=V1_SIZE)),
    ],
)
def test_the_builder_renders_the_prompt_the_gate_serves(serving, template, n):
    """Train/serve parity on real bars: the scenarios' judge prompt (rows_for -> prompt_values) is byte for byte
    the prompt a gate of the same serving config and Layer-1 model builds for its judge on the same bar, static
    prefix (the configured modules' formula catalogue) included — for the default 18 modules (SHAP included) and
    for a custom module list with its own parameters."""
    bars = sample_bars()[:n]
    rows, seen, g = _served_and_built(bars, serving, template)
    assert [m.name for m in g.modules] == list(serving.l4.modules)
    tpl = load_template(template)
    both = [r for r in rows if r.ts in seen]
    assert len(rows) >= 100 and len(both) == len(rows)  # every scenario is a bar the served judge is asked about
    assert all([m.name for m in r.modules] == list(serving.l4.modules) for r in rows)
    _assert_same_prompts(tpl, both, seen)
    if tpl.version >= 2:
        assert formulas_of(g.modules)  # the catalogue is shown, and the same on every bar
        assert len({prompt_messages(tpl, r.values)[1]["content"].split("## This bar")[0] for r in both}) == 1


def test_the_default_config_differs_only_where_a_module_reads_the_judges_own_answers():
    """The default config itself: model_confidence_set (include_llm = true) puts the served judge's past answers
    in its test once min_rows (100) of its window's matured bars carry one. The builder has no judge, so until
    then every prompt is the served one byte for byte, and after it every line but that module's still is."""
    bars = sample_bars()[:900]
    serving = GateConfig()
    assert serving.l4.modules == DEFAULT_MODULES and "model_confidence_set" in serving.l4.modules
    rows, seen, _ = _served_and_built(bars, serving, "judge.v2")
    tpl = load_template("judge.v2")
    assert len(rows) >= 150 and all(r.ts in seen for r in rows)
    need = REGISTRY["model_confidence_set"].defaults["min_rows"]
    _assert_same_prompts(tpl, rows[:need], seen)  # the judge has not answered on min_rows matured bars yet
    for r in rows[need:]:
        ours, served = prompt_messages(tpl, r.values), prompt_messages(tpl, seen[r.ts])
        keep = [x for x in ours[1]["content"].split("\n") if not x.startswith("model_confidence_set ")]
        assert keep == [x for x in served[1]["content"].split("\n") if not x.startswith("model_confidence_set ")]
        assert ours[0] == served[0]


def test_a_cheapest_mode_served_judge_sees_the_builders_prompt_on_the_bars_it_is_asked_about():
    """A served gate in cheapest mode asks its judge only on bars where every module passed; on each of those the
    builder (full mode) has a scenario with the same prompt. (The builder also has scenarios for the bars such a
    gate vetoes before its judge: the README says so.)"""
    bars = sample_bars()[:800]
    serving = GateConfig(l1=L1Config(threshold=0.5), l4=L4Config(modules=("execution_cost", "bocpd")))
    rows, seen, _ = _served_and_built(bars, serving, "judge.v2", mode="cheapest")
    by_ts = {r.ts: r for r in rows}
    asked = set(seen) - {int(bars.ts[-1])}  # the last bar has no outcome yet, so no scenario
    assert 100 <= len(asked) < len(rows) and asked <= set(by_ts)  # some scenarios are bars it vetoed
    _assert_same_prompts(load_template("judge.v2"), [by_ts[t] for t in sorted(asked)], seen)


def test_build_stores_the_prompts_of_the_config_it_is_given_and_records_it(tmp_path):
    """build(config=...) threads the serving config to every stored prompt: the module lines and the formula
    catalogue are those of its modules (none of the default's others), equal to the scenarios of that config
    (which the test above ties to the served prompt); the manifest records the [l4] section and its hash, and
    check_served_by refuses a serving config with another [l4]."""
    src = tmp_path / "EURUSD.csv"
    sample_bars()[:1200].to_csv(src)
    spec = SplitSpec(horizon=1, spread=8e-5)
    m = build([src], tmp_path / "out", spec, config=CUSTOM, config_source="custom.toml")
    assert m["serving"] == {
        "config": "custom.toml",
        "l4": {"enabled": True, "modules": list(CUSTOM.l4.modules), "params": CUSTOM.l4.params},
        "l4_hash": l4_hash(CUSTOM.l4),
    }
    tpl = load_template(CUSTOM.l2.template)
    rows = {r.ts: r for r in rows_for(load_bars(src), 0, spec, [], False, None, CUSTOM)}
    stored = [x for s in SPLITS for x in lines(tmp_path / "out" / s / "scenarios.jsonl")]
    assert len(stored) >= 300
    formulas = formulas_of(Gate(CUSTOM, None, timeframe="H1").modules)
    others = formulas_of(Gate(GateConfig(), None, timeframe="H1").modules)
    for x in stored:
        r = rows[x["meta"]["ts"]]
        assert x["prompt"] == prompt_messages(tpl, {k: r.values[k] for k in tpl.placeholders})
        text = x["prompt"][1]["content"]
        assert all(f in text for f in formulas.values())
        assert not any(f in text for n, f in others.items() if n not in CUSTOM.l4.modules)
    check_served_by(m, CUSTOM)
    check_served_by(m, dataclasses.replace(CUSTOM, horizon=1, spread=1e-4))  # only [l4] is compared
    with pytest.raises(DatasetError, match=r"\[l4\] does not match.*trained on.*--config"):
        check_served_by(m, GateConfig())
    params = dataclasses.replace(CUSTOM.l4, params={**CUSTOM.l4.params, "vpin": {"quantile": 0.7}})
    with pytest.raises(
        DatasetError, match=r"\[l4\.params\.vpin\] quantile = 0\.8 was trained on, 0\.7 would be served"
    ):
        check_served_by(m, dataclasses.replace(CUSTOM, l4=params))
    with pytest.raises(DatasetError, match="records no serving"):
        check_served_by({k: v for k, v in m.items() if k != "serving"}, CUSTOM)


def test_a_config_for_another_judge_is_refused_before_anything_is_read(tmp_path):
    src = tmp_path / "missing.csv"  # never read: the config is checked first
    for cfg, key in (
        (dataclasses.replace(CUSTOM, horizon=3), "horizon = 3"),
        (dataclasses.replace(CUSTOM, llm=dataclasses.replace(CUSTOM.llm, n_ctx=8192)), r"\[llm\] n_ctx = 8192"),
    ):
        with pytest.raises(DatasetError, match=key + ".*Fix:"):
            build([src], tmp_path / "o", SplitSpec(horizon=1), config=cfg)
    assert not (tmp_path / "o").exists()
