"""FxgateClient against a real server on loopback: the Decisions that come back are the in-process gate's (latency
aside); a lost answer or a server killed mid-stream is bridged by resending the same bars, and the audit log still
holds each bar once; every 4xx maps to its typed error with the caller's bar index, and is never retried; the token
is sent; bad bars are refused before anything is sent.

The servers: uvicorn in a thread serving a real :class:`BarService` (with a Layer-1 ensemble, so the Decisions are
not all "no model"), and for the kill -9 test ``fxgate serve`` in a subprocess (tests/server_util.py). Between the
client and the threaded server a small TCP proxy (real sockets) can lose an answer after the server sent it, or
answer 503 itself the way a reverse proxy does while its upstream restarts."""

from __future__ import annotations

import http.client
import json
import math
import re
import socket
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import server_util
import uvicorn
from server_util import Server, free_port

from fxgate.engine import Bars, sample_bars
from fxgate.engine.audit_verify import verify
from fxgate.engine.client import (
    BarInputError,
    Conflict,
    FxgateClient,
    Invalid,
    ProtocolError,
    ServerUnavailable,
    TooLarge,
    Unauthorized,
    UnknownSymbol,
    _frame_rows,
    to_ns,
)
from fxgate.engine.config import GateConfig, L1Config, L2Config, L3Config, L4Config, load_config
from fxgate.engine.core.config import ServerConfig
from fxgate.engine.gate import Gate
from fxgate.engine.server import create_app
from fxgate.engine.service import BarService
from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
from fxgate.models.labels import LabelSpec

BARS = sample_bars()
TOKEN = "test-token-0123456789abcdef"
SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD", "USDCHF", "NZDUSD", "USDCAD", "EURGBP", "EURJPY", "GBPJPY")
MAX_BARS = 256
# the config as TOML (the subprocess server reads it) and as the object the threaded server and the reference use
CONFIG_TOML = f"""
horizon = 2
spread = 8e-5
[l1]
threshold = 0.5
[l2]
enabled = false
[l3]
enabled = false
[l4]
modules = ["robust_kelly", "bocpd", "adverse_selection"]
[l4.params.bocpd]
calib_bars = 50
[server]
max_bars = {MAX_BARS}
unknown_symbols = "refuse"
symbols = {json.dumps(list(SYMBOLS))}
"""
CFG = GateConfig(
    horizon=2,
    spread=8e-5,
    l1=L1Config(threshold=0.5),
    l4=L4Config(
        modules=("robust_kelly", "bocpd", "adverse_selection"),
        params={"bocpd": {"calib_bars": 50}},
    ),
    l2=L2Config(enabled=False),
    l3=L3Config(enabled=False),
    server=ServerConfig(max_bars=MAX_BARS, unknown_symbols="refuse", symbols=SYMBOLS),
)
FIT_BARS = 1000  # the ensemble's training bars; the bars sent come after them (out of sample: L1 answers)


def series(symbol: str, lo: int, hi: int) -> Bars:
    """A distinct price path per symbol: the sample after the training window, scaled per symbol; every other
    symbol has a spread column."""
    j = SYMBOLS.index(symbol)
    f = 1.0 + 0.1 * j
    sl = slice(FIT_BARS + 20 + lo, FIT_BARS + 20 + hi)
    n = len(BARS.ts[sl])
    return Bars(
        BARS.ts[sl],
        BARS.open[sl] * f,
        BARS.high[sl] * f,
        BARS.low[sl] * f,
        BARS.close[sl] * f,
        BARS.volume[sl],
        np.full(n, 8e-5 * f) if j % 2 == 0 else None,
        symbol=symbol,
        timeframe="H1",
    )


def plain(d: dict) -> dict:
    """A Decision dict without its latencies (the only field that differs between two runs)."""
    d = json.loads(json.dumps(d))
    for v in d["layers"]:
        v.pop("latency_us")
    return d


