"""The node registry: every node agent the master knows, its link and liveness, its GPUs'
health, and the admin's drain/resume/remove. It owns the node records; what happens to the
jobs of a node (reconciliation, failover) is the cluster state's, through the lifecycle.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, ValuesView

from mgpu_core.errors import InvalidRequest, NodeConflict, NodeNotFound
from mgpu_core.models import GpuSample, NodeHello
from mgpu_server.records.nodes import NOT_RESPONDING, NodeRecord
from mgpu_server.state.effects import Outbox
from mgpu_server.storage.store import Store

log = logging.getLogger(__name__)


class NodeRegistry:
    def __init__(self, store: Store, outbox: Outbox, *, node_timeout_s: float) -> None:
        self.store = store
        self.outbox = outbox
        self.node_timeout_s = node_timeout_s
        self._nodes: dict[str, NodeRecord] = {}

    def load(self, now: float) -> None:
        """Nodes known from before a restart: down until their agent reconnects; their jobs
        fail over if they have not returned within node_timeout_s of now."""
        for info in self.store.load_nodes():
            node = NodeRecord.from_info(info, now)
            node.connected = False
            self._nodes[node.node_id] = node

    # ---- the mapping ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def __iter__(self) -> Iterator[str]:
        return iter(self._nodes)

    def __getitem__(self, node_id: str) -> NodeRecord:
        return self._nodes[node_id]

    def get(self, node_id: str) -> NodeRecord | None:
        return self._nodes.get(node_id)

    def values(self) -> ValuesView[NodeRecord]:
        return self._nodes.values()

    # ---- node events ---------------------------------------------------------------------

    def join(self, hello: NodeHello, now: float) -> NodeRecord:
        """A node agent registered (its hello): a new record, keeping an admin's drain."""
        node_id = hello.node_id
        old = self._nodes.get(node_id)
        if old is not None and old.connected and old.down_reason != NOT_RESPONDING:
            # A live link keeps its name. A link silent past --node-timeout (a partition the
            # agent has given up on) may be replaced: the network side closes the old one.
            raise NodeConflict(f"node {node_id!r} is already connected from {old.address}")
        node = NodeRecord.from_hello(hello, now)
        if [g.index for g in node.gpus] != list(range(len(node.gpus))):
            raise InvalidRequest("GPU indices must be 0..N-1 without gaps")
        if old is not None:
            node.drain_reason = old.drain_reason  # an admin's drain outlives reconnects
        self._nodes[node_id] = node
        self.outbox.changed = True
        self.store.put_node(node.to_info())
        log.info(
            "node=%s joined address=%s gpus=%d cpus=%d",
            node_id,
            node.address,
            len(node.gpus),
            node.cpus,
        )
        return node

    def leave(self, node_id: str, now: float) -> None:
        node = self._nodes.get(node_id)
        if node is None:
            return
        node.connected = False
        node.last_seen_s = now
        self.outbox.changed = True
        log.warning(
            "node=%s disconnected; its jobs keep their state until it returns or times out", node_id
        )

    def seen(self, node_id: str, now: float) -> None:
        """Any message from a node proves it alive."""
        self._nodes[node_id].last_seen_s = now

    def heartbeat(self, node_id: str, samples: list[GpuSample], now: float) -> None:
        node = self._nodes[node_id]
        node.last_seen_s = now
        if node.down_reason == NOT_RESPONDING:
            node.down_reason = ""
            self.outbox.changed = True
        for sample in samples:
            if sample.index >= len(node.gpus):
                continue
            gpu = node.gpus[sample.index]
            if gpu.healthy != sample.healthy:
                self.outbox.changed = True
                log.warning(
                    "node=%s gpu=%d healthy=%s %s",
                    node_id,
                    gpu.index,
                    sample.healthy,
                    sample.error,
                )
            gpu.sample = sample

    def silent(self, now: float) -> list[NodeRecord]:
        """Nodes silent for longer than the timeout (a connected one is marked not
        responding): their jobs are to fail over."""
        found = []
        for node in self._nodes.values():
            if now - node.last_seen_s < self.node_timeout_s:
                continue
            if node.connected and not node.down_reason:
                node.down_reason = NOT_RESPONDING
                log.warning("node=%s not responding", node.node_id)
            found.append(node)
        return found

    def update(self, node_id: str, action: str, reason: str) -> None:
        """Admin verbs: drain (jobs finish, none start), resume, remove (no jobs, not connected)."""
        node = self._nodes.get(node_id)
        if node is None:
            raise NodeNotFound(f"no node named {node_id!r}")
        if action == "drain":
            node.drain_reason = reason or "drained by admin"
        elif action == "resume":
            node.drain_reason = ""
        elif node.connected or node.jobs:
            raise InvalidRequest(
                f"node {node_id} is connected or has jobs: stop its agent and let its jobs end"
            )
        else:
            del self._nodes[node_id]
            self.store.delete_node(node_id)
            log.info("node=%s removed", node_id)
            return
        self.outbox.changed = True
        self.store.put_node(node.to_info())
        log.info("node=%s %s reason=%r", node_id, action, node.drain_reason)
