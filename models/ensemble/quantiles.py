"""Quantile regressors of the forward log return, trained with the Layer-1 bundle (Koenker & Bassett 1978).

For each level τ in :data:`TAUS` (0.1, 0.2, …, 0.9) one LightGBM booster with ``objective="quantile", alpha=τ``
minimizes the pinball loss ρ_τ(u) = u·(τ − 1{u < 0}) of the target

    r_t = log(close[t + h] / close[t])            (h = the label horizon; the return a Matured record reports)

on the same winsorized feature rows the boosters see. A training row is used only if its return is known by the
training window's last label end (``t + h <= last_label_end``), so the bundle's ``last_label_end_ts`` rule still
bounds everything the bundle looked at (:func:`forward_returns`).

Kept cheap on purpose (:class:`~fxgate.models.ensemble.config.EnsembleConfig`): ``quantile_trees`` (50) trees of
``quantile_leaves`` (7) leaves, learning rate 0.05, at least 50 rows a leaf, one thread (on small data one thread
beats two contending ones): the nine fits take a few seconds on 3,000 rows (``fit_s`` in
``benchmarks/_bench_quantile_prediction.py``). ``quantiles = False`` skips them (the QuantilePrediction module then
fails closed). They are fitted in the final fit only, not in the walk-forward folds.

Prediction (:meth:`TreeEnsemble.predict_quantiles <fxgate.models.ensemble.model.TreeEnsemble.predict_quantiles>`,
:func:`quantile_row`): one numba call (about 6.4 us p50 on varying rows, 22 us with the float-threshold walk it
replaced) winsorizes the row, bins it once for the nine forests packed on one binning
(:mod:`~fxgate.models.ensemble._quantile_forests`, derived from the saved models at load time; its output equals the
float walk and native ``predict`` bit for bit) and sorts the nine values. Sorting is the rearrangement of
Chernozhukov, Fernández-Val & Galichon (2010, *Quantile and probability curves without crossing*, Econometrica
78(3)): separately fitted quantiles can cross; the sorted vector is a monotone quantile curve and is never farther
from the true one (in any L_p norm) than the crossed curve.

In the bundle: one LightGBM text file per level (names fixed: :data:`FILES`), listed under the manifest's
``quantiles`` entry with each file's sha256 and a parity probe (the sorted native quantiles of the bundle's probe
rows); :meth:`QuantileModels.read` checks the names and hashes (:func:`fxgate.models.ensemble.bundle.read_files`,
the checks the booster files get), :meth:`QuantileModels.check_probe` the numbers. A bundle without the entry
(written before quantiles, or with ``quantiles = False``) loads without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from fxgate.engine.core.errors import FxgateError
from fxgate.engine.core.hashing import file_sha256
from fxgate.engine.core.jit import kernel
from fxgate.models._trees import FlatForest, from_lightgbm
from fxgate.models.ensemble import bundle
from fxgate.models.ensemble._quantile_forests import quantile_forests, quantile_pack
from fxgate.models.ensemble.bundle import BundleError
from fxgate.models.ensemble.config import EnsembleConfig
from fxgate.models.features import MadWinsorizer

__all__ = ["TAUS", "FILES", "QuantileModels", "forward_returns", "quantile_row", "pinball_loss"]

#: the quantile levels, ascending (the order of every quantile vector)
TAUS: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(1, 10))
#: each level's file in a bundle, fixed by fxgate (a manifest cannot choose them)
FILES: tuple[str, ...] = tuple(f"lightgbm_q{round(t * 100):02d}.txt" for t in TAUS)
#: native predictions on the probe must match the stored ones this closely; the compiled walk equals native
#: (LightGBM accumulates doubles in tree order, as the kernel does), the bound only absorbs summation order
PROBE_TOL = 1e-12


def params(tau: float, cfg: EnsembleConfig) -> dict[str, Any]:
    return {
        "objective": "quantile",
        "alpha": float(tau),
        "num_leaves": int(cfg.quantile_leaves),
        "learning_rate": 0.05,
        "min_data_in_leaf": 50,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "num_threads": 1,  # small data: one thread is faster than two contending (measured 0.5 s vs 5 s)
        "seed": cfg.seed,
        "deterministic": True,
        "verbose": -1,
    }


def forward_returns(close: np.ndarray, rows: np.ndarray, horizon: int, last_end: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows whose ``horizon``-bar forward log return is known by bar ``last_end``, and those returns. Rows
    with a non-positive or non-finite close at either end are dropped."""
    rows = np.asarray(rows, dtype=np.int64)
    rows = rows[rows + horizon <= last_end]
    a, b = close[rows], close[rows + horizon]
    ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    rows = rows[ok]
    return rows, np.log(close[rows + horizon] / close[rows])


