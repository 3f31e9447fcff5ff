"""The gate's layers: each one ``evaluate(candidate) -> LayerVerdict``, run cheapest first by :class:`~fxgate.engine.
gate.Gate`.

A :class:`Candidate` is one accepted bar on its way through the layers: the bar, its features, Layer 1's
probabilities, the direction all three models lean (the candidate rule, :func:`~fxgate.engine.core.records.
candidate_direction`), and what the layers so far decided (verdicts, first veto, action, size). A layer reads it and
may set the action (L1), the module results (L4), the size (sizing, L3).

The :class:`Layer` protocol: ``name`` (the Decision's layer name, or ``"sizing"``), ``enabled``, ``cost`` (``"fast"``:
evaluated under the gate's lock with the state it just updated; ``"slow"``: the LLM layers, outside it),
``reported`` (whether the Decision lists it: sizing is not a layer of the Decision schema, its veto is
``first_veto = "sizing"``), ``unavailable`` (a standing failure such as "no model", reported on every bar instead of
"not evaluated"), ``applies(c)`` and ``evaluate(c)``. What is the same for every layer — "disabled by config",
"not evaluated: L1 vetoed", an internal error — is built here once (:func:`off`, :func:`skipped`, :func:`failed`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from fxgate.engine.core.bars import Bar
from fxgate.engine.core.config import GateConfig, L2Config, L3Config
from fxgate.engine.core.decision import LayerVerdict
from fxgate.engine.core.records import ModelProbability, ModuleResult
from fxgate.models.ensemble import MODEL_NAMES
from fxgate.models.prompt import formulas_of, prompt_values, shown_results
from fxgate.modules import CertaintyModule

__all__ = [
    "Candidate",
    "Layer",
    "L1Layer",
    "L4Layer",
    "SizingLayer",
    "JudgeLayer",
    "DebateLayer",
    "off",
    "skipped",
    "failed",
    "unavailable",
    "REPORTED",
]

_NS = time.perf_counter_ns
#: The Decision's layers, in the order a Decision lists them (the evaluation order is the gate's, cheapest first).
REPORTED = ("L1", "L2", "L3", "L4")


@dataclass
class Candidate:
    """One accepted bar between the layers. Mutable on purpose: each layer adds what it decided."""

    bar: Bar
    features: np.ndarray
    probs: np.ndarray | None  # calibrated P(up) per Layer-1 model, None in sample or without a model
    direction: int  # the candidate direction (+1/-1) or 0
    spread: float
    in_sample: bool
    full: bool  # mode = "full": evaluate every enabled layer for diagnostics
    bar_index: int = 0  # the gate's count of accepted bars (Context.bar_index)
    latency_us: dict[str, float] = field(default_factory=dict)  # state-update time already spent per layer
    layers: dict[str, LayerVerdict] = field(default_factory=dict)
    first_veto: str | None = None
    action: str = "NONE"
    confidence: float | None = None
    size: float = 0.0
    modules: tuple[ModuleResult, ...] = ()
    failed_module: str = ""  # the first Layer-4 module that failed (the veto's name: "L4:<module>")
    judge_reasons: str = ""  # the judge's answer, for the debate's prompt
    llm_prob: float = math.nan  # the judge's P(up): its certainty for BUY, 1 - certainty for SELL (NaN: no answer)
    prompt: dict[str, str] | None = None  # the LLM prompt's placeholders, shared by the judge and the debate
    l1_probs: tuple[ModelProbability, ...] | None = None  # Layer 1's records of probs, once it has evaluated them
    stage: str = ""  # the layer (or "L4:module") being evaluated: an exception there is that layer's failure
    isolated: tuple[ModuleResult, ...] = ()  # Gate(trace=True): every module's verdict alone (BarRecord.isolated)
    size_alone: float = math.nan  # Gate(trace=True): the sizing modules' size, vetoed or not

    @property
    def proposed(self) -> str | None:
        """The direction the LLM layers are asked about: the action, or in full mode whatever the models lean."""
        if self.action != "NONE":
            return self.action
        return {1: "BUY", -1: "SELL"}.get(self.direction) if self.full else None

    def model_probabilities(self) -> tuple[ModelProbability, ...]:
        if self.probs is None:
            return ()
        if self.l1_probs is not None:  # Layer 1 built them (the same records): one set per bar
            return self.l1_probs
        return tuple(ModelProbability(n, float(p)) for n, p in zip(MODEL_NAMES, self.probs, strict=False))


class Layer(Protocol):
    name: str
    enabled: bool
    cost: str  # "fast" | "slow"
    reported: bool
    threshold: float | None
    off_reason: str
    off_vetoes: bool

    @property
    def unavailable(self) -> str | None: ...

    def applies(self, c: Candidate) -> bool: ...

    def evaluate(self, c: Candidate) -> LayerVerdict: ...

    def veto_name(self, c: Candidate) -> str: ...


# -- the verdicts every layer shares -------------------------------------------------------------------------------
def off(layer: Layer, latency_us: float = 0.0) -> LayerVerdict:
    return LayerVerdict(layer.name, False, False, None, layer.threshold, layer.off_reason, latency_us)


def skipped(layer: Layer, why: str | None, latency_us: float = 0.0) -> LayerVerdict:
    """A layer not evaluated on this bar (an earlier veto, a refused bar): ``why`` is the cause, when there is one."""
    reason = f"not evaluated: {why}" if why else "not evaluated"
    return LayerVerdict(layer.name, True, False, None, layer.threshold, reason, latency_us)


def unavailable(layer: Layer, why: str, latency_us: float = 0.0) -> LayerVerdict:
    """A layer that cannot run at all (no model loaded): fails closed on every bar, with the fix in ``why``."""
    return LayerVerdict(layer.name, True, False, None, layer.threshold, why, latency_us)


def failed(name: str, enabled: bool, reason: str, old: LayerVerdict | None = None) -> LayerVerdict:
    """A layer that raised: fails closed with the error as its reason (keeping what it had measured)."""
    return LayerVerdict(
        name, enabled, False, None, None, reason, old.latency_us if old else 0.0, old.details if old else ()
    )


class _Base:
    cost: ClassVar[str] = "fast"
    reported: ClassVar[bool] = True
    off_reason = "disabled by config"
    off_vetoes: ClassVar[bool] = False  # whether the layer being off vetoes every bar (L1: nothing proposes)
    threshold: float | None = None

    @property
    def unavailable(self) -> str | None:
        return None

    def applies(self, c: Candidate) -> bool:
        return True

    def veto_name(self, c: Candidate) -> str:
        return self.name  # type: ignore[attr-defined]


# -- Layer 1 -------------------------------------------------------------------------------------------------------
class L1Layer(_Base):
    """XGBoost, LightGBM and CatBoost agree, each with calibrated confidence >= threshold."""

    name = "L1"
    off_reason = "disabled by config: nothing proposes a direction, so no signal can be emitted"
    off_vetoes = True

    def __init__(self, cfg: GateConfig, ensemble: Any, in_sample_until: int | None) -> None:
        self.enabled = cfg.l1.enabled
        self.threshold = cfg.l1.threshold
        self.ensemble = ensemble
        self.in_sample_until = in_sample_until

    @property
    def unavailable(self) -> str | None:
        if self.ensemble is None:
            return (
                "no Layer-1 model loaded. Fix: load a bundle (fxgate fit --out bundle/; "
                "Gate.from_config(..., bundle=...))"
            )
        return None

    def evaluate(self, c: Candidate) -> LayerVerdict:
        spent = c.latency_us.get(self.name, 0.0)
        if c.in_sample:
            until = np.datetime64(self.in_sample_until, "ns")
            why = (
                f"in sample: this bar is inside the Layer-1 bundle's training window (labels up to {until}Z); "
                "only later bars get out-of-sample predictions"
            )
            return LayerVerdict(self.name, True, False, None, self.threshold, why, spent)
        t0 = _NS()
        v = self.ensemble.verdict_from_probs(c.probs, self.threshold)
        lat = spent + (_NS() - t0) / 1e3
        c.l1_probs = v.probs
        if v.passed:
            c.action, c.confidence = v.direction, v.confidence
        return LayerVerdict(self.name, True, v.passed, v.confidence, self.threshold, v.reason, lat, tuple(v.probs))


# -- Layer 4 -------------------------------------------------------------------------------------------------------
class L4Layer(_Base):
    """Every configured certainty module passes (in configured order; cheapest mode stops at the first failure)."""

    name = "L4"

    def __init__(self, cfg: GateConfig, modules: list[CertaintyModule]) -> None:
        self.enabled = cfg.l4.enabled
        self.modules = modules

    def evaluate(self, c: Candidate) -> LayerVerdict:
        t0 = _NS()
        results: list[ModuleResult] = []
        failing: list[ModuleResult] = []
        for m in self.modules:
            c.stage = f"L4:{m.name}"
            r = m.verdict()
            results.append(r)
            if not r.passed:
                failing.append(r)
                if not c.full:
                    break
        c.stage = self.name
        lat = c.latency_us.get(self.name, 0.0) + (_NS() - t0) / 1e3
        n = len(self.modules)
        ok = not failing and len(results) == n
        if ok:
            reason = f"all {n} modules passed"
        else:
            more = f" (+{len(failing) - 1} more failing)" if len(failing) > 1 else ""
            reason = f"{failing[0].name}: {failing[0].reason}{more}"
        c.failed_module = failing[0].name if failing else ""
        c.modules = tuple(results)
        return LayerVerdict(
            self.name, True, ok, sum(r.passed for r in results) / max(1, n), 1.0, reason, lat, c.modules
        )

    def veto_name(self, c: Candidate) -> str:
        return f"L4:{c.failed_module}"


# -- sizing ----------------------------------------------------------------------------------------------------------
class SizingLayer(_Base):
    """Size = min(suggested fractions of the modules that size) × ``[sizing] scale``, capped at ``max_fraction``.

    One unit: a fraction of capital per signal. Modules that size declare
    :meth:`~fxgate.modules.CertaintyModule.suggested_fraction` (None: the module does not size); an undefined (NaN)
    suggestion sizes 0 whatever the order; with no sizing module the size is ``min(scale, max_fraction)``. A
    size of 0 vetoes (``first_veto = "sizing"``). Not a layer of the Decision: its errors are Layer 4's (the sizes
    come from Layer-4 module state), and it runs under the lock because it reads that state.
    """

    name = "sizing"
    reported = False
    enabled = True

    def __init__(self, cfg: GateConfig, modules: list[CertaintyModule]) -> None:
        self.scale = cfg.sizing.scale
        self.cap = cfg.sizing.max_fraction
        self.llm = cfg.l2.enabled or cfg.l3.enabled
        self.modules = modules

    def applies(self, c: Candidate) -> bool:
        # the LLM layers see the size in their prompt, also in full mode on bars an earlier layer vetoed
        return c.action != "NONE" or (self.llm and c.full and c.direction != 0)

    def size(self) -> float:
        fractions = [f for m in self.modules if (f := m.suggested_fraction()) is not None]
        if not all(np.isfinite(f) for f in fractions):
            return 0.0
        base = min(fractions) if fractions else 1.0
        return float(min(max(base, 0.0) * self.scale, self.cap))

    def evaluate(self, c: Candidate) -> LayerVerdict:
        c.size = self.size()
        ok = c.size > 0 or c.action == "NONE"
        why = f"size {c.size:g} of capital" if c.size > 0 else "size 0: a sizing module suggests no position"
        return LayerVerdict(self.name, True, ok, c.size, 0.0, why, 0.0)


# -- Layers 2 and 3 ----------------------------------------------------------------------------------------------
class _LlmLayer(_Base):
    cost = "slow"

    def __init__(self, lc: L2Config | L3Config, error: str | None) -> None:
        self.enabled = lc.enabled
        self.threshold = lc.threshold
        self.error = error

    @property
    def unavailable(self) -> str | None:
        return self.error

    def applies(self, c: Candidate) -> bool:
        return c.proposed is not None


class PromptFacts:
    """What the LLM prompt shows about a bar, built once per bar and shared by the judge and the debate."""

    def __init__(
        self, symbol: str, timeframe: str, horizon: int, modules: list[CertaintyModule], names: list[str]
    ) -> None:
        self.symbol, self.timeframe, self.horizon = symbol, timeframe, horizon
        #: each configured module's catalogue entry (the modules own their formula), fixed when the gate starts: the
        #: version 2 templates show all of them in the static prefix ({catalogue}: the same text on every bar, so its
        #: KV cache is reused), version 1 those of the modules a prompt shows
        self.formulas: Mapping[str, str] = formulas_of(modules)
        self.names = tuple(names)
        self.modules = tuple(modules)  # which verdicts a prompt shows (``in_prompt``)

    def values(self, c: Candidate) -> dict[str, str]:
        """The prompt's placeholders for this bar, built once and kept on the candidate (each bar has its own)."""
        if c.prompt is not None:
            return c.prompt
        b = c.bar
        v = prompt_values(
            symbol=self.symbol or b.symbol,
            timeframe=self.timeframe,
            ts_ns=int(b.ts),
            bar={
                "open": b.open,
                "high": b.high,
                "low": b.low,
                "close": b.close,
                "volume": b.volume,
                "spread": c.spread,
            },
            direction=str(c.proposed),
            horizon=self.horizon,
            probs=c.model_probabilities() or None,
            features=dict(zip(self.names, (float(x) for x in c.features), strict=True)),
            modules=shown_results(c.modules, self.modules),
            formulas=self.formulas,
            size=c.size,
        )
        c.prompt = v
        return v


