"""Layer 2 on llama-cpp-python with the nano GGUF the project builds itself: tokenizer and chat-template parity with
Hugging Face, grammar-valid answers, determinism, the verdict cache, the prefix KV cache, and every fault path
failing closed."""

from __future__ import annotations

import json
import re
import threading
import time

import jsonschema
import pytest
from fxgate.models.llm import (
    Judge,
    LlmRuntime,
    LlmSettings,
    ModelFileError,
    VerdictCache,
    grammar_for,
    parse_answer,  # fmt: skip
    verify_gguf,
)
from fxgate.models.prompt import (
    R1_CHAT_TEMPLATE,
    ContextOverflow,
    TemplateError,
    build_prompt,
    load_template,  # fmt: skip
    render_chat,
)
from llm_common import SCHEMAS, values


@pytest.fixture(scope="module")
def rt(nano):
    r = LlmRuntime(LlmSettings(model=str(nano["q8"]), n_ctx=4096, n_threads=2))
    yield r
    r.close()


# -- parity with Hugging Face -------------------------------------------------------------------------------------
def test_export_parity_report(nano):
    p = nano["manifest"]["parity"]
    assert p["prompts"] >= 200 and p["tokenizer_mismatches"] == 0
    assert p["f16_max_abs_logit_diff"] <= p["f16_logit_rtol"] * p["max_abs_logit"]
    assert p["q8_top1_agreement"] >= 0.98


@pytest.mark.parametrize("text", [
    "", " ", "  leading spaces and trailing  ", "tabs\tand\nnew\n\nlines\r\n", "EURUSD 1.08523 -0.00012 1e-5",
    "numbers 1234567890 and 3.14159", "<｜User｜>hi<｜Assistant｜><think>\nmaybe\n</think>\n\n{\"a\": 1}",
    "unicode: café, naïve, 日本語, emoji 🙂, ÅÄÖ", "it's, we're, they'll, I'd", "<think></think><think>",
    "a" * 500, "!!!???...,,,;;;", "<｜end▁of▁sentence｜><｜begin▁of▁sentence｜>",
])  # fmt: skip
def test_llama_cpp_tokenizes_like_hf(nano, rt, text):
    from fxgate.training.export import load_tokenizer

    hf = load_tokenizer(nano["hf"])
    assert rt.tokenize(text) == hf(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("gen", [True, False])
def test_chat_rendering_equals_hf_apply_chat_template(nano, gen):
    from fxgate.training.export import load_tokenizer

    hf = load_tokenizer(nano["hf"])
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "<think>\nr\n</think>\n\na1"},
            {"role": "user", "content": "q2"}]  # fmt: skip
    ours = render_chat(R1_CHAT_TEMPLATE, msgs, bos_token=hf.bos_token, eos_token=hf.eos_token,
                       add_generation_prompt=gen)  # fmt: skip
    assert ours == hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
    # the served model carries the same template in its GGUF metadata
    from fxgate.models.llm import load_llama

    assert load_llama(nano["q8"], n_ctx=256, vocab_only=True).metadata["tokenizer.chat_template"] == R1_CHAT_TEMPLATE


# -- grammar ------------------------------------------------------------------------------------------------------
def test_judge_answers_are_grammar_valid_for_100_prompts(rt, rng):
    j = Judge(rt, think_budget=4)
    ok = 0
    for i in range(100):
        v = j.judge(values(rng, ["BUY", "SELL"][i % 2]), ["BUY", "SELL"][i % 2])
        g = v.generation
        assert g is not None and g.error is None, v.reason
        jsonschema.validate(json.loads(g.answer), SCHEMAS["judge"])
        assert g.answer == json.dumps(json.loads(g.answer), ensure_ascii=False)  # canonical spacing
        assert v.passed == (g.parsed["direction"] == ["BUY", "SELL"][i % 2] and g.parsed["certainty"] >= 0.95)
        ok += 1
    assert ok == 100


@pytest.mark.parametrize("kind", ["bull", "bear", "risk"])
def test_role_answers_are_grammar_valid(rt, rng, kind):
    tpl = load_template(f"{kind}.v1")
    for _ in range(5):
        prompt = rt.build(tpl, values(rng), think_budget=4, answer_budget=512)
        g = rt.generate(prompt, kind=kind, think_budget=4, answer_budget=512, grammar=grammar_for(kind))
        assert g.error is None, g.error
        jsonschema.validate(json.loads(g.answer), SCHEMAS[kind])


