"""The gate's answer for one bar: action, size, and for every layer whether it passed, by how much, why, how fast.

``Decision.to_dict()`` is JSON-serializable and validates against ``decision.schema.json`` (committed beside this
file, versioned by ``SCHEMA_VERSION``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LayerVerdict", "Decision", "SCHEMA_VERSION", "schema"]

SCHEMA_VERSION = 1
LAYERS = ("L1", "L2", "L3", "L4")


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass(frozen=True, slots=True)
class LayerVerdict:
    name: str
    enabled: bool
    passed: bool
    score: float | None
    threshold: float | None
    reason: str
    latency_us: float
    #: Layer 1: each model's calibrated P(up); Layer 4: each module's verdict
    details: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["score"], d["threshold"] = _num(self.score), _num(self.threshold)
        d["details"] = [{k: (_num(v) if isinstance(v, float) else v) for k, v in x.items()} for x in self.details]
        return d


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "ts": self.ts,
            "symbol": self.symbol,
            "action": self.action,
            "size": self.size,
            "confidence": _num(self.confidence),
            "layers": [v.to_dict() for v in self.layers],
            "first_veto": self.first_veto,
            "config_hash": self.config_hash,
            "model_hashes": dict(self.model_hashes),
            "version": self.version,
            "schema_version": self.schema_version,
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
