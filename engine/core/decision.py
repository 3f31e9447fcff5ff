"""The gate's answer for one bar: action, size, and for every layer whether it passed, by how much, why, how fast.

``Decision.to_dict()`` is JSON-serializable and validates against ``decision.schema.json`` (committed beside this
file, versioned by ``SCHEMA_VERSION``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fxgate.engine.core.records import Record, json_number

__all__ = ["LayerVerdict", "Decision", "SCHEMA_VERSION", "schema"]

SCHEMA_VERSION = 2  # 2: ``certification``


@dataclass(frozen=True, slots=True)
class LayerVerdict:
    name: str
    enabled: bool
    passed: bool
    score: float | None
    threshold: float | None
    reason: str
    latency_us: float
    #: typed records, owned by the layer that produced them: Layer 1 one ModelProbability per model, Layer 4 one
    #: ModuleResult per module evaluated, Layers 2 and 3 the LLM answers (fxgate.engine.core.records, models.llm)
    details: tuple[Record, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "enabled": self.enabled,
            "passed": self.passed,
            "score": json_number(self.score),
            "threshold": json_number(self.threshold),
            "reason": self.reason,
            "latency_us": self.latency_us,
            "details": [x.to_dict() for x in self.details],
        }


@dataclass(frozen=True, slots=True)
class Decision:
    ts: int
    symbol: str
    action: str  # "BUY" | "SELL" | "NONE"
    size: float
    confidence: float | None
    layers: tuple[LayerVerdict, ...]
    first_veto: str | None  # "input", "L1", "L4:vpin", ... or None when a signal is emitted
    config_hash: str
    model_hashes: dict[str, str] = field(default_factory=dict)
    version: str = ""
    schema_version: int = SCHEMA_VERSION
    #: what ``fxgate calibrate`` certified for this config's thresholds (target, delta, the calibration block, n,
    #: the method and the certified thresholds); None: the thresholds are not certified
    certification: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ts": self.ts,
            "symbol": self.symbol,
            "action": self.action,
            "size": self.size,
            "confidence": json_number(self.confidence),
            "layers": [v.to_dict() for v in self.layers],
            "first_veto": self.first_veto,
            "config_hash": self.config_hash,
            "model_hashes": dict(self.model_hashes),
            "version": self.version,
            "schema_version": self.schema_version,
            "certification": None if self.certification is None else dict(self.certification),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    def layer(self, name: str) -> LayerVerdict:
        for v in self.layers:
            if v.name == name:
                return v
        raise KeyError(name)

    @property
    def why(self) -> str:
        """One line: the action, or the first veto and its reason."""
        if self.first_veto is None:
            return f"{self.action} {self.size:g}: every enabled layer passed"
        for v in self.layers:
            if self.first_veto == v.name or self.first_veto.startswith(v.name + ":"):
                return f"NONE: {self.first_veto} — {v.reason}"
        for v in self.layers:  # a refused bar ("input", "internal"): its reason is on every enabled layer
            if v.enabled and v.reason.startswith("not evaluated: "):
                return f"NONE: {self.first_veto} — {v.reason.removeprefix('not evaluated: ')}"
        return f"NONE: {self.first_veto}"


def schema() -> dict[str, Any]:
    """The committed JSON Schema of ``Decision.to_dict()``."""
    return json.loads((Path(__file__).parent / "decision.schema.json").read_text())
