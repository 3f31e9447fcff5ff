"""Prompts for the LLM layers: versioned template files, the chat template, and the token budget.

One source for serving and training: the live judge (:mod:`fxgate.models.llm`), the debate
(:mod:`fxgate.models.debate`) and the training-data builders render prompts with the functions here, so the text a
model is trained on is the text it is served.

* **Template files** (``prompts/<role>.v<N>.toml``): a system prompt and ordered sections with a priority
  (0 = required) and a ``static`` flag (no per-bar values; static sections come first and, with the system prompt,
  form the prefix whose KV cache is reused). Placeholders are ``{name}``; JSON braces in the text are left alone.
  A static section may use only the :data:`STATIC_PLACEHOLDERS` (values fixed by the gate's configuration, the
  same on every bar: the formula catalogue of the configured modules), so the prefix is byte-identical across bars.
* **Values** (:func:`prompt_values`): the per-bar text of every placeholder. Version 1 templates use the prose keys
  (``bar``, ``proposal``, ``modules``, ``features``, ``formulas``); version 2 the compact ones (``bar_line``,
  ``proposal_line``, ``module_lines``, ``feature_line``) and the static ``catalogue``. Both are always produced, so a
  version 1 template renders exactly as it did (its text is part of the verdict-cache key and of the models
  trained on it).
* **Chat template**: the model's own Jinja template (from the GGUF metadata), rendered the way Hugging Face
  ``apply_chat_template`` renders it (sandboxed Jinja, ``trim_blocks``/``lstrip_blocks``, ``loopcontrols``).
* **Budget**: when the rendered prompt is over its token budget (:func:`prompt_budget`: the context minus the
  thinking and answer budgets), whole sections are dropped, least important first — a number is never cut in half.
  If the required sections alone do not fit, :class:`ContextOverflow`. The live judge and the training data
  (:mod:`fxgate.training.datasets`, SFT, DPO, ``fxgate train eval``) apply the same budget with the same function,
  so a prompt that loses its formula section when served is trained without it too.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from fxgate.engine.core.errors import FxgateError
from fxgate.engine.core.records import ModelProbability, ModuleResult

__all__ = [
    "PromptTemplate",
    "Section",
    "RenderedPrompt",
    "ContextOverflow",
    "TemplateError",
    "load_template",
    "render_chat",
    "build_prompt",
    "prompt_budget",
    "GENERATION_RESERVE",
    "R1_CHAT_TEMPLATE",
    "prompt_values",
    "fill_section",
    "formulas_of",
    "shown_results",
    "catalogue_of",
    "STATIC_PLACEHOLDERS",
    "KEY_FEATURES",
    "fmt_num",
    "module_line",
    "first_clause",
    "COMPACT_DIGITS",
]

PROMPTS_DIR = Path(__file__).parent / "prompts"
#: DeepSeek-R1-Distill-Qwen's chat template (tokenizer_config.json of deepseek-ai/DeepSeek-R1-Distill-Qwen-7B,
#: revision with the ``<think>\n`` generation prompt), used for the models fxgate builds and exports.
R1_CHAT_TEMPLATE = (PROMPTS_DIR / "deepseek_r1_distill.jinja").read_text()
OUTPUT_KINDS = ("judge", "bull", "bear", "risk")
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
#: placeholders whose value depends only on the gate's configuration (never on the bar): the only ones a static
#: section may use. ``catalogue``: the formula of every configured module (:func:`catalogue_of`).
STATIC_PLACEHOLDERS = frozenset({"catalogue"})


class TemplateError(FxgateError, ValueError):
    """A bad prompt template file; the message names the file and the field."""


class ContextOverflow(FxgateError):
    """The required sections of a prompt do not fit in the model's context with the generation budgets."""


