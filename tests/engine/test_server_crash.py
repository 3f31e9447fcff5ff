"""``kill -9`` of a live ``fxgate serve`` loses no acknowledged bar and logs none twice.

A real server process with a small Layer-1 bundle (so later bars are out of sample: the models give probabilities
and the outcome-based modules learn from matured forecasts) gets 2,000 bars of four symbols, interleaved, in
batches of 1..5. At five seeded random points it is killed with SIGKILL -- between two requests; at a random
moment of a request in flight; and, while a request is in flight, the instant the server has appended an audit
line, is writing a snapshot (its temporary exists), or has renamed a snapshot into place (the client watches the
state directory) -- restarted on the same state directory, and the client resends what it has no answer for,
preceded by every symbol's last acknowledged bar (an idempotent retry). An uninterrupted server on a fresh state
directory gets the same batches. Then:

* every Decision of the killed run equals the uninterrupted run's, latencies aside, and every answer -- first or
  resent -- equals the line the audit log holds for that bar, latencies included;
* ``fxgate audit verify`` passes on both logs (anchored on the head the server reports last);
* every bar sent is logged exactly once, with the bar as sent, and the killed run's log equals the uninterrupted
  run's in (symbol, ts, Decision minus latencies), line by line.

The killed run snapshots every 4 bars per symbol, so a kill nearly always leaves logged bars after a snapshot
(the write-ahead re-feed then has work; the test asserts it had some). The seed is printed; FXGATE_TEST_SEED
overrides it.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from server_util import FXGATE, Server, receive, send

from fxgate.engine import sample_bars
from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
from fxgate.models.labels import LabelSpec

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("FXGATE_TEST_SEED", "20261128"))
SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD")
PER_SYMBOL = 500  # 2,000 bars in all
TRAIN = 1000  # the bundle is fitted on the sample's first 1,000 bars; the bars sent come after them
MODULES = (
    "vpin",
    "bocpd",
    "uncertainty",
    "execution_cost",
    "adverse_selection",
    "robust_kelly",
    "icir",
    "conformal_prediction",
)

CONFIG = """\
horizon = 2
spread = 0.00008
mode = "full"          # every layer evaluated on every bar: the Decisions compared carry every module's score

[l1]
threshold = 0.5

[l2]
enabled = false

[l3]
enabled = false

[l4]
modules = {modules}

[l4.params.vpin]
min_history = 20
history = 100

[l4.params.bocpd]
calib_bars = 50

[l4.params.uncertainty]
min_history = 20

[server]
snapshot_every = {snapshot_every}
fsync_every = {fsync_every}
"""


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small Layer-1 bundle (10 trees a booster) on the sample's first bars, written as `fxgate fit` would."""
    e = TreeEnsemble()
    e.fit(sample_bars()[:TRAIN], LabelSpec("next", 1), EnsembleConfig(n_estimators=10, max_depth=3), evaluate=False)
    return e.save(tmp_path_factory.mktemp("bundle") / "l1")


def iso(ts: int) -> str:
    return np.datetime_as_string(np.datetime64(ts, "ns"), unit="s") + "Z"


def feed() -> dict[str, list[dict[str, Any]]]:
    """Per symbol, its bars as a client sends them: the sample after the training bars, shifted in time by 40 bars
    a symbol and scaled by 1 + 0.1 j; times as ISO strings for two symbols and int ns for the other two; a spread
    field on two of them."""
    b = sample_bars()
    out = {}
    for j, s in enumerate(SYMBOLS):
        f = 1.0 + 0.1 * j
        lo = TRAIN + 40 * j
        rows = []
        for k in range(lo, lo + PER_SYMBOL):
            ts = int(b.ts[k])
            row = {
                "ts": iso(ts) if j % 2 == 0 else ts,
                "open": float(b.open[k]) * f,
                "high": float(b.high[k]) * f,
                "low": float(b.low[k]) * f,
                "close": float(b.close[k]) * f,
                "volume": float(b.volume[k]),
            }
            if j < 2:
                row["spread"] = 8e-5 * f
            rows.append(row)
        out[s] = rows
    return out


def ts_ns(bar: dict[str, Any]) -> int:
    t = bar["ts"]
    return t if isinstance(t, int) else int(np.datetime64(t.removesuffix("Z"), "ns").astype(np.int64))


def batches(bars: dict[str, list[dict[str, Any]]], rng: np.random.Generator) -> list[tuple[str, list[dict]]]:
    """The symbols interleaved at random, each symbol's bars in order, in batches of 1..5 bars."""
    pos = dict.fromkeys(bars, 0)
    out = []
    while True:
        left = [s for s in bars if pos[s] < len(bars[s])]
        if not left:
            return out
        s = str(rng.choice(left))
        n = int(rng.integers(1, 6))
        out.append((s, bars[s][pos[s] : pos[s] + n]))
        pos[s] += n


