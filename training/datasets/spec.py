"""What a data build is asked for and what it records: the split specification (horizon, fractions, embargo, the
serving budget of the judge the data is for), the split and file kinds, and how a data directory's manifest is
recognised and read back."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fxgate.engine.config import GateConfig, L2Config, LlmConfig, serving_mismatch
from fxgate.engine.core.config import l4_hash
from fxgate.models.prompt import prompt_budget
from fxgate.training.errors import DatasetError

__all__ = [
    "SPLITS",
    "KINDS",
    "DATA_MANIFEST_KIND",
    "SplitSpec",
    "is_data_manifest",
    "read_json",
    "data_budget",
    "prompt_budget_of",
    "l4_hash",
    "serving_record",
    "check_served_by",
]

SPLITS = ("train", "val", "test")
KINDS = ("features", "scenarios", "dpo")
#: ``manifest.json["kind"]`` of a data directory (a run directory's manifest has ``fxgate_manifest``)
DATA_MANIFEST_KIND = "fxgate-train-data"


@dataclass(frozen=True, kw_only=True)
class SplitSpec:
    horizon: int = 1
    val_frac: float = 0.15
    test_frac: float = 0.15
    embargo: int = 0  # bars; 0 = the horizon
    spread: float = 0.0  # price units, for bars without a spread column
    #: the serving budget of the judge the data is for ([llm] n_ctx, [l2] think_budget and answer_budget)
    n_ctx: int = field(default_factory=lambda: LlmConfig().n_ctx)
    think_budget: int = field(default_factory=lambda: L2Config().think_budget)
    answer_budget: int = field(default_factory=lambda: L2Config().answer_budget)

    def __post_init__(self) -> None:
        if self.n_ctx < 256 or self.think_budget < 0 or self.answer_budget < 16:
            raise DatasetError(
                f"n_ctx = {self.n_ctx}, think_budget = {self.think_budget}, answer_budget = "
                f"{self.answer_budget}: need n_ctx >= 256, think_budget >= 0 and answer_budget >= 16 "
                f"(the [llm] and [l2] rules)"
            )
        if self.n_ctx - self.think_budget - self.answer_budget < 64:
            raise DatasetError(
                f"n_ctx = {self.n_ctx} leaves no room for a prompt after the thinking "
                f"({self.think_budget}) and answer ({self.answer_budget}) budgets. Fix: a larger "
                f"n_ctx or smaller budgets"
            )
        if self.horizon < 1:
            raise DatasetError(f"horizon = {self.horizon}: must be >= 1 bar")
        if not (0 < self.val_frac < 1 and 0 < self.test_frac < 1 and self.val_frac + self.test_frac < 0.9):
            raise DatasetError("val_frac and test_frac must be in (0, 1) with val_frac + test_frac < 0.9")
        if self.embargo and self.embargo < self.horizon:
            raise DatasetError(
                f"embargo = {self.embargo} bars is shorter than the horizon ({self.horizon}): "
                f"labels would overlap the next split. Fix: embargo >= horizon (or 0 for the "
                f"horizon)"
            )

    @property
    def gap(self) -> int:
        return max(self.embargo, self.horizon)


def prompt_budget_of(spec: SplitSpec) -> int:
    """The prompt token budget of the serving configuration ``spec`` names (the live judge's formula)."""
    return prompt_budget(spec.n_ctx, spec.think_budget, spec.answer_budget)


def read_json(p: Path) -> Any:
    """The parsed JSON file, or None when it is missing or unreadable."""
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_data_manifest(m: Any) -> bool:
    """Whether a parsed ``manifest.json`` is one written by :func:`~fxgate.training.datasets.build` (a data
    directory, not a run)."""
    return isinstance(m, dict) and (m.get("kind") == DATA_MANIFEST_KIND or ("cuts" in m and "counts" in m))


def data_budget(data: str | Path) -> dict[str, int]:
    """The serving budget a data directory was built for (its manifest's ``prompt_budget``; the defaults for a
    directory built before it was recorded)."""
    m = read_json(Path(data) / "manifest.json")
    d = SplitSpec()
    b = (m or {}).get("prompt_budget") or {}
    return {
        "n_ctx": int(b.get("n_ctx", d.n_ctx)),
        "think_budget": int(b.get("think_budget", d.think_budget)),
        "answer_budget": int(b.get("answer_budget", d.answer_budget)),
    }


def serving_record(cfg: GateConfig, source: str | None) -> dict[str, Any]:
    """The manifest's ``serving``: the ``[l4]`` section the prompts were built for, its hash, and where the config
    came from (None: the default config)."""
    return {
        "config": source,
        "l4": {"enabled": cfg.l4.enabled, "modules": list(cfg.l4.modules), "params": cfg.l4.params},
        "l4_hash": l4_hash(cfg.l4),
    }


def check_served_by(manifest: dict[str, Any], cfg: GateConfig, where: str = "config") -> None:
    """Raise :class:`DatasetError` unless the data a ``manifest`` describes was built for the ``[l4]`` section of
    ``cfg`` (the config a model trained on it will be served with). The gate makes the same check when it loads a
    model from a ``fxgate train all`` run (:func:`~fxgate.engine.config.serving_mismatch`)."""
    problem = serving_mismatch(manifest.get("serving"), cfg.l4)
    if problem is not None:
        raise DatasetError(f"{where}: a model trained on this data: {problem}")
