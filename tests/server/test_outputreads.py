"""The master's relay of output reads: each answer to the client that asked, and an error
(never silence) when the node is away, leaves, is too slow, or answers someone else's read."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mgpu_server.net.outputreads import OutputReads

pytestmark = pytest.mark.timeout(30)


class Harness:
    def __init__(self, *, linked: bool = True, timeout_s: float = 5.0) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.replies: list[tuple[object, dict[str, Any]]] = []
        self.linked = linked
        self.reads = OutputReads(
            send_to_node=self._send,
            reply=lambda conn, msg: self.replies.append((conn, msg)),
            job_status=lambda job_id: {"job_id": job_id, "state": "RUNNING"},
            kick=lambda: None,
            timeout_s=timeout_s,
        )

    def _send(self, node_id: str, msg: dict[str, Any]) -> bool:
        if self.linked:
            self.sent.append((node_id, msg))
        return self.linked


def answer(req: int, **fields: Any) -> dict[str, Any]:
    return {"req": req, "data": b"", "offset": 0, "size": 0, "error": "", **fields}


def test_each_answer_goes_to_the_client_that_asked() -> None:
    async def run() -> Harness:
        h = Harness()
        conn_a, conn_b = object(), object()
        h.reads.ask(conn_a, 11, "n1", 5, {"job_id": 5})  # type: ignore[arg-type]
        h.reads.ask(conn_b, 22, "n1", 6, {"job_id": 6})  # type: ignore[arg-type]
        (_, first), (_, second) = h.sent
        h.reads.answered("n1", answer(second["req"], data=b"bee", size=3))
        h.reads.answered("n2", answer(first["req"], data=b"forged"))  # not the node asked
        h.reads.answered("n1", answer(first["req"], data=b"aye", size=3))
        h.reads.answered("n1", answer(first["req"], data=b"again"))  # late duplicate: dropped
        assert [(c is conn_b, m["id"], m["data"]["data"]) for c, m in h.replies] == [
            (True, 22, b"bee"),
            (False, 11, b"aye"),
        ]
        assert h.replies[1][1]["data"]["job"] == {"job_id": 5, "state": "RUNNING"}
        return h

    asyncio.run(run())


def test_an_absent_node_a_lost_one_and_a_slow_one_each_get_an_error() -> None:
    async def run() -> None:
        away = Harness(linked=False)
        away.reads.ask(object(), 1, "n1", 5, {})  # type: ignore[arg-type]
        [(_, msg)] = away.replies
        assert msg["t"] == "error" and msg["code"] == "output_unavailable"
        assert "not connected" in msg["message"]

        lost = Harness()
        lost.reads.ask(object(), 2, "n1", 5, {})  # type: ignore[arg-type]
        lost.reads.node_gone("n1")
        assert "lost node n1" in lost.replies[0][1]["message"]

        slow = Harness(timeout_s=0.05)
        slow.reads.ask(object(), 3, "n1", 5, {})  # type: ignore[arg-type]
        deadline = asyncio.get_running_loop().time() + 5
        while not slow.replies and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert "did not answer in time" in slow.replies[0][1]["message"]
        # A node's error text reaches the client as the error's message.
        err = Harness()
        err.reads.ask(object(), 4, "n1", 5, {})  # type: ignore[arg-type]
        err.reads.answered("n1", answer(err.sent[0][1]["req"], error="gone"))
        assert err.replies[0][1]["message"] == "gone"

    asyncio.run(run())
