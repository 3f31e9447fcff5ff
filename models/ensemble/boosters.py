"""The three booster libraries behind one interface: one adapter each for XGBoost, LightGBM and CatBoost.

An adapter is the only place that calls its library: train, native P(up), flatten into the compiled evaluator's
arrays (:mod:`fxgate.models._trees`), save, load, and explain (the library's own TreeSHAP, Lundberg et al. 2020,
*From local explanations to global understanding with explainable AI for trees*, Nat. Mach. Intell. 2:
XGBoost ``predict(pred_contribs=True)``, LightGBM ``predict(pred_contrib=True)``, CatBoost
``get_feature_importance(type="ShapValues")``; the gate's explanations come from the compiled trees instead,
:mod:`fxgate.models._treeshap`, and these are its references). :data:`ADAPTERS` is the one enumeration of the
models: the ensemble, its bundle and its explanations iterate it, and :data:`MODEL_NAMES` is read from it.

Native predictions and explanations run on one thread. They serve one row, or a probe of a few, and a library's
threads would stay with the gate's thread as OpenMP threads, which slows llama.cpp's own OpenMP barriers (see
:meth:`~fxgate.models.ensemble.model.TreeEnsemble.load`). Training uses ``EnsembleConfig.threads``.
"""

from __future__ import annotations

import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import catboost as cb
import lightgbm as lgb
import numba
import numpy as np
import xgboost as xgb

from fxgate.models._trees import FlatForest, FlatOblivious, from_catboost, from_lightgbm, from_xgboost
from fxgate.models.ensemble.config import EnsembleConfig

__all__ = ["Booster", "Explanation", "ADAPTERS", "MODEL_NAMES", "library_versions"]


@dataclass(frozen=True, slots=True)
class Explanation:
    """One model's TreeSHAP attributions for one (winsorized) feature row: ``phi.sum() + base == margin`` to
    within ``tolerance * max(1, |margin|)``."""

    model: str
    phi: np.ndarray  # one attribution per feature, in the margin's (log-odds) units
    base: float  # the expected margin
    margin: float  # the model's raw margin on the row
    tolerance: float  # how far additivity may miss (relative), for the arithmetic that produced it


class Booster(Protocol):
    """What the ensemble needs of a booster library."""

    name: str  # the model's name in verdicts, manifests and reports
    file: str  # its file in a bundle (fixed by fxgate: a manifest cannot choose it)
    version: str  # the installed library's version, recorded in the manifest

    def train(self, x: np.ndarray, y: np.ndarray, cfg: EnsembleConfig) -> Any: ...
    def proba(self, model: Any, x: np.ndarray) -> np.ndarray: ...
    def flatten(self, model: Any) -> FlatForest | FlatOblivious: ...
    def save(self, model: Any, path: Path) -> None: ...
    def load(self, blob: bytes) -> Any: ...
    def explain(self, model: Any, z: np.ndarray) -> Explanation: ...


class XGBoost:
    name = "xgboost"
    file = "xgboost.json"
    version = xgb.__version__

    @staticmethod
    def params(cfg: EnsembleConfig) -> dict[str, Any]:
        return {
            "objective": "binary:logistic",
            "max_depth": cfg.max_depth,
            "eta": cfg.learning_rate,
            "subsample": 0.8,
            "colsample_bytree": 0.8,
            "nthread": cfg.threads,
            "seed": cfg.seed,
            "tree_method": "hist",
            "eval_metric": "logloss",
        }

    def train(self, x: np.ndarray, y: np.ndarray, cfg: EnsembleConfig) -> xgb.Booster:
        b = xgb.train(self.params(cfg), xgb.DMatrix(x, label=y), cfg.n_estimators)
        b.set_param({"nthread": 1})  # its predictions and explanations: one thread (the module docstring)
        return b

    def proba(self, model: xgb.Booster, x: np.ndarray) -> np.ndarray:
        return model.predict(xgb.DMatrix(x, nthread=1))

    def flatten(self, model: xgb.Booster) -> FlatForest:
        return from_xgboost(model)

    def save(self, model: xgb.Booster, path: Path) -> None:
        model.save_model(str(path))

    def load(self, blob: bytes) -> xgb.Booster:
        b = xgb.Booster()
        b.load_model(bytearray(blob))
        b.set_param({"nthread": 1})
        return b

    def explain(self, model: xgb.Booster, z: np.ndarray) -> Explanation:
        row = xgb.DMatrix(np.asarray(z, dtype=np.float64)[None, :], nthread=1)
        contrib = model.predict(row, pred_contribs=True)[0]
        margin = float(model.predict(row, output_margin=True)[0])
        # XGBoost sums its leaves and contributions in float32
        return Explanation(self.name, contrib[:-1].astype(np.float64), float(contrib[-1]), margin, 1e-5)


