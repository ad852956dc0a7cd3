"""The master's state: jobs, nodes, and every change to them. Synchronous and I/O-free.

Handlers mutate state, record changed jobs in the store, and append messages to
:attr:`Cluster.outbox` (to a node, or to whoever watches a job). The server commits the store
and only then sends the outbox, so nothing leaves the master that is not stored. Keeping the
sockets out makes every rule here testable with plain function calls and a fake clock.
"""

from __future__ import annotations

import logging
from typing import Any

from mgpu_core.deps import DepStatus, evaluate, parse_dependency
from mgpu_core.errors import (
    InvalidJobState,
    JobNotFound,
    MgpuError,
)
from mgpu_core.states import JobState, final_state
from mgpu_server import scheduler
from mgpu_server.effects import Effect, ToNode, ToWatchers
from mgpu_server.jobctl import JobControl
from mgpu_server.jobs import Job, ended_event, state_event
from mgpu_server.nodes import NodeRecord
from mgpu_server.policy import PolicyConfig, Priorities, Usage, job_usage_gpu_s
from mgpu_server.registry import NodeEvents
from mgpu_server.store import Store
from mgpu_server.submission import Submission
from mgpu_server.turnctl import TURNS_KEY, TurnControl
from mgpu_server.turns import TurnQueue

log = logging.getLogger(__name__)


class Cluster(Submission, NodeEvents, JobControl, TurnControl):
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
        # Insertion order is submission order; a dict gives O(1) removal and ordered iteration.
        self.pending: dict[int, Job] = {}
        self.running: dict[int, Job] = {}
        self.arrays: dict[int, list[int]] = {}  # array id -> its tasks' job ids
        self.nodes: dict[str, NodeRecord] = {}
        self.policy = policy or PolicyConfig()
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
                self.pending[job.job_id] = job
            elif job.state is JobState.RUNNING:
                self.running[job.job_id] = job
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
            self.pending.pop(job.job_id, None)
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
            del self.pending[job_id]
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
        for job in pool:
            if want_states:
                if job.state.value not in want_states:
                    continue
            elif job.state.terminal and not include_finished and job_ids is None:
                continue
            if want_users and job.user not in want_users:
                continue
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
        self.running.pop(job.job_id, None)
        job.node_id = ""
        job.gpu_indices = ()
        job.pid = 0
        job.cancel_requested = job.requeue_requested = False
        self.store.put_job(job)
        self.pending[job.job_id] = job

    def _finish(self, job: Job, state: JobState, now: float, *, reason: str) -> None:
        job.transition(state, now, reason)
        self.turns.ended(job.job_id, now)
        self.changed = True
        if self.running.pop(job.job_id, None) is not None:
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

    # ---- scheduling ----------------------------------------------------------------------

    def schedule(self, now: float) -> int:
        """One pass: order by priority, hold back the ineligible, start what fits (with
        backfill), update pending reasons. Returns the number of jobs started."""
        if not self.pending or not self.changed:
            return 0
        self.changed = False
        priorities = Priorities(
            self.policy, self.usage, [*self.running.values(), *self.pending.values()], now
        )
        for job in self.pending.values():
            job.priority = priorities.of(job)
        ordered = sorted(self.pending.values(), key=lambda j: (-j.priority, j.job_id))
        self.wakeup_at = None
        eligible = self._eligible(ordered, now)
        eligible, turn_entries = self._turn_order(eligible)
        plan = scheduler.plan(
            [self._pending_view(j) for j in eligible],
            self._node_views(),
            now=now,
            loads=self._user_loads(),
            reserve=not self.turns.enabled,  # in turn order, a job that does not fit is skipped
        )
        for start in plan.starts:
            job = self.pending.pop(start.job_id)
            self._start(job, start, now)
            if start.job_id in turn_entries:
                entry, length = turn_entries[start.job_id]
                self.turns.granted(entry, length, job.user, job.job_id, now)
                self.store.put_setting(TURNS_KEY, self.turns.to_settings())
        for job_id, reason in plan.reasons.items():
            self._set_reason(self.pending[job_id], reason)
        if plan.starts and any(j.spec.dependency for j in self.pending.values()):
            self.changed = True  # an `after:` dependency may be met by what just started
        return len(plan.starts)

    def _eligible(self, ordered: list[Job], now: float) -> list[Job]:
        """The jobs the scheduler may consider, in order; the others get their reason."""
        eligible = []
        # Tasks of throttled arrays (%N) running or offered in this pass, per array.
        array_slots: dict[int, int] = {}
        for job in self.running.values():
            if job.array_throttle and job.array_job_id is not None:
                array_slots[job.array_job_id] = array_slots.get(job.array_job_id, 0) + 1
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
                eligible.append(job)
        return eligible

    def _set_reason(self, job: Job, reason: str) -> None:
        if job.reason != reason:
            job.reason = reason
            if job.spec.interactive:
                self.outbox.append(ToWatchers(job.job_id, state_event(job)))

    def _held_back(self, job: Job, now: float) -> str:
        """Why a pending job may not be considered at all (hold, dependency), or ""."""
        if job.hold:
            return "JobHeldAdmin" if job.hold == "admin" else "JobHeldUser"
        if job.spec.begin_time > now:
            # The one moment a pass is due without an event: the server sets a timer for the
            # earliest such time instead of polling.
            if self.wakeup_at is None or job.spec.begin_time < self.wakeup_at:
                self.wakeup_at = job.spec.begin_time
            return "BeginTime"
        if not job.spec.dependency:
            return ""
        dep = parse_dependency(job.spec.dependency)
        status = evaluate(dep, self._state_of, singleton_clear=self._singleton_clear(job))
        if status is DepStatus.OK:
            return ""
        if status is DepStatus.WAIT:
            return "Dependency"
        if job.spec.kill_on_invalid_dep:
            del self.pending[job.job_id]
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
        releases: dict[str, list[scheduler.Release]] = {}
        for job in self.running.values():
            spec = job.spec
            limit = spec.time_limit_s + self.policy.qos_of(spec.qos).grace_s
            end = job.start_time + limit if spec.time_limit_s else scheduler.INF
            release = scheduler.Release(end, spec.gpus, spec.cpus, spec.mem_bytes)
            releases.setdefault(job.node_id, []).append(release)
        views = []
        for node in self.nodes.values():
            view = node.view()
            view.releases = releases.get(node.node_id, [])
            views.append(view)
        return views

    def _user_loads(self) -> dict[str, scheduler.UserLoad]:
        loads: dict[str, scheduler.UserLoad] = {}
        for job in self.running.values():
            load = loads.setdefault(job.user, scheduler.UserLoad())
            load.gpus += job.spec.gpus
            load.jobs += 1
        return loads

    def _start(self, job: Job, start: scheduler.Start, now: float) -> None:
        node = self.nodes[start.node_id]
        node.allocate(job.job_id, start.gpu_indices, job.spec.cpus, job.spec.mem_bytes)
        job.node_id = node.node_id
        job.gpu_indices = start.gpu_indices
        job.transition(JobState.RUNNING, now)
        self.running[job.job_id] = job
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


def _effect_job_id(effect: Effect) -> int | None:
    msg = effect.msg
    if "launch" in msg:
        return int(msg["launch"]["job_id"])
    job_id = msg.get("job_id")
    return job_id if isinstance(job_id, int) else None
