"""Schemathesis fuzzing of the HTTP API of ``fxgate serve`` (issue #16, deliverable 8), and the committed OpenAPI
document ``engine/openapi.json`` (valid, every operation usable, every answer documented; test_server.py keeps it
equal to the served one).

A fuzz run sends one request per example, drawn by Hypothesis from: schemathesis' positive and negative cases of
every operation of the served document (and of the same document with the timeframe narrowed to the server's, so
generated bars reach the gate), and *seeded batches*: 1-5 real bars (the bundled EURUSD sample, scaled per symbol)
that follow the symbol's last accepted bar, clean, after an exact resend of accepted bars, or with one bar broken in
one known way (a missing, extra, mistyped, NaN, infinite or out-of-range field, a zone-less or float time,
high < low, an older or a repeated time, a new symbol, a body or batch over the limits, ...). Before Hypothesis
draws, one explicit seeded request of every kind is sent, so each answer is met whatever the draws. Each request
carries the server's token, none, or a wrong one (a prefix of it, another scheme). For every request:

* no 5xx, and the answer conforms to the document (schemathesis' ``not_a_server_error``,
  ``status_code_conformance``, ``content_type_conformance``, ``response_headers_conformance``,
  ``response_schema_conformance``, ``negative_data_rejection``). Checks that send requests of their own
  (``ignored_auth``, ``use_after_free``, ...) are left out: every request the server sees is one this test recorded;
* without the token every endpoint but ``GET /v1/health`` answers 401, with it never;
* a seeded request is answered as the contract says: status, kind, index, field, the accepted prefix, and an exact
  resend gets the very Decision answered the first time.

Then, **no state corruption**: every symbol's state (``GET /v1/symbols``, the audit log's bars and Decisions but
latencies, the snapshots byte for byte once both servers are closed, and a server restarted on the fuzzed state
directory) equals that of a fresh server sent only what the fuzzed one said it took: each 2xx request whole, the
accepted prefix of a 4xx batch (the contract accepts the bars before a bad one), and a bar the gate itself refused
(422 ``refused``: the gate counts refused bars and notes a far-gap run, so that bar is state too). Whatever else was
answered 4xx (401, 404, 409, 413, 422 ``invalid``) must have changed nothing.

The main run is in-process (schemathesis' ``from_asgi``, new symbols get a gate); a shorter one drives a real
``fxgate serve`` subprocess on loopback (unknown symbols refused), replays on a second one and compares the same way.
Hypothesis must not shrink or replay here (the server's state carries from one example to the next), so bad answers
are collected and reported after the run, with the request and the answer; the seed is printed
(``FXGATE_TEST_SEED``), the sizes are ``FXGATE_FUZZ_EXAMPLES`` / ``FXGATE_FUZZ_EXAMPLES_HTTP``.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from fxgate.engine import sample_bars
from fxgate.engine.audit import audit_files
from fxgate.engine.audit_verify import verify
from fxgate.engine.config import load_config
from fxgate.engine.service import BarService

SEED = int(os.environ.get("FXGATE_TEST_SEED", "20261202"))
ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "engine" / "openapi.json"
TOKEN = "fuzz-4f1c2b9e-token"
BARS = sample_bars()
FIRST = 1000  # seeded bars start here (the Layer-1 model is fitted on the bars before)
SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY")
SCALE = {"EURUSD": 1.0, "GBPUSD": 1.21, "USDJPY": 104.0}
MAX_BARS = 40
MAX_BODY = 65_536
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
CONFIG = f"""
horizon = 2
[l2]
enabled = false
[l3]
enabled = false
[server]
snapshot_every = 3
fsync_every = 1
max_bars = {MAX_BARS}
max_body_bytes = {MAX_BODY}
"""


# -- the servers ------------------------------------------------------------------------------------------------------
def write_config(path: Path, extra: str = "") -> Path:
    path.write_text(CONFIG + extra)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Exchange:
    """One POST /v1/bars of the fuzz: what was sent (the JSON document before serialization) and the answer."""

    payload: Any
    status: int
    answer: Any
    source: str


@dataclass
class Fuzz:
    """The recorded fuzz: every POST /v1/bars in order, what went wrong, and what was sent."""

    posts: list[Exchange] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    tally: Counter = field(default_factory=Counter)
    # per seeded symbol: every bar of ours the server accepted (as sent) and its Decision, by ts (ns)
    accepted: dict[str, dict[int, tuple[dict[str, Any], dict[str, Any]]]] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)  # the newest accepted ts per symbol, from the answers
    refuse_unknown: bool = False  # the server's [server] unknown_symbols = "refuse"

    def fail(self, what: str, sent: Any, status: int, body: Any) -> None:
        self.failures.append(f"{what}\n  sent: {_short(sent)}\n  got {status}: {_short(body)}")


def _short(x: Any, n: int = 600) -> str:
    s = x.decode(errors="replace") if isinstance(x, bytes) else json.dumps(x, default=repr)
    return s if len(s) <= n else s[:n] + f"... ({len(s)} chars)"


# -- seeded batches ---------------------------------------------------------------------------------------------------
def iso_forms(ts: int, form: int) -> Any:
    """One bar time in one of the forms the API takes: int ns, ISO with Z, with +00:00, with +02:00, with fraction."""
    if form == 0:
        return int(ts)
    s = np.datetime_as_string(np.datetime64(int(ts), "ns"), unit="s")
    if form == 1:
        return s + "Z"
    if form == 2:
        return s + "+00:00"
    if form == 3:  # the same instant in another zone
        local = np.datetime_as_string(np.datetime64(int(ts) + 2 * 3600 * 10**9, "ns"), unit="s")
        return local + "+02:00"
    return s + ".000000Z"


def sample_bar(symbol: str, i: int, form: int, with_spread: bool) -> dict[str, Any]:
    f = SCALE[symbol]
    bar = {
        "ts": iso_forms(int(BARS.ts[i]), form),
        "open": round(float(BARS.open[i]) * f, 6),
        "high": round(float(BARS.high[i]) * f, 6),
        "low": round(float(BARS.low[i]) * f, 6),
        "close": round(float(BARS.close[i]) * f, 6),
        "volume": float(BARS.volume[i]),
    }
    if with_spread:
        bar["spread"] = round(8e-5 * f, 8)
    return bar


BROKEN = (
    "missing", "extra", "string", "null", "bool", "nan", "inf", "huge", "zoneless", "float_ts", "big_ts",
    "high_low", "neg_volume", "zero_price", "out_of_order", "duplicate",
)  # fmt: skip
WHOLE = ("timeframe", "symbol", "too_many", "too_big", "not_object", "empty", "extra_top", "new_symbol")


@dataclass
class Seeded:
    """A seeded request and what the contract says its answer is."""

    symbol: str
    payload: dict[str, Any]
    raw: bytes | None  # the body when it is not plain JSON (NaN, 1e999, padding)
    status: int
    kind: str | None = None
    index: int | None = None
    at: str | None = None  # the error's field
    accepted: int = 0  # bars the answer's "decisions" hold
    resent: list[int] = field(default_factory=list)
    new: list[int] = field(default_factory=list)  # indices of bars that are accepted as new ones

    @property
    def body(self) -> Any:
        return self.raw if self.raw is not None else self.payload


def ts_ns(value: Any) -> int:
    if isinstance(value, int):
        return value
    return int(np.datetime64(value.replace("Z", "").split("+")[0], "ns").astype(np.int64)) - (
        2 * 3600 * 10**9 if value.endswith("+02:00") else 0
    )


#: every seeded request draws all of these, whatever it turns out to need: Hypothesis requires that what is drawn never
#: depends on state outside the draws (here the server's), or it reports the generation as flaky
CHOICES = st.fixed_dictionaries(
    {
        "symbol": st.sampled_from(SYMBOLS),
        "k": st.integers(1, 5),
        "forms": st.lists(st.integers(0, 4), min_size=8, max_size=8),
        "spread": st.booleans(),
        "mutation": st.sampled_from(("clean",) * 6 + ("resend",) * 3 + BROKEN + WHOLE),
        "j": st.integers(0, 4),
        "key": st.integers(0, 59),
        "literal": st.sampled_from(("Infinity", "-Infinity")),
        "big": st.sampled_from((2**63, 10**30, -1)),
        "r": st.integers(1, 3),
        "picks": st.lists(st.integers(0, 10**6), min_size=3, max_size=3),
    }
)


def plan_for(c: dict[str, Any], fz: Fuzz) -> Seeded | None:
    """A seeded request from drawn ``c`` (:data:`CHOICES`): bars that follow the symbol's last accepted one, clean,
    after a resend of accepted ones, or broken in one known way."""
    order = SYMBOLS[SYMBOLS.index(c["symbol"]) :] + SYMBOLS[: SYMBOLS.index(c["symbol"])]
    symbol = next((s for s in order if _next_index(fz, s) < len(BARS) - MAX_BARS - 5), None)
    if symbol is None:
        return None
    k, forms, spread, mutation = c["k"], c["forms"], c["spread"], c["mutation"]
    start = _next_index(fz, symbol)
    bars = [sample_bar(symbol, start + n, forms[n], spread) for n in range(k)]
    payload: dict[str, Any] = {"symbol": symbol, "timeframe": "H1", "bars": bars}
    last = fz.last.get(symbol)
    mine = fz.accepted.get(symbol, {})
    if mutation in ("out_of_order", "duplicate") and last is None:
        mutation = "clean"
    if mutation == "resend" and not mine:
        mutation = "clean"
    if mutation == "clean":
        return Seeded(symbol, payload, None, 200, accepted=k, new=list(range(k)))
    if mutation == "resend":
        times = sorted(mine)[-200:]
        picks = sorted({times[p % len(times)] for p in c["picks"][: c["r"]]})
        r = len(picks)
        old = []
        for n, t in enumerate(picks):
            b = dict(mine[t][0])
            b["ts"] = iso_forms(t, forms[5 + n])  # the same instant, perhaps written another way
            old.append(b)
        payload["bars"] = old + bars
        return Seeded(symbol, payload, None, 200, accepted=r + k, resent=list(range(r)), new=list(range(r, r + k)))
    if mutation == "new_symbol":  # a symbol never seen, whose first bar is bad: nothing may be created for it
        payload["symbol"] = f"NEW{c['picks'][0] % 997}"
        del bars[0]["close"]
        if fz.refuse_unknown:
            return Seeded(symbol, payload, None, 404, "unknown_symbol", None, "symbol")
        return Seeded(symbol, payload, None, 422, "invalid", 0, "bars[0].close")
    if mutation in WHOLE:
        return whole_request(mutation, payload, symbol, start, forms, spread)
    j = c["j"] % k
    prev = last if j == 0 else ts_ns(bars[j - 1]["ts"])
    b = bars[j]
    at = f"bars[{j}]"
    raw = None
    status, kind, fld = 422, "invalid", None
    if mutation == "missing":
        key = ("ts", "open", "high", "low", "close", "volume")[c["key"] % 6]
        del b[key]
        fld = f"{at}.{key}"
    elif mutation == "extra":
        b["tick_volume"] = 12
        fld = f"{at}.tick_volume"
    elif mutation in ("string", "null", "bool"):
        key = ("open", "high", "low", "close", "volume")[c["key"] % 5]
        b[key] = {"string": str(b[key]), "null": None, "bool": True}[mutation]
        fld = f"{at}.{key}"
    elif mutation in ("nan", "inf", "huge"):
        key = ("open", "high", "low", "close", "volume", "spread")[c["key"] % 6]
        b[key] = "__NONFINITE__"
        literal = {"nan": "NaN", "inf": c["literal"], "huge": "1e999"}[mutation]
        raw = json.dumps(payload).replace('"__NONFINITE__"', literal).encode()
        b[key] = float("nan")  # what the payload means (truncated replays never include this bar)
        fld = f"{at}.{key}"
    elif mutation == "zoneless":
        b["ts"] = np.datetime_as_string(np.datetime64(ts_ns(b["ts"]), "ns"), unit="s")
        fld = f"{at}.ts"
    elif mutation == "float_ts":
        b["ts"] = float(ts_ns(b["ts"]))
        fld = f"{at}.ts"
    elif mutation == "big_ts":
        b["ts"] = c["big"]
        fld = f"{at}.ts"
    elif mutation == "high_low":
        b["high"], b["low"] = b["low"] * 0.999, b["high"] * 1.001
        kind = "refused"
    elif mutation == "neg_volume":
        b["volume"] = -1.0
        kind = "refused"
    elif mutation == "zero_price":
        b["open"] = 0.0
        kind = "refused"
    elif mutation == "out_of_order":
        b["ts"] = iso_forms(prev - 1800 * 10**9, forms[j])
        status, kind, fld = 409, "out_of_order", f"{at}.ts"
    elif mutation == "duplicate":
        b["ts"] = iso_forms(prev, forms[j])
        b["close"] = round(b["close"] * 1.0003, 6)
        b["high"] = max(b["high"], b["close"])
        status, kind, fld = 409, "duplicate", f"{at}.ts"
    return Seeded(symbol, payload, raw, status, kind, j, fld, accepted=j, new=list(range(j)))


def whole_request(mutation: str, payload: dict, symbol: str, start: int, forms: list, spread: bool) -> Seeded:
    """A request refused as a whole (index null): nothing of it is looked at bar by bar."""
    if mutation == "timeframe":
        payload["timeframe"] = "M15"
        return Seeded(symbol, payload, None, 422, "invalid", None, "timeframe")
    if mutation == "symbol":
        payload["symbol"] = symbol[:3] + "/" + symbol[3:]
        return Seeded(symbol, payload, None, 422, "invalid", None, "symbol")
    if mutation == "extra_top":
        payload["account"] = 12345
        return Seeded(symbol, payload, None, 422, "invalid", None, "account")
    if mutation == "too_many":
        payload["bars"] = [sample_bar(symbol, start + n, forms[n % len(forms)], spread) for n in range(MAX_BARS + 1)]
        return Seeded(symbol, payload, None, 413, "too_large", None, "bars")
    if mutation == "too_big":
        raw = json.dumps(payload).encode()
        raw = raw[:-1] + b" " * MAX_BODY + b"}"  # still one valid JSON document, only too long
        return Seeded(symbol, payload, raw, 413, "too_large", None, None)
    if mutation == "not_object":
        payload["bars"] = [1.07, 1.08]
        return Seeded(symbol, payload, None, 422, "invalid", 0, "bars[0]")
    payload["bars"] = []
    return Seeded(symbol, payload, None, 422, "invalid", None, "bars")


def _next_index(fz: Fuzz, symbol: str) -> int:
    last = fz.last.get(symbol)
    return FIRST if last is None else max(FIRST, int(np.searchsorted(BARS.ts, last, side="right")))


# -- the fuzz ---------------------------------------------------------------------------------------------------------
AUTH = ("token", "token", "token", "none", "wrong", "prefix", "basic")


def auth_headers(kind: str) -> dict[str, str]:
    return {
        "token": {"Authorization": f"Bearer {TOKEN}"},
        "none": {},
        "wrong": {"Authorization": "Bearer not-the-token"},
        "prefix": {"Authorization": f"Bearer {TOKEN[:-1]}"},
        "basic": {"Authorization": f"Basic {TOKEN}"},
    }[kind]


def negated_headers(case: Any) -> bool:
    """Whether schemathesis made this case's headers violate the document on purpose (a negative case)."""
    meta = case.meta
    info = meta.components.get(ParameterLocation.HEADER) if meta is not None else None
    return info is not None and info.mode == GenerationMode.NEGATIVE


