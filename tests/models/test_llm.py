"""Layer 2 on llama-cpp-python with the nano GGUF the project builds itself: tokenizer and chat-template parity with
Hugging Face, grammar-valid answers, determinism, the verdict cache, the prefix KV cache, and every fault path
failing closed."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict

import jsonschema
import pytest
from llm_common import SCHEMAS, queue_up, values

from fxgate.models.llm import (
    ROLES,
    Judge,
    LlmRuntime,
    LlmSettings,
    ModelFileError,
    VerdictCache,
    grammar_for,
    parse_answer,
    verify_gguf,
)
from fxgate.models.prompt import (
    R1_CHAT_TEMPLATE,
    ContextOverflow,
    TemplateError,
    build_prompt,
    load_template,
    render_chat,
)


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


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "  leading spaces and trailing  ",
        "tabs\tand\nnew\n\nlines\r\n",
        "EURUSD 1.08523 -0.00012 1e-5",
        "numbers 1234567890 and 3.14159",
        '<｜User｜>hi<｜Assistant｜><think>\nmaybe\n</think>\n\n{"a": 1}',
        "unicode: café, naïve, 日本語, emoji 🙂, ÅÄÖ",
        "it's, we're, they'll, I'd",
        "<think></think><think>",
        "a" * 500,
        "!!!???...,,,;;;",
        "<｜end▁of▁sentence｜><｜begin▁of▁sentence｜>",
    ],
)
def test_llama_cpp_tokenizes_like_hf(nano, rt, text):
    from fxgate.training.export import load_tokenizer

    hf = load_tokenizer(nano["hf"])
    assert rt.tokenize(text) == hf(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("gen", [True, False])
def test_chat_rendering_equals_hf_apply_chat_template(nano, gen):
    from fxgate.training.export import load_tokenizer

    hf = load_tokenizer(nano["hf"])
    msgs = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "<think>\nr\n</think>\n\na1"},
        {"role": "user", "content": "q2"},
    ]
    ours = render_chat(
        R1_CHAT_TEMPLATE, msgs, bos_token=hf.bos_token, eos_token=hf.eos_token, add_generation_prompt=gen
    )
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
        assert v.passed == (g.parsed.direction == ["BUY", "SELL"][i % 2] and g.parsed.certainty >= 0.95)
        (rec,) = v.details()
        assert rec.answer == g.parsed and v.reasons == g.parsed.reasons == tuple(rec.to_dict()["answer"]["reasons"])
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


@pytest.mark.parametrize(
    ("kind", "text", "msg"),
    [
        ("judge", '{"direction": "UP", "certainty": 0.5, "reasons": ["x"]}', "direction must be"),
        ("judge", '{"direction": "BUY", "certainty": 1.5, "reasons": ["x"]}', "'certainty' must be a number in [0, 1]"),
        ("judge", '{"direction": "BUY", "certainty": 0.5, "reasons": []}', "'reasons' must be a non-empty list"),
        ("judge", '{"direction": "BUY", "certainty": 0.5', "answer is not JSON"),
        ("bull", '{"confidence": 0.5, "arguments": [{"point": "", "strength": 0.1}]}', "non-empty 'point'"),
        ("risk", '{"approve": "yes", "size_fraction": 1, "reasons": ["x"]}', "'approve' must be true or false"),
    ],
)
def test_parse_answer_rejects_what_the_grammar_forbids(kind, text, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        parse_answer(kind, text)


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("judge", '{"direction": "SELL", "certainty": 0.9731, "reasons": ["a", "b c"]}'),
        ("bull", '{"confidence": 1, "arguments": [{"point": "p", "strength": 0.5}, {"point": "q", "strength": 0}]}'),
        ("bear", '{"arguments": [{"point": "the spread widens", "strength": 0.25}]}'),
        ("risk", '{"approve": false, "size_fraction": 0.5, "reasons": ["x"]}'),
    ],
)
def test_typed_answers_give_back_the_json_the_model_wrote(kind, text):
    """The Decision shows ``answer.to_dict()``: the model's JSON object, field for field and in its order."""
    a, want = parse_answer(kind, text), json.loads(text)
    assert a.to_dict() == want and list(a.to_dict()) == list(want) == [f.key for f in ROLES[kind].fields]
    assert re.search(r"root ::= .*" + ".*".join(re.escape(k) for k in want), grammar_for(kind))


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


