"""The master's state: composed parts that each own their data, and the verbs the request and
network sides call. Synchronous and I/O-free.

Parts: the job table (jobs, arrays, references), the node registry, the pending queue (in
priority order, or parked), the running totals, the GPU turn queue, fair-share usage. Every
job transition, and every index kept around it, goes through the lifecycle (the one writer);
submission, job control, the turn queue's verbs and the scheduling pass call it. What must
leave the master is collected in the outbox; the server commits the store and only then sends
it, so nothing leaves that is not stored. Keeping the sockets out makes every rule here
testable with plain function calls and a fake clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from mgpu_core.constants import FENCE_TIMEOUT_S, TURNS_KEY
from mgpu_core.limits import MAX_REASON_LEN, shorten
from mgpu_core.models import GpuSample, JobExited, JobSpec, NodeHello
from mgpu_core.states import JobState
from mgpu_server.records.jobs import ROW_FIELDS, Job, row_builder
from mgpu_server.records.nodes import NodeRecord
from mgpu_server.scheduling.policy import PolicyConfig, Priorities, Usage
from mgpu_server.scheduling.turns import TurnQueue
from mgpu_server.state.effects import Effect, Outbox
from mgpu_server.state.idle import IdleWatch
from mgpu_server.state.jobctl import JobControl
from mgpu_server.state.lifecycle import Lifecycle
from mgpu_server.state.listing import Selection
from mgpu_server.state.notices import TimeLimitNotices
from mgpu_server.state.pending import PendingQueue
from mgpu_server.state.quota import DEFAULT_LIMITS, SubmitQuota, UserLimits
from mgpu_server.state.registry import NodeRegistry
from mgpu_server.state.running import RunningJobs
from mgpu_server.state.schedpass import PassStats, SchedulingPass
from mgpu_server.state.submission import Submission
from mgpu_server.state.table import JobTable
from mgpu_server.state.turnctl import TurnControl
from mgpu_server.state.waitrules import StartRule
from mgpu_server.storage.history import KEEP_IN_MEMORY_S
from mgpu_server.storage.store import Store

log = logging.getLogger(__name__)

# Added to the fence and kill grace before a silent node's jobs count as dead: the guard polls
# its lease about once a second, and a loaded host delays a signal's effect a little.
FENCE_MARGIN_S = 5.0


class ClusterState:
    def __init__(
        self,
        store: Store,
        *,
        kill_grace_s: float,
        node_timeout_s: float,
        now: float,
        policy: PolicyConfig,
        start_rule: StartRule,
        fence_timeout_s: float = FENCE_TIMEOUT_S,
        keep_finished_s: float = KEEP_IN_MEMORY_S,
        limits: UserLimits = DEFAULT_LIMITS,
    ) -> None:
        """``start_rule``: api.permissions.start_refusal (see :class:`Lifecycle`)."""
        self.store = store
        self.fence_timeout_s = fence_timeout_s
        self.keep_finished_s = keep_finished_s  # then only the history has a finished job
        self.policy = policy
        self.outbox = Outbox()
        self.table = JobTable(store.next_job_id(), store.history)
        self.nodes = NodeRegistry(store, self.outbox, node_timeout_s=node_timeout_s)
        self.pending = PendingQueue(policy)
        self.running = RunningJobs(policy)
        self.usage = Usage(policy.half_life_s)
        turns = TurnQueue.from_settings(store.get_setting(TURNS_KEY))
        self.lifecycle = Lifecycle(
            table=self.table,
            nodes=self.nodes,
            pending=self.pending,
            running=self.running,
            usage=self.usage,
            turns=turns,
            store=store,
            outbox=self.outbox,
            policy=policy,
            kill_grace_s=kill_grace_s,
            start_rule=start_rule,
        )
        self.steps = self.lifecycle.steps
        self.submission = Submission(
            table=self.table,
            nodes=self.nodes,
            policy=policy,
            lifecycle=self.lifecycle,
            quota=SubmitQuota(limits),
        )
        self._compose_verbs(turns)
        self.wakeup_at: float | None = None  # earliest --begin of a pending job, per pass
        self.pass_stats = PassStats()
        self.time_limit_notices = TimeLimitNotices()
        self.idle = IdleWatch(
            policy,
            self.outbox,
            end=lambda job, now: self.lifecycle.cancel(job, now, by="idle policy"),
        )
        # What the store holds: nodes (down until they reconnect), then the jobs, then the
        # pending ones placed (a dependency may name a job loaded after it).
        self.nodes.load(now)
        for job in store.load_jobs():
            self.lifecycle.restore(job, now)
        self.lifecycle.settle(now)
        finished = self.lifecycle.finished  # loaded in id order: evict() wants end order
        ended = sorted(finished, key=lambda i: self.table.jobs[i].end_time)
        finished.clear()
        finished.extend(ended)
        self.steps.load(store.load_steps())

    def _compose_verbs(self, turns: TurnQueue) -> None:
        self.control = JobControl(
            table=self.table,
            pending=self.pending,
            lifecycle=self.lifecycle,
            submission=self.submission,
            priorities_at=self.priorities_at,
            nodes=self.nodes,
            outbox=self.outbox,
        )
        self.turns = TurnControl(
            turns,
            table=self.table,
            pending=self.pending,
            lifecycle=self.lifecycle,
            store=self.store,
            outbox=self.outbox,
        )
        self.scheduler = SchedulingPass(
            pending=self.pending,
            running=self.running,
            nodes=self.nodes,
            policy=self.policy,
            lifecycle=self.lifecycle,
            turns=self.turns,
            priorities_at=self.priorities_at,
        )

    # ---- the per-turn flush --------------------------------------------------------------

    @property
    def needs_pass(self) -> bool:
        return bool(self.pending) and self.outbox.changed

    def schedule(self, now: float) -> int:
        """One scheduling pass if anything changed since the last; returns jobs started."""
        if not self.needs_pass:
            return 0
        self.outbox.changed = False
        began_s = time.perf_counter()
        started, more = self.scheduler.run(now)
        self.pass_stats.record(time.perf_counter() - began_s, len(self.pending))
        if more:
            self.outbox.changed = True  # the queue goes on below the depth examined
        self.wakeup_at = self.pending.next_begin()
        return started

    def wake(self) -> None:
        """A --begin time came: the next flush runs a pass."""
        self.outbox.changed = True

    def take_effects(self) -> list[Effect]:
        return self.outbox.take()

    def undo_turn(self, now: float) -> set[int]:
        """The turn's commit failed: forget its submissions (their ids are returned)."""
        return self.lifecycle.undo_turn(now)

    def end_turn(self) -> int:
        """The turn's commit succeeded; returns how many jobs it submitted."""
        return self.lifecycle.end_turn()

    # ---- clients -------------------------------------------------------------------------

    def submit(self, user: str, spec: JobSpec, now: float, *, limited: bool = False) -> Job:
        """Accept a job (or a job array: one job per task); returns the (first) job.
        ``limited``: the per-user limits apply (LimitExceeded)."""
        return self.submission.submit(user, spec, now, limited=limited)

    def trial(self, user: str, spec: JobSpec, now: float) -> tuple[float, str, str]:
        """sbatch --test-only: check a job as :meth:`submit` does, queue and store nothing,
        and say when, where and in which partition it would start (the time 0 if unknown:
        it would wait for a hold, a dependency or a --begin time, or its start is not known;
        :meth:`SchedulingPass.estimate`)."""
        job = self.submission.trial(user, spec, now)
        if self.lifecycle.waits.reason(job, now) is not None:
            return 0.0, "", job.spec.partition.split(",")[0]
        return self.scheduler.estimate(job, now)

    def get(self, job_id: int) -> Job:
        return self.table.get(job_id)

    def priorities_at(self, now: float) -> Priorities:
        """The priority factors now: O(running jobs + users), whatever the queue's length."""
        running = self.running
        users = self.pending.users() | running.users()
        return Priorities(self.policy, self.usage, now, live=running.live_usage(now), users=users)

    def list_jobs(
        self,
        *,
        users: list[str],
        states: list[str],
        job_ids: list[int] | None,
        include_finished: bool,
        now: float,
        fields: list[str] | None = None,
        names: list[str] | None = None,
        window: tuple[float | None, float | None] = (None, None),
    ) -> list[dict[str, Any]]:
        """Queue rows. ``job_ids`` None = every job; a list (even empty) = only those (finished
        ones too). The filters are :class:`~mgpu_server.state.listing.Selection`'s."""
        jobs = self.table.jobs
        pool = jobs.values() if job_ids is None else [jobs[i] for i in job_ids]
        rows = []
        selection = Selection.of(
            users=users,
            states=states,
            names=names or (),
            finished=include_finished or job_ids is not None,
            window=window,
        )
        # A pending job's priority is current at a pass only if the pass reached it.
        fresh_priority = fields is None or "priority" in fields
        fairshare: Callable[[str], float] | None = None
        build = row_builder(tuple(ROW_FIELDS) if fields is None else tuple(fields))  # once
        for job in pool:
            if not selection.admits(job):
                continue
            if fresh_priority and job.job_id in self.pending:
                fairshare = fairshare or self.priorities_at(now).fairshare
                job.priority = self.pending.priority(job, now, fairshare)
            rows.append(build(job, now))
        return rows

    # ---- nodes ---------------------------------------------------------------------------

    def node_join(self, hello: NodeHello, now: float) -> NodeRecord:
        node = self.nodes.join(hello, now)
        self._reconcile(node, set(hello.running_job_ids), now)
        return node

    def _reconcile(self, node: NodeRecord, reported: set[int], now: float) -> None:
        """Match what the node runs against what we believe it runs."""
        for job in self.running.on_node(node.node_id):
            if job.job_id in reported:
                self.lifecycle.still_running(job, node)
            else:
                self.lifecycle.node_lost(job, now, reason="job vanished while node was away")
        self._kill_unknown(node.node_id, reported)

    def _kill_unknown(self, node_id: str, reported: set[int]) -> None:
        """Jobs a node runs that the master does not run there (finished, failed over, never
        known) are killed: never two copies of a job."""
        for job_id in sorted(reported):
            if self.job_of_node(node_id, job_id) is None:
                kill = {"t": "kill", "job_id": job_id, "reason": "unknown to master"}
                self.outbox.to_node(node_id, kill)

    def node_leave(self, node_id: str, now: float) -> None:
        self.nodes.leave(node_id, now)

    def node_seen(self, node_id: str, now: float) -> None:
        self.nodes.seen(node_id, now)

    def heartbeat(
        self,
        node_id: str,
        samples: list[GpuSample],
        now: float,
        *,
        running_ids: list[int] | None = None,
        launch_seq: int = 0,
    ) -> None:
        """A node's heartbeat: its GPUs' health and, from current agents, the jobs it runs
        (reconciled both ways; launches it may not have seen yet are left alone)."""
        self.nodes.heartbeat(node_id, samples, now)
        self._measure(node_id, samples, now)
        if running_ids is None:
            return  # an older agent: reconciled at registration only
        reported = set(running_ids)
        # Per node, not a walk over every running job: each node heartbeats every few seconds.
        for job in self.running.on_node(node_id):
            if job.job_id not in reported and job.launch_seq <= launch_seq:
                self.lifecycle.node_lost(job, now, reason=f"job vanished from node {node_id}")
        self._kill_unknown(node_id, reported)

    def _measure(self, node_id: str, samples: list[GpuSample], now: float) -> None:
        """Each running job's GPU utilisation and memory, from its GPUs' samples; and whether
        they are idle (state/idle.py)."""
        node = self.nodes.get(node_id)
        if node is None:
            return
        by_job: dict[int, list[GpuSample]] = {}
        for sample in samples:
            if 0 <= sample.index < len(node.gpus):
                holder = node.gpus[sample.index].job_id
                job = self.table.jobs.get(holder) if holder is not None else None
                if job is not None:
                    job.add_gpu_sample(sample.utilization_pct, sample.memory_used_bytes)
                    by_job.setdefault(job.job_id, []).append(sample)
        for job_id, held in by_job.items():
            self.idle.observe(self.table.jobs[job_id], held, now)

    def time_notices(self, now: float) -> None:
        """Once a second: TIME_LIMIT_50/80/90/TIME_LIMIT notices of running jobs (notices.py),
        and idle jobs flagged, warned or ended (idle.py)."""
        self.time_limit_notices.tick(self.running.values(), self.outbox, now)
        self.idle.tick(self.running.values(), now)

    def evict_finished(self, now: float) -> int:
        """Once a second: finished jobs older than keep_finished_s leave memory (they are
        stored: the history answers for them). O(jobs let go)."""
        return self.lifecycle.evict(now - self.keep_finished_s)

    def find(self, refs: list[int | str]) -> list[Job]:
        """Jobs by reference for reading: the table's and the history's (JobTable.find)."""
        return self.table.find(refs)

    def expire_nodes(self, now: float) -> None:
        """Once a second: mark nodes silent past --node-timeout as not responding (no new jobs
        there), note the time limits their jobs pass meanwhile, and take a silent node's jobs
        for lost only once its fence has surely killed them (docs/architecture.md,
        "Fencing"): after fence_timeout_s + the job's kill grace + a margin."""
        silent = {node.node_id: node for node in self.nodes.silent(now)}
        if not silent:
            return
        for job in [j for node_id in silent for j in self.running.on_node(node_id)]:
            node = silent[job.node_id]
            if self._past_limit(job, now):
                self.lifecycle.timed_out_away(job)
            silence_s = now - node.last_seen_s
            if silence_s < self.lost_after_s(job):
                continue
            if node.connected:  # connected but silent (frozen agent): its fence killed it
                kill = {"t": "kill", "job_id": job.job_id, "reason": "node fenced"}
                self.outbox.to_node(node.node_id, kill)
            why = f"node {node.node_id} silent for {silence_s:.0f} s (fenced)"
            self.lifecycle.node_lost(job, now, reason=why)

    def lost_after_s(self, job: Job) -> float:
        """How long a job's node must be silent before the job is surely dead: the node's fence
        (fence_timeout_s from its last acknowledged heartbeat's sending, which precedes our
        last word from it), the job's kill grace (SIGTERM to SIGKILL), and a margin for the
        guard's polling, scheduling delays and the two clocks' rates (1 %)."""
        fence_s = self.fence_timeout_s
        return fence_s + self.lifecycle.kill_grace_of(job) + FENCE_MARGIN_S + 0.01 * fence_s

    def _past_limit(self, job: Job, now: float) -> bool:
        limit_s = job.spec.time_limit_s
        if not limit_s or job.timed_out:
            return False
        grace_s = self.policy.qos_of(job.spec.qos).grace_s + self.lifecycle.kill_grace_of(job)
        grace_s += self.policy.session_grace_of(job.spec)  # a session's TTL is its limit
        return now >= job.start_time + limit_s + grace_s

    def expire_turns(self, now: float) -> None:
        self.turns.expire_turns(now)

    def update_node(self, node_id: str, action: str, reason: str) -> None:
        self.nodes.update(node_id, action, reason)

    # ---- job events from nodes -----------------------------------------------------------

    def job_of_node(self, node_id: str, job_id: int) -> Job | None:
        job = self.table.jobs.get(job_id)
        if job is None or job.node_id != node_id or job.state is not JobState.RUNNING:
            return None
        return job

    def job_started(self, node_id: str, job_id: int, pid: int) -> None:
        job = self.job_of_node(node_id, job_id)
        if job is not None:
            self.lifecycle.record_pid(job, pid)

    def exit_refused(
        self, node_id: str, job_id: int, run: int | None, message: str, now: float
    ) -> None:
        """A node's exit report for this job was malformed and refused: the process ended,
        how is unknown. It ends FAILED (CANCELLED if it was being cancelled)."""
        job = self.job_of_node(node_id, job_id)
        if job is None or (run is not None and run != job.restart_count):
            return
        reason = shorten(f"the node's exit report was refused: {message}", MAX_REASON_LEN)
        self.lifecycle.exited(job, JobExited(job_id=job_id, reason=reason), now)

    def job_exited(self, node_id: str, event: JobExited, now: float) -> None:
        # Acked in any case (sent after this turn's commit): the node may forget the exit.
        self.outbox.to_node(node_id, {"t": "exit_ack", "job_id": event.job_id})
        job = self.job_of_node(node_id, event.job_id)
        if job is None:
            return  # already failed over or cancelled while the node was away
        run = event.restart_count
        if run is not None and run != job.restart_count:
            return  # a late exit of an earlier run of a requeued job
        if event.fenced and not event.timed_out:
            # Its node lost the master and killed it: a node failure for the job (requeued
            # unless it asked not to be; a cancel or time limit waiting for it ends as asked).
            self.lifecycle.node_lost(job, now, reason=event.reason)
            return
        self.lifecycle.exited(job, event, now)