def narrowed(spec: dict[str, Any], timeframe: str) -> dict[str, Any]:
    """The document with ``BarsRequest.timeframe`` narrowed to the server's (the document allows any string, since
    the timeframe is a start option): cases that satisfy it satisfy the document, and reach the bars and the gate."""
    spec = copy.deepcopy(spec)
    spec["components"]["schemas"]["BarsRequest"]["properties"]["timeframe"] = {"type": "string", "enum": [timeframe]}
    return spec


def exchange(fz: Fuzz, case: Any, plan: Seeded | None, source: str, auth: str, base_url: str | None) -> None:
    """Send one case with the auth drawn, check the answer (collecting what is wrong) and record a POST /v1/bars."""
    headers = auth_headers(auth)
    if negated_headers(case):
        headers = {}  # the case's own (schema-violating) headers are the point of it: send them as generated
    else:
        case.headers.pop("Authorization", None)
    try:
        response = case.call(base_url=base_url, headers=headers, timeout=60)
    except Exception as exc:  # noqa: BLE001 - a crash or a dropped connection is a finding, recorded with the request
        fz.failures.append(f"{source} {case.method} {case.path}: no answer ({type(exc).__name__}: {exc})")
        return
    # negative cases may drop the header on purpose: what counts is what was sent
    sent = response.request.headers.get("Authorization")
    authorized = sent == auth_headers("token")["Authorization"]
    fz.tally[(source, case.method, case.path, response.status_code)] += 1
    try:
        case.validate_response(response, checks=CHECKS)
    except (AssertionError, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup: asserted after the run
        fz.failures.append(f"{source} {case.method} {case.path} (Authorization {sent!r}): {str(exc)[:3000]}")
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if case.path != "/v1/health" and not authorized and response.status_code != 401:
        fz.fail(
            f"{case.method} {case.path} with Authorization {sent!r} must be 401", case.body, response.status_code, body
        )
    if authorized and response.status_code == 401:
        fz.fail(f"{case.method} {case.path} with the token answered 401", case.body, 401, body)
    if case.method == "POST" and case.path == "/v1/bars":
        record(fz, plan, case, response.status_code, body, source)


def run_fuzz(
    schema: Any, narrow: Any, examples: int, base_url: str | None = None, refuse_unknown: bool = False
) -> Fuzz:
    """Send ``examples`` requests (see the module docstring) and record them; never raises for a bad answer (the
    server's state carries from one example to the next, so Hypothesis must not shrink or replay: failures are
    collected and asserted by the caller). ``narrow``: the schema of :func:`narrowed`."""
    fz = Fuzz(refuse_unknown=refuse_unknown)
    generated = {
        "positive": schema.as_strategy(GenerationMode.POSITIVE),
        "negative": schema.as_strategy(GenerationMode.NEGATIVE),
        "narrowed": narrow.as_strategy(GenerationMode.POSITIVE),
        "narrowed-negative": narrow.as_strategy(GenerationMode.NEGATIVE),
    }
    bars_op = schema["/v1/bars"]["POST"]

    @seed(SEED)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    @given(data=st.data())
    def step(data: st.DataObject) -> None:
        source = data.draw(st.sampled_from(("seeded",) * 5 + tuple(generated) * 1), label="source")
        auth = data.draw(st.sampled_from(AUTH if source != "seeded" else ("token",) * 30 + AUTH[3:]), label="auth")
        if source != "seeded":
            exchange(fz, data.draw(generated[source], label="case"), None, source, auth, base_url)
            return
        plan = plan_for(data.draw(CHOICES, label="seeded"), fz)
        if plan is not None:  # None: every symbol's sample is used up (never with the sizes here)
            exchange(fz, bars_op.Case(body=plan.body, media_type="application/json"), plan, source, auth, base_url)

    # explicit cases first: one seeded request of every kind, so each answer is met whatever Hypothesis draws
    for n, mutation in enumerate(("clean", "clean", "clean", "resend", *BROKEN, *WHOLE)):
        c = {"symbol": SYMBOLS[n % 3], "k": 3, "forms": [(n + i) % 5 for i in range(8)], "spread": n % 2 == 0}
        c |= {"mutation": mutation, "j": 1, "key": n, "literal": "-Infinity", "big": 2**63, "r": 2, "picks": [0, 7, 9]}
        plan = plan_for(c, fz)
        assert plan is not None
        exchange(fz, bars_op.Case(body=plan.body, media_type="application/json"), plan, "explicit", "token", base_url)
    step()
    return fz


def record(fz: Fuzz, plan: Seeded | None, case: Any, status: int, body: Any, source: str) -> None:
    payload = plan.payload if plan is not None else copy.deepcopy(case.body)
    fz.posts.append(Exchange(payload, status, body, source))
    if not isinstance(body, dict):
        fz.fail("POST /v1/bars answered without a JSON object", payload, status, body)
        return
    symbol = payload.get("symbol") if isinstance(payload, dict) else None
    decisions = body.get("decisions") or []
    for d in decisions:
        if isinstance(d, dict) and isinstance(d.get("ts"), int) and isinstance(symbol, str):
            fz.last[symbol] = max(fz.last.get(symbol, d["ts"]), d["ts"])
    if plan is None or status == 401:
        return
    err = body.get("error") if status != 200 else None
    got = (status, err and err.get("kind"), err and err.get("index"), err and err.get("field"), body.get("accepted"))
    want = (plan.status, plan.kind, plan.index, plan.at, plan.accepted)
    if got != want or body.get("resent") != plan.resent or len(decisions) != plan.accepted:
        fz.fail(
            f"seeded request: want (status, kind, index, field, accepted) = {want}, resent {plan.resent}; got {got}, "
            f"resent {body.get('resent')}, {len(decisions)} decisions",
            plan.raw or plan.payload,
            status,
            body,
        )
        return
    mine = fz.accepted.setdefault(plan.symbol, {})
    for n in plan.resent:
        t = ts_ns(plan.payload["bars"][n]["ts"])
        if decisions[n] != mine[t][1]:
            fz.fail(f"resend of bars[{n}] (ts {t}): not the Decision logged the first time", plan.payload, status, body)
    for n in plan.new:
        bar = plan.payload["bars"][n]
        t = ts_ns(bar["ts"])
        if decisions[n].get("ts") != t:
            fz.fail(f"decisions[{n}] is for ts {decisions[n].get('ts')}, the bar's is {t}", plan.payload, status, body)
        mine[t] = (bar, decisions[n])


# -- replay and compare -----------------------------------------------------------------------------------------------
def taken(posts: list[Exchange]) -> list[tuple[dict[str, Any], int, Any]]:
    """What the fuzzed server said it took, as requests for a fresh server: (payload, status, answer)."""
    out = []
    for ex in posts:
        if ex.status == 200:
            out.append((ex.payload, 200, ex.answer))
            continue
        err = ex.answer.get("error") if isinstance(ex.answer, dict) else None
        if not err or err.get("index") is None:
            continue
        n = err["index"] + (1 if err.get("kind") == "refused" else 0)
        if n:
            out.append(
                ({**ex.payload, "bars": ex.payload["bars"][:n]}, ex.status if n > err["index"] else 200, ex.answer)
            )
    return out


def plain(x: Any) -> Any:
    """A Decision (or anything holding Decisions) without its latencies, the one field a replay cannot repeat."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items() if k != "latency_us"}
    if isinstance(x, list):
        return [plain(v) for v in x]
    return x


def replay(posts: list[Exchange], session: requests.Session, base_url: str) -> list[str]:
    problems = []
    for payload, status, answer in taken(posts):
        r = session.post(f"{base_url}/v1/bars", json=payload, headers=auth_headers("token"), timeout=60)
        body = r.json()
        n = len(payload["bars"])
        want_decisions = plain(answer["decisions"][: n - (status != 200)])
        if r.status_code != status or plain(body["decisions"]) != want_decisions:
            problems.append(
                f"replay of {_short(payload)}: want {status} and the fuzzed server's decisions, got "
                f"{r.status_code}: {_short(body)}"
            )
        elif body["resent"] != [i for i in answer["resent"] if i < n]:
            problems.append(f"replay of {_short(payload)}: resent {body['resent']}, the fuzz had {answer['resent']}")
    return problems


def diff_symbols(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str] = ("fuzzed", "replayed")) -> str:
    """GET /v1/symbols of two servers, as the lines that differ."""
    x = {s["symbol"]: s for s in a["symbols"]}
    y = {s["symbol"]: s for s in b["symbols"]}
    out = []
    for sym in sorted({*x, *y}):
        u, v = x.get(sym), y.get(sym)
        if u is None or v is None:
            have, where = (u or v), names[0] if v is None else names[1]
            out.append(f"  {sym}: only on the {where} server (bars {have['bars']}, rejected {have['rejected']})")
        elif u != v:
            out.append(f"  {sym}: " + ", ".join(f"{k} {u[k]!r} vs {v.get(k)!r}" for k in u if u[k] != v.get(k)))
    return "\n".join(out) or "  (same symbols, other order)"


def audit_lines(state: Path) -> list[dict[str, Any]]:
    lines = []
    for _, f in audit_files(state / "audit"):
        lines += [plain({k: v for k, v in json.loads(x).items() if k != "prev"}) for x in f.read_text().splitlines()]
    return lines


def snapshot_bytes(state: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((state / "snapshots").glob("*.fxgate-snapshot"))}


def compare_states(fuzzed: Path, fresh: Path) -> list[str]:
    """The audit logs (bars and Decisions but latencies, in order) and the snapshots (byte for byte) of two state
    directories; both servers closed."""
    problems = []
    for d in (fuzzed, fresh):
        rep = verify(d / "audit")
        if rep.problem:
            problems.append(f"fxgate audit verify {d / 'audit'}: {rep.problem} at {rep.where}")
    a, b = audit_lines(fuzzed), audit_lines(fresh)
    if a != b:
        first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        problems.append(
            f"audit logs differ at line {first + 1} (fuzzed {len(a)} lines, replayed {len(b)}):\n"
            f"  fuzzed:   {_short(a[first] if first < len(a) else None)}\n"
            f"  replayed: {_short(b[first] if first < len(b) else None)}"
        )
    sa, sb = snapshot_bytes(fuzzed), snapshot_bytes(fresh)
    if sorted(sa) != sorted(sb):
        problems.append(f"snapshot files differ: fuzzed {sorted(sa)}, replayed {sorted(sb)}")
    problems += [
        f"snapshot {name} differs from the replayed server's" for name in sa if name in sb and sa[name] != sb[name]
    ]
    return problems


# -- the tests --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ens():
    from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
    from fxgate.models.labels import LabelSpec

    e = TreeEnsemble()
    cfg = EnsembleConfig(n_estimators=8, max_depth=3, quantiles=False)
    e.fit(BARS[:FIRST], LabelSpec("next", 1), cfg, evaluate=False)
    return e


def _refs(x: Any) -> list[str]:
    if isinstance(x, dict):
        return ([x["$ref"]] if "$ref" in x else []) + [r for v in x.values() for r in _refs(v)]
    if isinstance(x, list):
        return [r for v in x for r in _refs(v)]
    return []


def test_committed_openapi_loads_in_schemathesis_and_documents_every_answer():
    """What a client generator reads: ``engine/openapi.json`` (kept equal to the served document by
    test_server.py) is a valid OpenAPI document, every operation yields cases, and every answer the service can give
    is documented (the fuzz below then checks each real answer against it)."""
    schema = schemathesis.openapi.from_path(COMMITTED)
    ops = {}
    for result in schema.get_all_operations():
        op = result.ok()  # raises, naming the operation, where the document is not usable
        ops[(op.method.upper(), op.path)] = op
        op.as_strategy()
    assert set(ops) == {
        ("POST", "/v1/bars"),
        *(("GET", p) for p in ("/v1/health", "/v1/config", "/v1/symbols", "/metrics")),
    }
    raw = json.loads(COMMITTED.read_text())
    refs = [
        r
        for r in _refs(raw)
        if not r.startswith("#/components/schemas/") or r.split("/")[-1] not in raw["components"]["schemas"]
    ]
    assert not refs, f"engine/openapi.json refers to what it does not define: {refs}"
    for name, sch in raw["components"]["schemas"].items():  # OpenAPI 3.1 schemas are JSON Schema 2020-12
        try:
            jsonschema.Draft202012Validator.check_schema(sch)
        except jsonschema.SchemaError as exc:
            raise AssertionError(f"engine/openapi.json components.schemas.{name}: {exc.message}") from exc
    bars = raw["paths"]["/v1/bars"]["post"]
    assert {"200", "401", "404", "409", "413", "422", "500", "503"} <= set(bars["responses"])
    for code in ("401", "404", "409", "413", "422"):
        assert bars["responses"][code]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorResponse"
        }, f"POST /v1/bars {code} is not documented as the error body"
    for path, methods in raw["paths"].items():
        for method, op in methods.items():
            if path != "/v1/health":
                assert op.get("security") == [{"bearer": []}], f"{method.upper()} {path} does not require the token"
                assert "401" in op["responses"], f"{method.upper()} {path} does not document its 401"
    kinds = set(raw["components"]["schemas"]["Error"]["properties"]["kind"]["enum"])
    assert {"invalid", "refused", "duplicate", "out_of_order", "unknown_symbol", "too_large", "unauthorized"} <= kinds


def coverage(fz: Fuzz) -> Counter:
    """How many POSTs ended how: (source, status, error kind)."""
    c: Counter = Counter()
    for ex in fz.posts:
        err = ex.answer.get("error") if isinstance(ex.answer, dict) else None
        c[(ex.source, ex.status, err and err.get("kind"))] += 1
    return c


def assert_fuzz_clean(fz: Fuzz) -> None:
    print(f"fuzz seed {SEED} (FXGATE_TEST_SEED overrides); answers by (source, method, path, status):")
    for k, n in sorted(fz.tally.items()):
        print(f"  {n:4d}  {k}")
    assert not fz.failures, f"{len(fz.failures)} bad answers; the first ones:\n\n" + "\n\n".join(fz.failures[:5])


@pytest.mark.slow
def test_fuzz_in_process_no_5xx_conforms_and_corrupts_no_state(tmp_path, ens):
    from schemathesis.python import asgi

    from fxgate.engine.server import create_app

    cfg = load_config(write_config(tmp_path / "gate.toml"))
    fuzzed, fresh = tmp_path / "fuzzed", tmp_path / "fresh"
    service = BarService(cfg, timeframe="H1", state_dir=fuzzed, ensemble=ens)
    app = create_app(service, token=TOKEN)
    auth = auth_headers("token")
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=auth)
    narrow = schemathesis.openapi.from_dict(narrowed(schema.raw_schema, "H1"))
    narrow.app = app  # what from_asgi does: its cases are sent to the app in-process
    twin = BarService(cfg, timeframe="H1", state_dir=fresh, ensemble=ens)
    app2 = create_app(twin, token=TOKEN)
    try:
        fz = run_fuzz(schema, narrow, int(os.environ.get("FXGATE_FUZZ_EXAMPLES", "500")))
        assert_fuzz_clean(fz)
        kinds = coverage(fz)
        print("POST /v1/bars by (source, status, kind):", dict(sorted(kinds.items(), key=str)))
        mine = sum(len(v) for v in fz.accepted.values())
        print(f"{mine} seeded bars accepted")
        assert mine >= 150 and sum(n for (s, st_, _), n in kinds.items() if s != "positive" and st_ == 200) >= 40
        for want in ("invalid", "refused", "duplicate", "out_of_order", "too_large", "unauthorized"):
            assert any(k == want for (_, _, k) in kinds), f"the fuzz never produced a {want!r} answer"

        client = asgi.get_client(app)
        with client, asgi.get_client(app2) as client2:
            before = client.get("/v1/symbols", headers=auth).json()
            problems = replay(fz.posts, client2, "http://testserver")
            assert not problems, "\n".join(problems[:5])
            after = client2.get("/v1/symbols", headers=auth).json()
            assert after == before, "GET /v1/symbols, fuzzed vs replayed server:\n" + diff_symbols(before, after)
            h1, h2 = client.get("/v1/health").json(), client2.get("/v1/health").json()
            assert (h1["symbols"], h1["audit"]["seq"]) == (h2["symbols"], h2["audit"]["seq"])
    finally:
        asgi.shutdown_lifespans()  # the apps' shutdown closes their services (snapshot every symbol, close the log)
    problems = compare_states(fuzzed, fresh)
    assert not problems, "\n".join(problems)
    restarted = BarService(cfg, timeframe="H1", state_dir=fuzzed, ensemble=ens)
    try:
        # what a restart restores is compared; "warm" and "insufficient" are not: the shap module keeps the last bar's
        # feature row outside its snapshot, so a restarted gate reports it insufficient until its next bar
        keys = ("symbol", "bars", "rejected", "last_ts", "last_time")
        again = {"symbols": [{k: s[k] for k in keys} for s in restarted.symbols()["symbols"]]}
        then = {"symbols": [{k: s[k] for k in keys} for s in before["symbols"]]}
        assert again == then, "a server restarted on the fuzzed state directory has another state:\n" + diff_symbols(
            then, again, ("fuzzed", "restarted")
        )
        assert restarted.refeed_mismatches == []
    finally:
        restarted.close()


class Served:
    """``fxgate serve`` (the installed command) in a subprocess on a free loopback port; stopped with SIGTERM (its
    graceful shutdown: every symbol snapshotted, the log closed)."""

    def __init__(self, config: Path, state: Path, token_file: Path, bundle: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = state.with_suffix(".log")
        fxgate = str(Path(sys.executable).with_name("fxgate"))
        cmd = [fxgate, "serve", "--config", str(config), "--state", str(state), "--port", str(self.port)]
        cmd += ["--timeframe", "H1", "--token-file", str(token_file), "--bundle", str(bundle)]
        env = {k: v for k, v in os.environ.items() if k != "FXGATE_TOKEN"}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"fxgate serve exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if requests.get(f"{self.url}/v1/health", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, f"fxgate serve did not answer /v1/health in 120 s:\n{self.tail()}"
            time.sleep(0.1)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"fxgate serve did not stop within 60 s of SIGTERM:\n{self.tail()}") from None
        # uvicorn re-raises the signal it handled once its shutdown (the app's lifespan: close the service) is done
        assert self.proc.returncode in (0, -signal.SIGTERM), (
            f"fxgate serve exited with {self.proc.returncode}:\n{self.tail()}"
        )


@pytest.fixture(scope="module")
def bundle(ens, tmp_path_factory):
    d = tmp_path_factory.mktemp("bundle")
    ens.save(d)
    return d


@pytest.mark.slow
def test_fuzz_real_server_on_loopback_no_5xx_conforms_and_corrupts_no_state(tmp_path, bundle):
    # unknown symbols refused here (404), so the names schemathesis makes up meet that rule rather than new gates
    config = write_config(tmp_path / "gate.toml", f'unknown_symbols = "refuse"\nsymbols = {json.dumps(SYMBOLS)}\n')
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    fuzzed, fresh = tmp_path / "fuzzed", tmp_path / "fresh"
    auth = auth_headers("token")
    server = Served(config, fuzzed, token_file, bundle)
    try:
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers=auth)
        narrow = schemathesis.openapi.from_dict(narrowed(schema.raw_schema, "H1"))
        fz = run_fuzz(schema, narrow, int(os.environ.get("FXGATE_FUZZ_EXAMPLES_HTTP", "200")), server.url, True)
        assert_fuzz_clean(fz)
        kinds = coverage(fz)
        print("POST /v1/bars by (source, status, kind):", dict(sorted(kinds.items(), key=str)))
        assert sum(len(v) for v in fz.accepted.values()) >= 40
        assert any(k == "unknown_symbol" for (_, _, k) in kinds), "the fuzz never met the unknown-symbol rule"
        before = requests.get(f"{server.url}/v1/symbols", headers=auth, timeout=30).json()
        twin = Served(config, fresh, token_file, bundle)
        try:
            with requests.Session() as session:
                problems = replay(fz.posts, session, twin.url)
            assert not problems, "\n".join(problems[:5])
            after = requests.get(f"{twin.url}/v1/symbols", headers=auth, timeout=30).json()
            assert after == before, "GET /v1/symbols, fuzzed vs replayed server:\n" + diff_symbols(before, after)
        finally:
            twin.stop()
    finally:
        server.stop()
    problems = compare_states(fuzzed, fresh)
    assert not problems, "\n".join(problems)
    fxgate = str(Path(sys.executable).with_name("fxgate"))
    done = subprocess.run(
        [fxgate, "audit", "verify", str(fuzzed / "audit")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
