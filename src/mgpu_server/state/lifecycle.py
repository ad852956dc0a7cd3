"""The one writer of a job's life: every state transition of a job, and every index kept
around it, changes here and nowhere else.

A job's state lives in the job table; around it the master keeps indexes that must agree
with it at every moment: the pending queue (PENDING jobs, in priority order or parked), the
running totals (RUNNING jobs: per-user loads, what each node frees and when), the nodes'
allocations (which GPUs each RUNNING job holds), the dependency index, fair-share usage, the
turn queue's grants, the running job steps, the store (what the next commit writes) and the
outbox (what leaves after it). Each verb below moves one job and updates all of them
together, so no caller writes an index by hand and none can forget one: a property test
(tests/server/test_lifecycle_properties) drives random sequences of verbs, failed commits
included, and recounts every index after each step.

The verbs: :meth:`submit`, :meth:`start`, :meth:`finish`, :meth:`requeue` (and
:meth:`node_lost`, :meth:`exited`, :meth:`cancel`, which pick one of those), the pending-side
changes (:meth:`set_hold`, :meth:`replace`, :meth:`admit_due`), :meth:`forget` and the undo
of a turn whose commit failed (:meth:`undo_turn`). Why a pending job waits is
:mod:`mgpu_server.state.waitrules`'s to say.
"""

from __future__ import annotations

import logging
from collections import deque

from mgpu_core.errors import InvalidJobState
from mgpu_core.models import JobExited
from mgpu_core.reasons import Reason
from mgpu_core.states import Hold, JobState, final_state
from mgpu_server.records.jobs import Job, ended_event, state_event
from mgpu_server.records.nodes import NodeRecord
from mgpu_server.scheduling.policy import PolicyConfig, Usage
from mgpu_server.scheduling.turns import TurnQueue
from mgpu_server.state.depwait import DependencyIndex
from mgpu_server.state.effects import Outbox, launch_order
from mgpu_server.state.notices import ended_notice
from mgpu_server.state.pending import PendingQueue
from mgpu_server.state.registry import NodeRegistry
from mgpu_server.state.running import RunningJobs
from mgpu_server.state.steps import StepTable
from mgpu_server.state.table import JobTable
from mgpu_server.state.waitrules import PARKED, StartRule, WaitRules
from mgpu_server.storage.store import Store

log = logging.getLogger(__name__)


