"""The node registry: every node agent the master knows, its link and liveness, its GPUs'
health, and the admin's drain/resume/remove, and the cluster's totals over them (``info``). It
owns the node records; what happens to the jobs of a node (reconciliation, failover) is the
cluster state's, through the lifecycle.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, ValuesView
from typing import Any

from mgpu_core.errors import InvalidRequest, NodeConflict, NodeNotFound
from mgpu_core.models import GpuSample, NodeHello
from mgpu_server.records.nodes import NOT_RESPONDING, NodeCounts, NodeRecord
from mgpu_server.state.effects import Outbox
from mgpu_server.storage.store import Store

log = logging.getLogger(__name__)


class NodeTotals:
    """The sums over every node of what ``info`` shows, kept as nodes change: ``info`` costs
    the same with 1,000 nodes as with one (a stream of them stalled the loop when each walked
    every GPU). Whoever changes a node calls :meth:`NodeRegistry.recount` after."""

    _FIELDS = ("gpus", "gpus_up", "gpus_alloc", "cpus_up", "cpus_alloc")

    def __init__(self) -> None:
        self._of: dict[str, NodeCounts] = {}
        self.states: Counter[str] = Counter()
        self.sums = dict.fromkeys(self._FIELDS, 0)

    def set(self, node_id: str, counts: NodeCounts | None) -> None:
        """Replace what ``node_id`` adds (None: it is gone)."""
        for sign, part in ((-1, self._of.pop(node_id, None)), (1, counts)):
            if part is None:
                continue
            self.states[part.state.value] += sign
            for name in self._FIELDS:
                self.sums[name] += sign * getattr(part, name)
        if counts is not None:
            self._of[node_id] = counts

    def summary(self) -> dict[str, Any]:
        return {
            "nodes_total": len(self._of),
            "node_states": {state: n for state, n in self.states.items() if n},
            "gpus_total": self.sums["gpus"],
            "gpus_up": self.sums["gpus_up"],
            "gpus_alloc": self.sums["gpus_alloc"],
            "cpus_total": self.sums["cpus_up"],
            "cpus_alloc": self.sums["cpus_alloc"],
        }


class NodeRegistry:
    def __init__(self, store: Store, outbox: Outbox, *, node_timeout_s: float) -> None:
        self.store = store
        self.outbox = outbox
        self.node_timeout_s = node_timeout_s
        self._nodes: dict[str, NodeRecord] = {}
        self.totals = NodeTotals()
        self._gpu_types: Counter[str] = Counter()  # GPUs of each type over every node

    def gpu_types(self) -> list[str]:
        """The GPU types of the registered nodes (down ones too), sorted ("" left out)."""
        return sorted(t for t, n in self._gpu_types.items() if n > 0 and t)

    def _put(self, node: NodeRecord) -> None:
        """Add or replace a node's record (and its GPUs' types)."""
        old = self._nodes.get(node.node_id)
        if old is not None:
            self._gpu_types.subtract(old.model_counts)
        self._gpu_types.update(node.model_counts)
        self._nodes[node.node_id] = node

    def recount(self, node: NodeRecord) -> None:
        """A node changed (link, health, drain, allocations): its share of the totals again.
        O(its GPUs)."""
        self.totals.set(node.node_id, node.counts())

    def load(self, now: float) -> None:
        """Nodes known from before a restart: down until their agent reconnects; their jobs
        fail over if they have not returned within node_timeout_s of now."""
        for info in self.store.load_nodes():
            node = NodeRecord.from_info(info, now)
            node.connected = False
            self._put(node)
            self.recount(node)

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
        self._put(node)
        self.recount(node)
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
        self.recount(node)
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
        self.recount(node)

    def silent(self, now: float) -> list[NodeRecord]:
        """Nodes silent for longer than the timeout (a connected one is marked not
        responding): their jobs are to fail over."""
        found = []
        for node in self._nodes.values():
            if now - node.last_seen_s < self.node_timeout_s:
                continue
            if node.connected and not node.down_reason:
                node.down_reason = NOT_RESPONDING
                self.recount(node)
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
            self._gpu_types.subtract(node.model_counts)
            self.totals.set(node_id, None)
            self.store.delete_node(node_id)
            log.info("node=%s removed", node_id)
            return
        self.recount(node)
        self.outbox.changed = True
        self.store.put_node(node.to_info())
        log.info("node=%s %s reason=%r", node_id, action, node.drain_reason)
