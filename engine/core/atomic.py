"""Files written whole or not at all.

Atomic writes follow SQLite and git: write a temporary file in the destination's directory, ``fsync`` it,
``os.replace`` it onto the final name (atomic on POSIX within one file system), then ``fsync`` the directory so the
rename itself survives a power cut. A process killed at any point leaves either the old file or the new one under
the final name, never half of one; what it can leave is a hidden temporary named
``.fxgate-tmp-<pid>-<token>-<final name>``. :func:`temp_owner` reads the pid back from such a name, so that the
next run (:func:`fxgate.engine.rundir.clean_temps`) removes the temporaries of processes that are gone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["TEMP_PREFIX", "atomic_path", "write_bytes", "write_text", "temp_owner"]

TEMP_PREFIX = ".fxgate-tmp-"


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _temp_name(final: Path) -> Path:
    return final.with_name(f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{final.name}")


def temp_owner(name: str) -> int | None:
    """The pid of the process that made the temporary called ``name``; None if ``name`` is not an fxgate
    temporary."""
    rest = name[len(TEMP_PREFIX) :].split("-", 1)[0] if name.startswith(TEMP_PREFIX) else ""
    return int(rest) if rest.isdigit() else None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends normally, the file written there is fsynced and
    renamed onto ``path``. If the block raises, the temporary is removed and ``path`` is untouched.

    The temporary keeps ``path``'s name as its suffix (``….decisions.parquet``), so writers that pick a format or a
    compression from the extension behave as they would on the final name.
    """
    final = Path(path)
    if not final.parent.is_dir():  # say so about the directory, not about a temporary name the user never chose
        raise FileNotFoundError(errno.ENOENT, "no such directory (create it first)", str(final.parent))
    if final.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file name", str(final))
    tmp = _temp_name(final)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"atomic write of {final}: nothing was written to the temporary {tmp.name}")
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(final.parent)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` whole or not at all (UTF-8 unless told)."""
    return write_bytes(path, text.encode(encoding))
