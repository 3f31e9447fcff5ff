"""Replay output directories that say which run wrote them.

A run directory (``fxgate replay --out``) holds ``run.json``: the run's id, command, config hash, data file sha256,
host, pid, start and end, its status (``running`` while it works, then ``complete``, ``interrupted`` or
``failed``) and every file it wrote with size and sha256. It is written with status ``running`` before the first
output and rewritten last, so :func:`check_run_dir` can tell a finished directory from one a live run is still
writing, one whose run was killed (``running`` with a dead pid), and one holding files of two runs. Each output
file itself is written whole or not at all (:mod:`fxgate.engine.core.atomic`); what a killed writer leaves is a
temporary, which :func:`clean_temps` removes once its process is gone.

This is orchestration (the CLI's replay and demo use it), not foundation: the gate never reads it.
"""

from __future__ import annotations

import contextlib
import fcntl  # POSIX (fxgate runs on Linux): an advisory lock on the directory, nothing left behind
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fxgate.engine.core.atomic import temp_owner, write_text
from fxgate.engine.core.errors import FxgateError
from fxgate.engine.core.hashing import file_sha256

__all__ = [
    "RUN_FILE",
    "OUTPUT_NAMES",
    "RunDirState",
    "check_run_dir",
    "start_run",
    "finish_run",
    "read_run",
    "clean_temps",
    "pid_alive",
]

RUN_FILE = "run.json"
RUN_FORMAT = "fxgate-run/1"
#: Names fxgate writes into a replay directory: present without a run.json listing them, they are from a run that
#: cannot be identified.
OUTPUT_NAMES = (
    "decisions.parquet",
    "trades.csv",
    "metrics.json",
    "layers.parquet",
    "report.html",
    "llm_probe.json",
)
STATUSES = ("running", "complete", "interrupted", "failed")


# ---------------------------------------------------------------------------------------------------------------
# processes


