"""The debate's bull and bear as two sequences of one llama.cpp context (``[l3] parallel``, issue #19 item 6), on the
nano model: under greedy decoding every sequence gives, token for token, what the single-sequence runtime gives for
its prompt alone (whichever way its prefix got into the context: evaluated, restored from a saved state into
sequence 1, or shared from sequence 0's cells); the parallel debate equals the same protocol run one role after the
other; the sequential protocol is unchanged; every failure fails closed and names the role."""

from __future__ import annotations

import re
import threading

import jsonschema
import numpy as np
import pytest
from llm_common import SCHEMAS, values

from fxgate.engine.config import config_from_dict
from fxgate.engine.llm_setup import start_llm
from fxgate.models.debate import Debate
from fxgate.models.llm import LlmError, LlmRuntime, LlmSettings, grammar_for
from fxgate.models.llm.runtime import LlmCall
from fxgate.models.prompt import load_template

ANSWER = 512


def _rt(nano, n_seq: int, **kw) -> LlmRuntime:
    return LlmRuntime(LlmSettings(model=str(nano["q8"]), n_threads=2, n_seq=n_seq, **{"n_ctx": 4096, **kw}))


@pytest.fixture(scope="module")
def ref(nano):
    r = _rt(nano, 1)
    yield r
    r.close()


def _call(rt: LlmRuntime, role: str, vals: dict[str, str], think: int) -> LlmCall:
    p = rt.build(load_template(f"{role}.v1"), vals, think_budget=think, answer_budget=ANSWER)
    return LlmCall(p, role, think, ANSWER, grammar_for(role))


def _alone(rt: LlmRuntime, c: LlmCall):
    return rt.generate(
        c.prompt,
        kind=c.kind,
        think_budget=c.think_budget,
        answer_budget=c.answer_budget,
        grammar=c.grammar,
        use_cache=False,
    )


def _tokens(g) -> tuple:
    """Everything a generation decided (its timings and how much of the prompt was evaluated may differ)."""
    return g.kind, g.think, g.answer, g.think_truncated, g.n_think, g.n_answer, g.n_prompt, g.error


@pytest.mark.parametrize("think", [0, 24])
def test_each_sequence_generates_what_its_prompt_alone_generates(nano, ref, think):
    """Bull and bear on five bars: the first pair evaluates both static prefixes (bear's on sequence 1, saved), the
    later ones restore bear's saved state into sequence 1 and find bull's already in sequence 0."""
    pair = _rt(nano, 2)
    hows = []
    for k in range(5):
        vals = values(np.random.default_rng(100 + k), "BUY" if k % 2 else "SELL")
        calls = [_call(ref, "bull", vals, think), _call(ref, "bear", vals, think)]
        got = pair.generate_many(calls, use_cache=False)
        for c, g in zip(calls, got, strict=True):
            assert not isinstance(g, LlmError), g
            want = _alone(ref, c)
            assert _tokens(g) == _tokens(want), (k, c.kind)
            assert g.error is None
            jsonschema.validate(g.parsed.to_dict(), SCHEMAS[c.kind])  # sequence 1 is grammar-constrained too
        hows.append(tuple(g.prefix for g in got))
        if think:
            assert all(g.n_think > 0 for g in got)
    assert hows[0] == ("cold", "cold") and set(hows[1:]) == {("kv", "state")}
    assert pair.stats["state_saves"] == 2 and pair.stats["state_restores"] == 4
    assert len({_tokens(g)[1:3] for g in got}) == 2  # bull and bear said different things: a mix-up would show
    pair.close()


