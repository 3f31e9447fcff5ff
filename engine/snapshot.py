"""Gate snapshot files: everything a :class:`~fxgate.engine.gate.Gate` needs to continue exactly where it stopped,
and the identity that state is valid for.

A snapshot holds the gate's *state* (the feature engine's rings, every Layer-4 module's ``state_dict``, the pending
candidate outcomes and per-bar forecasts, the LLM judge's answers still waiting for their bar to mature, the intake's
last accepted time and far-gap run, the accepted and refused bar counts) and its *identity*: the fxgate version, the
config hash, the model hashes (``Gate.model_hashes``: the Layer-1 bundle and the GGUF files), the timeframe, the
symbol and the Layer-4 module names in order. Restoring into a gate of another identity is refused
(:class:`SnapshotMismatch`), and so is a file that is not whole (:class:`SnapshotCorrupt`). The LLM runtimes are not
part of it: their completed answers already live on disk in the verdict cache (``[llm] cache``, SQLite), which a
restored gate reopens like any other.

File layout, format version 1 (integers little-endian)::

    offset  size  content
    0       16    magic  b"FXGATE-SNAPSHOT\\n"
    16      32    sha256 of every byte after it (offset 48 to the end)
    48      4     format version (u32)
    52      4     reserved (0)
    56      8     header length H (u64)
    64      8     payload length P (u64)
    72      H     header: UTF-8 JSON: identity, bar count, last ts, the array table, the state tree
    72+H    P     payload: the arrays' raw bytes, C order, each at an 8-byte aligned offset

Loading a snapshot never runs code: nothing is unpickled. The header is parsed by :func:`json.loads` (plain data
only) and decoded through a closed set of tags into dict, list, tuple, int, float, str, bool and None; arrays are
rebuilt with :func:`numpy.frombuffer` from a dtype on a whitelist (bool, integers, floats, complex — object and
structured dtypes are refused when writing and when reading). The checksum is verified before the header is parsed,
so a truncated file or a flipped byte is reported as such, never half-loaded. Files are written whole or not at all
(:func:`fxgate.engine.core.atomic.write_bytes`: temporary file, fsync, rename, fsync of the directory).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fxgate.engine.core.atomic import write_bytes
from fxgate.engine.core.errors import FxgateError

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "SUFFIX",
    "Identity",
    "Snapshot",
    "SnapshotError",
    "SnapshotCorrupt",
    "SnapshotMismatch",
    "write",
    "read",
    "check",
]

MAGIC = b"FXGATE-SNAPSHOT\n"
#: the layout this module writes; a file of another version is refused (its reader is another fxgate)
FORMAT_VERSION = 1
#: the file name ending snapshots get from :class:`~fxgate.engine.pool.GatePool`
SUFFIX = ".fxgate-snapshot"
_DIGEST = 32
_FIXED = struct.Struct("<IIQQ")  # format version, reserved, header length, payload length
_PREFIX = len(MAGIC) + _DIGEST + _FIXED.size
_ALIGN = 8
#: array element kinds a snapshot may hold: bool, signed and unsigned integers, floats, complex
_KINDS = frozenset("biufc")


class SnapshotError(FxgateError):
    """A snapshot that cannot be restored. ``field`` names what is wrong (``"checksum"``, ``"config_hash"``, …)."""

    def __init__(self, path: str | Path, field: str, problem: str, fix: str) -> None:
        self.path, self.field = str(path), field
        super().__init__(f"{path}: {problem}. Fix: {fix}")


class SnapshotCorrupt(SnapshotError):
    """Not a whole fxgate snapshot: wrong magic, truncated, a checksum mismatch, an unreadable header or state."""


class SnapshotMismatch(SnapshotError):
    """A whole snapshot written by a gate of another identity (config, models, timeframe, symbol, modules, version)."""


@dataclass(frozen=True, slots=True)
class Identity:
    """What a snapshot's state is valid for: restoring it anywhere else would continue the wrong gate."""

    fxgate_version: str
    config_hash: str
    model_hashes: dict[str, str]
    timeframe: str
    symbol: str
    modules: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "fxgate_version": self.fxgate_version,
            "config_hash": self.config_hash,
            "model_hashes": dict(sorted(self.model_hashes.items())),
            "timeframe": self.timeframe,
            "symbol": self.symbol,
            "modules": list(self.modules),
        }


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A verified snapshot file: its identity, the gate's state tree, and where the feed stood."""

    path: str
    identity: Identity
    bars: int  # accepted bars when it was taken
    last_ts: int | None  # the last accepted bar's time (ns), None before the first
    state: dict[str, Any]