def _proc_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux /proc; None elsewhere): tells a live process from a
    later one that was given the same pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces; starttime is field 22
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def pid_alive(pid: int, start: int | None = None) -> bool:
    """Whether process ``pid`` exists on this host (and, given ``start`` from :func:`_proc_start`, is the same
    process, not a later one reusing the number). A zombie counts as gone."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
        if state[state.rfind(")") + 2 :].split()[0] in ("Z", "X"):
            return False
    except (OSError, IndexError):
        pass
    if start is not None:
        now = _proc_start(pid)
        if now is not None and now != start:
            return False
    return True


# ---------------------------------------------------------------------------------------------------------------
# temporaries of dead writers, run manifests


def clean_temps(directory: str | Path) -> list[Path]:
    """Remove the temporaries that processes which no longer run left in ``directory`` (a kill -9 mid-write);
    those of live processes are theirs to finish. Returns what was removed."""
    d = Path(directory)
    removed = []
    if not d.is_dir():
        return removed
    for p in d.iterdir():
        pid = temp_owner(p.name)
        if pid is not None and p.is_file() and not p.is_symlink() and not pid_alive(pid):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def read_run(directory: str | Path) -> dict[str, Any] | None:
    """``directory``'s run.json as a dict; None if there is none. Raises :class:`FxgateError` naming the file if it
    is not a run manifest fxgate wrote (truncated, not JSON, fields missing or of the wrong type)."""
    p = Path(directory) / RUN_FILE
    if not p.exists():
        return None
    try:
        data = json.loads(p.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FxgateError(f"{p}: not a readable run manifest ({exc})") from None
    problem = None
    if not isinstance(data, dict) or data.get("format") != RUN_FORMAT:
        problem = f'no "format": "{RUN_FORMAT}" field'
    elif data.get("status") not in STATUSES:
        problem = f"status {data.get('status')!r} is not one of {', '.join(STATUSES)}"
    elif not isinstance(data.get("pid"), int) or not isinstance(data.get("host"), str):
        problem = "pid or host missing"
    elif not isinstance(data.get("files"), dict) or not all(
        isinstance(v, dict) and isinstance(v.get("size"), int) and isinstance(v.get("sha256"), str)
        for v in data["files"].values()
    ):
        problem = "files is not a map of name -> {size, sha256}"
    else:
        bad = [k for k in data["files"] if Path(k).name != k or k.startswith(".") or k == RUN_FILE]
        if bad:
            problem = f"file {bad[0]!r} is not a plain file name inside the directory"
    if problem:
        raise FxgateError(f"{p}: not a valid fxgate run manifest: {problem}")
    return data


def _describe(run: dict[str, Any]) -> str:
    return f"run {run.get('id', '?')} (pid {run['pid']} on {run['host']}, started {run.get('started', '?')})"


@dataclass(frozen=True)
class RunDirState:
    """What :func:`check_run_dir` found. ``refusals`` stop a run unless forced; ``notes`` are printed either way."""

    path: Path
    previous: dict[str, Any] | None
    refusals: tuple[str, ...]
    notes: tuple[str, ...]


def _file_problems(d: Path, run: dict[str, Any]) -> list[str]:
    out = []
    for name, want in run["files"].items():
        p = d / name
        if not p.is_file():
            out.append(f"{name}: listed in run.json but missing")
        elif p.stat().st_size != want["size"]:
            out.append(f"{name}: {p.stat().st_size} bytes, run.json says {want['size']}")
        elif file_sha256(p) != want["sha256"]:
            out.append(f"{name}: sha256 differs from run.json (changed after the run)")
    for name in OUTPUT_NAMES:
        if name not in run["files"] and (d / name).exists():
            out.append(f"{name}: not listed in run.json (left by another run)")
    return out


def check_run_dir(directory: str | Path, *, option: str = "--out") -> RunDirState:
    """Look at an output directory before a run writes into it.

    Refused (unless forced): a path that is an existing file; fxgate outputs with no run.json; a run.json that is
    not a run manifest; a run still in progress (a live pid on this host, or any run on another host, whose pid
    cannot be checked); files that do not match their run.json (changed, missing, or left by another run). A run
    that was killed (status ``running``, pid gone) is a note: its files are incomplete and are replaced.
    """
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise FxgateError(
            f"{option} {d}: is an existing file, not a directory. Fix: pass a directory path (it is created if missing)"
        )
    if not d.exists():
        return RunDirState(d, None, (), ())
    fix = f"Fix: use another {option} directory, move its files away, or pass --force to replace them"
    try:
        run = read_run(d)
    except FxgateError as exc:
        return RunDirState(d, None, (f"{exc}. {fix}",), ())
    if run is None:
        found = [n for n in OUTPUT_NAMES if (d / n).exists()]
        if found:
            return RunDirState(
                d,
                None,
                (
                    f"{d} holds fxgate outputs ({', '.join(found)}) but no {RUN_FILE}, so the "
                    f"run they belong to cannot be told. {fix}",
                ),
                (),
            )
        return RunDirState(d, None, (), ())
    if run["status"] == "running":
        if run["host"] != socket.gethostname():
            return RunDirState(
                d,
                run,
                (
                    f"{d / RUN_FILE}: {_describe(run)} is in progress on another host; its pid "
                    f"cannot be checked from here. {fix}",
                ),
                (),
            )
        if run["pid"] != os.getpid() and pid_alive(run["pid"], run.get("pid_start")):
            return RunDirState(
                d,
                run,
                (
                    f"{d / RUN_FILE}: another fxgate {_describe(run)} is still writing into "
                    f"{d}. Fix: wait for it to finish, use another {option} directory, or pass "
                    "--force if that process is not fxgate",
                ),
                (),
            )
        return RunDirState(
            d,
            run,
            (),
            (
                f"{d}: the previous {_describe(run)} stopped without finishing (killed, or "
                "the machine went down): its files are incomplete and are replaced",
            ),
        )
    problems = _file_problems(d, run)
    if problems:
        return RunDirState(
            d,
            run,
            (f"{d}: its files do not match {RUN_FILE} of {_describe(run)}: " + "; ".join(problems) + f". {fix}",),
            (),
        )
    return RunDirState(d, run, (), ())


@contextlib.contextmanager
def _locked(d: Path) -> Iterator[None]:
    """An exclusive flock on the directory itself, so two runs starting at the same moment cannot both find it free
    (no lock file is left behind)."""
    fd = os.open(d, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def start_run(
    directory: str | Path, record: dict[str, Any], *, force: bool = False, option: str = "--out"
) -> tuple[dict[str, Any], RunDirState]:
    """Claim ``directory`` for a new run. Under a lock on the directory: :func:`check_run_dir` again (another run
    may have started since the caller's early check), refuse with every reason unless ``force``, remove
    temporaries of dead processes and the previous run's outputs (so the directory never holds files of two runs),
    and write run.json with status ``running``. ``record`` holds the run's own fields (id, command, config_hash,
    data, ...). Returns the manifest written and what the check found (its notes, and refusals overridden by
    ``force``, are the caller's to print)."""
    d = Path(directory)
    if d.exists() and not d.is_dir():
        check_run_dir(d, option=option)  # raises, naming the option
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FxgateError(
            f"{option} {d}: cannot create the directory ({exc.strerror}). Fix: pass a directory path you can write to"
        ) from None
    with _locked(d):
        state = check_run_dir(d, option=option)
        if state.refusals and not force:
            raise FxgateError("\n".join(state.refusals))
        clean_temps(d)
        old = set(OUTPUT_NAMES) | set(state.previous["files"] if state.previous else ())
        for name in old:
            p = d / name
            if p.is_file() or p.is_symlink():
                p.unlink()
        run = {
            "format": RUN_FORMAT,
            **record,
            "status": "running",
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_start": _proc_start(os.getpid()),
            "started": _now(),
            "ended": None,
            "files": {},
        }
        write_text(d / RUN_FILE, json.dumps(run, indent=1) + "\n")
    return run, state


def finish_run(
    directory: str | Path, run: dict[str, Any], status: str, files: list[str], error: str | None = None
) -> dict[str, Any]:
    """Rewrite run.json last: ``status``, the end time, and size and sha256 of each of ``files`` (names in
    ``directory``) that exists."""
    if status not in STATUSES[1:]:
        raise ValueError(f"finish_run: status {status!r} is not one of {STATUSES[1:]}")
    d = Path(directory)
    listed = {}
    for name in files:
        p = d / name
        if p.is_file():
            listed[name] = {"size": p.stat().st_size, "sha256": file_sha256(p)}
    done = {**run, "status": status, "ended": _now(), "files": listed}
    if error is not None:
        done["error"] = error
    write_text(d / RUN_FILE, json.dumps(done, indent=1) + "\n")
    return done
