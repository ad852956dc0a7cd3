"""Terminals inside running jobs (``mgpu_client session enter``, ``srun --jobid ID --pty``):
the master relays a client's keystrokes to the shell the job's node runs on a pseudo-terminal,
and the terminal's output back (termmsgs.py has the messages).

The master keeps only the routes: which client connection and which node each terminal joins.
Not state: a master restart, or either side's link going, ends the terminal (the node hangs up
its shell; the client is told why) and the user enters again. A client that lets more than
``max_backlog_bytes`` of output pile up unread is cut off the same way, rather than buffered
without bound.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mgpu_core.aio import AsyncConnection
from mgpu_core.errors import InvalidJobState, InvalidRequest
from mgpu_core.states import JobState
from mgpu_core.termmsgs import MAX_TERMINALS_PER_CLIENT
from mgpu_server.api import permissions as perm
from mgpu_server.api.jobinfo import one_job
from mgpu_server.api.permissions import RequestContext
from mgpu_server.state.cluster import ClusterState

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Terminal:
    conn: AsyncConnection
    node_id: str
    job_id: int
    user: str


class Terminals:
    def __init__(
        self,
        *,
        send_to_node: Callable[[str, dict[str, Any]], bool],
        max_backlog_bytes: int,
    ) -> None:
        """``send_to_node``: False if the node has no link now."""
        self.send_to_node = send_to_node
        self.max_backlog_bytes = max_backlog_bytes
        self._ids = itertools.count(1)
        self._terms: dict[int, _Terminal] = {}

    def open(
        self, state: ClusterState, ctx: RequestContext, conn: AsyncConnection, msg: dict[str, Any]
    ) -> dict[str, Any]:
        """A client's ``pty_open``: a shell in the job, on its node, as its owner. The job's
        owner or an admin may open one; an admin's runs as the job's owner too."""
        job = one_job(state, msg["job_id"])
        perm.check_owner(ctx, job, "enter")
        if job.state is not JobState.RUNNING:
            raise InvalidJobState(
                f"job {job.job_id} is {job.state.value.lower()}: only a running job has a "
                "terminal to enter"
            )
        if sum(1 for t in self._terms.values() if t.conn is conn) >= MAX_TERMINALS_PER_CLIENT:
            raise InvalidRequest(f"at most {MAX_TERMINALS_PER_CLIENT} terminals a connection")
        term_id = next(self._ids)
        order = {
            "t": "pty_open",
            "term_id": term_id,
            "job_id": job.job_id,
            "user": job.user,
            **{k: msg[k] for k in ("rows", "cols", "term", "command")},
        }
        if not self.send_to_node(job.node_id, order):
            raise InvalidJobState(f"job {job.job_id}: its node {job.node_id} is not connected")
        self._terms[term_id] = _Terminal(conn, job.node_id, job.job_id, job.user)
        log.info("terminal %d into job %d on %s by %s", term_id, job.job_id, job.node_id, ctx.user)
        return {"term_id": term_id, "node": job.node_id}

    def from_client(self, conn: AsyncConnection, msg: dict[str, Any]) -> None:
        """Input, a resize or a close for a terminal of this connection's (others' are
        ignored: a client cannot type into a terminal it did not open)."""
        term = self._terms.get(msg["term_id"])
        if term is None or term.conn is not conn:
            return
        kind = msg["t"]
        if kind == "pty_close":
            del self._terms[msg["term_id"]]
        order = {k: v for k, v in msg.items() if k != "id"}
        if not self.send_to_node(term.node_id, order) and kind != "pty_close":
            self._end(msg["term_id"], f"lost node {term.node_id}")

    def from_node(self, node_id: str, msg: dict[str, Any]) -> None:
        """A node's ``pty_output`` or ``pty_exit``: to the client of that terminal."""
        term = self._terms.get(msg["term_id"])
        if term is None or term.node_id != node_id:
            if msg["t"] == "pty_output":  # nobody reads it any more: hang it up
                self.send_to_node(node_id, {"t": "pty_close", "term_id": msg["term_id"]})
            return
        term.conn.send(msg)
        if msg["t"] == "pty_exit":
            del self._terms[msg["term_id"]]
        elif term.conn.backlog_bytes() > self.max_backlog_bytes:
            log.warning("client %s reads terminal %d too slowly", term.conn.peer, msg["term_id"])
            self.send_to_node(node_id, {"t": "pty_close", "term_id": msg["term_id"]})
            self._end(msg["term_id"], "the terminal's output was read too slowly; enter again")

    def client_gone(self, conn: AsyncConnection) -> None:
        for term_id, term in list(self._terms.items()):
            if term.conn is conn:
                del self._terms[term_id]
                self.send_to_node(term.node_id, {"t": "pty_close", "term_id": term_id})

    def node_gone(self, node_id: str) -> None:
        for term_id, term in list(self._terms.items()):
            if term.node_id == node_id:
                self._end(term_id, f"lost node {node_id}")

    def _end(self, term_id: int, why: str) -> None:
        term = self._terms.pop(term_id, None)
        if term is not None:
            term.conn.send({"t": "pty_exit", "term_id": term_id, "error": why})
