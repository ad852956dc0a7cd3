"""scancel --signal on the master: ``cancel`` with a ``signal`` sends that signal to a running
job's node (``signal`` message, "all" or "batch") and leaves the job running; a pending job
refuses any signal but KILL, which cancels, as SIGKILL to a whole job does in Slurm."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from mgpu_core.errors import BadMessage, InvalidJobState, PermissionDenied
from mgpu_core.models import JobSpec
from mgpu_core.states import JobState
from mgpu_server.api.handlers import ClientService
from mgpu_server.records.jobs import Job
from mgpu_server.state.cluster import ClusterState
from tests.helpers.nodes import node_info
from tests.helpers.state import ctx, make_service, make_state, node_messages, request

ALICE = ctx("alice")
BOB = ctx("bob")
USR1 = int(signal.SIGUSR1)
KILL = int(signal.SIGKILL)


def state_of(job: Job) -> JobState:
    return job.state  # a plain read: no narrowing carried across the calls that change it


@pytest.fixture
def state() -> ClusterState:
    s = make_state()
    s.node_join(node_info("n1", 1), now=0.0)
    return s


@pytest.fixture
def service(state: ClusterState) -> ClientService:
    return make_service(state)[0]


@pytest.fixture
def job(state: ClusterState) -> Job:
    job = state.submit("alice", JobSpec(argv=["x"], gpus=1), now=1.0)
    state.schedule(now=1.0)
    state.take_effects()
    assert job.state is JobState.RUNNING
    return job


def send(service: ClientService, job: Job, sig: int, who: Any = ALICE, **extra: Any) -> Any:
    reply = request(service, who, "cancel", job_ids=[job.job_id], signal=sig, **extra)
    [result] = reply["results"]
    return result


@pytest.mark.parametrize("scope", ["all", "batch"])
def test_a_signal_goes_to_a_running_jobs_node_and_the_job_goes_on(
    state: ClusterState, service: ClientService, job: Job, scope: str
) -> None:
    assert send(service, job, USR1, scope=scope)["ok"]
    assert node_messages(state, "signal") == [
        {"t": "signal", "job_id": job.job_id, "signal": USR1, "scope": scope}
    ]
    assert node_messages(state, "kill") == []
    assert job.state is JobState.RUNNING and not job.cancel_requested and not job.ending
    assert job.cancelled_by == ""


def test_a_pending_job_refuses_a_signal_but_kill_cancels_it(
    state: ClusterState, service: ClientService, job: Job
) -> None:
    waiting = state.submit("alice", JobSpec(argv=["x"], gpus=1), now=2.0)
    result = send(service, waiting, USR1)
    assert (result["ok"], result["code"]) == (False, InvalidJobState.code)
    assert "Job is pending execution" in result["message"]
    assert waiting.state is JobState.PENDING and node_messages(state, "signal") == []
    assert send(service, waiting, KILL)["ok"]
    assert state_of(waiting) is JobState.CANCELLED and waiting.cancelled_by == "alice"


def test_kill_to_a_whole_running_job_is_a_cancel(
    state: ClusterState, service: ClientService, job: Job
) -> None:
    assert send(service, job, KILL)["ok"]
    assert [m["job_id"] for m in node_messages(state, "kill")] == [job.job_id]
    assert job.cancel_requested and job.cancelled_by == "alice"
    assert node_messages(state, "signal") == []


def test_kill_to_the_batch_shell_only_is_a_signal(
    state: ClusterState, service: ClientService, job: Job
) -> None:
    assert send(service, job, KILL, scope="batch")["ok"]
    assert node_messages(state, "signal") == [
        {"t": "signal", "job_id": job.job_id, "signal": KILL, "scope": "batch"}
    ]
    assert not job.cancel_requested


def test_signals_are_refused_to_others_for_ended_jobs_and_for_unreachable_nodes(
    state: ClusterState, service: ClientService, job: Job
) -> None:
    refused = send(service, job, USR1, who=BOB)
    assert refused["code"] == PermissionDenied.code and "only its owner" in refused["message"]
    state.node_leave("n1", now=2.0)
    away = send(service, job, USR1)
    assert away["code"] == InvalidJobState.code and "unreachable" in away["message"]
    assert node_messages(state, "signal") == []
    done = state.submit("alice", JobSpec(argv=["x"]), now=3.0)
    state.control.cancel(done, now=3.0)
    assert send(service, done, USR1)["code"] == InvalidJobState.code


def test_signal_numbers_and_scopes_are_checked(service: ClientService, job: Job) -> None:
    for bad in ({"signal": 0}, {"signal": 65}, {"signal": USR1, "scope": "steps"}):
        with pytest.raises(BadMessage):
            request(service, ALICE, "cancel", job_ids=[job.job_id], **bad)