def test_prefix_state_restore_gives_the_same_answer(nano, rng):
    """judge -> bull -> judge on one runtime: the bull call replaces the context, so the second judge call must
    restore the judge's static prefix from its saved KV state (not find it in the context, not re-evaluate it).
    The restored call evaluates exactly the dynamic part — its length counted with the Hugging Face tokenizer — and
    answers exactly what the first, fully evaluated call answered."""
    from fxgate.training.export import load_tokenizer

    hf = load_tokenizer(nano["hf"])
    r = LlmRuntime(LlmSettings(model=str(nano["q8"]), n_ctx=4096, n_threads=2))
    judge, bull = load_template("judge.v1"), load_template("bull.v1")
    v1 = values(rng)
    g, restores = {}, {}
    for name, tpl in (("judge1", judge), ("bull", bull), ("judge2", judge)):
        p = r.build(tpl, v1, think_budget=8, answer_budget=512)
        kind = "judge" if tpl is judge else "bull"
        before = r.stats["state_restores"]
        g[name] = r.generate(
            p, kind=kind, think_budget=8, answer_budget=512, grammar=grammar_for(kind), use_cache=False
        )
        restores[name] = r.stats["state_restores"] - before
    p = r.build(judge, v1, think_budget=8, answer_budget=512)
    full = hf(p.text, add_special_tokens=False)["input_ids"]
    pre = hf(p.prefix_text, add_special_tokens=False)["input_ids"]
    static_len = next((i for i, (a, b) in enumerate(zip(full, pre, strict=False)) if a != b), min(len(full), len(pre)))
    assert 0 < static_len < len(full)
    assert g["judge1"].prefix == "cold" and g["judge1"].n_prompt_evaluated == len(full)
    assert restores == {"judge1": 0, "bull": 0, "judge2": 1}
    assert g["judge2"].prefix == "state" and g["judge2"].n_prompt == len(full)
    assert g["judge2"].n_prompt_evaluated == len(full) - static_len  # the static prefix was not run again
    assert (g["judge2"].think, g["judge2"].answer) == (g["judge1"].think, g["judge1"].answer)
    r.close()


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
    assert r2.cache_key(
        r2.build(load_template("judge.v1"), vals, think_budget=8, answer_budget=512), "judge", 8, 512, "g"
    ) != VerdictCache.key(model="other")
    r2.close()


