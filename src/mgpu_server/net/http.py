"""The master's HTTP listener (``[http] listen``): HTTP/1.1 over asyncio streams, in the
master's own loop, parsed by h11.

h11 is sans-I/O (bytes in, events out), as our own wire (mgpu_core.protocol) is; it is pure
Python and 40 KB, where aiohttp or uvicorn would bring their own servers, C extensions and
megabytes into the PyInstaller bundle. This module owns the bytes: request size limits (the
head, the body), a per-address request rate, idle timeouts, keep-alive; what a request means
is :mod:`mgpu_server.net.httpapi`'s.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import h11

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024
IDLE_TIMEOUT_S = 30.0
READ_BYTES = 64 * 1024


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names; a repeated header's last value
    body: bytes
    peer: str  # "address:port"
    tls: bool


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    # A stream (server-sent events): chunks until it ends or the client goes.
    stream: AsyncIterator[bytes] | None = None


App = Callable[[Request], Awaitable[Response]]


class RateLimiter:
    """A token bucket per address: ``rate_per_s`` on average, ``burst`` at once."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate_per_s, self.burst = rate_per_s, burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def admit(self, address: str, now_s: float) -> bool:
        if self.rate_per_s <= 0:
            return True
        tokens, last = self._buckets.get(address, (float(self.burst), now_s))
        tokens = min(float(self.burst), tokens + (now_s - last) * self.rate_per_s)
        if len(self._buckets) > 10_000:  # addresses seen once: forget the full buckets
            self._buckets = {a: v for a, v in self._buckets.items() if v[0] < self.burst}
        if tokens < 1.0:
            self._buckets[address] = (tokens, now_s)
            return False
        self._buckets[address] = (tokens - 1.0, now_s)
        return True


class HttpListener:
    def __init__(
        self,
        app: App,
        *,
        max_body_bytes: int,
        limiter: RateLimiter,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.app, self.max_body_bytes, self.limiter, self.tls = app, max_body_bytes, limiter, tls
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the port (0 picks a free one)."""
        self.server = await asyncio.start_server(self._serve, host, port, ssl=self.tls)
        return int(self.server.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername") or ("?", 0)
        peer = f"{peername[0]}:{peername[1]}"
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        try:
            while True:
                request = await self._read_request(conn, reader, peer)
                if request is None:
                    return
                if isinstance(request, Response):
                    await self._send(conn, writer, request)
                    return
                if not self.limiter.admit(peername[0], time.monotonic()):
                    response = error_response(429, "limit_exceeded", "too many requests")
                    response.headers["retry-after"] = "1"
                else:
                    response = await self.app(request)
                await self._send(conn, writer, response)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (OSError, h11.ProtocolError, TimeoutError, ConnectionError):
            return
        except Exception:  # a bug in one request must not stop the listener
            log.exception("HTTP request from %s failed", peer)
        finally:
            writer.close()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, peer: str
    ) -> Request | Response | None:
        """The next request; a Response to send before closing (too large, malformed);
        None when the client is done."""
        head: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint or 400
                return error_response(status, "bad_message", f"bad HTTP request: {exc}")
            if event is h11.NEED_DATA:
                data = await asyncio.wait_for(reader.read(READ_BYTES), IDLE_TIMEOUT_S)
                conn.receive_data(data)
                if not data and head is None:
                    return None
                continue
            if isinstance(event, h11.ConnectionClosed):
                return None
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.max_body_bytes:
                    return error_response(
                        413, "frame_too_large", f"request body over {self.max_body_bytes} bytes"
                    )
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                return _request(head, bytes(body), peer, self.tls is not None)

    async def _send(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, response: Response
    ) -> None:
        headers = [
            ("content-type", response.content_type),
            ("cache-control", "no-store"),
            ("x-content-type-options", "nosniff"),
            *response.headers.items(),
        ]
        if response.stream is None:
            headers.append(("content-length", str(len(response.body))))
        elif conn.their_http_version == b"1.0":
            headers.append(("connection", "close"))
        writer.write(conn.send(h11.Response(status_code=response.status, headers=headers)) or b"")
        if response.stream is None:
            writer.write(conn.send(h11.Data(data=response.body)) or b"")
        else:
            await writer.drain()
            async for chunk in response.stream:
                writer.write(conn.send(h11.Data(data=chunk)) or b"")
                await writer.drain()
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()


def _request(head: h11.Request, body: bytes, peer: str, tls: bool) -> Request:
    target = head.target.decode("latin-1")
    parts = urlsplit(target)
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
    return Request(
        method=head.method.decode("ascii", "replace").upper(),
        path=parts.path,
        query=parse_qs(parts.query, keep_blank_values=True),
        headers=headers,
        body=body,
        peer=peer,
        tls=tls,
    )


def error_response(status: int, code: str, message: str) -> Response:
    import json

    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return Response(status, body)
