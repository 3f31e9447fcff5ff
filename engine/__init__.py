"""fxgate.engine: bars and data loading, the gate, decisions, configuration, replay and the report.

Public API::

    from fxgate.engine import Bars, Bar, load_bars, sample_bars, resample, BarDataError
    from fxgate.engine import Gate, Decision, LayerVerdict, GateConfig, load_config, replay
    from fxgate.engine import GatePool, AuditLog, SnapshotMismatch            # many symbols, live state

The names load on first use (PEP 562), so importing the foundation (:mod:`fxgate.engine.core`) — which every
other package does — never drags in the gate, the models or the loader.
"""

from __future__ import annotations

import importlib
from typing import Any

from fxgate.engine.core.version import __version__

#: public name -> the module that defines it
_EXPORTS = {
    "Bar": "fxgate.engine.core.bars",
    "Bars": "fxgate.engine.core.bars",
    "TIMEFRAMES": "fxgate.engine.core.bars",
    "infer_timeframe": "fxgate.engine.core.bars",
    "timeframe_seconds": "fxgate.engine.core.bars",
    "FxgateError": "fxgate.engine.core.errors",
    "BarDataError": "fxgate.engine.core.errors",
    "Problem": "fxgate.engine.core.errors",
    "Decision": "fxgate.engine.core.decision",
    "LayerVerdict": "fxgate.engine.core.decision",
    "GateConfig": "fxgate.engine.config",
    "ConfigError": "fxgate.engine.config",
    "load_config": "fxgate.engine.config",
    "FORMATS": "fxgate.engine.loader",
    "LoadReport": "fxgate.engine.loader",
    "Change": "fxgate.engine.loader",
    "Gap": "fxgate.engine.loader",
    "load_bars": "fxgate.engine.loader",
    "sample_bars": "fxgate.engine.loader",
    "sample_path": "fxgate.engine.loader",
    "RESAMPLE_TARGETS": "fxgate.engine.resampling",
    "resample": "fxgate.engine.resampling",
    "Gate": "fxgate.engine.gate",
    "GatePool": "fxgate.engine.pool",
    "SymbolState": "fxgate.engine.pool",
    "UnknownSymbol": "fxgate.engine.pool",
    "SnapshotError": "fxgate.engine.snapshot",
    "SnapshotMismatch": "fxgate.engine.snapshot",
    "SnapshotCorrupt": "fxgate.engine.snapshot",
    "AuditLog": "fxgate.engine.audit",
    "FxgateClient": "fxgate.engine.client",
    "replay": "fxgate.engine.replaying",
    "ReplayResult": "fxgate.engine.replaying",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fxgate.engine' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
