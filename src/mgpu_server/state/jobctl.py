"""Job control verbs of the master's state: hold, release, requeue, update, priority.

A mixin of :class:`~mgpu_server.state.cluster.Cluster` (which owns all state), kept apart so each
module stays readable. ``admin`` says whether the caller may act as an administrator: set
priorities, lift an admin hold, lower a job's nice value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mgpu_core.errors import InvalidJobState, InvalidRequest, MgpuError, PermissionDenied
from mgpu_core.states import JobState
from mgpu_server.scheduling.policy import Breakdown, PolicyConfig, Priorities, Usage
from mgpu_server.state.effects import Effect, ToNode
from mgpu_server.state.submission import waiting_reason

if TYPE_CHECKING:
    from mgpu_core.models import JobSpec
    from mgpu_server.records.jobs import Job
    from mgpu_server.records.nodes import NodeRecord
    from mgpu_server.state.pending import PendingQueue
    from mgpu_server.state.running import RunningJobs
    from mgpu_server.storage.store import Store

log = logging.getLogger(__name__)

UPDATABLE = ("time_limit_s", "qos", "gpus", "nice", "priority")


class JobControl:
    # Provided by Cluster (declared here for the type checker).
    jobs: dict[int, Job]
    pending: PendingQueue
    running: RunningJobs
    nodes: dict[str, NodeRecord]
    store: Store
    outbox: list[Effect]
    changed: bool
    policy: PolicyConfig
    usage: Usage

    def get(self, job_id: int) -> Job:
        raise NotImplementedError

    def _check_spec(self, spec: JobSpec) -> None:
        raise NotImplementedError

    def _apply_qos(self, spec: JobSpec) -> None:
        raise NotImplementedError

    def _set_reason(self, job: Job, reason: str) -> None:
        raise NotImplementedError

    def priorities_at(self, now: float) -> Priorities:
        raise NotImplementedError

    def _for_each(self, job_ids: list[int], act: Callable[[Job], None]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for job_id in job_ids:
            try:
                act(self.get(job_id))
                results.append({"job_id": job_id, "ok": True})
            except MgpuError as err:
                results.append({"job_id": job_id, "ok": False, **err.to_wire()})
        return results

    def _pending_only(self, job: Job, verb: str) -> None:
        if job.state is not JobState.PENDING:
            raise InvalidJobState(f"cannot {verb} job {job.job_id}: it is {job.state.value}")

    def hold(self, job_ids: list[int], *, admin: bool) -> list[dict[str, Any]]:
        def act(job: Job) -> None:
            self._pending_only(job, "hold")
            job.hold = "admin" if admin else "user"
            self.pending.refresh(job)  # out of the order a pass walks
            # Its reason now, even if the next pass stops above it in the queue.
            self._set_reason(job, waiting_reason(job, None))
            self.changed = True  # the jobs behind it may start
            self.store.put_job(job)

        return self._for_each(job_ids, act)

    def release(self, job_ids: list[int], *, admin: bool) -> list[dict[str, Any]]:
        def act(job: Job) -> None:
            self._pending_only(job, "release")
            if job.hold == "admin" and not admin:
                raise PermissionDenied(f"job {job.job_id} was held by an admin")
            job.hold = ""
            self.pending.refresh(job)  # back into the order, at its place by priority
            self._set_reason(job, waiting_reason(job, None))
            self.changed = True
            self.store.put_job(job)

        return self._for_each(job_ids, act)

    def requeue(self, job_ids: list[int]) -> list[dict[str, Any]]:
        """Running jobs are stopped and go back to the queue (same id, restart_count + 1)."""

        def act(job: Job) -> None:
            if job.state is not JobState.RUNNING:
                raise InvalidJobState(f"cannot requeue job {job.job_id}: it is {job.state.value}")
            if job.requeue_requested:
                return
            job.requeue_requested = True
            self.outbox.append(
                ToNode(job.node_id, {"t": "kill", "job_id": job.job_id, "reason": "requeued"})
            )

        return self._for_each(job_ids, act)

    def update(self, job_id: int, changes: dict[str, Any], *, admin: bool) -> None:
        """Change a pending job: time limit, QoS, GPU count, nice; priority (admins only)."""
        job = self.get(job_id)
        self._pending_only(job, "update")
        spec = job.spec
        if "priority" in changes and not admin:
            raise PermissionDenied("only an admin can set a job's priority")
        if changes.get("nice", spec.nice) < spec.nice and not admin:
            raise PermissionDenied("only an admin can lower a job's nice value")
        before = (spec.time_limit_s, spec.qos, spec.gpus, spec.nice)
        for key in ("time_limit_s", "qos", "gpus", "nice"):
            if key in changes:
                setattr(spec, key, changes[key])
        try:
            self._check_spec(spec)
            self._apply_qos(spec)
        except MgpuError:
            spec.time_limit_s, spec.qos, spec.gpus, spec.nice = before
            raise
        if "priority" in changes:
            job.priority_override = changes["priority"]
        self.pending.refresh(job)  # its place in the queue may change
        self.changed = True
        self.store.put_job(job)
        log.info("job=%d updated %s", job_id, sorted(changes))

    def priorities(self, job_ids: list[int], now: float) -> list[Breakdown]:
        """sprio: the priority factors of pending jobs (all of them when no ids are given)."""
        calc = self.priorities_at(now)
        if job_ids:
            unknown = [i for i in job_ids if i not in self.jobs]
            if unknown:
                raise InvalidRequest(f"invalid job id specified: {unknown[0]}")
            jobs = [self.jobs[i] for i in job_ids if i in self.pending]
        else:
            jobs = list(self.pending.values())
        rows = [calc.breakdown(j) for j in jobs]
        return sorted(rows, key=lambda b: (-b.priority, b.job_id))
