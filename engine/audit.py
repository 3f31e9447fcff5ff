"""The audit log: every accepted bar's Decision, one hash-chained JSON line each, fsynced, rotated by size.

A directory of files ``audit-000001.jsonl``, ``audit-000002.jsonl``, ... Each line is one compact, ASCII JSON
object ending in ``\\n``::

    {"seq": 17, "prev": "<sha256 hex>", "symbol": "EURUSD", "decision": {<Decision.to_dict()>}, "bar": {...}}

``bar`` (optional: :meth:`AuditLog.append` with ``bar=``) is the accepted bar itself: ``ts`` (int ns), ``open``,
``high``, ``low``, ``close``, ``volume``, ``spread`` (null when the bar had none). With it the log is a write-ahead
log: the server restores a symbol's snapshot and re-feeds the logged bars after it (:func:`read_bars`), so a crash
between the append and the next snapshot loses no accepted bar.

``seq`` counts lines from 1 across all files; ``prev`` is the sha256 of the previous line's bytes (its ``\\n``
excluded; :data:`GENESIS` for line 1), so the chain runs across files too. A deleted, reordered, duplicated or edited
line breaks either the sequence or the chain; :func:`fxgate.engine.audit_verify.verify` (``fxgate audit verify``)
finds it. A chain alone cannot protect its own newest line (an edit of the last line, or removal of the last lines,
leaves a shorter valid chain); an anchor (a line's seq and sha256, :attr:`AuditLog.head`, recorded elsewhere) does.

Durability. :meth:`AuditLog.append` returns only after the line was written to the file (one ``write`` of the whole
line on an ``O_APPEND`` descriptor) and, every ``fsync_every`` appends, fsynced; a caller answers its client only
after it returns. A process killed at any point (``kill -9``) loses nothing that was written: the kernel holds it. A
power cut loses at most the appends since the last fsync. A kill during the ``write`` itself can leave a torn last
line (no ``\\n``); the next :class:`AuditLog` on the directory cuts it off, saves the cut bytes beside the file
(``audit-000003.jsonl.torn-<offset>``), records it in :attr:`AuditLog.repair` and warns (:class:`AuditRepairWarning`),
so that a torn tail is never silently joined to the next line. Damage anywhere else is not a crash artefact: opening
refuses with the file and line and the fix.

Idempotent resend: :meth:`AuditLog.last_ts` is the newest logged bar time per symbol, read back from the files on
open; a bar at or before it was logged already (the server skips it), and :meth:`AuditLog.append` refuses it
(:class:`AuditRefused`), as it refuses a bar the gate refused (first veto ``input`` or ``internal``: state untouched,
so not an accepted bar). One writer per directory (an ``flock`` on ``audit.lock``); appends are thread-safe.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import threading
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fxgate.engine.core.atomic import write_bytes
from fxgate.engine.core.decision import Decision
from fxgate.engine.core.errors import FxgateError

__all__ = [
    "BAR_FIELDS",
    "BAR_KEY",
    "GENESIS",
    "LINE_KEYS",
    "REFUSED_VETOES",
    "AuditError",
    "AuditLog",
    "AuditRefused",
    "AuditRepairWarning",
    "Entry",
    "Repair",
    "audit_files",
    "file_name",
    "iso",
    "line_hash",
    "read_bars",
    "read_line",
]

#: ``prev`` of the first line of a log
GENESIS = "0" * 64
#: the keys of every line, in the order they are written; a line may end with :data:`BAR_KEY` too
LINE_KEYS = ("seq", "prev", "symbol", "decision")
BAR_KEY = "bar"
#: the fields of a logged bar, in the order they are written
BAR_FIELDS = ("ts", "open", "high", "low", "close", "volume", "spread")
#: first vetoes of bars the gate refused (state untouched): not accepted bars, never logged
REFUSED_VETOES = frozenset({"input", "internal"})
FILE_RE = re.compile(r"^audit-(\d{6})\.jsonl$")
LOCK_NAME = "audit.lock"
DEFAULT_MAX_BYTES = 64 * 2**20


class AuditError(FxgateError):
    """The audit directory cannot be opened for appending (damaged beyond a torn tail, or another writer holds it)."""


class AuditRefused(FxgateError, ValueError):
    """An append the log refuses; ``kind`` is ``"duplicate"``, ``"out_of_order"``, ``"refused_bar"`` or ``"type"``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class AuditRepairWarning(UserWarning):
    """Opening the log cut a torn last line (a crash mid-write) off the newest file."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One appended line: where it went and its sha256 (an anchor for ``fxgate audit verify --anchor``)."""

    seq: int
    symbol: str
    ts: int
    sha256: str
    path: Path
    offset: int = 0  # where the line starts in ``path`` (read it back: :func:`read_line`)
    length: int = 0  # its bytes, the newline included


