"""The one place that sets numba compilation options for every fxgate kernel.

``FASTMATH`` allows the reassociation and contraction flags but never ``nnan``/``ninf``: live feeds carry NaN and
inf, and kernels must see them (convention from stumpy's ``config.py``). Kernels are cached on disk, so a gate
compiles once per machine, not once per process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numba

F = TypeVar("F", bound=Callable[..., Any])

FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})


def kernel(fn: F | None = None, *, fastmath: bool = True) -> Any:
    """Compile ``fn`` with fxgate's numba settings: ``njit(cache=True, nogil=True)`` and :data:`FASTMATH`.

    The undecorated function stays importable as the pure-Python twin: write ``_x = kernel(_x_py)``.
    """

    def wrap(f: F) -> Any:
        return numba.njit(f, cache=True, nogil=True, fastmath=set(FASTMATH) if fastmath else False)

    return wrap(fn) if fn is not None else wrap