class Lifecycle:
    def __init__(
        self,
        *,
        table: JobTable,
        nodes: NodeRegistry,
        pending: PendingQueue,
        running: RunningJobs,
        usage: Usage,
        turns: TurnQueue,
        store: Store,
        outbox: Outbox,
        policy: PolicyConfig,
        kill_grace_s: float,
        start_rule: StartRule,
    ) -> None:
        self.table = table
        self.nodes = nodes
        self.pending = pending
        self.running = running
        self.usage = usage
        self.turns = turns
        self.store = store
        self.outbox = outbox
        self.policy = policy
        self.kill_grace_s = kill_grace_s
        # A dependency on a job gone from memory asks the history for its end state.
        self.deps = DependencyIndex(stored_state=store.history.state_of)
        # Finished jobs in the order they ended: evict() lets them go from memory.
        self.finished: deque[int] = deque()
        # For /metrics, taken by the server each turn: submissions, and each start's wait.
        self.submitted = 0
        self.start_waits: list[float] = []
        self.steps = StepTable(store)
        self.waits = WaitRules(
            table=table, deps=self.deps, turns=turns, policy=policy, start_rule=start_rule
        )
        # Jobs submitted in the current loop turn: forgotten if the turn's commit fails.
        self.new_jobs: list[Job] = []
        self._to_wake: list[Job] = []  # jobs whose dependents are evaluated next
        self._waking = False

    # ---- arrival -------------------------------------------------------------------------

    def restore(self, job: Job, now: float) -> None:
        """A stored job at start-up, indexed as it was (no transition, nothing written).
        Pending jobs come in parked; :meth:`settle` places them once every job is loaded (a
        dependency or a singleton may name a job loaded later)."""
        self.table.add(job)
        if job.state is JobState.PENDING:
            self.deps.add(job)
            self.pending.add(job, parked=True)
        elif job.state is JobState.RUNNING:
            self.deps.add(job)
            self.running.add(job)
            node = self.nodes.get(job.node_id)
            if node is not None and all(i < len(node.gpus) for i in job.gpu_indices):
                node.allocate(
                    job.job_id, job.gpu_indices, job.spec.cpus, job.spec.mem_bytes, job.ports
                )
                self.nodes.recount(node)
        elif job.end_time:
            self.usage.add(job.user, job.usage_gpu_s(), job.end_time, now)
        if job.state.terminal:
            self.finished.append(job.job_id)  # ClusterState sorts them by end once loaded

    def settle(self, now: float) -> None:
        """Place every restored pending job: in the order, or parked with its reason."""
        for job in list(self.pending.values()):
            self._place(job, now)

    def submit(self, job: Job, now: float) -> None:
        """A new PENDING job: into the table, the queue (parked if it cannot run yet), the
        dependency index and this turn's journal."""
        self.table.add(job)
        self.deps.add(job)
        reason = self.waits.reason(job, now)
        job.reason = reason or Reason.PRIORITY
        self.pending.add(job, parked=reason is not None)
        self.new_jobs.append(job)
        self._changed(job)
        log.info("job=%d user=%s state=PENDING gpus=%d", job.job_id, job.user, job.spec.gpus)
        self.submitted += 1
        if reason is Reason.DEPENDENCY_NEVER and job.spec.kill_on_invalid_dep:
            self.finish(job, JobState.CANCELLED, now, reason=Reason.DEPENDENCY_NEVER)

    # ---- running and ending --------------------------------------------------------------

    def start(
        self, job: Job, node_id: str, gpu_indices: tuple[int, ...], now: float, partition: str = ""
    ) -> None:
        """PENDING -> RUNNING on ``node_id`` (in ``partition``) with exactly these GPUs; the
        node is told."""
        node = self.nodes[node_id]
        ports = node.free_ports(job.spec.ports)  # the planner saw that there are enough
        node.allocate(job.job_id, gpu_indices, job.spec.cpus, job.spec.mem_bytes, ports)
        job.ports = ports
        self.nodes.recount(node)
        node.launch_seq += 1
        job.launch_seq = node.launch_seq
        self.pending.remove(job.job_id)
        job.node_id, job.gpu_indices, job.partition = node_id, gpu_indices, partition
        job.transition(JobState.RUNNING, now)
        if len(self.start_waits) < 100_000:  # taken each turn by a server; bounded without one
            self.start_waits.append(now - max(job.submit_time, job.spec.begin_time))
        self.running.add(job)
        self.deps.started(job)
        # Not "changed": a start takes resources and can make no other job runnable, but
        # for the dependents it satisfies (woken below, which sets it for them).
        self.store.put_job(job)
        gpus = ",".join(map(str, gpu_indices)) or "-"
        log.info(
            "job=%d user=%s node=%s state=RUNNING gpus=%s", job.job_id, job.user, node_id, gpus
        )
        order = launch_order(
            job,
            kill_grace_s=self.kill_grace_of(job),
            cluster_name=self.policy.cluster_name,
            grace_s=self.policy.session_grace_of(job.spec),
        )
        self.outbox.to_node(node_id, order)
        self.outbox.to_watchers(job.job_id, state_event(job))  # srun, attach (if any)
        self.outbox.notify("BEGIN", job, now)
        self._wake(job, now)

    def finish(self, job: Job, state: JobState, now: float, *, reason: str) -> None:
        """PENDING or RUNNING -> a terminal state; whatever the job held is freed."""
        self.pending.remove(job.job_id)
        job.transition(state, now, reason)
        self._release(job, now)
        self.deps.left(job)
        self._changed(job)
        log.info(
            "job=%d user=%s node=%s state=%s exit=%s signal=%s elapsed_s=%.3f",
            job.job_id,
            job.user,
            job.node_id or "-",
            state.value,
            job.exit_code,
            job.signal,
            job.elapsed_s(now),
        )
        self.outbox.to_watchers(job.job_id, ended_event(job))
        self.outbox.notify(ended_notice(job), job, now)
        self.finished.append(job.job_id)
        self._wake(job, now)

    def evict(self, ended_before_s: float) -> int:
        """Let go from memory the finished jobs that ended before ``ended_before_s``: they
        are stored, and the history answers for them from then on. O(jobs let go)."""
        evicted = 0
        unstored = {j.job_id for j in self.new_jobs}  # this turn's: undone if it fails
        while self.finished:
            job = self.table.jobs.get(self.finished[0])
            if job is not None and job.state.terminal and job.end_time >= ended_before_s:
                break
            if job is not None and job.job_id in unstored:
                break
            self.finished.popleft()
            if job is None or not job.state.terminal:
                continue  # already gone, or requeued since (it will end again)
            self.table.remove(job)
            self.steps.forget(job.job_id)
            evicted += 1
        return evicted

    def requeue(self, job: Job, now: float, *, why: str, reason: str) -> None:
        """RUNNING -> REQUEUED -> PENDING with the same id: its priority puts it back in its
        place; restart_count tells the next run it is one."""
        log.warning("job=%d node=%s state=REQUEUED reason=%s", job.job_id, job.node_id, why)
        job.transition(JobState.REQUEUED, now, why)
        job.transition(JobState.PENDING, now, reason)
        self._release(job, now, how="requeued")
        job.restart_count += 1
        job.node_id = ""
        job.gpu_indices = ()
        job.pid = 0
        job.cancel_requested = job.requeue_requested = job.timed_out = False
        job.launch_seq = 0
        self.deps.requeued(job)
        wait = self.waits.reason(job, now)
        if wait is not None:
            job.reason = wait
        self.pending.add(job, parked=wait is not None)
        self._changed(job)
        self.outbox.notify("REQUEUE", job, now)
        self._wake(job, now)

    def exited(self, job: Job, event: JobExited, now: float) -> None:
        """The node reports the job's process ended: requeued if an admin asked for that,
        else its final state, Slurm's way (a cancel wins over how the process died)."""
        if job.requeue_requested and not job.cancel_requested:
            self.requeue(job, now, why="requeued by request", reason=Reason.REQUEUED)
            return
        job.exit_code, job.signal = event.exit_code, event.signal
        job.output_bytes = event.output_bytes
        state = final_state(
            exit_code=event.exit_code,
            signal=event.signal,
            cancelled=job.cancel_requested,
            timed_out=event.timed_out,
            oom_killed=event.oom_killed,
        )
        self.finish(job, state, now, reason=event.reason)

    def node_lost(self, job: Job, now: float, *, reason: str) -> None:
        """A job known dead with its node (fenced by time, or gone from the node's list): a
        cancel or a time limit that was waiting for the node ends as asked; else requeued if
        it asked for that (batch default), else NODE_FAIL."""
        if job.cancel_requested:
            self.finish(job, JobState.CANCELLED, now, reason=f"cancelled; {reason}")
        elif job.timed_out:
            self.finish(job, JobState.TIMEOUT, now, reason=f"time limit; {reason}")
        elif job.spec.requeue:
            self.requeue(job, now, why=reason, reason=Reason.NODE_FAIL)
        else:
            self.finish(job, JobState.NODE_FAIL, now, reason=reason)

    def cancel(self, job: Job, now: float, *, by: str = "") -> None:
        """A pending job ends CANCELLED now; a running one is killed by its node and ends
        CANCELLED when the node reports its exit. ``by``: who asked (the first one)."""
        if job.state is JobState.PENDING:
            job.cancelled_by = by
            self.finish(job, JobState.CANCELLED, now, reason="cancelled while pending")
            return
        if job.state is not JobState.RUNNING:
            raise InvalidJobState(f"job {job.job_id} already finished ({job.state.value})")
        if job.cancel_requested:
            return
        job.cancel_requested, job.cancelled_by = True, by
        self.store.put_job(job)
        node = self.nodes.get(job.node_id)
        if node is not None and node.connected:
            self.outbox.to_node(job.node_id, _kill(job.job_id, "cancelled"))
        else:
            # Its GPUs stay held until the job is known gone: the node confirms the exit when
            # it is back (the kill is sent again then), or the node is fenced.
            self.set_reason(job, f"cancel waits for node {job.node_id} (unreachable)")

    def ask_requeue(self, job: Job) -> None:
        """Stop a running job so that it goes back to the queue when its node reports the exit."""
        if job.state is not JobState.RUNNING:
            raise InvalidJobState(f"cannot requeue job {job.job_id}: it is {job.state.value}")
        if not job.requeue_requested:
            job.requeue_requested = True
            self.outbox.to_node(job.node_id, _kill(job.job_id, "requeued"))

    def still_running(self, job: Job, node: NodeRecord) -> None:
        """A node that registers again still runs this job: its new record holds the job's
        GPUs, CPUs and memory again, and a stop asked while it was away is asked again."""
        job.launch_seq = 0  # launched on an earlier link: every heartbeat on this one counts
        if all(i < len(node.gpus) for i in job.gpu_indices):
            node.allocate(job.job_id, job.gpu_indices, job.spec.cpus, job.spec.mem_bytes, job.ports)
            self.nodes.recount(node)
        # else its GPUs are gone from the node; the job keeps running, unaccounted
        stop = (
            "cancelled"
            if job.cancel_requested
            else "requeued"
            if job.requeue_requested
            else "time limit"
            if job.timed_out
            else ""
        )
        if stop:
            self.outbox.to_node(node.node_id, _kill(job.job_id, stop))

    def timed_out_away(self, job: Job) -> None:
        """A running job passed its time limit (and grace) while its node is unreachable: it
        ends TIMEOUT once the node confirms (its agent and guard enforce the limit) or is
        fenced; its GPUs stay held until then."""
        if not job.timed_out:
            job.timed_out = True
            self.set_reason(job, f"time limit reached; waiting for node {job.node_id}")

    def kill_grace_of(self, job: Job) -> float:
        """SIGTERM to SIGKILL for this job on its node (the launch carries it)."""
        return max(self.kill_grace_s, self.policy.qos_of(job.spec.qos).grace_s)

    def record_pid(self, job: Job, pid: int) -> None:
        job.pid = pid
        self.store.put_job(job)

    # ---- pending jobs --------------------------------------------------------------------

    def set_hold(self, job: Job, hold: Hold, now: float) -> None:
        """Hold (out of every pass) or release (back at its place by priority)."""
        job.hold = hold
        self._changed(job)
        self._place(job, now)

    def replace(self, job: Job) -> None:
        """A pending job's request, QoS, nice or admin priority changed: re-place it."""
        self.pending.refresh(job)
        self._changed(job)

    def running_changed(self, job: Job) -> None:
        """A running job's spec changed (a session's TTL): stored, and its end re-planned."""
        self.running.add(job)  # again: its release (end) moves with its limit
        self._changed(job)

    def reconsider(self, job: Job, now: float) -> None:
        """A rule about a pending job changed (its user's GPU access, its QoS or GPUs): park
        it with the rule's reason, or put it back in the order."""
        self._place(job, now)

    def refusal(self, job: Job) -> Reason | None:
        """Why an admin's rule keeps the job from starting now, or None."""
        return self.waits.refusal(job)

    def admit_due(self, now: float) -> None:
        """Jobs whose --begin time has come may run (unless held or waiting otherwise)."""
        for job_id in self.pending.due(now):
            self._place(self.table.jobs[job_id], now)

    def set_reason(self, job: Job, reason: str, expected_start: float | None = None) -> None:
        """A pending job's reason (and, from a pass, its reserved start: 0 = not known); its
        followers (srun, attach) are told when either changes (the start by a second or more)."""
        moved = expected_start is not None and abs(expected_start - job.expected_start) >= 1.0
        if expected_start is not None:
            job.expected_start = expected_start
        if job.reason != reason or moved:
            job.reason = reason
            self.outbox.to_watchers(job.job_id, state_event(job))

    # ---- forgetting ----------------------------------------------------------------------

    def forget(self, job: Job, now: float) -> None:
        """Drop a job from the table and every index, as if it had never been (used to undo a
        submission whose commit failed)."""
        self.pending.remove(job.job_id)
        self._release(job, now, how="undone", usage=False)
        self.deps.left(job)
        self.table.remove(job)
        self.store.discard_job(job.job_id)
        self.outbox.changed = True
        self._wake(job, now)

    def undo_turn(self, now: float) -> set[int]:
        """Forget this turn's submissions (their commit failed) and what was to be sent about
        them; returns their ids."""
        ids = {job.job_id for job in self.new_jobs}
        for job in reversed(self.new_jobs):
            self.forget(job, now)
        self.new_jobs.clear()
        self.outbox.drop_jobs(ids)
        return ids

    def end_turn(self) -> int:
        """This turn's submissions are stored; returns how many there were."""
        count = len(self.new_jobs)
        self.new_jobs.clear()
        return count

    # ---- internals -----------------------------------------------------------------------

    def _release(self, job: Job, now: float, *, how: str = "end", usage: bool = True) -> None:
        """Free what a job held: its node's GPUs, CPUs and memory, its place in the running
        totals (charged to fair-share usage), its turn; its steps still running end."""
        self.turns.ended(job.job_id, now, how)
        self.steps.run_ended(job, now)
        if self.running.remove(job.job_id) is not None and usage:
            self.usage.add(job.user, job.usage_gpu_s(), now, now)
        node = self.nodes.get(job.node_id)
        if node is not None:
            node.release(job.job_id, job.spec.cpus, job.spec.mem_bytes)
            self.nodes.recount(node)

    def _changed(self, job: Job) -> None:
        self.store.put_job(job)
        self.outbox.changed = True

    def _place(self, job: Job, now: float) -> None:
        """Park or unpark a pending job after what it waits on changed; cancel it if its
        dependency can never be met and it asked for that (--kill-on-invalid-dep)."""
        if job.state is not JobState.PENDING:
            return
        wait = self.waits.reason(job, now)
        if wait is None:
            self.pending.unpark(job)
            if job.reason in PARKED:
                self.set_reason(job, Reason.PRIORITY)
            self.outbox.changed = True
            return
        if wait is Reason.DEPENDENCY_NEVER and job.spec.kill_on_invalid_dep:
            self.finish(job, JobState.CANCELLED, now, reason=Reason.DEPENDENCY_NEVER)
            return
        self.pending.park(job.job_id)
        self.set_reason(job, wait)

    def _wake(self, job: Job, now: float) -> None:
        """Re-place the jobs whose dependency names ``job`` (or shares its singleton name).
        A worklist, not recursion: a chain of --kill-on-invalid-dep jobs ends one by one."""
        self._to_wake.append(job)
        if self._waking:
            return
        self._waking = True
        try:
            while self._to_wake:
                changed = self._to_wake.pop()
                for job_id in self.deps.affected(changed):
                    dependent = self.table.jobs.get(job_id)
                    if dependent is not None:
                        self._place(dependent, now)
        finally:
            self._waking = False


def _kill(job_id: int, reason: str) -> dict[str, object]:
    return {"t": "kill", "job_id": job_id, "reason": reason}
