"""Where the master listens and who may hold a connection: the TCP port (with optional TLS),
the Unix socket (whose peers the kernel names), and the limits on open connections.

Each accepted connection becomes an :class:`AsyncConnection` handed to ``handle`` with the
Unix peer's user name (None for TCP, whose users prove a token later). A connection over the
limits gets ``too_many_connections`` and is closed before anything else is read.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

from mgpu_core import __version__
from mgpu_core.aio import AsyncConnection
from mgpu_core.daemons import ServerConfig
from mgpu_core.errors import ConfigError, TooManyConnections
from mgpu_core.protocol import error_reply
from mgpu_server.api import audit
from mgpu_server.api.permissions import Transport
from mgpu_server.net import authn

log = logging.getLogger(__name__)

# (connection, its transport, the user the kernel names for a Unix socket peer, else None)
Handler = Callable[[AsyncConnection, Transport, str | None], Awaitable[None]]


class Listeners:
    def __init__(self, config: ServerConfig, handle: Handler) -> None:
        self.config = config
        self.handle = handle
        self.port = 0
        self._servers: list[asyncio.Server] = []
        self._socket_bound = False  # ours to remove at close
        self._by_address: dict[str, int] = {}
        self._total = 0
        self._open: dict[AsyncConnection, asyncio.Task[None]] = {}
        self._tcp_transport = Transport.TCP

    async def start(self) -> None:
        cfg = self.config
        tls = None
        self._tcp_transport = Transport.TCP
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            from mgpu_core.tls import server_context

            tls = server_context(cfg.tls_cert, cfg.tls_key)
            self._tcp_transport = Transport.TLS
        tcp = await asyncio.start_server(
            self._on_tcp,
            cfg.host,
            cfg.port,
            ssl=tls,
            ssl_handshake_timeout=cfg.hello_timeout_s if tls else None,
        )
        self._servers.append(tcp)
        self.port = tcp.sockets[0].getsockname()[1]
        log.info(
            "mgpu_master %s listening on %s:%d%s",
            __version__,
            cfg.host,
            self.port,
            " (TLS)" if tls else "",
        )
        if cfg.socket_path is not None:
            _clear_stale_socket(cfg.socket_path)
            unix = await asyncio.start_unix_server(self._on_unix, str(cfg.socket_path))
            self._servers.append(unix)
            self._socket_bound = True
            # Anyone on this host may connect: the kernel tells us who they are.
            cfg.socket_path.chmod(0o666)
            log.info("and on unix:%s", cfg.socket_path)

    async def close(self, timeout_s: float = 2.0) -> None:
        """Stop listening, end every open connection, and let their handlers finish (a
        handler cancelled at loop exit is logged by asyncio as an error)."""
        for server in self._servers:
            server.close()
        if self._socket_bound and self.config.socket_path is not None:
            self.config.socket_path.unlink(missing_ok=True)
        for conn in list(self._open):
            conn.close()
        if self._open:
            await asyncio.wait(list(self._open.values()), timeout=timeout_s)

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = AsyncConnection(reader, writer, self.config.max_frame_bytes)
        await self._serve(conn, self._tcp_transport, conn.peer.rsplit(":", 1)[0], None)

    async def _on_unix(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = AsyncConnection(reader, writer, self.config.max_frame_bytes)
        uid = authn.peer_uid(writer)
        conn.peer = f"unix:uid={uid}"
        await self._serve(conn, Transport.UNIX, conn.peer, authn.user_name(uid))

    async def _serve(
        self, conn: AsyncConnection, transport: Transport, address: str, peer_user: str | None
    ) -> None:
        if not self._admit(address):
            audit.log_event("connection_refused", peer=conn.peer, reason="connection limit")
            err = TooManyConnections(f"too many connections (from {address} or in total)")
            conn.send(error_reply(None, err.code, err.message))
            conn.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._open[conn] = task
        try:
            await self.handle(conn, transport, peer_user)
        finally:
            del self._open[conn]
            self._release(address)

    def _admit(self, address: str) -> bool:
        cfg = self.config
        count = self._by_address.get(address, 0)
        if count >= cfg.max_connections_per_address or self._total >= cfg.max_connections:
            return False
        self._by_address[address] = count + 1
        self._total += 1
        return True

    def _release(self, address: str) -> None:
        self._total -= 1
        left = self._by_address[address] - 1
        if left:
            self._by_address[address] = left
        else:
            del self._by_address[address]


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket file a dead master left behind; refuse to steal a live one's."""
    if not path.exists():
        return
    if not path.is_socket():
        raise ConfigError(f"{path} exists and is not a socket: remove it or choose --socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
        return
    finally:
        probe.close()
    raise ConfigError(f"another master is listening on {path}")
