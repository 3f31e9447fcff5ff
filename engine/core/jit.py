"""The one place that sets numba compilation options for every fxgate kernel.

``FASTMATH`` allows the reassociation and contraction flags but never ``nnan``/``ninf``: live feeds carry NaN and
inf, and kernels must see them (convention from stumpy's ``config.py``). Kernels are cached on disk, so a gate
compiles once per machine, not once per process.

Where. numba's cache checks only the source file of the function it compiled: a kernel in ``row.py`` that calls
(and inlines) one from ``_trees.py`` keeps running the old ``_trees.py`` code from its cache after ``_trees.py``
changes — an upgrade that fixes a tree kernel would not take effect (numba documents this limitation). So every
fxgate kernel is cached under one directory named by a hash of the source of every file that can hold a kernel
(the ``engine``, ``models`` and ``modules`` packages): any change to any of them starts a fresh cache.
The directory is ``$NUMBA_CACHE_DIR/fxgate-<hash>`` when that variable is set, else
``$XDG_CACHE_HOME/fxgate/numba/<hash>`` (``~/.cache/fxgate/numba/<hash>``). Other numba code in the process keeps
its own cache settings.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import numba

F = TypeVar("F", bound=Callable[..., Any])

FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

_PKG = Path(__file__).resolve().parents[2]  # the folder holding engine/, models/, modules/
#: the source folders whose files can hold kernels (a test may point this elsewhere before anything compiles)
SOURCE_ROOTS: tuple[Path, ...] = tuple(_PKG / d for d in ("engine", "models", "modules"))


def source_hash(roots: tuple[Path, ...]) -> str:
    """A hash of every ``.py`` file under ``roots`` (relative path and content), 16 hex digits."""
    h = hashlib.sha256()
    for root in roots:
        for f in sorted(Path(root).rglob("*.py")):
            h.update(str(f.relative_to(root.parent)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@cache
def _cache_dir(roots: tuple[Path, ...]) -> str:
    tag = source_hash(roots)
    base = os.environ.get("NUMBA_CACHE_DIR")
    if base:
        return str(Path(base) / f"fxgate-{tag}")
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(xdg) / "fxgate" / "numba" / tag)


def cache_dir() -> str:
    """The directory fxgate's kernels are cached in (see the module docstring)."""
    return _cache_dir(tuple(SOURCE_ROOTS))


def kernel(fn: F | None = None, *, fastmath: bool = True, inline: bool = False) -> Any:
    """Compile ``fn`` with fxgate's numba settings: ``njit(cache=True, nogil=True)`` and :data:`FASTMATH`.

    The undecorated function stays importable as the pure-Python twin: write ``_x = kernel(_x_py)``. ``inline``:
    numba inlines the function into every kernel that calls it (``inline="always"``: a small helper called in an
    inner loop, where a call's cost, which includes a reference-count update per array argument, would dominate).
    """

    def wrap(f: F) -> Any:
        # numba picks a function's cache locator when the dispatcher is made, from config.CACHE_DIR: set it for
        # this one call only, so other numba code in the process keeps its own setting
        old = numba.config.CACHE_DIR
        numba.config.CACHE_DIR = cache_dir()
        try:
            return numba.njit(
                f,
                cache=True,
                nogil=True,
                fastmath=set(FASTMATH) if fastmath else False,
                inline="always" if inline else "never",
            )
        finally:
            numba.config.CACHE_DIR = old

    return wrap(fn) if fn is not None else wrap
