"""The answers of the four LLM roles (judge, bull, bear, risk): typed records, GBNF grammars and parsers, all three
generated from ONE role table (:data:`ROLES`).

Each role's answer is a JSON object whose fields are listed once, in :data:`ROLES`, with their kind. From that entry
come the answer's frozen dataclass (what the judge and the debate read: ``answer.direction``, ``answer.arguments``),
its GBNF grammar (what llama.cpp lets the model write) and its parser (the second check, after the grammar). Adding a
field is one line in the table and one in the dataclass; the grammar and the parser follow.

The grammar admits canonical ``json.dumps`` spacing only, numbers in [0, 1] with at most four decimals, strings of
1..``max_chars`` printable ASCII characters without quotes or backslashes (no escapes, and no multi-byte characters
that a token boundary could split), and 1..``max_items`` list items.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Argument",
    "BullAnswer",
    "BearAnswer",
    "JudgeAnswer",
    "RiskAnswer",
    "Answer",
    "Field",
    "Role",
    "ROLES",
    "DIRECTIONS",
    "grammar_for",
    "parse_answer",
]

DIRECTIONS = ("BUY", "SELL", "NONE")


@dataclass(frozen=True, slots=True)
class Argument:
    """One bull or bear argument: the point made and how strongly it bears on the trade."""

    point: str
    strength: float

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self, ARGUMENT_FIELDS)


@dataclass(frozen=True, slots=True)
class JudgeAnswer:
    """Layer 2: the judge's direction, its certainty, and its reasons."""

    direction: str  # "BUY" | "SELL" | "NONE"
    certainty: float
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self, ROLES["judge"].fields)


@dataclass(frozen=True, slots=True)
class BullAnswer:
    """Layer 3: the bull's confidence in the proposed trade and its arguments for it."""

    confidence: float
    arguments: tuple[Argument, ...]

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self, ROLES["bull"].fields)


@dataclass(frozen=True, slots=True)
class BearAnswer:
    """Layer 3: the bear's counter-arguments, each with its strength."""

    arguments: tuple[Argument, ...]

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self, ROLES["bear"].fields)


@dataclass(frozen=True, slots=True)
class RiskAnswer:
    """Layer 3: the risk manager's approval and the fraction of the proposed size it allows."""

    approve: bool
    size_fraction: float
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self, ROLES["risk"].fields)


Answer = JudgeAnswer | BullAnswer | BearAnswer | RiskAnswer


# -- field kinds: each knows its grammar and how to check a parsed JSON value ---------------------------------------
@dataclass(frozen=True, slots=True)
class Field:
    """One field of an answer object: its JSON key and its kind.

    ``kind`` is ``"direction"`` (BUY, SELL or NONE), ``"num01"`` (a number in [0, 1]), ``"bool"``, ``"text"`` (a
    non-empty string), ``"texts"`` (a non-empty list of them) or ``"arguments"`` (a non-empty list of
    :class:`Argument` objects)."""

    key: str
    kind: str


ARGUMENT_FIELDS = (Field("point", "text"), Field("strength", "num01"))


@dataclass(frozen=True, slots=True)
class Role:
    """A role's answer: the dataclass it parses into and its fields, in the order the model writes them."""

    name: str
    answer: type
    fields: tuple[Field, ...]


#: THE role table: every answer's fields, in JSON order. Grammars, parsers and ``to_dict`` all read it.
ROLES: Mapping[str, Role] = {
    r.name: r
    for r in (
        Role(
            "judge",
            JudgeAnswer,
            (Field("direction", "direction"), Field("certainty", "num01"), Field("reasons", "texts")),
        ),
        Role("bull", BullAnswer, (Field("confidence", "num01"), Field("arguments", "arguments"))),
        Role("bear", BearAnswer, (Field("arguments", "arguments"),)),
        Role(
            "risk",
            RiskAnswer,
            (Field("approve", "bool"), Field("size_fraction", "num01"), Field("reasons", "texts")),
        ),
    )
}


