"""Layer 1: XGBoost + LightGBM + CatBoost, walk-forward, purged, calibrated, compiled.

Training (:meth:`TreeEnsemble.fit`)
    Features come from :class:`~fxgate.models.features.FeatureEngine` (the serving code), labels from
    :func:`~fxgate.models.labels.make_labels`. Walk-forward: the last part of the data is cut into ``folds``
    consecutive test blocks; each block is predicted by models trained only on earlier bars whose label window
    ends before the block starts minus an ``embargo`` (purging and embargo, Lopez de Prado 2018, ch. 7.4). Inside
    each training set the latest ``calib_frac`` is held out (purged the same way) to calibrate each booster's
    probability — isotonic or Platt, whichever has the lower log loss on the later half of that window.
    The boosters learn the direction of bars whose move covered the cost (label +1 or -1).

The Layer-1 rule (:meth:`TreeEnsemble.verdict`)
    The three calibrated P(up) must agree on the direction and each confidence ``max(p, 1 - p)`` must be at least
    the threshold (0.95 by default). The verdict carries every model's probability.

Serving
    The boosters are flattened into numba kernels (:mod:`fxgate.models._trees`) whose outputs equal native
    ``predict``; the bundle stores a probe of features with the expected calibrated probabilities so that
    :meth:`TreeEnsemble.load` proves the model it serves is the model that was trained.

The bundle (:meth:`TreeEnsemble.save`, :meth:`TreeEnsemble.load`)
    A directory holding exactly ``xgboost.json``, ``lightgbm.txt``, ``catboost.cbm`` (names fixed by fxgate),
    ``manifest.json`` (strict JSON: no ``NaN``) and ``manifest.json.sha256`` (the manifest's own sha256, in
    ``sha256sum`` format). Loading refuses a manifest whose hash differs from its sidecar (so its training window,
    symbol, timeframe and label spec — what replay trusts — cannot be edited unnoticed), a manifest that names any
    other file or a path outside the directory, a model file whose bytes differ from the manifest's sha256 (the
    bytes hashed are the bytes loaded), and a malformed manifest, each with the file named. ``bundle_hash`` covers
    the whole manifest (every file's sha256 included) except its creation time.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from fxgate.engine.core.bars import Bars
from fxgate.engine.core.errors import FxgateError
from fxgate.engine.core.version import __version__
from fxgate.models import _stats
from fxgate.models._trees import (
    FlatForest,
    FlatOblivious,
    _l1_row,
    forest_args,
    from_catboost,
    from_lightgbm,
    from_xgboost,
    oblivious_args,
)
from fxgate.models.features import FEATURE_ENGINE_VERSION, FeatureEngine, MadWinsorizer, feature_names
from fxgate.models.labels import LabelSpec, make_labels

__all__ = [
    "EnsembleConfig",
    "TreeEnsemble",
    "Calibrator",
    "L1Verdict",
    "BundleError",
    "MODEL_NAMES",
    "purged_walk_forward",
]

MODEL_NAMES = ("xgboost", "lightgbm", "catboost")
BUNDLE_FORMAT = 2  # 2: manifest sidecar, strict JSON, fixed file names
_FILES = {"xgboost": "xgboost.json", "lightgbm": "lightgbm.txt", "catboost": "catboost.cbm"}
MANIFEST = "manifest.json"
SIDECAR = "manifest.json.sha256"
#: what :meth:`TreeEnsemble.load` reads from a manifest, with the JSON type each must have
_MANIFEST_SCHEMA: dict[str, type | tuple[type, ...]] = {
    "bundle_format": int,
    "symbol": str,
    "timeframe": str,
    "feature_engine_version": str,
    "feature_names": list,
    "label_spec": dict,
    "config": dict,
    "training_window": dict,
    "calibrators": dict,
    "winsorizer": dict,
    "files": dict,
    "probe": dict,
}
_WINDOW_KEYS = ("first_ts", "last_ts", "last_label_end_ts")


class BundleError(FxgateError):
    """A model bundle that cannot be served: missing file, hash or feature mismatch, failed parity probe."""


@dataclass(frozen=True, slots=True)
class EnsembleConfig:
    n_estimators: int = 300
    max_depth: int = 6
    learning_rate: float = 0.05
    folds: int = 5
    test_frac: float = 0.5  # share of the data covered by the walk-forward test blocks
    calib_frac: float = 0.2  # share of each training set held out (the latest part) for calibration
    embargo: int | None = None  # bars; None = the label horizon
    threshold: float = 0.95
    threads: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.5 <= self.threshold < 1:
            raise ValueError(f"threshold must be in [0.5, 1), got {self.threshold}")
        if self.folds < 1 or not 0 < self.test_frac < 1 or not 0 < self.calib_frac < 0.5:
            raise ValueError("need folds >= 1, 0 < test_frac < 1 and 0 < calib_frac < 0.5")


# ------------------------------------------------------------------------------------------------------------------
# Calibration
# ------------------------------------------------------------------------------------------------------------------
@dataclass
class Calibrator:
    """Monotone map from a booster's P(up) to a calibrated P(up)."""

    kind: str = "identity"
    x: list[float] = field(default_factory=list)  # isotonic knots
    y: list[float] = field(default_factory=list)
    a: float = 1.0  # Platt: sigmoid(a * logit(p) + b)
    b: float = 0.0
    chosen_by: dict[str, float] = field(default_factory=dict)
    note: str = ""

    def __call__(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        if self.kind == "isotonic":
            return np.interp(p, self.x, self.y)
        if self.kind == "platt":
            z = self.a * _logit(p) + self.b
            return 1.0 / (1.0 + np.exp(-z))
        return p

    @staticmethod
    def _fit_kind(kind: str, p: np.ndarray, y: np.ndarray) -> Calibrator:
        if kind == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, y)
            # A block of 6 calibration bars that all went up would map to exactly 1.0 and clear any confidence
            # threshold on its own; replace each block's rate k/n by the Laplace estimate (k + 1)/(n + 2), then
            # restore monotonicity.
            xs, ys = iso.X_thresholds_, iso.y_thresholds_
            levels = iso.predict(p)
            smoothed = ys.copy()
            for lv in np.unique(ys):
                m = levels == lv
                n, k = int(m.sum()), float(y[m].sum())
                smoothed[ys == lv] = (k + 1.0) / (n + 2.0) if n else lv
            smoothed = np.maximum.accumulate(smoothed)
            return Calibrator("isotonic", xs.tolist(), smoothed.tolist())
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(p)[:, None], y)
        return Calibrator("platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))

    @classmethod
    def fit(cls, p: np.ndarray, y: np.ndarray) -> Calibrator:
        """Pick isotonic or Platt by log loss on the later half of the window (each fitted on the earlier
        half), then refit the winner on the whole window."""
        n = len(p)
        if n < 40 or len(np.unique(y)) < 2:
            return cls(
                "identity",
                note=f"{n} calibration rows with {len(np.unique(y))} class(es): need >= 40 and "
                "both classes; probabilities left as the booster gives them",
            )
        half = n // 2
        scores = {}
        for kind in ("isotonic", "platt"):
            c = cls._fit_kind(kind, p[:half], y[:half])
            scores[kind] = _stats.log_loss(c(p[half:]), y[half:])
        best = min(scores, key=lambda k: scores[k])
        out = cls._fit_kind(best, p, y)
        out.chosen_by = {f"logloss_{k}": v for k, v in scores.items()}
        return out


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return np.log(p / (1 - p))


# ------------------------------------------------------------------------------------------------------------------
# Folds
# ------------------------------------------------------------------------------------------------------------------
def purged_walk_forward(
    usable: np.ndarray, end: np.ndarray, folds: int, test_frac: float, embargo: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train_idx, test_idx)`` per fold: test blocks tile the last ``test_frac`` of the bars; a training
    sample must precede its block and have its label known before ``block_start - embargo``."""
    n = len(usable)
    idx = np.arange(n)
    start = int(n * (1 - test_frac))
    edges = np.linspace(start, n, folds + 1).astype(int)
    out = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        train = idx[usable & (idx < a) & (end < a - embargo)]
        test = idx[usable & (idx >= a) & (idx < b)]
        out.append((train, test))
    return out


def _split_calibration(train: np.ndarray, end: np.ndarray, frac: float, embargo: int) -> tuple[np.ndarray, np.ndarray]:
    """Latest ``frac`` of ``train`` for calibration; fit rows must have their labels known before it starts."""
    k = max(1, int(len(train) * frac))
    calib = train[-k:]
    c0 = calib[0]
    fit = train[(train < c0) & (end[train] < c0 - embargo)]
    return fit, calib


# ------------------------------------------------------------------------------------------------------------------
# The ensemble
# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class L1Verdict:
    passed: bool
    direction: str  # "BUY" | "SELL" | "NONE"
    probs: dict[str, float]  # calibrated P(up) per model
    confidence: float  # the weakest model's confidence in the agreed direction (0 if they disagree)
    threshold: float
    reason: str


def _booster_params(cfg: EnsembleConfig) -> dict[str, dict[str, Any]]:
    return {
        "xgboost": {
            "objective": "binary:logistic",
            "max_depth": cfg.max_depth,
            "eta": cfg.learning_rate,
            "subsample": 0.8,
            "colsample_bytree": 0.8,
            "nthread": cfg.threads,
            "seed": cfg.seed,
            "tree_method": "hist",
            "eval_metric": "logloss",
        },
        "lightgbm": {
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
        },
        "catboost": {
            "iterations": cfg.n_estimators,
            "depth": cfg.max_depth,
            "learning_rate": cfg.learning_rate,
            "loss_function": "Logloss",
            "thread_count": cfg.threads,
            "random_seed": cfg.seed,
            "verbose": 0,
            "allow_writing_files": False,
        },
    }


def _train_models(x: np.ndarray, y: np.ndarray, cfg: EnsembleConfig) -> dict[str, Any]:
    import catboost as cb
    import lightgbm as lgb
    import xgboost as xgb

    params = _booster_params(cfg)
    return {
        "xgboost": xgb.train(params["xgboost"], xgb.DMatrix(x, label=y), cfg.n_estimators),
        "lightgbm": lgb.train(params["lightgbm"], lgb.Dataset(x, y), cfg.n_estimators),
        "catboost": cb.CatBoostClassifier(**params["catboost"]).fit(x, y),
    }


def _native_proba(models: dict[str, Any], x: np.ndarray) -> dict[str, np.ndarray]:
    import xgboost as xgb

    return {
        "xgboost": models["xgboost"].predict(xgb.DMatrix(x)),
        "lightgbm": models["lightgbm"].predict(x),
        "catboost": models["catboost"].predict_proba(x)[:, 1],
    }


def _rule(probs: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized Layer-1 rule over rows of calibrated P(up) ``(n, 3)``: (fires, direction +1/-1)."""
    up = probs >= 0.5
    agree = up.all(axis=1) | (~up).all(axis=1)
    conf = np.where(up, probs, 1 - probs)
    fires = agree & (conf >= threshold).all(axis=1)
    return fires, np.where(up[:, 0], 1, -1)


def _metrics(p: dict[str, np.ndarray], y: np.ndarray, ret: np.ndarray, threshold: float) -> dict[str, Any]:
    """Out-of-sample figures for one block: per model and for the all-agree rule."""
    out: dict[str, Any] = {"bars": int(len(y)), "decided_bars": int((y != 0).sum())}
    dec = y != 0
    yb = (y[dec] > 0).astype(float)
    for name, pm in p.items():
        hit = (pm[dec] >= 0.5) == (yb == 1)
        k = int(hit.sum())
        out[name] = {
            "accuracy": k / max(1, dec.sum()),
            "accuracy_ci95": _stats.wilson(k, int(dec.sum())),
            "logloss": _stats.log_loss(pm[dec], yb),
            "auc": _stats.auc(pm[dec], yb),
            "ic": _stats.pearson(pm - 0.5, ret),
            "rank_ic": _stats.spearman(pm, ret),
            "max_confidence": float(np.max(np.maximum(pm, 1 - pm))) if len(pm) else math.nan,
        }
    probs = np.column_stack([p[m] for m in MODEL_NAMES])
    fires, direction = _rule(probs, threshold)
    n_sig = int(fires.sum())
    correct = int(((direction == y) & fires).sum())  # label 0 (move did not pay the cost) counts as wrong
    out["rule"] = {
        "threshold": threshold,
        "signals": n_sig,
        "coverage": n_sig / max(1, len(y)),
        "precision": correct / n_sig if n_sig else None,
        "precision_ci95": _stats.wilson(correct, n_sig),
        "bars_all_agree": int((np.all(probs >= 0.5, axis=1) | np.all(probs < 0.5, axis=1)).sum()),
    }
    return out


def _reliability(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Reliability table of confidence max(p, 1-p) in bins over [0.5, 1]: mean confidence vs hit rate."""
    conf = np.maximum(p, 1 - p)
    hit = (p >= 0.5) == (y == 1)
    edges = np.linspace(0.5, 1.0, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf >= lo) & ((conf < hi) if hi < 1 else (conf <= hi))
        rows.append(
            {
                "lo": float(lo),
                "hi": float(hi),
                "count": int(m.sum()),
                "mean_confidence": float(conf[m].mean()) if m.any() else None,
                "hit_rate": float(hit[m].mean()) if m.any() else None,
            }
        )
    return rows


class TreeEnsemble:
    """The three calibrated boosters with their compiled evaluators (see the module docstring)."""

    def __init__(self) -> None:
        self.models: dict[str, Any] = {}
        self.calibrators: dict[str, Calibrator] = {}
        self.compiled: dict[str, FlatForest | FlatOblivious] = {}
        self.winsor = MadWinsorizer()
        self.feature_names: list[str] = feature_names()
        self.timeframe = ""
        self.symbol = ""
        self.label_spec = LabelSpec()
        self.config = EnsembleConfig()
        self.manifest: dict[str, Any] = {}
        self._row_args: tuple = ()
        self.directory: Path | None = None  # the bundle directory it was loaded from

    # -- training ------------------------------------------------------------------------------------------------
    def fit(
        self,
        bars: Bars,
        spec: LabelSpec,
        cfg: EnsembleConfig = EnsembleConfig(),
        progress: Callable[[str], None] | None = None,
        *,
        evaluate: bool = True,
    ) -> dict[str, Any]:
        """Walk-forward evaluation, then the final fit on all labelled bars. Returns the report (also kept in
        ``self.manifest['metrics']``). ``evaluate=False`` skips the walk-forward folds (replay refits, whose
        out-of-sample figures come from the replay itself)."""
        say = progress or (lambda _msg: None)
        self.timeframe, self.symbol, self.label_spec, self.config = bars.timeframe, bars.symbol, spec, cfg
        embargo = spec.horizon if cfg.embargo is None else cfg.embargo
        x = FeatureEngine(bars.timeframe).batch(bars)
        lab = make_labels(bars, spec)
        usable = lab.valid & (np.arange(len(bars)) >= 61)
        folds = purged_walk_forward(usable, lab.end, cfg.folds, cfg.test_frac, embargo) if evaluate else []
        fold_reports = []
        pooled: dict[str, list[np.ndarray]] = {m: [] for m in MODEL_NAMES}
        pooled_y: list[np.ndarray] = []
        pooled_ret: list[np.ndarray] = []
        for k, (train, test) in enumerate(folds):
            say(f"fold {k + 1}/{len(folds)}: train {len(train)} bars, test {len(test)} bars")
            if len(train) < 200 or len(test) == 0:
                raise FxgateError(
                    f"fold {k + 1} has {len(train)} training and {len(test)} test bars; need >= 200 training bars. "
                    "Fix: give more data, fewer folds, or a smaller test_frac"
                )
            part = self._fit_on(x, lab, train, embargo)
            p = part._calibrated_native(x[test])
            rep = _metrics(p, lab.y[test], lab.ret[test], cfg.threshold)
            rep.update(
                fold=k + 1,
                train_bars=int(len(train)),
                test_start=int(bars.ts[test[0]]),
                test_end=int(bars.ts[test[-1]]),
            )
            fold_reports.append(rep)
            for m in MODEL_NAMES:
                pooled[m].append(p[m])
            pooled_y.append(lab.y[test])
            pooled_ret.append(lab.ret[test])
        if fold_reports:
            pool = {m: np.concatenate(v) for m, v in pooled.items()}
            y_all, ret_all = np.concatenate(pooled_y), np.concatenate(pooled_ret)
            overall = _metrics(pool, y_all, ret_all, cfg.threshold)
            dec = y_all != 0
            reliability = {m: _reliability(pool[m][dec], (y_all[dec] > 0).astype(int)) for m in MODEL_NAMES}
        else:
            overall, reliability = None, {}
        say("final fit on all labelled bars")
        final_train = np.flatnonzero(usable)
        fitted = self._fit_on(x, lab, final_train, embargo)
        self.models, self.calibrators, self.winsor = fitted.models, fitted.calibrators, fitted.winsor
        self._compile()
        last_end = lab.last_end(final_train)  # max over the samples' label ends: triple-barrier ends are not monotone
        report = {
            "folds": fold_reports,
            "overall_oos": overall,
            "reliability_oos": reliability,
            "silence": _silence_note(overall, cfg.threshold) if overall else None,
        }
        self.manifest = _stats.json_safe(
            {
                "bundle_format": BUNDLE_FORMAT,
                "fxgate_version": __version__,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "symbol": bars.symbol,
                "timeframe": bars.timeframe,
                "feature_engine_version": FEATURE_ENGINE_VERSION,
                "feature_names": self.feature_names,
                "label_spec": spec.to_dict(),
                "config": asdict(cfg),
                "embargo": embargo,
                # the last bar any training label looked at: replays must start after it
                "training_window": {
                    "first_ts": int(bars.ts[final_train[0]]),
                    "last_ts": int(bars.ts[final_train[-1]]),
                    "last_label_end_ts": int(bars.ts[last_end]),
                },
                "calibrators": {m: asdict(c) for m, c in self.calibrators.items()},
                "winsorizer": self.winsor.to_dict(),
                "metrics": report,
                "libraries": _library_versions(),
            }
        )
        return report

    def _fit_on(self, x: np.ndarray, lab: Any, train: np.ndarray, embargo: int) -> TreeEnsemble:
        fit_idx, cal_idx = _split_calibration(train, lab.end, self.config.calib_frac, embargo)
        fit_idx = fit_idx[lab.y[fit_idx] != 0]
        cal_idx = cal_idx[lab.y[cal_idx] != 0]
        out = TreeEnsemble()
        out.config = self.config
        out.winsor = MadWinsorizer().fit(x[fit_idx])
        xf = out.winsor.transform(x[fit_idx])
        out.models = _train_models(xf, (lab.y[fit_idx] > 0).astype(int), self.config)
        raw = _native_proba(out.models, out.winsor.transform(x[cal_idx]))
        yc = (lab.y[cal_idx] > 0).astype(int)
        out.calibrators = {m: Calibrator.fit(raw[m], yc) for m in MODEL_NAMES}
        return out

    def _calibrated_native(self, x: np.ndarray) -> dict[str, np.ndarray]:
        raw = _native_proba(self.models, self.winsor.transform(x))
        return {m: self.calibrators[m](raw[m]) for m in MODEL_NAMES}

    def _compile(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            self.compiled = {
                "xgboost": from_xgboost(self.models["xgboost"]),
                "lightgbm": from_lightgbm(self.models["lightgbm"]),
                "catboost": from_catboost(self.models["catboost"], str(Path(d) / "cb.json")),
            }
        w = self.winsor
        lo = np.where(w.mad > 0, w.median - w.k * w.mad, -np.inf)
        hi = np.where(w.mad > 0, w.median + w.k * w.mad, np.inf)
        kinds = {"identity": 0, "isotonic": 1, "platt": 2}
        cal = [self.calibrators[m] for m in MODEL_NAMES]
        iso = []
        for c in cal:
            iso += [np.array(c.x or [0.0], dtype=np.float64), np.array(c.y or [0.0], dtype=np.float64)]
        self._row_args = (
            lo,
            hi,
            forest_args(self.compiled["xgboost"]),
            forest_args(self.compiled["lightgbm"]),
            oblivious_args(self.compiled["catboost"]),
            np.array([kinds[c.kind] for c in cal], dtype=np.int64),
            np.array([c.a for c in cal]),
            np.array([c.b for c in cal]),
            *iso,
        )

    def predict_row(self, x: np.ndarray) -> np.ndarray:
        """Calibrated P(up) of the three models for one feature vector, in one compiled call (the live path)."""
        out = np.empty(3)
        _l1_row(np.ascontiguousarray(x, dtype=np.float64), *self._row_args, out)
        return out

    # -- inference -----------------------------------------------------------------------------------------------
    def predict_proba(self, x: np.ndarray, *, native: bool = False) -> np.ndarray:
        """Calibrated P(up) per model, columns in :data:`MODEL_NAMES` order, for feature rows ``x``."""
        x2 = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if native:
            p = self._calibrated_native(x2)
            return np.column_stack([p[m] for m in MODEL_NAMES])
        xw = self.winsor.transform(x2)
        cols = []
        for m in MODEL_NAMES:
            marg = self.compiled[m].margins(xw)[:, 0]
            cols.append(self.calibrators[m](1.0 / (1.0 + np.exp(-marg))))
        return np.column_stack(cols)

    def verdict(self, x: np.ndarray, threshold: float | None = None) -> L1Verdict:
        """The Layer-1 rule on one feature vector."""
        return self.verdict_from_probs(self.predict_row(x), threshold)

    def verdict_from_probs(self, p: np.ndarray, threshold: float | None = None) -> L1Verdict:
        """The Layer-1 rule on already computed calibrated P(up) (one per model, MODEL_NAMES order)."""
        thr = self.config.threshold if threshold is None else threshold
        probs = {m: float(v) for m, v in zip(MODEL_NAMES, p, strict=True)}
        if not np.all(np.isfinite(p)):
            return L1Verdict(False, "NONE", probs, 0.0, thr, "non-finite model output")
        up = p >= 0.5
        if not (up.all() or (~up).all()):
            votes = ", ".join(
                f"{m} {'up' if u else 'down'} {v:.3f}" for m, u, v in zip(MODEL_NAMES, up, p, strict=True)
            )
            return L1Verdict(False, "NONE", probs, 0.0, thr, f"models disagree ({votes})")
        conf = np.where(up, p, 1 - p)
        direction = "BUY" if up[0] else "SELL"
        weakest = int(np.argmin(conf))
        if conf[weakest] < thr:
            return L1Verdict(
                False,
                "NONE",
                probs,
                float(conf[weakest]),
                thr,
                f"all say {direction} but {MODEL_NAMES[weakest]} confidence {conf[weakest]:.3f} < {thr}",
            )
        return L1Verdict(
            True,
            direction,
            probs,
            float(conf.min()),
            thr,
            f"all three say {direction} with confidence >= {thr} (min {conf.min():.3f})",
        )

    # -- bundle --------------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write the bundle: native model files, manifest.json (strict JSON) with sha256 per file and a parity
        probe, and manifest.json.sha256, the manifest's own hash (see the module docstring)."""
        from fxgate.engine.core.atomic import write_text

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.models["xgboost"].save_model(str(d / _FILES["xgboost"]))
        self.models["lightgbm"].save_model(str(d / _FILES["lightgbm"]))
        self.models["catboost"].save_model(str(d / _FILES["catboost"]))
        rng = np.random.default_rng(0)
        med, mad = self.winsor.median, np.where(self.winsor.mad > 0, self.winsor.mad, 1e-3)
        probe = med + rng.normal(0, 2, size=(32, len(med))) * mad
        probe[rng.random(probe.shape) < 0.05] = np.nan
        man = dict(self.manifest)
        man["files"] = {m: {"name": f, "sha256": _sha256(d / f)} for m, f in _FILES.items()}
        man["probe"] = {"x": _nan_list(probe), "proba": self.predict_proba(probe, native=True).tolist()}
        man = _stats.json_safe(man)
        text = _stats.strict_dumps(man, indent=1)
        write_text(d / MANIFEST, text)
        write_text(d / SIDECAR, f"{hashlib.sha256(text.encode()).hexdigest()}  {MANIFEST}\n")
        self.manifest = man
        return d

    @classmethod
    def load(cls, directory: str | Path) -> TreeEnsemble:
        """Load and verify a bundle (see the module docstring): the manifest against its sidecar hash, its shape,
        every model file's sha256 (over the very bytes then loaded), the feature list and engine version, and that
        native and compiled predictions reproduce the stored probe."""
        import catboost as cb
        import lightgbm as lgb
        import xgboost as xgb

        d = Path(directory)
        mpath = d / MANIFEST
        if not mpath.is_file():
            raise BundleError(f"{d}: no {MANIFEST}. Fix: point at a directory written by `fxgate fit`")
        raw = mpath.read_bytes()
        man = _parse_manifest(mpath, raw)
        if man.get("bundle_format") != BUNDLE_FORMAT:
            raise BundleError(
                f"{mpath}: bundle_format {man.get('bundle_format')} != {BUNDLE_FORMAT} (this fxgate's); "
                "refit it with `fxgate fit`"
            )
        _check_sidecar(d, mpath, raw)
        _check_schema(mpath, man)
        blobs = _read_model_files(d, mpath, man["files"])
        if man["feature_engine_version"] != FEATURE_ENGINE_VERSION:
            raise BundleError(
                f"{mpath}: feature engine v{man['feature_engine_version']}, this fxgate has "
                f"v{FEATURE_ENGINE_VERSION}. Fix: refit the bundle with this version"
            )
        if man["feature_names"] != feature_names():
            diff = [n for n in man["feature_names"] if n not in feature_names()][:5]
            raise BundleError(f"{mpath}: feature list differs from this fxgate's (e.g. {diff}); refit the bundle")
        ens = cls()
        ens.manifest, ens.directory = man, d
        ens.timeframe, ens.symbol = man["timeframe"], man["symbol"]
        ens.label_spec = _from_manifest(mpath, "label_spec", lambda: LabelSpec(**man["label_spec"]))
        ens.config = _from_manifest(mpath, "config", lambda: EnsembleConfig(**man["config"]))
        ens.winsor = _from_manifest(mpath, "winsorizer", lambda: MadWinsorizer.from_dict(man["winsorizer"]))
        ens.calibrators = _from_manifest(
            mpath, "calibrators", lambda: {m: Calibrator(**man["calibrators"][m]) for m in MODEL_NAMES}
        )

        def models() -> dict[str, Any]:
            xb = xgb.Booster()
            xb.load_model(bytearray(blobs["xgboost"]))
            xb.set_param({"nthread": 1})
            cm = cb.CatBoostClassifier()
            cm.load_model(blob=blobs["catboost"])
            return {"xgboost": xb, "lightgbm": lgb.Booster(model_str=blobs["lightgbm"].decode("utf-8")), "catboost": cm}

        try:
            ens.models = models()
        except Exception as exc:  # the libraries raise their own error types on a file they cannot parse
            raise BundleError(
                f"{d}: a model file matches its sha256 but its library cannot read it ({exc}); the "
                "installed xgboost/lightgbm/catboost may be too old. Fix: install the versions in "
                f"{MANIFEST} 'libraries' or refit"
            ) from exc
        ens._compile()
        probe = _from_manifest(mpath, "probe", lambda: np.array(man["probe"]["x"], dtype=np.float64))
        want = _from_manifest(mpath, "probe", lambda: np.array(man["probe"]["proba"], dtype=np.float64))
        if probe.ndim != 2 or want.shape != (len(probe), len(MODEL_NAMES)) or probe.shape[1] != len(feature_names()):
            raise BundleError(
                f"{mpath}: probe has shape {probe.shape} -> {want.shape}, expected (k, "
                f"{len(feature_names())}) -> (k, {len(MODEL_NAMES)}). Fix: refit the bundle"
            )
        # native must reproduce the training-time numbers; the compiled evaluator matches native margins to ~1e-6
        # (XGBoost adds leaves in float32), which a steep calibration map can stretch, hence its looser bound
        for label, got, tol in (
            ("native", ens.predict_proba(probe, native=True), 1e-7),
            ("compiled", ens.predict_proba(probe), 1e-5),
        ):
            err = float(np.max(np.abs(got - want)))
            if not err <= tol:
                raise BundleError(
                    f"{d}: {label} predictions differ from the training-time probe by {err:.2e}; "
                    "the libraries or files changed. Fix: refit with the installed versions"
                )
        return ens

    @property
    def bundle_hash(self) -> str:
        """sha256 of the canonical JSON of the whole manifest except its creation time: the model files' sha256,
        the calibrators, the feature list, the training window, symbol, timeframe and label spec. (Before
        :meth:`save` the manifest has no files yet, so a refit that is never saved is named by its metadata.)"""
        body = {k: v for k, v in self.manifest.items() if k != "created"}
        return hashlib.sha256(_stats.strict_dumps(body, sort_keys=True).encode()).hexdigest()


_FIX_MANIFEST = "Fix: restore the manifest `fxgate fit` wrote, or refit the bundle"


def _parse_manifest(mpath: Path, raw: bytes) -> dict[str, Any]:
    """Strict JSON (no NaN/Infinity), an object at the top; errors name the file, line and column."""

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        man = json.loads(raw.decode("utf-8"), parse_constant=no_constant)
    except UnicodeDecodeError as exc:
        raise BundleError(f"{mpath}: not UTF-8 text (byte {exc.start}). {_FIX_MANIFEST}") from None
    except json.JSONDecodeError as exc:
        raise BundleError(
            f"{mpath}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg}); the file is truncated "
            f"or was edited. {_FIX_MANIFEST}"
        ) from None
    except ValueError as exc:
        raise BundleError(f"{mpath}: {exc} (strict JSON has no NaN or Infinity). {_FIX_MANIFEST}") from None
    if not isinstance(man, dict):
        raise BundleError(f"{mpath}: the top level is a JSON {type(man).__name__}, not an object. {_FIX_MANIFEST}")
    return man


def _check_sidecar(d: Path, mpath: Path, raw: bytes) -> None:
    side = d / SIDECAR
    if not side.is_file():
        raise BundleError(
            f"{side}: missing; without it an edited manifest (training window, symbol, label spec) "
            f"would go unnoticed. Fix: copy the whole bundle directory, or refit"
        )
    parts = side.read_text(encoding="utf-8", errors="replace").split()
    want = parts[0].lower() if parts else ""
    got = hashlib.sha256(raw).hexdigest()
    if got != want:
        raise BundleError(
            f"{mpath}: sha256 {got[:12]}… does not match {SIDECAR} ({want[:12] or 'empty'}…): the "
            "manifest was changed after `fxgate fit` wrote it, and its training window, symbol, "
            f"timeframe and label spec are what replay trusts. {_FIX_MANIFEST}"
        )


def _check_schema(mpath: Path, man: dict[str, Any]) -> None:
    for key, typ in _MANIFEST_SCHEMA.items():
        if key not in man:
            raise BundleError(f"{mpath}: missing key {key!r}. {_FIX_MANIFEST}")
        if not isinstance(man[key], typ) or isinstance(man[key], bool):
            raise BundleError(
                f"{mpath}: {key} is a JSON {type(man[key]).__name__}, expected "
                f"{getattr(typ, '__name__', typ)}. {_FIX_MANIFEST}"
            )
    win = man["training_window"]
    for key in _WINDOW_KEYS:
        if not isinstance(win.get(key), int) or isinstance(win.get(key), bool):
            raise BundleError(
                f"{mpath}: training_window.{key} = {win.get(key)!r}, expected an integer time in ns. {_FIX_MANIFEST}"
            )
    if not win["first_ts"] <= win["last_ts"] <= win["last_label_end_ts"]:
        raise BundleError(
            f"{mpath}: training_window needs first_ts <= last_ts <= last_label_end_ts, got {win}. {_FIX_MANIFEST}"
        )
    for m in MODEL_NAMES:
        if m not in man["calibrators"]:
            raise BundleError(f"{mpath}: calibrators has no {m!r}. {_FIX_MANIFEST}")


def _read_model_files(d: Path, mpath: Path, files: dict[str, Any]) -> dict[str, bytes]:
    """The bytes of each model file, from the names fxgate fixes (:data:`_FILES`), each checked against the
    manifest's sha256. The manifest's names must be those names: it cannot point the check at another file."""
    if set(files) != set(MODEL_NAMES):
        raise BundleError(
            f"{mpath}: files lists {sorted(files)}, expected exactly {list(MODEL_NAMES)}. {_FIX_MANIFEST}"
        )
    root = d.resolve()
    out = {}
    for m in MODEL_NAMES:
        info = files[m]
        if not (isinstance(info, dict) and isinstance(info.get("name"), str) and isinstance(info.get("sha256"), str)):
            raise BundleError(
                f'{mpath}: files.{m} = {info!r}, expected {{"name": ..., "sha256": ...}}. {_FIX_MANIFEST}'
            )
        name = info["name"]
        if Path(name).is_absolute() or ".." in Path(os.path.normpath(name)).parts:  # by its text: links come below
            raise BundleError(
                f"{mpath}: files.{m}.name = {name!r} is outside the bundle directory {d}; fxgate "
                f"loads only its own files inside it. {_FIX_MANIFEST}"
            )
        if name != _FILES[m]:
            raise BundleError(
                f"{mpath}: files.{m}.name = {name!r}, but fxgate loads {m} from {_FILES[m]!r}: the "
                f"manifest cannot send the hash check to another file. {_FIX_MANIFEST}"
            )
        p = d / _FILES[m]
        if not p.is_file():
            raise BundleError(f"{p}: missing. Fix: copy the whole bundle directory")
        if not p.resolve().is_relative_to(root):
            raise BundleError(
                f"{p}: a link to {p.resolve()}, outside the bundle directory. Fix: copy the file itself into the bundle"
            )
        data = p.read_bytes()
        got = hashlib.sha256(data).hexdigest()
        if got != info["sha256"]:
            raise BundleError(
                f"{p}: sha256 {got[:12]}… does not match the manifest's {info['sha256'][:12]}…; "
                "the file was changed after training. Fix: refit or restore the original file"
            )
        out[m] = data
    return out


def _from_manifest(mpath: Path, key: str, build: Callable[[], Any]) -> Any:
    try:
        return build()
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise BundleError(f"{mpath}: {key} is malformed ({type(exc).__name__}: {exc}). {_FIX_MANIFEST}") from None


def _silence_note(overall: dict[str, Any], threshold: float) -> str | None:
    """Why the rule never fired out of sample, in words, when it did not."""
    if overall["rule"]["signals"]:
        return None
    maxes = {m: overall[m]["max_confidence"] for m in MODEL_NAMES}
    below = [f"{m} {v:.3f}" for m, v in maxes.items() if v < threshold]
    if below:
        return (
            f"the Layer-1 rule fired on no out-of-sample bar: the highest calibrated confidence of "
            f"{', '.join(below)} never reached {threshold}"
        )
    return f"the Layer-1 rule fired on no out-of-sample bar: no bar had all three models >= {threshold} together"


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _nan_list(a: np.ndarray) -> list:
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in a]


def _library_versions() -> dict[str, str]:
    import catboost
    import lightgbm
    import numba
    import xgboost

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "xgboost": xgboost.__version__,
        "lightgbm": lightgbm.__version__,
        "catboost": catboost.__version__,
    }
