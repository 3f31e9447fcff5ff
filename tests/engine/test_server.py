"""``fxgate serve`` over real HTTP on loopback: the API's rules, auth, limits, metrics, the committed spec, and the
shared LLM that never makes one symbol wait for another's call.

Each test runs the real FastAPI app under a real uvicorn server in a thread on a free port and talks to it with
httpx over TCP; the service object is at hand for the state checks (the gate's own snapshot of its state)."""

from __future__ import annotations

import json
import math
import os
import stat
import threading
import time
from dataclasses import replace

import httpx
import numpy as np
import pytest
import uvicorn
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from fxgate.engine.audit_verify import verify
from fxgate.engine.cli import cli
from fxgate.engine.config import config_from_dict
from fxgate.engine.gate import Gate
from fxgate.engine.llm_setup import LlmStack
from fxgate.engine.loader import sample_bars
from fxgate.engine.server import OPENAPI_PATH, create_app
from fxgate.engine.service import BarService
from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
from fxgate.models.labels import LabelSpec
from fxgate.models.llm.judge import JudgeVerdict

BARS = sample_bars()
FAST = {"l2": {"enabled": False}, "l3": {"enabled": False}}


class Live:
    """The app of ``service`` under uvicorn in a thread, on a free loopback port."""

    def __init__(self, service: BarService, token: str | None = None) -> None:
        self.service = service
        cfg = uvicorn.Config(create_app(service, token=token), host="127.0.0.1", port=0, log_level="error")
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def post(self, symbol: str, bars: list[dict], **kw) -> httpx.Response:
        # json.dumps writes NaN and Infinity as Python does (bots do too); the server must refuse them by field
        body = json.dumps({"symbol": symbol, "timeframe": "H1", "bars": bars})
        return self.http.post("/v1/bars", content=body, headers={"content-type": "application/json"}, **kw)

    def stop(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(60)


@pytest.fixture
def live(tmp_path):
    started: list[Live] = []

    def start(overrides: dict | None = None, token: str | None = None, **kw) -> Live:
        cfg = config_from_dict({**FAST, **(overrides or {})})
        s = Live(BarService(cfg, timeframe="H1", state_dir=tmp_path / f"state{len(started)}", **kw), token)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def row(i: int, iso: bool = True, **change) -> dict:
    """Sample bar ``i`` as the API takes it (ts as ISO-8601 with Z, or int ns)."""
    ts = int(BARS.ts[i])
    t = np.datetime_as_string(np.datetime64(ts, "ns"), unit="s") + "Z" if iso else ts
    d = {"ts": t, "open": float(BARS.open[i]), "high": float(BARS.high[i]), "low": float(BARS.low[i])}
    d |= {"close": float(BARS.close[i]), "volume": float(BARS.volume[i])}
    return d | change


def state(service: BarService, symbol: str) -> tuple[str, int, list[int]]:
    """Everything the symbol's gate holds (its own copy of its state, as comparable text), its refused-bar count and
    its far-gap run."""
    g = service.pool.gate(symbol)
    with g._lock:
        return repr(g._snapshot()), g.rejected, g.intake.gap_run


def no_latency(d):
    if isinstance(d, dict):
        return {k: no_latency(v) for k, v in d.items() if k != "latency_us"}
    if isinstance(d, list):
        return [no_latency(v) for v in d]
    return d


@pytest.fixture(scope="module")
def ens():
    e = TreeEnsemble()
    e.fit(
        BARS[:800], LabelSpec("next", 1), EnsembleConfig(n_estimators=8, max_depth=3, quantiles=False), evaluate=False
    )
    return e


# -- the spec ----------------------------------------------------------------------------------------------------------
def test_served_openapi_equals_the_committed_file(live):
    s = live(token="t0ken")
    served = s.http.get("/openapi.json").json()
    committed = json.loads(OPENAPI_PATH.read_text())
    assert served == committed, (
        "engine/openapi.json is stale: regenerate it with `fxgate serve --openapi engine/openapi.json`"
    )
    assert set(served["paths"]) == {"/v1/bars", "/v1/health", "/v1/config", "/v1/symbols", "/metrics"}
    assert served["paths"]["/v1/symbols"]["get"]["security"] == [{"bearer": []}]
    assert "security" not in served["paths"]["/v1/health"]["get"]


# -- what a bar gets -------------------------------------------------------------------------------------------------
def test_decisions_over_http_equal_the_in_process_gate(live, ens):
    s = live(ensemble=ens)
    gate = Gate(s.service.config, ens, timeframe="H1", symbol="EURUSD")
    want = [gate.on_bar(replace(BARS[i], symbol="EURUSD", spread=None)).to_dict() for i in range(900, 960)]
    got = []
    for lo in range(900, 960, 7):  # batches, ts as ISO and as int ns
        r = s.post("EURUSD", [row(i, iso=i % 2 == 0) for i in range(lo, min(lo + 7, 960))])
        assert r.status_code == 200, r.text
        got += r.json()["decisions"]
    assert no_latency(got) == no_latency(want)
    assert any(d["layers"][0]["score"] is not None for d in got)  # out of sample: Layer 1 scored these bars
    rep = verify(s.service.audit_dir)
    assert rep.ok and rep.lines == 60, str(rep)


def test_a_bad_bar_in_a_batch_keeps_the_bars_before_it(live):
    s = live()
    r = s.post("EURUSD", [row(0), row(1), row(2, close=math.nan), row(3)])
    assert r.status_code == 422
    body = r.json()
    assert body["error"]["index"] == 2 and body["error"]["field"] == "bars[2].close"
    assert body["accepted"] == 2 and [d["ts"] for d in body["decisions"]] == [int(BARS.ts[0]), int(BARS.ts[1])]
    assert s.service.pool.gate("EURUSD").intake.last_ts == int(BARS.ts[1])  # bar 3 was not looked at
    assert s.service.audit.seq == 2


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        ({"close": "1.07"}, "bars[0].close", "must be a number"),
        ({"volume": None}, "bars[0].volume", "must be a number"),
        ({"ts": "2017-04-19T09:00:00"}, "bars[0].ts", "no time zone"),
        ({"ts": 1.5e18}, "bars[0].ts", "ISO-8601"),
        ({"sprad": 0.0001}, "bars[0].sprad", "unknown field"),
        ({"high": 0.5}, None, "do not contain"),  # the gate's own bar rule: kind "refused"
    ],
)
def test_invalid_bars_are_422_naming_the_field_and_change_nothing(live, bad, field, words):
    s = live()
    assert s.post("EURUSD", [row(0)]).status_code == 200
    before = state(s.service, "EURUSD")
    r = s.post("EURUSD", [row(1, **bad)])
    err = r.json()["error"]
    assert r.status_code == 422 and err["field"] == field and words in err["message"], err
    assert err["kind"] == ("refused" if field is None else "invalid")
    after = state(s.service, "EURUSD")
    assert after == (before[0], before[1] + (field is None), before[2])  # the gate counts the bars it refuses
    missing = dict(row(1))
    del missing["low"]
    r = s.post("EURUSD", [missing])
    assert r.status_code == 422 and r.json()["error"]["field"] == "bars[0].low"


