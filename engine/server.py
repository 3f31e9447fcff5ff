"""``fxgate serve``: the HTTP API of :class:`~fxgate.engine.service.BarService` on FastAPI and uvicorn.

Endpoints (the OpenAPI spec is served at ``/openapi.json`` and committed as ``engine/openapi.json``)::

    POST /v1/bars      bars of one symbol in, one Decision per bar out (409 / 422 / 404 / 413 per bar)
    GET  /v1/health    liveness; no token needed
    GET  /v1/config    the config hash and a summary
    GET  /v1/symbols   per symbol: bars seen, last bar time, warm or not
    GET  /metrics      Prometheus text format

**Auth.** With a token (``$FXGATE_TOKEN`` or ``--token-file``; never a command-line argument, which other users
can read in the process list), every endpoint but ``/v1/health`` needs ``Authorization: Bearer <token>``, compared
in constant time; anything else is a 401. A server on a non-loopback address refuses to start without a token.
**Size.** A body over ``[server] max_body_bytes`` is a 413 before it is parsed (``Content-Length``, and counted
while it streams in for chunked bodies).
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from fxgate.engine.config import GateConfig
from fxgate.engine.core.config import ServerConfig
from fxgate.engine.core.decision import schema as decision_schema
from fxgate.engine.core.errors import FxgateError
from fxgate.engine.core.version import __version__
from fxgate.engine.service import BarService, dumps

__all__ = ["create_app", "openapi_spec", "run", "read_token", "ServeError", "OPENAPI_PATH", "is_loopback"]

#: the committed copy of the spec (tests/engine/test_server.py keeps it equal to what the app serves)
OPENAPI_PATH = Path(__file__).with_name("openapi.json")
_TOKEN_ENV = "FXGATE_TOKEN"
_PATHS = ("/v1/bars", "/v1/health", "/v1/config", "/v1/symbols", "/metrics", "/openapi.json")


class ServeError(FxgateError):
    """The server cannot start as asked (no token on a public address, an unreadable token file)."""


class _Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        return dumps(content)


def _error(status: int, kind: str, message: str, field: str | None = None, **headers: str) -> _Json:
    body = {
        "error": {"status": status, "kind": kind, "index": None, "field": field, "message": message},
        "symbol": None,
        "accepted": 0,
        "resent": [],
        "decisions": [],
    }
    return _Json(body, status_code=status, headers=headers or None)


def create_app(service: BarService, *, token: str | None = None) -> FastAPI:
    """The FastAPI app serving ``service``; ``token`` (None: no auth) guards every endpoint but /v1/health. The
    app closes the service when it shuts down."""
    want = token.encode() if token else None
    limit = service.config.server.max_body_bytes

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            service.close()

    app = FastAPI(
        title="fxgate",
        version=__version__,
        summary="Live signal gate for forex: one Decision per bar; every layer clears its threshold or no trade.",
        docs_url=None,  # the interactive pages load their scripts from a CDN: not on a trading box
        redoc_url=None,
        lifespan=lifespan,
    )

    def unauthorized(request: Request) -> _Json | None:
        if want is None:
            return None
        got = request.headers.get("authorization", "")
        scheme, _, value = got.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), want):
            return None
        why = "no Authorization header" if not got else "wrong token or not a Bearer token"
        return _error(
            401,
            "unauthorized",
            f"{why}: send Authorization: Bearer <token> (the server's $FXGATE_TOKEN or --token-file)",
            **{"WWW-Authenticate": "Bearer"},
        )

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Any:
        t0 = time.perf_counter()
        response = await call_next(request)
        path = request.url.path if request.url.path in _PATHS else "other"
        m = service.metrics
        m.requests.labels(path, str(response.status_code)).inc()
        m.request_seconds.labels(path).observe(time.perf_counter() - t0)
        return response

    @app.post(
        "/v1/bars",
        summary="Decide on bars of one symbol",
        description=(
            "Bars are processed in order. An exact resend of an accepted bar is answered with its logged Decision "
            "(listed in `resent`). At the first bad bar the answer is that bar's error; the bars before it were "
            "accepted (their Decisions are in `decisions`), the bars after it were not looked at."
        ),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BarsRequest"}}},
            }
        },
        responses={
            200: {"description": "Every bar accepted", "content": _ref("BarsResponse")},
            **{
                s: {"description": d, "content": _ref("ErrorResponse")}
                for s, d in (
                    (401, "No or wrong token"),
                    (404, 'Unknown symbol ([server] unknown_symbols = "refuse")'),
                    (409, "A bar at or before the symbol's last accepted bar that is not an exact resend"),
                    (413, "Body over [server] max_body_bytes, or more than [server] max_bars bars"),
                    (422, "A bar or field that is not valid, or a bar the gate refused (its reason)"),
                    (500, "The gate failed on a bar (its state is unchanged)"),
                    (503, "Bars are no longer accepted: the audit log could not be written; restart the server"),
                )
            },
        },
    )
    async def post_bars(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _too_large(int(declared), limit)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return _too_large(size, limit)
            chunks.append(chunk)
        try:
            payload = json.loads(b"".join(chunks))
        except (ValueError, RecursionError) as exc:
            return _error(422, "invalid", f"the body is not JSON ({exc}); send application/json")
        status, body = await service.post_bars(payload)
        return _Json(body, status_code=status)

    @app.get("/v1/health", summary="Liveness (no token needed)", responses={200: {"content": _ref("Health")}})
    async def health() -> Response:
        return _Json(service.health())

    @app.get(
        "/v1/config",
        summary="The config hash and a summary",
        responses={200: {"content": _ref("ConfigSummary")}, 401: {"content": _ref("ErrorResponse")}},
    )
    async def config(request: Request) -> Response:
        return unauthorized(request) or _Json(service.config_summary())

    @app.get(
        "/v1/symbols",
        summary="State per symbol",
        responses={200: {"content": _ref("Symbols")}, 401: {"content": _ref("ErrorResponse")}},
    )
    async def symbols(request: Request) -> Response:
        return unauthorized(request) or _Json(service.symbols())

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
            401: {"content": _ref("ErrorResponse")},
        },
    )
    async def metrics(request: Request) -> Response:
        return unauthorized(request) or Response(service.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version="1", summary=app.summary, routes=app.routes)
            spec.setdefault("components", {})["schemas"] = _components(service.config.server.max_bars)
            if want is not None:
                spec["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
                for path, ops in spec["paths"].items():
                    if path != "/v1/health":
                        for op in ops.values():
                            op["security"] = [{"bearer": []}]
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = custom_openapi  # type: ignore[method-assign]
    return app


def openapi_spec(max_bars: int = 10_000, token: bool = True) -> dict[str, Any]:
    """The spec as served (with ``token``: the bearer scheme on every endpoint but /v1/health). The committed
    ``engine/openapi.json`` is ``openapi_spec()`` with the default ``[server] max_bars``."""

    class _Spec:  # the routes only: no state, no models
        config = GateConfig(server=ServerConfig(max_bars=max_bars))

    return create_app(_Spec(), token="x" if token else None).openapi()  # type: ignore[arg-type]


def _ref(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}


def _too_large(size: int, limit: int) -> _Json:
    return _error(
        413,
        "too_large",
        f"request body of {size} bytes or more; at most [server] max_body_bytes = {limit}. Fix: send fewer bars per "
        "request",
    )


def _components(max_bars: int) -> dict[str, Any]:
    num = {"type": "number"}
    decision = {k: v for k, v in decision_schema().items() if k not in ("$schema", "$id")}
    nullable_int = {"type": ["integer", "null"]}
    return {
        "Bar": {
            "type": "object",
            "additionalProperties": False,
            "required": ["ts", "open", "high", "low", "close", "volume"],
            "properties": {
                "ts": {
                    "description": 'bar open time: ISO-8601 with a zone ("2017-04-19T09:00:00Z") or int ns UTC',
                    "oneOf": [
                        {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                        {"type": "string", "format": "date-time"},
                    ],
                },
                "open": num,
                "high": num,
                "low": num,
                "close": num,
                "volume": {"type": "number", "minimum": 0},
                "spread": {"type": ["number", "null"], "minimum": 0, "description": "price units; default [spread]"},
            },
        },
        "BarsRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["symbol", "timeframe", "bars"],
            "properties": {
                "symbol": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
                "timeframe": {"type": "string", "description": "the server's timeframe (GET /v1/config)"},
                "bars": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": max_bars,
                    "items": {"$ref": "#/components/schemas/Bar"},
                },
            },
        },
        "Decision": decision,
        "BarsResponse": {
            "type": "object",
            "additionalProperties": False,
            "required": ["symbol", "accepted", "resent", "decisions"],
            "properties": {
                "symbol": {"type": "string"},
                "accepted": {"type": "integer", "minimum": 0},
                "resent": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "decisions": {"type": "array", "items": {"$ref": "#/components/schemas/Decision"}},
            },
        },
        "Error": {
            "type": "object",
            "additionalProperties": False,
            "required": ["status", "kind", "index", "field", "message"],
            "properties": {
                "status": {"type": "integer"},
                "kind": {
                    "enum": [
                        "invalid",
                        "refused",
                        "duplicate",
                        "out_of_order",
                        "unknown_symbol",
                        "too_large",
                        "unauthorized",
                        "internal",
                        "unavailable",
                    ]
                },
                "index": nullable_int,
                "field": {"type": ["string", "null"]},
                "message": {"type": "string", "minLength": 1},
                "decision": {"$ref": "#/components/schemas/Decision"},
            },
        },
        "ErrorResponse": {
            "type": "object",
            "additionalProperties": False,
            "required": ["error", "symbol", "accepted", "resent", "decisions"],
            "properties": {
                "error": {"$ref": "#/components/schemas/Error"},
                "symbol": {"type": ["string", "null"]},
                "accepted": {"type": "integer", "minimum": 0},
                "resent": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "decisions": {"type": "array", "items": {"$ref": "#/components/schemas/Decision"}},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "version", "uptime_s", "symbols", "audit"],
            "properties": {
                "status": {"enum": ["ok", "broken"]},
                "version": {"type": "string"},
                "uptime_s": {"type": "number", "minimum": 0},
                "symbols": {"type": "integer", "minimum": 0},
                "audit": {
                    "type": "object",
                    "required": ["seq", "head"],
                    "properties": {"seq": {"type": "integer"}, "head": {"type": "string"}},
                },
                "reason": {"type": "string"},
            },
        },
        "ConfigSummary": {
            "type": "object",
            "required": ["config_hash", "version", "timeframe", "mode", "horizon", "layers", "modules", "model_hashes"],
            "properties": {
                "config_hash": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                "version": {"type": "string"},
                "timeframe": {"type": "string"},
                "mode": {"enum": ["cheapest", "full"]},
                "horizon": {"type": "integer", "minimum": 1},
                "layers": {"type": "object"},
                "modules": {"type": "array", "items": {"type": "string"}},
                "model_hashes": {"type": "object", "additionalProperties": {"type": "string"}},
                "server": {"type": "object"},
            },
        },
        "Symbols": {
            "type": "object",
            "required": ["symbols"],
            "properties": {
                "symbols": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["symbol", "bars", "rejected", "last_ts", "last_time", "warm", "insufficient"],
                        "properties": {
                            "symbol": {"type": "string"},
                            "bars": {"type": "integer", "minimum": 0},
                            "rejected": {"type": "integer", "minimum": 0},
                            "last_ts": nullable_int,
                            "last_time": {"type": ["string", "null"]},
                            "warm": {"type": "boolean"},
                            "insufficient": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                }
            },
        },
    }


# -- running ---------------------------------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(token_file: str | Path | None) -> str | None:
    """The bearer token: from ``token_file`` (its first line; refused when others can read it) or
    ``$FXGATE_TOKEN``; None when neither is set."""
    if token_file is not None:
        p = Path(token_file)
        try:
            mode = p.stat().st_mode
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ServeError(f"--token-file {p}: cannot read ({exc.strerror})") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ServeError(f"--token-file {p}: others can read it (mode {stat.filemode(mode)}). Fix: chmod 600 {p}")
        token = text.strip().splitlines()[0].strip() if text.strip() else ""
        if not token:
            raise ServeError(f"--token-file {p}: empty. Fix: write a long random token into it")
        return token
    token = os.environ.get(_TOKEN_ENV, "").strip()
    return token or None


def run(service: BarService, *, host: str, port: int, token: str | None, log_level: str = "warning") -> None:
    """Serve ``service`` until SIGINT/SIGTERM (then snapshot every symbol and close the log)."""
    if not is_loopback(host) and not token:
        service.close()
        raise ServeError(
            f"--host {host} is not a loopback address and no token is set: anyone who can reach it could trade "
            f"through this gate. Fix: export {_TOKEN_ENV}=<long random token> or pass --token-file FILE (mode 600); "
            "or serve on 127.0.0.1"
        )
    app = create_app(service, token=token)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on")
    uvicorn.Server(config).run()
