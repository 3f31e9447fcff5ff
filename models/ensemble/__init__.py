"""Layer 1: XGBoost + LightGBM + CatBoost, walk-forward, purged, calibrated, compiled.

One concern per file:

* :mod:`~fxgate.models.ensemble.model` — :class:`TreeEnsemble` (fit, predict, verdict, explain) and
  :class:`L1Verdict`
* :mod:`~fxgate.models.ensemble.boosters` — one adapter per booster library; :data:`ADAPTERS` is the one list of the
  models, :data:`MODEL_NAMES` their names in model order
* :mod:`~fxgate.models.ensemble.calibration` — :class:`Calibrator` (isotonic or Platt) and its compiled twin
* :mod:`~fxgate.models.ensemble.walk_forward` — purged, embargoed walk-forward splits
* :mod:`~fxgate.models.ensemble.metrics` — out-of-sample figures and the vectorized Layer-1 rule
* :mod:`~fxgate.models.ensemble.row` — the per-bar path: winsorize, every model, calibrate, in one numba call
* :mod:`~fxgate.models.ensemble.bundle` — the bundle on disk and the checks that refuse a tampered one
* :mod:`~fxgate.models.ensemble.config` — :class:`EnsembleConfig`

Importing this package loads the three booster libraries (required dependencies).
"""

from fxgate.models.ensemble.boosters import ADAPTERS, MODEL_NAMES, Explanation
from fxgate.models.ensemble.bundle import BundleError
from fxgate.models.ensemble.calibration import Calibrator
from fxgate.models.ensemble.config import EnsembleConfig
from fxgate.models.ensemble.model import L1Verdict, TreeEnsemble
from fxgate.models.ensemble.walk_forward import purged_walk_forward

__all__ = [
    "EnsembleConfig",
    "TreeEnsemble",
    "Calibrator",
    "L1Verdict",
    "BundleError",
    "Explanation",
    "ADAPTERS",
    "MODEL_NAMES",
    "purged_walk_forward",
]
