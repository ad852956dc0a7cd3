"""asyncio adapter over the sans-I/O framing, used by the master and the node agent."""

from __future__ import annotations

import asyncio
import socket

from mgpu_core.errors import ConnectionClosed
from mgpu_core.protocol import (
    MAX_FRAME_BYTES,
    DecodeLimits,
    FrameDecoder,
    Message,
    encode_frame,
)

_READ_BYTES = 256 * 1024
TLS_CLOSE_GRACE_S = 0.5  # see AsyncConnection.close


class ReadBudget:
    """Unread bytes that a group of connections may hold together (the master's peers that
    have not proven who they are). A connection that holds more than ``small_bytes`` when the
    group is over its limit is cut: a flood of half-sent frames cannot keep a hello out."""

    __slots__ = ("limit_bytes", "small_bytes", "used_bytes")

    def __init__(self, limit_bytes: int, *, small_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.small_bytes = small_bytes
        self.used_bytes = 0


class AsyncConnection:
    """One peer. ``recv()`` yields decoded messages; ``send()`` queues a frame without waiting.

    ``send`` never blocks the event loop: callers that may produce a lot (output relays) check
    :meth:`backlog_bytes` and decide what to do with a slow reader, or ``await drain()``.
    """

    __slots__ = ("_budget", "_decoder", "_held", "binding", "peer", "reader", "writer")

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_frame_bytes: int = MAX_FRAME_BYTES,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self._decoder = FrameDecoder(max_frame_bytes)
        self._budget: ReadBudget | None = None
        self._held = 0  # the unread bytes charged to the budget
        # The TLS channel binding the handshake's proofs cover (mgpu_core.tls.binding): set by
        # whoever knows it (the master for its TLS port, an agent from the verified peer).
        self.binding = b""
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def limit(
        self,
        max_frame_bytes: int,
        limits: DecodeLimits | None,
        budget: ReadBudget | None = None,
    ) -> None:
        """What this peer may send from now on: the frame size, what one frame may decode to,
        and the budget its unread bytes count against (None: none). The master narrows these
        for a peer that has not proven who it is yet and widens them once it has."""
        self._charge(0)
        self._decoder.max_frame_bytes = max_frame_bytes
        self._decoder.limits = limits
        self._budget = budget
        self._charge(self._decoder.buffered_bytes)

    async def recv(self) -> Message:
        # One frame decoded at a time: what a peer sends ahead stays bytes (and, once the
        # reader's buffer is full, in the kernel) until we get to it.
        while (msg := self._decoder.next()) is None:
            try:
                data = await self.reader.read(_READ_BYTES)
            except (ConnectionError, OSError) as exc:
                raise ConnectionClosed(f"{self.peer}: {exc}") from None
            if not data:
                raise ConnectionClosed(f"{self.peer} closed the connection")
            self._decoder.push(data)
            self._charge(self._decoder.buffered_bytes)
        self._charge(self._decoder.buffered_bytes)
        return msg

    def _charge(self, held: int) -> None:
        """Count ``held`` unread bytes against the budget, if any; cut the connection if the
        budget is spent and this one holds more than a little."""
        budget = self._budget
        if budget is None:
            return
        budget.used_bytes += held - self._held
        self._held = held
        if budget.used_bytes > budget.limit_bytes and held > budget.small_bytes:
            used = budget.used_bytes
            self.close()  # gives its bytes back
            raise ConnectionClosed(
                f"{self.peer}: unauthenticated peers hold {used} unread bytes, over the "
                f"limit of {budget.limit_bytes}"
            )

    def send(self, msg: Message) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode_frame(msg))

    async def drain(self) -> None:
        try:
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise ConnectionClosed(f"{self.peer}: {exc}") from None

    def backlog_bytes(self) -> int:
        transport = self.writer.transport
        return 0 if transport is None else transport.get_write_buffer_size()

    @property
    def closed(self) -> bool:
        return self.writer.is_closing()

    def close(self) -> None:
        self._charge(0)
        if self.writer.is_closing():
            return
        self.writer.close()
        if self.writer.get_extra_info("ssl_object") is not None:
            # A TLS close waits for the peer's close_notify (up to asyncio's 30 s shutdown
            # timeout), and never sees it while reading is paused on bytes the peer sent ahead
            # (a flood we stop answering): the socket would stay open that long. Cut it after
            # a moment that lets the last reply out to a peer that does cooperate.
            transport = self.writer.transport
            asyncio.get_running_loop().call_later(TLS_CLOSE_GRACE_S, transport.abort)
