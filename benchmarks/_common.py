"""Shared by the benchmark scripts (run as `python benchmarks/bench_x.py`, so this folder is on sys.path)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(path: Path | None, out: dict[str, Any]) -> None:
    """Write the results (with their ``summary`` rows for ``fxgate bench``) when --json was given."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
