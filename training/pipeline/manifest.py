"""A run directory's manifest and its check: ``manifest.json`` lists every file of the run (size and sha256, with
the preset, the data manifest, the git commit, the metrics and the parity results), and :func:`verify` checks a
downloaded copy against it — or a ``fxgate train data`` directory against its own manifest."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path, PurePosixPath
from typing import Any

from fxgate.engine.core.hashing import file_sha256
from fxgate.training.datasets import is_data_manifest

__all__ = ["MANIFEST", "write_manifest", "verify", "manifest_kind"]

MANIFEST = "manifest.json"
# what the manifest records and verify checks; checkpoints and intermediate models are left out
_SKIP_DIRS = ("checkpoint-",)


def _files(d: Path) -> list[Path]:
    """The run's files, relative to ``d``, without following symlinks (a symlink is an error: a run directory holds
    its own files, and a link out of it would let verify hash something else)."""
    out = []
    for root, dirs, names in os.walk(d, followlinks=False):
        r = Path(root)
        dirs[:] = sorted(x for x in dirs if not x.startswith(_SKIP_DIRS))
        for x in list(dirs) + names:
            if (r / x).is_symlink():
                raise ValueError(
                    f"{r / x}: a symlink in the run directory; a manifest records the run's own files "
                    f"only. Fix: replace it by the file it points to, or remove it"
                )
        for x in names:
            p = r / x
            if p.relative_to(d).parts == (MANIFEST,):
                continue
            if p.is_file():
                out.append(p)
    return sorted(out)


def _git_commit() -> str | None:
    try:
        r = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=Path(__file__).parent
        )
        return r.stdout.strip() or None if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _strict(x: Any) -> Any:
    """``x`` with every non-finite float replaced by None, so the manifest is strict JSON."""
    if isinstance(x, float):
        return x if x == x and abs(x) != float("inf") else None
    if isinstance(x, dict):
        return {k: _strict(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_strict(v) for v in x]
    return x


def write_manifest(d: str | Path, **extra: Any) -> dict[str, Any]:
    """Write ``d/manifest.json`` listing every file of the run (relative POSIX paths, sizes, sha256), written to a
    temporary name and renamed into place."""
    d = Path(d)
    files = {p.relative_to(d).as_posix(): {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in _files(d)}
    m = {
        "fxgate_manifest": 1,
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": _git_commit(),
        **_strict(extra),
        "files": files,
    }
    tmp = d / f".{MANIFEST}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(m, indent=1, default=str, allow_nan=False))
    tmp.replace(d / MANIFEST)
    return m


def verify(d: str | Path) -> list[str]:
    """Problems of a copy of a run directory (or of a ``fxgate train data`` directory) against its manifest:
    missing, short, altered files, and any manifest entry that points outside the directory. Empty = OK.

    Only the directory itself is checked: a path in the manifest must be relative, without ``..``, and must not
    resolve (through a symlink) outside the directory — such an entry is a problem, never followed. A malformed
    manifest is one problem with its reason, never an exception."""
    d = Path(d)
    mp = d / MANIFEST
    if not d.exists():
        return [f"{d}: no such directory — nothing to verify"]
    if not d.is_dir():
        return [f"{d}: not a directory — give the run directory (the one holding {MANIFEST})"]
    if mp.is_symlink():
        return [f"{mp}: a symlink; verify reads the run's own manifest only"]
    if not mp.is_file():
        return [f"{mp}: missing — nothing to verify against"]
    try:
        m = json.loads(mp.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return [f"{mp}: unreadable ({exc}). Fix: copy the manifest again from the run"]
    if not isinstance(m, dict):
        return [f'{mp}: not a manifest (a JSON {type(m).__name__}, expected an object with "files")']
    if is_data_manifest(m) and "files" not in m:
        return [
            f"{mp}: this is a `fxgate train data` manifest from before file hashes were recorded; verify checks "
            f"runs and data directories that list their files. Fix: rebuild it with `fxgate train data`"
        ]
    if "fxgate_manifest" not in m and not is_data_manifest(m):
        return [
            f"{mp}: not a manifest written by `fxgate train all` or `fxgate train data` (no fxgate_manifest "
            f"key). Fix: point at the run directory itself"
        ]
    files = m.get("files")
    if not isinstance(files, dict):
        return [
            f'{mp}: "files" is missing or not an object of path -> {{bytes, sha256}}. Fix: copy the manifest '
            f"again from the run"
        ]
    root = d.resolve()
    out = []
    if not is_data_manifest(m) and not any(isinstance(k, str) and k.endswith(".gguf") for k in files):
        out.append(
            f"{mp}: lists no .gguf file, so a copy that verifies would still hold no model. Fix: copy the "
            "manifest written by `fxgate train all` at the end of the run"
        )
    if is_data_manifest(m) and not files:
        out.append(f"{mp}: lists no file. Fix: rebuild the data directory with `fxgate train data`")
    for rel, info in files.items():
        if not isinstance(rel, str) or not rel:
            out.append(f'{mp}: an empty file name in "files"')
            continue
        pr = PurePosixPath(rel)
        if pr.is_absolute() or Path(rel).is_absolute() or "\\" in rel or ".." in pr.parts:
            out.append(f"{rel}: not a path inside the run directory (absolute or with '..'); not followed")
            continue
        if not (isinstance(info, dict) and isinstance(info.get("bytes"), int) and isinstance(info.get("sha256"), str)):
            out.append(f"{rel}: malformed manifest entry (needs bytes and sha256)")
            continue
        p = d / rel
        if any((d / Path(*pr.parts[: k + 1])).is_symlink() for k in range(len(pr.parts))):
            try:
                inside = p.resolve().is_relative_to(root)
            except (OSError, RuntimeError):
                inside = False
            out.append(
                f"{rel}: a symlink{'' if inside else ' pointing outside the run directory'}; verify checks "
                f"the run's own files only (not followed)"
            )
            continue
        if not p.is_file():
            out.append(f"{rel}: missing")
        elif p.stat().st_size != info["bytes"]:
            out.append(f"{rel}: {p.stat().st_size} bytes, expected {info['bytes']} (truncated or altered)")
        elif file_sha256(p) != info["sha256"]:
            out.append(f"{rel}: sha256 differs from the manifest (altered)")
    return out


def manifest_kind(d: str | Path) -> str:
    """``"run"``, ``"data"`` or ``"unknown"``: what the manifest in ``d`` describes (for the CLI's message)."""
    try:
        m = json.loads((Path(d) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return "unknown"
    if is_data_manifest(m):
        return "data"
    return "run" if isinstance(m, dict) and "fxgate_manifest" in m else "unknown"
