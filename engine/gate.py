"""The gate: one bar in, one :class:`~fxgate.engine.core.decision.Decision` out.

Per bar (``Gate.on_bar``; ``Gate.evaluate`` returns the same Decision with the bar's features, Layer-1
probabilities and module results as a typed :class:`BarRecord`)::

    validate (engine/intake.py) ─▶ update state ─▶ for layer in layers, cheapest first ─▶ Decision

1. **Validate** the bar before anything is touched (:class:`~fxgate.engine.intake.Intake`: types, the bar rules
   shared with the loader, timeframe, symbol, time order, implausible gaps, the wall clock). A bad bar fails
   closed: NONE with the reason, first veto ``input``, and *no* state is touched.
2. **Update state, always**: the feature engine, then every Layer-4 module with a
   :class:`~fxgate.modules.Context` carrying the bar, its features, Layer 1's calibrated probabilities, the
   candidate direction, the spread, and the outcomes of predictions whose horizon ended on this bar. A candidate is
   a bar on which all three Layer-1 models lean the same way (whatever their confidence:
   :func:`~fxgate.engine.core.records.candidate_direction`); its outcome is delivered ``horizon`` bars later and
   never earlier. (Candidates, not only emitted signals, feed the outcome-based modules — otherwise a gate that has
   not yet traded could never learn that it should.) A bar inside the Layer-1 bundle's training window (up to the
   end of its last training label) is *in sample* for the models: it updates price-only state, makes no candidate
   and gets no Layer-1 probabilities in its Context, so no module ever learns from an in-sample prediction (warm-up
   on history included); Layer 1 vetoes it. The updates are one transaction: if any of them raises, the state is
   restored to what it was before the bar and the bar is refused (first veto ``internal``). The copy taken
   before the updates is one memcpy per dtype of a buffer holding every state array (engine/transaction.py).
3. **The layers** (engine/layers.py), cheapest first: L1 (compiled trees), L4 (modules in configured order),
   sizing, then L2 (the LLM judge) and L3 (the debate). ``mode="cheapest"`` stops at the first veto;
   ``mode="full"`` evaluates every enabled layer and module for diagnostics (the LLM layers on every bar where
   Layer 1 proposes a direction). A disabled layer is never reported as passed; with Layer 1 disabled nothing
   proposes a direction, so nothing is emitted (first veto L1). A layer that has no model (L1 without a bundle,
   L2/L3 without a GGUF) fails closed with the fix in its reason.
4. **Size**: a fraction of capital (see :class:`~fxgate.engine.layers.SizingLayer`); the risk manager of L3 may
   cut it.

Steps 1-2 and the fast layers (L1, L4, sizing) run under a lock; the slow ones (the LLM calls) outside it, so a
second thread feeding the next bar keeps the feature and module state moving while an LLM call for the previous bar
is in flight. A failure of any kind (missing model, timeout, malformed answer, context overflow, an internal error
in a layer) is a fail-closed verdict naming that layer; ``on_bar`` never raises.

**Thread safety.** One Gate may be called from many threads and from asyncio tasks at once:

* ``on_bar``, ``evaluate``, ``aon_bar``, ``warm_up``, ``set_ensemble``, ``snapshot`` and ``refit_recommended`` take
  the gate's lock for everything that reads or writes state (the feature engine, the modules, the pending outcomes,
  the counts). Bars are accepted in the order the lock is taken; nothing else synchronizes the feature engine or
  the modules, so never call them directly while the gate is in use.
* The LLM layers run outside the lock, so with them on, the Decisions of one gate can *return* in another order
  than the bars went in (bar t+1's fast path finishes while bar t's judge is thinking). A caller that needs them in
  order sends the next bar of a symbol after the previous one returned (one gate per symbol:
  :class:`~fxgate.engine.pool.GatePool`); other symbols' gates are independent.
* ``aon_bar`` runs the fast part in the caller's thread (the event loop's: validation, the state updates, L1, L4 and
  sizing, well under a millisecond on a warm gate) and the LLM layers in a worker thread of the loop's default
  executor (:func:`asyncio.to_thread`), so the loop is never blocked by a model. It returns the Decision ``on_bar``
  would. Cancelling the awaiting task does not undo the bar: it was accepted; its LLM call finishes in the worker.
* ``snapshot`` captures the state between two bars' state updates. The judge's P(up) for a bar joins the state when
  that bar's LLM layers answer: a snapshot taken while they are in flight lacks it (that bar's ``Matured.llm_prob``
  is then NaN after a restore). Take snapshots after the Decision returned.
* ``Gate.restore`` builds a new gate; ``close`` must not race with calls.
"""