@pytest.mark.parametrize(("kind", "text", "msg"), [
    ("judge", '{"direction": "UP", "certainty": 0.5, "reasons": ["x"]}', "direction must be"),
    ("judge", '{"direction": "BUY", "certainty": 1.5, "reasons": ["x"]}', "'certainty' must be a number in [0, 1]"),
    ("judge", '{"direction": "BUY", "certainty": 0.5, "reasons": []}', "'reasons' must be a non-empty list"),
    ("judge", '{"direction": "BUY", "certainty": 0.5', "answer is not JSON"),
    ("bull", '{"confidence": 0.5, "arguments": [{"point": "", "strength": 0.1}]}', "non-empty 'point'"),
    ("risk", '{"approve": "yes", "size_fraction": 1, "reasons": ["x"]}', "'approve' must be true or false"),
])  # fmt: skip
def test_parse_answer_rejects_what_the_grammar_forbids(kind, text, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        parse_answer(kind, text)


# -- determinism, caches ------------------------------------------------------------------------------------------
def test_identical_inputs_give_identical_verdicts_cold_warm_and_restored(nano, rng):
    vals = values(rng)
    other = values(rng, "SELL")
    outs = []
    for _ in range(2):  # two separate runtimes: cold start each time
        r = LlmRuntime(LlmSettings(model=str(nano["q8"]), n_ctx=4096, n_threads=2))
        j = Judge(r, think_budget=24)
        a = j.judge(vals, "BUY").generation  # cold
        b = j.judge(vals, "BUY").generation  # whole prompt already in the KV cache
        j.judge(other, "SELL")  # shares the static prefix only
        r.forget_prefixes()
        c = j.judge(vals, "BUY").generation  # cold again (prefix state dropped)
        assert a.prefix == "cold" and b.prefix == "kv" and c.prefix == "cold"
        assert b.n_prompt_evaluated < a.n_prompt_evaluated
        for g in (b, c):
            assert (g.think, g.answer) == (a.think, a.answer)
        outs.append((a.think, a.answer))
        r.close()
    assert outs[0] == outs[1]


def test_prefix_state_restore_gives_the_same_answer(rt, rng):
    judge, bull = load_template("judge.v1"), load_template("bull.v1")
    v1 = values(rng)
    g = {}
    for name, tpl in (("judge1", judge), ("bull", bull), ("judge2", judge)):
        p = rt.build(tpl, v1, think_budget=8, answer_budget=512)
        kind = "judge" if tpl is judge else "bull"
        g[name] = rt.generate(p, kind=kind, think_budget=8, answer_budget=512, grammar=grammar_for(kind),
                              use_cache=False)  # fmt: skip
    # judge -> bull -> judge: the judge's static prefix comes back from its saved KV state
    assert g["judge2"].prefix in ("state", "kv") and g["judge2"].n_prompt_evaluated < g["judge2"].n_prompt
    assert (g["judge2"].think, g["judge2"].answer) == (g["judge1"].think, g["judge1"].answer)


def test_verdict_cache_hits_and_misses(nano, tmp_path, rng):
    cache = VerdictCache(tmp_path / "v.sqlite")
    r = LlmRuntime(LlmSettings(model=str(nano["q8"]), n_ctx=4096, n_threads=2), cache=cache)
    j = Judge(r, think_budget=8)
    vals = values(rng)
    a = j.judge(vals, "BUY")
    assert (cache.hits, cache.misses, len(cache)) == (0, 1, 1) and not a.generation.cached
    b = j.judge(vals, "BUY")
    assert (cache.hits, cache.misses) == (1, 1) and b.generation.cached
    assert b.generation.answer == a.generation.answer and b.passed == a.passed and b.reason == a.reason
    calls = r.stats["calls"]
    Judge(r, think_budget=9).judge(vals, "BUY")  # a different budget is a different call
    assert (cache.hits, cache.misses, r.stats["calls"]) == (1, 2, calls + 1)
    r.close()
    # a new process (new runtime, same file) replays from disk without running the model
    cache2 = VerdictCache(tmp_path / "v.sqlite")
    r2 = LlmRuntime(LlmSettings(model=str(nano["q8"]), n_ctx=4096, n_threads=2), cache=cache2)
    c = Judge(r2, think_budget=8).judge(vals, "BUY")
    assert cache2.hits == 1 and r2.stats["calls"] == 0 and c.generation.answer == a.generation.answer
    # a different model file is a different key
    assert r2.cache_key(r2.build(load_template("judge.v1"), vals, think_budget=8, answer_budget=512), "judge", 8, 512,
                        "g") != VerdictCache.key(model="other")  # fmt: skip
    r2.close()


# -- faults -------------------------------------------------------------------------------------------------------
def test_timeout_fails_closed_and_the_runtime_recovers(nano, rng):
    r = LlmRuntime(LlmSettings(model=str(nano["q8"]), n_ctx=4096, n_threads=1, timeout_s=0.05))
    slow = Judge(r, think_budget=3000)  # thousands of reasoning tokens: cannot finish in 50 ms
    vals = values(rng)
    t0 = time.perf_counter()
    v = slow.judge(vals, "BUY")
    waited = time.perf_counter() - t0
    assert not v.passed and "timed out after 0.05 s" in v.reason and r.stats["timeouts"] == 1
    assert waited < 2.0  # the caller is released at the deadline, not when the model finishes
    # the next call waits for the cancelled one to stop, then runs normally, and equals a fresh runtime's answer
    ok = Judge(r, think_budget=8).judge(vals, "BUY", timeout_s=30)
    fresh = LlmRuntime(LlmSettings(model=str(nano["q8"]), n_ctx=4096, n_threads=1))
    ref = Judge(fresh, think_budget=8).judge(vals, "BUY")
    assert ok.generation is not None and ok.generation.answer == ref.generation.answer
    r.close()
    fresh.close()


def test_exhausted_answer_budget_is_a_malformed_answer(rt, rng):
    v = Judge(rt, think_budget=2, answer_budget=16).judge(values(rng), "BUY")
    assert not v.passed and v.reason.startswith("malformed answer") and "answer budget of 16 tokens" in v.reason


def test_sections_are_dropped_whole_least_important_first(nano, rt, rng):
    from fxgate.training.export import load_tokenizer

    hf = load_tokenizer(nano["hf"])
    tpl = load_template("judge.v1")
    vals = values(rng)

    def count(text: str) -> int:  # the HF tokenizer as the independent counter
        return len(hf(text, add_special_tokens=False)["input_ids"])

    full = build_prompt(tpl, vals, chat_template=R1_CHAT_TEMPLATE, bos_token=hf.bos_token, eos_token=hf.eos_token,
                        count_tokens=count, budget=10**6)  # fmt: skip
    assert full.dropped == () and full.n_tokens == count(full.text) == len(rt.tokenize(full.text))
    budgets = sorted({full.n_tokens - 1, full.n_tokens - 300, full.n_tokens - 500})
    for budget in budgets:
        p = build_prompt(tpl, vals, chat_template=R1_CHAT_TEMPLATE, bos_token=hf.bos_token, eos_token=hf.eos_token,
                         count_tokens=count, budget=budget)  # fmt: skip
        assert p.n_tokens <= budget and count(p.text) == p.n_tokens
        assert list(p.dropped) == ["formulas", "glossary", "features", "modules"][: len(p.dropped)]
        for name in p.dropped:  # whole sections: none of their text is left
            sec = next(s for s in tpl.sections if s.name == name)
            assert sec.text.split("\n")[0] not in p.text
        for name in p.sections:
            assert next(s for s in tpl.sections if s.name == name).text.split("\n")[0] in p.text
    with pytest.raises(ContextOverflow, match="required sections need"):
        build_prompt(tpl, vals, chat_template=R1_CHAT_TEMPLATE, bos_token=hf.bos_token, eos_token=hf.eos_token,
                     count_tokens=count, budget=50)  # fmt: skip


def test_context_overflow_fails_closed(nano, rng):
    r = LlmRuntime(LlmSettings(model=str(nano["q8"]), n_ctx=512, n_threads=2))
    v = Judge(r, think_budget=64).judge(values(rng), "BUY")
    assert not v.passed and "required sections need" in v.reason and "[llm] n_ctx" in v.reason
    r.close()


def test_bad_model_files_name_the_file_and_the_fix(nano, tmp_path):
    with pytest.raises(ModelFileError, match="model file not found"):
        verify_gguf(tmp_path / "nope.gguf")
    (tmp_path / "x.gguf").write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        verify_gguf(tmp_path / "x.gguf")
    with pytest.raises(ModelFileError, match="does not match the expected"):
        verify_gguf(nano["q8"], "00" * 8)
    assert verify_gguf(nano["q8"], nano["manifest"]["files"]["nano-q8_0.gguf"]["sha256"][:12]) == \
        nano["manifest"]["files"]["nano-q8_0.gguf"]["sha256"]  # fmt: skip
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(nano["q8"].read_bytes()[:5000])  # the GGUF magic, then nothing usable
    with pytest.raises(ModelFileError, match="llama.cpp could not load it"):
        LlmRuntime(LlmSettings(model=str(cut)))


def test_templates_are_validated(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text('name = "x"\nversion = 1\noutput = "judge"\nsystem = "s"\n[[section]]\nname = "a"\nstatic = true\n'
                 'text = "{bar}"\n')  # fmt: skip
    with pytest.raises(TemplateError, match="a static section cannot contain a placeholder"):
        load_template(p)
    p.write_text('name = "x"\nversion = 1\noutput = "oracle"\nsystem = "s"\n[[section]]\nname = "a"\ntext = "t"\n')
    with pytest.raises(TemplateError, match="output = 'oracle'"):
        load_template(p)
    with pytest.raises(TemplateError, match="Bundled templates: bear.v1, bull.v1, judge.v1, risk.v1"):
        load_template("jduge.v1")


def test_a_call_in_flight_does_not_block_other_threads(rt, rng):
    """llama.cpp releases the GIL: Python work on another thread keeps going during a generation."""
    done = threading.Event()
    ticks = 0

    def work() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1

    th = threading.Thread(target=work)
    th.start()
    Judge(rt, think_budget=300).judge(values(rng), "BUY", timeout_s=60)
    done.set()
    th.join()
    assert ticks > 1000
