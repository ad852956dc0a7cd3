"""What the planner (:mod:`mgpu_server.scheduling.planner`) is given and gives back, and the
arithmetic of one job on one node: whether it fits now or ever, and when it could start as
running jobs end. Pure: no I/O, no clock of its own.

A job may be constrained beyond its size: a GPU type (all its GPUs of that model, on one
node; a MIG profile is a type, and a job without a type gets whole GPUs only, never MIG
slices), ``--exclusive`` (it starts only on a node where nothing runs, and nothing starts
beside it while it runs: :attr:`NodeView.exclusive_end`), an image (``--container-image``:
only a node with a container runtime can ever hold it), the nodes it may use (its partitions' and
its node list, minus its excluded nodes; the planner filters those). On a node whose GPUs are
of several types, a typed job's start time counts every GPU a running job frees towards its
type (capped at the node's GPUs of that type): an estimate, exact on nodes of one type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mgpu_core.reasons import Reason

INF = math.inf

# Where a job may run: a partition's name and its nodes (None: every node).
Choice = tuple[str, frozenset[str] | None]


@dataclass(slots=True, frozen=True)
class Release:
    """Resources a running job frees at ``end_s`` (INF when it has no time limit)."""

    end_s: float
    gpus: int
    cpus: int
    mem_bytes: int


@dataclass(slots=True)
class NodeView:
    node_id: str
    up: bool
    free_gpus: list[int]
    healthy_gpus: int
    free_cpus: int
    total_cpus: int
    free_mem_bytes: int
    total_mem_bytes: int
    releases: list[Release] = field(default_factory=list)
    # Each GPU's type, by index ("": unknown), and the healthy GPUs of each type.
    gpu_models: tuple[str, ...] = ()
    healthy_models: dict[str, int] = field(default_factory=dict)
    # TCP ports of its --port-range no job holds, and the range's size.
    free_ports: int = 0
    total_ports: int = 0
    # The MIG slices' indices, and how many are healthy: not for jobs without a GPU type.
    slices: frozenset[int] = frozenset()
    healthy_slices: int = 0
    # An --exclusive job runs here until then (INF: no limit): nothing else starts here.
    exclusive_end: float | None = None
    # It has a container runtime: jobs with --container-image may run here.
    containers: bool = False


@dataclass(slots=True, frozen=True)
class PendingJob:
    job_id: int
    gpus: int
    cpus: int
    mem_bytes: int
    nodelist: frozenset[str] = frozenset()
    user: str = ""
    time_limit_s: int = 0  # 0 = none (never ends, for planning)
    max_user_gpus: int = 0  # QoS limits; 0 = none
    max_user_jobs: int = 0
    gpu_type: str = ""  # "": GPUs of any type
    ports: int = 0  # --ports: TCP ports of its node's range
    exclusive: bool = False
    exclude: frozenset[str] = frozenset()
    container: bool = False  # --container-image: only on a node with a container runtime
    # The partitions it may run in now, in the user's order; (): anywhere, no partition.
    partitions: tuple[Choice, ...] = ()


@dataclass(slots=True, frozen=True)
class Start:
    job_id: int
    node_id: str
    gpu_indices: tuple[int, ...]
    partition: str = ""


@dataclass(slots=True, frozen=True)
class Reservation:
    job_id: int
    node_id: str
    start_s: float
    gpus: int
    cpus: int
    mem_bytes: int
    partition: str = ""
    exclusive: bool = False  # the node is held whole from start_s
    gpu_type: str = ""  # its GPUs are of this type ("": any)


@dataclass(slots=True)
class UserLoad:
    gpus: int = 0
    jobs: int = 0


@dataclass(slots=True)
class Plan:
    starts: list[Start] = field(default_factory=list)
    reasons: dict[int, Reason] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)


def usable_gpus(job: PendingJob, node: NodeView) -> list[int]:
    """The node's free GPUs the job may have (those of its type, if it names one; whole
    GPUs, not MIG slices, if it names none)."""
    return _free_of_type(node, job.gpu_type if job.gpus else "")


def _free_of_type(node: NodeView, gpu_type: str) -> list[int]:
    if not gpu_type:
        if not node.slices:
            return node.free_gpus
        return [i for i in node.free_gpus if i not in node.slices]
    models = node.gpu_models
    return [i for i in node.free_gpus if i < len(models) and models[i] == gpu_type]


def healthy_gpus(job: PendingJob, node: NodeView) -> int:
    """The node's healthy GPUs the job could ever have."""
    if not job.gpu_type or not job.gpus:
        return node.healthy_gpus - node.healthy_slices
    return node.healthy_models.get(job.gpu_type, 0)