class JudgeLayer(_LlmLayer):
    """Layer 2: the LLM judge answers the same direction as Layer 1 with certainty >= threshold."""

    name = "L2"

    def __init__(self, cfg: GateConfig, judge: Any, facts: PromptFacts, error: str | None) -> None:
        super().__init__(cfg.l2, error)
        self.judge, self.facts = judge, facts

    def evaluate(self, c: Candidate) -> LayerVerdict:
        t0 = _NS()
        jv = self.judge.judge(self.facts.values(c), str(c.proposed))
        if jv.direction is not None:
            if jv.certainty is not None and math.isfinite(jv.certainty):
                c.llm_prob = jv.certainty if jv.direction == "BUY" else 1.0 - jv.certainty
            c.judge_reasons = f"{jv.direction}, certainty {jv.certainty:.2f}: " + "; ".join(jv.reasons)
        lat = (_NS() - t0) / 1e3
        return LayerVerdict(self.name, True, jv.passed, jv.certainty, self.threshold, jv.reason, lat, jv.details())


class DebateLayer(_LlmLayer):
    """Layer 3: bull, bear and risk manager on the same local model; unanimous or no trade (may cut the size)."""

    name = "L3"

    def __init__(self, cfg: GateConfig, debate: Any, facts: PromptFacts, error: str | None) -> None:
        super().__init__(cfg.l3, error)
        self.debate, self.facts = debate, facts

    def evaluate(self, c: Candidate) -> LayerVerdict:
        t0 = _NS()
        values = self.facts.values(c)
        dv = self.debate.debate(dict(values, judge=c.judge_reasons) if c.judge_reasons else values, str(c.proposed))
        if dv.passed and dv.size_fraction is not None:
            c.size *= dv.size_fraction
        lat = (_NS() - t0) / 1e3
        return LayerVerdict(
            self.name, True, dv.passed, dv.bull_confidence, self.threshold, dv.reason, lat, dv.details()
        )
