"""Layer 2 (and the runtime Layer 3 shares): GGUF LLMs on llama-cpp-python — deterministic, grammar-constrained,
prefix-cached, fail-closed.

* :mod:`~fxgate.models.llm.gguf` — :func:`verify_gguf` checks a model file before anything loads it (exists, GGUF
  magic, sha256, recorded in every Decision's ``model_hashes``).
* :mod:`~fxgate.models.llm.answers` — the role table: each role's typed answer (:class:`JudgeAnswer`,
  :class:`BullAnswer`, :class:`BearAnswer`, :class:`RiskAnswer`), its GBNF grammar and its parser, from one entry.
* :mod:`~fxgate.models.llm.cache` — :class:`VerdictCache` (SQLite): completed answers by everything that determines
  them, so a replay never recomputes a call it has made. Timeouts and errors are never cached.
* :mod:`~fxgate.models.llm.runtime` — :class:`LlmRuntime`: one model, one worker thread, a deadline on every call,
  the KV cache of static prompt prefixes. ``_llama`` holds the raw llama-cpp-python calls (the only import of it).
* :mod:`~fxgate.models.llm.judge` — :class:`Judge` turns the answer into Layer 2's pass/fail: the model's direction
  equals the proposed one and its certainty is >= the threshold.
"""

from fxgate.models.llm._llama import load_llama
from fxgate.models.llm.answers import (
    ROLES,
    Answer,
    Argument,
    BearAnswer,
    BullAnswer,
    JudgeAnswer,
    RiskAnswer,
    grammar_for,
    parse_answer,
)
from fxgate.models.llm.cache import VerdictCache
from fxgate.models.llm.errors import LlmError, ModelFileError
from fxgate.models.llm.generation import Generation, LlmSettings
from fxgate.models.llm.gguf import verify_gguf
from fxgate.models.llm.judge import Judge, JudgeRecord, JudgeVerdict
from fxgate.models.llm.runtime import PROTOCOL_VERSION, LlmRuntime

__all__ = [
    "LlmError",
    "ModelFileError",
    "LlmRuntime",
    "LlmSettings",
    "Generation",
    "VerdictCache",
    "Judge",
    "JudgeVerdict",
    "JudgeRecord",
    "Answer",
    "Argument",
    "JudgeAnswer",
    "BullAnswer",
    "BearAnswer",
    "RiskAnswer",
    "ROLES",
    "verify_gguf",
    "grammar_for",
    "parse_answer",
    "load_llama",
    "PROTOCOL_VERSION",
]
