"""The node registry's records: what each agent told us, and what we allocated on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mgpu_server.scheduler import NodeView


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
    cpus_alloc: int = 0
    mem_alloc_bytes: int = 0
    jobs: set[int] = field(default_factory=set)

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
            up=self.up,
            free_gpus=[g.index for g in healthy if g.job_id is None],
            healthy_gpus=len(healthy),
            free_cpus=self.cpus - self.cpus_alloc,
            total_cpus=self.cpus,
            free_mem_bytes=self.mem_bytes - self.mem_alloc_bytes,
            total_mem_bytes=self.mem_bytes,
        )

    def display_state(self) -> str:
        """sinfo's words: idle, mixed, allocated, down."""
        if not self.up:
            return "down"
        if not self.jobs:
            return "idle"
        busy_gpus = sum(1 for g in self.gpus if g.job_id is not None)
        if (self.gpus and busy_gpus == len(self.gpus)) or self.cpus_alloc >= self.cpus:
            return "allocated"
        return "mixed"

    def to_wire(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "hostname": self.hostname,
            "address": self.address,
            "state": self.display_state(),
            "down_reason": self.down_reason or ("" if self.connected else "not connected"),
            "cpus": self.cpus,
            "cpus_alloc": self.cpus_alloc,
            "mem_bytes": self.mem_bytes,
            "mem_alloc_bytes": self.mem_alloc_bytes,
            "gpu_backend": self.gpu_backend,
            "agent_version": self.agent_version,
            "gpus": [g.to_wire() for g in self.gpus],
            "jobs": sorted(self.jobs),
        }
