"""``mgpu_client workspace list|rm``: the workspaces are on the nodes, so the master asks each
root's node (``workspace``, planned and checked by api/workspaces.py) and, once every node has
answered (``workspace_data``) or failed, answers the client with one entry per root. A node
that is away, leaves or is slower than ``timeout_s`` gets its entry an ``error``: one node
never fails the whole listing. Not state: a request in flight when the master restarts is
lost, and the client asks again.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mgpu_core.aio import AsyncConnection
from mgpu_core.protocol import Message, ok_reply
from mgpu_server.api.permissions import RequestContext
from mgpu_server.api.workspaces import Root, Target, plan
from mgpu_server.state.cluster import ClusterState

ANSWER_TIMEOUT_S = 10.0
# Orders in flight per node: listing walks trees, so a node is not asked faster than it answers.
MAX_ORDERS_PER_NODE = 8
# What a node's answer carries over to the client's entry.
_ANSWER_FIELDS = ("root", "free_bytes", "total_bytes", "quota_bytes", "workspaces", "removed")


@dataclass(slots=True)
class _Gather:
    conn: AsyncConnection
    client_req: int
    action: str
    user: str
    targets: list[Target]
    waiting: dict[int, Target] = field(default_factory=dict)  # by order id
    timer: asyncio.TimerHandle | None = None


class WorkspaceRequests:
    def __init__(
        self,
        *,
        send_to_node: Callable[[str, dict[str, Any]], bool],
        reply: Callable[[AsyncConnection, Message], None],
        kick: Callable[[], None],
        timeout_s: float = ANSWER_TIMEOUT_S,
    ) -> None:
        """``send_to_node``: False if the node has no link now."""
        self.send_to_node, self.reply, self.kick = send_to_node, reply, kick
        self.timeout_s = timeout_s
        self.roots: dict[str, Root] = {}  # each node's, from its latest hello
        self.connected: set[str] = set()
        self._ids = itertools.count(1)
        self._orders: dict[int, tuple[_Gather, str]] = {}  # order id -> (request, node)

    def node_joined(self, node_id: str, path: str, root_id: str) -> None:
        self.roots[node_id] = Root(path, root_id)
        self.connected.add(node_id)

    def node_gone(self, node_id: str) -> None:
        self.connected.discard(node_id)
        for req, (gather, asked) in list(self._orders.items()):
            if asked == node_id:
                self._settle(gather, req, {"error": f"lost node {node_id} while asking it"})

    def request(
        self, state: ClusterState, ctx: RequestContext, conn: AsyncConnection, msg: Message
    ) -> None:
        """A client's ``workspace``: checked and planned, then asked of each root's node."""
        user, targets = plan(state, ctx, msg, roots=self.roots, connected=self.connected)
        gather = _Gather(conn, msg["id"], msg["action"], user, targets)
        for target in targets:
            if target.ask is not None:
                self._ask(gather, target)
        if gather.waiting:
            loop = asyncio.get_running_loop()
            gather.timer = loop.call_later(self.timeout_s, self._expire, gather)
        else:
            self._finish(gather)

    def _ask(self, gather: _Gather, target: Target) -> None:
        node_id = target.ask
        assert node_id is not None
        if sum(1 for _, n in self._orders.values() if n == node_id) >= MAX_ORDERS_PER_NODE:
            target.error = f"node {node_id} is busy with other workspace requests; try again"
            return
        req = next(self._ids)
        order = {"t": "workspace", "req": req, "action": gather.action, "user": gather.user}
        if not self.send_to_node(node_id, order):
            target.error = f"node {node_id} is not connected"
            return
        gather.waiting[req] = target
        self._orders[req] = (gather, node_id)

    def answered(self, node_id: str, msg: dict[str, Any]) -> None:
        """A node's ``workspace_data``: into its request's entry (a late or foreign one is
        dropped)."""
        found = self._orders.get(msg["req"])
        if found is None or found[1] != node_id:
            return
        self._settle(found[0], msg["req"], msg)

    def client_gone(self, conn: AsyncConnection) -> None:
        for req, (gather, _) in list(self._orders.items()):
            if gather.conn is conn:
                del self._orders[req]
                if gather.timer is not None:
                    gather.timer.cancel()

    def _expire(self, gather: _Gather) -> None:
        gather.timer = None
        for req, target in list(gather.waiting.items()):
            self._settle(gather, req, {"error": f"node {target.ask} did not answer in time"})

    def _settle(self, gather: _Gather, req: int, answer: dict[str, Any]) -> None:
        self._orders.pop(req, None)
        target = gather.waiting.pop(req)
        target.error = answer.get("error") or ""
        target.answer = {k: answer[k] for k in _ANSWER_FIELDS if k in answer}
        if not gather.waiting:
            if gather.timer is not None:
                gather.timer.cancel()
            self._finish(gather)

    def _finish(self, gather: _Gather) -> None:
        entries = [
            {
                "node": target.ask or target.nodes[0],
                "nodes": target.nodes,
                "root": target.path,
                "free_bytes": -1,
                "total_bytes": -1,
                "quota_bytes": 0,
                "workspaces": [],
                "removed": "",
                **target.answer,
                "error": target.error,
            }
            for target in gather.targets
        ]
        data = {"action": gather.action, "user": gather.user, "nodes": entries}
        self.reply(gather.conn, ok_reply(gather.client_req, data))
        self.kick()
