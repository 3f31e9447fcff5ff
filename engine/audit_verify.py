"""``fxgate audit verify``: check an audit log (:mod:`fxgate.engine.audit`) line by line and name the first problem.

Checks, in the order a reader meets them: the files are numbered without gaps; every line ends in a newline (a
torn last line is a crash mid-write, which reopening the log repairs); every line is a JSON object with exactly the
keys ``seq``, ``prev``, ``symbol``, ``decision``; ``seq`` counts up by one from 1 (a jump is a deleted line, or lines
out of order when the missing one comes later; a repeat is a duplicated line); ``prev`` is the sha256 of the line
before (else that line was edited); each decision validates against the committed
``engine/core/decision.schema.json`` (with jsonschema, a runtime dependency so that this check always runs) and
names the line's symbol; it is not a bar the gate refused; and each symbol's bar times strictly increase (an equal
time is a duplicate bar). An anchor (``--anchor SEQ:SHA256``, a line's hash recorded elsewhere, e.g. from
``AuditLog.head``) also protects the newest lines, which a hash chain alone cannot.

A log whose oldest file is not ``audit-000001.jsonl`` (older files removed by retention) is checked from its first
line on; that line's ``prev`` cannot be checked, and the report says so.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from fxgate.engine.audit import (
    BAR_FIELDS,
    BAR_KEY,
    GENESIS,
    LINE_KEYS,
    REFUSED_VETOES,
    audit_files,
    file_name,
    iso,
    line_hash,
)
from fxgate.engine.core.decision import schema

__all__ = ["AuditReport", "parse_anchor", "verify"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What :func:`verify` found. ``problem`` is the first one (None when the log is sound), ``where`` its
    ``file:line``."""

    directory: Path
    problem: str | None
    where: str | None
    lines: int
    files: tuple[str, ...]
    first_seq: int
    last_seq: int
    head: str
    symbols: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.problem is None

    def __str__(self) -> str:
        if not self.ok:
            return f"FAIL: {self.where}: {self.problem}" if self.where else f"FAIL: {self.directory}: {self.problem}"
        span = f"seq {self.first_seq}..{self.last_seq}" if self.lines else "empty"
        return (
            f"OK: {self.directory}: {self.lines} lines in {len(self.files)} file(s) ({span}), "
            f"{len(self.symbols)} symbol(s); head seq {self.last_seq} sha256 {self.head}"
        )


def parse_anchor(text: str) -> tuple[int, str]:
    """``"SEQ:SHA256"`` -> (seq, sha256); a ValueError naming the fix otherwise."""
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or int(seq) < 1 or not _HEX64.match(digest):
        raise ValueError(f"--anchor {text!r}: want SEQ:SHA256, e.g. 1042:{'0' * 64} (AuditLog.head and .seq)")
    return int(seq), digest


class _Problem(Exception):
    def __init__(self, where: str, problem: str) -> None:
        super().__init__(problem)
        self.where, self.problem = where, problem


def _lines(files: list[tuple[int, Path]]):
    """(location, raw bytes with their newline if any, is the very last line) for every line of the log."""
    for i, (_n, path) in enumerate(files):
        with path.open("rb") as f:
            raws = f.readlines()
        for k, raw in enumerate(raws, 1):
            yield f"{path}:{k}", raw, i == len(files) - 1 and k == len(raws)


def _find_seq(files: list[tuple[int, Path]], seq: int, after: str) -> str | None:
    """Where line ``seq`` sits after location ``after`` (a second pass, run only to explain a jump)."""
    seen = False
    for loc, raw, _last in _lines(files):
        if seen:
            try:
                if json.loads(raw).get("seq") == seq:
                    return loc
            except (ValueError, AttributeError):
                continue
        seen = seen or loc == after
    return None