def plain(d: dict[str, Any]) -> dict[str, Any]:
    """A Decision dict without its latencies (the only fields two runs of the same bars may differ in)."""
    d = json.loads(json.dumps(d))
    for v in d["layers"]:
        v.pop("latency_us")
    return d


def layer(d: dict[str, Any], name: str) -> dict[str, Any]:
    (v,) = [v for v in d["layers"] if v["name"] == name]
    return v


def audit_lines(state: Path) -> list[dict[str, Any]]:
    lines = []
    for p in sorted((state / "audit").glob("audit-*.jsonl")):
        lines += [json.loads(x) for x in p.read_bytes().splitlines()]
    return lines


def verify(state: Path, anchor: tuple[int, str]) -> None:
    r = subprocess.run(
        [FXGATE, "audit", "verify", str(state / "audit"), "--anchor", f"{anchor[0]}:{anchor[1]}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, f"fxgate audit verify {state / 'audit'}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"


def refed_bars(srv: Server) -> float:
    """The server's count of bars re-fed from the audit log on start (its /metrics)."""
    status, text = srv.request("GET", "/metrics")
    assert status == 200, text
    m = re.search(r"^fxgate_refed_bars_total (\S+)$", text, re.M)
    assert m, f"/metrics has no fxgate_refed_bars_total:\n{text[:2000]}"
    return float(m.group(1))


class Client:
    """Sends the batches in order to a server that may be killed, keeping what a careful bot keeps: the answer
    to every bar it got one for, and each symbol's last acknowledged bar."""

    def __init__(self, start, state: Path) -> None:
        self.start, self.state = start, state  # start: () -> a Server on the run's state directory
        self.srv = start()
        self.answers: dict[tuple[str, int], dict[str, Any]] = {}  # (symbol, ts) -> Decision dict
        self.last_acked: dict[str, dict[str, Any]] = {}
        self.seconds: list[float] = []  # request times of the current server (to time an in-flight kill)
        self.events: list[str] = []
        self.refed = 0.0  # bars the restarted servers re-fed from the log
        self.logged_unanswered = 0  # bars of interrupted batches the dead server had logged (answered as resends)

    def post(self, symbol: str, bars: list[dict]) -> dict[str, Any]:
        t0 = time.perf_counter()
        status, body = self.srv.request("POST", "/v1/bars", {"symbol": symbol, "timeframe": "H1", "bars": bars})
        self.seconds.append(time.perf_counter() - t0)
        assert status == 200, f"POST {symbol} {len(bars)} bars: {status} {body}\n{self.srv.tail()}"
        return body

    def ack(self, symbol: str, bars: list[dict], body: dict[str, Any]) -> None:
        # "accepted" counts the bars answered, resent ones included (an error's "accepted" is the bad bar's index)
        assert body["accepted"] == len(bars) == len(body["decisions"]), body
        assert set(body["resent"]) <= set(range(len(bars))), body["resent"]
        for bar, d in zip(bars, body["decisions"], strict=True):
            key = (symbol, ts_ns(bar))
            assert d["symbol"] == symbol and d["ts"] == key[1], (key, d["symbol"], d["ts"])
            if key in self.answers:  # an idempotent resend answers with the Decision first given, to the byte
                assert d == self.answers[key], f"{key}: the resend's Decision differs from the first answer"
            self.answers[key] = d
        self.last_acked[symbol] = bars[-1]

    def send(self, symbol: str, bars: list[dict]) -> None:
        self.ack(symbol, bars, self.post(symbol, bars))

    def _probe(self, how: str, symbol: str):
        """A function whose value changes when the server writes what ``how`` waits for: a line appended to the
        audit log; the temporary of ``symbol``'s next snapshot created (the write in progress, before its rename);
        ``symbol``'s snapshot renamed into place (a new inode)."""
        if how == "after_append":
            (newest,) = sorted((self.state / "audit").glob("audit-*.jsonl"))[-1:]
            return lambda: os.stat(newest).st_size
        snapshots = self.state / "snapshots"
        if how == "during_snapshot":  # fxgate.engine.core.atomic names it .fxgate-tmp-<pid>-<token>-<final name>
            tail = f"-{symbol}.fxgate-snapshot"
            return lambda: frozenset(
                e.name for e in os.scandir(snapshots) if e.name.startswith(".") and e.name.endswith(tail)
            )
        path = snapshots / f"{symbol}.fxgate-snapshot"

        def inode() -> int | None:
            try:
                return os.stat(path).st_ino
            except FileNotFoundError:
                return None

        return inode

    def try_kill(self, symbol: str, bars: list[dict], how: str, aim: float) -> bool:
        """Kill the server with SIGKILL, ``how``: "between" (before this batch is sent), "timed" (``aim`` times the
        mean request time after the batch was sent), "after_append" / "after_snapshot" (the moment the server has
        appended an audit line / renamed this symbol's snapshot into place while it works on the batch: the edges
        of the write-ahead order). If the answer arrives first, it is kept and False returned (try again later);
        else restart the server on the same state, resend every symbol's last acknowledged bar and the unanswered
        batch, and return True."""
        answered = None
        body = {"symbol": symbol, "timeframe": "H1", "bars": bars}
        if how == "between":
            self.srv.kill()
            what = "between requests"
        else:
            conn = self.srv.connection()
            try:
                if how == "timed":
                    delay = aim * float(np.mean(self.seconds[-50:]))
                    send(conn, "POST", "/v1/bars", body)
                    time.sleep(delay)
                    self.srv.kill()
                    what = f"{delay * 1e3:.2f} ms after sending"
                else:
                    probe = self._probe(how, symbol)
                    before = probe()
                    send(conn, "POST", "/v1/bars", body)
                    deadline = time.monotonic() + 120  # a safety net against a hung server
                    while probe() == before:
                        if select.select([conn.sock], [], [], 0)[0]:  # the answer is coming: no kill this time
                            status, answer = receive(conn)
                            assert status == 200, (status, answer)
                            self.ack(symbol, bars, answer)
                            return False
                        assert time.monotonic() < deadline, f"no answer within 120 s\n{self.srv.tail()}"
                    self.srv.kill()
                    what = how.replace("_", " ")
                try:
                    status, answered = receive(conn)
                    assert status == 200, (status, answered)
                except (OSError, http.client.HTTPException):
                    answered = None
            finally:
                conn.close()
        self.events.append(
            f"kill -9 {what}, {symbol} batch of {len(bars)}: "
            + ("not sent" if how == "between" else "its answer had arrived" if answered else "no answer")
        )
        print(self.events[-1])
        if answered is not None:
            self.ack(symbol, bars, answered)
        self.restart_and_resend(symbol, [] if answered or how == "between" else bars)
        if how == "between":
            self.send(symbol, bars)
        return True

    def restart_and_resend(self, symbol: str, unanswered: list[dict]) -> None:
        self.srv = self.start()
        self.seconds = []
        self.refed += refed_bars(self.srv)
        status, st = self.srv.request("GET", "/v1/symbols")
        assert status == 200, st
        restored = {x["symbol"]: x["last_ts"] for x in st["symbols"]}
        for s, b in self.last_acked.items():  # nothing acknowledged is missing from the restored state
            assert (restored.get(s) or 0) >= ts_ns(b), (
                f"{s}: the restarted server's last bar is {restored.get(s)}, before the last acknowledged one "
                f"{ts_ns(b)} ({b['ts']}): an acknowledged bar was lost\n{self.srv.tail()}"
            )
        for s in SYMBOLS:
            again = ([self.last_acked[s]] if s in self.last_acked else []) + (unanswered if s == symbol else [])
            if not again:
                continue
            body = self.post(s, again)
            if s in self.last_acked:
                assert body["resent"][:1] == [0], f"{s}: its last acknowledged bar was not answered as a resend: {body}"
                self.logged_unanswered += len(body["resent"]) - 1
            else:
                self.logged_unanswered += len(body["resent"])
            self.ack(s, again, body)


#: the kinds of kill, each done once per run (see Client.try_kill)
KILLS = ("between", "timed", "after_append", "during_snapshot", "after_snapshot")


def run(client: Client, plan: list[tuple[str, list[dict]]], kills: list[tuple[int, str, float]]) -> None:
    """Send the plan; each kill (batch index, how, aim) is tried from its batch on until it has happened."""
    pending = sorted(kills)
    for i, (symbol, bars) in enumerate(plan):
        if pending and i >= pending[0][0]:
            if client.try_kill(symbol, bars, *pending[0][1:]):
                pending.pop(0)
        else:
            client.send(symbol, bars)
    assert not pending, f"kills never happened: {pending}"


@pytest.fixture
def servers():
    """Every server a test starts; whatever still runs when it ends (a failure half-way) is killed."""
    started: list[Server] = []
    yield started
    for srv in started:
        srv.kill()


def test_kill_9_loses_no_acknowledged_bar_and_logs_none_twice(bundle: Path, tmp_path: Path, servers: list) -> None:
    rng = np.random.default_rng(SEED)
    bars = feed()
    plan = batches(bars, rng)
    # one kill of each kind, in random order, each in its own stretch of the run (after its first tenth; a kill
    # waiting for a write is tried from there on until it happens)
    edges = np.linspace(len(plan) // 10, len(plan) * 9 // 10, len(KILLS) + 1).astype(int)
    kills = [
        (int(rng.integers(edges[k], edges[k + 1])), str(how), round(float(rng.uniform(0.05, 0.95)), 3))
        for k, how in enumerate(rng.permutation(KILLS))
    ]
    print(f"test_server_crash seed {SEED} (FXGATE_TEST_SEED overrides): {len(plan)} batches, kills {kills}")

    def server(name: str, snapshot_every: int, fsync_every: int):
        cfg = tmp_path / f"{name}.toml"
        cfg.write_text(
            CONFIG.format(modules=json.dumps(MODULES), snapshot_every=snapshot_every, fsync_every=fsync_every)
        )
        state = tmp_path / f"{name}-state"
        args = ["--config", str(cfg), "--bundle", str(bundle), "--state", str(state), "--timeframe", "H1"]

        def start() -> Server:
            servers.append(Server(args, tmp_path / f"{name}.log"))
            return servers[-1]

        return state, start

    t0 = time.perf_counter()
    crash_state, start_crash = server("killed", snapshot_every=4, fsync_every=1)
    killed = Client(start_crash, crash_state)
    run(killed, plan, kills)
    t1 = time.perf_counter()
    ref_state, start_ref = server("uninterrupted", snapshot_every=1, fsync_every=1)
    ref = Client(start_ref, ref_state)
    run(ref, plan, [])
    t2 = time.perf_counter()
    print(
        f"killed run {t1 - t0:.1f} s ({killed.refed:g} bars re-fed from the log, {killed.logged_unanswered} bars of "
        f"interrupted batches logged before the kill), uninterrupted run {t2 - t1:.1f} s"
    )
    anchors = {}
    for name, c in (("killed", killed), ("uninterrupted", ref)):
        status, h = c.srv.request("GET", "/v1/health")
        assert status == 200, h
        anchors[name] = (h["audit"]["seq"], h["audit"]["head"])
        # a graceful stop: exit 0, or uvicorn re-raising the SIGTERM it handled (never the SIGKILL after the timeout)
        assert c.srv.stop() in (0, -signal.SIGTERM), c.srv.tail()

    n = sum(len(v) for v in bars.values())
    sent = {(s, ts_ns(b)): b for s in SYMBOLS for b in bars[s]}
    assert len(sent) == n == 2000

    # the Decisions: not trivial (the models answered, modules learned from matured outcomes, the vetoes vary)
    ref_plain = {k: plain(d) for k, d in ref.answers.items()}
    assert set(ref_plain) == set(sent)
    l1_scores = [layer(d, "L1")["score"] for d in ref_plain.values()]
    assert sum(s is not None for s in l1_scores) > n // 2, "Layer 1 gave no probabilities: the bundle did not load?"
    vetoes = {d["first_veto"] for d in ref_plain.values()}
    assert len(vetoes) >= 4, vetoes
    matured = [
        m
        for d in ref_plain.values()
        for m in layer(d, "L4")["details"]
        if m["module"] in ("adverse_selection", "robust_kelly") and not m["reason"].startswith("insufficient")
    ]
    assert len(matured) > n // 2, "the outcome-based modules never saw a matured outcome"

    # every Decision of the killed run equals the uninterrupted run's, latencies aside
    assert set(killed.answers) == set(sent)
    diff = [k for k in sent if plain(killed.answers[k]) != ref_plain[k]]
    assert not diff, f"{len(diff)} Decisions differ after the kills, first {diff[0]}:\n" + json.dumps(
        [plain(killed.answers[diff[0]]), ref_plain[diff[0]]], indent=1
    )

    # the audit logs: sound, each bar once and as sent, every answer the logged line, the two logs equal
    for name, state, c in (("killed", crash_state, killed), ("uninterrupted", ref_state, ref)):
        verify(state, anchors[name])
        lines = audit_lines(state)
        keys = [(x["symbol"], x["bar"]["ts"]) for x in lines]
        assert len(keys) == len(set(keys)), f"{name}: a bar is logged twice"
        assert set(keys) == set(sent), f"{name}: logged bars != bars sent"
        for x, k in zip(lines, keys, strict=True):
            want = sent[k]
            assert x["bar"] == {**want, "ts": k[1], "spread": want.get("spread")}, (name, k, x["bar"])
            assert x["decision"] == c.answers[k], f"{name}: the answer for {k} is not the logged Decision"
    got = [(x["symbol"], x["bar"]["ts"], plain(x["decision"])) for x in audit_lines(crash_state)]
    want = [(x["symbol"], x["bar"]["ts"], plain(x["decision"])) for x in audit_lines(ref_state)]
    assert got == want

    assert killed.refed > 0, "no kill left logged bars after a snapshot: the write-ahead re-feed was not exercised"
