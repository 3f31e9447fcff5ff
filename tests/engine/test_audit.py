"""The audit log and ``fxgate audit verify``: a real Gate's decisions logged and read back against the decisions
themselves and a hash chain recomputed here; every corruption planted by hand is found and named with its
file:line; a torn tail is cut on reopen and said; a resend after a reopen leaves the files byte-identical to an
uninterrupted log; and a real process killed with SIGKILL while it appends loses no acknowledged line.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from fxgate.engine import sample_bars
from fxgate.engine.audit import GENESIS, AuditError, AuditLog, AuditRefused, AuditRepairWarning
from fxgate.engine.audit_verify import parse_anchor, verify
from fxgate.engine.cli import cli
from fxgate.engine.config import GateConfig, L1Config, L2Config, L3Config, L4Config
from fxgate.engine.gate import Gate
from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
from fxgate.models.labels import LabelSpec

LOOSE = GateConfig(
    l1=L1Config(threshold=0.5),
    l4=L4Config(modules=("vpin",), params={"vpin": {"rule": "absolute", "absolute": 1.01, "n_buckets": 10}}),
    l2=L2Config(enabled=False),
    l3=L3Config(enabled=False),
)
SMALL = 40_000  # bytes per file: the real log below spans several files, so the chain crosses rotations
WAIT_S = 90  # bound for a busy machine; no test asserts a duration


@pytest.fixture(scope="module")
def decisions() -> list:
    """Real Decisions, two symbols interleaved bar by bar, from two Gates over the bundled sample."""
    bars = sample_bars()
    ens = TreeEnsemble()
    ens.fit(bars[:2000], LabelSpec("next", 1), EnsembleConfig(n_estimators=10, max_depth=3), evaluate=False)
    gates = {s: Gate(LOOSE, ens, timeframe="H1", symbol=s) for s in ("EURUSD", "GBPUSD")}
    out = []
    for b in bars[2000:2120]:
        for s, g in gates.items():
            out.append(g.on_bar(replace(b, symbol=s)))
    assert all(d.first_veto != "input" for d in out) and any(d.action != "NONE" for d in out)
    return out


def _log(directory: Path, decisions: list, **kw) -> AuditLog:
    log = AuditLog(directory, max_bytes=kw.pop("max_bytes", SMALL), **kw)
    for d in decisions:
        log.append(d)
    return log


def _lines(directory: Path) -> list[tuple[Path, int, bytes]]:
    """(file, 1-based line, bytes without newline) of every line, files in name order."""
    out = []
    for p in sorted(directory.glob("audit-*.jsonl")):
        out.extend((p, k, raw) for k, raw in enumerate(p.read_bytes().splitlines(), 1))
    return out


def _content(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("audit-*.jsonl"))}


def _cli_verify(directory: Path, *extra: str):
    return CliRunner().invoke(cli, ["audit", "verify", str(directory), *extra])


# -- a sound log -------------------------------------------------------------------------------------------------
def test_a_real_gates_log_verifies_and_reads_back_as_the_decisions(tmp_path, decisions):
    with _log(tmp_path, decisions) as log:
        head, seq = log.head, log.seq
    lines = _lines(tmp_path)
    assert len({p for p, _, _ in lines}) >= 3  # rotated
    assert len(lines) == len(decisions) == seq
    prev = GENESIS
    for i, ((_p, _k, raw), d) in enumerate(zip(lines, decisions, strict=True), 1):
        obj = json.loads(raw)
        assert obj == {"seq": i, "prev": prev, "symbol": d.symbol, "decision": d.to_dict()}
        prev = hashlib.sha256(raw).hexdigest()  # the chain recomputed here, independently of the module
    assert head == prev
    report = verify(tmp_path, anchor=(seq, head))
    assert report.ok, report
    assert (report.lines, report.first_seq, report.last_seq, report.head) == (len(decisions), 1, seq, head)
    assert report.symbols == {s: max(d.ts for d in decisions if d.symbol == s) for s in ("EURUSD", "GBPUSD")}
    r = _cli_verify(tmp_path, "--anchor", f"{seq}:{head}")
    assert r.exit_code == 0 and r.output.startswith(f"OK: {tmp_path}: {len(decisions)} lines"), r.output


def test_a_chain_written_by_hand_verifies_and_its_duplicate_bar_is_found(tmp_path, decisions):
    """The format as documented, written here without AuditLog: a sound chain passes; the same chain with one
    bar logged twice (a valid chain, so only the per-symbol time check can see it) fails at that line."""

    def write(ds: list, d: Path) -> None:
        d.mkdir()
        prev, out = GENESIS, []
        for i, x in enumerate(ds, 1):
            raw = json.dumps({"seq": i, "prev": prev, "symbol": x.symbol, "decision": x.to_dict()}).encode()
            out.append(raw)
            prev = hashlib.sha256(raw).hexdigest()
        (d / "audit-000001.jsonl").write_bytes(b"".join(r + b"\n" for r in out))

    write(decisions[:40], tmp_path / "sound")
    assert verify(tmp_path / "sound").ok
    write([*decisions[:40], decisions[38]], tmp_path / "dup")
    r = verify(tmp_path / "dup")
    assert r.where == f"{tmp_path / 'dup' / 'audit-000001.jsonl'}:41", r
    assert f"duplicate bar: {decisions[38].symbol}" in r.problem and "audit-000001.jsonl:39" in r.problem


# -- planted corruptions ------------------------------------------------------------------------------------------
def _edit_reason(raw: bytes) -> bytes:
    obj = json.loads(raw)
    obj["decision"]["layers"][0]["reason"] += " (edited)"  # still valid against the schema: only the chain sees it
    return json.dumps(obj, separators=(",", ":")).encode()


def _negative_size(raw: bytes) -> bytes:
    obj = json.loads(raw)
    obj["decision"]["size"] = -1.0
    return json.dumps(obj, separators=(",", ":")).encode()


# name -> (how to corrupt the list of lines (index into the whole log), index of the line the report must name,
#          fragment of the problem)
PLANTS = {
    "delete a line": (lambda ls: ls.pop(50), 50, "seq 51 missing (seq jumps from 50 to 52): line(s) deleted"),
    "delete the first line": (lambda ls: ls.pop(0), 0, "seq 1 missing"),
    "swap two lines": (
        lambda ls: ls.__setitem__(slice(70, 72), [ls[71], ls[70]]),
        70,
        "seq 72 before seq 71 (which is at",
    ),
    "duplicate a line": (lambda ls: ls.insert(31, ls[30]), 31, "duplicate line: a copy of the line before"),
    "repeat a line later": (lambda ls: ls.insert(90, ls[10]), 90, "seq 11 again (first at"),
    "edit a field": (lambda ls: ls.__setitem__(60, _edit_reason(ls[60])), 60, "line seq 61 was changed after it"),
    "edit against the schema": (
        lambda ls: ls.__setitem__(20, _negative_size(ls[20])),
        20,
        "decision does not match engine/core/decision.schema.json at size",
    ),
    "truncate the last line mid-line": (lambda ls: ls.__setitem__(-1, ls[-1][:-37]), -1, "torn last line"),
}


@pytest.mark.parametrize("plant", list(PLANTS))
def test_each_planted_corruption_fails_naming_it_and_its_line(tmp_path, decisions, plant):
    _log(tmp_path, decisions, max_bytes=10**9).close()  # one file: the plant's index is its line
    f = tmp_path / "audit-000001.jsonl"
    ls = f.read_bytes().split(b"\n")[:-1]
    corrupt, at, fragment = PLANTS[plant]
    corrupt(ls)
    torn = plant.startswith("truncate")
    f.write_bytes(b"\n".join(ls) + (b"" if torn else b"\n"))
    line = len(ls) if at == -1 else at + 1
    report = verify(tmp_path)
    assert not report.ok and fragment in report.problem, report
    assert report.where == f"{f}:{line}", report
    r = _cli_verify(tmp_path)
    assert r.exit_code == 1 and r.output.startswith(f"FAIL: {f}:{line}: "), r.output


def test_a_missing_file_and_the_newest_lines_with_an_anchor(tmp_path, decisions):
    with _log(tmp_path, decisions) as log:
        anchor = (log.seq, log.head)
    last = sorted(tmp_path.glob("audit-*.jsonl"))[-1]
    ls = last.read_bytes().split(b"\n")[:-1]
    last.write_bytes(b"\n".join(ls[:-1]) + b"\n")  # the newest line removed: a shorter chain, still sound ...
    assert verify(tmp_path).ok
    r = verify(tmp_path, anchor=anchor)  # ... but not to an anchor recorded before
    assert "anchor seq" in r.problem and "lines were removed from the end" in r.problem, r
    last.write_bytes(b"\n".join([*ls[:-1], _edit_reason(ls[-1])]) + b"\n")  # the newest line edited
    r = verify(tmp_path, anchor=anchor)
    assert r.where == f"{last}:{len(ls)}" and "does not match the anchor" in r.problem, r
    (tmp_path / "audit-000002.jsonl").unlink()
    r = verify(tmp_path)
    assert r.where == str(tmp_path / "audit-000002.jsonl") and "file(s) missing between" in r.problem, r
    with pytest.raises(ValueError, match="want SEQ:SHA256"):
        parse_anchor("12:abc")
    assert _cli_verify(tmp_path / "nowhere").exit_code == 2


# -- crash repair, resend, refusals -----------------------------------------------------------------------------
def test_a_torn_tail_is_cut_on_reopen_said_and_the_chain_continues(tmp_path, decisions):
    ref = tmp_path / "ref"
    _log(ref, decisions).close()
    log_dir = tmp_path / "log"
    _log(log_dir, decisions).close()
    newest = sorted(log_dir.glob("audit-*.jsonl"))[-1]
    data = newest.read_bytes()
    cut = data.rfind(b"\n", 0, len(data) - 1) + 1 + 25  # 25 bytes into the last line: what a kill mid-write leaves
    newest.write_bytes(data[:cut])
    assert "torn last line" in verify(log_dir).problem
    with pytest.warns(AuditRepairWarning, match="cut a torn last line"):
        log = AuditLog(log_dir, max_bytes=SMALL)
    assert log.repair is not None and log.repair.saved_to.read_bytes() == data[cut - 25 : cut]
    assert log.seq == len(decisions) - 1 and verify(log_dir).ok
    log.append(decisions[-1])  # the bot resends the bar it never got an answer for
    log.close()
    assert _content(log_dir) == _content(ref)  # byte-identical to the log that never crashed
    assert any("torn tail" in n for n in verify(log_dir).notes)


def test_a_resend_after_reopen_is_recognised_and_logged_once(tmp_path, decisions):
    ref = tmp_path / "ref"
    _log(ref, decisions).close()
    log_dir = tmp_path / "log"
    _log(log_dir, decisions[:150]).close()  # the server went down after 150 decisions
    log = AuditLog(log_dir, max_bytes=SMALL)
    for s in ("EURUSD", "GBPUSD"):
        assert log.last_ts(s) == max(d.ts for d in decisions[:150] if d.symbol == s)
    with pytest.raises(AuditRefused, match="already logged") as ei:
        log.append(decisions[149])
    assert ei.value.kind == "duplicate"
    with pytest.raises(AuditRefused, match="older than") as ei:
        log.append(decisions[100])
    assert ei.value.kind == "out_of_order"
    skipped = 0
    for d in decisions[90:]:  # the bot resends from well before the last acknowledged bar
        if (last := log.last_ts(d.symbol)) is not None and d.ts <= last:
            skipped += 1
            continue
        log.append(d)
    log.close()
    assert skipped == 60 and _content(log_dir) == _content(ref) and verify(log_dir).ok


def test_refused_bars_bad_arguments_and_a_second_writer_are_refused(tmp_path, decisions):
    bars = sample_bars()
    g = Gate(LOOSE, None, timeframe="H1", symbol="EURUSD")
    refused = g.on_bar(replace(bars[10], close=float("nan")))
    with AuditLog(tmp_path) as log:
        with pytest.raises(AuditRefused, match="the gate refused it") as ei:
            log.append(refused)
        assert ei.value.kind == "refused_bar" and log.seq == 0
        with pytest.raises(AuditRefused, match="takes a Decision"):
            log.append(decisions[0].to_dict())
        with pytest.raises(AuditError, match=rf"open for appending by another process \(pid {os.getpid()}\)"):
            AuditLog(tmp_path)
    AuditLog(tmp_path).close()  # released on close
    for kw, msg in [
        ({"fsync_every": 0}, "fsync_every = 0"),
        ({"keep": 0}, "keep = 0"),
        ({"max_bytes": 10}, "max_bytes = 10"),
    ]:
        with pytest.raises(ValueError, match=msg):
            AuditLog(tmp_path / "x", **kw)


def test_retention_keeps_the_newest_files_and_they_verify(tmp_path, decisions):
    with _log(tmp_path, decisions, max_bytes=8_000, keep=3) as log:
        seq = log.seq
    files = sorted(p.name for p in tmp_path.glob("audit-*.jsonl"))
    assert len(files) == 3 and files[0] != "audit-000001.jsonl"
    r = verify(tmp_path)
    assert r.ok and r.last_seq == seq and r.first_seq > 1 and any("older files removed" in n for n in r.notes), r


def test_appends_from_many_threads_make_one_sound_chain(tmp_path, decisions):
    log = AuditLog(tmp_path, max_bytes=SMALL)
    by_symbol = [[replace(d, symbol=f"S{k}") for d in decisions[::2]] for k in range(4)]
    threads = [threading.Thread(target=lambda ds=ds: [log.append(d) for d in ds]) for ds in by_symbol]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    r = verify(tmp_path)
    assert r.ok and r.lines == sum(map(len, by_symbol)) and len(r.symbols) == 4, r


# -- kill -9 ------------------------------------------------------------------------------------------------------
CHILD = """
import sys
from fxgate.engine.audit import AuditLog
from fxgate.engine.core.decision import Decision, LayerVerdict
log = AuditLog(sys.argv[1], max_bytes=30_000)
print("start", log.seq, flush=True)
reason = "not evaluated: " + "x" * 3000  # long lines: a kill lands inside a write more often
layers = tuple(LayerVerdict(n, True, False, None, None, reason, 1.0) for n in ("L1", "L4", "L2", "L3"))
seq = log.seq
while True:
    seq += 1
    log.append(Decision(10**18 + seq * 3_600 * 10**9, "EURUSD", "NONE", 0.0, None, layers, "L1", "0" * 16))
    print(seq, flush=True)  # acknowledged only after append returned
