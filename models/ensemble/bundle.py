"""The Layer-1 bundle on disk: writing it, and every check that reading it makes before a model is served.

A directory holding exactly one model file per booster (names fixed by fxgate: :attr:`Booster.file
<fxgate.models.ensemble.boosters.Booster.file>`), ``manifest.json`` (strict JSON: no ``NaN``) and
``manifest.json.sha256`` (the manifest's own sha256, in ``sha256sum`` format). Reading refuses a manifest whose hash
differs from its sidecar (so its training window, symbol, timeframe and label spec — what replay trusts — cannot be
edited unnoticed), a manifest that names any other file or a path outside the directory, a model file whose bytes
differ from the manifest's sha256 (the bytes hashed are the bytes loaded; the optional ``quantiles`` entry's files
likewise, :func:`read_files`), a malformed manifest, and a bundle whose
models do not reproduce the probe of features and calibrated probabilities stored at training time — each with the
file named and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fxgate.engine.core.atomic import write_text
from fxgate.engine.core.errors import FxgateError
from fxgate.engine.core.hashing import file_sha256
from fxgate.models import _stats
from fxgate.models.ensemble.boosters import ADAPTERS, MODEL_NAMES
from fxgate.models.features import FEATURE_ENGINE_VERSION, feature_names

__all__ = [
    "BundleError",
    "BUNDLE_FORMAT",
    "MANIFEST",
    "SIDECAR",
    "FIX_MANIFEST",
    "write",
    "read",
    "read_files",
    "from_manifest",
    "check_probe",
]

BUNDLE_FORMAT = 2  # 2: manifest sidecar, strict JSON, fixed file names
MANIFEST = "manifest.json"
SIDECAR = "manifest.json.sha256"
#: what :func:`read` requires of a manifest, with the JSON type each must have
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
_FIX_MANIFEST = "Fix: restore the manifest `fxgate fit` wrote, or refit the bundle"
FIX_MANIFEST = _FIX_MANIFEST


class BundleError(FxgateError):
    """A model bundle that cannot be served: missing file, hash or feature mismatch, failed parity probe."""


def write(
    d: Path,
    models: dict[str, Any],
    manifest: dict[str, Any],
    probe_x: np.ndarray,
    probe_proba: np.ndarray,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the model files, the manifest (with each file's sha256 and the parity probe) and its sidecar into
    ``d``; returns the manifest as written. ``extra``: further manifest entries whose files the caller has already
    written into ``d`` (the ``quantiles`` entry, :mod:`~fxgate.models.ensemble.quantiles`), hashed with the rest."""
    d.mkdir(parents=True, exist_ok=True)
    for a in ADAPTERS:
        a.save(models[a.name], d / a.file)
    man = dict(manifest)
    man["files"] = {a.name: {"name": a.file, "sha256": file_sha256(d / a.file)} for a in ADAPTERS}
    man["probe"] = {"x": _nan_list(probe_x), "proba": probe_proba.tolist()}
    man.pop("quantiles", None)  # a refit without quantiles must not keep a stale entry
    man.update(extra or {})
    man = _stats.json_safe(man)
    text = _stats.strict_dumps(man, indent=1)
    write_text(d / MANIFEST, text)
    write_text(d / SIDECAR, f"{hashlib.sha256(text.encode()).hexdigest()}  {MANIFEST}\n")
    return man


