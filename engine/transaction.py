"""The per-bar transaction: the gate's state copied before a bar's updates, restored if one of them raises.

Every accepted bar updates the feature engine and every Layer-4 module in place; if any update raises, the bar is
refused and the state must be what it was before it (engine/gate.py). Copying each owner's ``state_dict()`` before
every bar does that, but it costs one Python call and one allocation per array — about 140 arrays with the 18
default modules, ~50 µs a bar, a quarter of the fast path.

:class:`StateArena` makes the copy one ``memcpy``. At the first save it moves every numpy array of each owner's
state (the keys of its ``state_dict()`` that are array attributes) into one contiguous byte buffer (each array a
view of its own aligned slice) and rebinds the owner's attribute to that view: the kernels keep updating the same
arrays in place, now laid end to end. A save copies the buffer (but for the rings' undeclared rows, below) into a
preallocated twin and reads the few non-array state values (counts, error strings, a scheduled module's in-flight
job); a restore — rare: only after an update raised — rebuilds each owner's ``state_dict()`` from the copy and calls
its ``load_state_dict`` (so derived caches are rebuilt as on any restore), and the next save lays the arena out
again.

Rings. Most of the bytes are ring buffers of which a bar writes one row. An owner may name such arrays in
``tx_rings`` (a tuple of state keys) and declare, before each bar, the rows its next update can write in them:
``tx_rows()`` returns ``(key, row)`` pairs (``0 <= row < len(array)``; a ring it does not name is not written in
place on that bar), or None when it cannot promise that (a refit, a reallocation or an input-driven number of
writes may be due): then its rings are copied whole. The rings are laid out after every other array, so a save is
one copy of everything else plus one copy per declared row; a restore takes the rows from the copy and the rest of
each ring from the buffer itself (which the update wrote only in the declared rows, or not at all once it rebound
the attribute). A row outside the array is no promise (the owner's rings are copied whole). The promise covers the
whole update: ``update`` on an unfused gate; on a fused one the owner's kernel and its ``prepare`` and ``after``
hooks. It must follow from the owner's own state: a ring written once per matured forecast or outcome (the number
due on a bar is the gate's, not the module's) cannot be declared. The promise is checked,
not trusted, by tests/engine/test_transaction_rows.py: the whole sample through the gate, fused and unfused, in
both modes, every declared ring compared after each bar with a copy taken before it.

An owner that rebinds a state attribute (a reset, a reallocation, ``load_state_dict``) leaves the arena: every save
first checks that the owner list is the same objects and that each attribute is still the view it was given, and
rebuilds the arena when one is not, so a copy never misses a state array. The check is one generated Python
function per layout, ``cur[i] is o_i and ... and o_i.key is v_j and ...`` — the conjunction of exactly those
identities, one term per owner and per array, in bytecode (a third of the time of an ``attrgetter`` pass per
owner). An owner whose ``state_dict()`` holds a key that is neither an attribute nor one of the constants below
is saved with ``state_dict()`` as before.
"""

from __future__ import annotations

import copy
import keyword
from collections.abc import Callable
from concurrent.futures import Future
from operator import index
from typing import Any

import numpy as np

__all__ = ["StateArena"]

#: state_dict keys that are not attributes and do not change while the gate runs (module name and parameters,
#: the feature engine's timeframe and layout version)
_CONSTANT = ("name", "params", "timeframe", "version")
#: values of non-array state kept as they are (immutable, or a Future that is never mutated by the gate)
_AS_IS = (type(None), bool, int, float, str, np.generic, Future)
#: the exact types of values kept as they are without a look at each (a fast path of :func:`_kept`)
_KEPT_TYPES = frozenset((type(None), bool, int, float, str, Future))
#: byte alignment of each array in the buffer (the largest item size of a kept dtype: complex128)
_ALIGN = 16


