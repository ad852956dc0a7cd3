"""How fast the master takes one client's requests, so that no client starves the others.

A client may send requests ahead (pipelining) as fast as it likes. Without pacing, every
request already in the buffers would be handled before the loop turned (``recv`` need not
wait for them), and their replies queued whether or not the client reads them: a stream of
``info`` requests kept everyone else waiting for seconds, and a client that never read its
``queue`` replies grew the master by hundreds of megabytes. So a session:

- gives the loop a turn after :data:`REQUESTS_PER_TURN` requests or :data:`TURN_SLICE_S` of
  handling, whichever comes first: the flush (this turn's replies, commit, pass) and every other
  connection run before its next request;
- stops reading while more than :data:`REPLY_BACKLOG_BYTES` of its replies wait unsent (the
  client does not read them): its requests stay in the kernel's buffers, then its own, and the
  master holds at most that backlog plus one turn's replies.
"""

from __future__ import annotations

import asyncio
import time

from mgpu_core.aio import AsyncConnection

REQUESTS_PER_TURN = 16
TURN_SLICE_S = 0.005
REPLY_BACKLOG_BYTES = 1024 * 1024


class Pacer:
    __slots__ = ("_conn", "_handled", "_since")

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._handled = 0
        self._since = time.perf_counter()

    async def next_request(self) -> None:
        """Wait until this connection may have its next request handled."""
        self._handled += 1
        if self._handled > REQUESTS_PER_TURN or time.perf_counter() - self._since > TURN_SLICE_S:
            await asyncio.sleep(0)  # one loop turn: the flush and everyone else first
            self._handled = 1
            self._since = time.perf_counter()
        if self._conn.backlog_bytes() > REPLY_BACKLOG_BYTES:
            # Until the client has read most of it (asyncio's low-water mark). A client that
            # never reads waits here, holding its connection and no more memory.
            await self._conn.drain()
            self._since = time.perf_counter()
