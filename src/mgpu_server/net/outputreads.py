"""``mgpu_client log``: a job's output files are on its node, so the master asks the node for a
byte range (``read_output``) and hands the node's answer (``output_data``) to the client that
asked, with the job's state as it is then. Not state: a read in flight when the master
restarts is lost, and the client asks again.

A node that does not answer within ``timeout_s``, or whose link goes, fails the reads it
owes with an error; the client's connection stays up.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mgpu_core.aio import AsyncConnection
from mgpu_core.errors import OutputUnavailable
from mgpu_core.protocol import Message, error_reply, ok_reply
from mgpu_server.api.jobinfo import log_order
from mgpu_server.api.permissions import RequestContext
from mgpu_server.state.cluster import ClusterState

READ_TIMEOUT_S = 10.0
# Reads in flight per node: a client asking faster than a node answers waits its turn.
MAX_READS_PER_NODE = 64


@dataclass(slots=True)
class _Read:
    conn: AsyncConnection
    client_req: int
    node_id: str
    job_id: int
    timer: asyncio.TimerHandle | None = None


class OutputReads:
    def __init__(
        self,
        *,
        send_to_node: Callable[[str, dict[str, Any]], bool],
        reply: Callable[[AsyncConnection, Message], None],
        job_status: Callable[[int], dict[str, Any]],
        kick: Callable[[], None],
        timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        """``send_to_node``: False if the node has no link now; ``job_status``: the fields
        of the job's row a reader needs to know whether more will come."""
        self.send_to_node, self.reply, self.job_status = send_to_node, reply, job_status
        self.kick = kick
        self.timeout_s = timeout_s
        self._ids = itertools.count(1)
        self._reads: dict[int, _Read] = {}

    def request(
        self, state: ClusterState, ctx: RequestContext, conn: AsyncConnection, msg: Message
    ) -> None:
        """A client's ``log``: checked and resolved (api/jobinfo.py), then asked of the job's
        node; a job that has not started is answered here (nothing written yet)."""
        job, order = log_order(state, ctx, msg)
        if order is None:
            data = {
                "data": b"",
                "offset": 0,
                "size": 0,
                "node": "",
                "job": self.job_status(job.job_id),
            }
            self.reply(conn, ok_reply(msg["id"], data))
            return
        self.ask(conn, msg["id"], job.node_id, job.job_id, order)

    def ask(
        self,
        conn: AsyncConnection,
        client_req: int,
        node_id: str,
        job_id: int,
        order: dict[str, Any],
    ) -> None:
        """Send ``order`` (a ``read_output`` without its ``req``) to ``node_id``; the answer
        goes to ``conn`` as the reply to ``client_req``."""
        if sum(1 for r in self._reads.values() if r.node_id == node_id) >= MAX_READS_PER_NODE:
            self._fail(conn, client_req, f"node {node_id} is busy with other reads; try again")
            return
        req = next(self._ids)
        if not self.send_to_node(node_id, {"t": "read_output", "req": req, **order}):
            self._fail(conn, client_req, f"node {node_id} is not connected: its files are there")
            return
        read = _Read(conn, client_req, node_id, job_id)
        read.timer = asyncio.get_running_loop().call_later(self.timeout_s, self._expire, req)
        self._reads[req] = read

    def answered(self, node_id: str, msg: dict[str, Any]) -> None:
        """A node's ``output_data``: to the client that asked (a late or foreign one is
        dropped)."""
        read = self._reads.get(msg["req"])
        if read is None or read.node_id != node_id:
            return
        self._done(msg["req"])
        if msg["error"]:
            self._fail(read.conn, read.client_req, msg["error"])
            return
        data = {
            "data": msg["data"],
            "offset": msg["offset"],
            "size": msg["size"],
            "node": node_id,
            "job": self.job_status(read.job_id),
        }
        self.reply(read.conn, ok_reply(read.client_req, data))
        self.kick()

    def node_gone(self, node_id: str) -> None:
        for req, read in list(self._reads.items()):
            if read.node_id == node_id:
                self._done(req)
                self._fail(read.conn, read.client_req, f"lost node {node_id} while reading")

    def client_gone(self, conn: AsyncConnection) -> None:
        for req, read in list(self._reads.items()):
            if read.conn is conn:
                self._done(req)

    def _expire(self, req: int) -> None:
        read = self._reads.get(req)
        if read is not None:
            self._done(req)
            self._fail(read.conn, read.client_req, f"node {read.node_id} did not answer in time")

    def _done(self, req: int) -> None:
        read = self._reads.pop(req)
        if read.timer is not None:
            read.timer.cancel()

    def _fail(self, conn: AsyncConnection, client_req: int, message: str) -> None:
        self.reply(conn, error_reply(client_req, OutputUnavailable.code, message))
        self.kick()