@dataclass(frozen=True, slots=True)
class Section:
    name: str
    priority: int
    static: bool
    text: str


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    name: str
    version: int
    output: str
    system: str
    sections: tuple[Section, ...]
    source: str  # file path
    sha256: str  # of the file's bytes

    @property
    def id(self) -> str:
        return f"{self.name}.v{self.version}"

    @property
    def placeholders(self) -> tuple[str, ...]:
        """The placeholders the sections use, each once, in order of first use."""
        return tuple(dict.fromkeys(m.group(1) for s in self.sections for m in _PLACEHOLDER.finditer(s.text)))


def _by_version(stem: str) -> tuple[int, str]:
    """``judge.v2`` -> (2, "judge"): the bundled templates listed version by version, each version's roles together."""
    name, _, v = stem.rpartition(".v")
    return (int(v), name) if v.isdigit() else (0, stem)


def load_template(name_or_path: str | Path) -> PromptTemplate:
    """Load ``judge.v1`` (a bundled template) or a path to a ``.toml`` template file."""
    s = str(name_or_path)
    p = PROMPTS_DIR / f"{s}.toml" if not s.endswith(".toml") and "/" not in s else Path(s).expanduser()
    try:
        raw = p.read_bytes()
    except OSError as exc:
        known = ", ".join(sorted((x.stem for x in PROMPTS_DIR.glob("*.toml")), key=_by_version))
        raise TemplateError(f"{p}: cannot read prompt template ({exc.strerror}). Bundled templates: {known}") from exc
    try:
        d = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{p}: not valid TOML ({exc})") from exc
    for key, typ in (("name", str), ("version", int), ("output", str), ("system", str), ("section", list)):
        if not isinstance(d.get(key), typ):
            raise TemplateError(f"{p}: field {key!r} is missing or not a {typ.__name__}")
    if d["output"] not in OUTPUT_KINDS:
        raise TemplateError(f"{p}: output = {d['output']!r}; use one of {', '.join(OUTPUT_KINDS)}")
    sections = []
    seen_dynamic = False
    for i, s in enumerate(d["section"]):
        where = f"{p}: [[section]] #{i + 1}"
        if not isinstance(s.get("name"), str) or not isinstance(s.get("text"), str):
            raise TemplateError(f"{where}: needs a name and a text")
        pr = s.get("priority", 0)
        if not isinstance(pr, int) or pr < 0:
            raise TemplateError(f"{where} ({s['name']}): priority must be an integer >= 0")
        static = bool(s.get("static", False))
        per_bar = sorted({m.group(1) for m in _PLACEHOLDER.finditer(s["text"])} - STATIC_PLACEHOLDERS)
        if static and per_bar:
            raise TemplateError(
                f"{where} ({s['name']}): a static section cannot contain a placeholder with a per-bar value "
                f"({', '.join('{' + k + '}' for k in per_bar)}); static sections may use only "
                f"{', '.join('{' + k + '}' for k in sorted(STATIC_PLACEHOLDERS))}"
            )
        if static and seen_dynamic:
            raise TemplateError(f"{where} ({s['name']}): static sections must come before every dynamic section")
        seen_dynamic |= not static
        sections.append(Section(s["name"], pr, static, s["text"]))
    if not any(s.priority == 0 for s in sections):
        raise TemplateError(f"{p}: no required (priority 0) section")
    return PromptTemplate(
        d["name"], d["version"], d["output"], d["system"], tuple(sections), str(p), hashlib.sha256(raw).hexdigest()
    )


# -- chat template ------------------------------------------------------------------------------------------------
_JINJA_CACHE: dict[str, Any] = {}


def _compiled(template: str) -> Any:
    t = _JINJA_CACHE.get(template)
    if t is None:

        def raise_exception(message: str) -> None:
            raise jinja2.exceptions.TemplateError(message)

        def tojson(
            x: Any,
            ensure_ascii: bool = False,
            indent: int | None = None,
            separators: Any = None,
            sort_keys: bool = False,
        ) -> str:
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        t = _JINJA_CACHE[template] = env.from_string(template)
    return t


