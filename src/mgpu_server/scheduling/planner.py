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
from bisect import bisect_left, insort
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from mgpu_core.reasons import Reason

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
    reasons: dict[int, Reason] = field(default_factory=dict)
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
    return _earliest(job, node, sorted(node.releases, key=_end), now)


def _end(release: Release) -> float:
    return release.end_s


def _earliest(job: PendingJob, node: NodeView, by_end: list[Release], now: float) -> float:
    """:func:`earliest_start` with the node's releases already in end order."""
    gpus, cpus, mem = len(node.free_gpus), node.free_cpus, node.free_mem_bytes
    if gpus >= job.gpus and cpus >= job.cpus and mem >= job.mem_bytes:
        return now
    for r in by_end:
        gpus, cpus, mem = gpus + r.gpus, cpus + r.cpus, mem + r.mem_bytes
        if gpus >= job.gpus and cpus >= job.cpus and mem >= job.mem_bytes:
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


def _over_limit(job: PendingJob, load: UserLoad) -> Reason | None:
    if job.max_user_gpus and load.gpus + job.gpus > job.max_user_gpus:
        return Reason.QOS_GPUS
    if job.max_user_jobs and load.jobs + 1 > job.max_user_jobs:
        return Reason.QOS_JOBS
    return None


def _copy(n: NodeView) -> NodeView:
    return replace(n, free_gpus=sorted(n.free_gpus), releases=list(n.releases))


