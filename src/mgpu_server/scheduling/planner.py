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
- A job in several partitions (``-p a,b``) starts in the first, in the user's order, where it
  fits now; else it reserves in the one where it could start soonest (the first among equals).
  Its GPU type, ``--exclusive``, an image and excluded nodes narrow the nodes it may use
  (:mod:`mgpu_server.scheduling.views` has the arithmetic of one job on one node).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Sequence
from dataclasses import replace

from mgpu_core.reasons import Reason
from mgpu_server.scheduling.views import (
    INF,
    Choice,
    NodeView,
    PendingJob,
    Plan,
    Release,
    Reservation,
    Start,
    UserLoad,
    compatible,
    earliest_at,
    earliest_start,
    end_of,
    fit_key,
    fits_ever,
    fits_now,
    usable_gpus,
)

__all__ = [
    "INF",
    "MAX_RESERVATIONS",
    "Choice",
    "NodeView",
    "PendingJob",
    "Plan",
    "Planner",
    "Release",
    "Reservation",
    "Start",
    "UserLoad",
    "earliest_start",
    "fits_ever",
    "fits_now",
]

# Blocked jobs that get a reservation in one pass (Slurm's bf_max_job_test, in spirit).
MAX_RESERVATIONS = 64
# A job may use no more nodes than this (a node list, a small partition): its nodes are tried
# one by one rather than through the best-fit order of every node.
FEW_NODES = 32
# No partition: every node.
ANYWHERE: tuple[Choice, ...] = (("", None),)


def _over_limit(job: PendingJob, load: UserLoad) -> Reason | None:
    if job.max_user_gpus and load.gpus + job.gpus > job.max_user_gpus:
        return Reason.QOS_GPUS
    if job.max_user_jobs and load.jobs + 1 > job.max_user_jobs:
        return Reason.QOS_JOBS
    return None


def _copy(n: NodeView) -> NodeView:
    return replace(n, free_gpus=sorted(n.free_gpus), releases=list(n.releases))


def _allowed(job: PendingJob, nodes: frozenset[str] | None) -> frozenset[str] | None:
    """The nodes a job may use in a partition with ``nodes`` (None: every node)."""
    if not job.nodelist:
        return nodes
    return job.nodelist if nodes is None else job.nodelist & nodes