def render_chat(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    bos_token: str,
    eos_token: str,
    add_generation_prompt: bool = True,
) -> str:
    """Render ``messages`` with a chat template exactly as ``transformers``' ``apply_chat_template`` does."""
    return _compiled(template).render(
        messages=list(messages), bos_token=bos_token, eos_token=eos_token, add_generation_prompt=add_generation_prompt
    )


# -- building a prompt under a token budget -----------------------------------------------------------------------
#: tokens kept free beyond the thinking and answer budgets: the closing ``</think>`` and the separators
GENERATION_RESERVE = 8


def prompt_budget(n_ctx: int, think_budget: int, answer_budget: int) -> int:
    """The most tokens a prompt may have in a context of ``n_ctx`` so that ``think_budget`` reasoning tokens and
    ``answer_budget`` answer tokens still fit. One function for serving and training."""
    return n_ctx - think_budget - answer_budget - GENERATION_RESERVE


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    text: str  # the full chat-rendered prompt, ending with the generation prompt
    prefix_text: str  # the static prefix (system + static sections), a string prefix of ``text``
    messages: tuple[dict[str, str], ...]
    sections: tuple[str, ...]  # names of the sections kept
    dropped: tuple[str, ...]  # names of the sections dropped for the budget, in drop order
    n_tokens: int
    template_id: str


def fill_section(section: Section, values: Mapping[str, str], source: str) -> str:
    """One section's text with every placeholder filled (unbudgeted: the training-data builders write whole
    sections; :func:`build_prompt` drops sections to fit the budget)."""

    def sub(m: re.Match[str]) -> str:
        k = m.group(1)
        if k not in values:
            raise TemplateError(
                f"{source}: section {section.name!r} uses {{{k}}}, which the caller did not provide "
                f"(provided: {', '.join(sorted(values))})"
            )
        return str(values[k])

    return _PLACEHOLDER.sub(sub, section.text)


def build_prompt(
    tpl: PromptTemplate,
    values: Mapping[str, str],
    *,
    chat_template: str,
    bos_token: str,
    eos_token: str,
    count_tokens: Callable[[str], int],
    budget: int,
) -> RenderedPrompt:
    """Fill the sections, render with the chat template, and drop whole sections (highest priority number first,
    later sections first among equals) until the prompt has at most ``budget`` tokens."""
    filled = [(s, fill_section(s, values, tpl.source)) for s in tpl.sections]
    keep = [True] * len(filled)
    dropped: list[str] = []

    def render(add_gen: bool, static_only: bool = False) -> tuple[str, list[dict[str, str]]]:
        parts = [t for (s, t), k in zip(filled, keep, strict=True) if k and (s.static or not static_only)]
        msgs = [{"role": "system", "content": tpl.system}, {"role": "user", "content": "\n\n".join(parts)}]
        return render_chat(
            chat_template, msgs, bos_token=bos_token, eos_token=eos_token, add_generation_prompt=add_gen
        ), msgs

    while True:
        text, msgs = render(True)
        n = count_tokens(text)
        if n <= budget:
            break
        order = sorted(
            (i for i, (s, _) in enumerate(filled) if keep[i] and s.priority > 0),
            key=lambda i: (-filled[i][0].priority, -i),
        )
        if not order:
            raise ContextOverflow(
                f"prompt {tpl.id}: the required sections need {n} tokens, over the budget of "
                f"{budget} (context minus the thinking and answer budgets). Fix: raise [llm] n_ctx "
                f"or lower the thinking budget"
            )
        keep[order[0]] = False
        dropped.append(filled[order[0]][0].name)
    # The static prefix: system + static sections + the separator that follows them in the full prompt.
    prefix, _ = render(False, static_only=True)
    if any(k and not s.static for (s, _), k in zip(filled, keep, strict=True)):
        prefix += "\n\n"
    if not text.startswith(prefix):  # a chat template that puts per-turn text before the system prompt
        prefix = ""
    return RenderedPrompt(
        text,
        prefix,
        tuple(msgs),
        tuple(s.name for (s, _), k in zip(filled, keep, strict=True) if k),
        tuple(dropped),
        n,
        tpl.id,
    )


