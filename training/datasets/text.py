"""The text a scenario teaches: the reasoning built only from the prompt's inputs (never from the outcome), the
JSON verdict exactly as the judge's grammar writes it, the DPO pair's rejected answer, and the feature examples.

**Certainty targets are honest base rates**: the certainty in a target verdict is the frequency, on the training
split, with which that answer was right given the proposal (:func:`certainty_table`)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from fxgate.engine.core.records import ModuleResult
from fxgate.models.prompt import fmt_num
from fxgate.training.datasets.scenarios import Row

__all__ = ["MEANINGS", "think_text", "answer_text", "certainty_table", "completion", "rejected", "feature_example"]

MEANINGS = {
    "ROC5": "close 5 bars ago over the current close (above 1: the price fell)",
    "ROC20": "close 20 bars ago over the current close (above 1: the price fell)",
    "MA20": "20-bar mean close over the current close",
    "STD20": "20-bar standard deviation of the close, over the close",
    "RSV20": "position of the close in the 20-bar high-low range (0 = low, 1 = high)",
    "CORR20": "correlation of close and log volume over 20 bars",
    "CNTP20": "share of the last 20 bars that closed up",
    "SUMP20": "share of the 20-bar absolute movement that was upward",
    "RV_D": "realized variance of log returns over the last day",
    "RV_W": "realized variance of log returns over the last week",
    "BV_D": "bipower variation over the last day (variance without jumps)",
    "BNS_Z": "Barndorff-Nielsen-Shephard jump statistic (above 3: a jump in the last day)",
    "LM": "Lee-Mykland jump statistic of the last return",
    "SESS_ASIA": "1 in the Asian session",
    "SESS_LONDON": "1 in the London session",
    "SESS_NY": "1 in the New York session",
    "SPREAD_REL": "spread over the close",
}


def _fmt(x: float) -> str:
    return fmt_num(x, 4)


def think_text(features: dict[str, float], modules: Sequence[ModuleResult], proposal: str) -> str:
    """The reasoning of a scenario's completion: built from the prompt's inputs only, never from the outcome."""
    f = features
    parts = [f"The proposal is {proposal}."]
    roc5, roc20 = f.get("ROC5", math.nan), f.get("ROC20", math.nan)
    if math.isfinite(roc5) and math.isfinite(roc20):
        m5 = "fell" if roc5 > 1 else "rose"
        m20 = "fell" if roc20 > 1 else "rose"
        parts.append(f"Over 5 bars the price {m5} (ROC5 {_fmt(roc5)}) and over 20 bars it {m20} (ROC20 {_fmt(roc20)}).")
    rsv = f.get("RSV20", math.nan)
    if math.isfinite(rsv):
        parts.append(f"The close sits at {_fmt(rsv)} of its 20-bar range.")
    bns = f.get("BNS_Z", math.nan)
    if math.isfinite(bns):
        parts.append(f"BNS_Z is {_fmt(bns)}: {'a recent jump' if bns > 3 else 'no sign of a jump'}.")
    failed = [m.name for m in modules if not m.passed]
    passed = [m.name for m in modules if m.passed]
    if modules:
        parts.append(f"Checks passed: {', '.join(passed) or 'none'}; failed: {', '.join(failed) or 'none'}.")
    parts.append("Short-horizon FX direction is close to a coin flip, and the spread must be covered.")
    return " ".join(parts)


def answer_text(direction: str, certainty: float, reasons: Sequence[str]) -> str:
    """The JSON verdict exactly as the judge's grammar produces it (``json.dumps`` spacing, 4 decimals at most)."""
    rs = [r.encode("ascii", "replace").decode().replace('"', "'").replace("\\", "/")[:120] for r in reasons][:3]
    return json.dumps({"direction": direction, "certainty": round(float(certainty), 4), "reasons": rs or ["no edge"]})


def _reasons(features: dict[str, float], modules: Sequence[ModuleResult]) -> list[str]:
    out = []
    for k in ("ROC5", "RSV20", "SUMP20"):
        v = features.get(k, math.nan)
        if math.isfinite(v):
            out.append(f"{k} {_fmt(v)}")
    failed = [m.name for m in modules if not m.passed]
    out = ["; ".join(out) or "features unavailable"]
    out.append(f"failing checks: {', '.join(failed)}" if failed else "all shown checks pass")
    return out


def certainty_table(train: list[Row]) -> dict[str, float]:
    """P(answer is right | proposal) on the training split, for the three possible answers."""
    n = max(1, len(train))
    same = sum(r.target == r.proposal for r in train) / n
    none = sum(r.target == "NONE" for r in train) / n
    return {"same": same, "none": none, "opposite": max(0.0, 1 - same - none)}


def completion(r: Row, cert: dict[str, float]) -> str:
    """The scenario's target: the reasoning, then the verdict the realized outcome supports with its base rate."""
    c = cert["same"] if r.target == r.proposal else (cert["none"] if r.target == "NONE" else cert["opposite"])
    return (
        f"{think_text(r.features, r.modules, r.proposal)}\n</think>\n\n"
        f"{answer_text(r.target, c, _reasons(r.features, r.modules))}"
    )


def rejected(r: Row) -> str:
    """The DPO pair's rejected answer: the opposite trade, or — when the right answer is to stay out — the proposed
    trade, stated with 0.99 certainty (the over-confident wrong answer)."""
    wrong = r.proposal if r.target == "NONE" else ("SELL" if r.target == "BUY" else "BUY")
    return (
        f"{think_text(r.features, r.modules, r.proposal)}\n</think>\n\n"
        f"{answer_text(wrong, 0.99, _reasons(r.features, r.modules))}"
    )


def feature_example(r: Row, meta: dict[str, Any]) -> dict[str, Any]:
    """A feature example: the bar, and what each of its key features means."""
    lines = [f"- {k} = {_fmt(v)}: {MEANINGS[k]}" for k, v in r.features.items() if k in MEANINGS]
    q = f"{r.values['bar']}\nWhat do this bar's key features say?"
    return {
        "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "\n".join(lines)}],
        "meta": meta,
    }