def reference(config: GateConfig, ens: TreeEnsemble, bars: Bars) -> list[dict]:
    """The in-process gate's Decisions for ``bars`` (a fresh gate, the server's config and models)."""
    g = Gate(config, ens, timeframe="H1", symbol=bars.symbol)
    try:
        return [plain(g.on_bar(b).to_dict()) for b in bars]
    finally:
        g.close()


def audit_lines(state: Path) -> list[tuple[str, int]]:
    """(symbol, bar time) of every line of the audit log under ``state``, in log order."""
    out = []
    for p in sorted((state / "audit").glob("audit-*.jsonl")):
        for line in p.read_text().splitlines():
            rec = json.loads(line)
            out.append((rec["symbol"], rec["bar"]["ts"]))
    return out


# -- servers -----------------------------------------------------------------------------------------------------------
class ThreadServer:
    """uvicorn serving ``create_app(BarService(...))`` in a daemon thread on loopback."""

    def __init__(self, service: BarService, token: str | None) -> None:
        self.service = service
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = uvicorn.Config(
            create_app(service, token=token),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60  # a safety net against a hang
        while not self.server.started:
            assert self.thread.is_alive(), "uvicorn exited on start"
            assert time.monotonic() < deadline, "uvicorn did not start within 60 s"
            time.sleep(0.02)

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the server's /metrics (0 when the series does not exist yet)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            m = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
            if m and m[1] == name and ",".join(sorted((m[2] or "").split(","))) == want:
                return float(m[3])
        return 0.0

    def posts(self, status: int) -> float:
        return self.metric("fxgate_requests_total", path="/v1/bars", status=str(status))

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)


class Proxy:
    """A TCP proxy between a client and a server, one HTTP/1.1 request at a time per client connection, each
    forwarded on a fresh upstream connection (so the client's keep-alive is what ``connections`` counts).
    ``lose_answers``: the next n answers to a POST (after the next ``pass_answers``, which go through) are read
    from the server and thrown away, and the client's connection is closed (the server did the work; the client
    never hears of it). ``fail_503``: the next n requests
    are answered 503 by the proxy without reaching the server."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.connections = self.requests = self.lost = 0
        self.pass_answers = self.lose_answers = self.fail_503 = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    @staticmethod
    def _read_message(sock: socket.socket, buf: bytearray) -> bytes | None:
        """One HTTP message (headers + Content-Length body) from ``sock``; None at EOF."""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            buf += chunk
        head, _, _ = bytes(buf).partition(b"\r\n\r\n")
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        total = len(head) + 4 + (int(m[1]) if m else 0)
        while len(buf) < total:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            buf += chunk
        msg = bytes(buf[:total])
        del buf[:total]
        return msg

    def _serve(self, client: socket.socket) -> None:
        buf = bytearray()
        with client:
            while True:
                try:
                    request = self._read_message(client, buf)
                except OSError:
                    return
                if request is None:
                    return
                with self.lock:
                    self.requests += 1
                    fail = self.fail_503 > 0
                    self.fail_503 -= fail
                if fail:
                    body = b"<html>upstream restarting</html>"
                    client.sendall(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html\r\nRetry-After: 0\r\n"
                        b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                    )
                    return
                with socket.create_connection(("127.0.0.1", self.upstream)) as up:
                    up.sendall(request)
                    answer = self._read_message(up, bytearray())
                if answer is None:
                    return
                with self.lock:
                    post = request.startswith(b"POST")
                    passed = post and self.pass_answers > 0
                    self.pass_answers -= passed
                    lose = post and not passed and self.lose_answers > 0
                    self.lose_answers -= lose
                    self.lost += lose
                if lose:
                    return  # closes the client's connection: the answer is lost
                client.sendall(answer)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Layer-1 bundle fitted on the bars before the ones sent."""
    e = TreeEnsemble()
    e.fit(BARS[:FIT_BARS], LabelSpec("next", 1), EnsembleConfig(n_estimators=10, max_depth=3), evaluate=False)
    return e.save(tmp_path_factory.mktemp("bundle") / "bundle")


@pytest.fixture(scope="module")
def ens(bundle: Path) -> TreeEnsemble:
    # the saved bundle, loaded, as `fxgate serve --bundle` loads it (an ensemble's model hash is that of its files)
    return TreeEnsemble.load(bundle)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="module")
