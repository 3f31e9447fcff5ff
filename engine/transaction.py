"""The per-bar transaction: the gate's state copied before a bar's updates, restored if one of them raises.

Every accepted bar updates the feature engine and every Layer-4 module in place; if any update raises, the bar is
refused and the state must be what it was before it (engine/gate.py). Copying each owner's ``state_dict()`` before
every bar does that, but it costs one Python call and one allocation per array — about 140 arrays with the 18
default modules, ~50 µs a bar, a quarter of the fast path.

:class:`StateArena` makes the copy one ``memcpy`` per dtype. At the first save it moves every numpy array of each
owner's state (the keys of its ``state_dict()`` that are array attributes) into one contiguous buffer per dtype and
rebinds the owner's attribute to a view of it: the kernels keep updating the same arrays in place, now laid end to
end. A save copies the buffers into preallocated twins and reads the few non-array state values (counts, error
strings, a scheduled module's in-flight job); a restore — rare: only after an update raised — rebuilds each owner's
``state_dict()`` from the copy and calls its ``load_state_dict`` (so derived caches are rebuilt as on any restore),
and the next save lays the arena out again.

An owner that rebinds a state attribute (a reset, a reallocation, ``load_state_dict``) leaves the arena: every save
first checks that each attribute is still the view it was given (one C-level ``attrgetter`` and identity pass) and
rebuilds the arena when one is not, so a copy never misses a state array. An owner whose ``state_dict()`` holds a
key that is neither an attribute nor one of the constants below is saved with ``state_dict()`` as before.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["StateArena"]

#: state_dict keys that are not attributes and do not change while the gate runs (module name and parameters,
#: the feature engine's timeframe and layout version)
_CONSTANT = ("name", "params", "timeframe", "version")
#: values of non-array state kept as they are (immutable, or a Future that is never mutated by the gate)
_AS_IS = (type(None), bool, int, float, str, np.generic)


class _Owner:
    """One owner's layout in the arena."""

    __slots__ = ("obj", "arrays", "attrs", "consts", "views", "get", "slots", "fallback")

    def __init__(self, obj: Any) -> None:
        self.obj = obj
        self.arrays: list[str] = []
        self.attrs: list[str] = []
        self.consts: dict[str, Any] = {}
        self.fallback = False
        for k, v in obj.state_dict().items():
            cur = getattr(obj, k, _MISSING)
            if k in _CONSTANT:
                self.consts[k] = copy.deepcopy(v)
            elif isinstance(v, np.ndarray) and isinstance(cur, np.ndarray) and v.dtype.kind in "biufc":
                self.arrays.append(k)
            elif cur is not _MISSING:
                self.attrs.append(k)
            else:
                self.fallback = True
        if any(
            np.may_share_memory(getattr(obj, a), getattr(obj, b))
            for i, a in enumerate(self.arrays)
            for b in self.arrays[i + 1 :]
        ):
            self.fallback = True  # aliased state arrays: one view each would split them
        self.views: tuple[Any, ...] = ()
        self.get = operator.attrgetter(*self.arrays) if len(self.arrays) > 1 else None
        self.slots: list[tuple[str, np.dtype, int, int, tuple[int, ...]]] = []  # key, dtype, offset, size, shape

    def current(self) -> tuple[Any, ...]:
        if self.get is not None:
            return self.get(self.obj)
        return tuple(getattr(self.obj, k) for k in self.arrays)


_MISSING = object()


class StateArena:
    """The transaction copy of the objects ``owners()`` returns (each with ``state_dict``/``load_state_dict``; asked
    on every save, so an owner added or removed later is noticed): see the module docstring. ``save()`` before a
    bar's updates; ``restore(saved)`` if one of them raised."""

    def __init__(self, owners: Callable[[], list[Any]]) -> None:
        self._objs_of = owners
        self._objs: list[Any] = []
        self._owners: list[_Owner] = []
        self._bufs: dict[np.dtype, np.ndarray] = {}
        self._twins: dict[np.dtype, np.ndarray] = {}
        self.builds = 0  # how many times the arena was laid out (tests: a rebind lays it out again)

    def _build(self) -> None:
        self._objs = list(self._objs_of())
        owners = [_Owner(o) for o in self._objs]
        sizes: dict[np.dtype, int] = {}
        for ow in owners:
            if ow.fallback:
                continue
            for k in ow.arrays:
                a = getattr(ow.obj, k)
                off = sizes.get(a.dtype, 0)
                ow.slots.append((k, a.dtype, off, a.size, a.shape))
                sizes[a.dtype] = off + a.size
        bufs = {dt: np.empty(n, dtype=dt) for dt, n in sizes.items()}
        for ow in owners:
            if ow.fallback:
                continue
            for k, dt, off, n, shape in ow.slots:
                view = bufs[dt][off : off + n].reshape(shape)
                view[...] = getattr(ow.obj, k)
                setattr(ow.obj, k, view)
            ow.views = ow.current()
        self._owners, self._bufs = owners, bufs
        self._twins = {dt: np.empty_like(b) for dt, b in bufs.items()}
        self.builds += 1

    def _intact(self) -> bool:
        objs = self._objs_of()
        if len(self._owners) != len(objs) or any(map(operator.is_not, objs, self._objs)):
            return False
        for ow in self._owners:
            if not ow.fallback and any(map(operator.is_not, ow.current(), ow.views)):
                return False
        return True

    def save(self) -> tuple[Any, ...]:
        """The state now: (buffers copy, per-owner non-array values or a whole ``state_dict()``). The copy lives in
        buffers the arena reuses: one save is outstanding at a time (the gate's lock holds one bar's updates), and
        the next save overwrites it."""
        if not self._intact():
            self._build()
        for dt, b in self._bufs.items():
            np.copyto(self._twins[dt], b)
        rest = []
        for ow in self._owners:
            if ow.fallback:
                rest.append(ow.obj.state_dict())
                continue
            vals = []
            for k in ow.attrs:
                v = getattr(ow.obj, k)
                vals.append(v if isinstance(v, _AS_IS) or hasattr(v, "add_done_callback") else copy.deepcopy(v))
            rest.append(vals)
        return (self._twins, tuple(rest))

    def restore(self, saved: tuple[Any, ...]) -> None:
        """Put every owner back to the saved state (through its ``load_state_dict``); the next save lays the arena
        out again."""
        twins, rest = saved
        for ow, r in zip(self._owners, rest, strict=True):
            if ow.fallback:
                ow.obj.load_state_dict(r)
                continue
            st: dict[str, Any] = dict(ow.consts)
            st.update(zip(ow.attrs, r, strict=True))
            for k, dt, off, n, shape in ow.slots:
                st[k] = twins[dt][off : off + n].reshape(shape).copy()
            ow.obj.load_state_dict(st)
        self._owners = []  # laid out again on the next save (load_state_dict rebinds the attributes)
