"""Interrupts of a replay: SIGINT (Ctrl-C) and SIGTERM (systemd, Docker, ``kill``, tmux kill-session).

The first signal asks the replay to stop after the current bar; it then writes its partial results, marks run.json
"interrupted" and exits 128 + the signal (130, 143) so that scripts notice. A second signal aborts at once without
results (files already renamed into place stay whole; temporaries are cleaned by the next run).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

import click

__all__ = ["Abort", "Stop", "stop_on_signals"]


class Abort(BaseException):
    """A second SIGINT/SIGTERM: stop now, write nothing more."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class Stop:
    """The first stop signal of one command; call it to ask whether to stop."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[Stop]:
    """Catch SIGINT and SIGTERM for the duration of one command (the previous handlers come back after it)."""
    stop = Stop()
    if threading.current_thread() is not threading.main_thread():  # signal handlers can only be set there
        yield stop
        return

    def handler(signum: int, frame: object) -> None:
        if stop.signum is not None:
            raise Abort(signum)
        stop.signum = signum
        # os.write, not print: a handler may run while the main thread is inside a write to the same stream
        os.write(
            2,
            f"\nfxgate: {signal.Signals(signum).name}: stopping after the current bar (a Layer-1 fit in "
            "progress finishes first), then writing partial results; send it again to abort without "
            "them\n".encode(),
        )

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    except Abort as exc:
        click.secho(f"aborted by a second {signal.Signals(exc.signum).name}", fg="red", err=True)
        raise click.exceptions.Exit(128 + exc.signum) from None
    finally:
        for s, h in old.items():
            signal.signal(s, h)