# -- the values a prompt shows ------------------------------------------------------------------------------------
#: features shown to the LLM layers (explained in the templates' glossary)
KEY_FEATURES = (
    "ROC5",
    "ROC20",
    "MA20",
    "STD20",
    "RSV20",
    "CORR20",
    "CNTP20",
    "SUMP20",
    "RV_D",
    "RV_W",
    "BV_D",
    "BNS_Z",
    "LM",
    "SESS_ASIA",
    "SESS_LONDON",
    "SESS_NY",
    "SPREAD_REL",
)


def fmt_num(x: Any, digits: int = 6) -> str:
    """A number as text with ``digits`` significant digits; non-finite values as ``n/a``."""
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.{digits}g}"


class _Documented(Protocol):
    """A certainty module (class or instance) with its formula-catalogue entry (see fxgate.modules' base class)."""

    name: str
    formula: str
    citation: str


def catalogue_of(formulas: Mapping[str, str]) -> str:
    """The static ``catalogue`` value: one line per module of ``formulas`` (:func:`formulas_of` of the configured
    modules, in configured order), whatever the bar. A function of the configuration only, so the static prefix
    that shows it is byte-identical across bars and its KV cache is reused."""
    return "\n".join(f"- {name}: {text}" for name, text in formulas.items()) or "(none)"


#: significant digits of the compact (version 2) prompt's numbers: probabilities, scores, thresholds and most
#: features are read to 3 digits; the ratios to the close (ROC5, ROC20, MA20) sit near 1, where the information is
#: in the 4th to 6th digit, and prices keep the 6 a quote has
COMPACT_DIGITS = 3
_FEATURE_DIGITS = {"ROC5": 6, "ROC20": 6, "MA20": 6}


def first_clause(reason: str) -> str:
    """A module reason up to its first ``"; "`` outside brackets: the decisive comparison, which a module's reason
    states first (the rest is diagnostics: intervals, sample sizes, the method's settings)."""
    depth = 0
    for i, ch in enumerate(reason):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        elif ch == ";" and depth == 0 and reason.startswith("; ", i):
            return reason[:i]
    return reason


def module_line(m: ModuleResult) -> str:
    """One certainty module in the compact prompts: ``name pass|FAIL score/threshold`` (a score that is not a
    finite number reads ``none``); a failed module adds the first clause of its reason (a passing module's reason
    only restates that its score is on the right side of the threshold)."""
    score = fmt_num(m.score, COMPACT_DIGITS)
    line = f"{m.name} {'pass' if m.passed else 'FAIL'} {'none' if score == 'n/a' else score}/"
    line += fmt_num(m.threshold, COMPACT_DIGITS)
    return line if m.passed else f"{line}: {first_clause(m.reason)}"


def formulas_of(modules: Iterable[_Documented]) -> dict[str, str]:
    """The ``formulas`` argument of :func:`prompt_values` from the modules themselves: name -> "formula (citation)"
    for each module that documents a formula and that prompts show (``in_prompt``). The gate and the
    training-data builders both build it here, so the prompt a model is trained on shows the formulas the served
    one shows."""
    return {m.name: f"{m.formula} ({m.citation})" for m in modules if m.formula and getattr(m, "in_prompt", True)}


def shown_results(results: Sequence[ModuleResult], modules: Iterable[_Documented]) -> list[ModuleResult]:
    """The verdicts of ``results`` that prompts show: those of the configured ``modules`` whose ``in_prompt`` is
    true (the gate and the training-data builders both filter here)."""
    hidden = {m.name for m in modules if not getattr(m, "in_prompt", True)}
    return [r for r in results if r.name not in hidden] if hidden else list(results)