def test_a_static_prefix_shared_with_sequence_0_is_copied_not_evaluated(nano, ref):
    """Two bull prompts (two bars): sequence 1 takes the shared static prefix from sequence 0's cells."""
    pair = _rt(nano, 2)
    a = _call(ref, "bull", values(np.random.default_rng(7)), 16)
    # a second bar whose answer alone differs from the first's (else equal outputs could not tell the sequences apart)
    first = _alone(ref, a).answer
    b = next(
        c
        for c in (_call(ref, "bull", values(np.random.default_rng(k)), 16) for k in range(8, 40))
        if _alone(ref, c).answer != first
    )
    got = pair.generate_many([a, b], use_cache=False)
    assert [g.prefix for g in got] == ["cold", "kv"]
    static = len(ref.tokenize(a.prompt.prefix_text))
    assert got[1].n_prompt_evaluated < got[1].n_prompt - static + 2  # nothing of the static prefix evaluated
    assert _tokens(got[0]) == _tokens(_alone(ref, a)) and _tokens(got[1]) == _tokens(_alone(ref, b))
    assert got[0].answer != got[1].answer
    pair.close()


def test_a_sequence_that_overflows_fails_alone(nano, ref):
    pair = _rt(nano, 2)
    vals = values(np.random.default_rng(3))
    ok, big = _call(ref, "bull", vals, 8), _call(ref, "bear", vals, 8)
    big = LlmCall(big.prompt, "bear", 8, 4000, big.grammar)  # prompt + 4000 answer tokens > n_ctx 4096
    got = pair.generate_many([ok, big], use_cache=False)
    assert isinstance(got[1], LlmError) and "exceeds n_ctx 4096" in str(got[1])
    assert _tokens(got[0]) == _tokens(_alone(ref, ok))
    with pytest.raises(ValueError, match="holds 1 to 2"):
        pair.generate_many([ok, ok, ok])
    pair.close()


def _key(v):
    turns = [(t.role, t.round, t.error, None if t.generation is None else _tokens(t.generation)) for t in v.transcript]
    return v.passed, v.reason, v.bull_confidence, v.bear_strength, v.approve, v.size_fraction, turns


@pytest.mark.parametrize("rounds", [1, 2])
def test_parallel_debate_equals_the_same_protocol_one_role_after_the_other(nano, ref, rounds, monkeypatch):
    pair = _rt(nano, 2)
    seen: dict[str, list[tuple[str, str]]] = {"pair": [], "ref": []}
    both = {"pair": Debate(dict.fromkeys(("bull", "bear", "risk"), pair), rounds=rounds, think_budget=12)}
    both["ref"] = Debate(dict.fromkeys(("bull", "bear", "risk"), ref), rounds=rounds, think_budget=12)
    for name, d in both.items():
        real = d._prompt

        def prompt(role, vals, real=real, name=name):
            seen[name].append((role, vals["transcript"]))
            return real(role, vals)

        monkeypatch.setattr(d, "_prompt", prompt)
    calls = dict(pair.stats)
    for k in range(3):
        vals = values(np.random.default_rng(20 + k))
        seen["pair"].clear()
        seen["ref"].clear()
        got, want = both["pair"].debate(vals, "BUY"), both["ref"].debate(vals, "BUY")
        assert _key(got) == _key(want)
        assert [t.role for t in got.transcript] == ["bull", "bear"] * rounds + ["risk"]
        assert all(t.error is None for t in got.transcript)
        assert seen["pair"] == seen["ref"]
        # the protocol: in each round bull and bear read the same transcript, the previous rounds only
        by_role = [(r, t) for r, t in seen["pair"]]
        for rnd in range(rounds):
            (b, tb), (c, tc) = by_role[2 * rnd], by_role[2 * rnd + 1]
            assert (b, c) == ("bull", "bear") and tb == tc
            assert (tb == "(no turns yet)") == (rnd == 0) and f"Round {rnd + 1}," not in tb
            if rnd:
                assert f"Round {rnd}, bull" in tb and f"Round {rnd}, bear" in tb
        assert by_role[-1][0] == "risk" and f"Round {rounds}, bear" in by_role[-1][1]
    assert pair.stats["calls"] - calls["calls"] == 3 * (2 * rounds + 1)
    pair.close()