def server(ens: TreeEnsemble, state: Path):
    s = ThreadServer(BarService(CFG, timeframe="H1", state_dir=state, ensemble=ens), TOKEN)
    yield s
    s.stop()


@pytest.fixture
def proxy(server: ThreadServer):
    p = Proxy(server.port)
    yield p
    p.close()


def client(url: str, **kw) -> FxgateClient:
    kw.setdefault("token", TOKEN)
    kw.setdefault("backoff", 0.01)
    kw.setdefault("max_backoff", 0.05)
    kw.setdefault("timeout", 60)
    return FxgateClient(url, **kw)


# -- round trip --------------------------------------------------------------------------------------------------------
def test_round_trip_equals_in_process_gate(server: ThreadServer, ens: TreeEnsemble, state: Path) -> None:
    """Bars sent as Bar objects, as dicts (ISO-Z and int-ns times), as a tz-aware DataFrame and one by one come back
    with exactly the in-process gate's Decisions, each bar logged once, nothing answered as a resend."""
    bars = series("EURUSD", 0, 241)
    want = reference(CFG, ens, bars)
    # the comparison needs signals, and vetoes by each layer
    assert any(d["action"] != "NONE" and d["size"] > 0 for d in want)
    assert {"L1", "L4:robust_kelly", "L4:bocpd"} <= {d["first_veto"] for d in want}
    resent_before = server.metric("fxgate_bars_total", outcome="resent")
    got: list[dict] = []
    with client(server.url, batch_size=64) as fx:
        r = fx.send("EURUSD", "H1", bars[:80])  # Bar objects (a Bars), two requests
        assert (len(r), r.resent, r.skipped, r.attempts) == (80, (), 0, 2)
        got += r.decisions
        dicts = []
        for k, b in enumerate(bars[80:160]):
            iso = datetime.fromtimestamp(b.ts // 10**9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            dicts.append(
                {"ts": iso if k % 2 else b.ts, "open": b.open, "high": b.high, "low": b.low, "close": b.close}
                | {"volume": b.volume, **({"spread": b.spread} if b.spread is not None else {})}
            )
        got += fx.send("EURUSD", "H1", dicts).decisions
        frame = bars[160:240].to_pandas()
        assert str(frame.index.tz) == "UTC"
        got += fx.send("EURUSD", "H1", frame).decisions
        got.append(fx.bar("EURUSD", "H1", bars[240]))
    assert [plain(d) for d in got] == want
    assert [ts for s, ts in audit_lines(state) if s == "EURUSD"] == [int(t) for t in bars.ts]
    assert server.metric("fxgate_bars_total", outcome="resent") == resent_before


def test_keep_alive_one_connection(server: ThreadServer, proxy: Proxy) -> None:
    """Twenty requests (bars and reads) travel on one TCP connection."""
    bars = series("EURGBP", 0, 15)
    with client(proxy.url) as fx:
        for b in bars:
            fx.bar("EURGBP", "H1", b)
        fx.health(), fx.config(), fx.symbols(), fx.last_ts("EURGBP"), fx.health()
    assert (proxy.requests, proxy.connections) == (20, 1)


# -- retries -----------------------------------------------------------------------------------------------------------
def test_lost_answer_is_resent_and_logged_once(server: ThreadServer, proxy: Proxy, ens, state: Path) -> None:
    """The server accepts and logs 50 bars but its answer is lost: the client sends the same 50 bars again and
    gets the logged Decisions (listed as resent); the log holds each bar once."""
    bars = series("GBPUSD", 0, 50)
    proxy.lose_answers = 1
    with client(proxy.url, batch_size=64) as fx:
        r = fx.send("GBPUSD", "H1", bars)
    assert proxy.lost == 1
    assert r.attempts == 2
    assert r.resent == tuple(range(50))
    assert [plain(d) for d in r.decisions] == reference(CFG, ens, bars)
    assert [ts for s, ts in audit_lines(state) if s == "GBPUSD"] == [int(t) for t in bars.ts]


