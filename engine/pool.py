"""Many symbols, one config: a :class:`GatePool` holds one :class:`~fxgate.engine.gate.Gate` per symbol.

A bot (or the server) trades dozens of pairs with one configuration. The pool creates each symbol's gate on its
first bar (or up front: ``symbols=``), each with its own feature, module and outcome state and its own lock, so one
symbol's bars never wait for another's: the gates share nothing but the read-only Layer-1 models when one bundle
serves several symbols. ``unknown="refuse"`` accepts only the symbols named up front (``symbols=``, ``bundles=``);
a bar for any other raises :class:`UnknownSymbol`.

Models per symbol, first match wins: ``bundles[symbol]`` (a loaded :class:`~fxgate.models.ensemble.TreeEnsemble` or
a bundle directory), then ``bundle_dir/<symbol>/`` (a bundle written by ``fxgate fit``), then the shared
``ensemble``. With a ``bundle_dir`` and none of these, creating the symbol's gate is an error naming the directory
it looked for (a gate without a model vetoes every bar; that is never what a pool of trading symbols wants).

``snapshot_all(dir)`` writes one snapshot file per symbol (``<symbol>.fxgate-snapshot``, each atomic on its own;
symbols are independent, so a crash between two files leaves each symbol at a consistent state of its own: resend
each symbol's bars after its ``last_ts``); ``GatePool.restore_all(dir, ...)`` rebuilds the pool from them.

A symbol is **warm** when none of its Layer-4 modules answers "insufficient data" (the module contract's fail-closed
verdict for too little history or too few outcomes: :func:`fxgate.modules._base.insufficient`), so a pass is
possible on the next bar. :meth:`GatePool.symbols` evaluates each module's verdict once per accepted bar of a
symbol and remembers it until the next one.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fxgate.engine.config import GateConfig, check_modules
from fxgate.engine.core.bars import Bar
from fxgate.engine.core.decision import Decision
from fxgate.engine.core.errors import FxgateError
from fxgate.engine.gate import Gate
from fxgate.engine.llm_setup import LlmStack, start_llm
from fxgate.engine.snapshot import SUFFIX
from fxgate.models.ensemble import TreeEnsemble

__all__ = ["GatePool", "SymbolState", "UnknownSymbol", "PoolError"]

#: symbol names the pool accepts: they become file names (snapshots), so no separators and no leading dot
_SYMBOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_POLICIES = ("create", "refuse")


class PoolError(FxgateError, ValueError):
    """A pool that cannot serve a symbol as asked (bad name, no bundle, a snapshot directory that does not fit)."""


class UnknownSymbol(FxgateError, KeyError):
    """A bar for a symbol the pool does not hold, with ``unknown="refuse"``."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


@dataclass(frozen=True, slots=True)
class SymbolState:
    """One symbol's gate at a glance (the server's ``GET /v1/symbols``)."""

    symbol: str
    bars: int  # accepted bars
    rejected: int  # refused bars
    last_ts: int | None  # the last accepted bar's time, ns UTC; None before the first
    warm: bool  # no Layer-4 module answers "insufficient data" (see the module docstring)
    insufficient: tuple[str, ...]  # the modules that still do


