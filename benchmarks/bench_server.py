"""The live server under load: ``fxgate serve`` in a real subprocess on loopback, driven over keep-alive HTTP.

    python benchmarks/bench_server.py [--json PATH] [--symbols 51] [--bars N] [--seconds 20] [--connections 4]
        [--batch 100] [--warmup 300] [--large 100] [--bundle DIR] [--estimators 300] [--code tree|REV]
        [--profile] [--keep]

Set-up: a Layer-1 ensemble (``--estimators`` trees per booster) is fitted once on the first 2,000 bars of the bundled
EURUSD H1 sample and saved as a bundle (a temporary folder, or ``--bundle DIR``, reused when it holds one), so the
server loads it from disk as in production. The server runs ``fxgate serve --config gate.toml --bundle DIR`` with the
LLM layers off (``[l2]``/``[l3] enabled = false``) and the 18 default Layer-4 modules. Each of ``--symbols`` symbols
gets the sample's remaining bars, rescaled and perturbed per symbol (its own price level, bar-by-bar noise, volume
and spread), sent with ISO-8601 times as a bot would.

The driver runs in ``--connections`` separate processes (one keep-alive ``http.client`` connection each; symbol
``k`` belongs to process ``k mod C`` so each symbol's bars stay in order), closed loop: the next request is sent when
the answer to the last one is in. Stages, each a fresh server process on its own state directory:

1. ``warm-up (batch)``: ``--warmup`` bars per symbol in requests of ``--batch`` bars, with ``[server]
   snapshot_every`` and ``fsync_every`` = 1000 (a batch-mode figure; the state every later stage starts from);
2. ``live`` (one request = one bar, ``--seconds`` each) on copies of that state, for each of ``snapshot_every`` in
   {1, ``--large``} x ``fsync_every`` in {1, ``--large``}, and (``--large``, ``--large``) with one connection (the
   latency of a request that does not queue behind other bots' requests; half as long);
3. ``batch``: ``--batch`` bars a request with (1, 1) and (``--large``, ``--large``), ``--seconds`` each;
4. ``one symbol``: the warm-up stage with a single symbol, for the RSS per symbol ((RSS of 51 - RSS of 1) / 50);
5. with ``--profile``: the live (1, 1) stage again with the server under cProfile (main thread: the event loop runs
   the HTTP parsing, the gate's fast path, the audit append and the snapshot); where a bar's time goes.

The stages differ in one setting at a time on the same state, so their differences in the server's CPU time per
bar say what each part costs without a profiler: the bar itself (batch, large settings), one HTTP request per bar
(live - batch), an fsync per bar, a snapshot per bar. The code under test is copied at the start (``--code tree``:
the working tree; ``--code REV``: a commit), so edits made meanwhile never mix two versions in one run.

Per stage: bars/s (whole window; the slowest and median 1 s window, 5 s in batch), request latency p50/p99/max by
the driver (queueing behind the other connections included), errors (non-2xx answers and transport failures), the
server's own time per request and per layer (its /metrics histograms), server RSS (sampled; VmHWM at the end), and
the audit check: every acknowledged bar's Decision is in the audit JSONL exactly once and equals the answer sent,
no line was logged without an answer, and ``fxgate audit verify --anchor`` (the head /v1/health gave) passes.

Targets (issue #16): >= 2,000 bars/s sustained on 2 cores, request p99 <= 10 ms, zero errors, zero lost; one symbol's
gate state (no models) <= 2 MiB; 51 symbols <= 300 MiB RSS without the LLM.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from _common import write_json

TARGETS = {"bars_per_s": 2000, "p99_ms": 10.0, "state_mib_per_symbol": 2.0, "rss_mib_51": 300.0}
FIT_BARS = 2000  # the bundle is fitted on the sample's first bars; the symbols are fed the bars after them
WARM_SETTINGS = (1000, 1000)  # [server] snapshot_every, fsync_every of the warm-up stage
CURRENCIES = ("EUR", "USD", "GBP", "JPY", "CHF", "AUD", "NZD", "CAD", "SEK", "NOK", "SGD", "HKD", "MXN", "ZAR", "PLN")
_SERVE = "from fxgate.engine.cli import main; main()"


# -- the feed ------------------------------------------------------------------------------------------------------
def symbol_names(n: int) -> list[str]:
    pairs = [a + b for i, a in enumerate(CURRENCIES) for b in CURRENCIES[i + 1 :]]
    if n > len(pairs):
        raise SystemExit(f"--symbols {n}: at most {len(pairs)} (pairs of {len(CURRENCIES)} currencies)")
    return pairs[:n]


def iso(ts: int) -> str:
    s, ns = divmod(int(ts), 10**9)
    return datetime.fromtimestamp(s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + (f".{ns // 1000:06d}" if ns else "") + "Z"


def make_feed(bars: Any, k: int, seed: int) -> list[dict[str, Any]]:
    """The sample's bars after the fit window, for symbol ``k``: its own price level, the same bar-by-bar noise on
    all four prices of a bar (so high >= open, close >= low still hold), its own volumes and spreads."""
    rng = np.random.default_rng([seed, k])
    sl = slice(FIT_BARS, None)
    n = len(bars.ts) - FIT_BARS
    level = 1.0 if k == 0 else rng.uniform(0.6, 1.6)
    noise = level * (1.0 + rng.normal(0.0, 2e-4, n))
    px = {f: np.round(getattr(bars, f)[sl] * noise, 5) for f in ("open", "high", "low", "close")}
    vol = np.maximum(1, np.round(bars.volume[sl] * rng.uniform(0.7, 1.3, n)))
    spread = np.round(8e-5 * level * rng.uniform(0.8, 1.2, n), 7)
    return [
        {
            "ts": iso(bars.ts[FIT_BARS + i]),
            "open": float(px["open"][i]),
            "high": float(px["high"][i]),
            "low": float(px["low"][i]),
            "close": float(px["close"][i]),
            "volume": float(vol[i]),
            "spread": float(spread[i]),
        }
        for i in range(n)
    ]


def fingerprint(decision: dict[str, Any]) -> str:
    return hashlib.blake2b(json.dumps(decision, sort_keys=True).encode(), digest_size=12).hexdigest()


# -- the driver (its own processes) ------------------------------------------------------------------------------
def _drive(
    wid: int,
    port: int,
    jobs: list[tuple[str, list[dict[str, Any]]]],
    batch: int,
    seconds: float,
    go: Any,
    results: Any,
) -> None:
    """One connection: round-robin over its symbols, one request at a time, until each symbol's bars are sent or
    ``seconds`` have passed. Puts (t_done, latency_ns, bars, status) per request and every acknowledged Decision."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", "/v1/health")
    conn.getresponse().read()
    results.put(("ready", wid))
    go.wait()
    t_start = time.monotonic()
    deadline = t_start + seconds
    cursors = [0] * len(jobs)
    records: list[tuple[float, int, int, int]] = []
    acked: list[tuple[str, int, str]] = []
    statuses: Counter[int] = Counter()
    kinds: Counter[str] = Counter()
    samples: list[str] = []
    transport = resent = resp_bytes = req_bytes = 0
    headers = {"Content-Type": "application/json"}
    while time.monotonic() < deadline:
        sent = False
        for j, (symbol, bars) in enumerate(jobs):
            i = cursors[j]
            if i >= len(bars) or time.monotonic() >= deadline:
                continue
            chunk = bars[i : i + batch]
            body = json.dumps({"symbol": symbol, "timeframe": "H1", "bars": chunk}).encode()
            t0 = time.perf_counter_ns()
            try:
                conn.request("POST", "/v1/bars", body, headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                transport += 1  # resend the same request on a new connection (an exact resend is idempotent)
                if len(samples) < 5:
                    samples.append(f"{symbol} bars[{i}]: {type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                sent = True
                continue
            lat = time.perf_counter_ns() - t0
            req_bytes += len(body)
            resp_bytes += len(data)
            out = json.loads(data)
            statuses[resp.status] += 1
            resent += len(out.get("resent", ()))
            decisions = out.get("decisions", [])
            for d in decisions:
                acked.append((symbol, int(d["ts"]), fingerprint(d)))
            records.append((time.monotonic(), lat, len(decisions), resp.status))
            if resp.status == 200:
                cursors[j] = i + len(chunk)
            else:
                err = out.get("error", {})
                kinds[f"{resp.status} {err.get('kind')}"] += 1
                if len(samples) < 5:
                    samples.append(f"{symbol}: {resp.status} {err.get('field')}: {err.get('message')}")
                cursors[j] = i + len(decisions) + 1  # skip the bar it refused
            sent = True
        if not sent:
            break
    conn.close()
    results.put(
        (
            "done",
            wid,
            {
                "t_start": t_start,
                "records": records,
                "acked": acked,
                "statuses": dict(statuses),
                "kinds": dict(kinds),
                "samples": samples,
                "transport": transport,
                "resent": resent,
                "bytes": (req_bytes, resp_bytes),
            },
        )
    )


def drive(
    port: int,
    feeds: dict[str, list[dict[str, Any]]],
    connections: int,
    batch: int,
    seconds: float,
    on_go: Any = None,
) -> dict[str, Any]:
    """Run the driver processes against the server on ``port``; gather their records."""
    ctx = mp.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    symbols = list(feeds)
    procs = []
    for w in range(min(connections, len(symbols))):
        jobs = [(s, feeds[s]) for k, s in enumerate(symbols) if k % connections == w]
        p = ctx.Process(target=_drive, args=(w, port, jobs, batch, seconds, go, results), daemon=True)
        p.start()
        procs.append(p)
    for _ in procs:
        kind, _w, *_ = results.get(timeout=120)
        assert kind == "ready", kind
    if on_go is not None:
        on_go()
    t0 = time.monotonic()
    go.set()
    wait_s = 3600 if seconds == float("inf") else seconds + 300
    parts = [results.get(timeout=wait_s)[2] for _ in procs]
    for p in procs:
        p.join(timeout=30)
    return {"t0": t0, "parts": parts}


# -- the server (a subprocess) -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, snapshot_every: int, fsync_every: int) -> Path:
    path.write_text(
        "# bench_server.py: the fast layers only (no LLM), the 18 default Layer-4 modules\n"
        "[l2]\nenabled = false\n[l3]\nenabled = false\n"
        f"[server]\nsnapshot_every = {snapshot_every}\nfsync_every = {fsync_every}\n"
    )
    return path


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def rss_mib(pid: int) -> float:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except ImportError:
        return _status_kb(pid, "VmRSS") / 1024


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """``fxgate serve`` on a free loopback port; RSS sampled every 0.2 s while it runs."""

    def __init__(self, work: Path, name: str, config: Path, state: Path, bundle: Path, profile: Path | None = None):
        self.port = free_port()
        self.log = work / f"{name}.log"
        args = ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--state", str(state), "--bundle", str(bundle), "--timeframe", "H1"]
        if profile is None:
            cmd = [sys.executable, "-c", _SERVE, *args]
        else:
            cmd = [sys.executable, __file__, "--_profile-serve", str(profile), *args]
        t0 = time.perf_counter()
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready(time.perf_counter() + 300)
        self.startup_s = time.perf_counter() - t0
        self.rss_ready = rss_mib(self.proc.pid)
        self.peak = 0.0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _wait_ready(self, until: float) -> None:
        while time.perf_counter() < until:
            if self.proc.poll() is not None:
                raise SystemExit(f"fxgate serve exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                self.get("/v1/health")
                return
            except OSError:
                time.sleep(0.2)
        self.proc.kill()
        raise SystemExit(f"fxgate serve not ready after 300 s; its log: {self.log}")

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_mib(self.proc.pid))
            except (OSError, RuntimeError):
                return
            self._stop.wait(0.2)

    def get(self, path: str) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise OSError(f"GET {path}: {resp.status}")
        return data.decode() if path == "/metrics" else json.loads(data)

    def memory(self) -> dict[str, float]:
        self.peak = max(self.peak, rss_mib(self.proc.pid))
        return {
            "rss_ready_mib": self.rss_ready,
            "rss_mib": rss_mib(self.proc.pid),
            "peak_sampled_mib": self.peak,
            "vm_hwm_mib": _status_kb(self.proc.pid, "VmHWM") / 1024,
        }

    def stop(self) -> tuple[float, int]:
        """SIGTERM: uvicorn stops gracefully (the service snapshots every symbol and closes the log), then re-raises
        the signal, so the process ends with -SIGTERM (0 under the profiler, which catches it)."""
        self._stop.set()
        t0 = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise SystemExit(f"fxgate serve did not stop within 120 s of SIGTERM; its log: {self.log}") from None
        if rc not in (0, -signal.SIGTERM):
            raise SystemExit(f"fxgate serve exited with {rc} on SIGTERM:\n{self.log.read_text()[-3000:]}")
        return time.perf_counter() - t0, rc


def server_side(metrics_text: str) -> dict[str, Any]:
    """The server's own figures from /metrics: time per /v1/bars request and per layer, snapshots, bar outcomes."""
    from prometheus_client.parser import text_string_to_metric_families

    vals: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(metrics_text):
        for s in fam.samples:
            vals[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def pair(name: str, **labels: str) -> tuple[float, float]:
        key = tuple(sorted(labels.items()))
        return vals.get((f"{name}_sum", key), 0.0), vals.get((f"{name}_count", key), 0.0)

    req_sum, req_n = pair("fxgate_request_seconds", path="/v1/bars")
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (name, labels), v in vals.items()
        if name == "fxgate_request_seconds_bucket" and dict(labels).get("path") == "/v1/bars"
    )

    def quantile_le(q: float) -> float | None:
        """The upper bound (ms) of the histogram bucket holding the q-quantile of the server's request times."""
        le = next((le for le, n in buckets if n >= q * req_n), None) if req_n else None
        return 1e3 * le if le is not None and le != float("inf") else None

    snap_sum, snap_n = pair("fxgate_snapshot_seconds")
    layers = {}
    for layer in ("L1", "L2", "L3", "L4", "sizing"):
        s, n = pair("fxgate_layer_latency_seconds", layer=layer)
        if n:
            layers[layer] = {"mean_us": 1e6 * s / n, "bars": int(n)}
    outcomes = {
        o: int(vals.get(("fxgate_bars_total", (("outcome", o),)), 0)) for o in ("accepted", "rejected", "resent")
    }
    non2xx = sum(
        v
        for (name, labels), v in vals.items()
        if name == "fxgate_requests_total" and not dict(labels).get("status", "2").startswith("2")
    )
    return {
        "bars_requests": int(req_n),
        "request_mean_ms": 1e3 * req_sum / req_n if req_n else None,
        "request_p50_ms_at_most": quantile_le(0.5),
        "request_p99_ms_at_most": quantile_le(0.99),
        "request_seconds_total": req_sum,
        "snapshots": int(snap_n),
        "snapshot_mean_ms": 1e3 * snap_sum / snap_n if snap_n else None,
        "snapshot_seconds_total": snap_sum,
        "layers": layers,
        "bars": outcomes,
        "non2xx_requests": int(non2xx),
    }


# -- checks and figures ------------------------------------------------------------------------------------------
def audit_check(state: Path, acked: dict[tuple[str, int], str], anchor: dict[str, Any]) -> dict[str, Any]:
    """Every acknowledged bar's Decision in the log exactly once and equal to the answer; nothing else logged; the
    chain sound up to the head the server reported last (``anchor``: /v1/health's ``audit``)."""
    counts: Counter[tuple[str, int]] = Counter()
    mismatched = lines = 0
    files = sorted((state / "audit").glob("audit-*.jsonl"))
    for f in files:
        with f.open("rb") as fh:
            for raw in fh:
                line = json.loads(raw)
                key = (line["symbol"], int(line["bar"]["ts"]))
                counts[key] += 1
                lines += 1
                if key in acked and fingerprint(line["decision"]) != acked[key]:
                    mismatched += 1
    verify = subprocess.run(
        [
            sys.executable,
            "-c",
            _SERVE,
            "audit",
            "verify",
            str(state / "audit"),
            "--anchor",
            f"{anchor['seq']}:{anchor['head']}",
        ],
        capture_output=True,
        text=True,
    )
    return {
        "files": len(files),
        "lines": lines,
        "acked": len(acked),
        "lost": sum(1 for k in acked if counts[k] == 0),
        "logged_twice": sum(1 for c in counts.values() if c > 1),
        "logged_unacked": sum(1 for k in counts if k not in acked),
        "decision_mismatch": mismatched,
        "verify_rc": verify.returncode,
        "verify_tail": (verify.stdout + verify.stderr).strip().splitlines()[-1:],
        "ok": False,
    }


def figures(run: dict[str, Any], batch: int) -> dict[str, Any]:
    recs = [r for part in run["parts"] for r in part["records"]]
    t0 = run["t0"]
    t_end = max((r[0] for r in recs), default=t0)
    bars = sum(r[2] for r in recs if r[3] == 200)
    lat_ms = np.asarray([r[1] for r in recs], dtype=np.float64) / 1e6
    window = max(t_end - t0, 1e-9)
    # the rate over consecutive windows (whole ones only): 1 s, or 5 s when a request carries many bars
    w = 1.0 if batch == 1 else 5.0
    ok = [r for r in recs if r[3] == 200]
    idx = np.asarray([int((r[0] - t0) / w) for r in ok], dtype=np.int64)
    per_w = np.bincount(idx, weights=[r[2] for r in ok], minlength=1) / w
    full = per_w[: int(window / w)]  # empty when the stage was shorter than one window
    statuses: Counter[int] = Counter()
    kinds: Counter[str] = Counter()
    for part in run["parts"]:
        statuses.update({int(k): v for k, v in part["statuses"].items()})
        kinds.update(part["kinds"])
    req_b = sum(p["bytes"][0] for p in run["parts"])
    resp_b = sum(p["bytes"][1] for p in run["parts"])
    out = {
        "batch": batch,
        "request_bytes_per_bar": req_b / bars if bars else None,
        "response_bytes_per_bar": resp_b / bars if bars else None,
        "requests": len(recs),
        "bars_accepted": bars,
        "window_s": window,
        "bars_per_s": bars / window,
        "bars_per_s_windows": {
            "window_s": w,
            "min": float(full.min()) if len(full) else None,
            "p50": float(np.median(full)) if len(full) else None,
            "n": int(len(full)),
        },
        "latency_ms": {
            "p50": float(np.percentile(lat_ms, 50)) if len(lat_ms) else None,
            "p99": float(np.percentile(lat_ms, 99)) if len(lat_ms) else None,
            "max": float(lat_ms.max()) if len(lat_ms) else None,
        },
        "errors": {
            "non2xx": sum(v for k, v in statuses.items() if not 200 <= k < 300),
            "transport": sum(p["transport"] for p in run["parts"]),
            "resent": sum(p["resent"] for p in run["parts"]),
            "by_kind": dict(kinds),
            "samples": [s for p in run["parts"] for s in p["samples"]][:5],
        },
    }
    if batch > 1 and len(lat_ms):
        out["latency_per_bar_ms_p50"] = out["latency_ms"]["p50"] / batch
    return out


def acked_of(run: dict[str, Any]) -> dict[tuple[str, int], str]:
    return {(s, ts): fp for part in run["parts"] for s, ts, fp in part["acked"]}


# -- the profile -------------------------------------------------------------------------------------------------
def _profile_serve(out: str, argv: list[str]) -> None:
    """``fxgate serve`` under cProfile (the main thread: uvicorn's event loop); the stats go to ``out`` on exit."""
    import cProfile

    from fxgate.engine.cli import main as cli_main

    def stop(_sig: int, _frame: Any) -> None:  # uvicorn re-raises SIGTERM after its graceful stop: end normally
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    prof = cProfile.Profile()
    # the measured window only (not the imports, the model loading and the restore): the bench signals its edges
    signal.signal(signal.SIGUSR1, lambda _s, _f: prof.enable())
    signal.signal(signal.SIGUSR2, lambda _s, _f: prof.disable())
    try:
        cli_main(argv)
    except SystemExit:
        pass
    finally:
        prof.disable()
        prof.dump_stats(out)


#: (label, file name ending, function name): the parts of a bar's time in the profile (cumulative, per bar).
#: Wall time of the event-loop thread: a part's figure includes the time the process waited (fsync) or was not
#: scheduled (a busy machine), so read the shares, and the CPU figures of the stage differences for costs.
BUSY = "event loop busy (poll wait excluded)"
OUTSIDE = "  HTTP + FastAPI/Starlette + middleware (busy - endpoint)"
PARTS = (
    ("  endpoint: body read, json.loads, service, response JSON", "server.py", "post_bars"),
    ("    of which BarService.post_bars", "service.py", "post_bars"),
    ("      parse_bar (fields, ISO time)", "service.py", "parse_bar"),
    ("      Gate.aon_bar (features, L1, L4 updates and verdicts, sizing)", "gate.py", "aon_bar"),
    ("      Decision.to_dict", "decision.py", "to_dict"),
    ("      BarService._log (audit append + snapshot)", "service.py", "_log"),
    ("        AuditLog.append (line, sha256, write, fsync)", "audit.py", "append"),
    ("        BarService._snapshot (Gate.snapshot, atomic write)", "service.py", "_snapshot"),
    ("        os.fsync (audit and snapshot together)", "~", "<built-in method posix.fsync>"),
    ("    response JSON (service.dumps)", "service.py", "dumps"),
    ("  of which h11 request parsing (data_received)", "h11_impl.py", "data_received"),
)
_LOOP = ("base_events.py", "_run_once")
_POLL = ("~", "<method 'poll' of 'select.epoll' objects>")


def profile_summary(path: Path, bars: int) -> dict[str, Any]:
    import pstats

    table = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]

    def cum_us(file_end: str, func: str) -> float:
        ct = sum(v[3] for (f, _line, fn), v in table.items() if fn == func and f.endswith(file_end))
        return 1e6 * ct / max(bars, 1)

    busy = cum_us(*_LOOP) - cum_us(*_POLL)
    parts = {BUSY: busy}
    for label, file_end, func in PARTS:
        parts[label] = cum_us(file_end, func)
    parts[OUTSIDE] = busy - parts[PARTS[0][0]]
    top = sorted(table.items(), key=lambda kv: -kv[1][2])[:25]
    return {
        "bars": bars,
        "parts_us_per_bar": parts,
        "top_tottime": [
            {"function": f"{Path(f).name}:{line}:{fn}", "tottime_us_per_bar": 1e6 * v[2] / bars, "calls": v[1]}
            for (f, line, fn), v in top
        ],
    }


# -- the stages --------------------------------------------------------------------------------------------------
def run_stage(
    work: Path,
    name: str,
    *,
    settings: tuple[int, int],
    state: Path,
    bundle: Path,
    feeds: dict[str, list[dict[str, Any]]],
    connections: int,
    batch: int,
    seconds: float,
    prior: dict[tuple[str, int], str],
    profile: bool = False,
) -> tuple[dict[str, Any], dict[tuple[str, int], str]]:
    cfg = write_config(work / f"{name}.toml", *settings)
    prof = work / f"{name}.pstats" if profile else None
    print(f"== {name}: snapshot_every={settings[0]} fsync_every={settings[1]}, {len(feeds)} symbol(s), batch {batch}")
    srv = Server(work, name, cfg, state, bundle, prof)
    stopped = False
    try:
        toggle = (lambda: os.kill(srv.proc.pid, signal.SIGUSR1)) if profile else None
        load0, cpu0 = os.getloadavg()[0], cpu_s(srv.proc.pid)
        run = drive(srv.port, feeds, connections, batch, seconds, on_go=toggle)
        cpu1, load1 = cpu_s(srv.proc.pid), os.getloadavg()[0]
        if profile:
            os.kill(srv.proc.pid, signal.SIGUSR2)
        fig = figures(run, batch)
        fig["settings"] = {"snapshot_every": settings[0], "fsync_every": settings[1]}
        fig["symbols"] = len(feeds)
        fig["connections"] = min(connections, len(feeds))
        fig["startup_s"] = srv.startup_s
        fig["loadavg_1min"] = {"before": load0, "after": load1}
        fig["server_cpu_s"] = cpu1 - cpu0
        # CPU time per accepted bar: what one dedicated core would sustain, whatever else the machine ran
        fig["server_cpu_ms_per_bar"] = 1e3 * (cpu1 - cpu0) / max(fig["bars_accepted"], 1)
        fig["server"] = server_side(srv.get("/metrics"))
        syms = srv.get("/v1/symbols")["symbols"]
        fig["warm_symbols"] = sum(s["warm"] for s in syms)
        fig["insufficient"] = dict(Counter(m for s in syms for m in s["insufficient"]))
        fig["memory"] = srv.memory()
        anchor = srv.get("/v1/health")["audit"]
        fig["stop_s"], fig["stop_rc"] = srv.stop()
        stopped = True
    finally:
        if not stopped and srv.proc.poll() is None:
            srv.proc.kill()
    acked = {**prior, **acked_of(run)}
    audit = audit_check(state, acked, anchor)
    audit["ok"] = (
        audit["lost"] == 0
        and audit["logged_twice"] == 0
        and audit["logged_unacked"] == 0
        and audit["decision_mismatch"] == 0
        and audit["verify_rc"] == 0
    )
    fig["audit"] = audit
    if prof is not None:
        fig["profile"] = profile_summary(prof, fig["bars_accepted"])
    snaps = sorted((state / "snapshots").glob("*.fxgate-snapshot"))
    if snaps:
        sizes = np.asarray([p.stat().st_size for p in snaps], dtype=np.float64) / 2**20
        fig["snapshot_file_mib"] = {"mean": float(sizes.mean()), "max": float(sizes.max()), "files": len(snaps)}
    e, a, lat, win = fig["errors"], fig["audit"], fig["latency_ms"], fig["bars_per_s_windows"]
    print(
        f"   {fig['bars_accepted']:,} bars in {fig['window_s']:.1f} s = {fig['bars_per_s']:,.0f} bars/s "
        f"(slowest {win['window_s']:.0f} s: {_num(win['min'])}/s); request p50 {lat['p50']:.2f} ms, "
        f"p99 {lat['p99']:.2f} ms; errors {e['non2xx']} non-2xx, {e['transport']} transport; "
        f"audit lost {a['lost']}, twice {a['logged_twice']}, verify rc {a['verify_rc']}; "
        f"RSS {fig['memory']['rss_mib']:.0f} MiB (peak {fig['memory']['vm_hwm_mib']:.0f})"
    )
    return fig, acked


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def pin_code(work: Path, mode: str) -> dict[str, Any]:
    """Freeze the code under test for the whole run: a copy of the package folders (``tree``: as they are now; else
    a git revision via ``git archive``: ``HEAD``, a commit) first on the path of this process and of every server,
    so an edit made while the benchmark runs (a shared checkout) never mixes two versions (a changed config default
    would change the config hash, and a stage's snapshots would no longer restore)."""
    root = Path(__file__).resolve().parents[1]
    pkg = work / "code" / "fxgate"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    folders = ("engine", "modules", "models", "training")

    def git(*a: str) -> str:
        r = subprocess.run(["git", "-C", str(root), *a], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD" if mode == "tree" else f"{mode}^{{commit}}")
    if mode != "tree":
        if not commit:
            raise SystemExit(f"--code {mode}: not a commit of {root} (or no git checkout). Fix: use --code tree")
        tar = subprocess.run(["git", "-C", str(root), "archive", commit, *folders], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(pkg)], input=tar.stdout, check=True)
        for f in pkg.rglob("*.py"):  # a file equal to the tree's gets its mtime, so numba's cache (below) fits it
            twin = root / f.relative_to(pkg)
            if twin.is_file() and twin.read_bytes() == f.read_bytes():
                shutil.copystat(twin, f)
        for cache in (c for f in folders for c in (root / f).rglob("__pycache__")):
            dest = pkg / cache.relative_to(root)
            if dest.parent.is_dir():
                shutil.copytree(cache, dest, ignore=shutil.ignore_patterns("*.pyc"), dirs_exist_ok=True)
        dirty = False
    else:
        # copy2 keeps the mtimes and __pycache__ comes along: numba's on-disk cache (keyed by the source file's
        # mtime and size) stays valid, so the kernels are not compiled again
        for f in folders:
            shutil.copytree(root / f, pkg / f, ignore=shutil.ignore_patterns("*.pyc"))
        dirty = bool(git("status", "--porcelain", "--", *folders))
    sys.path.insert(0, str(pkg.parent))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pkg.parent), os.environ.get("PYTHONPATH")]))
    return {"code": mode, "commit": commit or None, "uncommitted_changes": dirty}