def pinball_loss(y: np.ndarray, q: np.ndarray, tau: float) -> float:
    """Mean pinball loss ρ_τ(y − q) (sklearn's ``mean_pinball_loss(y, q, alpha=tau)``)."""
    u = np.asarray(y, dtype=np.float64) - np.asarray(q, dtype=np.float64)
    return float(np.mean(np.where(u >= 0, tau * u, (tau - 1) * u)))


class _Dump:
    """A quantile booster's dump presented to :func:`~fxgate.models._trees.from_lightgbm`, which flattens binary
    models only: the trees, thresholds and missing-value rules are read as they are; only the objective's name is
    swapped, because it decides nothing but the output link, and the quantile objective's link is the identity
    (the margin *is* the prediction, which is what :func:`quantile_row` reads)."""

    def __init__(self, booster: lgb.Booster) -> None:
        self.d = booster.dump_model()

    def dump_model(self) -> dict[str, Any]:
        obj = self.d["objective"].split()[0]
        if obj != "quantile" or int(self.d["num_tree_per_iteration"]) != 1:
            raise ValueError(f"expected a one-output quantile booster, got {self.d['objective']!r}")
        return {**self.d, "objective": "binary sigmoid:1"}


def _quantile_row_py(x, lo, hi, pack, out):  # type: ignore[no-untyped-def]
    """Winsorize the feature row ``x`` (clip to [lo, hi], NaN kept) and evaluate the nine forests on it in one pass
    (``pack``: :class:`~fxgate.models.ensemble._quantile_forests.QuantilePack`'s fields; the row binned once for
    all nine), then sort ``out`` ascending (the rearrangement)."""
    quantile_forests(x, lo, hi, pack, out)
    k = len(out)
    for i in range(1, k):  # insertion sort: nine values
        v = out[i]
        j = i - 1
        while j >= 0 and out[j] > v:
            out[j + 1] = out[j]
            j -= 1
        out[j + 1] = v


quantile_row = kernel(_quantile_row_py, fastmath=False)


