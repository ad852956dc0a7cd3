"""Where the master listens and who may hold a connection: the TCP port (with optional TLS),
the Unix socket (whose peers the kernel names), and the limits on open connections.

Each accepted connection becomes an :class:`AsyncConnection` handed to ``handle`` with the
Unix peer's user name (None for TCP, whose users prove a token later). Who may hold one is
:mod:`mgpu_server.net.admission`'s to say, when it is accepted: nothing is read from a TCP peer
and no TLS handshake starts before it is admitted (a refused stranger costs an accept and a
close). A refused connection gets ``too_many_connections`` (on the TLS port it is just closed:
the peer could not read a message before the handshake) and is closed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

from mgpu_core import __version__
from mgpu_core.aio import AsyncConnection
from mgpu_core.daemons import ServerConfig
from mgpu_core.errors import ConfigError, TooManyConnections
from mgpu_core.protocol import PEER_LIMITS, PREAUTH_LIMITS, error_reply
from mgpu_server.api import audit
from mgpu_server.api.permissions import Transport
from mgpu_server.net import authn
from mgpu_server.net.admission import Admission, Ticket, fit_to_fd_limit, network_of

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
        self.admission = Admission(
            max_connections=fit_to_fd_limit(config.max_connections),
            max_per_network=config.max_connections_per_address,
            max_unauthenticated_per_network=config.max_unauthenticated_per_address,
        )
        self._tickets: dict[AsyncConnection, Ticket] = {}
        self._tls: ssl.SSLContext | None = None
        self._open: dict[AsyncConnection, asyncio.Task[None]] = {}
        self._tcp_transport = Transport.TCP
        self._binding = b""  # the TLS channel binding (mgpu_core.tls), the same for every link

    async def start(self) -> None:
        cfg = self.config
        tls = None
        self._tcp_transport = Transport.TCP
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            from mgpu_core.tls import binding, cert_der, server_context

            tls = server_context(cfg.tls_cert, cfg.tls_key)
            self._tcp_transport = Transport.TLS
            self._binding = binding(cert_der(cfg.tls_cert))
        else:
            log.warning(
                "plain TCP on the port (--insecure-plaintext): traffic can be read and "
                "injected by anyone on the network path"
            )
        self._tls = tls
        # Not asyncio.start_server(ssl=...): it would read and shake hands with every peer
        # before we could count it (_PausedStreams; the handshake is _start_reading's).
        tcp = await asyncio.get_running_loop().create_server(
            lambda: _PausedStreams(asyncio.StreamReader(), self._on_tcp), cfg.host, cfg.port
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
        conn.binding = self._binding
        network = network_of(conn.peer.rsplit(":", 1)[0])
        await self._serve(conn, self._tcp_transport, network, None)

    async def _on_unix(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = AsyncConnection(reader, writer, self.config.max_frame_bytes)
        uid = authn.peer_uid(writer)
        conn.peer = f"unix:uid={uid}"
        await self._serve(conn, Transport.UNIX, conn.peer, authn.user_name(uid))

    async def _serve(
        self, conn: AsyncConnection, transport: Transport, group: str, peer_user: str | None
    ) -> None:
        ticket = self._admit(conn, transport, group)
        if ticket is None:
            return
        task = asyncio.current_task()
        assert task is not None
        self._open[conn] = task
        self._tickets[conn] = ticket
        try:
            if transport is Transport.UNIX or await self._start_reading(conn, transport):
                await self.handle(conn, transport, peer_user)
        finally:
            del self._open[conn]
            del self._tickets[conn]
            self.admission.release(ticket)

    def _admit(self, conn: AsyncConnection, transport: Transport, group: str) -> Ticket | None:
        """Count ``conn`` (a Unix socket peer is known already, a TCP one not yet), or refuse
        it; an unauthenticated one gets the small frames and a share of the read budget."""
        known = transport is Transport.UNIX
        try:
            ticket = self.admission.admit(group, authenticated=known, evict=conn.close)
        except TooManyConnections as err:
            audit.log_failure("connection_refused", peer=conn.peer, reason=err.message)
            if transport is not Transport.TLS:
                conn.send(error_reply(None, err.code, err.message))
            conn.close()
            return None
        if known:
            conn.limit(self.config.max_frame_bytes, PEER_LIMITS)
        else:
            conn.limit(self.admission.frame_bytes, PREAUTH_LIMITS, self.admission.budget)
        return ticket

    async def _start_reading(self, conn: AsyncConnection, transport: Transport) -> bool:
        """Let an admitted TCP peer's bytes in, through the TLS handshake on the TLS port;
        whether the connection is still there."""
        if transport is not Transport.TLS:
            raw = conn.writer.transport
            assert isinstance(raw, asyncio.ReadTransport)
            raw.resume_reading()
            return True
        assert self._tls is not None
        try:
            await conn.writer.start_tls(
                self._tls, ssl_handshake_timeout=self.config.hello_timeout_s
            )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            log.info("peer %s: no TLS handshake: %s", conn.peer, exc or type(exc).__name__)
            conn.close()
            return False
        return True

    def authenticated(self, conn: AsyncConnection) -> None:
        """``conn``'s peer proved who it is: full-size frames, and its place leaves the share
        kept for unauthenticated peers."""
        conn.limit(self.config.max_frame_bytes, PEER_LIMITS)
        ticket = self._tickets.get(conn)
        if ticket is not None:
            self.admission.authenticated(ticket)


class _PausedStreams(asyncio.StreamReaderProtocol):
    """asyncio's stream protocol that reads nothing from a new connection until it is
    resumed (:meth:`Listeners._start_reading`): asyncio calls ``connection_made`` before it
    starts reading, so no byte a peer sends ahead (a TLS ClientHello) is read outside the
    handshake, and none is read from a peer that is refused."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.ReadTransport)
        transport.pause_reading()
        super().connection_made(transport)


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
