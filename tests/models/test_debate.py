"""Layer 3: the debate's transcript structure on the nano model, its pass rule checked case by case, and debates run
from several threads at once."""

from __future__ import annotations

import json
import threading

import jsonschema
import numpy as np
import pytest
from llm_common import SCHEMAS, queue_up, values

from fxgate.models.debate import Debate
from fxgate.models.llm import Generation, LlmError, LlmRuntime, LlmSettings, parse_answer


@pytest.fixture(scope="module")
def rt(nano):
    r = LlmRuntime(LlmSettings(model=str(nano["q8"]), n_ctx=4096, n_threads=2))
    yield r
    r.close()


@pytest.mark.parametrize("rounds", [1, 2])
def test_transcript_structure(rt, rounds):
    d = Debate({"bull": rt, "bear": rt, "risk": rt}, rounds=rounds, think_budget=6)
    v = d.debate(values(np.random.default_rng(rounds)), "SELL")
    roles = [e.role for e in v.transcript]
    assert roles == ["bull", "bear"] * rounds + ["risk"]
    assert [e.round for e in v.transcript] == [r for r in range(1, rounds + 1) for _ in (0, 1)] + [rounds]
    transcript = [e.to_dict() for e in v.transcript]  # as the Decision shows it
    for e in transcript:
        assert "error" not in e, e.get("error")
        jsonschema.validate(e["answer"], SCHEMAS[e["role"]])
        assert e["model"] == rt.sha256[:16] and e["tokens"]["answer"] > 0 and e["template"] == f"{e['role']}.v2"
    bull = [e["answer"] for e in transcript if e["role"] == "bull"]
    bear = [e["answer"] for e in transcript if e["role"] == "bear"]
    risk = transcript[-1]["answer"]
    # the verdict recomputed from the transcript by hand
    assert v.bull_confidence == bull[-1]["confidence"]
    assert v.bear_strength == max(a["strength"] for b in bear for a in b["arguments"])
    expect = (
        bull[-1]["confidence"] >= 0.95 and v.bear_strength <= 0.05 and risk["approve"] and risk["size_fraction"] > 0
    )
    assert v.passed == expect
    summary, *turns = v.details()
    assert summary.to_dict()["role"] == "summary" and turns == list(v.transcript)
    assert [e.role for e in v.details()] == ["summary", *roles]
    assert all(
        e.answer is not None and e.answer.to_dict() == t["answer"] for e, t in zip(turns, transcript, strict=True)
    )
    # later turns see the earlier ones
    if rounds == 2:
        assert transcript[2]["tokens"]["prompt"] > transcript[0]["tokens"]["prompt"]


def _gen(kind, parsed):
    answer = parse_answer(kind, json.dumps(parsed))
    return Generation(kind, "", "{}", answer, None, False, 10, 10, 0, 5, 0.0, 0.0, 0.0, "cold")


@pytest.mark.parametrize(
    ("bull", "bear", "approve", "frac", "passed", "why"),
    [
        (0.97, 0.04, True, 0.5, True, "unanimous"),
        (0.95, 0.05, True, 1.0, True, "unanimous"),  # both thresholds are inclusive
        (0.94, 0.01, True, 1.0, False, "bull confidence 0.94 < 0.95"),
        (0.99, 0.06, True, 1.0, False, "bear's strongest counter-argument 0.06 > 0.05"),
        (0.99, 0.00, False, 1.0, False, "risk manager rejects"),
        (0.99, 0.00, True, 0.0, False, "risk manager cuts the size to 0"),
    ],
)
def test_pass_rule(monkeypatch, rt, bull, bear, approve, frac, passed, why):
    d = Debate({"bull": rt, "bear": rt, "risk": rt})
    answers = {
        "bull": {"confidence": bull, "arguments": [{"point": "p", "strength": 0.9}]},
        "bear": {"arguments": [{"point": "weak", "strength": bear / 2}, {"point": "strong", "strength": bear}]},
        "risk": {"approve": approve, "size_fraction": frac, "reasons": ["r"]},
    }
    monkeypatch.setattr(d, "_call", lambda role, vals, deadline: _gen(role, answers[role]))
    v = d.debate(values(np.random.default_rng(0)), "BUY")
    assert v.passed is passed and why in v.reason
    assert v.size_fraction == frac and v.bear_strength == bear


def test_a_failed_turn_ends_the_debate_closed(monkeypatch, rt):
    d = Debate({"bull": rt, "bear": rt, "risk": rt}, rounds=2)
    seen = []

    def call(role, vals, deadline):
        seen.append(role)
        if role == "bear":
            raise LlmError("generation timed out after 60 s ([llm] timeout_s)")
        return _gen(role, {"confidence": 0.99, "arguments": [{"point": "p", "strength": 0.9}]})

    monkeypatch.setattr(d, "_call", call)
    v = d.debate(values(np.random.default_rng(0)), "BUY")
    assert seen == ["bull", "bear"] and not v.passed and v.reason.startswith("bear (round 1): generation timed out")
    assert v.transcript[-1].error.startswith("generation timed out")


def test_concurrent_debates_on_shared_runtimes_give_their_single_threaded_verdicts(nano, monkeypatch):
    """Regression (#12.11): concurrent ``on_bar`` calls can run Layer 3 at once, every role on one shared runtime.
    Each thread's debate (verdict and every turn of its transcript) equals a single-threaded run of the same values
    on a fresh runtime."""

    settings = LlmSettings(model=str(nano["q8"]), n_ctx=4096, n_threads=1)
    cases = [(values(np.random.default_rng(k), d), d) for k, d in enumerate(["BUY", "SELL", "BUY"])]

    def key(v):  # how much of a prompt came from the KV cache depends on the order of calls, nothing else may
        turns = [
            (
                e["role"],
                e.get("raw_answer"),
                e.get("think"),
                e.get("error"),
                {k: n for k, n in e.get("tokens", {}).items() if k != "prompt_evaluated"},
            )
            for e in (t.to_dict() for t in v.transcript)
        ]

        return v.passed, v.reason, v.bull_confidence, v.bear_strength, v.approve, v.size_fraction, turns

    ref_rt = LlmRuntime(settings)
    ref = [key(Debate({r: ref_rt for r in ("bull", "bear", "risk")}, think_budget=2).debate(v, d)) for v, d in cases]
    ref_rt.close()
    assert len({k[6][0][1] for k in ref}) > 1  # different values, different bull answers: a mix-up would show
    shared = LlmRuntime(settings)
    debate = Debate({r: shared for r in ("bull", "bear", "risk")}, think_budget=2)
    queue_up(monkeypatch, shared, len(cases))  # the first turns of every debate wait in the queue together
    got: dict[int, object] = {}

    def work(i: int) -> None:
        try:
            got[i] = key(debate.debate(*cases[i]))
        except Exception as exc:  # noqa: BLE001 - reported below
            got[i] = exc

    ths = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
    for t in ths:
        t.start()
    for t in ths:
        t.join(300)
    assert [got.get(i) for i in range(len(cases))] == ref
    assert shared.stats["calls"] == 3 * len(cases)
    shared.close()