@dataclass
class QuantileModels:
    """The nine fitted quantile boosters (level order) and their flattened forests."""

    models: list[lgb.Booster]
    compiled: list[FlatForest]
    taus: tuple[float, ...] = TAUS

    @classmethod
    def fit(cls, z: np.ndarray, r: np.ndarray, cfg: EnsembleConfig) -> QuantileModels:
        """Fit one booster per level on winsorized rows ``z`` and targets ``r``."""
        if len(r) < 200:
            raise FxgateError(
                f"quantile models need >= 200 training rows with a known forward return, got {len(r)}. "
                "Fix: give more data, or fit with quantiles = False"
            )
        models = [lgb.train(params(t, cfg), lgb.Dataset(z, r), int(cfg.quantile_trees)) for t in TAUS]
        return cls(models, [from_lightgbm(_Dump(m)) for m in models])

    def native(self, z: np.ndarray) -> np.ndarray:
        """``(n, 9)`` sorted quantiles of winsorized rows ``z`` from LightGBM's own ``predict``."""
        return np.sort(np.column_stack([m.predict(np.atleast_2d(z), num_threads=1) for m in self.models]), axis=1)

    def kernel_args(self, winsor: MadWinsorizer) -> tuple:
        """What :func:`quantile_row` takes after the row: the winsorizer's clips and the nine forests packed on one
        binning (:func:`~fxgate.models.ensemble._quantile_forests.quantile_pack`, a plain tuple: numba types a
        named tuple argument through Python on every call). Derived from the flattened models, so it is rebuilt
        from any bundle at load time."""
        w = winsor
        lo = np.where(w.mad > 0, w.median - w.k * w.mad, -np.inf)
        hi = np.where(w.mad > 0, w.median + w.k * w.mad, np.inf)
        return lo, hi, tuple(quantile_pack(self.compiled))

    # -- bundle --------------------------------------------------------------------------------------------------
    def write(self, d: Path, probe_z: np.ndarray) -> dict[str, Any]:
        """Save the nine files into ``d``; returns the manifest's ``quantiles`` entry: the levels, each file's
        sha256 and the probe (sorted native quantiles of the winsorized probe rows ``probe_z``)."""
        for m, name in zip(self.models, FILES, strict=True):
            m.save_model(str(d / name))
        return {
            "taus": list(self.taus),
            "files": {_key(t): {"name": f, "sha256": file_sha256(d / f)} for t, f in zip(TAUS, FILES, strict=True)},
            "probe": self.native(probe_z).tolist(),
        }

    @classmethod
    def read(cls, d: Path, man: dict[str, Any]) -> QuantileModels | None:
        """The verified quantile models of the bundle in ``d`` (None when its manifest has no ``quantiles``
        entry): the levels must be :data:`TAUS`, the files :data:`FILES`, each file's bytes must match its sha256;
        the probe is checked by :func:`check_probe` once the winsorizer is known."""
        entry = man.get("quantiles")
        if entry is None:
            return None
        mpath = d / bundle.MANIFEST
        if not (isinstance(entry, dict) and isinstance(entry.get("files"), dict) and "probe" in entry):
            raise BundleError(f"{mpath}: quantiles = {str(entry)[:80]!r} is malformed. {bundle.FIX_MANIFEST}")
        if entry.get("taus") != list(TAUS):
            raise BundleError(
                f"{mpath}: quantiles.taus = {entry.get('taus')!r}, this fxgate serves {list(TAUS)}. Fix: refit"
            )
        blobs = bundle.read_files(d, entry["files"], {_key(t): f for t, f in zip(TAUS, FILES, strict=True)})
        try:
            models = [lgb.Booster(model_str=blobs[_key(t)].decode("utf-8")) for t in TAUS]
            return cls(models, [from_lightgbm(_Dump(m)) for m in models])
        except Exception as exc:  # lightgbm raises its own error type on a file it cannot parse
            raise BundleError(
                f"{d}: a quantile model file matches its sha256 but lightgbm cannot read it as a quantile "
                f"booster ({exc}). Fix: install the lightgbm version in {bundle.MANIFEST} 'libraries' or refit"
            ) from exc

    def check_probe(self, d: Path, entry: dict[str, Any], probe_z: np.ndarray, args: tuple) -> None:
        """Native and compiled quantiles of the winsorized probe rows ``probe_z`` reproduce the stored probe."""
        mpath = d / bundle.MANIFEST
        want = bundle.from_manifest(mpath, "quantiles.probe", lambda: np.array(entry["probe"], dtype=np.float64))
        compiled = np.empty((len(probe_z), len(TAUS)))
        lo, hi, pack = args
        no_clip = (np.full(len(lo), -np.inf), np.full(len(hi), np.inf))  # the rows are winsorized already
        for i, z in enumerate(probe_z):
            quantile_row(np.ascontiguousarray(z), *no_clip, pack, compiled[i])
        for label, got in (("native", self.native(probe_z)), ("compiled", compiled)):
            if got.shape != want.shape:
                raise BundleError(f"{mpath}: quantiles.probe has shape {want.shape}, the models give {got.shape}")
            err = float(np.max(np.abs(got - want))) if want.size else 0.0
            if not err <= PROBE_TOL:
                raise BundleError(
                    f"{d}: {label} quantile predictions differ from the training-time probe by {err:.2e}; the "
                    "library or the files changed. Fix: refit with the installed versions"
                )


def _key(tau: float) -> str:
    return f"q{round(tau * 100):02d}"