class Planner:
    """One scheduling pass, one job at a time (in priority order, eligible jobs only), so
    that the caller can stop walking its queue as soon as nothing more can start
    (:meth:`could_start`) or after a bounded number of jobs, without building views of the
    jobs it never reaches. ``nodes`` and ``loads`` are not modified; with ``reserve=False``
    (the GPU turn queue) a job that does not fit now is passed over without holding anything
    back for it. Its cost grows with the jobs considered, not
    with jobs times nodes:

    - Unreserved up nodes are kept in best-fit order (free GPUs, free CPUs, name): a job's best
      unreserved node is the first with enough GPUs that fits, found by bisection.
    - Reserved nodes (at most MAX_RESERVATIONS) are compared apart; what they offer a job of a
      given shape is remembered until a reservation or a start on one of them changes it.
    - A reservation scans nodes in order of the time they will have enough free GPUs (a lower
      bound of a job's earliest start there) and stops once no node further on can beat the
      best found.
    """

    def __init__(
        self,
        nodes: Sequence[NodeView],
        *,
        now: float = 0.0,
        loads: dict[str, UserLoad] | None = None,
        reserve: bool = True,
    ) -> None:
        self.now = now
        self.reserve = reserve
        self.result = Plan()
        # The caller's views, each copied before its first change (most never change).
        self._free = {n.node_id: n for n in nodes if n.up}
        self._copied: set[str] = set()
        self._users = {u: UserLoad(v.gpus, v.jobs) for u, v in (loads or {}).items()}
        self._order = sorted(_fit_key(n) for n in self._free.values())  # unreserved nodes
        self._open: dict[tuple[int, int, int], bool] = {}  # could_start, until the next start
        self._by_end: dict[str, list[Release]] = {}  # each node's releases in end order
        self._gpu_times: dict[int, list[tuple[float, str]]] = {}  # until the next start
        # Per job shape: what the reserved nodes offer (best node, any fits), and when.
        self._offers: dict[tuple[int, int, int, float], tuple[int, NodeView | None, bool]] = {}
        self._reserved_changes = 0

    def could_start(self, gpus: int, cpus: int, mem_bytes: int) -> bool:
        """Whether some up node has this much free now (reservations aside): if not, no job
        asking at least this much can start in the rest of the pass."""
        need = (gpus, cpus, mem_bytes)
        known = self._open.get(need)
        if known is None:
            probe = PendingJob(0, gpus, cpus, mem_bytes)
            known = any(
                self._free[node_id].free_mem_bytes >= mem_bytes
                for _, free_cpus, node_id in self._order[bisect_left(self._order, (gpus,)) :]
                if free_cpus >= cpus
            ) or any(fits_now(probe, self._free[n]) for n in self.result.reservations)
            self._open[need] = known
        return known

    def consider(self, job: PendingJob) -> None:
        """Start ``job`` now, or record why it waits (and reserve for it)."""
        result = self.result
        load = self._users.setdefault(job.user, UserLoad())
        limited = _over_limit(job, load)
        if limited:
            result.reasons[job.job_id] = limited
            return
        candidates: list[NodeView] | None = None
        if job.nodelist:
            candidates = [self._free[n] for n in job.nodelist if n in self._free]
            if not candidates:
                result.reasons[job.job_id] = Reason.NODE_NOT_AVAIL
                return
            node, fits = _best_open(job, candidates, self.result.reservations, self.now)
        else:
            if not self._free:
                result.reasons[job.job_id] = Reason.NODE_NOT_AVAIL
                return
            node, fits = self._best_anywhere(job)
        if node is not None:
            self._take(job, node)
            load.gpus += job.gpus
            load.jobs += 1
            return
        result.reasons[job.job_id] = Reason.PRIORITY if fits else Reason.RESOURCES
        if self.reserve and len(result.reservations) < MAX_RESERVATIONS:
            best = self._earliest_of(job, candidates)
            if best is not None:
                start, node_id = best
                result.reservations[node_id] = Reservation(
                    job.job_id, node_id, start, job.gpus, job.cpus, job.mem_bytes
                )
                del self._order[bisect_left(self._order, _fit_key(self._free[node_id]))]
                self._reserved_changes += 1

    def _best_anywhere(self, job: PendingJob) -> tuple[NodeView | None, bool]:
        """:func:`_best_open` over every up node."""
        unreserved = None
        order = self._order
        for i in range(bisect_left(order, (job.gpus,)), len(order)):
            _, free_cpus, node_id = order[i]
            node = self._free[node_id]
            if (
                free_cpus >= job.cpus
                and node.free_mem_bytes >= job.mem_bytes
                and fits_ever(job, node)
            ):
                unreserved = node
                break
        reserved, fits = self._reserved_offer(job)
        if reserved is not None and (
            unreserved is None or _fit_key(reserved) < _fit_key(unreserved)
        ):
            return reserved, True
        return unreserved, unreserved is not None or fits

    def _reserved_offer(self, job: PendingJob) -> tuple[NodeView | None, bool]:
        """The best reserved node the job may start on now, and whether it fits any."""
        reservations = self.result.reservations
        if not reservations:
            return None, False
        end = self.now + job.time_limit_s if job.time_limit_s else INF
        shape = (job.gpus, job.cpus, job.mem_bytes, end)
        known = self._offers.get(shape)
        if known is not None and known[0] == self._reserved_changes:
            return known[1], known[2]
        nodes = [self._free[node_id] for node_id in reservations]
        best, fits = _best_open(job, nodes, reservations, self.now)
        self._offers[shape] = (self._reserved_changes, best, fits)
        return best, fits

    def _take(self, job: PendingJob, node: NodeView) -> None:
        node_id = node.node_id
        reserved = node_id in self.result.reservations
        if not reserved:
            del self._order[bisect_left(self._order, _fit_key(node))]
        if node_id not in self._copied:
            node = self._free[node_id] = _copy(node)
            self._copied.add(node_id)
        gpus = tuple(node.free_gpus[: job.gpus])
        del node.free_gpus[: job.gpus]
        node.free_cpus -= job.cpus
        node.free_mem_bytes -= job.mem_bytes
        end = self.now + job.time_limit_s if job.time_limit_s else INF
        node.releases.append(Release(end, job.gpus, job.cpus, job.mem_bytes))
        self.result.starts.append(Start(job.job_id, node_id, gpus))
        if reserved:
            self._reserved_changes += 1
        else:
            insort(self._order, _fit_key(node))
        self._open.clear()
        self._by_end.pop(node_id, None)
        self._gpu_times.clear()

    def _releases_by_end(self, node: NodeView) -> list[Release]:
        by_end = self._by_end.get(node.node_id)
        if by_end is None:
            by_end = self._by_end[node.node_id] = sorted(node.releases, key=_end)
        return by_end

    def _earliest_of(
        self, job: PendingJob, candidates: list[NodeView] | None
    ) -> tuple[float, str] | None:
        """(earliest start, node) over the unreserved candidates that could ever hold the
        job (every up node if None), the lowest name among equals; None if there is none."""
        reservations = self.result.reservations
        best: tuple[float, str] | None = None
        if candidates is not None:  # a node list: a few nodes, try each
            for node in candidates:
                if node.node_id not in reservations and fits_ever(job, node):
                    by_end = self._releases_by_end(node)
                    key = (_earliest(job, node, by_end, self.now), node.node_id)
                    best = key if best is None or key < best else best
            return best
        # Every node: in order of when each has enough free GPUs, a bound on the job's start
        # there; no node past the best found can start the job earlier.
        for gpu_time in self._by_gpu_time(job.gpus):
            if best is not None and gpu_time >= best:
                break
            node = self._free[gpu_time[1]]
            if node.node_id in reservations or not fits_ever(job, node):
                continue
            key = (_earliest(job, node, self._releases_by_end(node), self.now), node.node_id)
            best = key if best is None or key < best else best
        return best

    def _by_gpu_time(self, gpus: int) -> list[tuple[float, str]]:
        """(when the node will have ``gpus`` free, node) for every up node, in that order."""
        known = self._gpu_times.get(gpus)
        if known is None:
            probe = PendingJob(0, gpus, 0, 0)
            known = self._gpu_times[gpus] = sorted(
                (_earliest(probe, n, self._releases_by_end(n), self.now), n.node_id)
                for n in self._free.values()
            )
        return known


def _best_open(
    job: PendingJob, nodes: list[NodeView], reservations: dict[str, Reservation], now: float
) -> tuple[NodeView | None, bool]:
    """(the best of ``nodes`` to start on now, whether the job fits any of them now)."""
    fit = [n for n in nodes if fits_ever(job, n) and fits_now(job, n)]
    open_now = [n for n in fit if _compatible(job, n, reservations.get(n.node_id), now)]
    return min(open_now, key=_fit_key, default=None), bool(fit)


def _fit_key(node: NodeView) -> tuple[int, int, str]:
    """Best fit: the node with the fewest free GPUs, then CPUs, that can hold the job."""
    return (len(node.free_gpus), node.free_cpus, node.node_id)