from __future__ import annotations

import asyncio
import math
import operator
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fxgate.engine.config import GateConfig, check_modules, load_config
from fxgate.engine.core.bars import Bar, Bars
from fxgate.engine.core.decision import Decision, LayerVerdict
from fxgate.engine.core.records import ModelProbability, ModuleResult, candidate_direction_of, mean_of
from fxgate.engine.core.version import __version__
from fxgate.engine.fused import FusedModules
from fxgate.engine.intake import Intake
from fxgate.engine.layers import (
    REPORTED,
    Candidate,
    DebateLayer,
    JudgeLayer,
    L1Layer,
    L4Layer,
    Layer,
    PromptFacts,
    SizingLayer,
    failed,
    off,
    skipped,
    unavailable,
)
from fxgate.engine.llm_setup import LlmStack, start_llm
from fxgate.engine.snapshot import Identity, SnapshotCorrupt
from fxgate.engine.snapshot import check as check_snapshot
from fxgate.engine.snapshot import read as read_snapshot
from fxgate.engine.snapshot import write as write_snapshot
from fxgate.engine.transaction import StateArena
from fxgate.models.ensemble import TreeEnsemble
from fxgate.models.features import FeatureEngine
from fxgate.modules import REGISTRY, Context, Matured, Outcome, create

__all__ = ["Gate", "BarRecord"]

_NS = time.perf_counter_ns
_I64 = 2**63 - 1
_REPORTED_OF = operator.itemgetter(*REPORTED)  # a Candidate's verdicts, as the Decision lists them


@dataclass(frozen=True, slots=True)
class BarRecord:
    """One bar's Decision with what the layers computed on the way (for the dataset builder and the report)."""

    decision: Decision
    features: np.ndarray | None  # the bar's feature row (names: Gate.features.names); None for a refused bar
    probs: tuple[ModelProbability, ...]  # Layer 1's calibrated probabilities; empty in sample / without a model
    modules: tuple[ModuleResult, ...]  # the module verdicts Layer 4 evaluated on this bar (may be fewer than all)
    direction: int  # the candidate direction: +1, -1, or 0 when the models do not all lean the same way
    #: with ``Gate(trace=True)``: every configured module's verdict on this bar, each evaluated alone (whatever
    #: vetoed before it), in configured order; empty otherwise, for a refused bar, or with Layer 4 off
    isolated: tuple[ModuleResult, ...] = ()
    size_alone: float = math.nan  # with ``trace``: the size the sizing modules suggest on this bar, vetoed or not


def certification_of(
    cfg: GateConfig, ensemble: Any = None, symbol: str | None = None, timeframe: str | None = None
) -> dict[str, Any] | None:
    """What a certified config's Decisions carry (``Decision.certification``); None when it is not certified, or
    when the gate is not what was certified: another Layer-1 bundle, symbol or timeframe, or path thresholds edited
    away from the certified value (the guarantee was computed for those and nothing else)."""
    cf = cfg.certify
    if not cf.certified:
        return None
    bundle = ensemble.bundle_hash[:16] if ensemble is not None and getattr(ensemble, "manifest", None) else ""
    if cf.bundle_hash and bundle != cf.bundle_hash:
        return None
    if (cf.symbol and symbol is not None and symbol != cf.symbol) or (
        cf.timeframe and timeframe is not None and timeframe != cf.timeframe
    ):
        return None
    p = cfg.l4.params
    thresholds = {
        name: float(
            cfg.l1.threshold
            if name == "l1"
            else cfg.l2.threshold
            if name == "l2"
            else p.get(name, {}).get(
                REGISTRY[name].certify_param, REGISTRY[name].defaults[REGISTRY[name].certify_param]
            )
        )
        for name in cf.path
    }
    if cf.value and any(v != cf.value for v in thresholds.values()):
        return None
    return {
        "target": cf.target,
        "delta": cf.delta,
        "method": cf.method,
        "n_outcomes": cf.n_outcomes,
        "n_signals": cf.n_signals,
        "n_correct": cf.n_correct,
        "window_start": cf.window_start,
        "window_end": cf.window_end,
        "thresholds": thresholds,
        "monitor_alpha": cf.monitor_alpha,
    }


