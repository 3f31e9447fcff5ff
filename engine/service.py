"""The live service behind ``fxgate serve``: bars for many symbols in, Decisions out, state that survives ``kill -9``.

Framework-free (:mod:`fxgate.engine.server` puts it behind FastAPI), so its rules are testable without HTTP:

* **One gate per symbol** (:class:`~fxgate.engine.pool.GatePool`), one LLM stack for all of them (loaded once;
  its runtime queues the calls). A symbol's requests are serialized by that symbol's :class:`asyncio.Lock`, so
  its bars are accepted, logged and answered in order; other symbols never wait for it. The fast path (validation,
  state updates, L1, L4, sizing) runs on the event loop, the LLM layers in a worker thread (:meth:`Gate.aon_bar`),
  so a slow LLM call for one symbol never stops the module updates of another.
* **Every accepted bar is logged before it is answered**: its Decision and the bar itself go to the hash-chained
  audit log (:mod:`fxgate.engine.audit`; fsynced every ``[server] fsync_every`` bars). The log is the write-ahead
  log: a symbol's snapshot is written (atomically) after every ``[server] snapshot_every`` of its bars, and on start
  the service restores every snapshot and re-feeds the bars the log holds after it. A ``kill -9`` at any point
  therefore loses no acknowledged bar and logs none twice; a bar being processed when the process died was not
  acknowledged and is simply sent again by the client.
* **Idempotent resend**: a bar at or before the symbol's last accepted time that is *identical* (time, prices,
  volume, spread) to one of the last :data:`REMEMBERED` accepted bars is answered with its logged Decision (and not
  logged again); any other such bar is a 409 and changes nothing.
* **Fail closed on storage**: if an audit append fails (disk full, I/O error), the bar's state update cannot be
  logged, so the service stops accepting bars (503 with the reason) until it is restarted, which restores the
  last consistent state from the snapshots and the log.

Bad input is answered per bar with the status, the bar's index and the field (see :class:`ApiError`); the bars of a
batch before the bad one are accepted.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily

from fxgate.engine.audit import REFUSED_VETOES, AuditLog, Entry, read_bars, read_line
from fxgate.engine.config import GateConfig
from fxgate.engine.core.bars import TIMEFRAMES, Bar
from fxgate.engine.core.decision import Decision
from fxgate.engine.core.version import __version__
from fxgate.engine.pool import GatePool, PoolError, UnknownSymbol
from fxgate.engine.rundir import clean_temps
from fxgate.engine.snapshot import SUFFIX

__all__ = ["ApiError", "BarService", "REMEMBERED", "BAR_FIELDS", "parse_ts"]

#: accepted bars per symbol the service remembers (where their audit line is) to answer exact resends
REMEMBERED = 4096
#: the fields of a bar in a request; ``spread`` is optional
BAR_FIELDS = ("ts", "open", "high", "low", "close", "volume", "spread")
_PRICES = ("open", "high", "low", "close", "volume")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_I64 = 2**63 - 1
disable_created_metrics()  # the *_created series double the output and no dashboard reads them
_LATENCY_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ApiError(Exception):
    """A request (or one bar of it) the service refuses: HTTP ``status``, a machine-readable ``kind``, the bar's
    ``index`` in the request (None: the request as a whole) and the ``field`` (``bars[3].close``) when one is at
    fault. ``decision``: the gate's Decision for a bar it refused itself (its reason says why)."""

    def __init__(
        self,
        status: int,
        kind: str,
        message: str,
        *,
        index: int | None = None,
        field: str | None = None,
        decision: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message
        self.index, self.field, self.decision = index, field, decision

    def to_dict(self) -> dict[str, Any]:
        d = {
            "status": self.status,
            "kind": self.kind,
            "index": self.index,
            "field": self.field,
            "message": self.message,
        }
        if self.decision is not None:
            d["decision"] = self.decision
        return d


def parse_ts(value: Any, where: str) -> int:
    """A bar time from a request: int nanoseconds since the epoch (UTC), or an ISO-8601 string with a zone
    (``2017-04-19T09:00:00Z``, ``...+02:00``; fractions down to microseconds)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ApiError(
            422,
            "invalid",
            f'{where} = {value!r}: must be an ISO-8601 time with a zone ("2017-04-19T09:00:00Z") or an integer '
            f"of nanoseconds since the epoch, UTC (got {type(value).__name__})",
            field=where,
        )
    if isinstance(value, int):
        if not 0 <= value <= _I64:
            raise ApiError(422, "invalid", f"{where} = {value}: outside int64 nanoseconds (1970..2262)", field=where)
        return value
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(
            422, "invalid", f'{where} = {value!r}: not an ISO-8601 time, e.g. "2017-04-19T09:00:00Z"', field=where
        ) from None
    if dt.tzinfo is None:
        raise ApiError(
            422,
            "invalid",
            f'{where} = {value!r} has no time zone: add "Z" for UTC (or +hh:mm); a zone-less time is ambiguous '
            "(broker server time is not UTC)",
            field=where,
        )
    delta = dt - _EPOCH
    ns = (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1_000
    if not 0 <= ns <= _I64:
        raise ApiError(422, "invalid", f"{where} = {value!r}: before 1970 or after 2262", field=where)
    return ns


def _number(raw: dict[str, Any], key: str, where: str) -> float:
    v = raw[key]
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ApiError(422, "invalid", f"{where} = {v!r}: must be a number (got {type(v).__name__})", field=where)
    try:
        f = float(v)
    except OverflowError:
        f = math.inf
    if not math.isfinite(f):
        raise ApiError(422, "invalid", f"{where} = {v!r}: must be a finite number", field=where)
    return f


def parse_bar(raw: Any, i: int, symbol: str, timeframe: str) -> Bar:
    """One bar of a request as a :class:`Bar` (types only: the gate checks the bar rules and the time order)."""
    at = f"bars[{i}]"
    if not isinstance(raw, dict):
        raise ApiError(422, "invalid", f"{at}: must be an object with {', '.join(BAR_FIELDS)}", index=i, field=at)
    extra = [k for k in raw if k not in BAR_FIELDS]
    if extra:
        raise ApiError(
            422,
            "invalid",
            f"{at}: unknown field {extra[0]!r}; a bar has {', '.join(BAR_FIELDS)} (spread optional)",
            index=i,
            field=f"{at}.{extra[0]}",
        )
    for k in BAR_FIELDS[:-1]:
        if k not in raw:
            raise ApiError(422, "invalid", f"{at}.{k} is missing", index=i, field=f"{at}.{k}")
    try:
        ts = parse_ts(raw["ts"], f"{at}.ts")
        o, h, lo, c, v = (_number(raw, k, f"{at}.{k}") for k in _PRICES)
        sp = raw.get("spread")
        spread = None if sp is None else _number(raw, "spread", f"{at}.spread")
    except ApiError as e:
        e.index = i
        raise
    return Bar(ts, o, h, lo, c, v, spread, symbol, timeframe)


def _same(bar: Bar, logged: dict[str, Any]) -> bool:
    return all(getattr(bar, k) == logged[k] for k in BAR_FIELDS)


class _MonitorCollector:
    """Per symbol, a certified gate's precision monitor: its e-value and whether it has halted the signals."""

    def __init__(self, service: BarService) -> None:
        self.service = service

    def collect(self) -> Any:
        e = GaugeMetricFamily(
            "fxgate_precision_monitor_e_value", "The precision monitor's e-value (halts at 1/alpha)", labels=["symbol"]
        )
        h = GaugeMetricFamily(
            "fxgate_precision_monitor_halted", "1 when the monitor has halted the symbol's signals", labels=["symbol"]
        )
        for sym in self.service.pool.names():
            for m in self.service.pool.gate(sym).modules:
                if m.name == "precision_monitor":
                    v = m.verdict()
                    e.add_metric([sym], v.score if math.isfinite(v.score) else 0.0)
                    h.add_metric([sym], 0.0 if v.passed else 1.0)
        yield e
        yield h


class _Metrics:
    """The Prometheus series of one service (its own registry, so two services in one process never mix)."""

    def __init__(self, service: BarService) -> None:
        r = self.registry = CollectorRegistry()
        self.bars = Counter(
            "fxgate_bars",
            "Bars by outcome: accepted, rejected (4xx), resent (answered from the log)",
            ["outcome"],
            registry=r,
        )
        self.requests = Counter("fxgate_requests", "HTTP requests by path and status", ["path", "status"], registry=r)
        self.request_seconds = Histogram(
            "fxgate_request_seconds", "Request latency by path", ["path"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.layer_seconds = Histogram(
            "fxgate_layer_latency_seconds",
            "Latency of each layer on the bars where it was evaluated",
            ["layer"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.vetoes = Counter("fxgate_vetoes", "First vetoes by layer (L1, L2, L3, L4, sizing)", ["layer"], registry=r)
        self.module_vetoes = Counter("fxgate_module_vetoes", "First vetoes by Layer-4 module", ["module"], registry=r)
        self.decisions = Counter("fxgate_decisions", "Decisions of accepted bars by action", ["action"], registry=r)
        self.snapshot_seconds = Histogram(
            "fxgate_snapshot_seconds", "Time to write one symbol's snapshot", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.snapshot_errors = Counter("fxgate_snapshot_errors", "Snapshot writes that failed", registry=r)
        self.refed = Counter("fxgate_refed_bars", "Bars re-fed from the audit log on start", registry=r)
        Gauge("fxgate_llm_queue_depth", "Bars whose LLM layers are running or queued now", registry=r).set_function(
            lambda: sum(g.llm_in_flight for g in service.pool.gates())
        )
        Gauge("fxgate_symbols", "Symbols with a gate", registry=r).set_function(lambda: len(service.pool))
        Gauge("fxgate_audit_seq", "Lines in the audit log", registry=r).set_function(lambda: service.audit.seq)
        r.register(_MonitorCollector(service))
        Gauge("fxgate_up", "1 while bars are accepted, 0 after a storage failure", registry=r).set_function(
            lambda: float(service.broken is None)
        )

    def decision(self, d: Decision) -> None:
        self.bars.labels("accepted").inc()
        self.decisions.labels(d.action).inc()
        for v in d.layers:
            if v.enabled and not v.reason.startswith("not evaluated"):
                self.layer_seconds.labels(v.name).observe(v.latency_us / 1e6)
        if d.first_veto:
            layer, _, module = d.first_veto.partition(":")
            self.vetoes.labels(layer).inc()
            if module:
                self.module_vetoes.labels(module).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)


class BarService:
    """The state behind the HTTP API (see the module docstring). ``state_dir`` holds ``snapshots/`` and ``audit/``;
    a service opened on a directory continues where the last one stopped. ``ensemble`` / ``bundle_dir``: the Layer-1
    models, as :class:`~fxgate.engine.pool.GatePool` takes them."""

    def __init__(
        self,
        config: GateConfig,
        *,
        timeframe: str,
        state_dir: str | Path,
        ensemble: Any = None,
        bundle_dir: str | Path | None = None,
        llm: Any = None,
    ) -> None:
        if timeframe not in TIMEFRAMES:
            raise ValueError(f"timeframe {timeframe!r}: use one of {', '.join(TIMEFRAMES)}")
        self.config, self.timeframe = config, timeframe
        sv = config.server
        self.state_dir = Path(state_dir)
        self.snapshot_dir = self.state_dir / "snapshots"
        self.audit_dir = self.state_dir / "audit"
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        clean_temps(self.snapshot_dir)  # half-written snapshots of a killed server (the finished ones are intact)
        self.started = time.time()
        self.broken: str | None = None  # why bars are no longer accepted (a failed audit write)
        self.audit = AuditLog(self.audit_dir, fsync_every=sv.fsync_every, max_bytes=sv.rotate_bytes)
        try:
            logged = read_bars(self.audit_dir)
            # a symbol in the log was accepted before: it keeps its gate even when new symbols are refused
            known = sorted({*sv.symbols, *(s for s, _, _ in logged)})
            kw = dict(
                timeframe=timeframe, ensemble=ensemble, bundle_dir=bundle_dir, unknown=sv.unknown_symbols, llm=llm
            )
            if any(not f.name.startswith(".") for f in self.snapshot_dir.glob(f"*{SUFFIX}")):
                self.pool = GatePool.restore_all(self.snapshot_dir, config, symbols=known, **kw)
            else:
                self.pool = GatePool(config, symbols=known, **kw)
        except BaseException:
            self.audit.close()
            raise
        self._locks: dict[str, asyncio.Lock] = {}
        self._recent: dict[str, OrderedDict[int, Entry]] = {}
        self._unsnapped: dict[str, int] = {}
        self.metrics = _Metrics(self)
        self.refed = self._refeed(logged)

    # -- start: the write-ahead re-feed ------------------------------------------------------------------------------
    def _refeed(self, logged: list[tuple[str, dict[str, Any], Entry]]) -> dict[str, int]:
        """Feed every logged bar after its symbol's snapshot back through its gate (the bars accepted between the
        last snapshot and the crash), and remember the recent ones for resends. Returns the bars re-fed per symbol.
        A re-fed bar whose Decision differs from the logged one (same state, same bar: only a changed model or a
        non-deterministic module can do that) is reported in :attr:`refeed_mismatches`."""
        self.refeed_mismatches: list[str] = []
        start = {s: self.pool.gate(s).intake.last_ts for s in {s for s, _, _ in logged}}
        fed: dict[str, int] = {}
        for symbol, raw, entry in logged:
            self._remember(symbol, entry)
            last = start[symbol]
            if last is not None and raw["ts"] <= last:
                continue
            bar = Bar(*(raw[k] for k in BAR_FIELDS), symbol, self.timeframe)
            d = self.pool.gate(symbol).on_bar(bar)
            want = read_line(entry.path, entry.offset, entry.length)["decision"]
            if (d.action, d.size, d.first_veto) != (want["action"], want["size"], want["first_veto"]):
                self.refeed_mismatches.append(
                    f"{symbol} {raw['ts']}: logged {want['action']} {want['size']:g} (first veto "
                    f"{want['first_veto']}), re-fed {d.action} {d.size:g} (first veto {d.first_veto})"
                )
            fed[symbol] = fed.get(symbol, 0) + 1
            self.metrics.refed.inc()
        for symbol in fed:
            self._snapshot(symbol)
        return fed

    def _remember(self, symbol: str, entry: Entry) -> None:
        recent = self._recent.setdefault(symbol, OrderedDict())
        recent[entry.ts] = entry
        if len(recent) > REMEMBERED:
            recent.popitem(last=False)

    def _snapshot(self, symbol: str) -> None:
        t0 = time.perf_counter()
        try:
            # the log first: a snapshot must never hold a bar the durable log lacks (with fsync_every > 1, a power
            # cut after the snapshot would otherwise restore bars whose resends then get a 409, never logged)
            self.audit.sync()
            self.pool.gate(symbol).snapshot(self.snapshot_dir / f"{symbol}{SUFFIX}")
        except OSError:
            # not fatal: the audit log holds every bar since the last good snapshot and a restart re-feeds them
            self.metrics.snapshot_errors.inc()
            return
        self._unsnapped[symbol] = 0
        self.metrics.snapshot_seconds.observe(time.perf_counter() - t0)

    # -- bars ----------------------------------------------------------------------------------------------------------
    async def post_bars(self, payload: Any) -> tuple[int, dict[str, Any]]:
        """``POST /v1/bars`` on a parsed JSON body: (HTTP status, response body)."""
        decisions: list[dict[str, Any]] = []
        resent: list[int] = []
        new = False
        symbol = payload.get("symbol") if isinstance(payload, dict) else None
        try:
            bars = self._envelope(payload)
            assert isinstance(symbol, str)
            new = symbol not in self.pool
            gate = self._gate(symbol)
            lock = self._locks.setdefault(symbol, asyncio.Lock())
            async with lock:
                for i, raw in enumerate(bars):
                    if self.broken is not None:
                        raise ApiError(503, "unavailable", self.broken, index=i)
                    bar = parse_bar(raw, i, symbol, self.timeframe)
                    last = gate.intake.last_ts
                    if last is not None and bar.ts <= last:
                        decisions.append(self._resend(symbol, bar, i, last))
                        resent.append(i)
                        self.metrics.bars.labels("resent").inc()
                        continue
                    try:
                        d = await gate.aon_bar(bar)
                    except Exception as exc:  # noqa: BLE001 - aon_bar never raises; if it did, state may have moved
                        self._break(exc, i)
                    if d.first_veto in REFUSED_VETOES:
                        # a refused bar moved the refused count (and maybe a far-gap run): keep it across restarts
                        if gate._bars:  # (a symbol with no accepted bar has no state to keep)
                            self._snapshot(symbol)
                        kind = "refused" if d.first_veto == "input" else "internal"
                        raise ApiError(
                            422 if kind == "refused" else 500,
                            kind,
                            d.why.removeprefix("NONE: "),
                            index=i,
                            decision=d.to_dict(),
                        )
                    try:
                        body = d.to_dict()
                    except Exception as exc:  # noqa: BLE001 - the bar is in the state: it must reach the log
                        self._break(exc, i)
                    self._log(symbol, d, body, bar, i)
                    decisions.append(body)
                    self.metrics.decision(d)
        except ApiError as e:
            if e.status != 503 or e.index is not None:
                self.metrics.bars.labels("rejected").inc()
            if new and not decisions and symbol in self.pool and not self.pool.gate(symbol)._bars:
                # a request that created a symbol's gate and had no bar accepted leaves no gate behind (otherwise
                # any bad request could create gates for made-up names)
                self.pool.discard(symbol)
            return e.status, {
                "error": e.to_dict(),
                "symbol": symbol if isinstance(symbol, str) else None,
                "accepted": len(decisions),
                "resent": resent,
                "decisions": decisions,
            }
        return 200, {"symbol": symbol, "accepted": len(decisions), "resent": resent, "decisions": decisions}

    def _envelope(self, payload: Any) -> list[Any]:
        if not isinstance(payload, dict):
            raise ApiError(422, "invalid", 'the body must be a JSON object {"symbol", "timeframe", "bars"}')
        extra = [k for k in payload if k not in ("symbol", "timeframe", "bars")]
        if extra:
            raise ApiError(
                422, "invalid", f"unknown field {extra[0]!r}; the body has symbol, timeframe, bars", field=extra[0]
            )
        for k in ("symbol", "timeframe", "bars"):
            if k not in payload:
                raise ApiError(422, "invalid", f"{k} is missing", field=k)
        symbol, tf, bars = payload["symbol"], payload["timeframe"], payload["bars"]
        if not isinstance(symbol, str):
            raise ApiError(422, "invalid", f'symbol = {symbol!r}: must be a string such as "EURUSD"', field="symbol")
        if tf != self.timeframe:
            raise ApiError(
                422,
                "invalid",
                f"timeframe = {tf!r}: this server gates {self.timeframe} bars. Fix: send {self.timeframe} bars, or "
                "run a server per timeframe (fxgate serve --timeframe ...)",
                field="timeframe",
            )
        if not isinstance(bars, list) or not bars:
            raise ApiError(422, "invalid", "bars must be a non-empty list of bar objects", field="bars")
        if len(bars) > self.config.server.max_bars:
            raise ApiError(
                413,
                "too_large",
                f"{len(bars)} bars in one request; at most [server] max_bars = {self.config.server.max_bars}. Fix: "
                "send them in smaller batches",
                field="bars",
            )
        return bars

    def _gate(self, symbol: str) -> Any:
        try:
            return self.pool.gate(symbol)
        except UnknownSymbol as e:
            raise ApiError(404, "unknown_symbol", str(e), field="symbol") from None
        except PoolError as e:
            raise ApiError(422, "invalid", str(e), field="symbol") from None

    def _resend(self, symbol: str, bar: Bar, i: int, last: int) -> dict[str, Any]:
        """A bar at or before the last accepted one: its logged Decision if it is an exact resend, else a 409."""
        entry = self._recent.get(symbol, {}).get(bar.ts)
        if entry is not None:
            line = read_line(entry.path, entry.offset, entry.length)
            if _same(bar, line["bar"]):
                return line["decision"]
            raise ApiError(
                409,
                "duplicate",
                f"bars[{i}]: {symbol} has accepted a different bar at {bar.ts} ({_iso(bar.ts)}); its Decision is in "
                "the audit log. Nothing changed. Fix: a bar is final once accepted; send the next bar",
                index=i,
                field=f"bars[{i}].ts",
            )
        same = bar.ts == last
        raise ApiError(
            409,
            "duplicate" if same else "out_of_order",
            f"bars[{i}]: {symbol} bar at {bar.ts} ({_iso(bar.ts)}) is "
            + ("the last accepted bar's time" if same else f"before the last accepted bar ({last}, {_iso(last)})")
            + ". Nothing changed. Fix: send bars in time order, each once; GET /v1/symbols gives last_ts",
            index=i,
            field=f"bars[{i}].ts",
        )

    def _log(self, symbol: str, d: Decision, body: dict[str, Any], bar: Bar, i: int) -> None:
        """The audit append (before the answer), then the snapshot when due. A failed append breaks the service."""
        try:
            entry = self.audit.append(d, bar, as_dict=body)  # the answer's dict: Decision.to_dict() once per bar
        except Exception as exc:  # noqa: BLE001 - any failure here leaves an accepted bar unlogged
            self._break(exc, i)
        self._remember(symbol, entry)
        n = self._unsnapped.get(symbol, 0) + 1
        self._unsnapped[symbol] = n
        if n >= self.config.server.snapshot_every:
            self._snapshot(symbol)

    def _break(self, exc: BaseException, i: int) -> None:
        """A bar is in a gate's state but cannot reach the log: stop accepting bars (fail closed) until a restart
        restores the last consistent state from the snapshots and the log."""
        self.broken = (
            f"an accepted bar could not be logged ({type(exc).__name__}: {exc}); bars are no longer accepted. "
            f"Fix the cause (the storage under {self.audit_dir}), then restart fxgate serve: it restores the last "
            "consistent state and the client resends the bars it has no answer for"
        )
        raise ApiError(503, "unavailable", self.broken, index=i) from exc

    # -- reads -----------------------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.broken is None else "broken",
            "version": __version__,
            "uptime_s": round(time.time() - self.started, 3),
            "symbols": len(self.pool),
            "audit": {"seq": self.audit.seq, "head": self.audit.head},
            **({"reason": self.broken} if self.broken else {}),
        }

    def config_summary(self) -> dict[str, Any]:
        c = self.config
        gate = next(iter(self.pool.gates()), None)
        return {
            "config_hash": c.hash,
            "version": __version__,
            "timeframe": self.timeframe,
            "mode": c.mode,
            "horizon": c.horizon,
            "layers": {
                "L1": {"enabled": c.l1.enabled, "threshold": c.l1.threshold},
                "L2": {"enabled": c.l2.enabled, "threshold": c.l2.threshold},
                "L3": {"enabled": c.l3.enabled, "threshold": c.l3.threshold},
                "L4": {"enabled": c.l4.enabled, "modules": list(c.l4.modules)},
            },
            "modules": list(c.l4.modules) if c.l4.enabled else [],
            "model_hashes": dict(gate.model_hashes) if gate is not None else dict(self.pool.llm.hashes),
            "server": {k: list(v) if isinstance(v, tuple) else v for k, v in c.to_dict()["server"].items()},
        }

    def symbols(self) -> dict[str, Any]:
        return {
            "symbols": [
                {
                    "symbol": s.symbol,
                    "bars": s.bars,
                    "rejected": s.rejected,
                    "last_ts": s.last_ts,
                    "last_time": None if s.last_ts is None else _iso(s.last_ts),
                    "warm": s.warm,
                    "insufficient": list(s.insufficient),
                }
                for s in self.pool.symbols()
            ]
        }

    def close(self) -> None:
        """Snapshot every symbol with unsnapshotted bars, then close the log and the gates."""
        try:
            for s, n in list(self._unsnapped.items()):
                if n:
                    self._snapshot(s)
        finally:
            self.audit.close()
            self.pool.close()


def _iso(ts: int) -> str:
    s, ns = divmod(ts, 10**9)
    out = datetime.fromtimestamp(s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return out + (f".{ns:09d}".rstrip("0") if ns else "") + "Z"


def dumps(body: dict[str, Any]) -> bytes:
    """A response body as compact JSON (no NaN: the Decision's numbers are already JSON-safe)."""
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
