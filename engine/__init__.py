"""fxgate.engine: bars and data loading, the gate, decisions, configuration, replay and the report.

Public API::

    from fxgate.engine import Bars, Bar, load_bars, sample_bars, resample, BarDataError
    from fxgate.engine import Gate, Decision, LayerVerdict, GateConfig, load_config, replay
"""

from fxgate.engine._version import __version__
from fxgate.engine.bars import TIMEFRAMES, Bar, Bars, infer_timeframe, timeframe_seconds
from fxgate.engine.config import ConfigError, GateConfig, load_config
from fxgate.engine.decision import Decision, LayerVerdict
from fxgate.engine.errors import BarDataError, FxgateError, Problem
from fxgate.engine.gate import Gate
from fxgate.engine.loader import FORMATS, Change, Gap, LoadReport, load_bars, sample_bars, sample_path
from fxgate.engine.replay import ReplayResult, replay
from fxgate.engine.resample import RESAMPLE_TARGETS, resample

__all__ = [
    "__version__",
    "Bar",
    "Bars",
    "TIMEFRAMES",
    "infer_timeframe",
    "timeframe_seconds",
    "FxgateError",
    "BarDataError",
    "Problem",
    "FORMATS",
    "LoadReport",
    "Change",
    "Gap",
    "load_bars",
    "sample_bars",
    "sample_path",
    "RESAMPLE_TARGETS",
    "resample",
    "Gate",
    "Decision",
    "LayerVerdict",
    "GateConfig",
    "ConfigError",
    "load_config",
    "replay",
    "ReplayResult",
]
