"""Layer 3: the debate — a bull researcher, a bear researcher and a risk manager on local GGUF models.

Each turn is one grammar-constrained call (:mod:`fxgate.models.llm`): the bull argues *for* the proposed trade
(whatever its direction) with a confidence; the bear argues against it, rating each counter-argument's strength;
after ``rounds`` bull/bear exchanges (each side sees the transcript so far) the risk manager approves or rejects
and may cut the proposed size (never raise it). Layer 3 passes only when

* the bull's final confidence >= ``threshold``,
* the bear's strongest counter-argument, over all rounds, has strength <= ``bear_max_strength``, and
* the risk manager approves with a size fraction > 0.

Any failed turn (timeout, malformed answer, missing model) ends the debate and fails closed; the transcript so far
is kept. The whole debate shares one deadline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

from fxgate.engine.core.records import Record
from fxgate.models.llm import Answer, BearAnswer, BullAnswer, Generation, LlmError, LlmRuntime, RiskAnswer, grammar_for
from fxgate.models.prompt import ContextOverflow, fmt_num, load_template

__all__ = ["Debate", "DebateVerdict", "DebateSummary", "DebateTurn", "ROLES"]

ROLES = ("bull", "bear", "risk")


@dataclass(frozen=True, slots=True)
class DebateTurn:
    """One turn of the transcript: who spoke in which round, on which model, and the call (or why it failed)."""

    role: str  # "bull" | "bear" | "risk"
    round: int
    model: str  # the first 16 hex digits of the role's GGUF sha256
    generation: Generation | None  # None when the call raised (timeout, overflow, internal error)
    error: str | None = None  # the call's failure or its malformed answer; None for a usable answer

    @property
    def answer(self) -> Answer | None:
        """The role's typed answer; None when the call failed or the answer was malformed."""
        return None if self.generation is None else self.generation.parsed

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"role": self.role, "round": self.round, "model": self.model}
        g = self.generation
        if g is not None:
            d.update(
                {
                    "answer": None if g.parsed is None else g.parsed.to_dict(),
                    "raw_answer": g.answer,
                    "think": g.think,
                    "think_truncated": g.think_truncated,
                    "cached": g.cached,
                    "seconds": round(g.total_s, 4),
                    "tokens": g.token_counts(),
                    "template": g.template,
                    "dropped_sections": list(g.dropped_sections),
                }
            )
        if self.error is not None:
            d["error"] = self.error
        return d


@dataclass(frozen=True, slots=True)
class DebateSummary:
    """Layer 3's first ``details`` item: the numbers the pass rule read."""

    role: ClassVar[str] = "summary"
    bull_confidence: float | None
    bear_strength: float | None
    approve: bool | None
    size_fraction: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "bull_confidence": self.bull_confidence,
            "bear_strength": self.bear_strength,
            "approve": self.approve,
            "size_fraction": self.size_fraction,
        }


@dataclass(frozen=True)
class DebateVerdict:
    """Layer 3's verdict on one proposal, with the transcript so far (complete unless a turn failed)."""

    passed: bool
    reason: str
    bull_confidence: float | None = None  # the last bull turn's confidence
    bear_strength: float | None = None  # the strongest bear argument over all rounds
    approve: bool | None = None
    size_fraction: float | None = None  # of the proposed size, in [0, 1]
    transcript: tuple[DebateTurn, ...] = ()

    def details(self) -> tuple[Record, ...]:
        summary = DebateSummary(self.bull_confidence, self.bear_strength, self.approve, self.size_fraction)
        return (summary, *self.transcript)


def _turn_text(role: str, rnd: int, answer: Answer) -> str:
    """A completed turn as the later turns' prompts show it (the ``{transcript}`` placeholder)."""
    if isinstance(answer, RiskAnswer):
        head = f"Risk manager: {'approve' if answer.approve else 'reject'}, size fraction {answer.size_fraction}"
        return head + "".join(f"\n- {r}" for r in answer.reasons)
    conf = f" (confidence {fmt_num(answer.confidence, 4)})" if isinstance(answer, BullAnswer) else ""
    args = answer.arguments if isinstance(answer, BullAnswer | BearAnswer) else ()
    return f"Round {rnd}, {role}{conf}:" + "".join(f"\n- {a.point} (strength {fmt_num(a.strength, 4)})" for a in args)


