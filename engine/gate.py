"""The gate: one bar in, one :class:`~fxgate.engine.decision.Decision` out.

Per bar (``Gate.on_bar``):

1. **Validate** the bar (finite, positive prices, OHLC consistent, time after the last accepted bar, same
   timeframe). A bad bar fails closed: NONE with the reason, first veto ``input``, and *no* state is touched.
2. **Update state, always**: the feature engine, then every Layer-4 module with a :class:`Context` carrying the bar,
   its features, Layer 1's calibrated probabilities, the candidate direction, and the outcomes of predictions whose
   horizon ended on this bar. A candidate is a bar on which all three Layer-1 models lean the same way (whatever
   their confidence); its outcome is delivered ``horizon`` bars later and never earlier. (Candidates, not only
   emitted signals, feed the outcome-based modules — otherwise a gate that has not yet traded could never learn
   that it should.)
3. **Verdicts, cheapest first**: L1 (compiled trees), then L4 (modules in configured order, SHAP last), then L2 and
   L3 — which are not built in this version and appear as ``enabled=false``. ``mode="cheapest"`` stops at the first
   veto; ``mode="full"`` evaluates every enabled layer and module for diagnostics. A disabled layer is never
   reported as passed.
4. **Size**: min(robust Kelly fraction, Bayesian size) × scale, capped at ``max_size``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from fxgate.engine._version import __version__
from fxgate.engine.bars import Bar, Bars
from fxgate.engine.config import GateConfig, load_config
from fxgate.engine.decision import Decision, LayerVerdict

__all__ = ["Gate"]

_NS = time.perf_counter_ns


class Gate:
    """Live signal gate for one instrument and timeframe (see the module docstring)."""

    def __init__(self, config: GateConfig | None = None, ensemble: Any = None, *, timeframe: str,
                 symbol: str = "") -> None:  # fmt: skip
        from fxgate.models.features import FeatureEngine
        from fxgate.modules import create

        self.config = config or GateConfig()
        self.config_hash = self.config.hash
        self.timeframe = timeframe
        self.symbol = symbol
        self.features = FeatureEngine(timeframe)
        p = self.config.l4.params
        self.modules = [create(n, **p.get(n, {})) for n in self.config.l4.modules] if self.config.l4.enabled else []
        self.ensemble: Any = None
        self.set_ensemble(ensemble)
        self._last_ts: int | None = None
        self._bars = 0
        self._pending: deque[tuple[int, int, int, float, float, float]] = deque()  # due, ts, dir, entry, spread, p
        self.rejected = 0

    @classmethod
    def from_config(cls, path: str | Path | None, *, bundle: str | Path | None = None, timeframe: str | None = None,
                    symbol: str = "") -> Gate:  # fmt: skip
        """Build from a TOML file and (optionally) a Layer-1 bundle written by ``fxgate fit``."""
        cfg = load_config(path)
        ens = None
        if bundle is not None:
            from fxgate.models.ensemble import TreeEnsemble

            ens = TreeEnsemble.load(bundle)
        tf = timeframe or (ens.timeframe if ens is not None else None)
        if not tf:
            raise ValueError("Gate.from_config needs timeframe=... when no bundle is given")
        return cls(cfg, ens, timeframe=tf, symbol=symbol or (ens.symbol if ens is not None else ""))

    def set_ensemble(self, ensemble: Any) -> None:
        """Swap the Layer-1 models (walk-forward refits); feature and module state carry on."""
        if ensemble is not None and ensemble.timeframe and ensemble.timeframe != self.timeframe:
            raise ValueError(f"bundle is for {ensemble.timeframe} bars, the gate runs {self.timeframe}")
        self.ensemble = ensemble
        # hashed once here, not per bar
        self.model_hashes = {"l1": ensemble.bundle_hash[:16]} if ensemble is not None and ensemble.manifest else {}

    # -- warm-up ---------------------------------------------------------------------------------------------------
    def warm_up(self, bars: Bars | None = None) -> None:
        """Compile every kernel now (not on the first live bar), then run ``bars`` (history before the live feed)
        through the state updates so windows are full when trading starts."""
        from fxgate.models.features import FeatureEngine

        probe = FeatureEngine(self.timeframe)
        probe.update(Bar(0, 1.0, 1.0, 1.0, 1.0, 1.0, timeframe=self.timeframe))
        for m in self.modules:
            m.warm_up()
        if self.ensemble is not None:
            self.ensemble.predict_row(np.zeros(self.features.n_features))
        if bars is not None:
            for b in bars:
                self.on_bar(b)

    # -- the bar -----------------------------------------------------------------------------------------------------
    def _reject(self, bar: Bar, reason: str) -> Decision:
        self.rejected += 1
        layers = tuple(LayerVerdict(n, True, False, None, None, f"not evaluated: {reason}", 0.0) if self._enabled(n)
                       else LayerVerdict(n, False, False, None, None, self._off_reason(n), 0.0)
                       for n in ("L1", "L2", "L3", "L4"))  # fmt: skip
        return Decision(int(bar.ts) if isinstance(bar.ts, int | np.integer) else 0, self.symbol or bar.symbol, "NONE",
                        0.0, None, layers, "input", self.config_hash, self.model_hashes, __version__)  # fmt: skip

    @staticmethod
    def _off_reason(name: str) -> str:
        return "LLM layers are not built in this version of fxgate" if name in ("L2", "L3") else "disabled by config"

    def _enabled(self, name: str) -> bool:
        c = self.config
        return {"L1": c.l1.enabled, "L2": c.l2.enabled, "L3": c.l3.enabled, "L4": c.l4.enabled}[name]

    def _check(self, bar: Bar) -> str | None:
        vals = (bar.open, bar.high, bar.low, bar.close, bar.volume)
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in vals):
            return "bar has a non-finite or non-numeric value"
        if min(bar.open, bar.high, bar.low, bar.close) <= 0 or bar.volume < 0:
            return "bar has a non-positive price or negative volume"
        if bar.high < max(bar.open, bar.close) or bar.low > min(bar.open, bar.close):
            return "bar's high/low do not contain its open and close"
        if bar.spread is not None and not (math.isfinite(bar.spread) and bar.spread >= 0):
            return "bar's spread is negative or not finite"
        if self._last_ts is not None and bar.ts <= self._last_ts:
            return f"bar time {bar.ts} is not after the last accepted bar ({self._last_ts})"
        if bar.timeframe and bar.timeframe != self.timeframe:
            return f"bar timeframe {bar.timeframe} differs from the gate's {self.timeframe}"
        return None

    def on_bar(self, bar: Bar) -> Decision:
        """Decide on one bar. Never raises on bad input: it answers NONE with the reason and keeps its state."""
        from fxgate.modules import Context, Outcome

        problem = self._check(bar)
        if problem:
            return self._reject(bar, problem)
        cfg = self.config
        self._last_ts = int(bar.ts)
        self._bars += 1
        # 1. features and Layer 1 probabilities (state update: always)
        t0 = _NS()
        x = self.features.update(bar)
        probs = self.ensemble.predict_row(x) if self.ensemble is not None else None
        t_l1 = _NS() - t0
        direction = 0
        if probs is not None and np.all(np.isfinite(probs)):
            up = probs >= 0.5
            direction = 1 if up.all() else (-1 if (~up).all() else 0)
        spread = bar.spread if bar.spread is not None else cfg.spread
        # outcomes whose horizon ends on this bar
        due: list[Outcome] = []
        while self._pending and self._pending[0][0] <= self._bars:
            _, ts0, d, entry, sp, pr = self._pending.popleft()
            due.append(Outcome(ts0, int(bar.ts), d, entry, bar.close, sp, pr))
        if direction:
            pdir = float(np.mean(probs)) if direction > 0 else 1 - float(np.mean(probs))
            self._pending.append((self._bars + cfg.horizon, int(bar.ts), direction, bar.close, spread, pdir))
        ctx = Context(bar, features=x, probs=probs, direction=direction, size=cfg.sizing.max_size,
                      outcomes=tuple(due), ensemble=self.ensemble)  # fmt: skip
        t0 = _NS()
        for m in self.modules:
            m.update(ctx)
        t_l4_update = _NS() - t0
        # 2. verdicts, cheapest first
        full = cfg.mode == "full"
        layers: dict[str, LayerVerdict] = {}
        first_veto: str | None = None
        action, confidence = "NONE", None
        # L1
        if not cfg.l1.enabled:
            layers["L1"] = LayerVerdict("L1", False, False, None, cfg.l1.threshold, self._off_reason("L1"), t_l1 / 1e3)
        elif self.ensemble is None:
            layers["L1"] = LayerVerdict("L1", True, False, None, cfg.l1.threshold, "no Layer-1 model loaded",
                                        t_l1 / 1e3)  # fmt: skip
            first_veto = "L1"
        else:
            t0 = _NS()
            v = self.ensemble.verdict_from_probs(probs, cfg.l1.threshold)
            lat = (t_l1 + _NS() - t0) / 1e3
            det = tuple({"model": k, "p_up": p} for k, p in v.probs.items())
            layers["L1"] = LayerVerdict("L1", True, v.passed, v.confidence, cfg.l1.threshold, v.reason, lat, det)
            if not v.passed:
                first_veto = "L1"
            else:
                action, confidence = v.direction, v.confidence
        # L4
        if not cfg.l4.enabled:
            layers["L4"] = LayerVerdict("L4", False, False, None, None, self._off_reason("L4"), t_l4_update / 1e3)
        elif first_veto is not None and not full:
            layers["L4"] = LayerVerdict("L4", True, False, None, None, f"not evaluated: {first_veto} vetoed",
                                        t_l4_update / 1e3)  # fmt: skip
        else:
            t0 = _NS()
            det_l4: list[dict[str, Any]] = []
            failed: list[tuple[str, str]] = []
            for m in self.modules:
                r = m.verdict()
                det_l4.append({"module": r.name, "passed": r.passed, "score": r.score, "threshold": r.threshold,
                               "reason": r.reason})  # fmt: skip
                if not r.passed:
                    failed.append((r.name, r.reason))
                    if not full:
                        break
            lat = (t_l4_update + _NS() - t0) / 1e3
            n_ok = sum(d["passed"] for d in det_l4)
            ok = not failed and len(det_l4) == len(self.modules)
            reason = (f"all {len(self.modules)} modules passed" if ok else
                      f"{failed[0][0]}: {failed[0][1]}" + (f" (+{len(failed) - 1} more failing)" if len(failed) > 1
                                                           else ""))  # fmt: skip
            layers["L4"] = LayerVerdict("L4", True, ok, n_ok / max(1, len(self.modules)), 1.0, reason, lat,
                                        tuple(det_l4))  # fmt: skip
            if not ok and first_veto is None:
                first_veto = f"L4:{failed[0][0]}"
        for name, lc in (("L2", cfg.l2), ("L3", cfg.l3)):
            layers[name] = LayerVerdict(name, False, False, None, lc.threshold, self._off_reason(name), 0.0)
        if first_veto is not None:
            action, confidence = "NONE", None
        size = self._size() if action != "NONE" else 0.0
        if action != "NONE" and size <= 0:
            action, first_veto = "NONE", "sizing"
        ordered = tuple(layers[n] for n in ("L1", "L2", "L3", "L4"))
        return Decision(int(bar.ts), self.symbol or bar.symbol, action, size, confidence, ordered, first_veto,
                        self.config_hash, self.model_hashes, __version__)  # fmt: skip

    def _size(self) -> float:
        cfg = self.config.sizing
        fractions = []
        for m in self.modules:
            if m.name == "robust_kelly":
                e = m.estimate()
                fractions.append(e["fraction"])
            elif m.name == "bayesian_sizing":
                post = m.posterior()
                if math.isfinite(post["payoff"]):
                    fractions.append(m.size(post))
        base = min(fractions) if fractions else 1.0
        if not math.isfinite(base):
            return 0.0
        return float(min(max(base, 0.0) * cfg.scale, cfg.max_size))
