"""The node registry's records: what each agent told us, and what we allocated on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mgpu_server.scheduling.planner import NodeView

# The down reason of a connected node whose heartbeats stopped.
NOT_RESPONDING = "not responding"


class NodeState(StrEnum):
    """sinfo's words for a node's condition."""

    IDLE = "idle"
    MIXED = "mixed"
    ALLOCATED = "allocated"
    DOWN = "down"
    DRAIN = "drain"  # drained and empty
    DRAINING = "draining"  # drained, its jobs still running


@dataclass(slots=True)
class GpuRecord:
    index: int
    uuid: str
    name: str
    memory_total_bytes: int
    visible_id: str
    fake: bool
    healthy: bool = True
    error: str = ""
    utilization_pct: int = -1
    memory_used_bytes: int = -1
    processes: list[dict[str, Any]] = field(default_factory=list)
    job_id: int | None = None  # the job this GPU is allocated to

    def to_wire(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "memory_total_bytes": self.memory_total_bytes,
            "visible_id": self.visible_id,
            "fake": self.fake,
            "healthy": self.healthy,
            "error": self.error,
            "utilization_pct": self.utilization_pct,
            "memory_used_bytes": self.memory_used_bytes,
            "processes": self.processes,
            "job_id": self.job_id,
        }


@dataclass(slots=True)
class NodeRecord:
    """One node agent. ``connected`` is the link; ``up`` also needs a recent heartbeat."""

    node_id: str
    hostname: str
    address: str
    cpus: int
    mem_bytes: int
    gpus: list[GpuRecord]
    gpu_backend: str = ""
    agent_version: str = ""
    connected: bool = True
    last_seen_s: float = 0.0
    down_reason: str = ""
    drain_reason: str = ""  # set by an admin: running jobs finish, no new ones start
    cpus_alloc: int = 0
    mem_alloc_bytes: int = 0
    jobs: set[int] = field(default_factory=set)

    @classmethod
    def from_info(cls, info: dict[str, Any], now: float) -> NodeRecord:
        """A record from a node's registration (its hello, or what the store kept of it)."""
        gpus = [
            GpuRecord(
                g["index"],
                g["uuid"],
                g["name"],
                g["memory_total_bytes"],
                g["visible_id"],
                g["fake"],
            )
            for g in sorted(info["gpus"], key=lambda g: g["index"])
        ]
        return cls(
            node_id=info["node_id"],
            hostname=info["hostname"] or info["node_id"],
            address=info["address"],
            cpus=info["cpus"],
            mem_bytes=info["mem_bytes"],
            gpus=gpus,
            gpu_backend=info["gpu_backend"],
            agent_version=info["agent_version"],
            last_seen_s=now,
            drain_reason=info.get("drain_reason", ""),
        )

    def to_info(self) -> dict[str, Any]:
        """What the store keeps of this node: its registration plus the admin's drain."""
        return {
            "node_id": self.node_id,
            "hostname": self.hostname,
            "address": self.address,
            "cpus": self.cpus,
            "mem_bytes": self.mem_bytes,
            "gpus": [
                {
                    "index": g.index,
                    "uuid": g.uuid,
                    "name": g.name,
                    "memory_total_bytes": g.memory_total_bytes,
                    "visible_id": g.visible_id,
                    "fake": g.fake,
                }
                for g in self.gpus
            ],
            "gpu_backend": self.gpu_backend,
            "agent_version": self.agent_version,
            "drain_reason": self.drain_reason,
        }

    @property
    def up(self) -> bool:
        return self.connected and not self.down_reason

    def allocate(
        self, job_id: int, gpu_indices: tuple[int, ...], cpus: int, mem_bytes: int
    ) -> None:
        for idx in gpu_indices:
            gpu = self.gpus[idx]
            if gpu.job_id is not None:
                # The scheduler only offers free GPUs; reaching this is a bug, never a race.
                raise RuntimeError(f"GPU {idx} on {self.node_id} already held by {gpu.job_id}")
            gpu.job_id = job_id
        self.cpus_alloc += cpus
        self.mem_alloc_bytes += mem_bytes
        self.jobs.add(job_id)

    def release(self, job_id: int, cpus: int, mem_bytes: int) -> None:
        if job_id not in self.jobs:
            return
        for gpu in self.gpus:
            if gpu.job_id == job_id:
                gpu.job_id = None
        self.cpus_alloc -= cpus
        self.mem_alloc_bytes -= mem_bytes
        self.jobs.discard(job_id)

    def view(self) -> NodeView:
        healthy = [g for g in self.gpus if g.healthy]
        return NodeView(
            node_id=self.node_id,
            up=self.up and not self.drain_reason,
            free_gpus=[g.index for g in healthy if g.job_id is None],
            healthy_gpus=len(healthy),
            free_cpus=self.cpus - self.cpus_alloc,
            total_cpus=self.cpus,
            free_mem_bytes=self.mem_bytes - self.mem_alloc_bytes,
            total_mem_bytes=self.mem_bytes,
        )

    def display_state(self) -> NodeState:
        if not self.up:
            return NodeState.DOWN
        if self.drain_reason:
            return NodeState.DRAINING if self.jobs else NodeState.DRAIN
        if not self.jobs:
            return NodeState.IDLE
        busy_gpus = sum(1 for g in self.gpus if g.job_id is not None)
        if (self.gpus and busy_gpus == len(self.gpus)) or self.cpus_alloc >= self.cpus:
            return NodeState.ALLOCATED
        return NodeState.MIXED

    def to_wire(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "hostname": self.hostname,
            "address": self.address,
            "state": self.display_state().value,
            "down_reason": self.down_reason or ("" if self.connected else "not connected"),
            "drain_reason": self.drain_reason,
            "cpus": self.cpus,
            "cpus_alloc": self.cpus_alloc,
            "mem_bytes": self.mem_bytes,
            "mem_alloc_bytes": self.mem_alloc_bytes,
            "gpu_backend": self.gpu_backend,
            "agent_version": self.agent_version,
            "gpus": [g.to_wire() for g in self.gpus],
            "jobs": sorted(self.jobs),
        }
