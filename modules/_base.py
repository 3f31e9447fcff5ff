"""The certainty-module contract: streaming state, a verdict with a reason, snapshots, a registry by name.

Every module follows one shape (shared/DESIGN.md):

* ``update(ctx)`` runs on every bar, whatever the verdicts, in O(1) or O(window);
* ``verdict()`` returns a :class:`~fxgate.engine.core.records.ModuleResult` — score, pass/fail, threshold and a
  reason a trader can read; a module with too little data fails closed ("insufficient data: 12/50 bars"). The reason
  may be handed as a function that formats it when first read (most are never read): it holds copies of the
  verdict's numbers, never the module or its state arrays (``ModuleResult``);
* ``state_dict()``/``load_state_dict()`` snapshot and restore the state exactly;
* ``warm_up()`` compiles the module's kernels (called at gate start, never on the first live bar);
* ``scheduled`` modules (bootstraps: edge_proof, model_confidence_set) keep O(1) streaming state per bar and run
  their expensive ``recompute()`` only every ``every`` bars, off the bar's critical path: submitted to a
  background thread on the due bar and applied ``lag`` updates later (``fxgate.modules._schedule``); the verdict
  reads the last applied recompute. A recompute is deterministic (its random stream is seeded from the module's
  ``seed`` and the number of observations) and is applied on a bar fixed by bar counts, never by timing, so a
  replay, a live run and a restored snapshot give the same p-values on the same bars; ``settle()`` waits for the
  one in flight;
* ``refit_recommended()`` (drift detectors: double_adapt) says the Layer-1 models should be refit; the gate
  collects it (``Gate.refit_recommended``) and replay may act on it (``[replay] refit_on_drift``);
* ``suggested_fraction()`` (modules that size: robust_kelly, bayesian_sizing) is the share of capital to commit to
  the current candidate's signal, for a position counted in units of notional (``Context.size`` = 1 unit: the
  outcomes it learns from are the P&L of one unit). 0.02 means "stake 2% of capital on this signal"; NaN means
  "cannot say" and sizes 0; None (the default) means the module does not size. The gate takes the smallest
  suggestion, times ``[sizing] scale``, capped at ``[sizing] max_fraction``.

State lives in numpy arrays named in ``state_keys``. Scalar state sits in named slots of an int64 array ``ist``
and a float64 array ``fs``: the slot names are module-level ints (``I_SEEN``, ``F_SCALE``, …; numba freezes them
into compiled code and plain Python reads them as fast as literals), tabulated in each module's docstring with
their meaning and the paper's symbol.

Kernel call shape. Kernels are plain-Python twins compiled with :func:`fxgate.engine.core.jit.kernel` (the one
place for numba flags); every per-bar kernel takes its arguments in one order and returns nothing::

    _x_step(state arrays..., the bar's values..., parameters...)

* state arrays: the module's state, updated in place (the arrays of ``state_keys`` it reads or writes, ``ist`` and
  ``fs`` among them);
* the bar's values: the scalars this bar brings — a close, a volume, or the one number the module's ``update``
  derives from them (BOCPD's and the regime filter's standardized return);
* parameters: the module's settings and the constants derived from them (log H, the prior), fixed between resets.

The wrapper (``update``) checks its inputs and skips bad bars; the kernel does none of that. One order for all is
what lets a later fused kernel run every streaming module's step from one compiled call.
"""

from __future__ import annotations

import difflib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from fxgate.engine.core.bars import Bar
from fxgate.engine.core.records import ModuleResult
from fxgate.modules._fusion import FusedStep

__all__ = [
    "CertaintyModule",
    "ModuleResult",
    "Context",
    "Matured",
    "Outcome",
    "register",
    "REGISTRY",
    "create",
    "insufficient",
]


