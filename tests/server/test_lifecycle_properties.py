"""Every index around the job table agrees with it after every step of random histories.

The lifecycle (mgpu_server.state.lifecycle) is the one writer of job transitions and of the
indexes kept around them. Here random sequences of operations — submits (plain, held, with a
--begin time, dependent, singleton, throttled arrays), passes, exits, cancels of pending and
running jobs, requeues, node loss and return, hold/release, turn-queue changes, and commits
that fail (a full disk) and are undone — run against a real ClusterState on a store whose
commit can fail; after each step every index is recounted from the job table.
"""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from mgpu_core.deps import DepStatus
from mgpu_core.errors import MgpuError, StorageError
from mgpu_core.models import JobExited, JobSpec
from mgpu_core.reasons import Reason
from mgpu_core.states import Hold, JobState
from mgpu_server.scheduling.policy import PolicyConfig, Qos
from mgpu_server.state.cluster import ClusterState
from mgpu_server.state.registry import NodeTotals
from mgpu_server.storage.store import MemoryStore
from tests.helpers.nodes import node_info
from tests.helpers.state import Recount, exited, make_state

QOS = {"normal": Qos("normal"), "grace": Qos("grace", grace_s=30)}


class FlakyStore(MemoryStore):
    """A memory store whose next commit fails when asked (as a full disk does): the writes
    stay pending, as the Store contract says."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_next = False

    def commit(self) -> None:
        if self.fail_next:
            self.fail_next = False
            raise StorageError("disk full (test)")
        super().commit()


def check_indexes(state: ClusterState, now: float) -> None:
    """Recount every index from the job table and compare."""
    jobs = state.table.jobs
    pending = {i for i, j in jobs.items() if j.state is JobState.PENDING}
    running = {i for i, j in jobs.items() if j.state is JobState.RUNNING}
    assert set(state.pending) == pending
    assert set(state.running) == running
    assert not any(j.state is JobState.REQUEUED for j in jobs.values())
    # Parked exactly when the job may not be considered yet.
    lifecycle = state.lifecycle
    for job_id in pending:
        job = jobs[job_id]
        waits = (
            bool(job.hold)
            or lifecycle.refusal(job) is not None  # an admin's rule: GPU access revoked
            or job.spec.begin_time > now
            or lifecycle.deps.status(job, jobs) is not DepStatus.OK
        )
        if waits:
            assert state.pending.is_parked(job_id), job
        elif not 0 < job.spec.begin_time <= now:  # a due --begin job waits for the next pass
            assert not state.pending.is_parked(job_id), job
    # Running totals against a recount.
    Recount([jobs[i] for i in running], state.policy, now).check(state)
    # Node allocations against the running jobs: no GPU held twice, none held by a ghost.
    for node in state.nodes.values():
        on_node = {i for i in running if jobs[i].node_id == node.node_id}
        assert node.jobs == on_node, (node.node_id, node.jobs, on_node)
        held = {g.index: g.job_id for g in node.gpus if g.job_id is not None}
        expected = {gpu: i for i in on_node for gpu in jobs[i].gpu_indices}
        assert held == expected
        assert node.cpus_alloc == sum(jobs[i].spec.cpus for i in on_node)
        assert node.mem_alloc_bytes == sum(jobs[i].spec.mem_bytes for i in on_node)
    # The totals info shows, kept as nodes change, against a fresh sum over the nodes.
    fresh = NodeTotals()
    for node in state.nodes.values():
        fresh.set(node.node_id, node.counts())
    assert state.nodes.totals.summary() == fresh.summary()
    # The turn queue's count of each user's pending GPU jobs.
    gpu_waiting: dict[str, int] = {}
    for job_id in pending:
        if jobs[job_id].spec.gpus:
            gpu_waiting[jobs[job_id].user] = gpu_waiting.get(jobs[job_id].user, 0) + 1
    assert state.pending.gpu_waiting() == gpu_waiting
    # Arrays name live table entries; turn grants belong to running jobs.
    for array_id, members in state.table.arrays.items():
        assert members and all(jobs[m].array_job_id == array_id for m in members)
    assert set(state.turns.turns.active) <= running
    # The dependency index: every pending dependent is filed under what it names.
    deps = lifecycle.deps
    for job_id in pending:
        job = jobs[job_id]
        for target in job.dependency.job_ids() if job.dependency else ():
            assert job_id in deps.waiters.get(target, ()), (job_id, target)
    waiting = {i for ids in deps.waiters.values() for i in ids}
    waiting |= {i for ids in deps.singletons.values() for i in ids}
    assert waiting <= pending
    live = {i for ids in deps.live.values() for i in ids}
    assert live == pending | running
    # Job steps: only a running job has running steps (every end of a run ends them), and the
    # index of running steps is exactly the steps in that state.
    steps = state.steps
    stepping = {
        (s.job_id, s.step_id)
        for ss in steps.by_job.values()
        for s in ss
        if s.state is JobState.RUNNING
    }
    assert stepping == {(j, i) for j, by_id in steps.running.items() for i in by_id}
    assert set(steps.running) <= running


OPS = st.sampled_from(
    [
        "submit",
        "submit",
        "held",
        "begin",
        "afterok",
        "afterany",
        "singleton",
        "array",
        "pass",
        "end",
        "fail",
        "cancel",
        "cancel",
        "requeue",
        "step",
        "step",
        "oom",
        "hold",
        "release",
        "lose_node",
        "node_back",
        "turns",
        "revoke",
        "assign",
        "update",
        "digest",
        "flush",
        "flush_fails",
        "evict",
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.tuples(OPS, st.integers(0, 9), st.sampled_from(["a", "b", "c"])),
        min_size=1,
        max_size=60,
    )
)
def test_every_index_agrees_with_the_job_table(ops: list[tuple[str, int, str]]) -> None:
    store = FlakyStore()
    state = make_state(store=store, node_timeout_s=5.0, policy=PolicyConfig(qos=QOS))
    for n in ("n1", "n2"):
        state.node_join(node_info(n, 4, cpus=16, mem_bytes=1 << 40), now=0.0)
    store.commit()
    now = 1.0
    for op, k, user in ops:
        # A refused verb (already finished, not running...) changes nothing.
        with contextlib.suppress(MgpuError):
            _apply(state, store, op, k, user, now)
        check_indexes(state, now)
        now += 3.0


def _pick(ids: list[int], k: int) -> int | None:
    return sorted(ids)[k % len(ids)] if ids else None


SUBMITS = ("submit", "held", "begin", "afterok", "afterany", "singleton", "array")


def _apply(state: ClusterState, store: FlakyStore, op: str, k: int, user: str, now: float) -> None:
    if op in SUBMITS:
        state.submit(user, _spec(state, op, k, now), now)
    elif op in ("end", "fail", "oom", "step", "cancel", "requeue", "hold", "release", "update"):
        _job_op(state, op, k, now)
    elif op in ("revoke", "assign"):  # the user's GPU access: their queued GPU jobs follow
        state.turns.request(op, {"user": user}, now)
    elif op in ("flush", "flush_fails"):
        _flush(state, store, now, fail=op == "flush_fails")
    else:
        _cluster_op(state, op, k, now)


def _spec(state: ClusterState, op: str, k: int, now: float) -> JobSpec:
    spec = JobSpec(argv=["x"], gpus=k % 3, qos="grace" if k % 2 else "", time_limit_s=60 * (k % 2))
    spec.requeue = True
    jobs = list(state.table.jobs)
    if op == "held":
        spec.hold = True
    elif op == "begin":
        spec.begin_time = now + 4.0
    elif op in ("afterok", "afterany") and jobs:
        spec.dependency = f"{op}:{_pick(jobs, k)}"
    elif op == "singleton":
        spec.name, spec.dependency = "same", "singleton"
    elif op == "array":
        spec.array = "0-3%2"
    return spec


def _job_op(state: ClusterState, op: str, k: int, now: float) -> None:
    jobs = state.table.jobs
    if op in ("end", "fail", "oom", "step", "requeue"):
        chosen = _pick(list(state.running), k)
    elif op in ("hold", "release", "update"):
        chosen = _pick([i for i, j in jobs.items() if j.state is JobState.PENDING], k)
    else:
        chosen = _pick(list(jobs), k)
    if chosen is None:
        return
    job = jobs[chosen]
    if op in ("end", "fail"):
        event = exited(job.job_id, 0 if op == "end" else 1, run=job.restart_count)
        state.job_exited(job.node_id, event, now)
    elif op == "oom":
        event = JobExited(
            job_id=job.job_id, signal=9, oom_killed=True, restart_count=job.restart_count
        )
        state.job_exited(job.node_id, event, now)
        assert job.state in (JobState.OUT_OF_MEMORY, JobState.CANCELLED, JobState.PENDING)
    elif op == "step":
        state.steps.start(job, name="s", ntasks=1, now=now)
    elif op == "requeue":
        state.control.requeue(job)
        state.job_exited(job.node_id, exited(job.job_id, 143, run=job.restart_count), now)
    elif op == "cancel":
        state.control.cancel(job, now)
    elif op == "hold":
        state.control.hold(job, Hold.USER, now)
    elif op == "update":
        state.control.update(job, {"gpus": (job.spec.gpus + 1) % 3}, now)
    else:
        state.control.release(job, now)


def _cluster_op(state: ClusterState, op: str, k: int, now: float) -> None:
    if op == "pass":
        state.wake()
        state.schedule(now)
    elif op == "lose_node":
        state.heartbeat("n1", [], now)  # n2 stays silent past the timeout
        state.expire_nodes(now + 8.0)  # past node timeout and fence: its jobs are lost
    elif op == "node_back":
        for node_id in ("n1", "n2"):
            node = state.nodes[node_id]
            state.node_leave(node_id, now)
            still = [i for i in node.jobs if k % 2]  # on odd k the agent still runs its jobs
            state.node_join(node_info(node_id, 4, still, cpus=16, mem_bytes=1 << 40), now)
    elif op == "digest":  # n1 reports every other job it should run: the rest vanished
        ours = sorted(j.job_id for j in state.running.values() if j.node_id == "n1")
        state.heartbeat("n1", [], now, running_ids=ours[k % 2 :: 2], launch_seq=10**6)
    elif op == "evict":  # every finished job leaves memory (the history has it)
        state.evict_finished(now + 10_000.0)
    elif op == "turns":
        mode = ["queue", "priority", "auto"][k % 3]
        state.turns.request("set", {"users": ["a", "b", "a"]}, now)
        state.turns.request("mode", {"mode": mode}, now)
        state.expire_turns(now)


def _flush(state: ClusterState, store: FlakyStore, now: float, *, fail: bool) -> None:
    """As the server's flush: a pass, one commit, then the turn ends (or is undone)."""
    state.schedule(now)
    store.fail_next = fail
    try:
        store.commit()
    except StorageError:
        refused = state.undo_turn(now)
        assert not refused & set(state.table.jobs)
    state.end_turn()
    state.take_effects()