# -- faults -------------------------------------------------------------------------------------------------------
def test_timeout_fails_closed_and_the_runtime_recovers(nano, rng, monkeypatch):
    r = LlmRuntime(LlmSettings(model=str(nano["q8"]), n_ctx=4096, n_threads=1, timeout_s=0.05))
    release, evals = threading.Event(), []
    real_eval = r.llm.eval

    def eval_(tokens):  # the first llama.cpp evaluation blocks until the test releases it
        evals.append(len(tokens))
        if len(evals) == 1:
            release.wait(30)
        return real_eval(tokens)

    monkeypatch.setattr(r.llm, "eval", eval_)
    slow = Judge(r, think_budget=3000)
    vals = values(rng)
    v = slow.judge(vals, "BUY")
    # the caller got its verdict while the worker is provably still inside the call: released at the deadline
    assert not release.is_set() and len(evals) == 1
    assert not v.passed and "timed out after 0.05 s" in v.reason and r.stats["timeouts"] == 1
    release.set()
    r.forget_prefixes()  # runs on the worker after the cancelled call has stopped
    # it stopped at its next step: no evaluation after the blocked one (none of the prompt's other chunks, none of
    # its 3000 think tokens)
    assert len(evals) == 1
    # the next call runs normally and equals a fresh runtime's answer
    ok = Judge(r, think_budget=8).judge(vals, "BUY", timeout_s=30)
    assert ok.generation is not None and ok.generation.prefix == "cold"
    fresh = LlmRuntime(LlmSettings(model=str(nano["q8"]), n_ctx=4096, n_threads=1))
    ref = Judge(fresh, think_budget=8).judge(vals, "BUY")
    assert ok.generation.answer == ref.generation.answer
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

    full = build_prompt(
        tpl,
        vals,
        chat_template=R1_CHAT_TEMPLATE,
        bos_token=hf.bos_token,
        eos_token=hf.eos_token,
        count_tokens=count,
        budget=10**6,
    )
    assert full.dropped == () and full.n_tokens == count(full.text) == len(rt.tokenize(full.text))
    budgets = sorted({full.n_tokens - 1, full.n_tokens - 300, full.n_tokens - 500})
    for budget in budgets:
        p = build_prompt(
            tpl,
            vals,
            chat_template=R1_CHAT_TEMPLATE,
            bos_token=hf.bos_token,
            eos_token=hf.eos_token,
            count_tokens=count,
            budget=budget,
        )
        assert p.n_tokens <= budget and count(p.text) == p.n_tokens
        assert list(p.dropped) == ["formulas", "glossary", "features", "modules"][: len(p.dropped)]
        for name in p.dropped:  # whole sections: none of their text is left
            sec = next(s for s in tpl.sections if s.name == name)
            assert sec.text.split("\n")[0] not in p.text
        for name in p.sections:
            assert next(s for s in tpl.sections if s.name == name).text.split("\n")[0] in p.text
    with pytest.raises(ContextOverflow, match="required sections need"):
        build_prompt(
            tpl,
            vals,
            chat_template=R1_CHAT_TEMPLATE,
            bos_token=hf.bos_token,
            eos_token=hf.eos_token,
            count_tokens=count,
            budget=50,
        )


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
    assert (
        verify_gguf(nano["q8"], nano["manifest"]["files"]["nano-q8_0.gguf"]["sha256"][:12])
        == nano["manifest"]["files"]["nano-q8_0.gguf"]["sha256"]
    )
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(nano["q8"].read_bytes()[:5000])  # the GGUF magic, then nothing usable
    with pytest.raises(ModelFileError, match="llama.cpp could not load it"):
        LlmRuntime(LlmSettings(model=str(cut)))