# -- the state tree <-> JSON + arrays -----------------------------------------------------------------------------
def _encode(x: Any, arrays: list[np.ndarray], where: str) -> Any:
    """JSON-ready form of ``x``; arrays (and numpy scalars, as 0-d arrays) go to ``arrays``, referenced by index.
    Every container other than a list is a one-key tagged object, so a plain dict never looks like a tag."""
    t = type(x)
    if x is None or t in (bool, int, str, float):  # exact types: np.float64 is a float subclass, kept as numpy
        return x
    if isinstance(x, np.ndarray | np.generic):
        a = np.asarray(x)
        if a.dtype.kind not in _KINDS or a.dtype.fields is not None:
            raise TypeError(f"snapshot state {where}: arrays of dtype {a.dtype} cannot be stored (numbers only)")
        arrays.append(a)
        return {"$s" if isinstance(x, np.generic) else "$a": len(arrays) - 1}
    if t is list:
        return [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(x)]
    if t is tuple:
        return {"$t": [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(x)]}
    if t is dict:
        return {"$d": [[_encode(k, arrays, f"{where} key"), _encode(v, arrays, f"{where}.{k}")] for k, v in x.items()]}
    raise TypeError(
        f"snapshot state {where}: a {t.__name__} cannot be stored; a state_dict may hold numpy arrays and "
        "numbers, strings, None, lists, tuples and dicts of them"
    )


def _decode(x: Any, arrays: list[np.ndarray]) -> Any:
    if x is None or type(x) in (bool, int, str, float):
        return x
    if type(x) is list:
        return [_decode(v, arrays) for v in x]
    if type(x) is dict and len(x) == 1:
        ((tag, v),) = x.items()
        if tag == "$t" and type(v) is list:
            return tuple(_decode(e, arrays) for e in v)
        if tag == "$d" and type(v) is list and all(type(kv) is list and len(kv) == 2 for kv in v):
            return {_decode(k, arrays): _decode(e, arrays) for k, e in v}
        if tag in ("$a", "$s") and type(v) is int and 0 <= v < len(arrays):
            return arrays[v].copy() if tag == "$a" else arrays[v][()]
    raise ValueError(f"unreadable state entry {str(x)[:80]!r}")


def _dtype(s: Any) -> np.dtype:
    if not isinstance(s, str):
        raise ValueError(f"array dtype {s!r} is not a dtype string")
    dt = np.dtype(s)  # a plain type string: numpy parses it, no object is built from it
    if dt.kind not in _KINDS or dt.fields is not None:
        raise ValueError(f"array dtype {s!r} is not a numeric dtype")
    return dt


