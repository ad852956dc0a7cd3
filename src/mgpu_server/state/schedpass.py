"""The scheduling pass of the master's state: walk the pending queue in priority order, hold
back the ineligible, offer the rest to the planner
(:class:`~mgpu_server.scheduling.planner.Planner`), apply what it decides.

A pass reads only the top of the queue (Slurm's main scheduler does the same): it stops as
soon as no node has room for even the smallest pending request, or when it has examined
``queue_depth`` eligible jobs. Jobs it does not reach keep their last reason; nothing else is
touched, so a pass costs O(examined jobs + running jobs + nodes), not O(pending jobs).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mgpu_core.deps import DepStatus, evaluate, parse_dependency
from mgpu_core.states import JobState
from mgpu_server.records.jobs import Job, state_event
from mgpu_server.scheduling import planner as scheduler
from mgpu_server.scheduling.policy import PolicyConfig, Priorities
from mgpu_server.state.effects import Effect, ToNode, ToWatchers
from mgpu_server.state.turnctl import TURNS_KEY

if TYPE_CHECKING:
    from mgpu_server.records.nodes import NodeRecord
    from mgpu_server.scheduling.turns import TurnQueue
    from mgpu_server.state.pending import PendingQueue
    from mgpu_server.state.running import RunningJobs
    from mgpu_server.storage.store import Store

log = logging.getLogger(__name__)


class SchedulingPass:
    # Provided by Cluster (declared here for the type checker).
    jobs: dict[int, Job]
    pending: PendingQueue
    running: RunningJobs
    nodes: dict[str, NodeRecord]
    policy: PolicyConfig
    turns: TurnQueue
    store: Store
    outbox: list[Effect]
    kill_grace_s: float
    changed: bool
    wakeup_at: float | None

    def _finish(self, job: Job, state: JobState, now: float, *, reason: str) -> None:
        raise NotImplementedError

    def _set_reason(self, job: Job, reason: str) -> None:
        raise NotImplementedError

    def _turn_order(self, eligible: list[Job]) -> tuple[list[Job], dict[int, tuple[int, int]]]:
        raise NotImplementedError

    def priorities_at(self, now: float) -> Priorities:
        raise NotImplementedError

    def schedule(self, now: float) -> int:
        """One pass: in priority order, hold back the ineligible, start what fits (with
        backfill), set the reasons of the jobs examined. Returns the number of jobs started."""
        if not self.pending or not self.changed:
            return 0
        self.changed = False
        turns = self.turns.enabled
        planner = scheduler.Planner(
            self._node_views(),
            now=now,
            loads=self.running.loads(),
            reserve=not turns,  # in turn order, a job that does not fit is skipped
        )
        eligible: Iterable[Job] = self._eligible(
            self.pending.ordered(now, self.priorities_at(now).fairshare), now
        )
        turn_entries: dict[int, tuple[int, int]] = {}
        if turns:
            # The rotation reorders the whole eligible queue (a small site's feature).
            eligible, turn_entries = self._turn_order(list(eligible))
        deeper = self._offer(planner, eligible)
        plan = planner.result
        for start in plan.starts:
            job = self.pending.remove(start.job_id)
            assert job is not None
            self._start(job, start, now)
            if start.job_id in turn_entries:
                entry, length = turn_entries[start.job_id]
                self.turns.granted(entry, length, job.user, job.job_id, now)
                self.store.put_setting(TURNS_KEY, self.turns.to_settings())
        for job_id, reason in plan.reasons.items():
            self._set_reason(self.jobs[job_id], reason)
        if plan.starts and (deeper or self.pending.has_dependencies()):
            # One more pass (the server runs it in the next loop turn): the queue goes on
            # below the depth, or an `after:` dependency may be met by what just started.
            self.changed = True
        self.wakeup_at = self.pending.next_begin(now)
        return len(plan.starts)

    def _offer(self, planner: scheduler.Planner, eligible: Iterable[Job]) -> bool:
        """Offer jobs until ``queue_depth`` were examined (then True: there may be more), or
        until nothing more can start once one examined job waits: the top waiting job's
        reason and reservation are current after every pass."""
        smallest = self.pending.min_request()
        waiting = planner.result.reasons
        for examined, job in enumerate(eligible, 1):
            planner.consider(self._pending_view(job))
            if examined >= self.policy.queue_depth:
                return True
            if waiting and not planner.could_start(*smallest):
                return False
        return False

    def _eligible(self, ordered: Iterable[Job], now: float) -> Iterator[Job]:
        """The jobs the scheduler may consider, in order; the others get their reason."""
        # Tasks of throttled arrays (%N) running or offered in this pass, per array.
        array_slots = self.running.array_tasks()
        for job in ordered:
            reason = self._held_back(job, now)
            if not reason and job.array_throttle and job.array_job_id is not None:
                used = array_slots.get(job.array_job_id, 0)
                if used >= job.array_throttle:
                    reason = "JobArrayTaskLimit"
                else:
                    array_slots[job.array_job_id] = used + 1
            if reason:
                self._set_reason(job, reason)
            elif job.job_id in self.pending:  # not cancelled by an impossible dependency
                yield job

    def _held_back(self, job: Job, now: float) -> str:
        """Why a pending job may not be considered at all (hold, dependency), or ""."""
        if job.hold:
            return "JobHeldAdmin" if job.hold == "admin" else "JobHeldUser"
        if job.spec.begin_time > now:
            return "BeginTime"  # the server's timer brings a pass at the earliest such time
        if not job.spec.dependency:
            return ""
        dep = parse_dependency(job.spec.dependency)
        status = evaluate(dep, self._state_of, singleton_clear=self._singleton_clear(job))
        if status is DepStatus.OK:
            return ""
        if status is DepStatus.WAIT:
            return "Dependency"
        if job.spec.kill_on_invalid_dep:
            self.pending.remove(job.job_id)
            self._finish(job, JobState.CANCELLED, now, reason="DependencyNeverSatisfied")
        return "DependencyNeverSatisfied"

    def _state_of(self, job_id: int) -> str | None:
        job = self.jobs.get(job_id)
        return None if job is None else job.state.value

    def _singleton_clear(self, job: Job) -> bool:
        name = job.spec.display_name()
        return not any(
            other.user == job.user
            and other.spec.display_name() == name
            and (other.state is JobState.RUNNING or other.job_id < job.job_id)
            for other in (*self.running.values(), *self.pending.values())
            if other.job_id != job.job_id
        )

    def _pending_view(self, job: Job) -> scheduler.PendingJob:
        spec = job.spec
        qos = self.policy.qos_of(spec.qos)
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
        )

    def _node_views(self) -> list[scheduler.NodeView]:
        views = []
        for node in self.nodes.values():
            view = node.view()
            view.releases = self.running.releases(node.node_id)
            views.append(view)
        return views

    def _start(self, job: Job, start: scheduler.Start, now: float) -> None:
        node = self.nodes[start.node_id]
        node.allocate(job.job_id, start.gpu_indices, job.spec.cpus, job.spec.mem_bytes)
        job.node_id = node.node_id
        job.gpu_indices = start.gpu_indices
        job.transition(JobState.RUNNING, now)
        self.running.add(job)
        self.store.put_job(job)
        log.info(
            "job=%d node=%s state=RUNNING gpus=%s",
            job.job_id,
            node.node_id,
            list(start.gpu_indices),
        )
        launch = {
            "job_id": job.job_id,
            "user": job.user,
            "spec": job.spec.to_wire(),
            "gpu_indices": list(start.gpu_indices),
            "kill_grace_s": max(self.kill_grace_s, self.policy.qos_of(job.spec.qos).grace_s),
            "restart_count": job.restart_count,
        }
        self.outbox.append(ToNode(node.node_id, {"t": "launch", "launch": launch}))
        if job.spec.interactive:
            self.outbox.append(ToWatchers(job.job_id, state_event(job)))


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