def test_the_sequential_protocol_is_kept(nano, ref, monkeypatch):
    """parallel=False on a two-sequence runtime: the bear reads the bull's turn of its round, and the debate equals
    the sequential debate on the single-sequence runtime."""
    pair = _rt(nano, 2)
    d = Debate(dict.fromkeys(("bull", "bear", "risk"), pair), think_budget=12, parallel=False)
    seen = []
    real = d._prompt
    monkeypatch.setattr(d, "_prompt", lambda role, vals: seen.append((role, vals["transcript"])) or real(role, vals))
    vals = values(np.random.default_rng(5))
    got = d.debate(vals, "SELL")
    want = Debate(dict.fromkeys(("bull", "bear", "risk"), ref), think_budget=12, parallel=False).debate(vals, "SELL")
    assert _key(got) == _key(want)
    assert seen[0] == ("bull", "(no turns yet)") and seen[1][0] == "bear" and "Round 1, bull" in seen[1][1]
    pair.close()


def test_a_timeout_fails_the_pair_closed_naming_the_bull_and_the_runtime_recovers(nano, ref, monkeypatch):
    pair = _rt(nano, 2, n_batch=64)
    release, decodes = threading.Event(), []
    real = pair._batch.decode

    def decode(llm, items):  # the first two-sequence decode blocks until the test releases it
        decodes.append(len(items))
        if len(decodes) == 1:
            release.wait(30)
        return real(llm, items)

    monkeypatch.setattr(pair._batch, "decode", decode)
    vals = values(np.random.default_rng(11))
    d = Debate(dict.fromkeys(("bull", "bear", "risk"), pair), think_budget=400, timeout_s=0.05)
    v = d.debate(vals, "BUY")
    assert not release.is_set() and len(decodes) == 1  # the verdict came while the worker was inside the call
    assert not v.passed and re.match(r"bull \(round 1\): generation timed out after 0\.0\d* s", v.reason)
    assert [(t.role, t.generation) for t in v.transcript] == [("bull", None)]
    release.set()
    pair.forget_prefixes()  # queued behind the cancelled call
    assert len(decodes) == 1  # it stopped at its next batch
    ok = Debate(dict.fromkeys(("bull", "bear", "risk"), pair), think_budget=12).debate(vals, "BUY")
    want = Debate(dict.fromkeys(("bull", "bear", "risk"), ref), think_budget=12).debate(vals, "BUY")
    assert _key(ok) == _key(want)
    pair.close()


def test_malformed_answers_and_overflow_name_the_role(nano, ref):
    pair = _rt(nano, 2)
    vals = values(np.random.default_rng(2))
    short = Debate(dict.fromkeys(("bull", "bear", "risk"), pair), think_budget=2, answer_budget=16)
    v = short.debate(vals, "BUY")
    want = Debate(dict.fromkeys(("bull", "bear", "risk"), ref), think_budget=2, answer_budget=16).debate(vals, "BUY")
    assert _key(v) == _key(want)
    assert v.reason.startswith("bull (round 1): malformed answer") and "answer budget of 16 tokens" in v.reason
    small = _rt(nano, 2, n_ctx=512)
    v = Debate(dict.fromkeys(("bull", "bear", "risk"), small)).debate(vals, "BUY")
    assert not v.passed and v.reason.startswith("bull (round 1): prompt bull.v2") and "n_ctx" in v.reason
    pair.close()
    small.close()


def test_l3_parallel_is_a_config_key_that_sets_up_two_sequences(nano):
    on = config_from_dict({"llm": {"model": str(nano["q8"]), "cache": "", "n_threads": 1}})
    off = config_from_dict({"llm": {"model": str(nano["q8"]), "cache": "", "n_threads": 1}, "l3": {"parallel": False}})
    assert on.l3.parallel is True and off.l3.parallel is False and on.hash != off.hash
    for cfg, n_seq in ((on, 2), (off, 1)):
        stack = start_llm(cfg)
        try:
            assert stack.debate is not None and stack.debate.parallel is cfg.l3.parallel
            assert [rt.settings.n_seq for rt in stack.runtimes.values()] == [n_seq]
            v = stack.debate.debate(values(np.random.default_rng(0)), "BUY")
            assert [t.role for t in v.transcript][:2] == ["bull", "bear"]
        finally:
            stack.close()
