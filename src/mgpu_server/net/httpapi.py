"""What an HTTP request means: who asks (a bearer token, the same per-user tokens TCP clients
prove), which wire request it is (:mod:`mgpu_server.api.rest`), and its answer, which goes
through the server's turn like every reply: handled, committed, then sent (an acknowledged
submit is stored). Errors are JSON with the wire's stable codes.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

from mgpu_core.auth import parse_token
from mgpu_core.daemons import ServerConfig
from mgpu_core.errors import AuthenticationFailed, ConfigError, MgpuError
from mgpu_core.messages import CLIENT_REQUESTS, validate
from mgpu_core.protocol import Message, error_reply, ok_reply
from mgpu_core.tls import server_context
from mgpu_server.api import audit, rest
from mgpu_server.api.handlers import ClientService
from mgpu_server.api.openapi import document
from mgpu_server.api.permissions import RequestContext, Transport, context
from mgpu_server.api.tokens import TokenRegistry
from mgpu_server.dashboard import asset
from mgpu_server.net.http import HttpListener, RateLimiter, Request, Response, error_response
from mgpu_server.net.metrics import Metrics
from mgpu_server.net.outputreads import OutputReads
from mgpu_server.state.cluster import ClusterState

try:  # the PyInstaller bundle leaves it out (its 40 MiB bar): there answers go through json
    import orjson
except ImportError:  # pragma: no cover - the venv always has it
    orjson = None  # type: ignore[assignment]


class Host(Protocol):
    """What the API needs of the server (net/server.py's Server)."""

    tokens: TokenRegistry
    admins: frozenset[str]
    outputs: OutputReads
    cluster: ClusterState
    service: ClientService
    metrics: Metrics
    changes: Changes

    def reply(self, conn: Any, msg: Message) -> None: ...


log = logging.getLogger(__name__)

REPLY_TIMEOUT_S = 30.0
# Who a token-less reader on loopback is (loopback_read): no one's jobs are theirs to change.
ANONYMOUS = "(anonymous)"  # not a user name a job can have
EVENT_INTERVAL_S = 1.0  # the dashboard redraws at most this often
KEEPALIVE_S = 25.0
# The dashboard's own files only: no inline script, nothing from elsewhere.
CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"


class _Reply:
    """Stands in for a client connection where the server sends a reply after its commit."""

    def __init__(self) -> None:
        self.future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self.closed = False

    def send(self, msg: Message) -> None:
        if not self.future.done():
            self.future.set_result(msg)


class HttpApi:
    def __init__(
        self, server: Host, *, openapi: dict[str, Any], metrics: Any, loopback_read: bool = False
    ) -> None:
        """``metrics``: renders /metrics (``() -> bytes``); ``loopback_read``: GETs from
        this host need no token."""
        self.server = server
        self.loopback_read = loopback_read
        self.openapi = json.dumps(openapi).encode()
        self.metrics = metrics
        self._ids = itertools.count(1)

    async def __call__(self, request: Request) -> Response:
        try:
            return await self._answer(request)
        except MgpuError as err:
            return error_response(rest.status_of(err.code), err.code, err.message)

    async def _answer(self, request: Request) -> Response:
        target = rest.route(request.method, request.path, request.query, request.body)
        if target == "openapi":
            return Response(200, self.openapi)
        if isinstance(target, str) and target.startswith("asset:"):
            found = asset(target.removeprefix("asset:"))
            if found is None:
                raise rest.NotFound(f"no such file: {request.path}")
            return Response(200, found[0], found[1], {"content-security-policy": CSP})
        ctx = self._who(request)
        if target == "metrics":
            return Response(200, self.metrics(), "text/plain; version=0.0.4; charset=utf-8")
        if target == "whoami":
            return _json({"user": ctx.user, "admin": ctx.admin})
        if target == "events":
            return Response(200, content_type="text/event-stream", stream=self._events())
        assert isinstance(target, rest.Route)
        reply = await self._run(ctx, target)
        if reply["t"] == "error":
            return error_response(rest.status_of(reply["code"]), reply["code"], reply["message"])
        data = reply["data"]
        if target.raw:  # the log: its bytes, where they start and the file's size in headers
            headers = {
                "x-mgpu-offset": str(data["offset"]),
                "x-mgpu-size": str(data["size"]),
                "x-mgpu-job-state": str(data["job"]["state"]),
            }
            return Response(200, data["data"], "application/octet-stream", headers)
        if target.one:
            data = data["jobs"][0]
        refused = next((r for r in data.get("results", ()) if not r["ok"]), None)
        if refused is not None:  # one job's action (cancel, hold ...): its refusal is the request's
            return error_response(
                rest.status_of(refused["code"]), refused["code"], refused["message"]
            )
        return _json(data)

    async def _events(self) -> AsyncIterator[bytes]:
        """``changed`` when the state has changed since the last event (at most one every
        EVENT_INTERVAL_S: a busy cluster changes every turn), a comment every KEEPALIVE_S
        otherwise; nothing else runs for a quiet dashboard."""
        changes = self.server.changes
        seen = -1
        while True:
            if changes.version != seen:
                seen = changes.version
                yield f"event: changed\ndata: {seen}\n\n".encode()
                await asyncio.sleep(EVENT_INTERVAL_S)
                continue
            try:
                await asyncio.wait_for(changes.after(seen), KEEPALIVE_S)
            except TimeoutError:
                yield b": keepalive\n\n"

    def _who(self, request: Request) -> RequestContext:
        """The user a bearer token proves (the token's secret itself, over TLS); without a
        token, where [http] loopback_read allows, an anonymous reader."""
        header = request.headers.get("authorization", "")
        local = request.peer.rsplit(":", 1)[0] in ("127.0.0.1", "::1")
        if not header and self.loopback_read and request.method == "GET" and local:
            return RequestContext(ANONYMOUS, False, Transport.TCP, request.peer)
        scheme, _, text = header.partition(" ")
        if scheme.lower() != "bearer" or not text:
            raise AuthenticationFailed(
                "send the user's token: Authorization: Bearer mgpu.ID.SECRET"
            )
        try:
            token = parse_token(text, "the bearer token")
        except ConfigError as err:
            raise AuthenticationFailed(err.message) from None
        record = self.server.tokens.lookup(token.token_id)
        if record is None or not hmac.compare_digest(record.secret, token.secret):
            audit.log_failure("http_auth", peer=request.peer, token=token.token_id)
            raise AuthenticationFailed(f"token {token.token_id} is unknown, revoked or wrong")
        transport = Transport.TLS if request.tls else Transport.TCP
        return context(record.user, transport, request.peer, admins=self.server.admins)

    async def _run(self, ctx: RequestContext, target: rest.Route) -> Message:
        server = self.server
        msg = validate({"t": target.verb, "id": next(self._ids), **target.fields}, CLIENT_REQUESTS)
        conn: Any = _Reply()
        try:
            if msg["t"] == "log":
                server.outputs.request(server.cluster, ctx, conn, msg)
            else:
                server.reply(conn, ok_reply(msg["id"], server.service.handle(ctx, conn, msg)))
        except MgpuError as err:
            server.reply(conn, error_reply(msg["id"], err.code, err.message))
        reply: Message = await asyncio.wait_for(conn.future, REPLY_TIMEOUT_S)
        return reply


def _json(data: Any) -> Response:
    return Response(200, json_body(data))


def json_body(data: Any) -> bytes:
    """``data`` as JSON. orjson, not json: a list of 10,000 jobs is 3.8 MB of JSON, which the
    standard library's encoder takes ~47 ms to write and orjson ~5 (docs/performance.md). A
    string orjson refuses (a lone surrogate: a path's byte that is not UTF-8, as an OsStr
    holds it) sends the whole answer through json, which writes it escaped (``\\udcff``)."""
    if orjson is not None:
        try:
            return orjson.dumps(data, default=_plain, option=orjson.OPT_NON_STR_KEYS)
        except orjson.JSONEncodeError:
            pass
    text = json.dumps(data, default=_plain, check_circular=False, separators=(",", ":"))
    return text.encode()


def _plain(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


async def start_http(server: Host, cfg: ServerConfig) -> HttpListener:
    """The HTTP API on ``cfg.http_listen``: https with the master's certificate unless
    ``[http] tls = false``; its port goes to http.port in the state directory."""
    assert cfg.http_listen is not None
    host, port = cfg.http_listen
    tls = None
    if cfg.http_tls and cfg.tls_cert is not None and cfg.tls_key is not None:
        tls = server_context(cfg.tls_cert, cfg.tls_key)
    api = HttpApi(
        server,
        openapi=document(),
        metrics=server.metrics.render,
        loopback_read=cfg.http_loopback_read,
    )
    listener = HttpListener(
        api,
        max_body_bytes=cfg.http_max_body_bytes,
        limiter=RateLimiter(cfg.http_rate_per_s, cfg.http_burst),
        tls=tls,
    )
    bound = await listener.start(host, port)
    (cfg.state_dir / "http.port").write_text(f"{bound}\n")
    log.info("HTTP API on %s:%d (%s)", host, bound, "https" if tls else "http")
    return listener


class Changes:
    """A counter the server bumps after each turn; readers wait for it to move."""

    def __init__(self) -> None:
        self.version = 0
        self._moved: asyncio.Event | None = None

    def bump(self) -> None:
        self.version += 1
        if self._moved is not None:
            self._moved.set()
            self._moved = None

    async def after(self, seen: int) -> None:
        while self.version == seen:
            if self._moved is None:
                self._moved = asyncio.Event()
            await self._moved.wait()