def prompt_values(
    *,
    symbol: str,
    timeframe: str,
    ts_ns: int,
    bar: Mapping[str, float | None],
    direction: str,
    horizon: int,
    probs: Sequence[ModelProbability] | None,
    features: Mapping[str, float],
    modules: Sequence[ModuleResult] = (),
    formulas: Mapping[str, str],
    size: float | None = None,
    judge: str = "",
    transcript: str = "",
) -> dict[str, str]:
    """The text of every placeholder, from the bar and what the other layers said. Pure: the training-data builders
    call it with the same arguments the gate uses. ``formulas``: module name -> "formula (citation)"
    (:func:`formulas_of` of the configured modules): version 1's ``formulas`` shows those of the modules in
    ``modules``, version 2's static ``catalogue`` all of them (the same on every bar)."""
    t = datetime.datetime.fromtimestamp(ts_ns / 1e9, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    b = bar
    bar_txt = (
        f"{symbol or 'instrument'} {timeframe} bar opening {t}: open {fmt_num(b.get('open'))}, high "
        f"{fmt_num(b.get('high'))}, low {fmt_num(b.get('low'))}, close {fmt_num(b.get('close'))}, volume "
        f"{fmt_num(b.get('volume'))}, spread {fmt_num(b.get('spread'))}"
    )
    prob_txt = ", ".join(f"{p.model} {fmt_num(p.p_up, 4)}" for p in probs or ()) or "not available"
    prop = f"{direction} over the next {horizon} bar{'s' if horizon != 1 else ''}"
    if size is not None:
        prop += f", proposed size {fmt_num(size, 4)}"
    prop += f". Layer-1 calibrated P(up): {prob_txt}."
    mods = "\n".join(
        f"- {m.name}: {'pass' if m.passed else 'FAIL'}, score {fmt_num(m.score, 4)} "
        f"(threshold {fmt_num(m.threshold, 4)}): {m.reason}"
        for m in modules
    )
    feats = "\n".join(f"- {k}: {fmt_num(features.get(k))}" for k in KEY_FEATURES if k in features)
    formula_txt = "\n".join(f"- {m.name}: {formulas[m.name]}" for m in modules if m.name in formulas)
    # the compact (version 2) values: the same facts, fewer tokens
    bar_line = (
        f"{symbol or 'instrument'} {timeframe} {t}: open {fmt_num(b.get('open'))} high {fmt_num(b.get('high'))} "
        f"low {fmt_num(b.get('low'))} close {fmt_num(b.get('close'))} volume {fmt_num(b.get('volume'))} "
        f"spread {fmt_num(b.get('spread'), COMPACT_DIGITS)}"
    )
    p_line = ", ".join(f"{p.model} {fmt_num(p.p_up, COMPACT_DIGITS)}" for p in probs or ()) or "not available"
    proposal_line = f"{direction} over {horizon} bar{'s' if horizon != 1 else ''}; P(up) {p_line}"
    feature_line = ", ".join(
        f"{k} {fmt_num(features.get(k), _FEATURE_DIGITS.get(k, COMPACT_DIGITS))}" for k in KEY_FEATURES if k in features
    )
    return {
        "symbol": symbol,
        "timeframe": timeframe,
        "time": t,
        "bar": bar_txt,
        "direction": direction,
        "horizon": str(horizon),
        "proposal": prop,
        "modules": mods or "(none evaluated)",
        "features": feats or "(none)",
        "formulas": formula_txt or "(none)",
        "size": fmt_num(size, 4),
        "judge": judge or "(not consulted)",
        "transcript": transcript or "(no turns yet)",
        "catalogue": catalogue_of(formulas),
        "bar_line": bar_line,
        "proposal_line": proposal_line,
        "module_lines": "\n".join(module_line(m) for m in modules) or "(none evaluated)",
        "feature_line": feature_line or "(none)",
    }
