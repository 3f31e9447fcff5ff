"""What a runtime call is configured with (:class:`LlmSettings`, the ``[llm]`` section) and what it returns
(:class:`Generation`: the reasoning, the raw and the typed answer, token counts and timings)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from fxgate.models.llm.answers import Answer, parse_answer

__all__ = ["LlmSettings", "Generation"]


@dataclass(frozen=True, kw_only=True)
class LlmSettings:
    """How to load and sample a model (the ``[llm]`` config section maps onto this)."""

    model: str
    sha256: str = ""  # expected sha256 prefix; empty: record whatever the file has
    n_ctx: int = 4096
    n_threads: int = 0  # 0: llama.cpp's default
    n_gpu_layers: int = 0
    n_batch: int = 256
    seed: int = 0
    temperature: float = 0.0  # 0: greedy (deterministic); > 0 samples with ``seed``
    top_p: float = 1.0
    top_k: int = 0
    timeout_s: float = 60.0
    chat_template: str = ""  # path to a Jinja file; empty: the GGUF's tokenizer.chat_template
    prefix_states: int = 8  # KV states of static prefixes kept in memory
    cpu_extra_buffers: bool = False  # llama.cpp AMX/repacked CPU weights (see load_llama)
    # sequences one context holds (LlmRuntime.generate_many): 2 lets the debate decode bull and bear together. Each
    # sequence gets the whole n_ctx budget: the context has n_ctx * n_seq cells, a stream of n_ctx per sequence
    n_seq: int = 1


@dataclass(frozen=True)
class Generation:
    """One completed call: the reasoning, the raw answer, the parsed answer, and where the time went."""

    kind: str  # the role: "judge" | "bull" | "bear" | "risk"
    think: str
    answer: str
    parsed: Answer | None  # the answer's dataclass (fxgate.models.llm.answers); None when malformed
    error: str | None  # a malformed answer (the call completed, the answer is unusable)
    think_truncated: bool
    n_prompt: int
    n_prompt_evaluated: int  # prompt tokens actually run through the model (the rest came from the KV cache)
    n_think: int
    n_answer: int
    prompt_s: float
    ttft_s: float  # time to the first generated token
    total_s: float
    prefix: str  # "kv" (already in the context), "state" (restored), "cold"
    cached: bool = False  # served from the verdict cache
    prompt_sections: tuple[str, ...] = ()
    dropped_sections: tuple[str, ...] = ()
    template: str = ""

    def token_counts(self) -> dict[str, int]:
        """The call's token counts as the Decision's LLM details show them."""
        return {
            "prompt": self.n_prompt,
            "prompt_evaluated": self.n_prompt_evaluated,
            "think": self.n_think,
            "answer": self.n_answer,
        }

    def to_dict(self) -> dict[str, Any]:
        """Every field, as JSON (the verdict cache's value)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["parsed"] = None if self.parsed is None else self.parsed.to_dict()
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Generation:
        d = dict(d)
        for k in ("prompt_sections", "dropped_sections"):
            d[k] = tuple(d.get(k, ()))
        # the typed answer is parsed again from the raw answer it was parsed from
        d["parsed"] = None if d.get("parsed") is None else parse_answer(d["kind"], d["answer"])
        return cls(**d)