def test_a_job_submitted_and_started_in_a_failed_turn_leaves_no_phantom_load() -> None:
    """Regression: after a commit that failed, the undo forgot the running totals, so a job
    submitted and started in the same turn left load for a job that no longer existed (QoS
    limits counted phantom GPUs, backfill saw a node that never frees)."""
    store = FlakyStore()
    state = make_state(store=store)
    state.node_join(node_info("n1", 2), now=0.0)
    store.commit()
    job = state.submit("alice", JobSpec(argv=["x"], gpus=2), now=1.0)
    assert state.schedule(now=1.0) == 1 and job.state is JobState.RUNNING
    store.fail_next = True
    try:
        store.commit()
    except StorageError:
        assert state.undo_turn(now=1.0) == {job.job_id}
    assert state.running.loads() == {}
    assert state.running.releases("n1") == []
    assert state.nodes["n1"].jobs == set() and state.nodes["n1"].view().free_gpus == [0, 1]
    assert job.job_id not in state.table and not state.take_effects()
    check_indexes(state, 1.0)
    # The GPUs are really free: the next job gets them.
    again = state.submit("alice", JobSpec(argv=["x"], gpus=2), now=2.0)
    assert state.schedule(now=2.0) == 1 and again.state is JobState.RUNNING


def test_a_dependency_chain_with_kill_on_invalid_dep_ends_one_by_one() -> None:
    """A failed job cancels a long chain of --kill-on-invalid-dep dependents at once,
    without recursion (a worklist), and each gets the reason."""
    state = make_state()
    state.node_join(node_info("n1", 1), now=0.0)
    first = state.submit("u", JobSpec(argv=["x"], gpus=1), now=0.0)
    chain = [first]
    for _ in range(3000):
        spec = JobSpec(argv=["x"], dependency=f"afterok:{chain[-1].job_id}")
        spec.kill_on_invalid_dep = True
        chain.append(state.submit("u", spec, now=0.0))
    assert all(j.reason == Reason.DEPENDENCY for j in chain[1:])
    state.schedule(now=0.0)
    state.job_exited("n1", exited(first.job_id, 1, run=0), now=1.0)
    assert first.state is JobState.FAILED
    assert all(j.state is JobState.CANCELLED for j in chain[1:])
    assert {j.reason for j in chain[1:]} == {Reason.DEPENDENCY_NEVER}
    check_indexes(state, 1.0)