@dataclass(frozen=True, slots=True)
class Outcome:
    """A prediction whose horizon has elapsed: what was predicted at ``entry_ts`` and what happened by ``exit_ts``.

    Prices are mids (bar closes); ``spread`` is the full spread at entry, in price units.
    """

    entry_ts: int
    exit_ts: int
    direction: int  # +1 long, -1 short
    entry_price: float
    exit_price: float
    spread: float = 0.0
    prob: float = math.nan  # the model's probability of ``direction`` at entry

    @property
    def markout(self) -> float:
        """Move in the predicted direction, price units, before costs."""
        return self.direction * (self.exit_price - self.entry_price)

    @property
    def pnl(self) -> float:
        """Markout net of the full spread at entry (half paid on entry, half on exit). This is fxgate's one cost
        convention: prices are mids, a round trip pays one full spread; replay's trades and every module use it."""
        return self.markout - self.spread

    @property
    def won(self) -> bool:
        return self.pnl > 0


@dataclass(frozen=True, slots=True)
class Matured:
    """One accepted bar's forecast whose horizon has elapsed: what the gate knew at ``entry_ts`` and what the price
    did by ``exit_ts``, delivered ``horizon`` accepted bars later, never earlier.

    Every accepted bar matures (not only candidates): the outcome-scoring modules (IC, conformal intervals,
    quantile calibration, drift on the loss stream, factor weights, the model confidence set) need each bar's
    prediction paired with its realized return. ``probs`` is None for a bar inside the Layer-1 bundle's training
    window (in sample for the models) and without a model: a module that scores predictions skips those.
    ``entry_bar`` is the gate's index of the entry bar (``Context.bar_index`` then): a module that stores its own
    prediction at entry (a conformal interval, quantiles) keeps it in a ring indexed by it.
    """

    entry_bar: int
    entry_ts: int
    exit_ts: int
    entry_price: float
    exit_price: float
    probs: np.ndarray | None  # calibrated P(up) per Layer-1 model at entry; None in sample / without a model
    features: np.ndarray | None  # the entry bar's feature row
    direction: int = 0  # the candidate direction at entry (+1/-1), 0 when there was none
    spread: float = math.nan  # the full spread at entry, price units
    #: the LLM judge's P(up) at entry (its certainty if it answered BUY, 1 - certainty if SELL); NaN when the judge
    #: did not answer on that bar (it runs only on proposed bars, and only if its answer arrived in time)
    llm_prob: float = math.nan
    #: what the gate emitted on the entry bar: +1 BUY, -1 SELL, 0 no signal (filled in after the slow layers, like
    #: ``llm_prob``; the precision monitor scores the gate's own signals with it)
    emitted: int = 0

    @property
    def log_return(self) -> float:
        """log(exit / entry): the realized move over the horizon, before costs."""
        if self.entry_price > 0 and self.exit_price > 0:
            return math.log(self.exit_price / self.entry_price)
        return math.nan

    @property
    def up(self) -> bool:
        """Whether the price rose over the horizon (the event Layer 1's P(up) forecasts)."""
        return self.exit_price > self.entry_price


@dataclass(slots=True)
class Context:
    """What a module sees on one bar. Outcomes arrive only once their horizon has elapsed (no look-ahead)."""

    bar: Bar
    features: np.ndarray | None = None
    probs: np.ndarray | None = None  # calibrated P(up) per Layer-1 model
    direction: int = 0  # the candidate direction on this bar (+1/-1), 0 when there is none
    size: float = 1.0  # intended position size: 1 unit of notional (modules' costs and edges are per unit)
    outcomes: tuple[Outcome, ...] = ()
    #: the spread this bar trades at, price units: the bar's own, else the gate's ``spread`` setting (NaN: unknown)
    spread: float = math.nan
    ensemble: Any = None  # the Layer-1 TreeEnsemble, for modules that explain it (SHAP)
    #: every accepted bar's forecast whose horizon ended on this bar (see :class:`Matured`)
    matured: tuple[Matured, ...] = ()
    bar_index: int = 0  # the gate's count of accepted bars, this one included (Matured.entry_bar refers to it)
    in_sample: bool = False  # the bar lies inside the Layer-1 bundle's training window (no probabilities)