# -- writing and reading ------------------------------------------------------------------------------------------
def encode(identity: Identity, bars: int, last_ts: int | None, state: dict[str, Any]) -> bytes:
    """The bytes of a snapshot file (layout: the module docstring)."""
    arrays: list[np.ndarray] = []
    tree = _encode(state, arrays, "state")
    table, chunks, off = [], [], 0
    for a in arrays:
        raw = np.ascontiguousarray(a).tobytes()
        table.append([a.dtype.str, list(a.shape), off, len(raw)])
        pad = -len(raw) % _ALIGN
        chunks.append(raw + b"\0" * pad)
        off += len(raw) + pad
    header = {
        "format": "fxgate-snapshot",
        "identity": identity.to_dict(),
        "bars": int(bars),
        "last_ts": None if last_ts is None else int(last_ts),
        "arrays": table,
        "state": tree,
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    payload = b"".join(chunks)
    body = _FIXED.pack(FORMAT_VERSION, 0, len(head), len(payload)) + head + payload
    return MAGIC + hashlib.sha256(body).digest() + body


def write(path: str | Path, identity: Identity, bars: int, last_ts: int | None, state: dict[str, Any]) -> Path:
    """Write a snapshot to ``path`` whole or not at all (temporary file, fsync, rename, fsync of the directory)."""
    return write_bytes(path, encode(identity, bars, last_ts, state))


def read(path: str | Path) -> Snapshot:
    """Read and verify a snapshot file (magic, length, checksum, format version, header); raises
    :class:`SnapshotCorrupt` naming what is wrong."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise SnapshotCorrupt(p, "file", f"cannot read the snapshot ({exc.strerror or exc})", "check the path") from exc
    return decode(data, p)


def decode(data: bytes, path: str | Path) -> Snapshot:
    """:func:`read` on bytes already in memory (``path`` names them in errors)."""
    again = "take a new snapshot, or start the gate fresh and warm it up from history (Gate.warm_up)"
    if not data.startswith(MAGIC):
        raise SnapshotCorrupt(path, "magic", "not an fxgate snapshot (its first bytes are not FXGATE-SNAPSHOT)", again)
    if len(data) < _PREFIX:
        raise SnapshotCorrupt(path, "truncated", f"truncated: {len(data)} bytes, shorter than the fixed header", again)
    version, _, hlen, plen = _FIXED.unpack_from(data, len(MAGIC) + _DIGEST)
    want = _PREFIX + hlen + plen
    if len(data) != want:
        what = "truncated" if len(data) < want else "has trailing bytes"
        raise SnapshotCorrupt(
            path,
            "truncated",
            f"{what}: {len(data)} bytes where its header announces {want} (cut short or appended to)",
            again,
        )
    if hashlib.sha256(memoryview(data)[len(MAGIC) + _DIGEST :]).digest() != data[len(MAGIC) : len(MAGIC) + _DIGEST]:
        raise SnapshotCorrupt(path, "checksum", "checksum mismatch: the file was changed after it was written", again)
    if version != FORMAT_VERSION:
        raise SnapshotMismatch(
            path,
            "format_version",
            f"snapshot format version {version}; this fxgate reads version {FORMAT_VERSION}",
            "restore it with the fxgate release that wrote it, or " + again,
        )
    try:
        h = json.loads(data[_PREFIX : _PREFIX + hlen].decode())
        base = _PREFIX + hlen
        arrays = []
        for dt, shape, off, n in h["arrays"]:
            d = _dtype(dt)
            if not (type(off) is int and type(n) is int and 0 <= off and off + n <= plen):
                raise ValueError(f"array at {off}+{n} lies outside the payload")
            shape = tuple(int(s) for s in shape)
            arrays.append(np.frombuffer(data, dtype=d, count=n // d.itemsize, offset=base + off).reshape(shape))
        i = h["identity"]
        ident = Identity(
            str(i["fxgate_version"]),
            str(i["config_hash"]),
            {str(k): str(v) for k, v in dict(i["model_hashes"]).items()},
            str(i["timeframe"]),
            str(i["symbol"]),
            tuple(str(m) for m in i["modules"]),
        )
        state = _decode(h["state"], arrays)
        if type(state) is not dict:
            raise ValueError("the state is not a table")
        last = h["last_ts"]
        return Snapshot(str(path), ident, int(h["bars"]), None if last is None else int(last), state)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise SnapshotCorrupt(path, "header", f"unreadable header ({type(exc).__name__}: {exc})", again) from exc


def check(snap: Snapshot, **expected: Any) -> None:
    """Refuse ``snap`` unless its identity equals ``expected`` in every field given (names: :class:`Identity`).
    The error lists every differing field; its ``field`` is the first of them."""
    have = snap.identity.to_dict()
    bad = []
    for k, want in expected.items():
        want = dict(sorted(want.items())) if isinstance(want, dict) else list(want) if isinstance(want, tuple) else want
        if have[k] != want:
            bad.append((k, have[k], want))
    if bad:
        lines = "; ".join(f"{k}: the snapshot's is {h!r}, this gate's is {w!r}" for k, h, w in bad)
        raise SnapshotMismatch(
            snap.path,
            bad[0][0],
            f"written by another gate ({lines})",
            "restore it with the config, models, timeframe and symbol that wrote it (a state is only valid for the "
            "gate that made it), or start fresh and warm up from history (Gate.warm_up)",
        )
