"""Properties of the whole scheduling state machine (ClusterState with a MemoryStore), driven by
random submissions, dependencies and job ends: no dependency is ever violated, no GPU is held
twice, and every eligible job eventually starts — also when each pass may examine only one or
two jobs (queue_depth), with passes run as the server runs them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mgpu_core.models import JobSpec
from mgpu_core.states import JobState
from mgpu_server.scheduling.policy import PolicyConfig
from mgpu_server.state.cluster import ClusterState
from mgpu_server.state.effects import ToNode
from tests.helpers.nodes import node_info
from tests.helpers.state import exited, make_state

jobs_strategy = st.lists(
    st.tuples(
        st.integers(0, 4),  # GPUs
        st.sampled_from(["", "afterok", "afterany", "afternotok", "after"]),
        st.integers(0, 30),  # which earlier job it depends on (if any)
        st.booleans(),  # does it exit 0?
        st.integers(0, 3),  # time limit in minutes (0 = none)
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(
    jobs=jobs_strategy,
    sizes=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    depth=st.sampled_from([1, 2, 1000]),
)
def test_dependencies_respected_gpus_exclusive_and_everyone_eventually_runs(
    jobs: list[tuple[int, str, int, bool, int]], sizes: list[int], depth: int
) -> None:
    policy = PolicyConfig(queue_depth=depth)
    cluster = make_state(policy=policy)
    for i, size in enumerate(sizes):
        cluster.node_join(node_info(f"n{i}", size, cpus=64, mem_bytes=1 << 40), now=0)
    biggest = max(sizes)
    submitted: list[int] = []
    succeeds: dict[int, bool] = {}
    for gpus, kind, target, ok, limit_min in jobs:
        dep = f"{kind}:{submitted[target % len(submitted)]}" if kind and submitted else ""
        spec = JobSpec(
            argv=["x"], gpus=min(gpus, biggest), dependency=dep, time_limit_s=limit_min * 60
        )
        job = cluster.submit("u", spec, now=0)
        submitted.append(job.job_id)
        succeeds[job.job_id] = ok
    now = 1.0
    for _ in range(4 * len(jobs) + 4):
        cluster.schedule(now)
        while cluster.needs_pass:  # the server's next loop turn
            cluster.schedule(now)
        held: dict[tuple[str, int], int] = {}
        for effect in cluster.take_effects():
            if isinstance(effect, ToNode) and effect.msg["t"] == "launch":
                launch = effect.msg["launch"]
                job = cluster.get(launch["job_id"])
                _check_dependency_met(cluster, job.spec.dependency)
        for job in cluster.running.values():
            for gpu in job.gpu_indices:
                key = (job.node_id, gpu)
                assert key not in held, f"GPU {key} held by {held.get(key)} and {job.job_id}"
                held[key] = job.job_id
        # Every running job ends (the oldest first), as its exit status says.
        for job in sorted(cluster.running.values(), key=lambda j: j.job_id)[:2]:
            event = exited(job.job_id, 0 if succeeds[job.job_id] else 1)
            cluster.job_exited(job.node_id, event, now)
        now += 1.0
        cluster.wake()
    # Liveness: whatever is still pending can never run: its dependency failed for good, or
    # it waits on a job that is itself stuck that way (as in Slurm).
    stuck = {j.job_id for j in cluster.pending.values() if j.reason == "DependencyNeverSatisfied"}
    for job in sorted(cluster.pending.values(), key=lambda j: j.job_id):
        if job.job_id in stuck:
            continue
        target = int(job.spec.dependency.partition(":")[2] or 0)
        assert job.reason == "Dependency" and target in stuck, (job.job_id, job.reason)
        stuck.add(job.job_id)
    assert not cluster.running


def _check_dependency_met(cluster: ClusterState, dependency: str) -> None:
    if not dependency:
        return
    kind, _, ref = dependency.partition(":")
    state = cluster.get(int(ref)).state
    if kind == "after":
        assert state is not JobState.PENDING
    elif kind == "afterany":
        assert state.terminal
    elif kind == "afterok":
        assert state is JobState.COMPLETED
    else:
        assert state.terminal and state is not JobState.COMPLETED
