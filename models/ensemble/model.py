"""The Layer-1 :class:`TreeEnsemble`: walk-forward fit, calibrated prediction (native and compiled), the verdict,
explanations, and the bundle round trip.

Training (:meth:`TreeEnsemble.fit`)
    Features come from :class:`~fxgate.models.features.FeatureEngine` (the serving code), labels from
    :func:`~fxgate.models.labels.make_labels`. Walk-forward: the last part of the data is cut into ``folds``
    consecutive test blocks; each block is predicted by models trained only on earlier bars whose label window
    ends before the block starts minus an ``embargo`` (:mod:`~fxgate.models.ensemble.walk_forward`). Inside each
    training set the latest ``calib_frac`` is held out (purged the same way) to calibrate each booster's
    probability (:mod:`~fxgate.models.ensemble.calibration`). The boosters learn the direction of bars whose move
    covered the cost (label +1 or -1). With ``quantiles`` on (the default) the final fit also trains LightGBM
    quantile regressors of the h-bar forward log return at tau = 0.1..0.9 on the same winsorized rows
    (:mod:`~fxgate.models.ensemble.quantiles`), saved, hashed and verified with the bundle.

The Layer-1 rule (:meth:`TreeEnsemble.verdict`)
    The calibrated P(up) of every model must agree on the direction (the candidate rule,
    :func:`~fxgate.engine.core.records.candidate_direction`) and each confidence ``max(p, 1 - p)`` must be at least
    the threshold (0.95 by default). The verdict carries every model's probability as a
    :class:`~fxgate.engine.core.records.ModelProbability`, in model order.

Serving
    The boosters are flattened into numba kernels (:mod:`fxgate.models._trees`, :mod:`~fxgate.models.ensemble.row`)
    whose outputs equal native ``predict``; the bundle (:mod:`~fxgate.models.ensemble.bundle`) stores a probe of
    features with the expected calibrated probabilities so that :meth:`TreeEnsemble.load` proves the model it
    serves is the model that was trained. ``bundle_hash`` covers the whole manifest (every file's sha256 included)
    except its creation time.
"""

from __future__ import annotations

import contextvars
import hashlib
import math
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from fxgate.engine.core.bars import Bars
from fxgate.engine.core.errors import FxgateError
from fxgate.engine.core.records import ModelProbability, candidate_direction_of
from fxgate.engine.core.version import __version__
from fxgate.models import _stats
from fxgate.models._trees import FlatForest, FlatOblivious
from fxgate.models._treeshap import ShapTrees, margin, shap_trees, tree_shap
from fxgate.models.ensemble import bundle
from fxgate.models.ensemble.boosters import ADAPTERS, MODEL_NAMES, Explanation, library_versions
from fxgate.models.ensemble.bundle import BundleError
from fxgate.models.ensemble.calibration import Calibrator
from fxgate.models.ensemble.config import EnsembleConfig
from fxgate.models.ensemble.metrics import block_metrics, reliability, silence_note
from fxgate.models.ensemble.quantiles import QuantileModels, forward_returns, quantile_row
from fxgate.models.ensemble.row import L1Row, l1_row
from fxgate.models.ensemble.walk_forward import purged_walk_forward, split_calibration
from fxgate.models.features import FEATURE_ENGINE_VERSION, FeatureEngine, MadWinsorizer, feature_names
from fxgate.models.labels import Labels, LabelSpec, make_labels

__all__ = ["TreeEnsemble", "L1Verdict"]

_DEFAULT_CONFIG = EnsembleConfig()  # frozen: safe to share as a default argument


@dataclass(frozen=True, slots=True)
class L1Verdict:
    passed: bool
    direction: str  # "BUY" | "SELL" | "NONE"
    probs: tuple[ModelProbability, ...]  # calibrated P(up) per model, in model order
    confidence: float  # the weakest model's confidence in the agreed direction (0 if they disagree)
    threshold: float
    reason: str


class _Abandoned(Exception):
    """The caller of :func:`_on_passing_thread` stopped waiting (Ctrl-C): the work ends at its next check."""