def fits_now(job: PendingJob, node: NodeView) -> bool:
    if node.exclusive_end is not None or (job.exclusive and node.releases):
        return False
    return (
        len(usable_gpus(job, node)) >= job.gpus
        and node.free_cpus >= job.cpus
        and node.free_mem_bytes >= job.mem_bytes
        and node.free_ports >= job.ports
    )


def fits_ever(job: PendingJob, node: NodeView) -> bool:
    return (
        healthy_gpus(job, node) >= job.gpus
        and node.total_cpus >= job.cpus
        and node.total_mem_bytes >= job.mem_bytes
        and node.total_ports >= job.ports
        and (node.containers or not job.container)
    )


def released_by(node: NodeView, t: float) -> tuple[int, int, int]:
    gpus = cpus = mem = 0
    for r in node.releases:
        if r.end_s <= t:
            gpus, cpus, mem = gpus + r.gpus, cpus + r.cpus, mem + r.mem_bytes
    return gpus, cpus, mem


def end_of(release: Release) -> float:
    return release.end_s


def earliest_start(job: PendingJob, node: NodeView, now: float) -> float:
    """When ``job`` could start on ``node`` as running jobs end (INF if never known)."""
    return earliest_at(job, node, sorted(node.releases, key=end_of), now)


def earliest_at(job: PendingJob, node: NodeView, by_end: list[Release], now: float) -> float:
    """:func:`earliest_start` with the node's releases already in end order."""
    if node.exclusive_end is not None:
        return node.exclusive_end  # the one job there: then the node is free
    if job.exclusive:
        return by_end[-1].end_s if by_end else now  # once the last job there has ended
    gpus, cpus, mem = len(usable_gpus(job, node)), node.free_cpus, node.free_mem_bytes
    if gpus >= job.gpus and cpus >= job.cpus and mem >= job.mem_bytes:
        return now
    cap = healthy_gpus(job, node)
    for r in by_end:
        gpus, cpus, mem = min(cap, gpus + r.gpus), cpus + r.cpus, mem + r.mem_bytes
        if gpus >= job.gpus and cpus >= job.cpus and mem >= job.mem_bytes:
            return r.end_s
    return INF


def compatible(job: PendingJob, node: NodeView, res: Reservation | None, now: float) -> bool:
    """Starting ``job`` now on ``node`` does not delay the node's reservation."""
    if res is None:
        return True
    end = now + job.time_limit_s if job.time_limit_s else INF
    if end <= res.start_s < INF:
        return True  # gone before the reserved start: classic backfill
    if job.exclusive or res.exclusive:
        return False  # either holds the whole node
    # Unknown start: protect what is free now; else count what will have ended by then.
    rel = (0, 0, 0) if res.start_s == INF else released_by(node, res.start_s)
    return (
        _gpus_left(job, node, res.gpu_type) + rel[0] >= res.gpus
        and node.free_cpus - job.cpus + rel[1] >= res.cpus
        and node.free_mem_bytes - job.mem_bytes + rel[2] >= res.mem_bytes
    )


def _gpus_left(job: PendingJob, node: NodeView, gpu_type: str) -> int:
    """The node's free GPUs (of ``gpu_type``; whole ones if "") once ``job`` took its own."""
    if not gpu_type and not node.slices:
        return len(node.free_gpus) - job.gpus
    taken = set(usable_gpus(job, node)[: job.gpus])
    return sum(1 for i in _free_of_type(node, gpu_type) if i not in taken)


def fit_key(node: NodeView) -> tuple[int, int, str]:
    """Best fit: the node with the fewest free GPUs, then CPUs, that can hold the job."""
    return (len(node.free_gpus), node.free_cpus, node.node_id)