@dataclass(frozen=True, slots=True)
class Repair:
    """A torn tail cut off on open: ``dropped`` bytes from ``offset`` of ``path``, saved to ``saved_to``."""

    path: Path
    offset: int
    dropped: int
    saved_to: Path

    def __str__(self) -> str:
        return (
            f"{self.path}: cut a torn last line ({self.dropped} bytes without a newline at byte {self.offset}, "
            f"left by a crash mid-write) and saved it to {self.saved_to.name}; every complete line is kept"
        )


def file_name(n: int) -> str:
    return f"audit-{n:06d}.jsonl"


def audit_files(directory: Path) -> list[tuple[int, Path]]:
    """The log's files in ``directory``, oldest first, as (number, path)."""
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := FILE_RE.match(p.name)) and p.is_file()]
    return sorted(found)


def line_hash(line: bytes) -> str:
    """sha256 hex of one line's bytes, its trailing newline excluded (what the next line's ``prev`` holds)."""
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def iso(ts: int) -> str:
    """A bar time (int ns UTC) as ISO-8601, for messages."""
    return datetime.fromtimestamp(ts // 10**9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _positive_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"AuditLog {name} = {value!r}: must be an integer >= {minimum}")
    return value


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AuditLog:
    """Append-only, hash-chained JSONL of accepted Decisions in ``directory`` (created if missing).

    ``fsync_every``: fsync after every that many appends (1: each; a power cut loses at most ``fsync_every - 1``).
    ``max_bytes``: start a new file before a line would take the current one past this size. ``keep``: how many
    files to keep (the oldest beyond it are deleted on rotation; None keeps all). Retention forgets the deleted
    lines: :meth:`last_ts` knows only what the kept files hold.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        fsync_every: int = 1,
        max_bytes: int = DEFAULT_MAX_BYTES,
        keep: int | None = None,
    ) -> None:
        self.fsync_every = _positive_int("fsync_every", fsync_every, 1)
        self.max_bytes = _positive_int("max_bytes", max_bytes, 1024)
        self.keep = None if keep is None else _positive_int("keep", keep, 1)
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._mutex = threading.Lock()
        self._fd: int | None = None
        self._lock_fd = self._take_lock()
        self.repair: Repair | None = None
        self._seq, self._head = 0, GENESIS
        self._last_ts: dict[str, int] = {}
        self._unsynced = 0
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # -- open: read back, repair a torn tail -------------------------------------------------------------------
    def _take_lock(self) -> int:
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AuditError(
                f"{self.directory}: the audit log is open for appending by another process (pid {holder}). "
                "Fix: one writer per directory; stop the other one or give this one its own directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd

    def _open(self) -> None:
        files = audit_files(self.directory)
        if not files:
            self._start_file(1)
            return
        for i, (_n, path) in enumerate(files):
            self._read_back(path, newest=i == len(files) - 1)
        self._number, self._path = files[-1]
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND)
        self._size = os.fstat(self._fd).st_size

    def _read_back(self, path: Path, newest: bool) -> None:
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            if not newest:
                lineno = data.count(b"\n") + 1
                raise AuditError(
                    f"{path}:{lineno}: a line without a newline in a file that is not the newest: "
                    "not a crash artefact. Fix: run `fxgate audit verify` on the directory; move the log aside to "
                    "start a new one"
                )
            self._cut_torn_tail(path, data, end)
        for lineno, raw in enumerate(data[:end].splitlines(), 1):
            try:
                obj = json.loads(raw)
                seq, symbol, ts = obj["seq"], obj["symbol"], obj["decision"]["ts"]
                if not (isinstance(seq, int) and isinstance(symbol, str) and isinstance(ts, int)):
                    raise TypeError("seq, symbol or decision.ts of the wrong type")
            except (ValueError, KeyError, TypeError) as exc:
                raise AuditError(
                    f"{path}:{lineno}: not an audit line ({exc}). Fix: run `fxgate audit verify` on the directory "
                    "to see the damage; move the log aside to start a new one"
                ) from None
            self._seq, self._head = seq, line_hash(raw)
            if ts > self._last_ts.get(symbol, -1):
                self._last_ts[symbol] = ts

    def _cut_torn_tail(self, path: Path, data: bytes, end: int) -> None:
        saved, k = path.with_name(f"{path.name}.torn-{end}"), 1
        while saved.exists():  # a second crash at the same offset keeps the first one's evidence
            saved, k = path.with_name(f"{path.name}.torn-{end}.{k}"), k + 1
        write_bytes(saved, data[end:])  # the evidence first, so that a crash here loses nothing
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, end)
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(self.directory)
        self.repair = Repair(path, end, len(data) - end, saved)
        warnings.warn(AuditRepairWarning(str(self.repair)), stacklevel=5)

    def _start_file(self, number: int) -> None:
        if self._fd is not None:
            os.fsync(self._fd)  # the old file is complete before the new one exists
            os.close(self._fd)
            self._fd, self._unsynced = None, 0
        self._number, self._path = number, self.directory / file_name(number)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        self._size = 0
        _fsync_dir(self.directory)  # the new name survives a power cut
        if self.keep is not None:
            for n, old in audit_files(self.directory)[: -self.keep]:
                if n < number:
                    old.unlink()

    # -- append ------------------------------------------------------------------------------------------------
    def append(self, decision: Decision, bar: Any = None, *, as_dict: dict[str, Any] | None = None) -> Entry:
        """Log one accepted bar's Decision (and, given ``bar``, the bar: a :class:`~fxgate.engine.core.bars.Bar`
        whose ``ts`` is the Decision's); return after it is written (and fsynced when due). ``as_dict``: the
        caller's ``decision.to_dict()``, when it has one already (the server sends the same dict as its answer).

        Raises :class:`AuditRefused` for a bar already logged or older than the symbol's last (a resend: skip it
        before calling), or one the gate refused; nothing is written then."""
        if not isinstance(decision, Decision):
            raise AuditRefused("type", f"AuditLog.append takes a Decision, got {type(decision).__name__}")
        d = decision.to_dict() if as_dict is None else as_dict
        symbol, ts = d["symbol"], d["ts"]
        if d["first_veto"] in REFUSED_VETOES:
            raise AuditRefused(
                "refused_bar",
                f"{symbol} bar at {ts}: the gate refused it (first veto {d['first_veto']!r}; state untouched), so it "
                "is not an accepted bar and is not logged. Fix: log only decisions of bars the gate accepted",
            )
        if not symbol or not isinstance(symbol, str) or isinstance(ts, bool) or not isinstance(ts, int):
            raise AuditRefused(
                "type", f"Decision symbol {symbol!r} / ts {ts!r}: need a non-empty symbol and int ns. Fix: set it"
            )
        line_obj: dict[str, Any] = {"seq": 0, "prev": "", "symbol": symbol, "decision": d}
        if bar is not None:
            if getattr(bar, "ts", None) != ts:
                raise AuditRefused("type", f"bar ts {getattr(bar, 'ts', None)!r} is not the Decision's ts {ts}")
            line_obj[BAR_KEY] = {k: getattr(bar, k) for k in BAR_FIELDS}
        with self._mutex:
            if self._fd is None:
                raise AuditError(f"{self.directory}: the audit log is closed (or broken by a failed write); reopen it")
            last = self._last_ts.get(symbol)
            if last is not None and ts <= last:
                kind = "duplicate" if ts == last else "out_of_order"
                raise AuditRefused(
                    kind,
                    f"{symbol} bar at {ts} ({iso(ts)}) is {'already logged' if ts == last else 'older than'} the "
                    f"last logged {symbol} bar ({last}, {iso(last)}): a resend. Fix: skip bars with "
                    f"ts <= AuditLog.last_ts({symbol!r})",
                )
            line_obj["seq"], line_obj["prev"] = self._seq + 1, self._head
            line = json.dumps(
                line_obj,
                separators=(",", ":"),
                allow_nan=False,
            ).encode("ascii")
            if self._size and self._size + len(line) + 1 > self.max_bytes:
                self._start_file(self._number + 1)
            offset = self._size
            self._write(line + b"\n")
            self._seq, self._head, self._last_ts[symbol] = self._seq + 1, line_hash(line), ts
            self._unsynced += 1
            if self._unsynced >= self.fsync_every:
                os.fsync(self._fd)
                self._unsynced = 0
            return Entry(self._seq, symbol, ts, self._head, self._path, offset, len(line) + 1)

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        view, start = memoryview(data), self._size
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except BaseException:
            # a full disk mid-line: take the partial line back, so the next append never joins it
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                os.close(self._fd)
                self._fd = None  # broken: reopening repairs the torn tail
            raise
        self._size = start + len(data)

    # -- read ----------------------------------------------------------------------------------------------------
    def last_ts(self, symbol: str) -> int | None:
        """The newest logged bar time (int ns) of ``symbol``; None if none is logged."""
        with self._mutex:
            return self._last_ts.get(symbol)

    def symbols(self) -> dict[str, int]:
        """Every logged symbol and its newest bar time."""
        with self._mutex:
            return dict(self._last_ts)

    @property
    def seq(self) -> int:
        """The seq of the last line (0 for an empty log)."""
        return self._seq

    @property
    def head(self) -> str:
        """sha256 of the last line (:data:`GENESIS` for an empty log): ``fxgate audit verify --anchor SEQ:HEAD``."""
        return self._head

    @property
    def path(self) -> Path:
        """The file being appended to."""
        return self._path

    # -- lifetime ------------------------------------------------------------------------------------------------
    def sync(self) -> None:
        """fsync now (appends since the last fsync become durable against a power cut)."""
        with self._mutex:
            if self._fd is not None and self._unsynced:
                os.fsync(self._fd)
                self._unsynced = 0

    def close(self) -> None:
        """fsync, close the file and release the directory; idempotent."""
        with self._mutex:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # closing the descriptor releases the flock
                self._lock_fd = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AuditLog({str(self.directory)!r}, seq={self._seq}, file={self._path.name})"


def read_line(path: Path, offset: int, length: int) -> dict[str, Any]:
    """The audit line of ``length`` bytes at ``offset`` of ``path``, parsed (an :class:`Entry` says where)."""
    with open(path, "rb") as f:
        f.seek(offset)
        return json.loads(f.read(length))


def read_bars(directory: str | Path) -> list[tuple[str, dict[str, Any], Entry]]:
    """Every logged (symbol, bar, :class:`Entry`) in log order, from the lines that carry their bar. Reads complete
    lines only (a torn tail is the next :class:`AuditLog`'s to repair); for the server's write-ahead re-feed and its
    memory of recent bars (exact resends)."""
    out = []
    d = Path(directory)
    if not d.is_dir():
        return out
    for _n, path in audit_files(d):
        data = path.read_bytes()
        pos, end = 0, data.rfind(b"\n") + 1
        while pos < end:
            nl = data.index(b"\n", pos)
            raw = data[pos:nl]
            obj = json.loads(raw)
            if BAR_KEY in obj:
                bar = obj[BAR_KEY]
                entry = Entry(obj["seq"], obj["symbol"], bar["ts"], line_hash(raw), path, pos, nl + 1 - pos)
                out.append((obj["symbol"], bar, entry))
            pos = nl + 1
    return out
