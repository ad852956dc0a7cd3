"""The node agents' persistent links: a node's registration (its hello and proof of the
cluster key), its events into the master's state (heartbeats, job started/output/exited), and
the launch and kill messages the state sends back after each turn's commit.

Output chunks are relayed to the job's watchers at once (they are not state); every other event
asks the server for a flush (pass, commit, send). An event the master cannot take (a field
over its limit, an unknown type) is answered with an error that names it, and the link stays
up: one bad event must not cut a node off (its running jobs, its other events). Only garbage
in the framing itself, after which the stream cannot be read on, closes the link.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from mgpu_core.aio import AsyncConnection
from mgpu_core.errors import MgpuError, ProtocolError
from mgpu_core.messages import NODE_MESSAGES, event_error, validate
from mgpu_core.models import GpuSample, JobExited, NodeHello
from mgpu_core.protocol import PROTOCOL_VERSION, Message, error_reply, ok_reply
from mgpu_server.api import audit
from mgpu_server.net import authn
from mgpu_server.net.outputreads import OutputReads
from mgpu_server.net.terminals import Terminals
from mgpu_server.net.workspacereqs import WorkspaceRequests
from mgpu_server.state.cluster import ClusterState

log = logging.getLogger(__name__)


class NodeLinks:
    def __init__(
        self,
        cluster: ClusterState,
        *,
        outputs: OutputReads,
        workspaces: WorkspaceRequests,
        cluster_key: bytes,
        node_key: Callable[[str], bytes | None],
        hello_timeout_s: float,
        reply: Callable[[AsyncConnection, Message], None],
        kick: Callable[[], None],
        relay: Callable[[int, dict[str, Any]], None],
        authenticated: Callable[[AsyncConnection], None],
        terminals: Terminals | None = None,
    ) -> None:
        self.cluster = cluster
        self.outputs = outputs  # clients' reads of job output files, answered by nodes
        self.workspaces = workspaces  # clients' workspace listings and removals, likewise
        self.terminals = terminals  # shells in running jobs: their output goes to clients
        self.cluster_key = cluster_key
        # A node's own key (mgpu_node join), else None: then the shared cluster key (legacy).
        self.node_key = node_key
        self.hello_timeout_s = hello_timeout_s
        self.reply = reply  # queued until the turn's commit, like every reply
        self.kick = kick
        self.relay = relay
        self.authenticated = authenticated  # the listeners widen a proven link's limits
        self.links: dict[str, AsyncConnection] = {}
        # Per interactive job being followed: the offset of its output its watchers need next
        # (what was relayed, or less when a client attached asking for a replay). Not state:
        # after a restart, clients re-attach with the offset they printed up to.
        self.relayed: dict[int, int] = {}

    def send(self, node_id: str, msg: dict[str, Any]) -> None:
        """To a node's link, if it has one now (a node away gets its state on reconnect)."""
        if msg["t"] == "replay":  # asked again when the node registers, if it is away now
            job_id, offset = msg["job_id"], msg["offset"]
            self.relayed[job_id] = min(self.relayed.get(job_id, offset), offset)
        link = self.links.get(node_id)
        if link is not None:
            link.send(msg)

    def send_now(self, node_id: str, msg: dict[str, Any]) -> bool:
        """To a node's link; False if it has none now (a request that needs an answer)."""
        link = self.links.get(node_id)
        if link is None:
            return False
        link.send(msg)
        return True

    async def serve(self, conn: AsyncConnection, hello: dict[str, Any]) -> None:
        """A node's session, after its hello: prove the key, join, then its events until the
        link closes (the node then counts as disconnected)."""
        if hello["node"] is None:
            raise ProtocolError("a node hello must carry its 'node' registration")
        registration = NodeHello.from_checked(hello["node"])  # checked with the hello
        if not registration.address:
            registration = replace(registration, address=conn.peer.rsplit(":", 1)[0])
        await self._authenticate(conn, hello)
        self.authenticated(conn)
        try:
            node = self.cluster.node_join(registration, time.time())
        except MgpuError as err:
            conn.send(error_reply(hello["id"], err.code, err.message))
            return
        node_id = node.node_id
        stale = self.links.get(node_id)
        if stale is not None:
            stale.close()  # a silent link this registration replaces (see NodeRegistry.join)
        self.links[node_id] = conn
        self.workspaces.node_joined(node_id, registration.workspace_root, registration.workspace_id)
        # The fence parameters are the master's: the node kills its jobs after fence_timeout_s
        # without an acknowledged heartbeat, and the master waits longer than that.
        registered = {
            "node_id": node_id,
            "version": PROTOCOL_VERSION,
            "fence_timeout_s": self.cluster.fence_timeout_s,
            "kill_grace_s": self.cluster.lifecycle.kill_grace_s,
        }
        # Where its followed interactive jobs' output should resume (the old link may have lost
        # some): the node sends from there before anything else, its exits included.
        registered["replay"] = self._replay_from(node_id)
        self.reply(conn, ok_reply(hello["id"], registered))
        try:
            while True:
                event = await conn.recv()  # a framing error ends the link here
                try:
                    self._on_message(node_id, validate(event, NODE_MESSAGES))
                except MgpuError as err:
                    self._refuse(node_id, conn, event, err)
        finally:
            if self.links.get(node_id) is conn:
                del self.links[node_id]
                self.outputs.node_gone(node_id)
                self.workspaces.node_gone(node_id)
                if self.terminals is not None:
                    self.terminals.node_gone(node_id)
                self.cluster.node_leave(node_id, time.time())
                self.kick()

    def _replay_from(self, node_id: str) -> list[list[int]]:
        """[job id, offset] for each followed job of this node: what its watchers need next."""
        pairs = []
        for job_id, offset in list(self.relayed.items()):
            job = self.cluster.table.jobs.get(job_id)
            if job is None or job.state.terminal:
                del self.relayed[job_id]
            elif job.node_id == node_id:
                pairs.append([job_id, offset])
        return pairs

    def forget(self, job_id: int) -> None:
        self.relayed.pop(job_id, None)

    async def _authenticate(self, conn: AsyncConnection, hello: dict[str, Any]) -> None:
        node_id = hello["node"]["node_id"]
        # A node id with a key of its own registers with that key only: neither the cluster
        # key nor another node's key passes for it (api/joins.py).
        own_key = self.node_key(node_id)
        await authn.challenge(
            conn,
            hello,
            self.cluster_key if own_key is None else own_key,
            node_id,
            peer_role="node",
            timeout_s=self.hello_timeout_s,
        )
        credential = "cluster key" if own_key is None else "node key"
        audit.log_event("node_auth", peer=conn.peer, node=node_id, credential=credential)

    def _refuse(self, node_id: str, conn: AsyncConnection, event: Message, err: MgpuError) -> None:
        """One event refused: logged, and answered with an error that names it (the agent
        logs it and, for an exit, forgets it rather than resending it forever)."""
        reply = event_error(event, err.code, err.message)
        log.warning(
            "node=%s %s event refused (job=%s): %s: %s",
            node_id,
            reply["event"] or "?",
            reply["job_id"],
            err.code,
            reply["message"],
        )
        self.reply(conn, reply)
        if reply["event"] == "job_exited" and isinstance(reply["job_id"], int):
            # The agent drops the refused exit: the job ends here, FAILED with the reason,
            # rather than vanish from the node's list and be requeued to run again.
            self.cluster.exit_refused(
                node_id, reply["job_id"], reply["restart_count"], reply["message"], time.time()
            )
            self.kick()

    def _on_message(self, node_id: str, msg: dict[str, Any]) -> None:
        cluster = self.cluster
        now = time.time()
        kind = msg["t"]
        cluster.node_seen(node_id, now)
        if kind == "job_output":
            job = cluster.job_of_node(node_id, msg["job_id"])
            if job is not None:
                if msg["offset"] is not None:
                    end = msg["offset"] + (msg["lost"] or len(msg["data"]))
                    self.relayed[job.job_id] = max(self.relayed.get(job.job_id, 0), end)
                self.relay(job.job_id, msg)
            return
        if kind == "output_data":  # an answer, not an event: nothing changes
            self.outputs.answered(node_id, msg)
            return
        if kind == "workspace_data":  # likewise
            self.workspaces.answered(node_id, msg)
            return
        if kind in ("pty_output", "pty_exit"):  # a terminal's, to its client
            if self.terminals is not None:
                self.terminals.from_node(node_id, msg)
            return
        if kind == "heartbeat":
            cluster.heartbeat(
                node_id,
                [GpuSample.from_checked(g) for g in msg["gpus"]],
                now,
                running_ids=msg["running_job_ids"],
                launch_seq=msg["launch_seq"],
            )
            # After this turn's commit, like every reply: the node renews its lease from the
            # time it sent this heartbeat.
            self.reply(self.links[node_id], {"t": "heartbeat_ack", "seq": msg["seq"]})
        elif kind == "job_started":
            cluster.job_started(node_id, msg["job_id"], msg["pid"])
        elif kind == "job_exited":
            cluster.job_exited(node_id, JobExited.from_checked(msg), now)
        self.kick()