def test_retries_exhausted_then_resend(server: ThreadServer, proxy: Proxy, ens, state: Path) -> None:
    """Every answer after the first request's is lost: after 1 + retries tries ServerUnavailable carries the 10
    Decisions that did arrive; the server meanwhile accepted bars 10..19. Sending all 30 again later answers 0..19
    from the log and decides 20..29; each bar is logged once."""
    bars = series("AUDUSD", 0, 30)
    with client(proxy.url, batch_size=10, retries=2) as fx:
        fx.bar("AUDUSD", "H1", bars[0])  # bars[0] accepted on its own: the batch below starts with a resend
        proxy.pass_answers, proxy.lose_answers = 1, 10**6
        with pytest.raises(ServerUnavailable) as ei:
            fx.send("AUDUSD", "H1", bars)
        proxy.lose_answers = 0
        e = ei.value
        assert (e.attempts, e.status, e.accepted, e.resent) == (1 + 3, None, 10, (0,))
        assert "3 attempt(s)" in str(e)
        assert isinstance(e.cause, http.client.RemoteDisconnected | ConnectionResetError), repr(e.cause)
        want = reference(CFG, ens, bars)
        assert [plain(d) for d in e.decisions] == want[:10]
        r = fx.send("AUDUSD", "H1", bars)
    assert r.resent == tuple(range(20))
    assert [plain(d) for d in r.decisions] == want
    assert [ts for s, ts in audit_lines(state) if s == "AUDUSD"] == [int(t) for t in bars.ts]


def test_503_from_a_proxy_is_retried(server: ThreadServer, proxy: Proxy, ens) -> None:
    """Two 503s (an HTML body, as a reverse proxy sends while its upstream restarts), then the answer; three 503s
    with retries = 2 raise ServerUnavailable with the status."""
    bars = series("USDCAD", 0, 5)
    with client(proxy.url, retries=2) as fx:
        proxy.fail_503 = 2
        r = fx.send("USDCAD", "H1", bars)
        assert r.attempts == 3
        assert [plain(d) for d in r.decisions] == reference(CFG, ens, bars)
        proxy.fail_503 = 3
        with pytest.raises(ServerUnavailable) as ei:
            fx.send("USDCAD", "H1", series("USDCAD", 5, 6))
    assert (ei.value.status, ei.value.attempts) == (503, 3)
    assert "upstream restarting" in str(ei.value)


def test_nothing_listening_raises_after_retries() -> None:
    port = free_port()
    with FxgateClient(f"http://127.0.0.1:{port}", retries=2, backoff=0.01) as fx:
        with pytest.raises(ServerUnavailable) as ei:
            fx.health()
    assert ei.value.attempts == 3 and isinstance(ei.value.cause, ConnectionRefusedError)


