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
from dataclasses import dataclass, field
from typing import Any

from fxgate.models.llm import Generation, LlmError, LlmRuntime, grammar_for
from fxgate.models.prompt import ContextOverflow, fmt_num, load_template

__all__ = ["Debate", "DebateVerdict", "ROLES"]

ROLES = ("bull", "bear", "risk")


@dataclass
class DebateVerdict:
    passed: bool
    reason: str
    bull_confidence: float | None = None
    bear_strength: float | None = None
    approve: bool | None = None
    size_fraction: float | None = None
    transcript: list[dict[str, Any]] = field(default_factory=list)

    def details(self) -> tuple[dict[str, Any], ...]:
        summary = {
            "role": "summary",
            "bull_confidence": self.bull_confidence,
            "bear_strength": self.bear_strength,
            "approve": self.approve,
            "size_fraction": self.size_fraction,
        }
        return (summary, *self.transcript)


def _turn_text(role: str, rnd: int, parsed: dict[str, Any]) -> str:
    if role == "risk":
        head = f"Risk manager: {'approve' if parsed['approve'] else 'reject'}, size fraction {parsed['size_fraction']}"
        return head + "".join(f"\n- {r}" for r in parsed["reasons"])
    head = f"Round {rnd}, {role}" + (f" (confidence {fmt_num(parsed['confidence'], 4)})" if role == "bull" else "")
    return head + ":" + "".join(f"\n- {a['point']} (strength {fmt_num(a['strength'], 4)})" for a in parsed["arguments"])


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
        v = DebateVerdict(False, "")
        texts: list[str] = []
        bear_max = 0.0
        plan = [(r, role) for r in range(1, self.rounds + 1) for role in ("bull", "bear")] + [(self.rounds, "risk")]
        for rnd, role in plan:
            vals = dict(values, transcript="\n\n".join(texts))
            entry: dict[str, Any] = {"role": role, "round": rnd, "model": self.runtimes[role].sha256[:16]}
            try:
                g = self._call(role, vals, deadline)
            except (LlmError, ContextOverflow) as exc:
                entry["error"] = str(exc)
                v.transcript.append(entry)
                v.reason = f"{role} (round {rnd}): {exc}"
                return v
            except Exception as exc:  # noqa: BLE001 - the gate must never see an exception from here
                entry["error"] = f"internal error: {type(exc).__name__}: {exc}"
                v.transcript.append(entry)
                v.reason = f"{role} (round {rnd}): {entry['error']}"
                return v
            entry.update(
                {
                    "answer": g.parsed,
                    "raw_answer": g.answer,
                    "think": g.think,
                    "think_truncated": g.think_truncated,
                    "cached": g.cached,
                    "seconds": round(g.total_s, 4),
                    "tokens": {
                        "prompt": g.n_prompt,
                        "prompt_evaluated": g.n_prompt_evaluated,
                        "think": g.n_think,
                        "answer": g.n_answer,
                    },
                    "template": g.template,
                    "dropped_sections": list(g.dropped_sections),
                }
            )
            if g.error is not None or g.parsed is None:
                entry["error"] = g.error or "no answer"
                v.transcript.append(entry)
                v.reason = f"{role} (round {rnd}): {entry['error']}"
                return v
            v.transcript.append(entry)
            texts.append(_turn_text(role, rnd, g.parsed))
            if role == "bull":
                v.bull_confidence = g.parsed["confidence"]
            elif role == "bear":
                bear_max = max([bear_max] + [a["strength"] for a in g.parsed["arguments"]])
                v.bear_strength = bear_max
            else:
                v.approve, v.size_fraction = g.parsed["approve"], g.parsed["size_fraction"]
        bc, bs = v.bull_confidence or 0.0, v.bear_strength or 0.0
        fails = []
        if bc < self.threshold:
            fails.append(f"bull confidence {bc:.2f} < {self.threshold:g}")
        if bs > self.bear_max_strength:
            fails.append(f"bear's strongest counter-argument {bs:.2f} > {self.bear_max_strength:g}")
        if not v.approve:
            fails.append("risk manager rejects")
        elif not (v.size_fraction or 0) > 0:
            fails.append("risk manager cuts the size to 0")
        v.passed = not fails
        v.reason = ("unanimous: " if v.passed else "no consensus: ") + (
            "; ".join(fails)
            if fails
            else f"bull {bc:.2f}, bear {bs:.2f}, risk approves {v.size_fraction:g} of the size for {direction}"
        )
        return v