def test_out_of_order_and_duplicates_are_409_and_exact_resends_get_their_logged_decision(live):
    s = live()
    assert s.post("EURUSD", [row(i) for i in range(5)]).status_code == 200
    before, seq = state(s.service, "EURUSD"), s.service.audit.seq
    r = s.post("EURUSD", [row(2, close=row(2)["close"] + 1e-5)])  # a different bar at an accepted time
    assert r.status_code == 409 and r.json()["error"]["kind"] == "duplicate"
    r = s.post("EURUSD", [row(4, iso=False, volume=1.0)])
    assert r.status_code == 409 and r.json()["error"]["kind"] == "duplicate"
    assert state(s.service, "EURUSD") == before and s.service.audit.seq == seq
    # an exact resend (ts written either way) followed by new bars: the old ones come from the log, once
    first = s.post("EURUSD", [row(5)]).json()["decisions"][0]
    r = s.post("EURUSD", [row(4, iso=False), row(5), row(6)])
    assert r.status_code == 200 and r.json()["resent"] == [0, 1]
    assert r.json()["decisions"][1] == first
    assert s.service.audit.seq == seq + 2  # bars 5 and 6, each logged once
    # older than the remembered window: out of order
    s.service._recent["EURUSD"].clear()
    r = s.post("EURUSD", [row(3)])
    assert r.status_code == 409 and r.json()["error"]["kind"] == "out_of_order"