def _on_passing_thread(fn: Callable[..., Any], *args: Any, stop: threading.Event | None = None) -> Any:
    """``fn(*args)`` on a new thread, waited for: the OpenMP threads XGBoost and LightGBM start stay with the thread
    that called them, so they end with this one instead of staying with the caller's (the gate's, whose llama.cpp
    barriers they would slow: :meth:`TreeEnsemble.load`). It runs in a copy of the caller's context (contextvars).
    A daemon thread joined in short waits, so Ctrl-C still interrupts the caller; ``stop`` is then set, ``fn``
    (which checks it) ends at its next check instead of computing on for a caller that is gone, and the caller
    waits for that before the interrupt propagates (so nothing of ``fn`` runs after it; a second Ctrl-C stops the
    wait and leaves the thread to end on its own)."""
    out: list[Any] = []
    ctx = contextvars.copy_context()
    # waited for with an Event, not Thread.join: on Python 3.11 a KeyboardInterrupt inside join(timeout) can mark
    # the thread stopped while it runs on (CPython gh-90882), and is_alive() then lies
    finished = threading.Event()

    def run() -> None:
        try:
            out.append((True, ctx.run(fn, *args)))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            out.append((False, exc))
        finally:
            finished.set()

    t = threading.Thread(target=run, name="fxgate-boosters", daemon=True)
    try:
        t.start()
        while not finished.wait(0.1):
            pass
    except BaseException:
        if stop is not None:
            stop.set()
            while not finished.wait(0.1):
                pass
        raise
    t.join()  # it has returned from run: only its exit is left
    ok, value = out[0]
    if not ok:
        raise value
    return value


#: how far fxgate's TreeSHAP attributions may miss their margin (both float64 sums of the same leaves), relative
SHAP_TOLERANCE = 1e-9