def read(d: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The verified manifest of the bundle in ``d`` and the bytes of each model file (by model name): the sidecar
    hash, the manifest's shape, every file's sha256, the feature list and engine version."""
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
    return man, blobs


def from_manifest(mpath: Path, key: str, build: Callable[[], Any]) -> Any:
    """``build()``, with a malformed manifest entry ``key`` reported as a :class:`BundleError` naming the file."""
    try:
        return build()
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise BundleError(f"{mpath}: {key} is malformed ({type(exc).__name__}: {exc}). {_FIX_MANIFEST}") from None


def check_probe(d: Path, man: dict[str, Any], predict_proba: Callable[..., np.ndarray]) -> None:
    """The loaded models, native and compiled, reproduce the calibrated probabilities stored at training time."""
    mpath = d / MANIFEST
    probe = from_manifest(mpath, "probe", lambda: np.array(man["probe"]["x"], dtype=np.float64))
    want = from_manifest(mpath, "probe", lambda: np.array(man["probe"]["proba"], dtype=np.float64))
    n_feat = len(feature_names())
    if probe.ndim != 2 or want.shape != (len(probe), len(MODEL_NAMES)) or probe.shape[1] != n_feat:
        raise BundleError(
            f"{mpath}: probe has shape {probe.shape} -> {want.shape}, expected (k, "
            f"{n_feat}) -> (k, {len(MODEL_NAMES)}). Fix: refit the bundle"
        )
    # native must reproduce the training-time numbers; the compiled evaluator matches native margins to ~1e-6
    # (XGBoost adds leaves in float32), which a steep calibration map can stretch, hence its looser bound
    for label, got, tol in (
        ("native", predict_proba(probe, native=True), 1e-7),
        ("compiled", predict_proba(probe), 1e-5),
    ):
        err = float(np.max(np.abs(got - want)))
        if not err <= tol:
            raise BundleError(
                f"{d}: {label} predictions differ from the training-time probe by {err:.2e}; "
                "the libraries or files changed. Fix: refit with the installed versions"
            )


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
    """The bytes of each model file, from the names fxgate fixes (each adapter's ``file``), each checked against the
    manifest's sha256. The manifest's names must be those names: it cannot point the check at another file."""
    if set(files) != set(MODEL_NAMES):
        raise BundleError(
            f"{mpath}: files lists {sorted(files)}, expected exactly {list(MODEL_NAMES)}. {_FIX_MANIFEST}"
        )
    return read_files(d, files, {a.name: a.file for a in ADAPTERS}, "files")


def read_files(
    d: Path, files: dict[str, Any], fixed: dict[str, str], section: str = "quantiles.files"
) -> dict[str, bytes]:
    """The bytes of the files a manifest section lists (key -> ``{"name", "sha256"}``), each from the name fxgate
    fixes for its key (``fixed``), inside ``d``, and matching its sha256 (over the very bytes returned)."""
    mpath = d / MANIFEST
    if set(files) != set(fixed):
        raise BundleError(f"{mpath}: {section} lists {sorted(files)}, expected exactly {list(fixed)}. {_FIX_MANIFEST}")
    root = d.resolve()
    out = {}
    for m, fname in fixed.items():
        info = files[m]
        if not (isinstance(info, dict) and isinstance(info.get("name"), str) and isinstance(info.get("sha256"), str)):
            raise BundleError(
                f'{mpath}: {section}.{m} = {info!r}, expected {{"name": ..., "sha256": ...}}. {_FIX_MANIFEST}'
            )
        name = info["name"]
        if Path(name).is_absolute() or ".." in Path(os.path.normpath(name)).parts:  # by its text: links come below
            raise BundleError(
                f"{mpath}: {section}.{m}.name = {name!r} is outside the bundle directory {d}; fxgate "
                f"loads only its own files inside it. {_FIX_MANIFEST}"
            )
        if name != fname:
            raise BundleError(
                f"{mpath}: {section}.{m}.name = {name!r}, but fxgate loads {m} from {fname!r}: the "
                f"manifest cannot send the hash check to another file. {_FIX_MANIFEST}"
            )
        p = d / fname
        if not p.is_file():
            raise BundleError(f"{p}: missing. Fix: copy the whole bundle directory")
        if not p.resolve().is_relative_to(root):
            raise BundleError(
                f"{p}: a link to {p.resolve()}, outside the bundle directory. Fix: copy the file itself into the bundle"
            )
        data = p.read_bytes()
        got = hashlib.sha256(data).hexdigest()  # of the very bytes the library will parse, not a second read
        if got != info["sha256"]:
            raise BundleError(
                f"{p}: sha256 {got[:12]}… does not match the manifest's {info['sha256'][:12]}…; "
                "the file was changed after training. Fix: refit or restore the original file"
            )
        out[m] = data
    return out


def _nan_list(a: np.ndarray) -> list:
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in a]