class LightGBM:
    name = "lightgbm"
    file = "lightgbm.txt"
    version = lgb.__version__

    @staticmethod
    def params(cfg: EnsembleConfig) -> dict[str, Any]:
        return {
            "objective": "binary",
            "num_leaves": 2**cfg.max_depth - 1,
            "max_depth": cfg.max_depth,
            "learning_rate": cfg.learning_rate,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "feature_fraction": 0.8,
            "num_threads": cfg.threads,
            "seed": cfg.seed,
            "verbose": -1,
            "deterministic": True,
            "min_data_in_leaf": 20,
        }

    def train(self, x: np.ndarray, y: np.ndarray, cfg: EnsembleConfig) -> lgb.Booster:
        return lgb.train(self.params(cfg), lgb.Dataset(x, y), cfg.n_estimators)

    def proba(self, model: lgb.Booster, x: np.ndarray) -> np.ndarray:
        return model.predict(x, num_threads=1)

    def flatten(self, model: lgb.Booster) -> FlatForest:
        return from_lightgbm(model)

    def save(self, model: lgb.Booster, path: Path) -> None:
        model.save_model(str(path))

    def load(self, blob: bytes) -> lgb.Booster:
        return lgb.Booster(model_str=blob.decode("utf-8"))

    def explain(self, model: lgb.Booster, z: np.ndarray) -> Explanation:
        row = np.asarray(z, dtype=np.float64)[None, :]
        contrib = model.predict(row, pred_contrib=True, num_threads=1)[0]
        margin = float(model.predict(row, raw_score=True, num_threads=1)[0])
        return Explanation(self.name, contrib[:-1], float(contrib[-1]), margin, 1e-6)


class CatBoost:
    name = "catboost"
    file = "catboost.cbm"
    version = cb.__version__

    @staticmethod
    def params(cfg: EnsembleConfig) -> dict[str, Any]:
        return {
            "iterations": cfg.n_estimators,
            "depth": cfg.max_depth,
            "learning_rate": cfg.learning_rate,
            "loss_function": "Logloss",
            "thread_count": cfg.threads,
            "random_seed": cfg.seed,
            "verbose": 0,
            "allow_writing_files": False,
        }

    def train(self, x: np.ndarray, y: np.ndarray, cfg: EnsembleConfig) -> cb.CatBoostClassifier:
        return cb.CatBoostClassifier(**self.params(cfg)).fit(x, y)

    def proba(self, model: cb.CatBoostClassifier, x: np.ndarray) -> np.ndarray:
        return model.predict_proba(x, thread_count=1)[:, 1]

    def flatten(self, model: cb.CatBoostClassifier) -> FlatOblivious:
        with tempfile.TemporaryDirectory() as d:  # CatBoost exports its JSON dump only to a file
            return from_catboost(model, str(Path(d) / "cb.json"))

    def save(self, model: cb.CatBoostClassifier, path: Path) -> None:
        model.save_model(str(path))

    def load(self, blob: bytes) -> cb.CatBoostClassifier:
        m = cb.CatBoostClassifier()
        m.load_model(blob=blob)
        return m

    def explain(self, model: cb.CatBoostClassifier, z: np.ndarray) -> Explanation:
        row = np.asarray(z, dtype=np.float64)[None, :]
        contrib = model.get_feature_importance(cb.Pool(row), type="ShapValues", thread_count=1)[0]
        margin = float(model.predict(row, prediction_type="RawFormulaVal", thread_count=1)[0])
        return Explanation(self.name, contrib[:-1], float(contrib[-1]), margin, 1e-6)


#: the Layer-1 models, in model order (the order of every probability vector and of the one-row kernel's slots)
ADAPTERS: tuple[Booster, ...] = (XGBoost(), LightGBM(), CatBoost())
MODEL_NAMES: tuple[str, ...] = tuple(a.name for a in ADAPTERS)


def library_versions() -> dict[str, str]:
    """The versions a bundle was trained with (a library too old to read its files is named by them)."""
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        **{a.name: a.version for a in ADAPTERS},
    }