class Planner:
    """One scheduling pass, one job at a time (in priority order, eligible jobs only), so
    that the caller can stop walking its queue as soon as nothing more can start
    (:meth:`could_start`) or after a bounded number of jobs, without building views of the
    jobs it never reaches. ``nodes`` and ``loads`` are not modified; with ``reserve=False``
    (the GPU turn queue) a job that does not fit now is passed over without holding anything
    back for it. Its cost grows with the jobs considered, not
    with jobs times nodes:

    - Unreserved up nodes are kept in best-fit order (free GPUs, free CPUs, name): a job's best
      unreserved node is the first with enough GPUs that fits, found by bisection (and, for a
      job limited to a partition's nodes, the first of those).
    - Reserved nodes (at most MAX_RESERVATIONS) are compared apart; what they offer a job of a
      given shape is remembered until a reservation or a start on one of them changes it.
    - A reservation scans nodes in order of the time they will have enough free GPUs (a lower
      bound of a job's earliest start there) and stops once no node further on can beat the
      best found.
    - A node held by an --exclusive job is in neither: nothing starts there.
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
        # Unreserved nodes, but those an exclusive job holds.
        self._order = sorted(fit_key(n) for n in self._free.values() if n.exclusive_end is None)
        self._open: dict[tuple[int, int, int], bool] = {}  # could_start, until the next start
        self._by_end: dict[str, list[Release]] = {}  # each node's releases in end order
        self._gpu_times: dict[tuple[int, str], list[tuple[float, str]]] = {}  # until a start
        # Per job shape: what the reserved nodes offer (best node, any fits), and when.
        self._offers: dict[tuple[object, ...], tuple[int, NodeView | None, bool]] = {}
        self._reserved_changes = 0
        self._up_in: dict[frozenset[str], bool] = {}  # whether a node set has an up node
        self._runtimes = [n.node_id for n in self._free.values() if n.containers]

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
        fits = False
        places: list[Choice] = []  # the partitions with an up node it may use
        for name, nodes in job.partitions or ANYWHERE:
            allowed = _allowed(job, nodes)
            if not self._any_up(job, allowed):
                continue
            places.append((name, allowed))
            node, fits_here = self._open_node(job, allowed)
            if node is not None:
                self._take(job, node, name)
                load.gpus += job.gpus
                load.jobs += 1
                return
            fits = fits or fits_here
        if not places:
            result.reasons[job.job_id] = Reason.NODE_NOT_AVAIL
            return
        if job.container and not self._any_runtime(job, places):
            result.reasons[job.job_id] = Reason.NO_CONTAINER_RUNTIME
            return
        result.reasons[job.job_id] = Reason.PRIORITY if fits else Reason.RESOURCES
        if self.reserve and len(result.reservations) < MAX_RESERVATIONS:
            self._reserve(job, places)

    def _few(self, job: PendingJob, allowed: frozenset[str] | None) -> bool:
        """Whether the job's nodes are few enough to try one by one."""
        return allowed is not None and (bool(job.nodelist) or len(allowed) <= FEW_NODES)

    def _any_up(self, job: PendingJob, allowed: frozenset[str] | None) -> bool:
        """Whether an up node is among those the job may use."""
        free, exclude = self._free, job.exclude
        if allowed is None:
            return len(free) > len(exclude) or any(n not in exclude for n in free)
        if not self._few(job, allowed):
            known = self._up_in.get(allowed)
            if known is None:
                known = self._up_in[allowed] = any(n in free for n in allowed)
            if not known or not exclude:
                return known
        return any(n in free and n not in exclude for n in allowed)

    def _any_runtime(self, job: PendingJob, places: list[Choice]) -> bool:
        """Whether an up node the job may use, in any of its partitions, has a container
        runtime (those are few: a scan of them, not of the job's nodes)."""
        for _, allowed in places:
            for node_id in self._runtimes:
                if node_id not in job.exclude and (allowed is None or node_id in allowed):
                    return True
        return False

    def _open_node(
        self, job: PendingJob, allowed: frozenset[str] | None
    ) -> tuple[NodeView | None, bool]:
        """(the best node among ``allowed`` to start the job on now, whether it fits any)."""
        if self._few(job, allowed):
            assert allowed is not None
            exclude = job.exclude
            candidates = [self._free[n] for n in allowed if n in self._free and n not in exclude]
            return _best_open(job, candidates, self.result.reservations, self.now)
        return self._best_anywhere(job, allowed)

    def _best_anywhere(
        self, job: PendingJob, allowed: frozenset[str] | None
    ) -> tuple[NodeView | None, bool]:
        """:func:`_best_open` over every up node (of ``allowed``, if not None)."""
        unreserved = None
        order = self._order
        exclude = job.exclude
        for i in range(bisect_left(order, (job.gpus,)), len(order)):
            _, free_cpus, node_id = order[i]
            if (
                free_cpus < job.cpus
                or node_id in exclude
                or (allowed is not None and node_id not in allowed)
            ):
                continue
            node = self._free[node_id]
            if fits_now(job, node) and fits_ever(job, node):
                unreserved = node
                break
        reserved, fits = self._reserved_offer(job, allowed)
        if reserved is not None and (unreserved is None or fit_key(reserved) < fit_key(unreserved)):
            return reserved, True
        return unreserved, unreserved is not None or fits

    def _reserved_offer(
        self, job: PendingJob, allowed: frozenset[str] | None
    ) -> tuple[NodeView | None, bool]:
        """The best reserved node the job may start on now, and whether it fits any."""
        reservations = self.result.reservations
        if not reservations:
            return None, False
        end = self.now + job.time_limit_s if job.time_limit_s else INF
        shape = (
            job.gpus, job.cpus, job.mem_bytes, end, job.gpu_type, job.exclusive, job.container
        )  # fmt: skip
        key = (*shape, allowed, job.exclude)
        known = self._offers.get(key)
        if known is not None and known[0] == self._reserved_changes:
            return known[1], known[2]
        nodes = [
            self._free[n]
            for n in reservations
            if n not in job.exclude and (allowed is None or n in allowed)
        ]
        best, fits = _best_open(job, nodes, reservations, self.now)
        self._offers[key] = (self._reserved_changes, best, fits)
        return best, fits

    def _take(self, job: PendingJob, node: NodeView, partition: str) -> None:
        node_id = node.node_id
        reserved = node_id in self.result.reservations
        if not reserved:
            self._unorder(node)
        if node_id not in self._copied:
            node = self._free[node_id] = _copy(node)
            self._copied.add(node_id)
        if (job.gpu_type or node.slices) and job.gpus:  # of its type; or whole, not slices
            gpus = tuple(usable_gpus(job, node)[: job.gpus])
            node.free_gpus = [g for g in node.free_gpus if g not in gpus]
        else:
            gpus = tuple(node.free_gpus[: job.gpus])
            del node.free_gpus[: job.gpus]
        node.free_cpus -= job.cpus
        node.free_mem_bytes -= job.mem_bytes
        node.free_ports -= job.ports
        end = self.now + job.time_limit_s if job.time_limit_s else INF
        node.releases.append(Release(end, job.gpus, job.cpus, job.mem_bytes))
        if job.exclusive:
            node.exclusive_end = end
        self.result.starts.append(Start(job.job_id, node_id, gpus, partition))
        if reserved:
            self._reserved_changes += 1
        elif not job.exclusive:
            insort(self._order, fit_key(node))
        self._open.clear()
        self._by_end.pop(node_id, None)
        self._gpu_times.clear()

    def _unorder(self, node: NodeView) -> None:
        """Take a node out of the best-fit order (if it is there: not if an exclusive job
        holds it)."""
        key = fit_key(node)
        i = bisect_left(self._order, key)
        if i < len(self._order) and self._order[i] == key:
            del self._order[i]

    def _reserve(self, job: PendingJob, places: list[Choice]) -> None:
        """Reserve for a blocked job where it could start soonest: the node of the earliest
        start over its partitions (the first partition, then the lowest name, among equals)."""
        best: tuple[float, int, str, str] | None = None
        for rank, (name, allowed) in enumerate(places):
            found = self._earliest_of(job, allowed)
            if found is not None:
                key = (found[0], rank, found[1], name)
                best = key if best is None or key < best else best
        if best is None:
            return
        start, _, node_id, partition = best
        self.result.reservations[node_id] = Reservation(
            job.job_id,
            node_id,
            start,
            job.gpus,
            job.cpus,
            job.mem_bytes,
            partition,
            job.exclusive,
            job.gpu_type if job.gpus else "",
        )
        self._unorder(self._free[node_id])
        self._reserved_changes += 1

    def _releases_by_end(self, node: NodeView) -> list[Release]:
        by_end = self._by_end.get(node.node_id)
        if by_end is None:
            by_end = self._by_end[node.node_id] = sorted(node.releases, key=end_of)
        return by_end

    def _earliest_of(
        self, job: PendingJob, allowed: frozenset[str] | None
    ) -> tuple[float, str] | None:
        """(earliest start, node) over the unreserved up nodes the job may use that could
        ever hold it, the lowest name among equals; None if there is none."""
        reservations = self.result.reservations
        exclude = job.exclude
        best: tuple[float, str] | None = None
        if self._few(job, allowed):  # a few nodes: try each
            assert allowed is not None
            for node_id in allowed:
                node = self._free.get(node_id)
                if node is None or node_id in exclude or node_id in reservations:
                    continue
                if fits_ever(job, node):
                    by_end = self._releases_by_end(node)
                    key = (earliest_at(job, node, by_end, self.now), node_id)
                    best = key if best is None or key < best else best
            return best
        # Every node: in order of when each has enough free GPUs, a bound on the job's start
        # there; no node past the best found can start the job earlier.
        for gpu_time in self._by_gpu_time(job):
            if best is not None and gpu_time >= best:
                break
            node_id = gpu_time[1]
            if (
                node_id in reservations
                or node_id in exclude
                or (allowed is not None and node_id not in allowed)
            ):
                continue
            node = self._free[node_id]
            if not fits_ever(job, node):
                continue
            key = (earliest_at(job, node, self._releases_by_end(node), self.now), node_id)
            best = key if best is None or key < best else best
        return best

    def _by_gpu_time(self, job: PendingJob) -> list[tuple[float, str]]:
        """(when the node will have the job's GPUs free, node) for every up node, in that
        order."""
        shape = (job.gpus, job.gpu_type if job.gpus else "")
        known = self._gpu_times.get(shape)
        if known is None:
            probe = PendingJob(0, shape[0], 0, 0, gpu_type=shape[1])
            known = self._gpu_times[shape] = sorted(
                (earliest_at(probe, n, self._releases_by_end(n), self.now), n.node_id)
                for n in self._free.values()
            )
        return known


def _best_open(
    job: PendingJob, nodes: list[NodeView], reservations: dict[str, Reservation], now: float
) -> tuple[NodeView | None, bool]:
    """(the best of ``nodes`` to start on now, whether the job fits any of them now)."""
    fit = [n for n in nodes if fits_ever(job, n) and fits_now(job, n)]
    open_now = [n for n in fit if compatible(job, n, reservations.get(n.node_id), now)]
    return min(open_now, key=fit_key, default=None), bool(fit)
