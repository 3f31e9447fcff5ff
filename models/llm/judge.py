"""Layer 2: the judge. One grammar-constrained call; it passes when the model's direction equals the proposed one and
its certainty is >= the threshold. Every failure (timeout, context overflow, malformed answer, internal error) is a
fail-closed verdict with the reason, never an exception."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from fxgate.engine.core.config import L2Config
from fxgate.engine.core.records import Record
from fxgate.models.llm.answers import JudgeAnswer, grammar_for
from fxgate.models.llm.errors import LlmError
from fxgate.models.llm.generation import Generation
from fxgate.models.llm.runtime import LlmRuntime
from fxgate.models.prompt import ContextOverflow, load_template

__all__ = ["Judge", "JudgeVerdict", "JudgeRecord"]

#: the gate's default template ([l2] template), so a bare Judge serves what the gate serves
DEFAULT_TEMPLATE = L2Config().template


@dataclass(frozen=True, slots=True)
class JudgeRecord:
    """The judge's call as Layer 2's ``details`` item in the Decision: its answer, reasoning, tokens and cache use."""

    role: ClassVar[str] = "judge"
    direction: str | None
    certainty: float | None
    generation: Generation | None

    @property
    def answer(self) -> JudgeAnswer | None:
        """The judge's typed answer; None when the call failed or the answer was malformed."""
        g = self.generation
        return g.parsed if g is not None and isinstance(g.parsed, JudgeAnswer) else None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"role": self.role, "direction": self.direction, "certainty": self.certainty}
        g = self.generation
        if g is not None:
            d.update(
                {
                    "answer": None if g.parsed is None else g.parsed.to_dict(),
                    "raw_answer": g.answer,
                    "think": g.think,
                    "think_truncated": g.think_truncated,
                    "tokens": g.token_counts(),
                    "cached": g.cached,
                    "prefix": g.prefix,
                    "template": g.template,
                    "dropped_sections": list(g.dropped_sections),
                }
            )
        return d


@dataclass(frozen=True)
class JudgeVerdict:
    """Layer 2's verdict on one proposal."""

    passed: bool
    direction: str | None  # the model's direction, None when it failed
    certainty: float | None
    reason: str
    generation: Generation | None

    @property
    def reasons(self) -> tuple[str, ...]:
        """The model's reasons; empty when there is no parsed answer."""
        g = self.generation
        return g.parsed.reasons if g is not None and isinstance(g.parsed, JudgeAnswer) else ()

    def details(self) -> tuple[Record, ...]:
        return (JudgeRecord(self.direction, self.certainty, self.generation),)


class Judge:
    """Layer 2. ``judge(values, direction)`` never raises: every failure is a fail-closed verdict."""

    def __init__(
        self,
        runtime: LlmRuntime,
        *,
        template: str | Path = DEFAULT_TEMPLATE,
        threshold: float = 0.95,
        think_budget: int = 384,
        answer_budget: int = 512,
        max_reasons: int = 3,
        reason_chars: int = 120,
    ) -> None:
        self.runtime = runtime
        self.template = load_template(template)
        if self.template.output != "judge":
            raise ValueError(f"{self.template.source}: output is {self.template.output!r}, the judge needs 'judge'")
        self.threshold = threshold
        self.think_budget, self.answer_budget = think_budget, answer_budget
        self.grammar = grammar_for("judge", max_items=max_reasons, max_chars=reason_chars)

    def judge(self, values: dict[str, str], direction: str, *, timeout_s: float | None = None) -> JudgeVerdict:
        try:
            prompt = self.runtime.build(
                self.template, values, think_budget=self.think_budget, answer_budget=self.answer_budget
            )
            g = self.runtime.generate(
                prompt,
                kind="judge",
                think_budget=self.think_budget,
                answer_budget=self.answer_budget,
                grammar=self.grammar,
                timeout_s=timeout_s,
            )
        except (LlmError, ContextOverflow) as exc:
            return JudgeVerdict(False, None, None, str(exc), None)
        except Exception as exc:  # noqa: BLE001 - the gate must never see an exception from here
            return JudgeVerdict(False, None, None, f"internal error: {type(exc).__name__}: {exc}", None)
        if g.error is not None or not isinstance(g.parsed, JudgeAnswer):
            return JudgeVerdict(False, None, None, g.error or "no answer", g)
        d, c = g.parsed.direction, g.parsed.certainty
        if d != direction:
            reason = f"judge says {d} (certainty {c:.2f}) against the proposed {direction}"
            return JudgeVerdict(False, d, c, reason, g)
        if c < self.threshold:
            return JudgeVerdict(False, d, c, f"judge agrees ({d}) but certainty {c:.2f} < {self.threshold:g}", g)
        return JudgeVerdict(True, d, c, f"judge agrees ({d}), certainty {c:.2f} >= {self.threshold:g}", g)
