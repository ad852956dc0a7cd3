"""The master's state: jobs, nodes, and every change to them. Synchronous and I/O-free.

Handlers mutate state, record changed jobs in the store, and append messages to
:attr:`Cluster.outbox` (to a node, or to whoever watches a job). The server commits the store
and only then sends the outbox, so nothing leaves the master that is not stored. Keeping the
sockets out makes every rule here testable with plain function calls and a fake clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mgpu_core.errors import (
    InvalidJobState,
    JobNotFound,
    MgpuError,
)
from mgpu_core.states import JobState, final_state
from mgpu_server.records.jobs import Job, ended_event, state_event
from mgpu_server.records.nodes import NodeRecord
from mgpu_server.scheduling.policy import PolicyConfig, Priorities, Usage, job_usage_gpu_s
from mgpu_server.scheduling.turns import TurnQueue
from mgpu_server.state.effects import Effect, ToNode, ToWatchers
from mgpu_server.state.jobctl import JobControl
from mgpu_server.state.pending import PendingQueue
from mgpu_server.state.registry import NodeEvents
from mgpu_server.state.running import RunningJobs
from mgpu_server.state.schedpass import SchedulingPass
from mgpu_server.state.submission import Submission
from mgpu_server.state.turnctl import TURNS_KEY, TurnControl
from mgpu_server.storage.store import Store

log = logging.getLogger(__name__)


class Cluster(Submission, NodeEvents, JobControl, TurnControl, SchedulingPass):
    def __init__(
        self,
        store: Store,
        *,
        kill_grace_s: float,
        node_timeout_s: float,
        now: float = 0.0,
        policy: PolicyConfig | None = None,
    ) -> None:
        self.store = store
        self.kill_grace_s = kill_grace_s
        self.node_timeout_s = node_timeout_s
        self.jobs: dict[int, Job] = {}
        self.policy = policy or PolicyConfig()
        # By id in submission order, and in priority order for the scheduling pass.
        self.pending = PendingQueue(self.policy)
        self.running = RunningJobs(self.policy)
        self.arrays: dict[int, list[int]] = {}  # array id -> its tasks' job ids
        self.nodes: dict[str, NodeRecord] = {}
        self.usage = Usage(self.policy.half_life_s)
        self.turns = TurnQueue.from_settings(store.get_setting(TURNS_KEY))
        self.outbox: list[Effect] = []
        # Jobs submitted in the current loop turn: undone if the turn's commit fails.
        self.new_jobs: list[Job] = []
        # Set by every change that can alter the scheduler's answer (a submit, freed or new
        # resources, a drain, a health change): a turn with only heartbeats, queries and
        # job_started events skips the pass over the pending queue.
        self.changed = True
        self.wakeup_at: float | None = None  # earliest --begin of a pending job, per pass
        for info in store.load_nodes():
            # Known from before a restart: down until the agent reconnects; its jobs fail over
            # if it has not returned within node_timeout_s of now.
            node = NodeRecord.from_info(info, now)
            node.connected = False
            self.nodes[node.node_id] = node
        for job in store.load_jobs():
            self.jobs[job.job_id] = job
            if job.array_job_id is not None:
                self.arrays.setdefault(job.array_job_id, []).append(job.job_id)
            if job.state is JobState.PENDING:
                self.pending.add(job)
            elif job.state is JobState.RUNNING:
                self.running.add(job)
                self._restore_allocation(job)
            elif job.end_time:
                self.usage.add(job.user, job_usage_gpu_s(job), job.end_time, now)
        self._next_id = store.next_job_id()

    def _restore_allocation(self, job: Job) -> None:
        node = self.nodes.get(job.node_id)
        if node is None or any(i >= len(node.gpus) for i in job.gpu_indices):
            return
        node.allocate(job.job_id, job.gpu_indices, job.spec.cpus, job.spec.mem_bytes)

    def undo_new_jobs(self) -> set[int]:
        """Forget the jobs submitted this turn (their commit failed); returns their ids."""
        ids = {job.job_id for job in self.new_jobs}
        for job in self.new_jobs:
            self.pending.remove(job.job_id)
            del self.jobs[job.job_id]
            if job.array_job_id is not None:
                self.arrays.pop(job.array_job_id, None)
            node = self.nodes.get(job.node_id)
            if node is not None:
                node.release(job.job_id, job.spec.cpus, job.spec.mem_bytes)
            self.store.discard_job(job.job_id)
        self.new_jobs.clear()
        self.outbox = [e for e in self.outbox if _effect_job_id(e) not in ids]
        return ids

    # ---- clients -------------------------------------------------------------------------

    def cancel(self, job_ids: list[int], now: float) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for job_id in job_ids:
            try:
                self._cancel_one(job_id, now)
                results.append({"job_id": job_id, "ok": True})
            except MgpuError as err:
                results.append({"job_id": job_id, "ok": False, **err.to_wire()})
        return results

    def _cancel_one(self, job_id: int, now: float) -> None:
        job = self.get(job_id)
        if job.state is JobState.PENDING:
            self.pending.remove(job_id)
            self._finish(job, JobState.CANCELLED, now, reason="cancelled while pending")
        elif job.state is JobState.RUNNING:
            if job.cancel_requested:
                return
            job.cancel_requested = True
            self.store.put_job(job)
            node = self.nodes.get(job.node_id)
            if node is not None and node.connected:
                self.outbox.append(
                    ToNode(node.node_id, {"t": "kill", "job_id": job_id, "reason": "cancelled"})
                )
            else:
                # The node is unreachable: the job is cancelled now, and the agent kills it as
                # an unknown job when it reconnects.
                self._finish(job, JobState.CANCELLED, now, reason="cancelled, node unreachable")
        else:
            raise InvalidJobState(f"job {job_id} already finished ({job.state.value})")

    def get(self, job_id: int) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobNotFound(f"invalid job id specified: {job_id}")
        return job

    def list_jobs(
        self,
        *,
        users: list[str],
        states: list[str],
        job_ids: list[int] | None,
        include_finished: bool,
        now: float,
        fields: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Queue rows. ``job_ids`` None = every job; a list (even empty) = only those."""
        pool = self.jobs.values() if job_ids is None else [self.jobs[i] for i in job_ids]
        rows = []
        want_states = set(states)
        want_users = set(users)
        # A pending job's priority is current at a pass only if the pass reached it.
        fresh_priority = fields is None or "priority" in fields
        fairshare: Callable[[str], float] | None = None
        for job in pool:
            if want_states:
                if job.state.value not in want_states:
                    continue
            elif job.state.terminal and not include_finished and job_ids is None:
                continue
            if want_users and job.user not in want_users:
                continue
            if fresh_priority and job.job_id in self.pending:
                fairshare = fairshare or self.priorities_at(now).fairshare
                job.priority = self.pending.priority(job, now, fairshare)
            rows.append(job.to_wire(now, fields))
        return rows

    # ---- job events from nodes -----------------------------------------------------------

    def job_of_node(self, node_id: str, job_id: int) -> Job | None:
        job = self.jobs.get(job_id)
        if job is None or job.node_id != node_id or job.state is not JobState.RUNNING:
            return None
        return job

    def job_started(self, node_id: str, job_id: int, pid: int) -> None:
        job = self.job_of_node(node_id, job_id)
        if job is not None:
            job.pid = pid
            self.store.put_job(job)

    def job_exited(self, node_id: str, event: dict[str, Any], now: float) -> None:
        # Acked in any case (sent after this turn's commit): the node may forget the exit.
        self.outbox.append(ToNode(node_id, {"t": "exit_ack", "job_id": event["job_id"]}))
        job = self.job_of_node(node_id, event["job_id"])
        if job is None:
            return  # already failed over or cancelled while the node was away
        run = event["restart_count"]
        if run is not None and run != job.restart_count:
            return  # a late exit of an earlier run of a requeued job
        if job.requeue_requested and not job.cancel_requested:
            self._requeue(job, now, why="requeued by request", reason="Requeued")
            return
        job.exit_code = event["exit_code"]
        job.signal = event["signal"]
        state = final_state(
            exit_code=job.exit_code,
            signal=job.signal,
            cancelled=job.cancel_requested,
            timed_out=event["timed_out"],
        )
        self._finish(job, state, now, reason=event["reason"])

    def _node_failed(self, job: Job, now: float, *, reason: str) -> None:
        """A job lost with its node: requeued if it asked for that (batch default), else
        NODE_FAIL. A job being cancelled is not brought back."""
        if not job.spec.requeue or job.cancel_requested:
            self._finish(job, JobState.NODE_FAIL, now, reason=reason)
            return
        self._requeue(job, now, why=reason, reason="NodeFail")

    def _requeue(self, job: Job, now: float, *, why: str, reason: str) -> None:
        """RUNNING -> REQUEUED -> PENDING with the same id: its priority puts it back in its
        place; restart_count tells the next run it is one."""
        node = self.nodes.get(job.node_id)
        if node is not None:
            node.release(job.job_id, job.spec.cpus, job.spec.mem_bytes)
        log.warning("job=%d node=%s state=REQUEUED reason=%s", job.job_id, job.node_id, why)
        job.transition(JobState.REQUEUED, now, why)
        job.transition(JobState.PENDING, now, reason)
        self.turns.ended(job.job_id, now, "requeued")
        job.restart_count += 1
        self.changed = True
        self.running.remove(job.job_id)
        job.node_id = ""
        job.gpu_indices = ()
        job.pid = 0
        job.cancel_requested = job.requeue_requested = False
        self.store.put_job(job)
        self.pending.add(job)

    def _finish(self, job: Job, state: JobState, now: float, *, reason: str) -> None:
        job.transition(state, now, reason)
        self.turns.ended(job.job_id, now)
        self.changed = True
        if self.running.remove(job.job_id) is not None:
            self.usage.add(job.user, job_usage_gpu_s(job), now, now)
        node = self.nodes.get(job.node_id)
        if node is not None:
            node.release(job.job_id, job.spec.cpus, job.spec.mem_bytes)
        self.store.put_job(job)
        log.info(
            "job=%d node=%s state=%s exit=%s signal=%s elapsed_s=%.3f",
            job.job_id,
            job.node_id or "-",
            state.value,
            job.exit_code,
            job.signal,
            job.elapsed_s(now),
        )
        self.outbox.append(ToWatchers(job.job_id, ended_event(job)))

    def priorities_at(self, now: float) -> Priorities:
        """The priority factors now: O(running jobs + users), whatever the queue's length."""
        running = self.running
        users = self.pending.users() | running.users()
        return Priorities(
            self.policy, self.usage, (), now, live=running.live_usage(now), users=users
        )

    def _set_reason(self, job: Job, reason: str) -> None:
        if job.reason != reason:
            job.reason = reason
            if job.spec.interactive:
                self.outbox.append(ToWatchers(job.job_id, state_event(job)))


def _effect_job_id(effect: Effect) -> int | None:
    msg = effect.msg
    if "launch" in msg:
        return int(msg["launch"]["job_id"])
    job_id = msg.get("job_id")
    return job_id if isinstance(job_id, int) else None
