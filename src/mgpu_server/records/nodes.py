"""The node registry's records: what each agent told us, and what we allocated on it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from mgpu_core.gputypes import normalise
from mgpu_core.models import GpuDevice, GpuSample, NodeHello
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


@dataclass(frozen=True, slots=True)
class NodeCounts:
    """One node's share of ``info``'s totals: its state; its GPUs; and, while it is up, its
    healthy and allocated GPUs and its CPUs."""

    state: NodeState
    gpus: int
    gpus_up: int
    gpus_alloc: int
    cpus_up: int
    cpus_alloc: int


@dataclass(slots=True)
class GpuRecord:
    """One GPU of a node: what the agent registered, its last heartbeat's sample (healthy and
    nothing measured until the first), and the job it is allocated to."""

    device: GpuDevice
    job_id: int | None = None  # the job this GPU is allocated to
    sample: GpuSample = field(init=False)

    def __post_init__(self) -> None:
        self.sample = GpuSample(index=self.device.index)

    @property
    def index(self) -> int:
        return self.device.index

    @property
    def healthy(self) -> bool:
        return self.sample.healthy

    def to_wire(self) -> dict[str, Any]:
        """The device's fields, then the sample's (but its index), then ``job_id``."""
        measured = self.sample.to_wire()
        del measured["index"]  # the device's
        return {**self.device.to_wire(), **measured, "job_id": self.job_id}


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
    isolation: str = ""  # what isolates its jobs beyond CUDA_VISIBLE_DEVICES ("": not told)
    agent_version: str = ""
    connected: bool = True
    last_seen_s: float = 0.0
    down_reason: str = ""
    drain_reason: str = ""  # set by an admin: running jobs finish, no new ones start
    cpus_alloc: int = 0
    mem_alloc_bytes: int = 0
    jobs: set[int] = field(default_factory=set)
    launch_seq: int = 0  # launches sent on the current link (a new record per registration)
    # --port-range: the ports its jobs may be given (LO, HI, inclusive; () = none), and which
    # job holds each port given out.
    port_range: tuple[int, ...] = ()
    # The container runtimes it found, preferred first ((): none; jobs with an image wait).
    runtimes: tuple[str, ...] = ()
    ports_held: dict[int, int] = field(default_factory=dict)
    # Each GPU's type (--gres=gpu:TYPE), by index, and how many of each: fixed per record.
    models: tuple[str, ...] = field(init=False)
    model_counts: dict[str, int] = field(init=False)
    # The MIG slices' indices: a job asking for GPUs without a type never gets one.
    slices: frozenset[int] = field(init=False)

    def __post_init__(self) -> None:
        self.models = tuple(g.device.model for g in self.gpus)
        self.model_counts = dict(Counter(self.models))
        self.slices = frozenset(g.index for g in self.gpus if g.device.is_slice)

    @property
    def whole_gpus(self) -> int:
        """Its whole GPUs (not MIG slices): what a job asking for GPUs without a type may have."""
        return len(self.gpus) - len(self.slices)

    @classmethod
    def from_hello(cls, hello: NodeHello, now: float, *, drain_reason: str = "") -> NodeRecord:
        """A record from a node's registration (its hello, or what the store kept of it)."""
        return cls(
            node_id=hello.node_id,
            hostname=hello.hostname or hello.node_id,
            address=hello.address,
            cpus=hello.cpus,
            mem_bytes=hello.mem_bytes,
            gpus=[GpuRecord(_typed(d)) for d in sorted(hello.gpus, key=lambda d: d.index)],
            gpu_backend=hello.gpu_backend,
            isolation=hello.isolation,
            agent_version=hello.agent_version,
            last_seen_s=now,
            drain_reason=drain_reason,
            port_range=tuple(hello.port_range),
            runtimes=tuple(hello.runtimes),
        )

    @classmethod
    def from_info(cls, info: dict[str, Any], now: float) -> NodeRecord:
        """A record from what the store kept (:meth:`to_info`)."""
        hello = NodeHello.from_checked(info)
        return cls.from_hello(hello, now, drain_reason=str(info.get("drain_reason", "")))

    def to_info(self) -> dict[str, Any]:
        """What the store keeps of this node: its registration plus the admin's drain."""
        hello = NodeHello(
            node_id=self.node_id,
            hostname=self.hostname,
            address=self.address,
            cpus=self.cpus,
            mem_bytes=self.mem_bytes,
            gpus=[g.device for g in self.gpus],
            gpu_backend=self.gpu_backend,
            isolation=self.isolation,
            agent_version=self.agent_version,
            port_range=list(self.port_range),
            runtimes=list(self.runtimes),
        )
        return {**hello.to_wire(), "drain_reason": self.drain_reason}

    @property
    def up(self) -> bool:
        return self.connected and not self.down_reason

    @property
    def total_ports(self) -> int:
        return self.port_range[1] - self.port_range[0] + 1 if self.port_range else 0

    def free_ports(self, count: int) -> tuple[int, ...]:
        """The ``count`` lowest ports of the range no job holds (fewer if there are not)."""
        if not count or not self.port_range:
            return ()
        found: list[int] = []
        for port in range(self.port_range[0], self.port_range[1] + 1):
            if port not in self.ports_held:
                found.append(port)
                if len(found) == count:
                    break
        return tuple(found)

    def allocate(
        self,
        job_id: int,
        gpu_indices: tuple[int, ...],
        cpus: int,
        mem_bytes: int,
        ports: tuple[int, ...] = (),
    ) -> None:
        for port in ports:
            holder = self.ports_held.get(port)
            if holder is not None and holder != job_id:
                raise RuntimeError(f"port {port} on {self.node_id} already held by {holder}")
        for idx in gpu_indices:
            gpu = self.gpus[idx]
            if gpu.job_id is not None:
                # The scheduler only offers free GPUs; reaching this is a bug, never a race.
                raise RuntimeError(f"GPU {idx} on {self.node_id} already held by {gpu.job_id}")
            gpu.job_id = job_id
        self.cpus_alloc += cpus
        self.mem_alloc_bytes += mem_bytes
        self.jobs.add(job_id)
        for port in ports:  # a restored job's may lie outside a range edited since: kept
            self.ports_held[port] = job_id

    def release(self, job_id: int, cpus: int, mem_bytes: int) -> None:
        if job_id not in self.jobs:
            return
        for gpu in self.gpus:
            if gpu.job_id == job_id:
                gpu.job_id = None
        if self.ports_held:
            self.ports_held = {p: j for p, j in self.ports_held.items() if j != job_id}
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
            gpu_models=self.models,
            free_ports=self.total_ports - len(self.ports_held) if self.port_range else 0,
            containers=bool(self.runtimes),
            total_ports=self.total_ports,
            slices=self.slices,
            healthy_slices=sum(1 for g in healthy if g.index in self.slices) if self.slices else 0,
            healthy_models=(
                self.model_counts
                if len(healthy) == len(self.gpus)
                else dict(Counter(g.device.model for g in healthy))
            ),
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

    def counts(self) -> NodeCounts:
        """What this node adds to the cluster's totals (the registry keeps their sum)."""
        if not self.up:
            return NodeCounts(self.display_state(), len(self.gpus), 0, 0, 0, 0)
        return NodeCounts(
            self.display_state(),
            len(self.gpus),
            sum(1 for g in self.gpus if g.healthy),
            sum(1 for g in self.gpus if g.job_id is not None),
            self.cpus,
            self.cpus_alloc,
        )

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
            "isolation": self.isolation,
            "agent_version": self.agent_version,
            "port_range": list(self.port_range),
            "runtimes": list(self.runtimes),
            "ports_held": len(self.ports_held),
            "gpus": [g.to_wire() for g in self.gpus],
            "jobs": sorted(self.jobs),
        }


def _typed(device: GpuDevice) -> GpuDevice:
    """The device with its type: an agent older than the field sends none, and the master
    derives it from the name as current agents do."""
    return device if device.model else replace(device, model=normalise(device.name))