def _to_dict(answer: Any, fields: tuple[Field, ...]) -> dict[str, Any]:
    """The answer as the JSON object the model wrote (lists for tuples), in the table's field order."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v.to_dict() if isinstance(v, Argument) else v

    return {f.key: plain(getattr(answer, f.key)) for f in fields}


def _role(kind: str) -> Role:
    try:
        return ROLES[kind]
    except KeyError:
        raise ValueError(f"unknown answer kind {kind!r}") from None


# -- grammars -----------------------------------------------------------------------------------------------------
def _lit(text: str) -> str:
    """A GBNF string literal of ``text`` (which holds no backslashes)."""
    return '"' + text.replace('"', '\\"') + '"'


def _object_rule(fields: tuple[Field, ...], more: Callable[[str], str]) -> str:
    """The right-hand side of an object's rule: literal text merged between the value rules, joined by spaces."""
    parts: list[str] = []
    text = "{"
    for i, f in enumerate(fields):
        text += ("" if i == 0 else ", ") + f'"{f.key}": '
        if f.kind in ("texts", "arguments"):
            item = "str" if f.kind == "texts" else "arg"
            parts += [_lit(text + "["), item, more(item)]
            text = "]"
        else:
            value = {"direction": "dir", "num01": "num", "bool": '("true" | "false")', "text": "str"}[f.kind]
            parts += [_lit(text), value]
            text = ""
    return " ".join([*parts, _lit(text + "}")])


def grammar_for(kind: str, *, max_items: int = 3, max_chars: int = 120) -> str:
    """The GBNF grammar of a role's answer (see the module docstring for what it admits), from :data:`ROLES`."""
    if max_items < 1 or max_chars < 1:
        raise ValueError("max_items and max_chars must be >= 1")
    role = _role(kind)

    def more(item: str) -> str:
        return f'(", " {item}){{0,{max_items - 1}}}' if max_items > 1 else ""

    kinds = {f.kind for f in role.fields}
    rules = [f"root ::= {_object_rule(role.fields, more)}"]
    if "direction" in kinds:
        rules.append("dir ::= " + " | ".join(_lit(f'"{d}"') for d in DIRECTIONS))
    if "arguments" in kinds:
        rules.append(f"arg ::= {_object_rule(ARGUMENT_FIELDS, more)}")
    rules.append('num ::= ("0" ("." [0-9] [0-9]? [0-9]? [0-9]?)?) | ("1" (".0" "0"? "0"? "0"?)?)')
    rules.append(f'str ::= "\\"" [\\x20\\x21\\x23-\\x5B\\x5D-\\x7E]{{1,{max_chars}}} "\\""')
    return "\n".join(rules) + "\n"


# -- parsers ------------------------------------------------------------------------------------------------------
def _num01(v: Any, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not (0 <= v <= 1) or not math.isfinite(v):
        raise ValueError(f"{key!r} must be a number in [0, 1], got {v!r}")
    return float(v)


def _value(f: Field, v: Any) -> Any:
    """The checked value of field ``f``; ValueError with what is wrong."""
    if f.kind == "direction":
        if v not in DIRECTIONS:
            raise ValueError(f"{f.key} must be {', '.join(DIRECTIONS[:-1])} or {DIRECTIONS[-1]}, got {v!r}")
        return v
    if f.kind == "num01":
        return _num01(v, f.key)
    if f.kind == "bool":
        if not isinstance(v, bool):
            raise ValueError(f"{f.key!r} must be true or false")
        return v
    if f.kind == "text":
        if not isinstance(v, str) or not v:
            raise ValueError(f"each argument needs a non-empty {f.key!r}")
        return v
    if f.kind == "texts":
        if not isinstance(v, list) or not v or not all(isinstance(s, str) and s for s in v):
            raise ValueError(f"{f.key!r} must be a non-empty list of non-empty strings")
        return tuple(v)
    if f.kind == "arguments":
        if not isinstance(v, list) or not v:
            raise ValueError(f"{f.key!r} must be a non-empty list")
        return tuple(_object(Argument, ARGUMENT_FIELDS, a) for a in v)
    raise AssertionError(f"field kind {f.kind!r} has no parser")  # a table entry without a kind above


def _object(cls: type, fields: tuple[Field, ...], d: Any) -> Any:
    d = d if isinstance(d, dict) else {}  # a non-object item misses every field: the first one is reported
    return cls(**{f.key: _value(f, d.get(f.key)) for f in fields})


def parse_answer(kind: str, text: str) -> Answer:
    """Parse and validate a role's JSON answer into its dataclass (the grammar already constrains it; this is the
    second check). Raises ValueError with what is wrong."""
    role = _role(kind)
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"answer is not JSON ({exc.msg} at char {exc.pos})") from exc
    if not isinstance(d, dict):
        raise ValueError("answer is not a JSON object")
    return _object(role.answer, role.fields, d)
