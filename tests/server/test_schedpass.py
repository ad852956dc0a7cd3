"""The scheduling pass (mgpu_server.state.schedpass): it reads only the top of the queue — it stops
when nothing more can start or after queue_depth eligible jobs — and keeps what it does not
read untouched; the running-job totals it relies on stay equal to the running jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgpu_core.errors import ConfigError
from mgpu_core.models import JobSpec
from mgpu_core.states import Hold
from mgpu_server.records.jobs import Job
from mgpu_server.scheduling.policy import PolicyConfig, Qos
from mgpu_server.settings import load_master_settings
from mgpu_server.state.cluster import ClusterState
from tests.helpers.nodes import node_info
from tests.helpers.state import Recount, exited, make_state


def cluster_with(gpus: int, *, depth: int = 1000, cpus: int = 8) -> ClusterState:
    policy = PolicyConfig(queue_depth=depth)
    c = make_state(policy=policy)
    c.node_join(node_info("n1", gpus, cpus=cpus), now=0.0)
    return c


def submit(c: ClusterState, n: int, **spec: Any) -> list[Job]:
    return [c.submit("u", JobSpec(argv=["x"], **{"gpus": 1, **spec}), now=0.0) for _ in range(n)]


def test_a_full_cluster_pass_reads_only_the_top_waiting_job() -> None:
    c = cluster_with(2)
    running = submit(c, 2)
    queued = submit(c, 5, time_limit_s=60)
    assert [j.reason for j in queued] == ["Priority"] * 5  # until a pass reaches them
    assert c.schedule(now=1.0) == 2
    assert [j.reason for j in queued] == ["Resources"] + ["Priority"] * 4
    queued[3].reason = "untouched"
    c.job_exited("n1", exited(running[0].job_id), now=2.0)
    assert c.schedule(now=2.0) == 1 and queued[0].job_id in c.running
    # The next job in line was examined (it now waits for resources); the rest were not.
    assert [j.reason for j in queued[1:]] == ["Resources", "Priority", "untouched", "Priority"]


def test_jobs_without_gpus_keep_the_walk_going_while_cpus_are_free() -> None:
    c = cluster_with(1, cpus=4)
    submit(c, 1, time_limit_s=100)
    waiting = submit(c, 3)
    cpu_only = c.submit("u", JobSpec(argv=["x"], gpus=0, time_limit_s=10), now=0.0)
    assert c.schedule(now=1.0) == 2  # the CPU job backfills behind the blocked GPU jobs
    assert cpu_only.job_id in c.running
    assert [j.reason for j in waiting] == ["Resources"] * 3  # all examined
    # The last CPUs go: then nothing is left for anyone, and the pass stops at the top job.
    hog = c.submit("u", JobSpec(argv=["x"], gpus=0, cpus=2, time_limit_s=10), now=0.0)
    assert c.schedule(now=2.0) == 1 and hog.job_id in c.running
    late = c.submit("u", JobSpec(argv=["x"], gpus=0, time_limit_s=10), now=0.0)
    c.schedule(now=3.0)
    assert late.reason == "Priority" and waiting[0].reason == "Resources"
    c.job_exited("n1", exited(cpu_only.job_id), now=4.0)
    c.schedule(now=4.0)
    assert late.job_id in c.running


def test_queue_depth_bounds_a_pass_and_asks_for_another() -> None:
    c = cluster_with(8, depth=2)
    jobs = submit(c, 5)
    passes = []
    while c.needs_pass:  # as the server runs them: one per loop turn
        passes.append(c.schedule(now=1.0))
    assert passes == [2, 2, 1]
    assert all(j.job_id in c.running for j in jobs)


def test_queue_depth_counts_only_jobs_the_scheduler_may_consider() -> None:
    c = cluster_with(4, depth=1)
    held = submit(c, 3, hold=True)
    wanted = submit(c, 1)[0]
    assert c.schedule(now=1.0) == 1 and wanted.job_id in c.running
    assert [j.reason for j in held] == ["JobHeldUser"] * 3
    # A pass stopped by the depth without starting anything does not ask for another.
    big = c.submit("u", JobSpec(argv=["x"], gpus=4), now=0.0)
    small = submit(c, 1)[0]
    c.schedule(now=2.0)
    assert big.reason == "Resources" and small.reason == "Priority" and not c.outbox.changed


def test_hold_and_release_set_the_reason_at_once() -> None:
    c = cluster_with(1)
    submit(c, 2)
    deep = submit(c, 3)[-1]
    c.schedule(now=1.0)
    c.control.hold(deep, Hold.ADMIN, now=1.0)
    assert deep.reason == "JobHeldAdmin"
    c.schedule(now=2.0)
    assert deep.reason == "JobHeldAdmin"
    c.control.release(deep, now=2.0)
    assert deep.reason == "Priority"


def test_begin_time_wakeup_counts_jobs_the_pass_does_not_reach() -> None:
    c = cluster_with(1)
    submit(c, 3)
    later = c.submit("u", JobSpec(argv=["x"], gpus=1, begin_time=500.0), now=0.0)
    c.schedule(now=1.0)
    assert later.reason == "BeginTime" and c.wakeup_at == 500.0


def test_queue_rows_show_the_current_priority() -> None:
    policy = PolicyConfig(weight_age=100.0, max_age_s=100.0, weight_fairshare=0.0)
    c = make_state(policy=policy)
    job = c.submit("u", JobSpec(argv=["x"]), now=0.0)
    rows = c.list_jobs(users=[], states=[], job_ids=None, include_finished=False, now=30.0)
    assert rows[0]["job_id"] == job.job_id and rows[0]["priority"] == 30.0


def test_queue_depth_setting(tmp_path: Path) -> None:
    path = tmp_path / "master.toml"
    path.write_text("[scheduler]\nqueue_depth = 50\n")
    assert load_master_settings(path).policy.queue_depth == 50
    assert load_master_settings(tmp_path / "master.toml").policy.queue_depth == 50
    for bad in ("0", "2.5", "true", '"many"'):
        path.write_text(f"[scheduler]\nqueue_depth = {bad}\n")
        with pytest.raises(ConfigError, match="queue_depth"):
            load_master_settings(path)


# ---- running-job totals -------------------------------------------------------------------

QOS = {"normal": Qos("normal"), "grace": Qos("grace", grace_s=30)}


@settings(max_examples=100, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["submit", "array", "end", "fail", "requeue"]),
            st.integers(0, 3),  # GPUs, or which running job
            st.sampled_from(["a", "b", "c"]),
            st.sampled_from(["", "grace"]),
            st.sampled_from([0, 60]),
        ),
        max_size=40,
    )
)
def test_running_totals_follow_the_running_jobs(ops: list[tuple[str, int, str, str, int]]) -> None:
    c = make_state(node_timeout_s=5.0, policy=PolicyConfig(qos=QOS))
    for n in ("n1", "n2"):
        c.node_join(node_info(n, 4, cpus=64, mem_bytes=1 << 40), now=0.0)
    now = 1.0
    for kind, k, user, qos, limit in ops:
        running = sorted(c.running)
        if kind in ("submit", "array"):
            spec = JobSpec(argv=["x"], gpus=k, qos=qos, time_limit_s=limit, requeue=True)
            spec.array = "0-3%2" if kind == "array" else ""
            c.submit(user, spec, now)
        elif kind == "end" and running:
            job = c.running.get(running[k % len(running)])
            assert job is not None
            c.job_exited(job.node_id, exited(job.job_id), now)
        elif kind == "fail" and running:
            c.heartbeat("n1", [], now)  # n2 goes silent and fails its jobs (requeued)
            c.expire_nodes(now + 8.0)  # past the fence: n2's jobs are lost
            c.heartbeat("n2", [], now + 8.0)
        elif kind == "requeue" and running:
            job = c.running.get(running[k % len(running)])
            assert job is not None
            c.control.requeue(job)
            c.job_exited(job.node_id, exited(job.job_id), now)
        c.schedule(now)
        c.wake()  # a pass every step, as if something changed
        now += 7.0
        recount = Recount(list(c.running.values()), c.policy, now)
        recount.check(c)
        assert c.running.live_usage(now) == pytest.approx(recount.live)
