"""The gate: one bar in, one :class:`~fxgate.engine.core.decision.Decision` out.

Per bar (``Gate.on_bar``):

1. **Validate** the bar before anything is touched: every field's type (``ts`` an int of nanoseconds since the
   epoch, UTC — one that looks like seconds, milliseconds or microseconds is refused with the factor to multiply
   by; prices and volume real numbers, numpy floats included, ``bool`` not), finiteness, positive prices, OHLC
   consistent, a non-negative spread, the gate's timeframe and symbol, a time after the last accepted bar but not
   implausibly far after it (``[input] max_gap_days``) nor ahead of the wall clock (``[input] max_future_s``). A bad
   bar fails closed: NONE with the reason, first veto ``input``, and *no* state is touched.
2. **Update state, always**: the feature engine, then every Layer-4 module with a :class:`Context` carrying the bar,
   its features, Layer 1's calibrated probabilities, the candidate direction, the spread, and the outcomes of
   predictions whose horizon ended on this bar. A candidate is a bar on which all three Layer-1 models lean the same
   way (whatever their confidence); its outcome is delivered ``horizon`` bars later and never earlier. (Candidates,
   not only emitted signals, feed the outcome-based modules — otherwise a gate that has not yet traded could never
   learn that it should.) A bar inside the Layer-1 bundle's training window (up to the end of its last training
   label) is *in sample* for the models: it updates price-only state, makes no candidate and gets no Layer-1
   probabilities in its Context, so no module ever learns from an in-sample prediction (warm-up on history
   included); Layer 1 vetoes it. The updates are one transaction: if any of them raises, the state is restored
   to what it was before the bar and the bar is refused (first veto ``internal``).
3. **Verdicts, cheapest first**: L1 (compiled trees), then L4 (modules in configured order, SHAP last), then the
   size, then L2 (the LLM judge) and L3 (the debate), which run only on bars that every cheaper check passed.
   ``mode="cheapest"`` stops at the first veto; ``mode="full"`` evaluates every enabled layer and module for
   diagnostics (the LLM layers on every bar where Layer 1 proposes a direction). A disabled layer is never
   reported as passed; with Layer 1 disabled nothing proposes a direction, so nothing is emitted (first veto L1).
   A layer that has no model (L1 without a bundle, L2/L3 without a GGUF) fails closed with the fix in its reason.
4. **Size**: a fraction of capital — the smallest fraction suggested by the modules that size
   (:meth:`~fxgate.modules.CertaintyModule.suggested_fraction`: robust Kelly, Bayesian sizing) × ``[sizing] scale``,
   capped at ``[sizing] max_fraction``; an undefined suggestion sizes 0 whatever the module order; the risk manager
   of L3 may cut it.

Steps 1-2 and the fast verdicts run under a lock; the LLM calls run outside it, so a second thread feeding the next
bar keeps the feature and module state moving while an LLM call for the previous bar is in flight. A failure of any
kind (missing model, timeout, malformed answer, context overflow, an internal error in a layer) is a fail-closed
verdict naming that layer; ``on_bar`` never raises.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fxgate.engine.config import GateConfig, load_config
from fxgate.engine.core.bars import Bar, Bars
from fxgate.engine.core.config import NANO_GGUF, nano_dir
from fxgate.engine.core.decision import Decision, LayerVerdict
from fxgate.engine.core.version import __version__

__all__ = ["Gate"]

_NS = time.perf_counter_ns
_I64 = 2**63 - 1
_DAY = 86_400 * 10**9
#: The smallest accepted ``ts``: 1973-03-03 in ns. Anything smaller is a time in s, ms or µs (or not a time).
_NS_FLOOR = 10**17
#: Bars, each consistent with the one before, that confirm a gap longer than ``[input] max_gap_days`` is real.
_GAP_CONFIRM = 3


class Gate:
    """Live signal gate for one instrument and timeframe (see the module docstring)."""

    def __init__(
        self, config: GateConfig | None = None, ensemble: Any = None, *, timeframe: str, symbol: str = ""
    ) -> None:
        from fxgate.models.features import FeatureEngine
        from fxgate.modules import create

        self.config = config or GateConfig()
        self.config_hash = self.config.hash
        self.timeframe = timeframe
        self.symbol = symbol
        self.features = FeatureEngine(timeframe)
        p = self.config.l4.params
        self.modules = (
            [create(n, gate=self.config.module_settings, **p.get(n, {})) for n in self.config.l4.modules]
            if self.config.l4.enabled
            else []
        )
        self.ensemble: Any = None
        self._llm_hashes: dict[str, str] = {}
        self.judge: Any = None
        self.debate: Any = None
        self._llm_error: str | None = None
        self._runtimes: dict[str, Any] = {}
        if self.config.l2.enabled or self.config.l3.enabled:
            self._start_llm()
        self.set_ensemble(ensemble)
        self._lock = threading.RLock()
        self._feature_index = {n: i for i, n in enumerate(self.features.names)}
        self._last_ts: int | None = None
        self._gap_run: list[int] = []  # far-gap bars refused in a row (each consistent with the one before)
        self._gap_run_next: list[int] = []
        self._bars = 0
        self._pending: deque[tuple[int, int, int, float, float, float]] = deque()  # due, ts, dir, entry, spread, p
        self.rejected = 0
        self.last_features: np.ndarray | None = None  # the last accepted bar's features (names: features.names)

    @classmethod
    def from_config(
        cls,
        path: str | Path | None,
        *,
        bundle: str | Path | None = None,
        timeframe: str | None = None,
        symbol: str = "",
    ) -> Gate:
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
            raise ValueError(
                f"bundle is for {ensemble.timeframe} bars, the gate runs {self.timeframe}. Fix: load a "
                f"bundle fitted on {self.timeframe} bars (fxgate fit), or resample the bars to "
                f"{ensemble.timeframe}"
            )
        self.ensemble = ensemble
        # bars up to the end of the last training label are in sample for these models
        tw = (ensemble.manifest or {}).get("training_window", {}) if ensemble is not None else {}
        self._in_sample_until: int | None = int(tw["last_label_end_ts"]) if "last_label_end_ts" in tw else None
        # hashed once here, not per bar
        l1 = {"l1": ensemble.bundle_hash[:16]} if ensemble is not None and ensemble.manifest else {}
        self.model_hashes = {**l1, **self._llm_hashes}

    # -- the LLM layers ----------------------------------------------------------------------------------------------
    def _start_llm(self) -> None:
        """Verify and load the GGUF model(s) now, at gate start (not on the first bar that needs them)."""
        from fxgate.models.debate import Debate
        from fxgate.models.llm import Judge, LlmError, LlmRuntime, LlmSettings, VerdictCache

        c = self.config
        lc = c.llm
        from fxgate.engine.config import cache_dir

        if not lc.model:
            self._llm_error = (
                'no model: [llm] model is empty. Fix: set [llm] model to a GGUF file ("nano" is '
                "fxgate's test model), or turn the layer off explicitly with enabled = false in [l2] "
                "and [l3]"
            )
            return
        try:
            path = cache_dir() / "llm-verdicts.sqlite" if lc.cache == "auto" else lc.cache
            cache = VerdictCache(path) if path else None

            def runtime(path: str) -> Any:
                path = _resolve_model(path or lc.model)
                if path not in self._runtimes:
                    s = LlmSettings(
                        model=path,
                        sha256=lc.sha256 if path == _resolve_model(lc.model) else "",
                        n_ctx=lc.n_ctx,
                        n_threads=lc.n_threads,
                        n_gpu_layers=lc.n_gpu_layers,
                        n_batch=lc.n_batch,
                        seed=lc.seed,
                        temperature=lc.temperature,
                        timeout_s=lc.timeout_s,
                        chat_template=lc.chat_template,
                        cpu_extra_buffers=lc.cpu_extra_buffers,
                    )
                    self._runtimes[path] = LlmRuntime(s, cache=cache)
                return self._runtimes[path]

            if c.l2.enabled:
                rt = runtime(lc.model)
                self.judge = Judge(
                    rt,
                    template=c.l2.template,
                    threshold=c.l2.threshold,
                    think_budget=c.l2.think_budget,
                    answer_budget=c.l2.answer_budget,
                )
                self._llm_hashes["l2"] = rt.sha256[:16]
            if c.l3.enabled:
                l3 = c.l3
                rts = {"bull": runtime(l3.bull_model), "bear": runtime(l3.bear_model), "risk": runtime(l3.risk_model)}
                self.debate = Debate(
                    rts,
                    rounds=l3.rounds,
                    threshold=l3.threshold,
                    bear_max_strength=l3.bear_max_strength,
                    think_budget=l3.think_budget,
                    answer_budget=l3.answer_budget,
                    timeout_s=lc.timeout_s,
                    templates={"bull": l3.bull_template, "bear": l3.bear_template, "risk": l3.risk_template},
                )
                for role, rt in rts.items():
                    self._llm_hashes[f"l3.{role}"] = rt.sha256[:16]
        except (LlmError, ValueError, OSError, sqlite3.Error) as exc:
            if lc.on_load_error == "raise":
                raise
            self._llm_error = f"model unavailable: {type(exc).__name__}: {exc}"
            self.judge = self.debate = None
            self.close()

    def close(self) -> None:
        """Release the LLM runtimes (worker threads, llama.cpp contexts)."""
        for rt in self._runtimes.values():
            rt.close()
        self._runtimes.clear()

    # -- warm-up ---------------------------------------------------------------------------------------------------
    def warm_up(self, bars: Bars | None = None) -> int:
        """Compile every kernel now (not on the first live bar), then run ``bars`` (history before the live feed)
        through the state updates so windows are full when trading starts. History inside the Layer-1 bundle's
        training window updates price-only state (no candidates, no outcomes: see the module docstring). The LLM
        models were already loaded and verified by the constructor. Returns how many history bars were refused
        (the same checks as ``on_bar``; ``self.rejected`` counts them too)."""
        from fxgate.models.features import FeatureEngine

        probe = FeatureEngine(self.timeframe)
        probe.update(Bar(0, 1.0, 1.0, 1.0, 1.0, 1.0, timeframe=self.timeframe))
        for m in self.modules:
            m.warm_up()
        if self.ensemble is not None:
            self.ensemble.predict_row(np.zeros(self.features.n_features))
        refused = 0
        if bars is not None:
            for b in bars:  # state only: history never reaches the LLM layers
                with self._lock:
                    refused += isinstance(self._fast(b, verdicts=False), Decision)
        return refused

    # -- the bar -----------------------------------------------------------------------------------------------------
    def _reject(self, bar: Any, reason: str, veto: str = "input") -> Decision:
        self.rejected += 1
        layers = tuple(
            LayerVerdict(n, True, False, None, None, f"not evaluated: {reason}", 0.0)
            if self._enabled(n)
            else LayerVerdict(n, False, False, None, None, self._off_reason(n), 0.0)
            for n in ("L1", "L2", "L3", "L4")
        )
        ts = getattr(bar, "ts", None)
        ts = int(ts) if isinstance(ts, int | np.integer) and not isinstance(ts, bool) and 0 <= ts <= _I64 else 0
        sym = getattr(bar, "symbol", "")
        return Decision(
            ts,
            self.symbol or (sym if isinstance(sym, str) else ""),
            "NONE",
            0.0,
            None,
            layers,
            veto,
            self.config_hash,
            self.model_hashes,
            __version__,
        )

    def _off_reason(self, name: str) -> str:
        if name == "L1":
            return "disabled by config: nothing proposes a direction, so no signal can be emitted"
        return "disabled by config"

    def _enabled(self, name: str) -> bool:
        c = self.config
        return {"L1": c.l1.enabled, "L2": c.l2.enabled, "L3": c.l3.enabled, "L4": c.l4.enabled}[name]

    def _check(self, bar: Any) -> tuple[Bar | None, str | None]:
        """(the bar with plain-float fields, None) or (None, why it is refused). Touches no gate state; a bar
        refused for a long gap is noted in ``_gap_run_next`` (the caller commits it: see ``_fast``)."""
        if not isinstance(bar, Bar):
            return None, f"expected a fxgate Bar, got {type(bar).__name__}"
        ts = bar.ts
        if isinstance(ts, bool) or not isinstance(ts, int | np.integer):
            return None, f"ts = {ts!r}: must be an int of nanoseconds since the epoch, UTC (got {type(ts).__name__})"
        ts = int(ts)
        if not 0 <= ts <= _I64:
            return None, f"ts = {ts}: outside int64 nanoseconds since the epoch (1970..2262)"
        if ts < _NS_FLOOR:
            unit, k = ("seconds", 9) if ts < 10**11 else ("milliseconds", 6) if ts < 10**14 else ("microseconds", 3)
            return None, f"ts = {ts} looks like {unit}; fxgate wants int nanoseconds UTC (multiply by 10**{k})"
        vals = []
        for name in ("open", "high", "low", "close", "volume", "spread"):
            v = getattr(bar, name)
            if name == "spread" and v is None:
                vals.append(None)
                continue
            if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
                return None, f"{name} = {v!r}: must be a number (got {type(v).__name__})"
            try:
                f = float(v)
            except OverflowError:
                f = math.inf
            if not math.isfinite(f):
                return None, f"{name} = {v!r}: must be finite"
            vals.append(f)
        o, h, lo, c, vol, sp = vals
        for name, f in (("open", o), ("high", h), ("low", lo), ("close", c)):
            if f <= 0:
                return None, f"{name} = {f!r}: a price must be > 0"
        if vol < 0:
            return None, f"volume = {vol!r}: must be >= 0"
        if h < max(o, c) or lo > min(o, c):
            return None, f"high = {h!r} / low = {lo!r} do not contain open = {o!r} and close = {c!r}"
        if sp is not None and sp < 0:
            return None, f"spread = {sp}: must be >= 0"
        tf, sym = bar.timeframe, bar.symbol
        if not isinstance(tf, str):
            return None, f"timeframe = {tf!r}: must be a string such as {self.timeframe!r}"
        if not isinstance(sym, str):
            return None, f"symbol = {sym!r}: must be a string"
        if tf and tf != self.timeframe:
            return None, f"bar timeframe {tf} differs from the gate's {self.timeframe}"
        if sym and self.symbol and sym != self.symbol:
            return None, f"bar symbol {sym} differs from the gate's {self.symbol}"
        last = self._last_ts
        if last is not None and ts <= last:
            return None, f"bar time {ts} is not after the last accepted bar ({last})"
        inp = self.config.input
        if last is not None and inp.max_gap_days and ts - last > inp.max_gap_days * _DAY:
            # one wrong timestamp must not move the clock; a real gap shows as bars consistent with each other
            gap = self._gap_run
            consistent = bool(gap) and gap[-1] < ts <= gap[-1] + inp.max_gap_days * _DAY
            run = [*gap, ts] if consistent else [ts]
            if len(run) < _GAP_CONFIRM:
                self._gap_run_next = run
                return None, (
                    f"bar time {np.datetime64(ts, 'ns')}Z is {(ts - last) / _DAY:.0f} days after the last "
                    f"accepted bar ({np.datetime64(last, 'ns')}Z), more than [input] max_gap_days = "
                    f"{inp.max_gap_days:g}: a wrong timestamp must not move the clock. If the gap is real, "
                    f"the clock moves on the {_GAP_CONFIRM}rd consecutive bar after it "
                    f"({len(run)}/{_GAP_CONFIRM}); raise max_gap_days to accept it at once (0: off)"
                )
        if inp.max_future_s and ts > time.time_ns() + inp.max_future_s * 1e9:
            return None, (
                f"bar time {np.datetime64(ts, 'ns')}Z is more than [input] max_future_s = "
                f"{inp.max_future_s:g} s after this machine's clock: check the feed's time zone and units"
            )
        return Bar(ts, o, h, lo, c, vol, sp, sym, tf), None

    def on_bar(self, bar: Bar) -> Decision:
        """Decide on one bar. Never raises: bad input, an internal error or an LLM failure answers NONE with the
        reason and keeps the state consistent (a refused bar changes nothing)."""
        try:
            with self._lock:
                fast = self._fast(bar)
            if isinstance(fast, Decision):
                return fast
            assert fast is not None
        except Exception as exc:  # noqa: BLE001 - last resort: on_bar never raises
            return self._reject(bar, f"internal error: {type(exc).__name__}: {exc}", "internal")
        try:
            self._llm_layers(fast)
        except Exception as exc:  # noqa: BLE001 - fail closed, never raise out of on_bar
            stage = fast.stage or "L2"
            for name in ("L2", "L3"):
                if name not in fast.layers:
                    on = self._enabled(name)
                    why = (
                        f"internal error: {type(exc).__name__}: {exc}"
                        if name == stage
                        else f"not evaluated: {stage} failed"
                    )
                    fast.layers[name] = LayerVerdict(
                        name, on, False, None, None, why if on else "disabled by config", 0.0
                    )
            fast.first_veto = fast.first_veto or stage
            fast.action, fast.confidence = "NONE", None
        return self._decision(fast)

    def _snapshot(self) -> tuple[Any, ...]:
        return (
            self.features.state_dict(),
            [m.state_dict() for m in self.modules],
            self._last_ts,
            self._bars,
            tuple(self._pending),
            self.last_features,
        )

    def _restore(self, snap: tuple[Any, ...]) -> None:
        feats, mods, self._last_ts, self._bars, pending, self.last_features = snap
        self.features.load_state_dict(feats)
        for m, st in zip(self.modules, mods, strict=True):
            m.load_state_dict(st)
        self._pending = deque(pending)

    def _fast(self, bar: Any, verdicts: bool = True) -> Decision | _Pending | None:
        """State updates and the fast layers (L1, L4, sizing), under the lock. ``verdicts=False`` (warm-up): the
        state updates only."""
        from fxgate.modules import Context, Outcome  # engine/ is still both foundation and top (issue: architecture)

        self._gap_run_next = []
        clean, problem = self._check(bar)
        self._gap_run = self._gap_run_next  # any other bar (refused or accepted) breaks a run of gap bars
        if problem or clean is None:
            return self._reject(bar, problem or "invalid bar")
        bar = clean
        cfg = self.config
        spread = bar.spread if bar.spread is not None else cfg.spread
        in_sample = self._in_sample_until is not None and bar.ts <= self._in_sample_until
        snap = self._snapshot()
        try:
            # 1. features and Layer 1 probabilities (state update: always)
            t0 = _NS()
            x = self.features.update(bar)
            probs = self.ensemble.predict_row(x) if self.ensemble is not None and not in_sample else None
            t_l1 = _NS() - t0
            direction = 0
            if probs is not None and np.all(np.isfinite(probs)):
                up = probs >= 0.5
                direction = 1 if up.all() else (-1 if (~up).all() else 0)
            self._last_ts = bar.ts
            self._bars += 1
            # outcomes whose horizon ends on this bar
            due: list[Outcome] = []
            while self._pending and self._pending[0][0] <= self._bars:
                _, ts0, d, entry, sp, pr = self._pending.popleft()
                due.append(Outcome(ts0, bar.ts, d, entry, bar.close, sp, pr))
            if direction:
                pdir = float(np.mean(probs)) if direction > 0 else 1 - float(np.mean(probs))
                self._pending.append((self._bars + cfg.horizon, bar.ts, direction, bar.close, spread, pdir))
            ctx = Context(
                bar,
                features=x,
                probs=probs,
                direction=direction,
                size=1.0,
                outcomes=tuple(due),
                ensemble=self.ensemble,
                spread=spread,
            )
            t0 = _NS()
            for m in self.modules:
                m.update(ctx)
            t_l4_update = _NS() - t0
            self.last_features = x
        except BaseException as exc:  # noqa: BLE001 - the bar is refused and the state is what it was before it
            self._restore(snap)
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: state restored, then propagate
                raise
            return self._reject(
                bar,
                f"internal error while updating state: {type(exc).__name__}: {exc}; the bar "
                "was not accepted and the state is unchanged",
                "internal",
            )
        if not verdicts:
            return None
        p = _Pending(bar=bar, x=x, probs=probs, direction=direction, spread=spread)
        try:
            self._fast_verdicts(p, in_sample, t_l1, t_l4_update)
        except Exception as exc:  # noqa: BLE001 - the bar is accepted (state moved); its verdict fails closed
            stage = p.stage or "L1"
            layer = "L4" if stage == "sizing" else stage.split(":")[0]
            what = f"internal error{' while sizing' if stage == 'sizing' else ''}"
            why = f"{what}{f' in {stage}' if ':' in stage else ''}: {type(exc).__name__}: {exc}"
            old = p.layers.get(layer)
            p.layers[layer] = LayerVerdict(
                layer,
                self._enabled(layer),
                False,
                None,
                None,
                why,
                old.latency_us if old else 0.0,
                old.details if old else (),
            )
            for name in ("L1", "L4"):
                if name not in p.layers:
                    p.layers[name] = LayerVerdict(
                        name, self._enabled(name), False, None, None, f"not evaluated: {layer} failed", 0.0
                    )
            p.first_veto = p.first_veto or layer
            p.action, p.confidence, p.size = "NONE", None, 0.0
            p.stage = ""
        return p

    def _fast_verdicts(self, p: _Pending, in_sample: bool, t_l1: int, t_l4_update: int) -> None:
        """L1, L4 and the size for the bar in ``p`` (under the lock)."""
        cfg = self.config
        full = cfg.mode == "full"
        layers = p.layers
        probs, direction = p.probs, p.direction
        # L1
        p.stage = "L1"
        if not cfg.l1.enabled:
            layers["L1"] = LayerVerdict("L1", False, False, None, cfg.l1.threshold, self._off_reason("L1"), t_l1 / 1e3)
            p.first_veto = "L1"
        elif self.ensemble is None:
            layers["L1"] = LayerVerdict(
                "L1",
                True,
                False,
                None,
                cfg.l1.threshold,
                "no Layer-1 model loaded. Fix: "
                "load a bundle (fxgate fit --out bundle/; Gate.from_config(..., bundle=...))",
                t_l1 / 1e3,
            )
            p.first_veto = "L1"
        elif in_sample:
            until = np.datetime64(self._in_sample_until, "ns")
            layers["L1"] = LayerVerdict(
                "L1",
                True,
                False,
                None,
                cfg.l1.threshold,
                f"in sample: this bar is inside "
                f"the Layer-1 bundle's training window (labels up to {until}Z); only later "
                "bars get out-of-sample predictions",
                t_l1 / 1e3,
            )
            p.first_veto = "L1"
        else:
            t0 = _NS()
            v = self.ensemble.verdict_from_probs(probs, cfg.l1.threshold)
            lat = (t_l1 + _NS() - t0) / 1e3
            det = tuple({"model": k, "p_up": p_} for k, p_ in v.probs.items())
            layers["L1"] = LayerVerdict("L1", True, v.passed, v.confidence, cfg.l1.threshold, v.reason, lat, det)
            if not v.passed:
                p.first_veto = "L1"
            else:
                p.action, p.confidence = v.direction, v.confidence
        # L4
        p.stage = "L4"
        if not cfg.l4.enabled:
            layers["L4"] = LayerVerdict("L4", False, False, None, None, self._off_reason("L4"), t_l4_update / 1e3)
        elif p.first_veto is not None and not full:
            layers["L4"] = LayerVerdict(
                "L4", True, False, None, None, f"not evaluated: {p.first_veto} vetoed", t_l4_update / 1e3
            )
        else:
            t0 = _NS()
            det_l4: list[dict[str, Any]] = []
            failed: list[tuple[str, str]] = []
            for m in self.modules:
                p.stage = f"L4:{m.name}"
                r = m.verdict()
                det_l4.append(
                    {
                        "module": r.name,
                        "passed": r.passed,
                        "score": r.score,
                        "threshold": r.threshold,
                        "reason": r.reason,
                    }
                )
                if not r.passed:
                    failed.append((r.name, r.reason))
                    if not full:
                        break
            lat = (t_l4_update + _NS() - t0) / 1e3
            n_ok = sum(d["passed"] for d in det_l4)
            ok = not failed and len(det_l4) == len(self.modules)
            reason = (
                f"all {len(self.modules)} modules passed"
                if ok
                else f"{failed[0][0]}: {failed[0][1]}"
                + (f" (+{len(failed) - 1} more failing)" if len(failed) > 1 else "")
            )
            layers["L4"] = LayerVerdict(
                "L4", True, ok, n_ok / max(1, len(self.modules)), 1.0, reason, lat, tuple(det_l4)
            )
            p.modules = det_l4
            if not ok and p.first_veto is None:
                p.first_veto = f"L4:{failed[0][0]}"
        if p.first_veto is not None:
            p.action, p.confidence = "NONE", None
        # size: from module state at this bar, so computed under the lock
        p.stage = "sizing"
        wants_llm = (cfg.l2.enabled or cfg.l3.enabled) and (p.action != "NONE" or (full and direction != 0))
        if p.action != "NONE" or wants_llm:
            p.size = self._size()
        if p.action != "NONE" and p.size <= 0:
            p.action, p.first_veto = "NONE", "sizing"
        p.stage = ""

    def _llm_layers(self, p: _Pending) -> None:
        """L2 then L3, outside the lock. Cheapest mode: only when everything before passed."""
        from fxgate.models.prompt import prompt_values

        cfg = self.config
        full = cfg.mode == "full"
        proposed = p.action if p.action != "NONE" else ({1: "BUY", -1: "SELL"}.get(p.direction) if full else None)
        values = None

        def not_run(name: str, lc: Any) -> LayerVerdict | None:
            """The verdict of a layer that is not called on this bar, or None when it must be called."""
            if not lc.enabled:
                return LayerVerdict(name, False, False, None, lc.threshold, self._off_reason(name), 0.0)
            if self._llm_error is not None:
                if p.first_veto is None:
                    p.first_veto = name
                return LayerVerdict(name, True, False, None, lc.threshold, self._llm_error, 0.0)
            if proposed is None or (p.first_veto is not None and not full):
                why = f"not evaluated: {p.first_veto} vetoed" if p.first_veto else "not evaluated"
                return LayerVerdict(name, True, False, None, lc.threshold, why, 0.0)
            return None

        def get_values(judge: str = "") -> dict[str, str]:
            nonlocal values
            if values is None:
                b = p.bar
                feats = {n: float(p.x[i]) for n, i in self._feature_index.items()}
                from fxgate.models.ensemble import MODEL_NAMES

                probs = (
                    {k: float(v) for k, v in zip(MODEL_NAMES, p.probs, strict=False)}
                    if self.ensemble is not None and p.probs is not None
                    else None
                )
                values = prompt_values(
                    symbol=self.symbol or b.symbol,
                    timeframe=self.timeframe,
                    ts_ns=int(b.ts),
                    bar={
                        "open": b.open,
                        "high": b.high,
                        "low": b.low,
                        "close": b.close,
                        "volume": b.volume,
                        "spread": p.spread,
                    },
                    direction=str(proposed),
                    horizon=cfg.horizon,
                    probs=probs,
                    features=feats,
                    modules=p.modules,
                    size=p.size,
                )
            return dict(values, judge=judge) if judge else values

        # L2
        judge_txt = ""
        p.stage = "L2"
        if (v := not_run("L2", cfg.l2)) is not None:
            p.layers["L2"] = v
        else:
            t0 = _NS()
            jv = self.judge.judge(get_values(), str(proposed))
            p.layers["L2"] = LayerVerdict(
                "L2", True, jv.passed, jv.certainty, cfg.l2.threshold, jv.reason, (_NS() - t0) / 1e3, (jv.details(),)
            )
            if jv.direction is not None:
                judge_txt = f"{jv.direction}, certainty {jv.certainty:.2f}: " + "; ".join(
                    jv.generation.parsed["reasons"] if jv.generation and jv.generation.parsed else []
                )
            if not jv.passed and p.first_veto is None:
                p.first_veto = "L2"
        # L3
        p.stage = "L3"
        if (v := not_run("L3", cfg.l3)) is not None:
            p.layers["L3"] = v
        else:
            t0 = _NS()
            dv = self.debate.debate(get_values(judge_txt), str(proposed))
            p.layers["L3"] = LayerVerdict(
                "L3", True, dv.passed, dv.bull_confidence, cfg.l3.threshold, dv.reason, (_NS() - t0) / 1e3, dv.details()
            )
            if not dv.passed and p.first_veto is None:
                p.first_veto = "L3"
            elif dv.passed and dv.size_fraction is not None:
                p.size *= dv.size_fraction
        p.stage = ""
        if p.first_veto is not None:
            p.action, p.confidence = "NONE", None

    def _decision(self, p: _Pending) -> Decision:
        if p.action == "NONE" and p.first_veto is None:
            p.first_veto = "L1"  # nothing proposed a direction (Layer 1 disabled): never "every layer passed"
        size = p.size if p.action != "NONE" else 0.0
        if p.action != "NONE" and size <= 0:
            p.action, p.first_veto, size = "NONE", "sizing", 0.0
        ordered = tuple(p.layers[n] for n in ("L1", "L2", "L3", "L4"))
        return Decision(
            int(p.bar.ts),
            self.symbol or p.bar.symbol,
            p.action,
            float(size),
            p.confidence,
            ordered,
            p.first_veto,
            self.config_hash,
            self.model_hashes,
            __version__,
        )

    def _size(self) -> float:
        """min(suggested fractions) × scale, capped; any undefined (NaN) suggestion sizes 0, whatever the order."""
        cfg = self.config.sizing
        fractions = [f for m in self.modules if (f := m.suggested_fraction()) is not None]
        if not all(math.isfinite(f) for f in fractions):
            return 0.0
        base = min(fractions) if fractions else 1.0
        return float(min(max(base, 0.0) * cfg.scale, cfg.max_fraction))


@dataclass
class _Pending:
    """A bar between the fast layers (under the lock) and the LLM layers (outside it)."""

    bar: Bar
    x: Any
    probs: Any
    direction: int
    spread: float
    layers: dict[str, LayerVerdict] = field(default_factory=dict)
    first_veto: str | None = None
    action: str = "NONE"
    confidence: float | None = None
    size: float = 0.0
    modules: list[dict[str, Any]] = field(default_factory=list)
    stage: str = ""  # the layer being evaluated (an exception there is reported as that layer's veto)


def _resolve_model(path: str) -> str:
    """``"nano"`` is fxgate's nano model in the cache (``fxgate train nano``, or any CLI command whose config names
    it, builds it: building is training's job, not the gate's); anything else is a file path."""
    if path == "nano":
        from fxgate.models.llm import ModelFileError

        d = nano_dir()
        if not ((d / "manifest.json").is_file() and (d / NANO_GGUF).is_file()):
            raise ModelFileError(
                f'[llm] model = "nano": the nano model is not built in {d}. Fix: run `fxgate demo --llm` or '
                "`fxgate train nano` once (needs pip install torch==2.13.0 'fxgate[train]'), or call "
                "fxgate.training.nano.ensure_nano() before building the gate"
            )
        return str(d / NANO_GGUF)
    return str(Path(path).expanduser())
