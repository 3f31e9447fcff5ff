"""Training data: the time split never lets a test-period bar or label reach training (perturbation test), the
manifest is exact, completions are what the judge's grammar can produce, and certainty targets are base rates."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from fxgate.engine import Bars, sample_bars
from fxgate.training.datasets import DatasetError, SplitSpec, build

# the judge's GBNF grammar, restated as a regular expression
NUM = r"(0(\.[0-9]{1,4})?|1(\.0{1,4})?)"
STR = r'"[\x20\x21\x23-\x5B\x5D-\x7E]{1,120}"'
ANSWER = re.compile(r'\{"direction": "(BUY|SELL|NONE)", "certainty": ' + NUM + r', "reasons": \[' + STR
                    + r"(, " + STR + r"){0,2}\]\}")  # fmt: skip


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
    other = Bars(np.asarray(bars.ts), np.asarray(bars.open) * f, np.asarray(bars.high) * f, np.asarray(bars.low) * f,
                 np.asarray(bars.close) * f, vol, symbol=bars.symbol, timeframe=bars.timeframe)  # fmt: skip
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
    assert m["template"]["id"] == "judge.v1"


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
        build([src], tmp_path / "x", SplitSpec(horizon=3), bundle=tmp_path / "late")
    early = TreeEnsemble()
    early.fit(bars[: a - 100], LabelSpec("next", 3), EnsembleConfig(n_estimators=10, folds=1), evaluate=False)
    early.save(tmp_path / "early")
    m2 = build([src], tmp_path / "y", SplitSpec(horizon=3), bundle=tmp_path / "early")
    rows = lines(tmp_path / "y" / "test" / "scenarios.jsonl")
    assert rows and all(set(r["meta"]["probs"]) == {"xgboost", "lightgbm", "catboost"} for r in rows)
    for r in rows:  # the proposal is Layer 1's candidate direction
        ps = list(r["meta"]["probs"].values())
        assert r["meta"]["proposal"] == ("BUY" if min(ps) >= 0.5 else "SELL") and (min(ps) >= 0.5 or max(ps) < 0.5)
    assert m2["bundle"]["sha256"] == early.bundle_hash


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
