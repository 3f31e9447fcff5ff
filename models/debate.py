"""Layer 3: the debate — a bull researcher, a bear researcher and a risk manager on local GGUF models.

Each turn is one grammar-constrained call (:mod:`fxgate.models.llm`): the bull argues *for* the proposed trade
(whatever its direction) with a confidence; the bear argues against it, rating each counter-argument's strength;
after ``rounds`` bull/bear exchanges the risk manager approves or rejects and may cut the proposed size (never raise
it). Two protocols (``[l3] parallel``):

* **parallel** (the default): in each round the bull and the bear both see the transcript of the *previous* rounds
  only, so they can run at once — as two sequences of one llama.cpp context when they share a runtime with
  ``n_seq >= 2`` (:meth:`LlmRuntime.generate_many`), otherwise one after the other with the same prompts (the same
  answers under greedy decoding). With one round the bear argues against the proposal, not against the bull's turn.
* **sequential**: the bear also sees the bull's turn of the same round (the transcript so far).

The risk manager always sees every turn. Layer 3 passes only when

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

from fxgate.engine.core.config import L3Config
from fxgate.engine.core.records import Record
from fxgate.models.llm import Answer, BearAnswer, BullAnswer, Generation, LlmError, LlmRuntime, RiskAnswer, grammar_for
from fxgate.models.llm.runtime import LlmCall
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
        parallel: bool = True,
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
        d = L3Config()  # the gate's defaults, so a bare Debate serves what the gate does
        names = {"bull": d.bull_template, "bear": d.bear_template, "risk": d.risk_template} | (templates or {})
        self.templates = {r: load_template(names[r]) for r in ROLES}
        for r, t in self.templates.items():
            if t.output != r:
                raise ValueError(f"{t.source}: output is {t.output!r}, the {r} role needs {r!r}")
        self.grammars = {r: grammar_for(r, max_items=max_items, max_chars=item_chars) for r in ROLES}
        self.timeout_s = timeout_s
        self.parallel = parallel

    def _prompt(self, role: str, values: dict[str, str]) -> Any:
        return self.runtimes[role].build(
            self.templates[role], values, think_budget=self.think_budget, answer_budget=self.answer_budget
        )

    def _calls(self, roles: tuple[str, ...], values: dict[str, str], deadline: float | None) -> list[Any]:
        """Run ``roles`` on the same values: each result is its Generation or the exception its call raised. Two
        roles on one runtime that holds two sequences decode together; otherwise one after the other, stopping at
        the first failure (the debate ends there)."""
        rt = self.runtimes[roles[0]]
        together = len(roles) > 1 and all(self.runtimes[r] is rt for r in roles) and rt.settings.n_seq >= len(roles)
        if not together:
            out: list[Any] = []
            for role in roles:
                try:
                    g = self._call(role, values, deadline)
                except Exception as exc:  # noqa: BLE001 - the caller turns it into the role's failed turn
                    return [*out, exc]
                out.append(g)
                if g.error is not None or g.parsed is None:
                    break
            return out
        prompts: list[Any] = []
        for role in roles:
            try:
                prompts.append(self._prompt(role, values))
            except Exception as exc:  # noqa: BLE001 - a prompt over its budget fails that role
                prompts.append(exc)
        todo = [i for i, p in enumerate(prompts) if not isinstance(p, Exception)]
        if todo:
            calls = [
                LlmCall(prompts[i], roles[i], self.think_budget, self.answer_budget, self.grammars[roles[i]])
                for i in todo
            ]
            left = None if deadline is None else max(0.0, deadline - time.perf_counter())
            for i, g in zip(todo, rt.generate_many(calls, timeout_s=left), strict=True):
                prompts[i] = g
        return prompts

    def _call(self, role: str, values: dict[str, str], deadline: float | None) -> Generation:
        rt = self.runtimes[role]
        prompt = self._prompt(role, values)
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

        # Each step's roles see the same transcript: the turns of the steps before it.
        pair: list[tuple[str, ...]] = [("bull", "bear")] if self.parallel else [("bull",), ("bear",)]
        plan = [(r, roles) for r in range(1, self.rounds + 1) for roles in pair] + [(self.rounds, ("risk",))]
        for rnd, roles in plan:
            vals = dict(values, transcript="\n\n".join(texts) or "(no turns yet)")  # what prompt_values shows
            try:
                results = self._calls(roles, vals, deadline)
            except Exception as exc:  # noqa: BLE001 - the gate must never see an exception from here
                results = [exc] * len(roles)
            step: list[str] = []
            for role, g in zip(roles, results, strict=False):  # in protocol order: the first failure is reported
                if isinstance(g, LlmError | ContextOverflow):
                    return failed(role, rnd, None, str(g))
                if isinstance(g, Exception):
                    return failed(role, rnd, None, f"internal error: {type(g).__name__}: {g}")
                a = g.parsed
                if g.error is not None or a is None:
                    return failed(role, rnd, g, g.error or "no answer")
                turns.append(DebateTurn(role, rnd, self.runtimes[role].sha256[:16], g))
                step.append(_turn_text(role, rnd, a))
                if isinstance(a, BullAnswer):
                    bull = a.confidence
                elif isinstance(a, BearAnswer):
                    bear = max([bear or 0.0] + [x.strength for x in a.arguments])
                elif isinstance(a, RiskAnswer):
                    risk = a
            texts += step
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