class _Owner:
    """One owner's layout in the arena."""

    __slots__ = ("obj", "arrays", "attrs", "consts", "views", "slots", "fallback", "rings", "ring", "span")

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
        declared = getattr(obj, "tx_rings", ())
        if isinstance(declared, str):  # one key given bare: a key, not the substrings of one
            declared = (declared,)
        #: the owner's ring arrays (declared, state arrays of at least one dimension), laid out after the rest
        self.rings = [k for k in self.arrays if k in declared and getattr(obj, k).ndim >= 1]
        if self.fallback or not callable(getattr(obj, "tx_rows", None)):
            self.rings = []
        self.views: tuple[Any, ...] = ()
        self.slots: list[tuple[str, np.dtype, int, int, tuple[int, ...]]] = []  # key, dtype, byte offset, bytes, shape
        self.ring: dict[str, tuple[int, int, int]] = {}  # ring key: byte offset, bytes per row, rows
        self.span = (0, 0)  # the byte range of the owner's rings


_MISSING = object()


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _ref(i: int, k: str) -> str:
    # ASCII only: the compiler folds other identifiers (NFKC), so ``o.k`` could read another attribute than k
    return f"o{i}.{k}" if k.isascii() and k.isidentifier() and not keyword.iskeyword(k) else f"getattr(o{i}, {k!r})"


def _generated(owners: list[_Owner]) -> tuple[Callable[[list[Any]], bool], Callable[[], tuple[Any, ...]]]:
    """Two functions generated for one layout: ``intact(cur)``, True exactly when ``cur`` (the current owner list)
    is the laid-out owners (same objects, same order) and every laid-out attribute is still its view (see the module
    docstring); ``rest()``, the non-array attribute values of the owners that are not saved by ``state_dict()``, in
    layout order, as one flat tuple."""
    terms = [f"len(cur) == {len(owners)}"]
    rest: list[str] = []
    objs: list[Any] = []
    views: list[Any] = []
    for i, ow in enumerate(owners):
        terms.append(f"cur[{i}] is o[{i}]")
        objs.append(ow.obj)
        if ow.fallback:
            continue
        for k, v in zip(ow.arrays, ow.views, strict=True):
            terms.append(f"{_ref(i, k)} is v{len(views)}")
            views.append(v)
        rest += [_ref(i, k) for k in ow.attrs]
    names = [f"o{i}" for i in range(len(owners))]
    vnames = [f"v{j}" for j in range(len(views))]
    src = "def make(o, v):\n"
    if names:
        src += f"    {', '.join(names)}, = o\n"
    if vnames:
        src += f"    {', '.join(vnames)}, = v\n"
    src += "    def intact(cur):\n        return " + " and ".join(terms) + "\n"
    src += "    def rest():\n        return (" + "".join(f"{r}, " for r in rest) + ")\n"
    src += "    return intact, rest\n"
    ns: dict[str, Any] = {}
    exec(compile(src, "<fxgate.engine.transaction layout>", "exec"), ns)  # our own source, from the layout
    return ns["make"](tuple(objs), tuple(views))


def _kept(v: Any) -> Any:
    """A non-array state value as the copy keeps it: as it is when immutable, a future (anything with
    ``add_done_callback``) or of a type declaring ``state_copy_as_is`` (a scheduled module's split recompute:
    ``fxgate.modules._schedule.Parts``), else a deep copy."""
    as_is = isinstance(v, _AS_IS) or hasattr(v, "add_done_callback") or getattr(type(v), "state_copy_as_is", False)
    return v if as_is else copy.deepcopy(v)


