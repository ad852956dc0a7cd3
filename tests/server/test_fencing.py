"""The master's half of fencing and reconciliation (docs/architecture.md, "Fencing"): a silent
node's jobs count as lost only after its fence has surely killed them; a job that is ending on
an unreachable node keeps its GPUs until the node confirms or is fenced; heartbeats reconcile
what a node runs, both ways, without mistaking a launch in flight for a vanished job."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mgpu_core.errors import NodeConflict
from mgpu_core.models import JobSpec
from mgpu_core.states import JobState
from mgpu_server.records.jobs import Job
from mgpu_server.state.cluster import FENCE_MARGIN_S, ClusterState
from tests.helpers.nodes import node_info
from tests.helpers.state import exited, make_state, node_messages

FENCE_S = 30.0
GRACE_S = 2.0
LOST_AFTER_S = FENCE_S + GRACE_S + FENCE_MARGIN_S + 0.01 * FENCE_S


@pytest.fixture
def state() -> ClusterState:
    s = make_state(node_timeout_s=5.0, fence_timeout_s=FENCE_S, kill_grace_s=GRACE_S)
    s.node_join(node_info("n1", 2), now=0.0)
    s.node_join(node_info("n2", 2), now=0.0)
    return s


def start(state: ClusterState, now: float = 0.0, **spec: object) -> Job:
    job = state.submit("u", JobSpec(argv=["x"], **spec), now=now)  # type: ignore[arg-type]
    state.schedule(now)
    assert job.state is JobState.RUNNING
    state.take_effects()
    return job


def state_of(job: Job) -> JobState:
    return job.state


def test_a_silent_nodes_jobs_are_lost_only_after_fence_grace_and_margin(
    state: ClusterState,
) -> None:
    job = start(state, gpus=2, requeue=True)
    node = job.node_id
    state.node_leave(node, now=1.0)
    state.expire_nodes(now=1.0 + 6.0)  # past --node-timeout: not responding, nothing else
    assert state.nodes[node].display_state() == "down" and job.state is JobState.RUNNING
    assert state.nodes[node].gpus[0].job_id == job.job_id
    state.expire_nodes(now=1.0 + LOST_AFTER_S - 0.1)
    assert state_of(job) is JobState.RUNNING  # its fence may not have killed it yet
    state.expire_nodes(now=1.0 + LOST_AFTER_S)
    assert state_of(job) is JobState.PENDING and job.restart_count == 1  # requeued
    assert state.nodes[node].jobs == set()


def test_lost_after_uses_the_jobs_own_kill_grace(state: ClusterState) -> None:
    job = start(state, gpus=1)
    assert state.lost_after_s(job) == pytest.approx(LOST_AFTER_S)


def test_a_cancel_on_an_unreachable_node_keeps_the_gpus_until_the_node_confirms(
    state: ClusterState,
) -> None:
    job = start(state, gpus=2)
    node = job.node_id
    state.node_leave(node, now=1.0)
    state.control.cancel(job, now=2.0)
    assert job.state is JobState.RUNNING and job.display_state() == "COMPLETING"
    assert "unreachable" in job.reason
    assert state.nodes[node].view().free_gpus == []  # nobody else gets them yet
    waiting = state.submit("u", JobSpec(argv=["x"], gpus=2, nodelist=[node]), now=2.0)
    state.schedule(now=2.0)
    assert waiting.state is JobState.PENDING
    # The node comes back still running it: the kill is sent again, the GPUs stay held.
    state.node_join(node_info(node, 2, running=[job.job_id]), now=3.0)
    assert {"t": "kill", "job_id": job.job_id, "reason": "cancelled"} in node_messages(
        state, "kill"
    )
    state.job_exited(node, exited(job.job_id, None, 15), now=4.0)
    assert state_of(job) is JobState.CANCELLED
    state.schedule(now=4.0)
    assert state_of(waiting) is JobState.RUNNING


def test_a_cancel_on_a_node_that_never_returns_ends_cancelled_at_the_fence(
    state: ClusterState,
) -> None:
    job = start(state, gpus=1, requeue=True)
    state.node_leave(job.node_id, now=1.0)
    state.control.cancel(job, now=2.0)
    state.expire_nodes(now=1.0 + LOST_AFTER_S)
    assert job.state is JobState.CANCELLED and job.restart_count == 0


def test_a_time_limit_passed_while_the_node_is_away_ends_timeout(state: ClusterState) -> None:
    job = start(state, gpus=1, time_limit_s=10, requeue=True)
    state.node_leave(job.node_id, now=1.0)
    state.expire_nodes(now=10.0 + GRACE_S + 0.5)
    assert job.state is JobState.RUNNING and job.display_state() == "COMPLETING"
    assert "time limit" in job.reason
    state.expire_nodes(now=1.0 + LOST_AFTER_S)
    assert state_of(job) is JobState.TIMEOUT  # not requeued: its time was up


def test_heartbeats_reconcile_both_ways_but_not_a_launch_in_flight(state: ClusterState) -> None:
    first = start(state, gpus=1, requeue=True)
    node = first.node_id
    # A heartbeat that has seen the launch but does not list the job: the job is gone.
    second = state.submit("u", JobSpec(argv=["y"], gpus=1, nodelist=[node]), now=1.0)
    state.schedule(now=1.0)
    assert second.state is JobState.RUNNING and second.launch_seq > first.launch_seq
    # Sent before the second launch arrived (launch_seq seen = first's): second is in flight.
    state.heartbeat(node, [], now=2.0, running_ids=[first.job_id], launch_seq=first.launch_seq)
    assert second.state is JobState.RUNNING
    # Seen it, and the node still does not run it: it vanished, and a stranger is killed.
    state.take_effects()
    state.heartbeat(node, [], now=3.0, running_ids=[first.job_id, 999], launch_seq=5)
    assert state_of(second) is JobState.NODE_FAIL and "vanished" in second.reason
    assert [m["job_id"] for m in node_messages(state, "kill")] == [999]
    assert first.state is JobState.RUNNING


def test_a_rejoined_nodes_jobs_are_reconciled_by_its_next_heartbeats(
    state: ClusterState,
) -> None:
    job = start(state, gpus=1, requeue=True)
    node = job.node_id
    state.node_leave(node, now=1.0)
    state.node_join(node_info(node, 2, running=[job.job_id]), now=2.0)
    # A new link counts launches from 0: the job, launched on the old link, is not "in flight".
    state.heartbeat(node, [], now=3.0, running_ids=[], launch_seq=0)
    assert state_of(job) is JobState.PENDING and job.restart_count == 1


def test_an_older_agents_heartbeat_reconciles_nothing(state: ClusterState) -> None:
    job = start(state, gpus=1)
    state.heartbeat(job.node_id, [], now=1.0)
    assert job.state is JobState.RUNNING


def test_a_node_silent_past_its_timeout_may_register_again_over_its_old_link(
    state: ClusterState,
) -> None:
    job = start(state, gpus=1)
    node = job.node_id
    with pytest.raises(NodeConflict):
        state.node_join(node_info(node, 2, running=[job.job_id]), now=1.0)  # its link is live
    state.expire_nodes(now=6.0)  # silent past --node-timeout, link still open (a partition)
    state.node_join(node_info(node, 2, running=[job.job_id]), now=7.0)
    assert state.nodes[node].up and job.state is JobState.RUNNING
    assert state.nodes[node].gpus[job.gpu_indices[0]].job_id == job.job_id


def test_a_refused_exit_report_ends_the_job_failed_not_requeued(state: ClusterState) -> None:
    job = start(state, gpus=1, requeue=True)
    state.exit_refused(job.node_id, job.job_id, 7, "bad_message: reason too long", now=1.0)
    assert job.state is JobState.RUNNING  # another run's report: not this one's
    state.exit_refused(job.node_id, job.job_id, 0, "bad_message: reason too long", now=1.0)
    assert state_of(job) is JobState.FAILED and "refused" in job.reason
    assert job.restart_count == 0


def test_a_job_its_node_fenced_is_requeued_not_failed(state: ClusterState) -> None:
    """The master was away (restarting, frozen) longer than the fence: the node killed its
    jobs and reports them fenced. For the job that is a node failure, not its own."""
    job = start(state, gpus=1, requeue=True)
    fenced = replace(exited(job.job_id, None, 15), fenced=True, reason="fenced: no word")
    state.job_exited(job.node_id, fenced, now=5.0)
    assert state_of(job) is JobState.PENDING and job.restart_count == 1
    state.schedule(now=6.0)
    assert state_of(job) is JobState.RUNNING  # runs again
    no_requeue = start(state, now=7.0, gpus=1)
    fenced = replace(exited(no_requeue.job_id, None, 15), fenced=True, reason="fenced")
    state.job_exited(no_requeue.node_id, fenced, now=8.0)
    assert state_of(no_requeue) is JobState.NODE_FAIL
