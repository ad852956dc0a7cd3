"""The unread bytes that unauthenticated connections may hold together (mgpu_core.aio
ReadBudget): past the limit the one holding a big half-sent frame is cut, a small hello still
gets through, and a connection that closes or is let out gives its bytes back."""

from __future__ import annotations

import asyncio
import socket

import pytest

from mgpu_core.aio import AsyncConnection, ReadBudget
from mgpu_core.errors import ConnectionClosed
from mgpu_core.protocol import encode_frame
from tests.helpers.wire import header


async def pair(budget: ReadBudget) -> tuple[AsyncConnection, socket.socket]:
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    conn = AsyncConnection(reader, writer)
    conn.limit(1 << 20, None, budget)
    return conn, theirs


async def until(predicate: object, what: str) -> None:
    assert callable(predicate)
    async with asyncio.timeout(10):
        while not predicate():
            await asyncio.sleep(0.001)  # polling a condition, under a deadline


async def scenario() -> None:
    budget = ReadBudget(100_000, small_bytes=1_000)
    first, first_peer = await pair(budget)
    second, second_peer = await pair(budget)
    hello, hello_peer = await pair(budget)

    first_peer.sendall(header(200_000) + b"x" * 60_000)
    first_recv = asyncio.ensure_future(first.recv())
    await until(lambda: budget.used_bytes >= 60_000, "the first's bytes counted")

    second_peer.sendall(header(200_000) + b"y" * 60_000)  # 120,000 held: over the limit
    with pytest.raises(ConnectionClosed, match="unauthenticated peers hold"):
        await second.recv()
    assert second.closed and budget.used_bytes < 100_000

    hello_peer.sendall(encode_frame({"t": "hello", "id": 1}))  # small: always let in
    assert await hello.recv() == {"t": "hello", "id": 1}

    hello.limit(1 << 20, None)  # authenticated: no longer counted
    first.close()  # gives its bytes back
    assert budget.used_bytes == 0
    with pytest.raises(ConnectionClosed):
        await first_recv
    for sock in (first_peer, second_peer, hello_peer):
        sock.close()
    hello.close()


def test_read_budget() -> None:
    asyncio.run(scenario())