def test_templates_are_validated(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text(
        'name = "x"\nversion = 1\noutput = "judge"\nsystem = "s"\n[[section]]\nname = "a"\nstatic = true\n'
        'text = "{bar}"\n'
    )
    with pytest.raises(TemplateError, match="a static section cannot contain a placeholder"):
        load_template(p)
    p.write_text('name = "x"\nversion = 1\noutput = "oracle"\nsystem = "s"\n[[section]]\nname = "a"\ntext = "t"\n')
    with pytest.raises(TemplateError, match="output = 'oracle'"):
        load_template(p)
    with pytest.raises(TemplateError, match="Bundled templates: bear.v1, bull.v1, judge.v1, risk.v1"):
        load_template("jduge.v1")


# -- threads ------------------------------------------------------------------------------------------------------
def test_a_call_in_flight_does_not_block_other_threads(nano, rng, monkeypatch):
    """While llama.cpp evaluates a prompt, another Python thread runs — and can use the runtime's token cache.

    Counting a busy thread's progress over the whole call cannot tell a released GIL from a held one: CPython hands
    a held GIL to a waiting thread every ``sys.getswitchinterval()`` (5 ms) at the holder's next bytecode, so the
    other thread progresses either way. What only a release allows is progress *inside* one native call. So each
    ``llama_decode`` call is bracketed (the ``inside`` flag is set just before the native call starts — no thread
    switch can happen between the two — and cleared when it returns), and a probe thread that wakes every 0.5 ms
    records which calls it saw in progress, and when. With the GIL held, the probe can run during a call only at its
    end (the holder may switch threads after the native call returns and before it clears the flag), for about one
    switch interval. So the test measures how much of each call the probe ran through — the sum of the gaps between
    its consecutive sightings of that call, counting only gaps of at most 5 ms — and asks for at least half of
    every long call; the calls are made long (a 1,500-token transcript evaluated in one batch: tens to hundreds of
    ms). With the GIL held (llama_decode bound through ``ctypes.PyDLL``) this share is 0."""
    import llama_cpp.llama_cpp as lc

    r = LlmRuntime(LlmSettings(model=str(nano["q8"]), n_ctx=4096, n_threads=1, n_batch=4096))
    real_decode = lc.llama_decode
    state = {"inside": 0, "n": 0}
    windows: dict[int, list[float]] = {}  # call number -> [start, end]

    def decode(ctx, batch):
        n = state["n"] = state["n"] + 1
        windows[n] = [time.perf_counter(), 0.0]
        state["inside"] = n
        try:
            return real_decode(ctx, batch)
        finally:
            state["inside"] = 0
            windows[n][1] = time.perf_counter()

    monkeypatch.setattr(lc, "llama_decode", decode)
    probe_text = "the probe's own text"
    r.count_tokens(probe_text)
    seen: dict[int, list[float]] = {}  # call number -> times the probe ran while it was in progress
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            time.sleep(0.0005)
            r.count_tokens(probe_text)  # the token cache's lock must not be held across a native call
            n = state["inside"]
            if n:
                seen.setdefault(n, []).append(time.perf_counter())

    transcript = " ".join(f"Round {i}, bear: the spread widens to {i / 7:.3f} pips" for i in range(60))
    prompts = [
        r.build(load_template("bull.v1"), dict(values(rng), transcript=transcript), think_budget=2, answer_budget=256)
        for _ in range(3)
    ]
    th = threading.Thread(target=probe)
    th.start()
    try:
        for p in prompts:
            r.forget_prefixes()  # cold: the long dynamic part is one native call per prompt
            g = r.generate(
                p, kind="bull", think_budget=2, answer_budget=256, grammar=grammar_for("bull"), timeout_s=120
            )
            assert g.n_prompt > 1500
    finally:
        done.set()
        th.join()
    longest = sorted(windows, key=lambda n: windows[n][0] - windows[n][1])[:3]  # the three prompt evaluations

    def ran_through(n: int) -> float:
        t = sorted(seen.get(n, []))
        return sum(b - a for a, b in zip(t, t[1:], strict=False) if b - a <= 0.005) / (windows[n][1] - windows[n][0])

    shares = [ran_through(n) for n in longest]
    assert all(x >= 0.5 for x in shares), f"share of each long llama_decode call the probe ran through: {shares}"
    r.close()


def test_forget_prefixes_waits_for_the_call_in_flight(nano, rng, monkeypatch):
    """Regression (#12.11): ``forget_prefixes`` from another thread used to reset the llama.cpp context at once,
    under a generation in flight (its next tokens then went to position 0 of an emptied context). It now runs on
    the worker after that call. The call is held at its first reasoning step until the test releases it."""
    r = LlmRuntime(LlmSettings(model=str(nano["q8"]), n_ctx=4096, n_threads=1))
    judge = Judge(r, think_budget=8)
    vals = values(rng)
    ref = judge.judge(vals, "BUY").generation  # single-threaded, cold
    r.forget_prefixes()
    entered, release = threading.Event(), threading.Event()
    real_eval = r.llm.eval

    def eval_(tokens):
        if len(tokens) == 1 and not entered.is_set():  # the prompt is in; the first think token comes next
            entered.set()
            release.wait(30)
        return real_eval(tokens)

    monkeypatch.setattr(r.llm, "eval", eval_)
    out: dict = {}
    a = threading.Thread(target=lambda: out.setdefault("a", judge.judge(vals, "BUY", timeout_s=60)))
    a.start()
    assert entered.wait(30)
    f = threading.Thread(target=r.forget_prefixes)
    f.start()
    f.join(0.3)
    still_waiting = f.is_alive()  # the call is held mid-generation: the reset must not have run yet
    release.set()
    a.join(60)
    f.join(60)
    assert still_waiting
    g = out["a"].generation
    assert g is not None and (g.prefix, g.think, g.answer) == ("cold", ref.think, ref.answer)
    assert judge.judge(vals, "BUY").generation.prefix == "cold"  # and the reset did happen, after the call
    r.close()


def test_token_cache_survives_an_eviction_between_lookup_and_reuse(nano):
    """Regression (#12.11): caller threads (building prompts) and the worker share the token cache. Thread A finds a
    cached text and is paused, by a hook on the cache's lookup, before it marks the entry as recently used; thread
    B tokenizes a new text meanwhile, which evicts the oldest entry — A's. Unlocked, B evicts it under A, whose
    move_to_end raises KeyError (the call fails closed for no reason); with the lock, B waits for A. Both get
    llama.cpp's own (uncached) tokenization."""
    r = LlmRuntime(LlmSettings(model=str(nano["q8"]), n_ctx=512, n_threads=1))
    texts = [f"EURUSD H1 bar {i}: close 1.{i:04d}, spread 0.8 pips" for i in range(33)]
    want = {t: r.llm.tokenize(t.encode("utf-8"), add_bos=False, special=True) for t in texts}
    r._tokens.clear()
    for t in texts[:32]:  # a full cache (32 entries) whose oldest entry is texts[0]
        r.tokenize(t)
    paused, resume = threading.Event(), threading.Event()
    thread_a: list[threading.Thread] = []

    class PausingCache(OrderedDict):
        def get(self, key, default=None):
            found = super().get(key, default)
            if key == texts[0] and threading.current_thread() in thread_a:
                paused.set()
                resume.wait(10)
            return found

    r._tokens = PausingCache(r._tokens)
    got: dict[str, object] = {}

    def call(name: str, text: str) -> None:
        try:
            got[name] = r.tokenize(text)
        except Exception as exc:  # noqa: BLE001 - reported below
            got[name] = exc

    a = threading.Thread(target=call, args=("a", texts[0]))
    b = threading.Thread(target=call, args=("b", texts[32]))
    thread_a.append(a)
    a.start()
    assert paused.wait(10)
    b.start()
    b.join(0.5)  # unlocked, B evicts texts[0] now; locked, B waits for A
    resume.set()
    a.join(10)
    b.join(10)
    assert got == {"a": want[texts[0]], "b": want[texts[32]]}
    assert all(r.tokenize(t) == want[t] for t in texts)  # and the cache is consistent afterwards
    r.close()


def test_concurrent_judges_on_one_runtime_get_their_single_threaded_answers(nano, tmp_path, rng, monkeypatch):
    """Regression (#12.11): concurrent ``on_bar`` calls judge on one runtime at once. Four threads each judge their
    own bars (then, after a barrier, everybody's: answers from the verdict cache another thread wrote); every
    verdict equals the one a single-threaded runtime gives for the same values, and the counters add up."""
    settings = LlmSettings(model=str(nano["q8"]), n_ctx=4096, n_threads=1)
    n_threads, per_thread = 4, 2
    vals = [values(rng, ["BUY", "SELL"][i % 2]) for i in range(n_threads * per_thread)]
    ref_rt = LlmRuntime(settings)
    ref_judge = Judge(ref_rt, think_budget=6, answer_budget=256)

    def key(v):  # the verdict and the generation behind it (a failed call shows its reason)
        g = v.generation
        return (v.passed, v.direction, v.certainty, v.reason) + ((g.think, g.answer, g.n_prompt) if g else (None,) * 3)

    ref = [key(ref_judge.judge(v, v["direction"])) for v in vals]
    ref_rt.close()
    assert len({k[4:] for k in ref}) > 1  # the values lead to different generations: a mix-up would show
    cache = VerdictCache(tmp_path / "v.sqlite")
    r = LlmRuntime(settings, cache=cache)
    judge = Judge(r, think_budget=6, answer_budget=256)
    queue_up(monkeypatch, r, n_threads)  # the four first calls wait in the queue together
    barrier = threading.Barrier(n_threads)
    results: dict[tuple[int, int], object] = {}

    def work(k: int) -> None:
        try:
            mine = list(range(k * per_thread, (k + 1) * per_thread))
            for i in mine:
                results[(1, i)] = key(judge.judge(vals[i], vals[i]["direction"]))
            barrier.wait(120)
            for i in range(len(vals))[:: -1 if k % 2 else 1]:
                results[(k + 2, i)] = key(judge.judge(vals[i], vals[i]["direction"]))
        except Exception as exc:  # noqa: BLE001 - reported below
            results[("error", k)] = exc

    ths = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(300)
    assert not [v for k, v in results.items() if k[0] == "error"]
    assert {i: results[(1, i)] for i in range(len(vals))} == dict(enumerate(ref))
    for k in range(n_threads):
        assert [results[(k + 2, i)] for i in range(len(vals))] == ref
    n = len(vals)
    assert (r.stats["calls"], cache.misses, cache.hits, len(cache)) == (n, n, n_threads * n, n)
    r.close()
