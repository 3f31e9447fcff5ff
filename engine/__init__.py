"""fxgate.engine: bars and data loading (this release); the gate, decisions, config, replay and report land here.

Public API::

    from fxgate.engine import Bars, Bar, load_bars, sample_bars, resample, BarDataError
"""

from fxgate.engine._version import __version__
from fxgate.engine.bars import TIMEFRAMES, Bar, Bars, infer_timeframe, timeframe_seconds
from fxgate.engine.errors import BarDataError, FxgateError, Problem
from fxgate.engine.loader import FORMATS, Change, Gap, LoadReport, load_bars, sample_bars, sample_path
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
]
