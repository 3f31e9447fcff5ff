"""Shared by the LLM-layer tests: JSON Schemas of the answers, random prompt values, and a way to make calls from
several threads wait in the runtime's queue together."""

from __future__ import annotations

import threading

import numpy as np

from fxgate.engine.core.records import ModelProbability, ModuleResult
from fxgate.engine.layers import JudgeLayer
from fxgate.models.prompt import KEY_FEATURES, formulas_of, prompt_values
from fxgate.modules import REGISTRY

# JSON Schemas of the answers: an independent statement of what the GBNF grammars must admit.
NUM01 = {"type": "number", "minimum": 0, "maximum": 1}
STRS = {"type": "array", "minItems": 1, "maxItems": 3, "items": {"type": "string", "minLength": 1, "maxLength": 120}}
ARGS = {
    "type": "array",
    "minItems": 1,
    "maxItems": 3,
    "items": {
        "type": "object",
        "additionalProperties": False,
        "required": ["point", "strength"],
        "properties": {"point": STRS["items"], "strength": NUM01},
    },
}
SCHEMAS = {
    "judge": {
        "type": "object",
        "additionalProperties": False,
        "required": ["direction", "certainty", "reasons"],
        "properties": {"direction": {"enum": ["BUY", "SELL", "NONE"]}, "certainty": NUM01, "reasons": STRS},
    },
    "bull": {
        "type": "object",
        "additionalProperties": False,
        "required": ["confidence", "arguments"],
        "properties": {"confidence": NUM01, "arguments": ARGS},
    },
    "bear": {
        "type": "object",
        "additionalProperties": False,
        "required": ["arguments"],
        "properties": {"arguments": ARGS},
    },
    "risk": {
        "type": "object",
        "additionalProperties": False,
        "required": ["approve", "size_fraction", "reasons"],
        "properties": {"approve": {"type": "boolean"}, "size_fraction": NUM01, "reasons": STRS},
    },
}


def values(rng: np.random.Generator, direction: str = "BUY") -> dict[str, str]:
    px = float(rng.uniform(0.8, 1.6))
    return prompt_values(
        symbol="EURUSD",
        timeframe="H1",
        ts_ns=int(1.5e18 + rng.integers(0, 10**16)),
        bar={
            "open": px,
            "high": px * 1.001,
            "low": px * 0.999,
            "close": px * 1.0003,
            "volume": float(rng.integers(1, 900)),
            "spread": 8e-5,
        },
        direction=direction,
        horizon=1,
        probs=[
            ModelProbability("xgboost", 0.97),
            ModelProbability("lightgbm", float(rng.uniform(0.9, 1))),
            ModelProbability("catboost", 0.96),
        ],
        features={k: float(rng.normal()) for k in KEY_FEATURES},
        modules=[ModuleResult("vpin", float(rng.uniform()), True, 0.9, "ok")],
        formulas=formulas_of([REGISTRY["vpin"]]),
        size=0.1,
    )


def queue_up(monkeypatch, runtime, n_calls: int) -> None:
    """Hold the worker inside its first llama.cpp evaluation until ``n_calls`` calls have entered ``generate``, so
    that calls from several threads wait in the queue at once (what per-call state kept on the runtime, instead of
    in the call, would get wrong)."""
    lock, all_in, held = threading.Lock(), threading.Event(), []
    entered = [0]
    real_eval, real_generate = runtime.llm.eval, runtime.generate

    def eval_(tokens):
        if not held:  # only the worker evaluates
            held.append(True)
            all_in.wait(60)
        return real_eval(tokens)

    def generate(*args, **kwargs):
        with lock:
            entered[0] += 1
            if entered[0] >= n_calls:
                all_in.set()
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(runtime.llm, "eval", eval_)
    monkeypatch.setattr(runtime, "generate", generate)


def install_judge(gate, cfg, judge, facts) -> None:
    """Replace ``gate``'s Layer 2 by a JudgeLayer asking ``judge`` with the prompt facts ``facts`` (tests that
    record the prompts a gate builds)."""
    layer = JudgeLayer(cfg, judge, facts, None)
    gate.layers = tuple(layer if la.name == "L2" else la for la in gate.layers)
    gate._slow_layers = tuple(la for la in gate.layers if la.cost == "slow")
    gate._reported["L2"] = layer
