"""The master's state machine, driven by plain calls and a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from mgpu_core.errors import InvalidJobState, InvalidRequest, JobNotFound, NodeConflict
from mgpu_core.models import GpuProcess, GpuSample, JobSpec
from mgpu_core.states import IllegalTransition, JobState
from mgpu_server.records.jobs import Job
from mgpu_server.state.cluster import ClusterState
from mgpu_server.state.effects import ToNode, ToWatchers
from mgpu_server.storage.store import MemoryStore
from tests.helpers.nodes import node_info
from tests.helpers.state import ctx, exited, make_service, make_state, node_messages, request


def state_of(job: Job) -> JobState:
    """A job's state now (a plain read, so the type checker does not carry an earlier
    assertion's narrowing across the actions that change it)."""
    return job.state


@pytest.fixture
def cluster() -> ClusterState:
    c = make_state(node_timeout_s=10.0)
    c.node_join(node_info("n1", 2), now=0.0)
    return c


def launches(c: ClusterState) -> list[tuple[str, int, list[int]]]:
    out = [
        (e.node_id, e.msg["launch"]["job_id"], e.msg["launch"]["gpu_indices"])
        for e in c.outbox.effects
        if isinstance(e, ToNode) and e.msg["t"] == "launch"
    ]
    c.take_effects()
    return out


def test_submit_schedule_exit_release(cluster: ClusterState) -> None:
    a = cluster.submit("alice", JobSpec(argv=["x"], gpus=2), now=1.0)
    b = cluster.submit("bob", JobSpec(argv=["y"], gpus=1), now=2.0)
    assert cluster.schedule(now=3.0) == 1
    assert launches(cluster) == [("n1", a.job_id, [0, 1])]
    assert b.state is JobState.PENDING and b.reason == "Resources"
    cluster.job_exited("n1", exited(a.job_id, 0), now=4.0)
    assert a.state is JobState.COMPLETED and a.elapsed_s(9.0) == 1.0
    cluster.schedule(now=5.0)
    assert launches(cluster) == [("n1", b.job_id, [0])]
    cluster.job_exited("n1", exited(b.job_id, None, 9), now=6.0)
    assert state_of(b) is JobState.FAILED and b.signal == 9


def test_cancel_pending_running_finished_unknown(cluster: ClusterState) -> None:
    run = cluster.submit("a", JobSpec(argv=["x"], gpus=2), now=0)
    wait = cluster.submit("a", JobSpec(argv=["x"], gpus=2), now=0)
    cluster.schedule(now=0)
    cluster.take_effects()
    service, _ = make_service(cluster)
    ids = [wait.job_id, run.job_id, 999]
    results = request(service, ctx("a"), "cancel", job_ids=ids)["results"]
    assert {(r["job_id"], r["ok"]) for r in results} == {
        (wait.job_id, True),
        (run.job_id, True),
        (999, False),
    }
    assert [r["code"] for r in results if not r["ok"]] == [JobNotFound.code]
    assert wait.state is JobState.CANCELLED
    kills = [e.msg for e in cluster.outbox.effects if isinstance(e, ToNode)]
    assert kills == [{"t": "kill", "job_id": run.job_id, "reason": "cancelled"}]
    assert run.state is JobState.RUNNING  # until the node reports the exit
    cluster.job_exited("n1", exited(run.job_id, None, 15), now=2)
    assert state_of(run) is JobState.CANCELLED
    with pytest.raises(InvalidJobState):
        cluster.control.cancel(run, now=3)


def test_impossible_and_unknown_node_requests_rejected(cluster: ClusterState) -> None:
    with pytest.raises(InvalidRequest, match="not available"):
        cluster.submit("a", JobSpec(argv=["x"], gpus=3), now=0)
    with pytest.raises(InvalidRequest, match="nope"):
        cluster.submit("a", JobSpec(argv=["x"], nodelist=["nope"]), now=0)
    with pytest.raises(InvalidRequest):
        cluster.submit("a", JobSpec(), now=0)


def test_node_conflict_and_reconcile(cluster: ClusterState) -> None:
    with pytest.raises(NodeConflict):
        cluster.node_join(node_info("n1", 2), now=1)
    a = cluster.submit("a", JobSpec(argv=["x"], gpus=1), now=0)
    b = cluster.submit("a", JobSpec(argv=["x"], gpus=1), now=0)
    cluster.schedule(now=0)
    cluster.take_effects()
    cluster.node_leave("n1", now=1)
    assert cluster.schedule(now=1) == 0
    # The node comes back still running a, not b, plus a job we never gave it.
    cluster.node_join(node_info("n1", 2, running=[a.job_id, 77]), now=2)
    assert a.state is JobState.RUNNING and b.state is JobState.NODE_FAIL
    assert cluster.nodes["n1"].gpus[a.gpu_indices[0]].job_id == a.job_id
    assert [m["job_id"] for m in node_messages(cluster, "kill")] == [77]


def test_silent_node_fails_its_jobs_after_timeout(cluster: ClusterState) -> None:
    job = cluster.submit("a", JobSpec(argv=["x"], gpus=1, interactive=True), now=0)
    cluster.schedule(now=0)
    cluster.take_effects()
    cluster.expire_nodes(now=5)
    assert job.state is JobState.RUNNING
    cluster.expire_nodes(now=11)
    assert state_of(job) is JobState.NODE_FAIL
    assert cluster.nodes["n1"].display_state() == "down"
    ended = [e.msg for e in cluster.outbox.effects if isinstance(e, ToWatchers)]
    assert ended and ended[-1]["t"] == "job_ended" and ended[-1]["state"] == "NODE_FAIL"
    cluster.heartbeat("n1", [], now=12)
    assert cluster.nodes["n1"].up