class Gate:
    """Live signal gate for one instrument and timeframe (see the module docstring)."""

    def __init__(
        self,
        config: GateConfig | None = None,
        ensemble: Any = None,
        *,
        timeframe: str,
        symbol: str = "",
        llm: LlmStack | None = None,
        trace: bool = False,
        fused: bool = True,
    ) -> None:
        self.config = check_modules(config or GateConfig(), "GateConfig")
        #: evaluate every module's verdict on every accepted bar, each alone (BarRecord.isolated): the report's
        #: view of what each layer would have done. The Decision is the same either way (module verdicts read
        #: state, they do not change it: tested); off in live serving, where only the cheapest-first path runs.
        self.trace = trace
        self.config_hash = self.config.hash
        self.certification: dict[str, Any] | None = None  # set with the models (set_ensemble)
        self.timeframe = timeframe
        self.symbol = symbol
        self.features = FeatureEngine(timeframe)
        p = self.config.l4.params
        self.modules = (
            [create(n, gate=self.config.module_settings, **p.get(n, {})) for n in self.config.l4.modules]
            if self.config.l4.enabled
            else []
        )
        self.intake = Intake(timeframe, symbol, self.config.input)
        #: the modules' per-bar updates: the fusable ones in one compiled call (engine/fused.py); ``fused=False``
        #: calls every module's ``update`` (the reference the fused step is tested equal to)
        self._updates = FusedModules(self.modules, timeframe, self.features.n_features) if fused else None
        #: the per-bar transaction's copy of the feature and module state (engine/transaction.py)
        self._tx = StateArena(lambda: [self.features, *self.modules])
        # one LLM stack may serve many gates (GatePool: the model is loaded once; its runtime queues the calls)
        self._owns_llm = llm is None
        self.llm = start_llm(self.config) if llm is None else llm
        self._lock = threading.RLock()
        self._bars = 0
        self._pending: deque[tuple[int, int, int, float, float, float]] = deque()  # due, ts, dir, entry, spread, p
        #: every accepted bar's forecast until its horizon ends: (due, entry_bar, ts, close, probs, features, dir,
        #: spread); and the LLM judge's P(up) per entry bar, filled in after the slow layers answer
        self._forecasts: deque[tuple[int, int, int, float, Any, Any, int, float]] = deque()
        self._llm_probs: dict[int, float] = {}
        self._emitted: dict[int, int] = {}  # entry bar -> +1 / -1 for the bars the gate emitted a signal on
        self.rejected = 0
        #: bars of this gate whose LLM layers are running in aon_bar's worker now (the server's LLM queue depth)
        self.llm_in_flight = 0
        self.set_ensemble(ensemble)

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
        ens = TreeEnsemble.load(bundle) if bundle is not None else None
        tf = timeframe or (ens.timeframe if ens is not None else None)
        if not tf:
            raise ValueError("Gate.from_config needs timeframe=... when no bundle is given")
        return cls(cfg, ens, timeframe=tf, symbol=symbol or (ens.symbol if ens is not None else ""))

    def set_ensemble(self, ensemble: Any) -> None:
        """Swap the Layer-1 models (walk-forward refits); feature and module state carry on. Takes the lock: a bar
        in flight is evaluated wholly by the old models or wholly by the new ones."""
        with self._lock:
            self._set_ensemble(ensemble)

    def _set_ensemble(self, ensemble: Any) -> None:
        if ensemble is not None and ensemble.timeframe and ensemble.timeframe != self.timeframe:
            raise ValueError(
                f"bundle is for {ensemble.timeframe} bars, the gate runs {self.timeframe}. Fix: load a "
                f"bundle fitted on {self.timeframe} bars (fxgate fit), or resample the bars to "
                f"{ensemble.timeframe}"
            )
        prepare = getattr(ensemble, "prepare_explain", None)
        if prepare is not None and getattr(ensemble, "fitted", False) and any(m.explains for m in self.modules):
            prepare()  # its TreeSHAP layouts now, not on the first bar that asks; raises before anything is swapped
        self.ensemble = ensemble
        self.certification = certification_of(self.config, ensemble, self.symbol or None, self.timeframe)
        # bars up to the end of the last training label are in sample for these models
        tw = (ensemble.manifest or {}).get("training_window", {}) if ensemble is not None else {}
        self._in_sample_until: int | None = int(tw["last_label_end_ts"]) if "last_label_end_ts" in tw else None
        # hashed once here, not per bar
        l1 = {"l1": ensemble.bundle_hash[:16]} if ensemble is not None and ensemble.manifest else {}
        self.model_hashes = {**l1, **self.llm.hashes}
        cfg = self.config
        facts = PromptFacts(self.symbol, self.timeframe, cfg.horizon, self.modules, self.features.names)
        self.layers: tuple[Layer, ...] = (
            L1Layer(cfg, ensemble, self._in_sample_until),
            L4Layer(cfg, self.modules),
            SizingLayer(cfg, self.modules),
            JudgeLayer(cfg, self.llm.judge, facts, self.llm.error),
            DebateLayer(cfg, self.llm.debate, facts, self.llm.error),
        )
        self._fast_layers = tuple(la for la in self.layers if la.cost == "fast")
        self._slow_layers = tuple(la for la in self.layers if la.cost == "slow")
        self._reported = {la.name: la for la in self.layers if la.reported}
        #: a disabled layer's verdict on every bar that spent nothing on it (frozen, so one is shared by every Decision)
        self._off = {la.name: off(la) for la in self.layers if not la.enabled}
        self._sizing = self.layer("sizing")  # the trace asks it for the size on every bar

    def layer(self, name: str) -> Layer:
        """The layer called ``name`` ("L1", "L4", "sizing", "L2", "L3")."""
        for la in self.layers:
            if la.name == name:
                return la
        raise KeyError(f"no layer {name!r}; the gate's layers: {', '.join(la.name for la in self.layers)}")

    def close(self) -> None:
        """Release the LLM runtimes (worker threads, llama.cpp contexts) unless they were given (``llm=``): their
        owner closes those."""
        if self._owns_llm:
            self.llm.close()

    # -- warm-up ---------------------------------------------------------------------------------------------------
    def warm_up(self, bars: Bars | None = None) -> int:
        """Compile every kernel now (not on the first live bar), then run ``bars`` (history before the live feed)
        through the state updates so windows are full when trading starts. History inside the Layer-1 bundle's
        training window updates price-only state (no candidates, no outcomes: see the module docstring). The LLM
        models were already loaded and verified by the constructor. Returns how many history bars were refused
        (the same checks as ``on_bar``; ``self.rejected`` counts them too)."""
        probe = FeatureEngine(self.timeframe)
        probe.update(Bar(0, 1.0, 1.0, 1.0, 1.0, 1.0, timeframe=self.timeframe))
        for m in self.modules:
            m.warm_up()
        if self._updates is not None:
            self._updates.warm_up()
        if self.ensemble is not None:
            self.ensemble.predict_row(np.zeros(self.features.n_features))
            if self.ensemble.has_quantiles:
                self.ensemble.predict_quantiles(np.zeros(self.features.n_features))
        refused = 0
        if bars is not None:
            for b in bars:  # state only: history never reaches the LLM layers
                with self._lock:
                    refused += isinstance(self._fast(b, verdicts=False), Decision)
        return refused

    # -- the bar -----------------------------------------------------------------------------------------------------
    def on_bar(self, bar: Bar) -> Decision:
        """Decide on one bar. Never raises: bad input, an internal error or an LLM failure answers NONE with the
        reason and keeps the state consistent (a refused bar changes nothing)."""
        return self.evaluate(bar).decision

    def evaluate(self, bar: Bar) -> BarRecord:
        """:meth:`on_bar`, returning the Decision with the bar's features, probabilities and module results."""
        try:
            with self._lock:
                c = self._fast(bar)
            if isinstance(c, Decision):
                return BarRecord(c, None, (), (), 0)
            assert c is not None
        except Exception as exc:  # noqa: BLE001 - last resort: on_bar never raises
            return BarRecord(
                self._reject(bar, f"internal error: {type(exc).__name__}: {exc}", "internal"), None, (), (), 0
            )
        return self._finish(c)

    async def aon_bar(self, bar: Bar) -> Decision:
        """:meth:`on_bar` for asyncio: the fast part here, in the caller's thread, under the lock; the LLM layers
        in a worker thread, so the event loop (and every other symbol's gate) keeps going while a model thinks.
        Returns the same Decision as ``on_bar``; never raises."""
        try:
            with self._lock:
                c = self._fast(bar)
            if isinstance(c, Decision):
                return c
            assert c is not None
        except Exception as exc:  # noqa: BLE001 - last resort, as in evaluate
            return self._reject(bar, f"internal error: {type(exc).__name__}: {exc}", "internal")
        if not self._needs_worker(c):  # no model will be asked: a thread hop would only add latency
            return self._finish(c).decision
        self.llm_in_flight += 1  # aon_bar runs on one event loop: no other thread writes this count
        try:
            return (await asyncio.to_thread(self._finish, c)).decision
        finally:
            self.llm_in_flight -= 1

    def _needs_worker(self, c: Candidate) -> bool:
        """Whether a slow layer will call its model on this candidate (the conditions of :meth:`_verdict`)."""
        return any(
            la.enabled and la.unavailable is None and (c.first_veto is None or c.full) and la.applies(c)
            for la in self._slow_layers
        )

    def _finish(self, c: Candidate) -> BarRecord:
        """The slow layers (outside the lock), then the Decision."""
        self._run(c, self._slow_layers)
        d = self._decision(c)
        if math.isfinite(c.llm_prob) or d.action != "NONE":  # what the slow layers and the gate said joins this
            with self._lock:  # bar's forecast, if it is still pending
                if self._forecasts and self._forecasts[0][1] <= c.bar_index:
                    if math.isfinite(c.llm_prob):
                        self._llm_probs[c.bar_index] = c.llm_prob
                    if d.action != "NONE":
                        self._emitted[c.bar_index] = 1 if d.action == "BUY" else -1
        return BarRecord(d, c.features, c.model_probabilities(), c.modules, c.direction, c.isolated, c.size_alone)

    # -- snapshots -------------------------------------------------------------------------------------------------
    @property
    def identity(self) -> Identity:
        """What this gate's state is valid for (a snapshot records it; a restore compares it)."""
        return Identity(
            __version__,
            self.config_hash,
            dict(self.model_hashes),
            self.timeframe,
            self.symbol,
            tuple(m.state_name() for m in self.modules),
        )

    def snapshot(self, path: str | Path) -> Path:
        """Write the whole state to ``path`` (engine/snapshot.py: format, identity, atomic write). Takes the lock
        only to copy the state, after waiting for a scheduled recompute in flight (its result is part of it);
        encoding and the write happen outside it. Returns the path."""
        with self._lock:
            for m in self.modules:  # a scheduled recompute in flight: its result joins the state (plain data)
                m.settle()
            feats, mods, last_ts, bars, pending, forecasts, llm, emitted = self._snapshot()
            state = {
                "features": feats,
                "modules": mods,
                "intake_last_ts": last_ts,
                # a far-gap run in progress (intake.py): a restart must not forget how many bars confirmed it
                "intake_gap_run": self.intake.gap_run,
                "bars": bars,
                "rejected": self.rejected,
                "pending": pending,
                "forecasts": forecasts,
                "llm_probs": llm,
                "emitted": emitted,
            }
            ident = self.identity
        return write_snapshot(path, ident, bars, last_ts, state)

    @classmethod
    def restore(
        cls,
        path: str | Path,
        config: GateConfig | None = None,
        ensemble: Any = None,
        *,
        timeframe: str | None = None,
        symbol: str | None = None,
        llm: LlmStack | None = None,
        fused: bool = True,
    ) -> Gate:
        """A new gate built from ``config``, ``ensemble`` and ``llm`` (as ``Gate(config, ensemble, ...)``) that
        continues from the snapshot at ``path`` exactly as the gate that wrote it would have. ``timeframe`` and
        ``symbol`` default to the snapshot's; given, they must equal it.

        Refuses (:class:`~fxgate.engine.snapshot.SnapshotMismatch`, with every differing field and the fix) a
        snapshot written by another fxgate version, snapshot format, config hash, model hashes, timeframe, symbol
        or module list, and (:class:`~fxgate.engine.snapshot.SnapshotCorrupt`) a truncated or altered file. The
        identity fields that need no models are checked before the gate (and its LLM runtimes) is built."""
        snap = read_snapshot(path)
        cfg = check_modules(config or GateConfig(), "GateConfig")
        tf = snap.identity.timeframe if timeframe is None else timeframe
        sym = snap.identity.symbol if symbol is None else symbol
        check_snapshot(
            snap,
            fxgate_version=__version__,
            config_hash=cfg.hash,
            timeframe=tf,
            symbol=sym,
            modules=tuple(REGISTRY[m].state_name() for m in cfg.l4.modules) if cfg.l4.enabled else (),
        )
        gate = cls(cfg, ensemble, timeframe=tf, symbol=sym, llm=llm, fused=fused)
        try:
            check_snapshot(snap, **gate.identity.to_dict())
            gate._load(snap.state, snap.path)
        except BaseException:
            gate.close()
            raise
        return gate

    def _load(self, st: dict[str, Any], path: str) -> None:
        try:
            snap = (
                st["features"],
                st["modules"],
                st["intake_last_ts"],
                st["bars"],
                st["pending"],
                st["forecasts"],
                st["llm_probs"],
                st["emitted"],
            )
            with self._lock:
                self._restore(snap)
                self.intake.gap_run = st["intake_gap_run"]
                self.rejected = int(st["rejected"])
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise SnapshotCorrupt(
                path,
                "state",
                f"the state does not fit this gate ({type(exc).__name__}: {exc})",
                "take a new snapshot with this fxgate, or start fresh and warm up from history (Gate.warm_up)",
            ) from exc

    def _snapshot(self) -> tuple[Any, ...]:
        return (self.features.state_dict(), [m.state_dict() for m in self.modules], *self._counters())

    def _tx_save(self) -> tuple[Any, ...]:
        """The per-bar transaction's copy: the feature and module state through the arena (one copy per dtype),
        the rest as :meth:`_snapshot` copies it."""
        return (self._tx.save(), *self._counters())

    def _counters(self) -> tuple[Any, ...]:
        """The gate's own state besides the features and modules (copies)."""
        return (
            self.intake.last_ts,
            self._bars,
            tuple(self._pending),
            tuple(self._forecasts),
            dict(self._llm_probs),
            dict(self._emitted),
        )

    def _tx_restore(self, snap: tuple[Any, ...]) -> None:
        arena, self.intake.last_ts, self._bars, pending, forecasts, llm, emitted = snap
        self._tx.restore(arena)
        self._pending = deque(pending)
        self._forecasts = deque(forecasts)
        self._llm_probs = llm
        self._emitted = emitted

    def _restore(self, snap: tuple[Any, ...]) -> None:
        feats, mods, self.intake.last_ts, self._bars, pending, forecasts, llm, emitted = snap
        self.features.load_state_dict(feats)
        for m, st in zip(self.modules, mods, strict=True):
            m.load_state_dict(st)
        self._pending = deque(pending)
        self._forecasts = deque(forecasts)
        self._llm_probs = llm
        self._emitted = emitted

    @property
    def refit_recommended(self) -> tuple[str, ...]:
        """The Layer-4 modules that currently recommend refitting the Layer-1 models (drift detected)."""
        with self._lock:
            return tuple(m.name for m in self.modules if m.refit_recommended())

    def _fast(self, bar: Any, verdicts: bool = True) -> Decision | Candidate | None:
        """Validation, the state updates and the fast layers, under the lock. A refused bar returns its Decision;
        ``verdicts=False`` (warm-up): the state updates only (returns None)."""
        clean, problem = self.intake.check(bar)
        self.intake.settle()
        if problem or clean is None:
            return self._reject(bar, problem or "invalid bar")
        bar = clean
        cfg = self.config
        spread = bar.spread if bar.spread is not None else cfg.spread
        in_sample = self._in_sample_until is not None and bar.ts <= self._in_sample_until
        try:
            snap = self._tx_save()
        except Exception as exc:  # noqa: BLE001 - nothing has changed yet: refuse the bar
            return self._reject(
                bar,
                f"internal error while saving the state: {type(exc).__name__}: {exc}; the bar was not accepted "
                "and the state is unchanged",
                "internal",
            )
        try:
            t0 = _NS()
            x = self.features.update(bar)
            probs = self.ensemble.predict_row(x) if self.ensemble is not None and not in_sample else None
            t_l1 = _NS() - t0
            ps = probs.tolist() if probs is not None else None  # Python floats: numpy on 3 numbers is slower
            direction = candidate_direction_of(ps)
            self.intake.accept(bar.ts)
            self._bars += 1
            due: list[Outcome] = []  # outcomes whose horizon ends on this bar
            while self._pending and self._pending[0][0] <= self._bars:
                _, ts0, d, entry, sp, pr = self._pending.popleft()
                due.append(Outcome(ts0, bar.ts, d, entry, bar.close, sp, pr))
            if direction:
                pdir = mean_of(ps) if direction > 0 else 1 - mean_of(ps)  # type: ignore[arg-type]
                self._pending.append((self._bars + cfg.horizon, bar.ts, direction, bar.close, spread, pdir))
            matured: list[Matured] = []  # every bar's forecast whose horizon ends on this bar
            while self._forecasts and self._forecasts[0][0] <= self._bars:
                _, i0, ts0, entry, p0, x0, d0, sp0 = self._forecasts.popleft()
                llm = self._llm_probs.pop(i0, math.nan)
                emitted = self._emitted.pop(i0, 0)
                matured.append(Matured(i0, ts0, bar.ts, entry, bar.close, p0, x0, d0, sp0, llm, emitted))
            self._forecasts.append(
                (self._bars + cfg.horizon, self._bars, bar.ts, bar.close, probs, x, direction, spread)
            )
            ctx = Context(
                bar,
                features=x,
                probs=probs,
                direction=direction,
                size=1.0,
                outcomes=tuple(due),
                ensemble=self.ensemble,
                spread=spread,
                matured=tuple(matured),
                bar_index=self._bars,
                in_sample=in_sample,
            )
            t0 = _NS()
            if (upd := self._updates) is not None:
                if upd.stale(self.modules):  # the module list was changed after the gate was built
                    upd = self._updates = FusedModules(self.modules, self.timeframe, self.features.n_features)
                upd.update(ctx)
            else:
                for m in self.modules:
                    m.update(ctx)
            t_l4_update = _NS() - t0
        except BaseException as exc:  # the bar is refused and the state is what it was before it
            self._tx_restore(snap)
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
        c = Candidate(
            bar=bar,
            features=x,
            probs=probs,
            direction=direction,
            spread=spread,
            in_sample=in_sample,
            full=cfg.mode == "full",
            bar_index=self._bars,
            latency_us={"L1": t_l1 / 1e3, "L4": t_l4_update / 1e3},
        )
        self._run(c, self._fast_layers)
        if self.trace:
            self._trace(c)
        return c

    def _trace(self, c: Candidate) -> None:
        """Every module's verdict alone, reusing those Layer 4 already evaluated on this bar, and the sizing modules'
        size. A module with ``trace_every`` = k > 1 is traced on every k-th accepted bar only, whether or not the
        gate reached it there: the bars where the gate did reach it are those every earlier layer passed, so
        keeping them would bias its figures toward them. A module that raises here is traced as failed; the
        Decision does not see it."""
        done = {r.name: r for r in c.modules}
        out = []
        for m in self.modules:
            if c.bar_index % max(1, int(m.trace_every)):
                continue
            r = done.get(m.name)
            if r is None:
                try:
                    r = m.verdict()
                except Exception as exc:  # noqa: BLE001 - a diagnostic: the bar's Decision is already made
                    r = ModuleResult(m.name, math.nan, False, math.nan, f"internal error: {type(exc).__name__}: {exc}")
            out.append(r)
        c.isolated = tuple(out)
        try:
            c.size_alone = self._sizing.size()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - as above
            c.size_alone = math.nan

    def _run(self, c: Candidate, layers: tuple[Layer, ...]) -> None:
        """The layer loop: each layer's verdict in turn, cheapest first; after a veto, ``mode="cheapest"`` only
        reports the rest as not evaluated. An exception in a layer is that layer's fail-closed verdict."""
        for layer in layers:
            c.stage = layer.name
            try:
                v, vetoes = self._verdict(layer, c)
            except Exception as exc:  # noqa: BLE001 - the bar's state moved on; its verdict fails closed
                self._fail(c, layer, exc, layers)
                return
            if v is None:
                continue
            if layer.reported:
                c.layers[layer.name] = v
            if vetoes and c.first_veto is None:
                c.first_veto = layer.veto_name(c)
            if c.first_veto is not None:
                c.action, c.confidence = "NONE", None
        c.stage = ""

    def _verdict(self, layer: Layer, c: Candidate) -> tuple[LayerVerdict | None, bool]:
        """(verdict, whether it vetoes the bar); (None, False) for an unreported layer that does not apply."""
        spent = c.latency_us.get(layer.name, 0.0)
        if not layer.enabled:
            v = self._off.get(layer.name) if spent == 0.0 else None
            return (off(layer, spent) if v is None else v), layer.off_vetoes
        if (why := layer.unavailable) is not None:
            return unavailable(layer, why, spent), True
        if c.first_veto is not None and not c.full:
            return (skipped(layer, f"{c.first_veto} vetoed", spent) if layer.reported else None), False
        if not layer.applies(c):
            why = f"{c.first_veto} vetoed" if c.first_veto else None
            return (skipped(layer, why, spent) if layer.reported else None), False
        v = layer.evaluate(c)
        return v, not v.passed

    def _fail(self, c: Candidate, layer: Layer, exc: Exception, phase: tuple[Layer, ...]) -> None:
        stage = c.stage or layer.name
        # sizing is not a layer of the Decision: its sizes come from Layer-4 module state, so its errors are L4's
        name = layer.name if layer.reported else "L4"
        what = "internal error" + ("" if layer.reported else " while sizing")
        where = f" in {stage}" if ":" in stage else ""
        c.layers[name] = failed(
            name, self._reported[name].enabled, f"{what}{where}: {type(exc).__name__}: {exc}", c.layers.get(name)
        )
        for la in phase:
            if la.reported and la.name not in c.layers:
                v = skipped(la, f"{name} failed") if la.enabled else off(la)
                c.layers[la.name] = replace(v, threshold=None)
        c.first_veto = c.first_veto or name
        c.action, c.confidence, c.size = "NONE", None, 0.0
        c.stage = ""

    def _reject(self, bar: Any, reason: str, veto: str = "input") -> Decision:
        self.rejected += 1
        layers = tuple(skipped(la, reason) if la.enabled else off(la) for la in (self._reported[n] for n in REPORTED))
        ts = getattr(bar, "ts", None)
        ts = int(ts) if isinstance(ts, int | np.integer) and not isinstance(ts, bool) and 0 <= ts <= _I64 else 0
        sym = getattr(bar, "symbol", "")
        symbol = self.symbol or (sym if isinstance(sym, str) else "")
        return Decision(
            ts,
            symbol,
            "NONE",
            0.0,
            None,
            layers,
            veto,
            self.config_hash,
            self.model_hashes,
            __version__,
            certification=self.certification,
        )

    def _decision(self, c: Candidate) -> Decision:
        if c.action == "NONE" and c.first_veto is None:
            c.first_veto = "L1"  # nothing proposed a direction (Layer 1 disabled): never "every layer passed"
        size = c.size if c.action != "NONE" else 0.0
        if c.action != "NONE" and size <= 0:  # the risk manager cut the size to nothing
            c.action, c.first_veto, size = "NONE", "sizing", 0.0
        return Decision(
            int(c.bar.ts),
            self.symbol or c.bar.symbol,
            c.action,
            float(size),
            c.confidence,
            _REPORTED_OF(c.layers),
            c.first_veto,
            self.config_hash,
            self.model_hashes,
            __version__,
            certification=self.certification,
        )