def insufficient(name: str, have: int, need: int, threshold: float, what: str = "bars") -> ModuleResult:
    return ModuleResult(name, math.nan, False, threshold, lambda: f"insufficient data: {have}/{need} {what}")


REGISTRY: dict[str, type[CertaintyModule]] = {}


def register(name: str):  # type: ignore[no-untyped-def]
    """Class decorator: make a module available by ``name``. A duplicate name raises."""

    def deco(cls: type[CertaintyModule]) -> type[CertaintyModule]:
        if name in REGISTRY:
            raise ValueError(f"certainty module {name!r} is already registered by {REGISTRY[name].__qualname__}")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return deco


def create(name: str, gate: dict[str, Any] | None = None, **params: Any) -> CertaintyModule:
    """Instantiate a registered module; unknown names and parameters are errors with a did-you-mean. ``gate`` holds
    the gate-level settings (``GateConfig.module_settings``, e.g. ``horizon``); a module receives those it declares
    in ``gate_settings``, and a per-module value for one of them is an error (one value for the whole gate)."""
    if name not in REGISTRY:
        near = difflib.get_close_matches(name, REGISTRY, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"unknown certainty module {name!r}{hint} Known: {', '.join(sorted(REGISTRY))}")
    cls = REGISTRY[name]
    for k in cls.gate_settings:
        if k in params:
            raise ValueError(
                f"module {name!r} takes {k!r} from the gate's top-level setting ({k} = ...), so that "
                f"every layer uses one value. Fix: delete {k!r} from [l4.params.{name}]"
            )
    inject = {k: v for k, v in (gate or {}).items() if k in cls.gate_settings}
    return cls(**params, **inject)


