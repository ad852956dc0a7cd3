"""The scheduling pass: walk the pending queue in priority order, offer what may run to the
planner (:class:`~mgpu_server.scheduling.planner.Planner`, pure), and start what it decides
through the lifecycle.

A pass reads only the top of the queue (Slurm's main scheduler does the same): it stops as
soon as no node has room for even the smallest request in the order, or when it has examined
``queue_depth`` eligible jobs. Jobs that cannot run yet (held, waiting for a dependency or a
--begin time) are parked out of the order by the lifecycle, so a pass never steps over them;
jobs it does not reach keep their last reason. A pass costs O(examined jobs + running jobs +
nodes), not O(pending jobs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from mgpu_core.reasons import Reason
from mgpu_server.records.jobs import Job
from mgpu_server.scheduling import planner as scheduler
from mgpu_server.scheduling.policy import PolicyConfig, Priorities
from mgpu_server.state.lifecycle import Lifecycle
from mgpu_server.state.pending import PendingQueue
from mgpu_server.state.registry import NodeRegistry
from mgpu_server.state.running import RunningJobs
from mgpu_server.state.turnctl import TurnControl

log = logging.getLogger(__name__)


class SchedulingPass:
    def __init__(
        self,
        *,
        pending: PendingQueue,
        running: RunningJobs,
        nodes: NodeRegistry,
        policy: PolicyConfig,
        lifecycle: Lifecycle,
        turns: TurnControl,
        priorities_at: Callable[[float], Priorities],
    ) -> None:
        self.pending = pending
        self.running = running
        self.nodes = nodes
        self.policy = policy
        self.lifecycle = lifecycle
        self.turns = turns
        self.priorities_at = priorities_at

    def run(self, now: float) -> tuple[int, bool]:
        """One pass: in priority order, start what fits (with backfill) and set the reasons
        of the jobs examined. Returns (jobs started, whether the queue goes on below the
        depth examined: then one more pass should follow)."""
        self.lifecycle.admit_due(now)
        turn_mode = self.turns.enabled
        planner = scheduler.Planner(
            self._node_views(),
            now=now,
            loads=self.running.loads(),
            reserve=not turn_mode,  # in turn order, a job that does not fit is skipped
        )
        eligible: Iterable[Job] = self._throttled(
            self._permitted(self.pending.ordered(now, self.priorities_at(now).fairshare), now)
        )
        turn_entries: dict[int, tuple[int, int]] = {}
        if turn_mode:
            # The rotation reorders the whole eligible queue (a small site's feature).
            eligible, turn_entries = self.turns.order(list(eligible))
        deeper = self._offer(planner, eligible)
        plan = planner.result
        for start in plan.starts:
            job = self.pending[start.job_id]
            self.lifecycle.start(job, start.node_id, start.gpu_indices, now, start.partition)
            if start.job_id in turn_entries:
                self.turns.granted(job, turn_entries[start.job_id], now)
        reserved = {r.job_id: r.start_s for r in plan.reservations.values()}
        for job_id, reason in plan.reasons.items():
            waiting = self.pending.get(job_id)
            if waiting is not None:
                # squeue --start's time (a finite reserved start; 0: not known).
                self.lifecycle.set_reason(waiting, reason, _known(reserved.get(job_id, 0.0)))
        return len(plan.starts), deeper and bool(plan.starts)

    def estimate(self, job: Job, now: float) -> tuple[float, str, str]:
        """sbatch --test-only: when and where ``job`` (checked, not submitted) would start if
        it were submitted now: (now, its node and partition) if a pass now would start it;
        else the start the pass would reserve for it (0 if it reserves none, or its start is
        not known), the node and partition of that reservation. The pass is simulated over
        the jobs ahead of it in priority order (at most ``queue_depth``); nothing changes."""
        planner = scheduler.Planner(
            self._node_views(), now=now, loads=self.running.loads(), reserve=not self.turns.enabled
        )
        priorities = self.priorities_at(now)
        tier_of = self.policy.partitions.tier_of
        mine = (tier_of(job.spec.partition), priorities.of(job))
        ahead = 0
        for other in self.pending.ordered(now, priorities.fairshare):
            if (tier_of(other.spec.partition), other.priority) < mine:
                break
            if ahead >= self.policy.queue_depth:
                break
            view = self._pending_view(other)
            if view is not None and self.lifecycle.refusal(other) is None:
                planner.consider(view)
                ahead += 1
        view = self._pending_view(job)
        if view is None:
            return 0.0, "", ""
        planner.consider(view)
        plan = planner.result
        for start in plan.starts:
            if start.job_id == job.job_id:
                return now, start.node_id, start.partition
        for res in plan.reservations.values():
            if res.job_id == job.job_id:
                return _known(res.start_s), res.node_id, res.partition
        return 0.0, "", view.partitions[0][0] if view.partitions else ""

    def _offer(self, planner: scheduler.Planner, eligible: Iterable[Job]) -> bool:
        """Offer jobs until ``queue_depth`` were examined (then True: there may be more), or
        until nothing more can start once one examined job waits: the top waiting job's
        reason and reservation are current after every pass."""
        smallest = self.pending.min_request()
        waiting = planner.result.reasons
        for examined, job in enumerate(eligible, 1):
            view = self._pending_view(job)
            if view is None:  # none of its partitions admits its user now (a group changed)
                self.lifecycle.set_reason(job, Reason.PARTITION_CONFIG)
            else:
                planner.consider(view)
            if examined >= self.policy.queue_depth:
                return True
            if waiting and not planner.could_start(*smallest):
                return False
        return False

    def _permitted(self, ordered: Iterable[Job], now: float) -> Iterator[Job]:
        """The ordered jobs minus those an admin's rule keeps from starting (their user's GPU
        access revoked, their QoS no longer open to them: a group can change under a queued
        job, with no event to say so), which are parked with that reason. Asked of every job
        a pass meets, so no job starts that the rules refuse now."""
        for job in ordered:
            if self.lifecycle.refusal(job) is not None:
                self.lifecycle.reconsider(job, now)
                continue
            yield job

    def _throttled(self, ordered: Iterable[Job]) -> Iterator[Job]:
        """The ordered jobs minus the tasks of throttled (%N) arrays already at their limit
        (running or offered in this pass), which get that reason."""
        array_slots = self.running.array_tasks()
        for job in ordered:
            if job.array_throttle and job.array_job_id is not None:
                used = array_slots.get(job.array_job_id, 0)
                if used >= job.array_throttle:
                    self.lifecycle.set_reason(job, Reason.ARRAY_TASK_LIMIT)
                    continue
                array_slots[job.array_job_id] = used + 1
            yield job

    def _pending_view(self, job: Job) -> scheduler.PendingJob | None:
        """What the planner sees of a job; None if no partition may run it now."""
        spec = job.spec
        qos = self.policy.qos_of(spec.qos)
        partitions, _ = self.lifecycle.waits.partitions(job)
        if not partitions:
            return None
        return scheduler.PendingJob(
            job.job_id,
            spec.gpus,
            spec.cpus,
            spec.mem_bytes,
            frozenset(spec.nodelist),
            user=job.user,
            # Planned with the QoS grace, as running jobs are: a backfilled job may use it.
            time_limit_s=spec.time_limit_s + qos.grace_s if spec.time_limit_s else 0,
            max_user_gpus=qos.max_gpus_per_user,
            max_user_jobs=qos.max_jobs_per_user,
            gpu_type=spec.gpu_type,
            ports=spec.ports,
            exclusive=spec.exclusive,
            container=bool(spec.container_image),
            exclude=frozenset(spec.exclude) if spec.exclude else _NONE,
            partitions=partitions,
        )

    def _node_views(self) -> list[scheduler.NodeView]:
        views = []
        for node in self.nodes.values():
            view = node.view()
            view.releases = self.running.releases(node.node_id)
            view.exclusive_end = self.running.exclusive_end(node.node_id)
            views.append(view)
        return views


_NONE: frozenset[str] = frozenset()


def _known(start_s: float) -> float:
    """A start time to show: 0 when it is not known (no time limits to plan with)."""
    return start_s if start_s < scheduler.INF else 0.0


@dataclass(slots=True)
class PassStats:
    """How long scheduling passes take (shown by ``mgpu_client info``; the benchmarks read it)."""

    passes: int = 0
    last_ms: float = 0.0
    max_ms: float = 0.0
    total_ms: float = 0.0
    last_pending: int = 0  # pending jobs left after the last pass

    def record(self, seconds: float, pending: int) -> None:
        ms = seconds * 1000
        self.passes += 1
        self.last_ms = ms
        self.max_ms = max(self.max_ms, ms)
        self.total_ms += ms
        self.last_pending = pending