class StateArena:
    """The transaction copy of the objects ``owners()`` returns (each with ``state_dict``/``load_state_dict``; asked
    on every save, so an owner added or removed later is noticed): see the module docstring. ``save()`` before a
    bar's updates; ``restore(saved)`` if one of them raised."""

    def __init__(self, owners: Callable[[], list[Any]]) -> None:
        self._objs_of = owners
        self._owners: list[_Owner] = []
        self._ringed: list[_Owner] = []
        self._buf = np.empty(0, dtype=np.uint8)
        self._twin = np.empty(0, dtype=np.uint8)
        self._mb, self._mt = memoryview(self._buf), memoryview(self._twin)
        self._plain = 0  # bytes of the arrays that are not rings (the head of the buffer, copied whole)
        self._intact: Callable[[list[Any]], bool] = lambda cur: False
        self._rest: Callable[[], tuple[Any, ...]] = tuple
        self._fallbacks: list[_Owner] = []
        self.builds = 0  # how many times the arena was laid out (tests: a rebind lays it out again)

    def _build(self) -> None:
        owners = [_Owner(o) for o in self._objs_of()]
        off = 0
        for ring in (False, True):  # the plain arrays first, then each owner's rings side by side
            for ow in owners:
                if ow.fallback:
                    continue
                start = off
                for k in ow.arrays:
                    if (k in ow.rings) != ring:
                        continue
                    a = getattr(ow.obj, k)
                    ow.slots.append((k, a.dtype, off, a.nbytes, a.shape))
                    if ring:
                        ow.ring[k] = (off, a.nbytes // a.shape[0] if a.shape[0] else 0, a.shape[0])
                    off = _aligned(off + a.nbytes)
                if ring:
                    ow.span = (start, off)
            if not ring:
                self._plain = off
        buf = np.zeros(off, dtype=np.uint8)
        for ow in owners:
            for k, dt, o, n, shape in ow.slots:
                view = buf[o : o + n].view(dt).reshape(shape)
                view[...] = getattr(ow.obj, k)
                setattr(ow.obj, k, view)
            ow.views = tuple(getattr(ow.obj, k) for k in ow.arrays) if not ow.fallback else ()
        self._owners, self._buf = owners, buf
        self._ringed = [ow for ow in owners if ow.ring]
        self._twin = np.empty_like(buf)
        self._mb, self._mt = memoryview(buf), memoryview(self._twin)  # slice copies at a third of numpy's cost
        self._intact, self._rest = _generated(owners)
        self._fallbacks = [ow for ow in owners if ow.fallback]
        self.builds += 1

    def save(self) -> tuple[Any, ...]:
        """The state now: (buffer copy, the byte ranges of the rings copied, the non-array values, the
        ``state_dict()`` of each owner saved that way). The copy lives in a buffer the arena reuses: one save is
        outstanding at a time (the gate's lock holds one bar's updates), and the next save overwrites it."""
        if not self._intact(self._objs_of()):
            self._build()
        buf, twin = self._mb, self._mt
        p = self._plain
        twin[:p] = buf[:p]
        rows: list[tuple[int, int]] = []
        for ow in self._ringed:
            got: list[tuple[int, int]] | None = None
            try:  # everything read from tx_rows() is inside: a generator raising, a bad pair, key or row
                declared = ow.obj.tx_rows()
                if declared is not None:
                    ring = ow.ring
                    got = []
                    for k, r in declared:
                        o, step, n = ring.get(k, (0, 0, -1))
                        if isinstance(r, bool) or not 0 <= r < n:
                            got = None  # not a row of a ring: no promise
                            break
                        a = o + index(r) * step  # a float row raises here, not in the copy below
                        got.append((a, a + step))
            except Exception:  # noqa: BLE001 - a module that cannot say which rows it writes: copy all its rings
                got = None
            if got is not None:
                for a, b in got:
                    twin[a:b] = buf[a:b]
                rows += got
                continue
            a, b = ow.span
            twin[a:b] = buf[a:b]
            rows.append(ow.span)
        vals = self._rest()
        if not _KEPT_TYPES.issuperset(map(type, vals)):
            vals = tuple(map(_kept, vals))
        return (self._twin, tuple(rows), vals, tuple(ow.obj.state_dict() for ow in self._fallbacks))

    def restore(self, saved: tuple[Any, ...]) -> None:
        """Put every owner back to the saved state (through its ``load_state_dict``); the next save lays the arena
        out again."""
        twin, rows, vals, whole = saved
        image = self._buf.copy()  # the rings as the update left them: written in the declared rows only
        p = self._plain
        image[:p] = twin[:p]
        for a, b in rows:
            image[a:b] = twin[a:b]
        at = 0
        fallback = iter(whole)
        for ow in self._owners:
            if ow.fallback:
                ow.obj.load_state_dict(next(fallback))
                continue
            st: dict[str, Any] = dict(ow.consts)
            st.update(zip(ow.attrs, vals[at : at + len(ow.attrs)], strict=True))
            at += len(ow.attrs)
            for k, dt, o, n, shape in ow.slots:
                st[k] = image[o : o + n].view(dt).reshape(shape).copy()
            ow.obj.load_state_dict(st)
        self._owners = []  # laid out again on the next save (load_state_dict rebinds the attributes)
        self._intact = lambda cur: False
