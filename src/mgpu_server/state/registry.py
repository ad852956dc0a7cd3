"""Node events of the master's state: registration and reconciliation, liveness, health,
and the admin's drain/resume/remove. A mixin of :class:`~mgpu_server.state.cluster.Cluster`, which
owns all state; it lives apart only to keep each module readable.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from mgpu_core.errors import InvalidRequest, NodeConflict, NodeNotFound
from mgpu_core.states import JobState
from mgpu_server.records.nodes import NodeRecord
from mgpu_server.state.effects import Effect, ToNode

if TYPE_CHECKING:
    from mgpu_server.records.jobs import Job
    from mgpu_server.storage.store import Store

log = logging.getLogger(__name__)


class NodeEvents:
    # Provided by Cluster (declared here for the type checker).
    nodes: dict[str, NodeRecord]
    jobs: dict[int, Job]
    store: Store
    outbox: list[Effect]
    changed: bool
    node_timeout_s: float

    def _node_failed(self, job: Job, now: float, *, reason: str) -> None:
        raise NotImplementedError

    def job_of_node(self, node_id: str, job_id: int) -> Job | None:
        raise NotImplementedError

    def node_join(self, info: dict[str, Any], now: float) -> NodeRecord:
        node_id = info["node_id"]
        old = self.nodes.get(node_id)
        if old is not None and old.connected:
            raise NodeConflict(f"node {node_id!r} is already connected from {old.address}")
        node = NodeRecord.from_info(info, now)
        if [g.index for g in node.gpus] != list(range(len(node.gpus))):
            raise InvalidRequest("GPU indices must be 0..N-1 without gaps")
        if old is not None:
            node.drain_reason = old.drain_reason  # an admin's drain outlives reconnects
        self.nodes[node_id] = node
        self.changed = True
        self.store.put_node(node.to_info())
        self._reconcile(node, set(info["running_job_ids"]), now)
        log.info(
            "node=%s joined address=%s gpus=%d cpus=%d",
            node_id,
            node.address,
            len(node.gpus),
            node.cpus,
        )
        return node

    def _reconcile(self, node: NodeRecord, reported: set[int], now: float) -> None:
        """Match what the node runs against what we believe it runs."""
        for job in self.jobs.values():
            if job.state is not JobState.RUNNING or job.node_id != node.node_id:
                continue
            if job.job_id in reported:
                if any(i >= len(node.gpus) for i in job.gpu_indices):
                    continue  # its GPUs are gone; the job keeps running, unaccounted
                node.allocate(job.job_id, job.gpu_indices, job.spec.cpus, job.spec.mem_bytes)
            else:
                self._node_failed(job, now, reason="job vanished while node was away")
        for job_id in reported:
            if self.job_of_node(node.node_id, job_id) is None:
                self.outbox.append(
                    ToNode(
                        node.node_id, {"t": "kill", "job_id": job_id, "reason": "unknown to master"}
                    )
                )

    def node_leave(self, node_id: str, now: float) -> None:
        node = self.nodes.get(node_id)
        if node is None:
            return
        node.connected = False
        node.last_seen_s = now
        self.changed = True
        log.warning(
            "node=%s disconnected; its jobs keep their state until it returns or times out", node_id
        )

    def heartbeat(self, node_id: str, samples: list[dict[str, Any]], now: float) -> None:
        node = self.nodes[node_id]
        node.last_seen_s = now
        if node.down_reason == "not responding":
            node.down_reason = ""
            self.changed = True
        for sample in samples:
            if sample["index"] >= len(node.gpus):
                continue
            gpu = node.gpus[sample["index"]]
            if gpu.healthy != sample["healthy"]:
                self.changed = True
                log.warning(
                    "node=%s gpu=%d healthy=%s %s",
                    node_id,
                    gpu.index,
                    sample["healthy"],
                    sample["error"],
                )
            gpu.healthy = sample["healthy"]
            gpu.error = sample["error"]
            gpu.utilization_pct = sample["utilization_pct"]
            gpu.memory_used_bytes = sample["memory_used_bytes"]
            gpu.processes = sample["processes"]

    def expire_nodes(self, now: float) -> None:
        """Fail the jobs of nodes silent for longer than the timeout (called once a second)."""
        for node in self.nodes.values():
            if now - node.last_seen_s < self.node_timeout_s:
                continue
            if node.connected and not node.down_reason:
                node.down_reason = "not responding"
                log.warning("node=%s not responding", node.node_id)
            for job_id in sorted(node.jobs):
                if node.connected:
                    kill = {"t": "kill", "job_id": job_id, "reason": "node failed"}
                    self.outbox.append(ToNode(node.node_id, kill))
                self._node_failed(self.jobs[job_id], now, reason=f"node {node.node_id} failed")

    def update_node(self, node_id: str, action: str, reason: str, now: float) -> None:
        """Admin verbs: drain (jobs finish, none start), resume, remove (no jobs, not connected)."""
        node = self.nodes.get(node_id)
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
            del self.nodes[node_id]
            self.store.delete_node(node_id)
            log.info("node=%s removed", node_id)
            return
        self.changed = True
        self.store.put_node(node.to_info())
        log.info("node=%s %s reason=%r", node_id, action, node.drain_reason)