class CertaintyModule(ABC):
    """Base class. Subclasses declare ``defaults`` (parameter -> default) and ``state_keys`` (attributes that make up
    the streaming state, numpy arrays or scalars)."""

    name: ClassVar[str] = ""
    #: the module's entry in the formula catalogue (``fxgate train formulas``) and in the LLM prompt: its name in
    #: the design table, the formula it implements, and the paper it comes from
    title: ClassVar[str] = ""
    formula: ClassVar[str] = ""
    citation: ClassVar[str] = ""
    #: the default pass rule in one line (``fxgate config init`` and README's module table show it)
    rule: ClassVar[str] = ""
    #: True for a module whose verdict comes from a periodic ``recompute()`` (a bootstrap) rather than per bar
    scheduled: ClassVar[bool] = False
    #: the module asks the Layer-1 ensemble to explain rows (``ctx.ensemble.explain``): the gate has the ensemble
    #: build its TreeSHAP layouts before the first bar (``TreeEnsemble.prepare_explain``)
    explains: ClassVar[bool] = False
    #: gate-level settings (keys of ``GateConfig.module_settings``) this module's parameters take from the gate
    gate_settings: ClassVar[tuple[str, ...]] = ()
    #: the parameter ``fxgate calibrate`` may certify (on ``[certify] path``): the module passes iff its verdict's
    #: score >= that parameter; None: the module has no certifiable threshold
    certify_param: ClassVar[str | None] = None
    #: whether the LLM prompts show this module (its catalogue entry and its verdict's line). False for a gate-level
    #: safeguard that says nothing about the bar (precision_monitor: ``fxgate calibrate`` adds it to a certified
    #: config, so a judge trained on an uncalibrated config's prompts would otherwise see a line it never learnt)
    in_prompt: ClassVar[bool] = True
    #: the layout of the module's state (its arrays' sizes and slots); raised when it changes, so a snapshot of the
    #: old layout is refused as another gate's (``Gate.identity`` lists it as ``name@version``) instead of loaded
    state_version: ClassVar[int] = 1

    @classmethod
    def state_name(cls) -> str:
        """The module as a snapshot's identity lists it: its name, and ``@version`` once its state layout changed."""
        return cls.name if cls.state_version == 1 else f"{cls.name}@{cls.state_version}"

    #: a replay's trace (``Gate(trace=True)``) evaluates this module alone on every ``trace_every``-th accepted bar
    #: where the gate did not reach it: 1 for every module whose verdict costs microseconds
    trace_every: ClassVar[int] = 1
    defaults: ClassVar[dict[str, Any]] = {}
    state_keys: ClassVar[tuple[str, ...]] = ()
    #: state arrays (of ``state_keys``) of which an update writes in place only the rows :meth:`tx_rows` declares:
    #: rings the gate's per-bar transaction copies by row (``fxgate.engine.transaction``)
    tx_rings: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **params: Any) -> None:
        unknown = [k for k in params if k not in self.defaults]
        if unknown:
            k = unknown[0]
            near = difflib.get_close_matches(k, self.defaults, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ValueError(
                f"module {self.name!r} has no parameter {k!r}{hint} Parameters: {', '.join(sorted(self.defaults))}"
            )
        self.params = {**self.defaults, **params}
        self.reset()

    @abstractmethod
    def reset(self) -> None:
        """Create the empty streaming state."""

    @abstractmethod
    def update(self, ctx: Context) -> None: ...

    @abstractmethod
    def verdict(self) -> ModuleResult: ...

    def suggested_fraction(self) -> float | None:
        """The share of capital this module suggests for the current candidate's signal (units: the module
        docstring), or None when it does not size (most modules). NaN means "cannot say": the gate then sizes 0
        (fails closed)."""
        return None

    def refit_recommended(self) -> bool:
        """True when this module has evidence that the Layer-1 models no longer fit the data (drift); default
        False."""
        return False

    def settle(self) -> None:  # noqa: B027 - optional hook; only scheduled modules have work in flight
        """Finish any work running in the background (a scheduled recompute: ``fxgate.modules._schedule``) so that
        ``state_dict()`` is plain data a snapshot file can hold. Changes no verdict."""

    def fused_step(self, timeframe: str) -> FusedStep | None:
        """This module's part of the gate's fused per-bar step (``fxgate.modules._fusion``): a kernel doing what
        ``update`` does, or None (the default) when the gate should call ``update``. ``timeframe`` is the gate's."""
        return None

    def tx_rows(self) -> tuple[tuple[str, int], ...] | None:
        """Before a bar: the ``(key, row)`` pairs of the ``tx_rings`` rows the next update (``update`` or the fused
        step with its hooks) can write in place, ``0 <= row < len``; a ring not named is not written in place. None
        (the default) when the module cannot promise it for this bar: its rings are then copied whole. It must not
        change anything; a wrong promise breaks the rollback of a refused bar, so every declaration is checked on the
        whole sample (tests/engine/test_transaction_rows.py)."""
        return None

    def warm_up(self) -> None:  # noqa: B027 - optional hook; modules without kernels need nothing
        """Compile kernels on a throwaway copy so the first live bar pays no JIT cost."""

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "params": dict(self.params)}
        for k in self.state_keys:
            v = getattr(self, k)
            out[k] = v.copy() if isinstance(v, np.ndarray) else v
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"state is for module {state.get('name')!r}, not {self.name!r}")
        self.params = dict(state["params"])
        for k in self.state_keys:
            v = state[k]
            setattr(self, k, v.copy() if isinstance(v, np.ndarray) else v)

    def _result(self, score: float, passed: bool, threshold: float, reason: str | Callable[[], str]) -> ModuleResult:
        """The verdict; ``reason`` a string, or a function formatting it when it is read (``ModuleResult``: it must
        hold copies of the numbers, not the module or its state arrays)."""
        return ModuleResult(self.name, float(score), bool(passed), float(threshold), reason)
