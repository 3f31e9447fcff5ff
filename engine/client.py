"""A client for ``fxgate serve``, standard library only (:mod:`http.client`, :mod:`json`): a bot needs no extra package,
and the file can be copied on its own into a bot that does not install fxgate.

::

    from fxgate.engine.client import FxgateClient

    with FxgateClient("http://127.0.0.1:8750") as fx:      # token: token=... or $FXGATE_TOKEN
        d = fx.bar("EURUSD", "H1", {"ts": "2017-04-19T09:00:00Z", "open": 1.0716, "high": 1.0722,
                                    "low": 1.0708, "close": 1.0721, "volume": 1413})
        if d["action"] != "NONE":
            trade(d["action"], d["size"])
        result = fx.send("EURUSD", "H1", bars_frame)       # many bars: one Decision per bar, in order

**Bars** are fxgate :class:`~fxgate.engine.core.bars.Bar` objects (or a ``Bars``), dicts with ``ts open high low
close volume [spread]``, or a pandas DataFrame (a DatetimeIndex, or a ``ts``/``time`` column; ``open high low close
volume [spread]`` columns in any case; other columns are not sent). ``ts`` is the bar's *open* time: int nanoseconds
since the epoch (UTC), an ISO-8601 string with a zone (``"2017-04-19T09:00:00Z"``), a zone-aware ``datetime``, or a
``numpy.datetime64`` (UTC, numpy has no zones). A naive ``datetime`` or ISO string without a zone is refused before
anything is sent: broker server time is not UTC, and guessing the zone would shift every bar. The one exception is a
DataFrame's naive DatetimeIndex, which means UTC as it does in ``Bars.from_pandas``. All bars are checked before the
first request, so a bad bar (:class:`BarInputError`) sends nothing.

**Retries.** A connection error, a timeout, a 5xx (503 included) or a 429 is retried with exponential backoff
(``backoff * 2**k`` seconds, at most ``max_backoff``, or the server's ``Retry-After``), ``retries`` times, and each
retry resends *the same bars*. That is safe: the server answers an exact resend of a bar it accepted with that bar's
logged Decision, lists it in ``resent`` and does not log it again (a bar whose answer was lost when the server died
is therefore never decided twice). When the retries run out, :class:`ServerUnavailable` says so; the server may have
accepted some of the bars it carries no Decision for, and sending them again later is again safe.

**Errors.** A 4xx is never retried: it raises an :class:`ApiError` subclass (:class:`Unauthorized` 401,
:class:`UnknownSymbol` 404, :class:`Conflict` 409 ``duplicate``/``out_of_order``, :class:`TooLarge` 413,
:class:`Invalid` 422 ``invalid``/``refused``) with the server's ``status kind index field message``. ``index`` and
``field`` count in the bars *you* passed (not in the request that carried them), and ``decisions`` holds the
Decisions of every bar before ``index``: those bars were accepted. Nothing is dropped silently: a response whose
Decisions do not match the bars sent, one per bar with the bar's time, raises :class:`ProtocolError`.

Large inputs are sent in requests of ``batch_size`` bars, in order, one after the other on one keep-alive
connection. A client may be shared by threads (one request at a time).
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import numbers
import os
import select
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "FxgateClient",
    "SendResult",
    "ClientError",
    "BarInputError",
    "ApiError",
    "Unauthorized",
    "UnknownSymbol",
    "Conflict",
    "TooLarge",
    "Invalid",
    "ServerUnavailable",
    "ProtocolError",
    "TOKEN_ENV",
    "bar_to_json",
    "to_ns",
]

#: the environment variable the token is read from when none is given (the server reads the same one)
TOKEN_ENV = "FXGATE_TOKEN"
#: statuses worth another try: the server (or a proxy before it) is restarting, overloaded or broken for now
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_FIELDS = ("ts", "open", "high", "low", "close", "volume", "spread")
_VALUES = ("open", "high", "low", "close", "volume")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_I64 = 2**63 - 1
_log = logging.getLogger("fxgate.client")

try:  # inside fxgate; a copy of this file in a bot works without it
    from fxgate.engine.core.version import __version__ as _VERSION
except ImportError:  # pragma: no cover - the file copied on its own
    _VERSION = "standalone"


# -- errors ------------------------------------------------------------------------------------------------------------
class ClientError(Exception):
    """Base of every error this client raises."""


class BarInputError(ClientError, ValueError):
    """A bar the client cannot send (a missing or non-finite value, a time without a zone). Raised before the first
    request: nothing was sent. ``index``: the bar's position in the bars passed; ``field``: ``bars[3].close``."""

    def __init__(self, message: str, *, index: int | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message, self.index, self.field = message, index, field


class ApiError(ClientError):
    """The server refused a request (a 4xx, never retried). ``status``, ``kind``, ``index``, ``field`` and
    ``message`` are the server's (``index``/``field`` counted in the bars passed to the call); ``decisions``: the
    Decisions of the bars before ``index`` (accepted, logged, final); ``resent``: which of them were answered from
    the server's log; ``body``: the whole error body."""

    def __init__(
        self,
        status: int,
        kind: str,
        message: str,
        *,
        index: int | None = None,
        field: str | None = None,
        symbol: str | None = None,
        decisions: Sequence[dict[str, Any]] = (),
        resent: Sequence[int] = (),
        body: Any = None,
    ) -> None:
        where = f" at bars[{index}]" if index is not None else ""
        super().__init__(f"{status} {kind}{where}: {message}")
        self.status, self.kind, self.message = status, kind, message
        self.index, self.field, self.symbol = index, field, symbol
        self.decisions: tuple[dict[str, Any], ...] = tuple(decisions)
        self.resent: tuple[int, ...] = tuple(resent)
        self.body = body

    @property
    def accepted(self) -> int:
        """How many of the bars passed were accepted before the refused one."""
        return len(self.decisions)


class Unauthorized(ApiError):
    """401: no token, or the wrong one. Give ``token=`` or set ``$FXGATE_TOKEN`` to the server's token."""


class UnknownSymbol(ApiError):
    """404: the server refuses symbols not in its ``[server] symbols``."""


class Conflict(ApiError):
    """409: ``duplicate`` (a different bar at an accepted bar's time) or ``out_of_order`` (before the last accepted
    bar). Nothing changed on the server; a bar is final once accepted. :meth:`FxgateClient.resume` sends only the
    bars after the server's last one."""


class TooLarge(ApiError):
    """413: more bars than ``[server] max_bars`` or a body over ``max_body_bytes``: use a smaller ``batch_size``."""


class Invalid(ApiError):
    """422: ``invalid`` (a field, a type, the timeframe, the symbol name) or ``refused`` (the gate's bar rules, e.g.
    high < low; the message is the gate's reason and ``body["error"]["decision"]`` its Decision)."""


_BY_STATUS: dict[int, type[ApiError]] = {
    401: Unauthorized,
    404: UnknownSymbol,
    409: Conflict,
    413: TooLarge,
    422: Invalid,
}


class ServerUnavailable(ClientError):
    """The server could not be reached or kept failing (connection errors, timeouts, 5xx) through every retry.
    ``attempts``: requests made for the bars in flight; ``status``/``kind``: the last answer's (None after a
    connection error); ``decisions``: the Decisions received before, for the bars passed in order. The server may
    have accepted some of the later bars without the answer arriving; sending them again is safe (exact resends are
    answered from its log)."""

    def __init__(
        self,
        message: str,
        *,
        attempts: int,
        status: int | None = None,
        kind: str | None = None,
        index: int | None = None,
        decisions: Sequence[dict[str, Any]] = (),
        resent: Sequence[int] = (),
        cause: BaseException | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message, self.attempts, self.status, self.kind, self.index = message, attempts, status, kind, index
        self.body = body
        self.decisions: tuple[dict[str, Any], ...] = tuple(decisions)
        self.resent: tuple[int, ...] = tuple(resent)
        self.cause = cause

    @property
    def accepted(self) -> int:
        return len(self.decisions)


class ProtocolError(ClientError):
    """The server's answer is not what the API promises (not JSON, or Decisions that do not match the bars sent).
    ``decisions``: the Decisions received and checked before it."""

    def __init__(self, message: str, *, decisions: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(message)
        self.decisions: tuple[dict[str, Any], ...] = tuple(decisions)


# -- results -----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SendResult:
    """The answer to :meth:`FxgateClient.send`: one Decision dict (``Decision.to_dict()``) per bar sent, in order.
    ``resent``: positions (in the bars passed) the server answered from its log, because it had accepted them
    before (an earlier send, or a retry of a request whose answer was lost). ``skipped``: bars :meth:`resume` did
    not send (at or before the server's last bar): ``decisions[j]`` is the answer to ``bars[skipped + j]``.
    ``attempts``: HTTP requests made (retries included)."""

    symbol: str
    decisions: tuple[dict[str, Any], ...]
    resent: tuple[int, ...] = ()
    skipped: int = 0
    attempts: int = 0

    def __len__(self) -> int:
        return len(self.decisions)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.decisions)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.decisions[i]

    @property
    def last(self) -> dict[str, Any] | None:
        """The newest bar's Decision (None when nothing was sent)."""
        return self.decisions[-1] if self.decisions else None


# -- bars to JSON ------------------------------------------------------------------------------------------------------
def to_ns(value: Any, where: str = "ts", *, naive_utc: bool = False) -> int:
    """A bar time as int nanoseconds since the epoch, UTC (see the module docstring for what is accepted).
    ``naive_utc``: a naive pandas Timestamp means UTC (a DataFrame's index); otherwise a naive time is refused."""
    if isinstance(value, bool):
        raise BarInputError(f"{where} = {value!r}: a time, not a bool", field=where)
    if isinstance(value, numbers.Integral):
        ns = int(value)
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            raise BarInputError(
                f'{where} = {value!r}: not an ISO-8601 time; use e.g. "2017-04-19T09:00:00Z" or int nanoseconds',
                field=where,
            ) from None
        ns = _datetime_ns(dt, where, naive_utc=False, shown=value)
    elif isinstance(value, datetime):
        ns = _datetime_ns(value, where, naive_utc=naive_utc, shown=value)
    elif type(value).__name__ == "datetime64":  # numpy: no zones, UTC by fxgate's convention (Bars.times)
        ns = int(value.astype("datetime64[ns]").astype("int64"))
        if ns == -(2**63):
            raise BarInputError(f"{where} is NaT (no time)", field=where)
    else:
        raise BarInputError(
            f"{where} = {value!r}: must be int nanoseconds (UTC), an ISO-8601 string with a zone, or a zone-aware "
            f"datetime (got {type(value).__name__})",
            field=where,
        )
    if not 0 <= ns <= _I64:
        raise BarInputError(f"{where} = {value!r}: outside 1970..2262 (int64 nanoseconds since the epoch)", field=where)
    return ns


def _datetime_ns(dt: datetime, where: str, *, naive_utc: bool, shown: Any) -> int:
    value = getattr(dt, "value", None)  # a pandas Timestamp: exact nanoseconds (UTC for an aware one)
    if dt.tzinfo is None and not naive_utc:
        raise BarInputError(
            f'{where} = {shown!r} has no time zone: give it one ("...Z" for UTC, or +hh:mm). A zone-less time is '
            "ambiguous: MetaTrader stamps bars in the broker's server time, which is not UTC",
            field=where,
        )
    if isinstance(value, numbers.Integral):
        if value == -(2**63):
            raise BarInputError(f"{where} is NaT (no time)", field=where)
        return int(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    d = dt - _EPOCH
    return (d.days * 86_400 + d.seconds) * 10**9 + d.microseconds * 1_000


def _finite(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise BarInputError(f"{where} = {value!r}: must be a number (got {type(value).__name__})", field=where)
    f = float(value)
    if not math.isfinite(f):
        raise BarInputError(f"{where} = {value!r}: must be a finite number (NaN and inf cannot be sent)", field=where)
    return f


def bar_to_json(bar: Any, i: int = 0, *, symbol: str = "", timeframe: str = "") -> dict[str, Any]:
    """One bar (an fxgate ``Bar``, any object with those attributes, or a dict) as the API's JSON object, ``ts`` in
    int nanoseconds. A ``Bar`` that names another symbol or timeframe than the call is refused (sending EURUSD bars
    as GBPUSD would corrupt GBPUSD's state for good)."""
    at = f"bars[{i}]"
    if isinstance(bar, dict):
        extra = [k for k in bar if k not in _FIELDS]
        if extra:
            raise BarInputError(
                f"{at}: unknown field {extra[0]!r}; a bar has {', '.join(_FIELDS)} (spread optional)",
                index=i,
                field=f"{at}.{extra[0]}",
            )
        get = bar.get
    else:
        for attr, want in (("symbol", symbol), ("timeframe", timeframe)):
            have = getattr(bar, attr, "")
            if have and want and have != want:
                raise BarInputError(
                    f"{at} is a {have} bar but is sent as {want} ({attr}); send it under its own {attr}",
                    index=i,
                    field=f"{at}.{attr}",
                )

        def get(k: str, default: Any = None) -> Any:
            return getattr(bar, k, default)

    out: dict[str, Any] = {}
    try:
        for k in ("ts", *_VALUES):
            v = get(k)
            if v is None:
                raise BarInputError(f"{at}.{k} is missing", field=f"{at}.{k}")
            out[k] = to_ns(v, f"{at}.ts") if k == "ts" else _finite(v, f"{at}.{k}")
        sp = get("spread")
        if sp is not None:  # None: the bar has no spread (the server's [spread] applies); NaN is refused
            out["spread"] = _finite(sp, f"{at}.spread")
    except BarInputError as e:
        e.index = i
        raise
    return out


def _frame_rows(df: Any) -> list[dict[str, Any]]:
    """A pandas DataFrame's bars as JSON objects (without importing pandas: the frame brings its own methods)."""
    cols = {str(c).lower(): c for c in df.columns}
    missing = [c for c in _VALUES if c not in cols]
    if missing:
        raise BarInputError(f"the DataFrame lacks column(s) {missing}; it has {list(df.columns)}")
    if "ts" in cols or "time" in cols:
        times = df[cols.get("ts", cols.get("time"))].tolist()
    else:
        idx = df.index
        if getattr(idx, "dtype", None) is None or getattr(idx.dtype, "kind", "") != "M":
            raise BarInputError(
                "the DataFrame needs a DatetimeIndex or a 'ts'/'time' column with the bars' open times "
                f"(its index is {type(idx).__name__})"
            )
        times = idx.tolist()
    columns = {k: df[cols[k]].tolist() for k in _VALUES}
    spread = df[cols["spread"]].tolist() if "spread" in cols else None
    rows = []
    for j, t in enumerate(times):
        at = f"bars[{j}]"
        try:
            row: dict[str, Any] = {"ts": to_ns(t, f"{at}.ts", naive_utc=True)}
            for k in _VALUES:
                row[k] = _finite(columns[k][j], f"{at}.{k}")
            if spread is not None and spread[j] is not None:
                row["spread"] = _finite(spread[j], f"{at}.spread")
        except BarInputError as e:
            e.index = j
            raise
        rows.append(row)
    return rows


def _rows(bars: Any, symbol: str, timeframe: str) -> list[dict[str, Any]]:
    if isinstance(bars, dict) or (hasattr(bars, "close") and not hasattr(bars, "__len__")):
        raise TypeError("send() takes a sequence of bars; for one bar use FxgateClient.bar(symbol, timeframe, bar)")
    if hasattr(bars, "columns") and hasattr(bars, "index"):
        return _frame_rows(bars)
    if not isinstance(bars, Iterable):
        raise TypeError(f"bars must be Bar objects, dicts, a Bars or a pandas DataFrame (got {type(bars).__name__})")
    return [bar_to_json(b, i, symbol=symbol, timeframe=timeframe) for i, b in enumerate(bars)]


# -- the client --------------------------------------------------------------------------------------------------------
class FxgateClient:
    """A connection to one ``fxgate serve`` (see the module docstring).

    ``url``: ``http://host:port`` (``https://`` works too, and a path prefix behind a reverse proxy). ``token``: the
    bearer token; None reads ``$FXGATE_TOKEN`` (no token when that is unset or empty). ``timeout``: seconds for one
    request (connect, send, answer); keep it above the slowest Decision (seconds with the LLM layers on), or every
    try of a slow bar times out. ``retries``: extra tries after a connection error, timeout or 5xx/429;
    ``backoff``: the first wait in seconds, doubled per try up to ``max_backoff``. ``batch_size``: bars per request
    (keep it under the server's ``[server] max_bars`` and ``max_body_bytes``: about 100 bytes per bar)."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8750",
        token: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 5,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        batch_size: int = 1000,
    ) -> None:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(
                f"url = {url!r}: must be http://host:port or https://host:port (e.g. http://127.0.0.1:8750)"
            )
        if u.query or u.fragment:
            raise ValueError(f"url = {url!r}: no query or fragment; the client adds /v1/... to the path")
        for name, v, positive in (
            ("timeout", timeout, True),
            ("backoff", backoff, False),
            ("max_backoff", max_backoff, False),
        ):
            if (
                isinstance(v, bool)
                or not isinstance(v, int | float)
                or not math.isfinite(v)
                or v < 0
                or (positive and v == 0)
            ):
                raise ValueError(f"{name} = {v!r}: must be a finite number of seconds, {'> 0' if positive else '>= 0'}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries = {retries!r}: must be an integer >= 0 (0: no retry)")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size = {batch_size!r}: must be an integer >= 1")
        self.url = url
        self._https = u.scheme == "https"
        self._host, self._port = u.hostname, u.port or (443 if self._https else 80)
        self._prefix = u.path.rstrip("/")
        if token is None:
            token = os.environ.get(TOKEN_ENV, "")
        token = token.strip()
        if any(c in token for c in "\r\n"):
            raise ValueError("token contains a line break: give the token itself (one line)")
        self._token = token or None
        self.timeout, self.retries, self.backoff, self.max_backoff = float(timeout), retries, backoff, max_backoff
        self.batch_size = batch_size
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()
        self._sleep = time.sleep

    # -- plumbing ----------------------------------------------------------------------------------------------------
    def __enter__(self) -> FxgateClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the keep-alive connection (a later call opens a new one)."""
        with self._lock:
            self._drop()

    def __repr__(self) -> str:
        return f"FxgateClient({self.url!r}, token={'set' if self._token else 'none'})"

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is not None and conn.sock is not None:
            # an idle keep-alive connection the server has closed meanwhile (uvicorn closes them after a few
            # seconds; a bot sending H1 bars is idle for an hour) reads as ready-with-EOF: start a new one instead
            # of spending a retry on it
            try:
                readable, _, _ = select.select([conn.sock], [], [], 0)
            except (OSError, ValueError):
                readable = [conn.sock]
            if readable:
                self._drop()
                conn = None
        if conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = self._conn = cls(self._host, self._port, timeout=self.timeout)
        return conn

    def _exchange(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes, str | None]:
        """One request and its whole answer on the keep-alive connection; any failure drops the connection."""
        headers = {"Accept": "application/json", "User-Agent": f"fxgate-client/{_VERSION}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        with self._lock:
            try:
                conn = self._connection()
                conn.request(method, self._prefix + path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except BaseException:
                self._drop()
                raise
            if resp.will_close:
                self._drop()
            return resp.status, data, resp.getheader("Retry-After")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        wait = min(self.backoff * 2**attempt, self.max_backoff)
        if retry_after is not None and retry_after.strip().isdigit():
            wait = max(wait, min(float(retry_after), self.max_backoff))
        return wait

    def _call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any, int]:
        """A request with the retries: (status, parsed body, attempts) of the first answer that is not retried.
        Raises :class:`ServerUnavailable` (the last failure) when the retries run out."""
        for attempt in range(self.retries + 1):
            retry_after = None
            try:
                status, data, retry_after = self._exchange(method, path, body)
            except (OSError, http.client.HTTPException) as exc:
                status, parsed, cause = None, None, exc
                why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                parsed, cause = _parse(data), None
                if status not in RETRY_STATUSES:
                    return status, parsed, attempt + 1
                why = f"{status} {_error_of(parsed).get('message') or _snippet(data)}"
            if attempt == self.retries:
                err = _error_of(parsed)
                raise ServerUnavailable(
                    f"{method} {self.url}{path}: no answer after {attempt + 1} attempt(s) "
                    f"(retries = {self.retries}); last: {why}",
                    attempts=attempt + 1,
                    status=status,
                    kind=err.get("kind"),
                    index=err.get("index"),
                    cause=cause,
                    body=parsed,
                )
            wait = self._delay(attempt, retry_after)
            _log.warning(
                "%s %s%s failed (%s); retry %d of %d in %.2f s",
                method,
                self.url,
                path,
                why,
                attempt + 1,
                self.retries,
                wait,
            )
            self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _get(self, path: str) -> Any:
        status, parsed, _ = self._call("GET", path)
        if status != 200:
            raise _api_error(status, parsed, path)
        if not isinstance(parsed, dict):
            raise ProtocolError(f"GET {path}: 200 without a JSON object")
        return parsed

    # -- the API -------------------------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """``GET /v1/health``: status, version, uptime_s, symbols, audit {seq, head} (needs no token)."""
        return self._get("/v1/health")

    def config(self) -> dict[str, Any]:
        """``GET /v1/config``: the config hash, timeframe, layers, modules, model hashes, server settings."""
        return self._get("/v1/config")

    def symbols(self) -> list[dict[str, Any]]:
        """``GET /v1/symbols``: per symbol ``symbol bars rejected last_ts last_time warm insufficient``."""
        return list(self._get("/v1/symbols")["symbols"])

    def last_ts(self, symbol: str) -> int | None:
        """The time (int ns) of the newest bar the server accepted for ``symbol``; None when it has none."""
        for s in self.symbols():
            if s["symbol"] == symbol:
                return s["last_ts"]
        return None

    def bar(self, symbol: str, timeframe: str, bar: Any) -> dict[str, Any]:
        """One bar's Decision (``Decision.to_dict()``): ``action`` ("BUY" | "SELL" | "NONE"), ``size``, ``first_veto``
        and every layer's verdict."""
        return self.send(symbol, timeframe, [bar]).decisions[0]

    def send(self, symbol: str, timeframe: str, bars: Any) -> SendResult:
        """Send ``bars`` (in time order) and return one Decision per bar. Raises :class:`BarInputError` (nothing
        sent), :class:`ApiError` (a 4xx; the bars before its ``index`` were accepted) or :class:`ServerUnavailable`
        (retries exhausted). See the module docstring."""
        rows = _rows(bars, symbol, timeframe)
        return self._send_rows(symbol, timeframe, rows, skipped=0)

    def resume(self, symbol: str, bars: Any, *, timeframe: str | None = None) -> SendResult:
        """Send only the bars after the newest one the server has for ``symbol`` (``GET /v1/symbols``): after a
        restart of the bot, hand it the whole recent history and nothing is sent twice. ``timeframe``: default the
        server's (``GET /v1/config``). The result's ``skipped`` counts the leading bars not sent."""
        tf = timeframe if timeframe is not None else self.config()["timeframe"]
        rows = _rows(bars, symbol, tf)
        last = self.last_ts(symbol)
        skip = 0
        if last is not None:
            while skip < len(rows) and rows[skip]["ts"] <= last:
                skip += 1
        return self._send_rows(symbol, tf, rows[skip:], skipped=skip)

    def _send_rows(self, symbol: str, timeframe: str, rows: list[dict[str, Any]], *, skipped: int) -> SendResult:
        if not isinstance(symbol, str) or not symbol:
            raise ValueError(f"symbol = {symbol!r}: must be a non-empty string such as 'EURUSD'")
        if not isinstance(timeframe, str) or not timeframe:
            raise ValueError(f"timeframe = {timeframe!r}: must be the server's timeframe such as 'H1' (GET /v1/config)")
        decisions: list[dict[str, Any]] = []
        resent: list[int] = []
        attempts = 0
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            body = json.dumps({"symbol": symbol, "timeframe": timeframe, "bars": chunk}, allow_nan=False).encode()
            base = skipped + start  # this request's bars[0] is the caller's bars[base]
            try:
                status, parsed, n = self._call("POST", "/v1/bars", body)
            except ServerUnavailable as e:
                # a 5xx at bars[i] (e.g. 503: the audit log broke) still carries the Decisions of the bars before i
                ok = e.body.get("decisions") if isinstance(e.body, dict) else None
                if isinstance(ok, list) and ok:
                    decisions.extend(_checked({"decisions": ok}, chunk[: len(ok)], decisions))
                    resent.extend(base + j for j in e.body.get("resent", ()) if isinstance(j, int))
                e.attempts += attempts
                e.decisions, e.resent = tuple(decisions), tuple(resent)
                if isinstance(e.index, int):
                    e.index += base
                raise
            attempts += n
            if status == 200:
                got = _checked(parsed, chunk, decisions)
                decisions.extend(got)
                resent.extend(base + j for j in parsed.get("resent", ()))
                continue
            if isinstance(parsed, dict) and isinstance(parsed.get("decisions"), list):
                ok = parsed["decisions"]
                decisions.extend(_checked({"decisions": ok}, chunk[: len(ok)], decisions))
                resent.extend(base + j for j in parsed.get("resent", ()) if isinstance(j, int))
            raise _api_error(status, parsed, "/v1/bars", base=base, symbol=symbol, decisions=decisions, resent=resent)
        return SendResult(symbol, tuple(decisions), tuple(resent), skipped, attempts)


# -- answers -----------------------------------------------------------------------------------------------------------
def _parse(data: bytes) -> Any:
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


def _snippet(data: bytes) -> str:
    return data[:200].decode("utf-8", errors="replace").strip() or "(empty body)"


def _error_of(parsed: Any) -> dict[str, Any]:
    err = parsed.get("error") if isinstance(parsed, dict) else None
    return err if isinstance(err, dict) else {}


def _checked(parsed: Any, chunk: list[dict[str, Any]], before: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Decisions of a response, one per bar of ``chunk`` and each with its bar's time, or a ProtocolError."""
    got = parsed.get("decisions") if isinstance(parsed, dict) else None
    if not isinstance(got, list) or len(got) != len(chunk):
        n = len(got) if isinstance(got, list) else "no"
        raise ProtocolError(f"the server answered {n} Decision(s) for {len(chunk)} bar(s)", decisions=before)
    for j, (d, row) in enumerate(zip(got, chunk, strict=True)):
        if not isinstance(d, dict) or d.get("ts") != row["ts"]:
            ts = d.get("ts") if isinstance(d, dict) else d
            raise ProtocolError(
                f"Decision {j} of a response is for ts {ts}, its bar has ts {row['ts']}: answers and bars do not match",
                decisions=before,
            )
    return got


def _api_error(
    status: int,
    parsed: Any,
    path: str,
    *,
    base: int = 0,
    symbol: str | None = None,
    decisions: Sequence[dict[str, Any]] = (),
    resent: Sequence[int] = (),
) -> ApiError:
    """A 4xx answer as its typed error, ``index``/``field``/``message`` renumbered from the request's bars to the
    caller's (``base``: the caller's index of the request's first bar)."""
    err = _error_of(parsed)
    kind = str(err.get("kind") or f"http_{status}")
    message = str(err.get("message") or f"HTTP {status} from {path} without an error body")
    index, field = err.get("index"), err.get("field")
    if isinstance(index, int) and base:
        local = f"bars[{index}]"
        index += base
        message = message.replace(local, f"bars[{index}]")
        if isinstance(field, str):
            field = field.replace(local, f"bars[{index}]", 1)
    cls = _BY_STATUS.get(status, ApiError)
    return cls(
        status,
        kind,
        message,
        index=index if isinstance(index, int) else None,
        field=field if isinstance(field, str) else None,
        symbol=symbol,
        decisions=decisions,
        resent=resent,
        body=parsed,
    )