def test_unknown_symbols_are_404_when_refused_and_bad_names_422(live):
    s = live({"server": {"unknown_symbols": "refuse", "symbols": ["EURUSD"]}})
    assert s.post("EURUSD", [row(0)]).status_code == 200
    r = s.post("GBPUSD", [row(0)])
    assert r.status_code == 404 and r.json()["error"]["kind"] == "unknown_symbol"
    assert "GBPUSD" not in s.service.pool
    r = s.post("../etc", [row(0)])
    assert r.status_code == 422 and r.json()["error"]["field"] == "symbol"
    r = s.http.post("/v1/bars", json={"symbol": "EURUSD", "timeframe": "M5", "bars": [row(1)]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "timeframe"


def test_a_refused_request_for_a_new_symbol_leaves_no_gate_behind(live):
    s = live()
    for bad in ([row(0, close=math.nan)], [row(0, high=0.5)]):  # a type error; a bar the gate itself refuses
        assert s.post("MADEUP", bad).status_code == 422
        assert "MADEUP" not in s.service.pool and s.http.get("/v1/health").json()["symbols"] == 0
    assert not list((s.service.snapshot_dir).iterdir())
    assert s.post("MADEUP", [row(0), row(1, close=math.nan)]).status_code == 422  # one bar accepted: it stays
    assert s.service.pool.gate("MADEUP")._bars == 1


def test_bodies_over_the_limit_are_413_before_parsing(live):
    s = live({"server": {"max_body_bytes": 4096, "max_bars": 3}})
    big = [row(i) for i in range(60)]
    r = s.post("EURUSD", big)
    assert r.status_code == 413 and r.json()["error"]["kind"] == "too_large"
    # few enough bars, but padded past the byte limit (JSON allows the whitespace)
    payload = json.dumps({"symbol": "EURUSD", "timeframe": "H1", "bars": big[:2]}).encode() + b" " * 5000

    def chunks():  # no Content-Length: chunked transfer, counted as it streams in
        for k in range(0, len(payload), 1000):
            yield payload[k : k + 1000]

    r = s.http.post("/v1/bars", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "max_body_bytes = 4096" in r.json()["error"]["message"]
    r = s.post("EURUSD", big[:4])  # small enough in bytes, too many bars
    assert r.status_code == 413 and r.json()["error"]["field"] == "bars"
    assert s.service.audit.seq == 0 and "EURUSD" not in s.service.pool  # refused before a gate was made
    r = s.http.post("/v1/bars", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not JSON" in r.json()["error"]["message"]


# -- auth ------------------------------------------------------------------------------------------------------------
def test_a_token_guards_every_endpoint_but_health(live):
    s = live(token="s3cret-token")
    anon = httpx.Client(base_url=s.url, timeout=30)
    wrong = httpx.Client(base_url=s.url, timeout=30, headers={"Authorization": "Bearer s3cret-tokeN"})
    basic = httpx.Client(base_url=s.url, timeout=30, headers={"Authorization": "Basic s3cret-token"})
    body = {"symbol": "EURUSD", "timeframe": "H1", "bars": [row(0)]}
    for c in (anon, wrong, basic):
        for path in ("/v1/config", "/v1/symbols", "/metrics"):
            r = c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (path, r.text)
        r = c.post("/v1/bars", json=body)
        assert r.status_code == 401 and r.json()["error"]["kind"] == "unauthorized"
        assert c.get("/v1/health").status_code == 200
    assert s.service.audit.seq == 0 and len(s.service.pool) == 0
    assert s.post("EURUSD", [row(0)]).status_code == 200
    assert s.http.get("/v1/symbols").json()["symbols"][0]["bars"] == 1
    for c in (anon, wrong, basic):
        c.close()


def test_serve_refuses_a_public_address_without_a_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FXGATE_TOKEN"}
    r = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--timeframe", "H1", "--state", str(tmp_path)], env=env)
    assert r.exit_code == 2 and "not a loopback address and no token" in r.output, r.output
    assert not (tmp_path / "audit").exists()  # refused before anything was opened
    token = tmp_path / "token"
    token.write_text("abc123\n")
    token.chmod(0o644)
    r = CliRunner().invoke(
        cli, ["serve", "--host", "0.0.0.0", "--timeframe", "H1", "--token-file", str(token)], env=env
    )
    assert r.exit_code == 2 and "chmod 600" in r.output, r.output
    assert stat.S_IMODE(token.stat().st_mode) == 0o644


# -- metrics ---------------------------------------------------------------------------------------------------------
def test_metrics_count_what_happened(live, ens):
    s = live(ensemble=ens)
    r = s.post("EURUSD", [row(i) for i in range(900, 940)])
    actions = [d["action"] for d in r.json()["decisions"]]
    vetoes = [d["first_veto"] for d in r.json()["decisions"]]
    s.post("EURUSD", [row(941, close=math.inf)])
    s.post("EURUSD", [row(939)])  # exact resend
    s.post("GBPUSD", [row(0)])
    text = s.http.get("/metrics").text
    got = {}
    for fam in text_string_to_metric_families(text):  # prometheus-client's own parser, not ours
        for smp in fam.samples:
            got[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
    assert got[("fxgate_bars_total", (("outcome", "accepted"),))] == 41
    assert got[("fxgate_bars_total", (("outcome", "rejected"),))] == 1
    assert got[("fxgate_bars_total", (("outcome", "resent"),))] == 1
    for a in set(actions):
        assert got[("fxgate_decisions_total", (("action", a),))] == actions.count(a) + (a == "NONE")
    layers = [v.partition(":")[0] for v in vetoes if v] + ["L1"]  # GBPUSD bar 0: no model on it yet... L1 vetoes
    for lay in set(layers):
        assert got[("fxgate_vetoes_total", (("layer", lay),))] == layers.count(lay)
    modules = [v.partition(":")[2] for v in vetoes if v and ":" in v]
    for m in set(modules):
        assert got[("fxgate_module_vetoes_total", (("module", m),))] == modules.count(m)
    assert got[("fxgate_requests_total", (("path", "/v1/bars"), ("status", "200")))] == 3
    assert got[("fxgate_requests_total", (("path", "/v1/bars"), ("status", "422")))] == 1
    assert got[("fxgate_layer_latency_seconds_count", (("layer", "L1"),))] == 41
    assert got[("fxgate_llm_queue_depth", ())] == 0 and got[("fxgate_symbols", ())] == 2
    assert got[("fxgate_audit_seq", ())] == 41


# -- the shared LLM --------------------------------------------------------------------------------------------------
class HeldJudge:
    """A deliberately slow judge: each call waits until the test lets it go, then fails closed."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.calls = 0

    def judge(self, values, direction) -> JudgeVerdict:
        self.calls += 1
        self.entered.set()
        assert self.release.wait(120), "the test never released the judge"
        return JudgeVerdict(False, None, None, "held judge: no answer", None)


def test_a_slow_llm_call_for_one_symbol_never_blocks_another(live, ens):
    judge = HeldJudge()
    stack = LlmStack(judge=judge)
    s = live({"mode": "full", "l2": {"enabled": True}}, ensemble=ens, llm=stack)
    out: list[httpx.Response] = []

    def send(symbol: str, i: int) -> None:
        with httpx.Client(base_url=s.url, timeout=120) as c:
            out.append(c.post("/v1/bars", json={"symbol": symbol, "timeframe": "H1", "bars": [row(i)]}))

    def eurusd() -> None:  # bar by bar until one reaches the judge (Layer 1 proposes a direction on it)
        for i in range(900, 1000):
            send("EURUSD", i)
            if judge.entered.is_set():
                return

    threads = [threading.Thread(target=eurusd)]
    threads[0].start()
    try:
        assert judge.entered.wait(120), "no EURUSD bar reached the judge"
        time.sleep(0.2)
        eur = s.service.pool.gate("EURUSD")
        assert eur.llm_in_flight == 1 and not judge.release.is_set()
        # while EURUSD's judge call is held: GBPUSD's bars that need no LLM are answered at once (in sample for
        # this bundle: Layer 1 proposes nothing) ...
        fast = httpx.Client(base_url=s.url, timeout=20)  # a blocked event loop would time this out
        r = fast.post(
            "/v1/bars", json={"symbol": "GBPUSD", "timeframe": "H1", "bars": [row(i) for i in range(780, 800)]}
        )
        assert r.status_code == 200 and r.json()["accepted"] == 20
        # ... and a GBPUSD bar whose own judge call queues behind still has its modules updated before it
        gbp = s.service.pool.gate("GBPUSD")
        threads.append(threading.Thread(target=send, args=("GBPUSD", 850)))
        threads[1].start()
        deadline = time.monotonic() + 20
        while gbp._bars < 21 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gbp._bars == 21 and gbp.intake.last_ts == int(BARS.ts[850])
        assert not judge.release.is_set()  # all of that with EURUSD's call still held
        depth = fast.get("/metrics").text
        assert "fxgate_llm_queue_depth 2.0" in depth or "fxgate_llm_queue_depth 1.0" in depth
        fast.close()
    finally:
        judge.release.set()
        for t in threads:
            t.join(120)
    assert all(r.status_code == 200 for r in out)
    assert judge.calls >= 2
    assert s.service.pool.gate("EURUSD").llm is s.service.pool.gate("GBPUSD").llm is stack  # one LLM for all
