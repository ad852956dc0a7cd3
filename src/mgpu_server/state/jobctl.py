"""Job control verbs on one job at a time: cancel, signal, hold, release, requeue, update; and
sprio's view of the pending jobs' priority factors. Who may do what (an admin's hold, priorities,
lowering nice) is decided before these are called, in :mod:`mgpu_server.api.permissions`.
"""

from __future__ import annotations

import logging
import signal as signals
from collections.abc import Callable
from typing import Any

from mgpu_core.errors import InvalidJobState, InvalidRequest, MgpuError
from mgpu_core.limits import MAX_TIME_LIMIT_S
from mgpu_core.states import Hold, JobState
from mgpu_server.records.jobs import Job
from mgpu_server.scheduling.policy import Breakdown, Priorities
from mgpu_server.state.effects import Outbox
from mgpu_server.state.lifecycle import Lifecycle
from mgpu_server.state.pending import PendingQueue
from mgpu_server.state.registry import NodeRegistry
from mgpu_server.state.submission import Submission
from mgpu_server.state.table import JobTable

log = logging.getLogger(__name__)

UPDATABLE = ("time_limit_s", "qos", "gpus", "nice")


class JobControl:
    def __init__(
        self,
        *,
        table: JobTable,
        pending: PendingQueue,
        lifecycle: Lifecycle,
        submission: Submission,
        priorities_at: Callable[[float], Priorities],
        nodes: NodeRegistry,
        outbox: Outbox,
    ) -> None:
        self.table = table
        self.pending = pending
        self.lifecycle = lifecycle
        self.submission = submission
        self.priorities_at = priorities_at
        self.nodes = nodes
        self.outbox = outbox

    def cancel(self, job: Job, now: float, *, by: str = "") -> None:
        self.lifecycle.cancel(job, now, by=by)

    def signal(self, job: Job, sig: int, scope: str, now: float, *, by: str = "") -> None:
        """scancel --signal: send ``sig`` to a running job without cancelling it ("all": its
        process group, "batch": its batch shell). As in Slurm, SIGKILL to the whole job is a
        cancel, and a pending job takes no other signal (it has no process to get one)."""
        if sig == signals.SIGKILL and (scope == "all" or job.state is JobState.PENDING):
            self.lifecycle.cancel(job, now, by=by)
            return
        if job.state is JobState.PENDING:
            raise InvalidJobState(f"job {job.job_id}: Job is pending execution")
        if job.state is not JobState.RUNNING:
            raise InvalidJobState(f"job {job.job_id} already finished ({job.state.value})")
        node = self.nodes.get(job.node_id)
        if node is None or not node.connected:
            raise InvalidJobState(
                f"job {job.job_id}: its node {job.node_id} is unreachable; signal not sent"
            )
        msg = {"t": "signal", "job_id": job.job_id, "signal": sig, "scope": scope}
        self.outbox.to_node(job.node_id, msg)
        log.info("job=%d node=%s signal=%d scope=%s by=%s", job.job_id, job.node_id, sig, scope, by)

    def hold(self, job: Job, hold: Hold, now: float) -> None:
        _pending_only(job, "hold")
        self.lifecycle.set_hold(job, hold, now)

    def release(self, job: Job, now: float) -> None:
        _pending_only(job, "release")
        self.lifecycle.set_hold(job, Hold.NONE, now)

    def requeue(self, job: Job) -> None:
        """A running job is stopped and goes back to the queue (same id, restart_count + 1)."""
        self.lifecycle.ask_requeue(job)

    def update(self, job: Job, changes: dict[str, Any], now: float) -> None:
        """Change a pending job: time limit, QoS, GPU count, nice; an admin's priority. All
        or nothing: a change the cluster or QoS refuses leaves the job as it was."""
        _pending_only(job, "update")
        if job.spec_shared:  # its array's spec: the task gets its own before it changes
            job.spec, job.spec_shared = job.launch_spec(), False
        spec = job.spec
        before = {key: getattr(spec, key) for key in UPDATABLE}
        for key in UPDATABLE:
            if key in changes:
                setattr(spec, key, changes[key])
        try:
            self.submission.check(spec)
        except MgpuError:
            for key, value in before.items():
                setattr(spec, key, value)
            raise
        if "priority" in changes:
            job.priority_override = changes["priority"]
        self.lifecycle.replace(job)  # its place in the queue may change
        self.lifecycle.reconsider(job, now)  # and whether a rule parks it (QoS, GPUs)
        log.info("job=%d updated %s", job.job_id, sorted(changes))

    def extend(self, job: Job, add_s: int) -> int:
        """A session's TTL (its time limit) grows by ``add_s``, within its QoS's MaxWall and
        its partition's MaxTime as at submit; a running one's node is told. The new limit."""
        if not job.spec.session:
            raise InvalidRequest(
                f"job {job.job_id} is not a session: only sessions are extended "
                "(a pending job's time limit: mgpu_client update)"
            )
        if job.state.terminal:
            raise InvalidJobState(f"session {job.job_id} already ended ({job.state.value})")
        if job.spec_shared:
            job.spec, job.spec_shared = job.launch_spec(), False
        spec, before = job.spec, job.spec.time_limit_s
        if before + add_s > MAX_TIME_LIMIT_S:
            raise InvalidRequest(
                f"session {job.job_id}: a time limit of {before + add_s} s is more than any "
                f"job may have ({MAX_TIME_LIMIT_S} s)"
            )
        node = self.nodes.get(job.node_id)
        if job.state is JobState.RUNNING and (node is None or not node.connected):
            raise InvalidJobState(
                f"session {job.job_id}: its node {job.node_id} is not connected; not extended"
            )
        spec.time_limit_s = before + add_s
        try:
            self.submission.check(spec)
        except MgpuError:
            spec.time_limit_s = before
            raise
        if job.state is JobState.PENDING:
            self.lifecycle.replace(job)
        else:
            self.lifecycle.running_changed(job)
            msg = {"t": "time_limit", "job_id": job.job_id, "time_limit_s": spec.time_limit_s}
            self.outbox.to_node(job.node_id, msg)
        log.info("job=%d session extended to %d s", job.job_id, spec.time_limit_s)
        return spec.time_limit_s

    def priorities(self, job_ids: list[int], now: float) -> list[Breakdown]:
        """sprio: the priority factors of pending jobs (all of them when no ids are given)."""
        calc = self.priorities_at(now)
        if job_ids:
            unknown = [i for i in job_ids if i not in self.table]
            if unknown:
                raise InvalidRequest(f"invalid job id specified: {unknown[0]}")
            jobs = [self.table.jobs[i] for i in job_ids if i in self.pending]
        else:
            jobs = list(self.pending.values())
        rows = [calc.breakdown(j) for j in jobs]
        return sorted(rows, key=lambda b: (-b.priority, b.job_id))


def _pending_only(job: Job, verb: str) -> None:
    if job.state is not JobState.PENDING:
        raise InvalidJobState(f"cannot {verb} job {job.job_id}: it is {job.state.value}")