class _Checker:
    def __init__(self, files: list[tuple[int, Path]], anchor: tuple[int, str] | None) -> None:
        self.files, self.anchor = files, anchor
        self.validator = jsonschema.Draft202012Validator(schema())
        self.seq, self.first_seq, self.head, self.lines = 0, 0, GENESIS, 0
        self.prev_loc, self.prev_raw = "", b""
        self.seq_at: dict[int, str] = {}
        self.last: dict[str, tuple[int, str]] = {}
        self.anchor_seen = False

    def run(self) -> None:
        for loc, raw, is_last in _lines(self.files):
            if not raw.endswith(b"\n"):
                if is_last:
                    raise _Problem(
                        loc,
                        f"torn last line ({len(raw)} bytes, no newline): a crash mid-write. Fix: open the log with "
                        "AuditLog (the server does on start), which cuts it off and saves it beside the file",
                    )
                raise _Problem(loc, "a line cut short (no newline) in a file that is not the newest: truncated")
            self.line(loc, raw)
        if self.anchor is not None and not self.anchor_seen:
            seq = self.anchor[0]
            where = "after the log's end" if seq > self.seq else "before the log's first line"
            raise _Problem(
                f"{self.files[-1][1]}" if self.files else "",
                f"anchor seq {seq} is {where} (seq {self.first_seq}..{self.seq}): "
                + ("lines were removed from the end" if seq > self.seq else "its file was removed"),
            )

    def line(self, loc: str, raw: bytes) -> None:
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            raise _Problem(loc, f"not JSON ({exc.msg} at column {exc.colno}): the line was damaged") from None
        if not isinstance(obj, dict) or tuple(obj) not in (LINE_KEYS, (*LINE_KEYS, BAR_KEY)):
            got = list(obj) if isinstance(obj, dict) else type(obj).__name__
            raise _Problem(
                loc, f"not an audit line: keys {got}, want {list(LINE_KEYS)} in that order (and optionally {BAR_KEY!r})"
            )
        seq, prev, symbol, d = (obj[k] for k in LINE_KEYS)
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise _Problem(loc, f"seq = {seq!r}: must be an integer >= 1")
        self.check_seq(loc, raw, seq)
        # the first line of a log whose older files were removed (retention) follows a line nobody can hash
        if (self.lines or self.files[0][0] == 1) and prev != self.head:
            if self.lines == 0:
                raise _Problem(loc, f"prev of the log's first line must be {GENESIS[:8]}… (the chain's start)")
            raise _Problem(
                self.prev_loc,
                f"line seq {self.seq} was changed after it was written: its sha256 {self.head[:12]}… is not the "
                f"prev {str(prev)[:12]}… that the next line ({loc}) recorded",
            )
        self.check_decision(loc, symbol, d)
        if BAR_KEY in obj:
            self.check_bar(loc, obj[BAR_KEY], d)
        self.lines += 1
        self.first_seq = self.first_seq or seq
        self.seq, self.head, self.prev_loc, self.prev_raw = seq, line_hash(raw), loc, raw
        self.seq_at[seq] = loc
        if self.anchor is not None and self.anchor[0] == seq:
            self.anchor_seen = True
            if self.anchor[1] != self.head:
                raise _Problem(loc, f"seq {seq} does not match the anchor: sha256 {self.head}, anchor {self.anchor[1]}")

    def check_seq(self, loc: str, raw: bytes, seq: int) -> None:
        want = self.seq + 1 if self.lines else (1 if self.files[0][0] == 1 else seq)
        if seq == want:
            return
        if seq < want:
            if seq == self.seq and raw == self.prev_raw:
                raise _Problem(loc, f"duplicate line: a copy of the line before ({self.prev_loc}, seq {seq})")
            first = self.seq_at.get(seq)
            raise _Problem(
                loc,
                f"seq {seq} again (first at {first}), want {want}: a duplicated line, or lines out of order"
                if first
                else f"seq {seq}, want {want}: lines out of order",
            )
        later = _find_seq(self.files, want, loc)
        if later is not None:
            raise _Problem(loc, f"seq {seq} before seq {want} (which is at {later}): lines out of order")
        missing = f"seq {want}" if seq == want + 1 else f"seq {want}..{seq - 1}"
        raise _Problem(loc, f"{missing} missing (seq jumps from {want - 1} to {seq}): line(s) deleted")

    def check_bar(self, loc: str, bar: Any, d: dict[str, Any]) -> None:
        if not isinstance(bar, dict) or tuple(bar) != BAR_FIELDS:
            got = list(bar) if isinstance(bar, dict) else type(bar).__name__
            raise _Problem(loc, f"bar: keys {got}, want {list(BAR_FIELDS)} in that order")
        if bar["ts"] != d["ts"]:
            raise _Problem(loc, f"bar ts {bar['ts']!r} is not the decision's ts {d['ts']}")
        for k in BAR_FIELDS[1:]:
            v = bar[k]
            if (v is None and k == "spread") or (isinstance(v, int | float) and not isinstance(v, bool)):
                continue
            raise _Problem(loc, f"bar {k} = {v!r}: must be a number" + (" or null" if k == "spread" else ""))

    def check_decision(self, loc: str, symbol: Any, d: Any) -> None:
        error = jsonschema.exceptions.best_match(self.validator.iter_errors(d))
        if error is not None:
            at = "/".join(str(p) for p in error.absolute_path) or "(top)"
            raise _Problem(loc, f"decision does not match engine/core/decision.schema.json at {at}: {error.message}")
        if symbol != d["symbol"]:
            raise _Problem(loc, f"symbol {symbol!r} but the decision's symbol is {d['symbol']!r}")
        if d["first_veto"] in REFUSED_VETOES:
            raise _Problem(loc, f"a bar the gate refused (first veto {d['first_veto']!r}) is logged as accepted")
        ts = d["ts"]
        if symbol in self.last:
            last, where = self.last[symbol]
            if ts == last:
                raise _Problem(loc, f"duplicate bar: {symbol} {ts} ({iso(ts)}) is already logged at {where}")
            if ts < last:
                raise _Problem(
                    loc, f"{symbol} bar {ts} ({iso(ts)}) is older than the one logged at {where} ({iso(last)})"
                )
        self.last[symbol] = (ts, loc)


def verify(directory: str | Path, *, anchor: tuple[int, str] | None = None) -> AuditReport:
    """Check the audit log in ``directory``; the report's ``problem`` is the first one found (None: sound)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(2, "no such directory (the audit log's directory)", str(directory))
    files = audit_files(directory)
    names = tuple(p.name for _n, p in files)
    c = _Checker(files, anchor)
    notes = [f"a torn tail cut off on an earlier open is saved in {p.name}" for p in sorted(directory.glob("*.torn-*"))]
    try:
        if not files:
            raise _Problem("", f"no audit files (audit-NNNNNN.jsonl) in {directory}: not an audit log directory")
        for (a, _), (b, _) in zip(files, files[1:], strict=False):
            if b != a + 1:
                gap = file_name(a + 1) if b == a + 2 else f"{file_name(a + 1)}..{file_name(b - 1)}"
                raise _Problem(str(directory / gap), f"file(s) missing between {file_name(a)} and {file_name(b)}")
        if files[0][0] != 1:
            notes.append(f"the log starts at {names[0]} (older files removed, e.g. by keep=): its first prev unchecked")
        c.run()
    except _Problem as p:
        return AuditReport(directory, p.problem, p.where or None, c.lines, names, c.first_seq, c.seq, c.head)
    symbols = {s: ts for s, (ts, _loc) in c.last.items()}
    return AuditReport(directory, None, None, c.lines, names, c.first_seq, c.seq, c.head, symbols, tuple(notes))