class GatePool:
    """One gate per symbol, all built from one config (see the module docstring)."""

    def __init__(
        self,
        config: GateConfig | None = None,
        *,
        timeframe: str,
        ensemble: Any = None,
        bundles: Mapping[str, Any] | None = None,
        bundle_dir: str | Path | None = None,
        unknown: str = "create",
        symbols: Iterable[str] = (),
        llm: LlmStack | None = None,
    ) -> None:
        if unknown not in _POLICIES:
            raise PoolError(f"GatePool unknown = {unknown!r}: use 'create' (new symbols get a gate) or 'refuse'")
        self.config = check_modules(config or GateConfig(), "GateConfig")
        self.timeframe = timeframe
        self.ensemble = ensemble
        self.bundles = dict(bundles or {})
        self.bundle_dir = Path(bundle_dir) if bundle_dir is not None else None
        self.unknown = unknown
        self._gates: dict[str, Gate] = {}
        self._warm: dict[str, tuple[int, tuple[str, ...]]] = {}  # symbol -> (bars when computed, insufficient)
        self._lock = threading.Lock()  # guards the table of gates, never a bar: each gate has its own lock
        self._allowed = {_check_symbol(s) for s in [*symbols, *self.bundles]}
        # one LLM stack for every symbol: the model is loaded once, its runtime queues the calls (one at a time per
        # model), and a symbol's fast path never waits for another symbol's LLM call (Gate.aon_bar)
        self._owns_llm = llm is None
        self.llm = start_llm(self.config) if llm is None else llm
        try:
            for s in sorted(_check_symbol(s) for s in symbols):
                self.gate(s)
        except BaseException:
            self.close()
            raise

    # -- gates -------------------------------------------------------------------------------------------------------
    def gate(self, symbol: str) -> Gate:
        """``symbol``'s gate, created on first use under the unknown-symbol policy."""
        g = self._gates.get(symbol)
        if g is not None:
            return g
        _check_symbol(symbol)  # a bad name is a bad name, whatever the policy
        with self._lock:
            g = self._gates.get(symbol)
            if g is None:
                if self.unknown == "refuse" and symbol not in self._allowed:
                    known = ", ".join(sorted(self._allowed)) or "none"
                    raise UnknownSymbol(
                        f"unknown symbol {symbol!r}: this pool refuses new symbols (unknown='refuse'); it holds "
                        f"{known}. Fix: name it in symbols=... (or [pool] config), or use unknown='create'"
                    )
                model = self._model(symbol)
                g = Gate(self.config, model, timeframe=self.timeframe, symbol=symbol, llm=self.llm)
                self._gates[symbol] = g
        return g

    def _model(self, symbol: str) -> Any:
        if symbol in self.bundles:
            b = self.bundles[symbol]
            return TreeEnsemble.load(b) if isinstance(b, str | Path) else b
        if self.bundle_dir is not None:
            d = self.bundle_dir / symbol
            if (d / "manifest.json").is_file():
                return TreeEnsemble.load(d)
            if self.ensemble is None:
                raise PoolError(
                    f"no Layer-1 bundle for {symbol}: {d}/manifest.json does not exist. Fix: fit one "
                    f"(fxgate fit ... --out {d}), or give the pool a shared ensemble=..."
                )
        return self.ensemble

    def discard(self, symbol: str) -> None:
        """Forget ``symbol``'s gate (one created for a request that was then refused as a whole)."""
        with self._lock:
            g = self._gates.pop(symbol, None)
            self._warm.pop(symbol, None)
        if g is not None:
            g.close()

    def names(self) -> list[str]:
        """The symbols that have a gate, sorted."""
        return sorted(self._gates)

    def gates(self) -> list[Gate]:
        """Their gates, in the order of :meth:`names`."""
        return [self._gates[s] for s in self.names()]

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._gates

    def __len__(self) -> int:
        return len(self._gates)

    # -- bars ----------------------------------------------------------------------------------------------------------
    def on_bar(self, symbol: str, bar: Bar) -> Decision:
        """``symbol``'s gate decides on ``bar`` (:meth:`Gate.on_bar`). Raises only :class:`UnknownSymbol` and
        :class:`PoolError` (a symbol that cannot get a gate); everything about the bar is in the Decision."""
        return self.gate(symbol).on_bar(bar)

    async def aon_bar(self, symbol: str, bar: Bar) -> Decision:
        """:meth:`Gate.aon_bar` on ``symbol``'s gate. Creating a new symbol's gate runs in the caller (it loads
        models); a server creates its symbols up front (``symbols=``) to keep that off the event loop."""
        return await self.gate(symbol).aon_bar(bar)

    def symbols(self) -> list[SymbolState]:
        """Every symbol's bars, last time and warmth, sorted by symbol."""
        out = []
        for s in sorted(self._gates):
            g = self._gates[s]
            with g._lock:  # one consistent reading between two bars of this symbol
                bars, last, rejected = g._bars, g.intake.last_ts, g.rejected
                cached = self._warm.get(s)
                if cached is None or cached[0] != bars:
                    cached = (bars, tuple(m.name for m in g.modules if _insufficient(m)))
                    self._warm[s] = cached
            out.append(SymbolState(s, bars, rejected, last, not cached[1], cached[1]))
        return out

    # -- snapshots -------------------------------------------------------------------------------------------------
    def snapshot_all(self, directory: str | Path) -> list[Path]:
        """Write every symbol's snapshot to ``directory/<symbol>.fxgate-snapshot`` (created if missing)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        return [self._gates[s].snapshot(d / f"{s}{SUFFIX}") for s in sorted(self._gates)]

    @classmethod
    def restore_all(
        cls,
        directory: str | Path,
        config: GateConfig | None = None,
        *,
        timeframe: str,
        ensemble: Any = None,
        bundles: Mapping[str, Any] | None = None,
        bundle_dir: str | Path | None = None,
        unknown: str = "create",
        symbols: Iterable[str] = (),
        llm: LlmStack | None = None,
    ) -> GatePool:
        """A pool (arguments as the constructor's) whose symbols continue from the snapshots in ``directory``.
        Each snapshot is checked as :meth:`Gate.restore` checks it (its symbol must be its file's name); symbols in
        ``symbols`` without a snapshot start fresh."""
        d = Path(directory)
        if not d.is_dir():
            raise PoolError(f"{d}: no such snapshot directory. Fix: pass the directory snapshot_all wrote")
        # a dot-name is never a symbol: it is an atomic write's temporary (a kill mid-snapshot leaves one behind)
        files = sorted(f for f in d.glob(f"*{SUFFIX}") if not f.name.startswith("."))
        names = [f.name[: -len(SUFFIX)] for f in files]
        pool = cls(
            config,
            timeframe=timeframe,
            ensemble=ensemble,
            bundles=bundles,
            bundle_dir=bundle_dir,
            unknown=unknown,
            symbols=(),
            llm=llm,
        )
        pool._allowed |= {_check_symbol(s) for s in [*symbols, *names]}
        try:
            for s, f in zip(names, files, strict=True):
                model = pool._model(s)
                pool._gates[s] = Gate.restore(f, pool.config, model, timeframe=timeframe, symbol=s, llm=pool.llm)
            for s in symbols:
                pool.gate(s)
        except BaseException:
            pool.close()
            raise
        return pool

    def close(self) -> None:
        """Release the LLM runtimes (unless they were given: ``llm=``)."""
        for g in self._gates.values():
            g.close()
        if self._owns_llm:
            self.llm.close()


def _check_symbol(s: Any) -> str:
    if not isinstance(s, str) or not _SYMBOL.fullmatch(s):
        raise PoolError(
            f"symbol {s!r}: must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit "
            "(it names the symbol's snapshot file), e.g. 'EURUSD'"
        )
    return s


def _insufficient(m: Any) -> bool:
    return m.verdict().reason.startswith("insufficient data")
