"""The scheduler: pure code. Given the eligible pending jobs in priority order and the nodes'
free resources, return which jobs start where, which reservations hold, and why the others
wait. No I/O, no clock of its own, no asyncio: property-tested in tests/server.

Policy: priority order with backfill (Slurm's main + backfill scheduler, in one pass).

- A job that fits on some node now starts there (best fit: the node with the fewest free GPUs
  that fits, lowest GPU indices first) unless that would delay a higher-priority reservation.
- A job that fits some node's capacity but not its free resources gets a *reservation* on the
  node where it could start earliest, computed from the running jobs' time limits. A lower-
  priority job may then use that node only if it ends before the reserved start (by its own
  time limit) or leaves enough for the reservation at that time: backfill never delays the
  reserved start. Where running jobs have no time limit the reserved start is unknown
  (infinite); that node is then strictly first-come for the blocked job.
- QoS limits per user (GPUs, running jobs) hold a job back without reserving anything.
- A job no up node could ever hold reserves nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

# Slurm's words for why a job pends: scripts and people already know them.
REASON_RESOURCES = "Resources"
REASON_PRIORITY = "Priority"
REASON_NODE_NOT_AVAIL = "ReqNodeNotAvail"
REASON_QOS_GPUS = "QOSMaxGpuPerUserLimit"
REASON_QOS_JOBS = "QOSMaxJobsPerUserLimit"

INF = math.inf
# Blocked jobs that get a reservation in one pass (Slurm's bf_max_job_test, in spirit).
MAX_RESERVATIONS = 64


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


@dataclass(slots=True, frozen=True)
class Start:
    job_id: int
    node_id: str
    gpu_indices: tuple[int, ...]


@dataclass(slots=True, frozen=True)
class Reservation:
    job_id: int
    node_id: str
    start_s: float
    gpus: int
    cpus: int
    mem_bytes: int


@dataclass(slots=True)
class UserLoad:
    gpus: int = 0
    jobs: int = 0


@dataclass(slots=True)
class Plan:
    starts: list[Start] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)


def fits_now(job: PendingJob, node: NodeView) -> bool:
    return (
        len(node.free_gpus) >= job.gpus
        and node.free_cpus >= job.cpus
        and node.free_mem_bytes >= job.mem_bytes
    )


def fits_ever(job: PendingJob, node: NodeView) -> bool:
    return (
        node.healthy_gpus >= job.gpus
        and node.total_cpus >= job.cpus
        and node.total_mem_bytes >= job.mem_bytes
    )


def _released_by(node: NodeView, t: float) -> tuple[int, int, int]:
    gpus = cpus = mem = 0
    for r in node.releases:
        if r.end_s <= t:
            gpus, cpus, mem = gpus + r.gpus, cpus + r.cpus, mem + r.mem_bytes
    return gpus, cpus, mem


def earliest_start(job: PendingJob, node: NodeView, now: float) -> float:
    """When ``job`` could start on ``node`` as running jobs end (INF if never known)."""
    need = (job.gpus, job.cpus, job.mem_bytes)
    have = [len(node.free_gpus), node.free_cpus, node.free_mem_bytes]
    if all(h >= n for h, n in zip(have, need, strict=True)):
        return now
    for r in sorted(node.releases, key=lambda r: r.end_s):
        have = [have[0] + r.gpus, have[1] + r.cpus, have[2] + r.mem_bytes]
        if all(h >= n for h, n in zip(have, need, strict=True)):
            return r.end_s
    return INF


def _compatible(job: PendingJob, node: NodeView, res: Reservation | None, now: float) -> bool:
    """Starting ``job`` now on ``node`` does not delay the node's reservation."""
    if res is None:
        return True
    end = now + job.time_limit_s if job.time_limit_s else INF
    if end <= res.start_s < INF:
        return True  # gone before the reserved start: classic backfill
    # Unknown start: protect what is free now; else count what will have ended by then.
    rel = (0, 0, 0) if res.start_s == INF else _released_by(node, res.start_s)
    return (
        len(node.free_gpus) - job.gpus + rel[0] >= res.gpus
        and node.free_cpus - job.cpus + rel[1] >= res.cpus
        and node.free_mem_bytes - job.mem_bytes + rel[2] >= res.mem_bytes
    )


def _over_limit(job: PendingJob, load: UserLoad) -> str:
    if job.max_user_gpus and load.gpus + job.gpus > job.max_user_gpus:
        return REASON_QOS_GPUS
    if job.max_user_jobs and load.jobs + 1 > job.max_user_jobs:
        return REASON_QOS_JOBS
    return ""


def _copy(n: NodeView) -> NodeView:
    return NodeView(
        n.node_id,
        n.up,
        sorted(n.free_gpus),
        n.healthy_gpus,
        n.free_cpus,
        n.total_cpus,
        n.free_mem_bytes,
        n.total_mem_bytes,
        list(n.releases),
    )


def plan(
    pending: Sequence[PendingJob],
    nodes: Sequence[NodeView],
    *,
    now: float = 0.0,
    loads: dict[str, UserLoad] | None = None,
    reserve: bool = True,
) -> Plan:
    """One scheduling pass. ``pending`` must already be in priority order and hold only
    eligible jobs (dependencies met, not held). ``nodes`` and ``loads`` are not modified.
    With ``reserve=False`` (the GPU turn queue) a job that does not fit now is passed over
    without holding anything back for it."""
    result = Plan()
    free = {n.node_id: _copy(n) for n in nodes if n.up}
    users = {u: UserLoad(v.gpus, v.jobs) for u, v in (loads or {}).items()}
    for job in pending:
        load = users.setdefault(job.user, UserLoad())
        limited = _over_limit(job, load)
        if limited:
            result.reasons[job.job_id] = limited
            continue
        candidates = [n for n in free.values() if not job.nodelist or n.node_id in job.nodelist]
        if not candidates:
            result.reasons[job.job_id] = REASON_NODE_NOT_AVAIL
            continue
        eligible = [n for n in candidates if fits_ever(job, n)]
        reservations = result.reservations
        now_ok = [n for n in eligible if fits_now(job, n)]
        open_now = [n for n in now_ok if _compatible(job, n, reservations.get(n.node_id), now)]
        if open_now:
            node = min(open_now, key=lambda n: (len(n.free_gpus), n.free_cpus, n.node_id))
            _take(job, node, now, result)
            load.gpus += job.gpus
            load.jobs += 1
            continue
        result.reasons[job.job_id] = REASON_PRIORITY if now_ok else REASON_RESOURCES
        if reserve:
            _reserve(job, eligible, now, result)
    return result


def _take(job: PendingJob, node: NodeView, now: float, result: Plan) -> None:
    gpus = tuple(node.free_gpus[: job.gpus])
    del node.free_gpus[: job.gpus]
    node.free_cpus -= job.cpus
    node.free_mem_bytes -= job.mem_bytes
    end = now + job.time_limit_s if job.time_limit_s else INF
    node.releases.append(Release(end, job.gpus, job.cpus, job.mem_bytes))
    result.starts.append(Start(job.job_id, node.node_id, gpus))


def _reserve(job: PendingJob, eligible: list[NodeView], now: float, result: Plan) -> None:
    if len(result.reservations) >= MAX_RESERVATIONS:
        return
    open_nodes = [n for n in eligible if n.node_id not in result.reservations]
    if not open_nodes:
        return
    node = min(open_nodes, key=lambda n: (earliest_start(job, n, now), n.node_id))
    start = earliest_start(job, node, now)
    result.reservations[node.node_id] = Reservation(
        job.job_id, node.node_id, start, job.gpus, job.cpus, job.mem_bytes
    )
