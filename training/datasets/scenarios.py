"""The scenarios of one bar file: the gate the live judge sits behind, run over every bar, and what each bar it
could ask the judge about carries — the prompt's template values, the key features, the module verdicts, the
proposal, and the realized outcome that makes the target.

The gate has the Layer-4 modules of the config the judge will be served with (its ``[l4]`` section: modules, their
parameters, on or off; and the ``[certify]`` section the module settings read), so the prompt's formula catalogue
and module lines are the served ones (:func:`scenario_config`). It runs in ``mode = "full"``: every bar gets every
module's verdict, also bars a cheapest-mode served gate would have vetoed before its judge."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fxgate.engine.config import GateConfig, L1Config, L2Config, L3Config
from fxgate.engine.core.bars import Bars
from fxgate.engine.core.records import ModelProbability, ModuleResult, candidate_direction
from fxgate.engine.gate import Gate
from fxgate.models.ensemble import MODEL_NAMES
from fxgate.models.prompt import KEY_FEATURES, formulas_of, prompt_values, shown_results
from fxgate.training.datasets.layer1 import L1Model
from fxgate.training.datasets.spec import SplitSpec
from fxgate.training.errors import DatasetError

__all__ = ["Row", "rows_for", "scenario_config"]

#: features whose window may legitimately be empty on a bar (a scenario needs the others finite)
_MAY_BE_NAN = ("LM", "BNS_Z", "SPREAD_REL")


@dataclass
class Row:
    """One scenario: bar ``i`` of source file ``src``."""

    src: int
    i: int
    ts: int
    label_end_ts: int
    values: dict[str, str]  # the judge template's values
    features: dict[str, float]  # the key features (KEY_FEATURES)
    modules: tuple[ModuleResult, ...]
    proposal: str  # BUY / SELL: Layer 1's candidate, or the last move's direction without a bundle
    target: str  # BUY / SELL / NONE by the realized outcome
    move: float  # close[i + h] - close[i]
    spread: float
    probs: dict[str, float] | None  # model -> calibrated P(up), as the manifest's meta records it
    l1: dict[str, Any] | None  # which Layer-1 model produced ``probs`` and the last bar it saw


def scenario_config(serving: GateConfig, spec: SplitSpec, with_l1: bool) -> GateConfig:
    """The gate the scenarios are collected with: the serving config's ``[l4]`` (module list, parameters,
    enabled) and ``[certify]`` (read by the module settings), the split's horizon and spread, ``mode = "full"``,
    Layer 1 on only with a Layer-1 model, the LLM layers off (the builder writes what the judge would be asked)."""
    return GateConfig(
        horizon=spec.horizon,
        spread=spec.spread,
        mode="full",
        l1=L1Config(enabled=with_l1),
        l2=L2Config(enabled=False),
        l3=L3Config(enabled=False),
        l4=serving.l4,
        certify=serving.certify,
    )


def rows_for(
    bars: Bars,
    src: int,
    spec: SplitSpec,
    models: Sequence[L1Model],
    with_l1: bool,
    progress: Callable[[int], None] | None,
    serving: GateConfig,
) -> list[Row]:
    """Run the gate over one file and collect the scenarios. ``models``: the Layer-1 model to switch to at each
    start bar (none before the first: those bars get no scenario when ``with_l1``); ``serving``: the config the
    judge will be served with (:func:`scenario_config` takes its Layer-4 modules)."""
    cfg = scenario_config(serving, spec, with_l1)
    gate = Gate(cfg, None, timeframe=bars.timeframe, symbol=bars.symbol)
    formulas = formulas_of(gate.modules)  # the formula lines the served judge's prompt shows
    switches = {m.start: m for m in models}
    current: L1Model | None = None
    gate.warm_up()
    idx = {n: i for i, n in enumerate(gate.features.names)}
    close = np.asarray(bars.close, dtype=float)
    rows: list[Row] = []
    n, h = len(bars), spec.horizon
    for i in range(n):
        if i in switches:
            current = switches[i]
            gate.set_ensemble(current.ens)
        b = bars[i]
        rec = gate.evaluate(b)
        if rec.decision.first_veto == "input":
            raise DatasetError(
                f"{bars.symbol} bar {i} ({np.datetime64(int(b.ts), 'ns')}): the gate refused it "
                f"({rec.decision.layers[0].reason}). Fix: repair the file (--policy repair) or drop the bar"
            )
        if progress and (i % 250 == 0 or i == n - 1):
            progress(i + 1)
        if i + h >= n or i < 1 or rec.features is None:
            continue
        feats = {k: float(rec.features[idx[k]]) for k in KEY_FEATURES}
        if not all(math.isfinite(v) for k, v in feats.items() if k not in _MAY_BE_NAN):
            continue  # windows not full yet
        probs: tuple[ModelProbability, ...] = ()
        if with_l1:
            if current is None or len(rec.probs) != len(MODEL_NAMES):
                continue
            probs = rec.probs
            direction = candidate_direction(np.array([p.p_up for p in probs]))
            if direction == 0:
                continue  # no candidate: the judge is never asked
        else:
            step = close[i] - close[i - 1]
            if step == 0:
                continue
            direction = 1 if step > 0 else -1
        proposal = "BUY" if direction > 0 else "SELL"
        spread = float(b.spread) if b.spread is not None else spec.spread
        move = float(close[i + h] - close[i])
        target = "BUY" if move > spread else ("SELL" if -move > spread else "NONE")
        shown = shown_results(rec.modules, gate.modules)  # the verdicts the served prompt shows
        vals = prompt_values(
            symbol=bars.symbol,
            timeframe=bars.timeframe,
            ts_ns=int(b.ts),
            bar={"open": b.open, "high": b.high, "low": b.low, "close": b.close, "volume": b.volume, "spread": spread},
            direction=proposal,
            horizon=h,
            probs=probs or None,
            features=feats,
            modules=shown,
            formulas=formulas,
        )
        rows.append(
            Row(
                src,
                i,
                int(b.ts),
                int(bars.ts[i + h]),
                vals,
                feats,
                tuple(shown),
                proposal,
                target,
                move,
                spread,
                {p.model: p.p_up for p in probs} if with_l1 else None,
                dict(current.info) if with_l1 and current else None,
            )
        )
    gate.close()
    return rows