@pytest.mark.slow
def test_server_killed_mid_stream(
    ens: TreeEnsemble, bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bot sends 120 bars one request each; ``fxgate serve`` is killed -9 after about 40 and started again on the
    same state directory and port. The client's retries bridge the gap: every bar gets the Decision the in-process
    gate gives (the restarted server restored its snapshots and re-fed its log), the log holds each bar once and
    verifies."""
    (tmp_path / "gate.toml").write_text(CONFIG_TOML)
    cfg = load_config(tmp_path / "gate.toml")
    assert cfg.hash == CFG.hash
    state, log = tmp_path / "state", tmp_path / "serve.log"
    args = ["--config", str(tmp_path / "gate.toml"), "--bundle", str(bundle), "--state", str(state)]
    args += ["--timeframe", "H1"]
    port = free_port()
    monkeypatch.setattr(server_util, "free_port", lambda: port)  # the restart listens where the client points
    env = {"FXGATE_TOKEN": TOKEN}
    srv = Server(args, log, env=env)
    bars = series("USDJPY", 0, 120)
    results: list = []
    errors: list[BaseException] = []
    quit_ = threading.Event()

    def bot() -> None:
        try:  # about a minute of retries (a restart takes seconds): a restart that fails ends the test, not CI
            with client(f"http://127.0.0.1:{port}", retries=240, backoff=0.05, max_backoff=0.25) as fx:
                assert fx.config()["config_hash"] == CFG.hash
                for b in bars:
                    if quit_.is_set():
                        return
                    results.append(fx.send("USDJPY", "H1", [b]))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which reports it
            errors.append(exc)

    t = threading.Thread(target=bot, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 120
        while len(results) < 40 and t.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        srv.kill()
        killed_at = len(results)
        srv = Server(args, log, env=env)
        t.join(300)
        assert not t.is_alive(), "the client did not finish"
    finally:
        quit_.set()
        srv.stop()
    assert not errors, f"{errors[0]!r}\n{srv.tail()}"
    assert 40 <= killed_at < 120
    assert sum(r.attempts for r in results) > len(bars), "no request failed: the kill did not land mid-stream"
    want = reference(CFG, ens, bars)
    for i, (r, w) in enumerate(zip(results, want, strict=True)):
        got = plain(r.decisions[0])
        assert got == w, (
            f"bar {i} (killed after {killed_at} answers; attempts {r.attempts}, resent {r.resent}): "
            + "; ".join(f"{k}: {got[k]!r} != {w[k]!r}" for k in w if got[k] != w[k])[:3000]
        )
    assert [ts for s, ts in audit_lines(state)] == [int(t) for t in bars.ts]
    report = verify(state / "audit")
    assert report.problem is None, report.problem


# -- 4xx: typed, renumbered, never retried -----------------------------------------------------------------------------
def test_409_out_of_order_and_duplicate(server: ThreadServer, ens) -> None:
    bars = series("USDCHF", 0, 8)
    want = reference(CFG, ens, bars)
    with client(server.url, batch_size=2) as fx:
        fx.send("USDCHF", "H1", bars[:5])
        n409 = server.posts(409)
        # bars 5 and 6 go in the first request; the late bar is the second request's bars[0], the caller's bars[2]
        late = [bars[5], bars[6], {**_as_dict(bars[2]), "ts": int(bars.ts[2]) + 1800 * 10**9}]
        with pytest.raises(Conflict) as ei:
            fx.send("USDCHF", "H1", late)
        e = ei.value
        assert (e.status, e.kind, e.index, e.field, e.accepted, e.symbol) == (
            409,
            "out_of_order",
            2,
            "bars[2].ts",
            2,
            "USDCHF",
        )
        assert "bars[2]" in e.message and "bars[0]" not in e.message
        assert [plain(d) for d in e.decisions] == want[5:7]
        assert server.posts(409) == n409 + 1  # one request, not retried
        # a different bar at an accepted bar's time (an old one, the last one); the exact one is a resend
        for old in (bars[2], bars[6]):
            with pytest.raises(Conflict) as ei:
                fx.bar("USDCHF", "H1", {**_as_dict(old), "volume": old.volume + 1})
            assert (ei.value.kind, ei.value.index, ei.value.accepted) == ("duplicate", 0, 0)
        assert server.posts(409) == n409 + 3
        r = fx.send("USDCHF", "H1", bars[6:8])
        assert r.resent == (0,)
        assert [plain(d) for d in r.decisions] == want[6:8]


def _as_dict(b) -> dict:
    return {k: getattr(b, k) for k in ("ts", "open", "high", "low", "close", "volume", "spread")}


def test_422_404_413(server: ThreadServer) -> None:
    bars = series("EURJPY", 0, MAX_BARS + 1)
    with client(server.url, batch_size=MAX_BARS + 1) as fx:
        before = {s: server.posts(s) for s in (404, 413, 422)}
        with pytest.raises(TooLarge) as ei:
            fx.send("EURJPY", "H1", bars)
        assert (ei.value.kind, ei.value.field, ei.value.accepted) == ("too_large", "bars", 0)
        assert "max_bars" in ei.value.message
        assert fx.last_ts("EURJPY") is None  # nothing accepted
        b = _as_dict(bars[0])
        with pytest.raises(Invalid) as ei:
            fx.bar("EURJPY", "H1", {**b, "high": b["low"] - 0.001})
        assert (ei.value.status, ei.value.kind, ei.value.index) == (422, "refused", 0)
        assert "high" in ei.value.message
        assert ei.value.body["error"]["decision"]["first_veto"] == "input"
        with pytest.raises(Invalid) as ei:
            fx.bar("EURJPY", "H4", b)
        assert (ei.value.kind, ei.value.field, ei.value.index) == ("invalid", "timeframe", None)
        with pytest.raises(UnknownSymbol) as ei:
            fx.bar("XAUUSD", "H1", b)
        assert (ei.value.status, ei.value.kind, ei.value.field) == (404, "unknown_symbol", "symbol")
        assert fx.last_ts("EURJPY") is None
        assert {s: server.posts(s) for s in (404, 413, 422)} == {
            404: before[404] + 1,
            413: before[413] + 1,
            422: before[422] + 2,
        }


def test_token(server: ThreadServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The token goes in Authorization: Bearer (given, or from $FXGATE_TOKEN); without it every endpoint but
    /v1/health is a 401 Unauthorized, not retried."""
    monkeypatch.delenv("FXGATE_TOKEN", raising=False)
    b = series("GBPJPY", 0, 1)
    n401 = server.posts(401)
    with FxgateClient(server.url, backoff=0.01) as fx:
        assert fx.health()["status"] == "ok"
        with pytest.raises(Unauthorized) as ei:
            fx.config()
        assert (ei.value.status, ei.value.kind) == (401, "unauthorized")
        with pytest.raises(Unauthorized):
            fx.send("GBPJPY", "H1", b)
    with FxgateClient(server.url, token="wrong", backoff=0.01) as fx, pytest.raises(Unauthorized):
        fx.symbols()
    assert server.posts(401) == n401 + 1
    monkeypatch.setenv("FXGATE_TOKEN", TOKEN + "\n")  # as read from a file
    with FxgateClient(server.url) as fx:
        assert fx.config()["config_hash"] == CFG.hash
        assert {s["symbol"] for s in fx.symbols()} == set(SYMBOLS)


# -- resume ------------------------------------------------------------------------------------------------------------
def test_resume_sends_only_later_bars(server: ThreadServer, ens) -> None:
    """After 30 of 60 bars, resume(all 60) sends bars 30..59 only (nothing is answered as a resend)."""
    bars = series("NZDUSD", 0, 60)
    want = reference(CFG, ens, bars)
    with client(server.url) as fx:
        assert fx.resume("NZDUSD", bars[:30]).skipped == 0
        resent = server.metric("fxgate_bars_total", outcome="resent")
        r = fx.resume("NZDUSD", bars)
        assert (r.skipped, r.resent, len(r)) == (30, (), 30)
        assert [plain(d) for d in r.decisions] == want[30:]
        assert fx.resume("NZDUSD", bars).skipped == 60
        assert fx.last_ts("NZDUSD") == int(bars.ts[-1])
    assert server.metric("fxgate_bars_total", outcome="resent") == resent


# -- refused before sending --------------------------------------------------------------------------------------------
def test_bad_bars_refused_before_sending(server: ThreadServer) -> None:
    bars = series("USDCAD", 100, 103)
    good = [_as_dict(b) for b in bars]
    naive = datetime.fromtimestamp(good[2]["ts"] // 10**9, tz=UTC).replace(tzinfo=None)
    cases = [
        ({**good[2], "close": math.nan}, "bars[2].close", "finite"),
        ({**good[2], "spread": math.inf}, "bars[2].spread", "finite"),
        ({**good[2], "ts": naive}, "bars[2].ts", "no time zone"),
        ({**good[2], "ts": naive.isoformat()}, "bars[2].ts", "broker"),
        ({**good[2], "tick_volume": 3}, "bars[2].tick_volume", "unknown field"),
        ({k: v for k, v in good[2].items() if k != "volume"}, "bars[2].volume", "missing"),
        ({**good[2], "high": "1.1"}, "bars[2].high", "number"),
    ]
    n = server.metric("fxgate_requests_total", path="/v1/bars", status="200")
    with client(server.url, batch_size=1) as fx:
        for bad, field, words in cases:
            with pytest.raises(BarInputError) as ei:
                fx.send("USDCAD", "H1", [*good[:2], bad])
            assert (ei.value.index, ei.value.field) == (2, field)
            assert words in str(ei.value)
        with pytest.raises(BarInputError, match="is a USDCAD bar but is sent as EURUSD"):
            fx.send("EURUSD", "H1", bars)
        frame = bars.to_pandas()
        frame.iloc[1, frame.columns.get_loc("low")] = np.nan
        with pytest.raises(BarInputError) as ei:
            fx.send("USDCAD", "H1", frame)
        assert ei.value.field == "bars[1].low"
        with pytest.raises(TypeError, match="for one bar use"):
            fx.send("USDCAD", "H1", good[0])
    assert server.metric("fxgate_requests_total", path="/v1/bars", status="200") == n  # nothing was sent


def test_times() -> None:
    """Every accepted form of a bar time is the same int nanoseconds UTC; naive ones are refused."""
    ns = 1_492_592_400 * 10**9  # 2017-04-19T09:00:00Z
    cest = timezone(timedelta(hours=2))
    forms = [
        ns,
        np.int64(ns),
        "2017-04-19T09:00:00Z",
        "2017-04-19T11:00:00+02:00",
        datetime(2017, 4, 19, 11, tzinfo=cest),
        pd.Timestamp("2017-04-19 09:00:00", tz="UTC"),
        pd.Timestamp("2017-04-19 12:00:00", tz="Europe/Moscow"),
        np.datetime64("2017-04-19T09:00:00"),
    ]
    assert [to_ns(f) for f in forms] == [ns] * len(forms)
    assert to_ns(pd.Timestamp(ns + 123, tz="UTC")) == ns + 123  # nanoseconds survive
    assert to_ns(pd.Timestamp("2017-04-19 09:00:00"), naive_utc=True) == ns  # a DataFrame's naive index: UTC
    naive_frame = pd.DataFrame(
        {"open": [1.0], "high": [1.0], "low": [1.0], "close": [1.0], "volume": [1.0]},
        index=pd.DatetimeIndex([pd.Timestamp("2017-04-19 09:00:00")]),
    )
    assert _frame_rows(naive_frame)[0]["ts"] == ns
    for bad in (
        datetime(2017, 4, 19, 9),
        "2017-04-19T09:00:00",
        pd.Timestamp("2017-04-19 09:00:00"),
        True,
        1.5e18,
        -1,
        "yesterday",
        np.datetime64("NaT"),
        pd.NaT,
    ):
        with pytest.raises(BarInputError):
            to_ns(bad)


def test_protocol_error_on_mismatched_answer(server: ThreadServer) -> None:
    """A 200 whose Decisions are not one per bar with the bar's time is a ProtocolError, never a silent drop."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    body = json.dumps({"symbol": "EURUSD", "accepted": 1, "resent": [], "decisions": [{"ts": 1}]}).encode()

    def answer() -> None:
        conn, _ = srv.accept()
        with conn:
            buf = bytearray()
            Proxy._read_message(conn, buf)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    bars = series("EURUSD", 0, 2)
    with FxgateClient(f"http://127.0.0.1:{port}", retries=0) as fx, pytest.raises(ProtocolError, match="1 Decision"):
        fx.send("EURUSD", "H1", bars)
    t.join(10)
    srv.close()


def test_client_arguments() -> None:
    for kw, words in (
        ({"url": "127.0.0.1:8750"}, "http://host:port"),
        ({"url": "ftp://x"}, "http://host:port"),
        ({"retries": -1}, "retries"),
        ({"timeout": 0}, "timeout"),
        ({"backoff": math.nan}, "backoff"),
        ({"batch_size": 0}, "batch_size"),
        ({"token": "a\nb"}, "line break"),
    ):
        with pytest.raises(ValueError, match=words):
            FxgateClient(**kw)