def test_illegal_transition_raises() -> None:

    job = Job(1, "a", JobSpec(argv=["x"]), 0.0)
    job.transition(JobState.CANCELLED, 1.0)
    with pytest.raises(IllegalTransition):
        job.transition(JobState.RUNNING, 2.0)


def test_store_sees_every_change(cluster: ClusterState) -> None:
    store = cluster.store
    assert isinstance(store, MemoryStore)
    job = cluster.submit("a", JobSpec(argv=["x"]), now=0)
    assert store.load_jobs() == []  # not committed yet
    store.commit()
    assert [j.job_id for j in store.load_jobs()] == [job.job_id]
    assert store.next_job_id() == job.job_id + 1


def test_only_changes_that_matter_trigger_a_pass(cluster: ClusterState) -> None:
    cluster.submit("a", JobSpec(argv=["x"], gpus=2), now=0)
    cluster.schedule(now=0)
    assert not cluster.outbox.changed
    healthy = [GpuSample(index=i, utilization_pct=0, memory_used_bytes=0) for i in range(2)]
    cluster.heartbeat("n1", healthy, now=1)
    assert not cluster.outbox.changed  # a routine heartbeat: no pass over the queue
    sick = [healthy[0], GpuSample(index=1, healthy=False, error="GPU is lost")]
    cluster.heartbeat("n1", sick, now=2)
    assert cluster.outbox.changed
    job = cluster.submit("a", JobSpec(argv=["x"], gpus=1), now=3)
    cluster.schedule(now=3)
    assert job.state is JobState.PENDING and job.reason == "Resources"  # GPU 1 is down
    assert cluster.nodes["n1"].view().healthy_gpus == 1


def test_the_nodes_view_shows_each_gpu_s_last_sample(cluster: ClusterState) -> None:
    """docs/protocol.md's GPU record: the device's fields, the sample's but its index, the job."""
    service, _ = make_service(cluster)

    def gpus() -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = request(service, ctx("a"), "nodes")["nodes"]
        return [dict(g) for g in nodes[0]["gpus"]]

    device = {
        "uuid": "n1-1",
        "name": "g",
        "model": "",
        "memory_total_bytes": 1,
        "visible_id": "1",
        "fake": True,
        "parent_uuid": "",  # a whole GPU, not a MIG slice
        "parent_index": -1,
    }
    unmeasured = {"healthy": True, "error": "", "utilization_pct": -1, "memory_used_bytes": -1}
    assert gpus()[1] == {"index": 1, **device, **unmeasured, "processes": [], "job_id": None}
    stranger = GpuProcess(pid=7, user="eve", used_memory_bytes=5, command="miner")
    sample = GpuSample(index=1, utilization_pct=40, memory_used_bytes=9, processes=[stranger])
    cluster.heartbeat("n1", [sample, GpuSample(index=5)], now=1)  # no GPU 5: ignored
    measured = {"healthy": True, "error": "", "utilization_pct": 40, "memory_used_bytes": 9}
    processes = [{"pid": 7, "user": "eve", "used_memory_bytes": 5, "command": "miner"}]
    wire_form = gpus()[1]
    assert wire_form == {"index": 1, **device, **measured, "processes": processes, "job_id": None}
    assert list(wire_form) == ["index", *device, *measured, "processes", "job_id"]
    assert cluster.nodes["n1"].gpus[1].sample is sample


def test_late_exit_of_an_earlier_run_is_ignored(cluster: ClusterState) -> None:
    job = cluster.submit("a", JobSpec(argv=["x"], gpus=1, requeue=True), now=0)
    cluster.schedule(now=0)
    cluster.expire_nodes(now=11)  # node silent: the job is requeued
    assert job.state is JobState.PENDING and job.restart_count == 1
    cluster.heartbeat("n1", [], now=12)
    cluster.schedule(now=12)
    assert state_of(job) is JobState.RUNNING
    cluster.job_exited("n1", exited(job.job_id, 0, run=0), now=13)
    assert state_of(job) is JobState.RUNNING  # that exit belonged to the first run
    cluster.job_exited("n1", exited(job.job_id, 0, run=1), now=14)
    assert state_of(job) is JobState.COMPLETED


def test_a_dependency_too_long_once_arrays_expand_is_refused_at_submit(
    cluster: ClusterState,
) -> None:
    """Each clause may name up to 1,000 jobs; several clauses on big arrays could expand past
    the field's limit, which the launch carries to the node: refused at submit instead."""
    arrays = []
    for _ in range(16):  # 16,000 ids of 5 digits: ~96,000 characters
        spec = JobSpec(argv=["x"], array="0-999", hold=True)
        arrays.append(cluster.submit("a", spec, now=0).array_job_id)
    text = ",".join(f"afterok:{a}" for a in arrays)
    with pytest.raises(InvalidRequest, match="once arrays are expanded"):
        cluster.submit("a", JobSpec(argv=["x"], dependency=text), now=0)
    fits = cluster.submit("a", JobSpec(argv=["x"], dependency=f"afterok:{arrays[0]}"), now=0)
    assert len(fits.spec.dependency.split(":")) == 1001