class TreeEnsemble:
    """The calibrated boosters with their compiled evaluators (see the module docstring)."""

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
        self._row_args: tuple = ()  # L1Row.kernel_args(), for the one-row kernel
        self.quantiles: QuantileModels | None = None  # the return quantile models (None: not fitted / old bundle)
        self._q_args: tuple = ()  # QuantileModels.kernel_args(), for the one-row quantile kernel
        self.directory: Path | None = None  # the bundle directory it was loaded from
        self._shap: dict[str, ShapTrees] | None = None  # TreeSHAP layouts (prepare_explain)

    @property
    def fitted(self) -> bool:
        return bool(self.models)

    # -- training ------------------------------------------------------------------------------------------------
    def fit(
        self,
        bars: Bars,
        spec: LabelSpec,
        cfg: EnsembleConfig = _DEFAULT_CONFIG,
        progress: Callable[[str], None] | None = None,
        *,
        evaluate: bool = True,
    ) -> dict[str, Any]:
        """Walk-forward evaluation, then the final fit on all labelled bars. Returns the report (also kept in
        ``self.manifest['metrics']``). ``evaluate=False`` skips the walk-forward folds (replay refits, whose
        out-of-sample figures come from the replay itself). Runs on a thread that ends with it, so the libraries'
        OpenMP threads end with it too (see :meth:`load`)."""
        stop = threading.Event()
        before = dict(self.__dict__)  # the fit assigns attributes, it mutates none in place
        try:
            return _on_passing_thread(self._fit, bars, spec, cfg, progress, evaluate, stop, stop=stop)
        except BaseException:  # failed or interrupted: the ensemble as it was, all of it (its thread has ended)
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

    def _fit(
        self,
        bars: Bars,
        spec: LabelSpec,
        cfg: EnsembleConfig,
        progress: Callable[[str], None] | None,
        evaluate: bool,
        stop: threading.Event | None = None,
    ) -> dict[str, Any]:
        def check() -> None:  # the caller was interrupted: end here, leaving ``self`` as it was
            if stop is not None and stop.is_set():
                raise _Abandoned("TreeEnsemble.fit abandoned: its caller was interrupted")

        def say(msg: str) -> None:
            check()
            if progress is not None:
                progress(msg)

        check()
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
            rep = block_metrics(p, lab.y[test], lab.ret[test], cfg.threshold)
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
            overall = block_metrics(pool, y_all, ret_all, cfg.threshold)
            dec = y_all != 0
            table = {m: reliability(pool[m][dec], (y_all[dec] > 0).astype(int)) for m in MODEL_NAMES}
        else:
            overall, table = None, {}
        say("final fit on all labelled bars")
        final_train = np.flatnonzero(usable)
        fitted = self._fit_on(x, lab, final_train, embargo)
        last_end = lab.last_end(final_train)  # max over the samples' label ends: triple-barrier ends are not monotone
        quantiles = None
        if cfg.quantiles:
            # the h-bar forward return of every usable row (not only the decisive ones the boosters learn from),
            # known by last_end: the bundle's last_label_end_ts still bounds every bar training looked at
            q_rows, q_ret = forward_returns(bars.close, final_train, spec.horizon, last_end)
            say(f"quantile models: {len(q_rows)} rows, tau 0.1..0.9")
            quantiles = QuantileModels.fit(fitted.winsor.transform(x[q_rows]), q_ret, cfg)
        check()  # the last step: an interrupt from here on is undone by fit, which restores the ensemble
        self.models, self.calibrators, self.winsor = fitted.models, fitted.calibrators, fitted.winsor
        self.quantiles = quantiles
        self._compile()
        report = {
            "folds": fold_reports,
            "overall_oos": overall,
            "reliability_oos": table,
            "silence": silence_note(overall, cfg.threshold) if overall else None,
        }
        self.manifest = _stats.json_safe(
            {
                "bundle_format": bundle.BUNDLE_FORMAT,
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
                "libraries": library_versions(),
            }
        )
        return report

    def _fit_on(self, x: np.ndarray, lab: Labels, train: np.ndarray, embargo: int) -> TreeEnsemble:
        fit_idx, cal_idx = split_calibration(train, lab.end, self.config.calib_frac, embargo)
        fit_idx = fit_idx[lab.y[fit_idx] != 0]
        cal_idx = cal_idx[lab.y[cal_idx] != 0]
        out = TreeEnsemble()
        out.config = self.config
        out.winsor = MadWinsorizer().fit(x[fit_idx])
        xf = out.winsor.transform(x[fit_idx])
        yf = (lab.y[fit_idx] > 0).astype(int)
        out.models = {a.name: a.train(xf, yf, self.config) for a in ADAPTERS}
        xc = out.winsor.transform(x[cal_idx])
        yc = (lab.y[cal_idx] > 0).astype(int)
        out.calibrators = {a.name: Calibrator.fit(a.proba(out.models[a.name], xc), yc) for a in ADAPTERS}
        return out

    def _calibrated_native(self, x: np.ndarray) -> dict[str, np.ndarray]:
        z = self.winsor.transform(x)
        return {a.name: self.calibrators[a.name](a.proba(self.models[a.name], z)) for a in ADAPTERS}

    def _compile(self) -> None:
        self.compiled = {a.name: a.flatten(self.models[a.name]) for a in ADAPTERS}
        self._shap = None  # the models changed: their TreeSHAP layouts are built again (prepare_explain)
        self._row_args = L1Row.build(
            self.winsor, [self.compiled[m] for m in MODEL_NAMES], [self.calibrators[m] for m in MODEL_NAMES]
        ).kernel_args()
        self._q_args = self.quantiles.kernel_args(self.winsor) if self.quantiles is not None else ()

    # -- inference -----------------------------------------------------------------------------------------------
    def predict_row(self, x: np.ndarray) -> np.ndarray:
        """Calibrated P(up) of every model for one feature vector, in one compiled call (the live path)."""
        out = np.empty(len(MODEL_NAMES))
        l1_row(np.ascontiguousarray(x, dtype=np.float64), self._row_args, out)
        return out

    @property
    def has_quantiles(self) -> bool:
        """Whether the bundle carries the return quantile models (bundles fitted before them, or with
        ``quantiles = False``, do not)."""
        return self.quantiles is not None

    def predict_quantiles(self, x: np.ndarray) -> np.ndarray:
        """The forward log return's quantiles at tau = 0.1, ..., 0.9 for one feature vector, sorted (no crossing:
        :mod:`~fxgate.models.ensemble.quantiles`), in one compiled call. Raises when the bundle has none."""
        if self.quantiles is None:
            raise FxgateError("this bundle has no quantile models. Fix: refit it (`fxgate fit`) with quantiles on")
        out = np.empty(len(self.quantiles.taus))
        quantile_row(np.ascontiguousarray(x, dtype=np.float64), *self._q_args, out)
        return out

    def predict_quantiles_native(self, x: np.ndarray) -> np.ndarray:
        """``(n, 9)`` sorted quantiles of feature rows ``x`` from LightGBM's own ``predict`` (the reference)."""
        if self.quantiles is None:
            raise FxgateError("this bundle has no quantile models. Fix: refit it (`fxgate fit`) with quantiles on")
        return self.quantiles.native(self.winsor.transform(np.atleast_2d(np.asarray(x, dtype=np.float64))))

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

    def prepare_explain(self) -> dict[str, ShapTrees]:
        """The TreeSHAP layouts, built now if they are not yet (:meth:`explain` builds them on its first call
        otherwise): 0.2 s and about 6 MB for the three 300-tree, depth-6 models (``benchmarks/bench_shap.py``).
        ``Gate.set_ensemble`` (the constructor's too) calls it when a configured module explains (the SHAP
        module), so that no bar pays for it. Raises ValueError for a model that cannot be explained, or none."""
        layouts = getattr(self, "_shap", None)  # an ensemble pickled before this attribute existed has none
        if layouts is None:
            if not self.compiled:
                raise ValueError("this ensemble has no fitted models to explain. Fix: fit or load it first")
            layouts = {a.name: shap_trees(self.compiled[a.name]) for a in ADAPTERS}
            self._shap = layouts
        return layouts

    def explain(self, x: np.ndarray) -> tuple[Explanation, ...]:
        """Each model's exact TreeSHAP attributions for one feature vector (winsorized as the models see it), in
        model order, from the compiled trees (:mod:`fxgate.models._treeshap`; equal to each library's own TreeSHAP:
        XGBoost's to its float32 rounding). About 1.5 ms for the three 300-tree models. ``margin`` is the sum of the
        row's leaves in float64 (the attributions add up to it to float64 rounding: the tolerance 1e-9)."""
        z = self.winsor.transform(np.asarray(x, dtype=np.float64)[None, :])[0]
        layouts = self.prepare_explain()
        return tuple(
            Explanation(a.name, tree_shap(t, z), t.expected, margin(t, z), SHAP_TOLERANCE)
            for a in ADAPTERS
            for t in (layouts[a.name],)
        )

    def explain_native(self, x: np.ndarray) -> tuple[Explanation, ...]:
        """:meth:`explain` by each booster library's own TreeSHAP (milliseconds a call: the reference)."""
        z = self.winsor.transform(np.asarray(x, dtype=np.float64)[None, :])[0]
        return tuple(a.explain(self.models[a.name], z) for a in ADAPTERS)

    def verdict(self, x: np.ndarray, threshold: float | None = None) -> L1Verdict:
        """The Layer-1 rule on one feature vector."""
        return self.verdict_from_probs(self.predict_row(x), threshold)

    def verdict_from_probs(self, p: np.ndarray, threshold: float | None = None) -> L1Verdict:
        """The Layer-1 rule on already computed calibrated P(up) (one per model, MODEL_NAMES order, float64). Runs
        on Python floats: numpy on three numbers costs a microsecond a call (the same verdict as the numpy rule,
        reason text included: tests/engine/test_fast_verdicts.py)."""
        thr = self.config.threshold if threshold is None else threshold
        ps = p.tolist() if isinstance(p, np.ndarray) else [float(v) for v in p]
        probs = tuple(ModelProbability(m, v) for m, v in zip(MODEL_NAMES, ps, strict=True))
        lean = candidate_direction_of(ps)
        if lean == 0:
            if not all(map(math.isfinite, ps)):
                return L1Verdict(False, "NONE", probs, 0.0, thr, "non-finite model output")
            votes = ", ".join(
                f"{m} {'up' if v >= 0.5 else 'down'} {v:.3f}" for m, v in zip(MODEL_NAMES, ps, strict=True)
            )
            return L1Verdict(False, "NONE", probs, 0.0, thr, f"models disagree ({votes})")
        conf = ps if lean > 0 else [1 - v for v in ps]
        direction = "BUY" if lean > 0 else "SELL"
        weakest = min(conf)
        if weakest < thr:
            name = MODEL_NAMES[conf.index(weakest)]  # the first weakest, as np.argmin
            return L1Verdict(
                False, "NONE", probs, weakest, thr, f"all say {direction} but {name} confidence {weakest:.3f} < {thr}"
            )
        return L1Verdict(
            True,
            direction,
            probs,
            weakest,
            thr,
            f"all three say {direction} with confidence >= {thr} (min {weakest:.3f})",
        )

    # -- bundle --------------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write the bundle (:mod:`~fxgate.models.ensemble.bundle`): the native model files, the manifest with each
        file's sha256 and a parity probe, and the manifest's own hash."""
        d = Path(directory)
        rng = np.random.default_rng(0)
        med, mad = self.winsor.median, np.where(self.winsor.mad > 0, self.winsor.mad, 1e-3)
        probe = med + rng.normal(0, 2, size=(32, len(med))) * mad
        probe[rng.random(probe.shape) < 0.05] = np.nan
        d.mkdir(parents=True, exist_ok=True)
        extra = {"quantiles": self.quantiles.write(d, self.winsor.transform(probe))} if self.quantiles else None
        self.manifest = bundle.write(
            d, self.models, self.manifest, probe, self.predict_proba(probe, native=True), extra
        )
        return d

    @classmethod
    def load(cls, directory: str | Path) -> TreeEnsemble:
        """Load and verify a bundle (:mod:`~fxgate.models.ensemble.bundle`): the manifest against its sidecar hash,
        its shape, every model file's sha256 (over the very bytes then loaded), the feature list and engine version,
        and that native and compiled predictions reproduce the stored probe.

        It runs on a thread that ends with it. XGBoost's and LightGBM's model parsers start OpenMP threads that stay
        with the calling thread. llama.cpp's CPU backend is OpenMP too, and libgomp barely spins at its barriers
        once the process has more OpenMP threads than cores. On 2 cores, a bundle loaded on the gate's thread made
        the LLM layers' debate 5x slower (908 against 174 ms per decision). The native predicts and explanations
        run on one thread (:mod:`~fxgate.models.ensemble.boosters`), so they start none."""
        return _on_passing_thread(cls._load, Path(directory))

    @classmethod
    def _load(cls, d: Path) -> TreeEnsemble:
        man, blobs = bundle.read(d)
        mpath = d / bundle.MANIFEST
        ens = cls()
        ens.manifest, ens.directory = man, d
        ens.timeframe, ens.symbol = man["timeframe"], man["symbol"]
        ens.label_spec = bundle.from_manifest(mpath, "label_spec", lambda: LabelSpec(**man["label_spec"]))
        ens.config = bundle.from_manifest(mpath, "config", lambda: EnsembleConfig(**man["config"]))
        ens.winsor = bundle.from_manifest(mpath, "winsorizer", lambda: MadWinsorizer.from_dict(man["winsorizer"]))
        ens.calibrators = bundle.from_manifest(
            mpath, "calibrators", lambda: {m: Calibrator(**man["calibrators"][m]) for m in MODEL_NAMES}
        )
        try:
            ens.models = {a.name: a.load(blobs[a.name]) for a in ADAPTERS}
        except Exception as exc:  # the libraries raise their own error types on a file they cannot parse
            raise BundleError(
                f"{d}: a model file matches its sha256 but its library cannot read it ({exc}); the "
                f"installed {'/'.join(MODEL_NAMES)} may be too old. Fix: install the versions in "
                f"{bundle.MANIFEST} 'libraries' or refit"
            ) from exc
        ens.quantiles = QuantileModels.read(d, man)
        ens._compile()
        bundle.check_probe(d, man, ens.predict_proba)
        if ens.quantiles is not None:
            probe = bundle.from_manifest(mpath, "probe", lambda: np.array(man["probe"]["x"], dtype=np.float64))
            ens.quantiles.check_probe(d, man["quantiles"], ens.winsor.transform(probe), ens._q_args)
        return ens

    @property
    def bundle_hash(self) -> str:
        """sha256 of the canonical JSON of the whole manifest except its creation time: the model files' sha256,
        the calibrators, the feature list, the training window, symbol, timeframe and label spec. (Before
        :meth:`save` the manifest has no files yet, so a refit that is never saved is named by its metadata.)"""
        body = {k: v for k, v in self.manifest.items() if k != "created"}
        return hashlib.sha256(_stats.strict_dumps(body, sort_keys=True).encode()).hexdigest()
