"""asyncio adapter over the sans-I/O framing, used by the master and the node agent."""

from __future__ import annotations

import asyncio
import socket
from collections import deque

from mgpu_core.errors import ConnectionClosed
from mgpu_core.protocol import MAX_FRAME_BYTES, FrameDecoder, Message, encode_frame

_READ_BYTES = 256 * 1024


class AsyncConnection:
    """One peer. ``recv()`` yields decoded messages; ``send()`` queues a frame without waiting.

    ``send`` never blocks the event loop: callers that may produce a lot (output relays) check
    :meth:`backlog_bytes` and decide what to do with a slow reader, or ``await drain()``.
    """

    __slots__ = ("_decoder", "_pending", "peer", "reader", "writer")

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_frame_bytes: int = MAX_FRAME_BYTES,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self._decoder = FrameDecoder(max_frame_bytes)
        self._pending: deque[Message] = deque()
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def recv(self) -> Message:
        while not self._pending:
            self._decoder.feed(b"")  # raises an error held back from the last chunk
            try:
                data = await self.reader.read(_READ_BYTES)
            except (ConnectionError, OSError) as exc:
                raise ConnectionClosed(f"{self.peer}: {exc}") from None
            if not data:
                raise ConnectionClosed(f"{self.peer} closed the connection")
            self._pending.extend(self._decoder.feed(data))
        return self._pending.popleft()

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
        if not self.writer.is_closing():
            self.writer.close()