def compile_kernels(bundle: Path, work: Path) -> float:
    """Compile every kernel of the pinned code once (numba's cache), so no stage pays for it on its first bars."""
    from fxgate.engine.config import load_config
    from fxgate.engine.gate import Gate
    from fxgate.models.ensemble import TreeEnsemble

    t0 = time.perf_counter()
    cfg = load_config(write_config(work / "compile.toml", 1, 1))
    Gate(cfg, TreeEnsemble.load(bundle), timeframe="H1", symbol="EURUSD").warm_up()
    return time.perf_counter() - t0


def fit_bundle(path: Path, estimators: int) -> float:
    from fxgate.engine import sample_bars
    from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
    from fxgate.models.labels import LabelSpec

    bars = sample_bars()
    t0 = time.perf_counter()
    ens = TreeEnsemble()
    ens.fit(
        bars[:FIT_BARS],
        LabelSpec("next", 1, default_spread=8e-5),
        EnsembleConfig(n_estimators=estimators),
        evaluate=False,
    )
    ens.save(path)
    return time.perf_counter() - t0


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--_profile-serve":
        _profile_serve(sys.argv[2], sys.argv[3:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--symbols", type=int, default=51)
    ap.add_argument("--bars", type=int, default=0, help="at most this many live bars per symbol (0: --seconds only)")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each live and batch stage")
    ap.add_argument("--connections", type=int, default=4, help="driver processes, one keep-alive connection each")
    ap.add_argument("--batch", type=int, default=100, help="bars per request in the batch stages")
    ap.add_argument("--warmup", type=int, default=300, help="bars per symbol before the live stages")
    ap.add_argument("--large", type=int, default=100, help="the larger snapshot_every / fsync_every")
    ap.add_argument("--bundle", type=Path, default=None, help="Layer-1 bundle to use (fitted into it if absent)")
    ap.add_argument("--estimators", type=int, default=300, help="trees per booster of the fitted bundle")
    ap.add_argument("--profile", action="store_true", help="also profile the server (cProfile) in a live stage")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (state, logs, profile)")
    ap.add_argument(
        "--code",
        default="tree",
        metavar="tree|REV",
        help="the code under test, copied at the start: the working tree as it is, or a git revision (HEAD, a commit)",
    )
    args = ap.parse_args()
    if args.symbols < 2:
        raise SystemExit("--symbols must be >= 2 (the RSS per symbol compares the run with one symbol)")

    work = Path(tempfile.mkdtemp(prefix="fxgate-bench-server-"))
    out: dict[str, Any] = {"benchmark": "server", "date": datetime.now(UTC).strftime("%Y-%m-%d"), "stages": {}}
    out["code"] = pin_code(work, args.code)
    from fxgate.engine import sample_bars

    bundle = args.bundle or work / "bundle"
    if not (bundle.is_dir() and any(bundle.iterdir())):
        print(f"fitting the Layer-1 bundle ({args.estimators} trees per booster) into {bundle}")
        out["fit_s"] = fit_bundle(bundle, args.estimators)
    out["bundle_mib"] = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file()) / 2**20
    out["compile_s"] = compile_kernels(bundle, work)
    bars = sample_bars()
    names = symbol_names(args.symbols)
    feeds = {s: make_feed(bars, k, seed=16) for k, s in enumerate(names)}
    warm = {s: f[: args.warmup] for s, f in feeds.items()}
    live_end = None if args.bars <= 0 else args.warmup + args.bars
    live = {s: f[args.warmup : live_end] for s, f in feeds.items()}
    common = dict(bundle=bundle, connections=args.connections)
    stages = out["stages"]
    try:
        warm_state = work / "state-warm"
        stages["warm-up (batch)"], warm_acked = run_stage(
            work,
            "warm",
            settings=WARM_SETTINGS,
            state=warm_state,
            feeds=warm,
            batch=args.batch,
            seconds=float("inf"),
            prior={},
            **common,
        )
        frozen = work / "state-warm-frozen"
        shutil.copytree(warm_state, frozen)
        grid = [(1, 1), (args.large, 1), (1, args.large), (args.large, args.large)]
        for snap, fs in grid:
            name = f"live s{snap} f{fs}"
            state = work / f"state-live-{snap}-{fs}"
            shutil.copytree(frozen, state)
            stages[name], _ = run_stage(
                work,
                f"live-{snap}-{fs}",
                settings=(snap, fs),
                state=state,
                feeds=live,
                batch=1,
                seconds=args.seconds,
                prior=warm_acked,
                **common,
            )
        # one connection: each request's latency without queueing behind the other bots' requests
        state = work / "state-live-one-connection"
        shutil.copytree(frozen, state)
        big = args.large
        stages[f"live s{big} f{big}, 1 conn"], _ = run_stage(
            work,
            "live-one-connection",
            settings=(big, big),
            state=state,
            feeds=live,
            batch=1,
            seconds=args.seconds / 2,
            prior=warm_acked,
            bundle=bundle,
            connections=1,
        )
        for snap, fs in ((1, 1), (args.large, args.large)):
            state = work / f"state-batch-{snap}-{fs}"
            shutil.copytree(frozen, state)
            stages[f"batch s{snap} f{fs}"], _ = run_stage(
                work,
                f"batch-{snap}-{fs}",
                settings=(snap, fs),
                state=state,
                feeds=live,
                batch=args.batch,
                seconds=args.seconds,
                prior=warm_acked,
                **common,
            )
        one = {names[0]: warm[names[0]]}
        stages["one symbol (batch)"], _ = run_stage(
            work,
            "one",
            settings=WARM_SETTINGS,
            state=work / "state-one",
            feeds=one,
            batch=args.batch,
            seconds=float("inf"),
            prior={},
            **common,
        )
        if args.profile:
            state = work / "state-profile"
            shutil.copytree(frozen, state)
            stages["live s1 f1 (cProfile)"], _ = run_stage(
                work,
                "profile",
                settings=(1, 1),
                state=state,
                feeds=live,
                batch=1,
                seconds=args.seconds,
                prior=warm_acked,
                profile=True,
                **common,
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work folder kept: {work}")
    finish(out, args)
    write_json(args.json, out)


def finish(out: dict[str, Any], args: argparse.Namespace) -> None:
    st = out["stages"]
    big = args.large
    main_live = st["live s1 f1"]
    fastest = max(
        (v for k, v in st.items() if k.startswith("live s") and "(" not in k and "conn" not in k),
        key=lambda v: v["bars_per_s"],
    )
    warm, one = st["warm-up (batch)"], st["one symbol (batch)"]
    per_symbol = (warm["memory"]["rss_mib"] - one["memory"]["rss_mib"]) / (args.symbols - 1)
    out["memory"] = {
        "rss_mib_1_symbol": one["memory"]["rss_mib"],
        f"rss_mib_{args.symbols}_symbols": warm["memory"]["rss_mib"],
        "rss_mib_per_symbol": per_symbol,
        "peak_rss_mib_any_stage": max(v["memory"]["vm_hwm_mib"] for v in st.values()),
        "snapshot_file_mib_per_symbol": warm.get("snapshot_file_mib", {}).get("mean"),
    }
    cpu = {k: v["server_cpu_ms_per_bar"] for k, v in st.items()}
    base, live_ll = f"batch s{big} f{big}", f"live s{big} f{big}"
    # CPU time of the server process per accepted bar, from stages on the same warm state that differ in one setting
    # (the request histogram is no per-bar cost here: with several connections, requests overlap in the server)
    out["cpu_ms_per_bar"] = {
        f"the bar itself: gate, audit line, JSON ({base}, {args.batch} bars a request)": cpu[base],
        f"one HTTP request per bar ({live_ll} - {base})": cpu[live_ll] - cpu[base],
        f"fsync of the audit log per bar (live s{big} f1 - {live_ll})": cpu[f"live s{big} f1"] - cpu[live_ll],
        f"snapshot per bar (live s1 f{big} - {live_ll})": cpu[f"live s1 f{big}"] - cpu[live_ll],
    }
    # wall time of one snapshot write (encode, sha256, write, fsync, rename, fsync of the folder): the server's own
    out["snapshot_write_ms"] = main_live["server"]["snapshot_mean_ms"]
    errors = sum(v["errors"]["non2xx"] + v["errors"]["transport"] for v in st.values())
    lost = sum(v["audit"]["lost"] for v in st.values())
    audit_ok = all(v["audit"]["ok"] for v in st.values())
    worst_rss = max(v["memory"]["vm_hwm_mib"] for k, v in st.items() if "one symbol" not in k)
    out["targets"] = TARGETS
    out["met"] = {
        "bars_per_s (defaults)": main_live["bars_per_s"] >= TARGETS["bars_per_s"],
        "p99 (defaults)": main_live["latency_ms"]["p99"] <= TARGETS["p99_ms"],
        "zero errors": errors == 0,
        "zero lost, each logged once": lost == 0 and audit_ok,
        "state per symbol": per_symbol <= TARGETS["state_mib_per_symbol"],
        "rss 51 symbols": worst_rss <= TARGETS["rss_mib_51"],
    }
    out["settings"] = {k: v for k, v in vars(args).items() if k not in ("json", "bundle")}
    out["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    n = args.symbols
    out["summary"] = [
        {
            "figure": f"server, {n} symbols, 1 bar/request, defaults (snapshot_every=1, fsync_every=1)",
            "ours": f"{main_live['bars_per_s']:,.0f} bars/s, p99 {main_live['latency_ms']['p99']:.1f} ms",
            "reference": "-",
            "ratio": "-",
            "target": ">= 2,000 bars/s, p99 <= 10 ms",
            "met": out["met"]["bars_per_s (defaults)"] and out["met"]["p99 (defaults)"],
        },
        {
            "figure": f"server, fastest live setting ({fastest['settings']})",
            "ours": f"{fastest['bars_per_s']:,.0f} bars/s, p99 {fastest['latency_ms']['p99']:.1f} ms",
            "reference": "-",
            "ratio": "-",
            "target": ">= 2,000 bars/s, p99 <= 10 ms",
            "met": fastest["bars_per_s"] >= TARGETS["bars_per_s"] and fastest["latency_ms"]["p99"] <= TARGETS["p99_ms"],
        },
        {
            "figure": "server errors / lost or twice-logged bars (all stages)",
            "ours": f"{errors} / {lost}",
            "reference": "-",
            "ratio": "-",
            "target": "0 / 0",
            "met": out["met"]["zero errors"] and out["met"]["zero lost, each logged once"],
        },
        {
            "figure": "server RSS per symbol (no models); snapshot file",
            "ours": f"{per_symbol:.2f} MiB; {out['memory']['snapshot_file_mib_per_symbol']:.2f} MiB",
            "reference": "-",
            "ratio": "-",
            "target": "<= 2 MiB",
            "met": out["met"]["state per symbol"],
        },
        {
            "figure": f"server peak RSS, {n} symbols, no LLM",
            "ours": f"{worst_rss:.0f} MiB",
            "reference": "-",
            "ratio": "-",
            "target": "<= 300 MiB",
            "met": out["met"]["rss 51 symbols"],
        },
    ]
    print(
        f"\n{'stage':<24}{'bars/s':>9}{'slowest':>9}{'p50 ms':>9}{'p99 ms':>9}{'srv ms/req':>11}"
        f"{'cpu ms/bar':>11}{'errors':>7}{'lost':>6}{'RSS MiB':>9}{'load':>6}"
    )
    for name, v in st.items():
        srv = v["server"]["request_mean_ms"]
        print(
            f"{name:<24}{v['bars_per_s']:>9,.0f}{_num(v['bars_per_s_windows']['min']):>9}"
            f"{v['latency_ms']['p50']:>9.2f}{v['latency_ms']['p99']:>9.2f}{srv if srv else 0:>11.2f}"
            f"{v['server_cpu_ms_per_bar']:>11.2f}{v['errors']['non2xx'] + v['errors']['transport']:>7}"
            f"{v['audit']['lost']:>6}{v['memory']['vm_hwm_mib']:>9.0f}{v['loadavg_1min']['after']:>6.1f}"
        )
    m = out["memory"]
    print(
        f"RSS: 1 symbol {m['rss_mib_1_symbol']:.0f} MiB, {n} symbols {m[f'rss_mib_{n}_symbols']:.0f} MiB -> "
        f"{m['rss_mib_per_symbol']:.2f} MiB per symbol; snapshot file {m['snapshot_file_mib_per_symbol']:.2f} MiB"
    )
    print("\nwhere a bar's time goes: server CPU ms per bar, from the stage differences (no profiler):")
    for label, v in out["cpu_ms_per_bar"].items():
        print(f"  {label:<78}{v:7.2f}")
    print(f"  one snapshot write, wall time (fxgate_snapshot_seconds, live s1 f1){out['snapshot_write_ms']:22.2f}")
    prof = next((v["profile"] for v in st.values() if "profile" in v), None)
    if prof:
        print(f"\nwhere a bar's time goes (cProfile, main thread, {prof['bars']} bars; cumulative us per bar):")
        for label, us in prof["parts_us_per_bar"].items():
            print(f"  {label:<58}{us if us is not None else float('nan'):>10.0f}")
        print("top functions by own time (us per bar):")
        for row in prof["top_tottime"][:15]:
            print(f"  {row['function']:<70}{row['tottime_us_per_bar']:>9.1f}")
    print("targets: >= 2,000 bars/s, p99 <= 10 ms, 0 errors, 0 lost, <= 2 MiB per symbol, <= 300 MiB for 51")


if __name__ == "__main__":
    main()