"""


def test_kill_9_while_appending_loses_no_acknowledged_line(tmp_path):
    acked = 0
    for _round in range(3):  # kill, reopen (the child's AuditLog repairs), continue, kill again
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            assert proc.stdout is not None
            start = proc.stdout.readline().split()
            assert start[0] == "start" and int(start[1]) >= acked  # nothing acknowledged was lost on reopen
            seen = 0
            for line in proc.stdout:
                acked, seen = int(line), seen + 1
                if seen == 150:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
            rest = proc.communicate(timeout=WAIT_S)[0]  # acknowledgements already in the pipe
            acked = max([acked, *map(int, rest.split())])
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == -signal.SIGKILL
    # A kill inside write() can leave part of a line; this kernel finishes a write before the kill lands (no tear
    # in 25 tries), so the tear is planted: the first half of the line the child would have written next.
    newest = sorted(tmp_path.glob("audit-*.jsonl"))[-1]
    whole = newest.read_bytes().splitlines()[-1]
    with newest.open("ab") as f:
        f.write(whole[: len(whole) // 2])
    assert "torn last line" in verify(tmp_path).problem
    with pytest.warns(AuditRepairWarning, match="cut a torn last line"), AuditLog(tmp_path) as log:
        logged = log.seq
    r = verify(tmp_path)
    assert r.ok, r
    seqs = [json.loads(raw)["seq"] for _p, _k, raw in _lines(tmp_path)]
    assert seqs == list(range(1, logged + 1)) and acked <= logged <= acked + 1
