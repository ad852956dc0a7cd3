"""The scheduler: pure code. Given the pending queue (in priority order) and the nodes' free
resources, return which jobs start where, and why the others wait. No I/O, no clock, no
asyncio: a pass over thousands of jobs is plain Python and unit-testable in microseconds.

Policy (today): strict priority order with per-node reservations. A pending job that could
run on some nodes once they drain, but cannot start now, reserves those nodes: lower-priority
jobs may not start on them, so a big job is not starved by a stream of small ones (Slurm's
behaviour without backfill). A job that no up node could ever hold does not reserve anything.
Among nodes that fit, the one with the fewest free GPUs wins (best fit keeps whole nodes free
for large jobs); GPUs are given lowest index first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

# Slurm's words for why a job pends: scripts and people already know them.
REASON_RESOURCES = "Resources"
REASON_PRIORITY = "Priority"
REASON_NODE_NOT_AVAIL = "ReqNodeNotAvail"


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


@dataclass(slots=True, frozen=True)
class PendingJob:
    job_id: int
    gpus: int
    cpus: int
    mem_bytes: int
    nodelist: frozenset[str] = frozenset()


@dataclass(slots=True, frozen=True)
class Start:
    job_id: int
    node_id: str
    gpu_indices: tuple[int, ...]


@dataclass(slots=True)
class Plan:
    starts: list[Start] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)


def _fits_now(job: PendingJob, node: NodeView) -> bool:
    return (
        len(node.free_gpus) >= job.gpus
        and node.free_cpus >= job.cpus
        and node.free_mem_bytes >= job.mem_bytes
    )


def _fits_ever(job: PendingJob, node: NodeView) -> bool:
    return (
        node.healthy_gpus >= job.gpus
        and node.total_cpus >= job.cpus
        and node.total_mem_bytes >= job.mem_bytes
    )


def plan(pending: Sequence[PendingJob], nodes: Sequence[NodeView]) -> Plan:
    """One scheduling pass. ``pending`` must already be in priority order.

    ``nodes`` is not modified: the pass works on copies of the free lists.
    """
    result = Plan()
    free = {
        n.node_id: NodeView(
            n.node_id,
            n.up,
            sorted(n.free_gpus),
            n.healthy_gpus,
            n.free_cpus,
            n.total_cpus,
            n.free_mem_bytes,
            n.total_mem_bytes,
        )
        for n in nodes
        if n.up
    }
    reserved: set[str] = set()
    for job in pending:
        if not free:
            result.reasons[job.job_id] = REASON_RESOURCES
            continue
        candidates = [n for n in free.values() if not job.nodelist or n.node_id in job.nodelist]
        if not candidates:
            result.reasons[job.job_id] = REASON_NODE_NOT_AVAIL
            continue
        eligible = [n for n in candidates if _fits_ever(job, n)]
        open_now = [n for n in eligible if n.node_id not in reserved and _fits_now(job, n)]
        if open_now:
            node = min(open_now, key=lambda n: (len(n.free_gpus), n.free_cpus, n.node_id))
            gpus = tuple(node.free_gpus[: job.gpus])
            del node.free_gpus[: job.gpus]
            node.free_cpus -= job.cpus
            node.free_mem_bytes -= job.mem_bytes
            result.starts.append(Start(job.job_id, node.node_id, gpus))
            continue
        blocked_by_priority = any(n.node_id in reserved and _fits_now(job, n) for n in eligible)
        result.reasons[job.job_id] = REASON_PRIORITY if blocked_by_priority else REASON_RESOURCES
        reserved.update(n.node_id for n in eligible)
    return result