class Debate:
    """Layer 3. ``debate(values, direction)`` never raises: every failure is a fail-closed verdict."""

    def __init__(
        self,
        runtimes: dict[str, LlmRuntime],
        *,
        rounds: int = 1,
        threshold: float = 0.95,
        bear_max_strength: float = 0.05,
        think_budget: int = 256,
        answer_budget: int = 512,
        templates: dict[str, str] | None = None,
        max_items: int = 3,
        item_chars: int = 120,
        timeout_s: float | None = None,
    ) -> None:
        missing = [r for r in ROLES if r not in runtimes]
        if missing:
            raise ValueError(f"Debate needs a runtime for every role; missing {missing}")
        if rounds < 1:
            raise ValueError("rounds must be >= 1")
        self.runtimes = runtimes
        self.rounds = rounds
        self.threshold, self.bear_max_strength = threshold, bear_max_strength
        self.think_budget, self.answer_budget = think_budget, answer_budget
        names = {r: f"{r}.v1" for r in ROLES} | (templates or {})
        self.templates = {r: load_template(names[r]) for r in ROLES}
        for r, t in self.templates.items():
            if t.output != r:
                raise ValueError(f"{t.source}: output is {t.output!r}, the {r} role needs {r!r}")
        self.grammars = {r: grammar_for(r, max_items=max_items, max_chars=item_chars) for r in ROLES}
        self.timeout_s = timeout_s

    def _call(self, role: str, values: dict[str, str], deadline: float | None) -> Generation:
        rt = self.runtimes[role]
        prompt = rt.build(
            self.templates[role], values, think_budget=self.think_budget, answer_budget=self.answer_budget
        )
        left = None if deadline is None else max(0.0, deadline - time.perf_counter())
        return rt.generate(
            prompt,
            kind=role,
            think_budget=self.think_budget,
            answer_budget=self.answer_budget,
            grammar=self.grammars[role],
            timeout_s=left,
        )

    def debate(self, values: dict[str, str], direction: str) -> DebateVerdict:
        timeout = self.timeout_s if self.timeout_s is not None else self.runtimes["bull"].settings.timeout_s
        deadline = time.perf_counter() + timeout
        turns: list[DebateTurn] = []
        texts: list[str] = []
        bull: float | None = None
        bear: float | None = None
        risk: RiskAnswer | None = None

        def failed(role: str, rnd: int, g: Generation | None, error: str) -> DebateVerdict:
            # the risk manager speaks last: a failed turn never has its answer
            turns.append(DebateTurn(role, rnd, self.runtimes[role].sha256[:16], g, error))
            return DebateVerdict(False, f"{role} (round {rnd}): {error}", bull, bear, transcript=tuple(turns))

        plan = [(r, role) for r in range(1, self.rounds + 1) for role in ("bull", "bear")] + [(self.rounds, "risk")]
        for rnd, role in plan:
            vals = dict(values, transcript="\n\n".join(texts))
            try:
                g = self._call(role, vals, deadline)
            except (LlmError, ContextOverflow) as exc:
                return failed(role, rnd, None, str(exc))
            except Exception as exc:  # noqa: BLE001 - the gate must never see an exception from here
                return failed(role, rnd, None, f"internal error: {type(exc).__name__}: {exc}")
            a = g.parsed
            if g.error is not None or a is None:
                return failed(role, rnd, g, g.error or "no answer")
            turns.append(DebateTurn(role, rnd, self.runtimes[role].sha256[:16], g))
            texts.append(_turn_text(role, rnd, a))
            if isinstance(a, BullAnswer):
                bull = a.confidence
            elif isinstance(a, BearAnswer):
                bear = max([bear or 0.0] + [x.strength for x in a.arguments])
            elif isinstance(a, RiskAnswer):
                risk = a
        bc, bs = bull or 0.0, bear or 0.0
        approve, frac = (risk.approve, risk.size_fraction) if risk is not None else (None, None)
        fails = []
        if bc < self.threshold:
            fails.append(f"bull confidence {bc:.2f} < {self.threshold:g}")
        if bs > self.bear_max_strength:
            fails.append(f"bear's strongest counter-argument {bs:.2f} > {self.bear_max_strength:g}")
        if not approve:
            fails.append("risk manager rejects")
        elif not (frac or 0) > 0:
            fails.append("risk manager cuts the size to 0")
        reason = ("unanimous: " if not fails else "no consensus: ") + (
            "; ".join(fails)
            if fails
            else f"bull {bc:.2f}, bear {bs:.2f}, risk approves {frac:g} of the size for {direction}"
        )
        return DebateVerdict(not fails, reason, bull, bear, approve, frac, tuple(turns))
