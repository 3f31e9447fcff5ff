"""A real ``fxgate serve`` in a subprocess on loopback, for the end-to-end server tests: start it on a free port, wait
until ``GET /v1/health`` answers, talk JSON to it over plain sockets (:mod:`http.client`), stop it gently or with
``kill -9``. Nothing here imports the server: the process under test is the installed ``fxgate`` command."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["FXGATE", "Server", "ServerDied", "free_port"]

#: the ``fxgate`` entry point beside the interpreter running the tests (the venv's), else the one on PATH
FXGATE = next(
    (str(p) for p in (Path(sys.executable).with_name("fxgate"),) if p.is_file()), shutil.which("fxgate") or "fxgate"
)


class ServerDied(RuntimeError):
    """The server process exited while it was being started or talked to; the message ends with its log's tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One ``fxgate serve`` process. ``args``: its options after ``serve`` (``--config``, ``--state``, ...); the host
    and a fresh port are added. stdout and stderr go to ``log`` (appended, so restarts on one log keep the story).
    ``env``: extra environment; ``FXGATE_TOKEN`` is removed unless given there."""

    def __init__(self, args: list[str], log: Path, *, env: dict[str, str] | None = None, ready_s: float = 180) -> None:
        self.port = free_port()
        self.log = log
        e = {k: v for k, v in os.environ.items() if k != "FXGATE_TOKEN"}
        e.update(env or {})
        with open(log, "ab") as f:
            f.write(f"\n=== fxgate serve {' '.join(args)} --port {self.port}\n".encode())
            f.flush()
            self.proc = subprocess.Popen(
                [FXGATE, "serve", *args, "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=e,
            )
        self._wait_ready(ready_s)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_bytes()[-n:].decode(errors="replace")
        except OSError as exc:
            return f"(log {self.log} unreadable: {exc})"

    def _wait_ready(self, ready_s: float) -> None:
        deadline = time.monotonic() + ready_s  # a safety net against a hang, not a speed target
        while True:
            if self.proc.poll() is not None:
                raise ServerDied(f"fxgate serve exited with {self.proc.returncode} on start:\n{self.tail()}")
            try:
                status, _ = self.request("GET", "/v1/health", timeout=5)
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise ServerDied(f"fxgate serve did not answer /v1/health within {ready_s} s:\n{self.tail()}")
            time.sleep(0.1)

    def connection(self, timeout: float = 120) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(
        self, method: str, path: str, body: Any = None, *, timeout: float = 120, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """One request on a new connection: (status, parsed JSON body, or the text for a non-JSON answer)."""
        conn = self.connection(timeout)
        try:
            send(conn, method, path, body, headers)
            return receive(conn)
        finally:
            conn.close()

    def kill(self) -> None:
        """``kill -9`` and reap it."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (a graceful shutdown), then SIGKILL if it does not exit within ``timeout``; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


def send(
    conn: http.client.HTTPConnection, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> None:
    """Send a request (JSON body when given) without waiting for the answer."""
    h = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body, allow_nan=False).encode()
        h["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=h)


def receive(conn: http.client.HTTPConnection) -> tuple[int, Any]:
    """The answer to the request last sent on ``conn``: (status, parsed JSON, or the text when it is not JSON).
    Raises OSError (or :class:`http.client.HTTPException`) when the connection broke before a whole answer came."""
    r = conn.getresponse()
    raw = r.read()
    try:
        return r.status, json.loads(raw)
    except ValueError:
        return r.status, raw.decode(errors="replace")
