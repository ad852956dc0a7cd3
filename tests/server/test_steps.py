"""Job steps on the master (the ``step`` verb, mgpu_server.state.steps): srun inside a running
job registers each step and its end, so that sacct shows them. Ids count 0, 1, 2 ... per job
and go on across requeues; a job's end ends its steps still running; the steps are stored and
come back after a restart; queue rows carry them only when asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mgpu_core.errors import (
    InvalidJobState,
    InvalidRequest,
    JobNotFound,
    LimitExceeded,
    PermissionDenied,
)
from mgpu_core.models import JobExited, JobSpec
from mgpu_core.states import JobState
from mgpu_server.api.handlers import ClientService
from mgpu_server.records.jobs import Job
from mgpu_server.state.cluster import ClusterState
from mgpu_server.state.steps import MAX_STEPS_PER_JOB
from mgpu_server.storage.sqlite_store import SqliteStore
from tests.helpers.nodes import node_info
from tests.helpers.state import ctx, exited, make_service, make_state, request

ALICE = ctx("alice")
BOB = ctx("bob")
ADMIN = ctx("root", admin=True)


def running(state: ClusterState, user: str = "alice", **spec: Any) -> Job:
    job = state.submit(user, JobSpec(argv=["x"], **{"gpus": 1, **spec}), now=1.0)
    state.schedule(now=1.0)
    state.take_effects()
    assert job.state is JobState.RUNNING
    return job


def state_of(job: Job) -> JobState:
    return job.state  # a plain read: no narrowing carried across the calls that change it


def start(service: ClientService, job: Job, name: str = "step", *, who: Any = ALICE) -> int:
    reply = request(service, who, "step", action="start", job_id=job.job_id, name=name, ntasks=2)
    return int(reply["step_id"])


def end(
    service: ClientService, job: Job, step_id: int, code: int | None = 0, sig: int | None = None
) -> dict[str, Any]:
    return request(
        service,
        ALICE,
        "step",
        action="end",
        job_id=job.job_id,
        step_id=step_id,
        exit_code=code,
        signal=sig,
    )


def steps_of(service: ClientService, job: Job) -> list[dict[str, Any]]:
    rows = request(service, ALICE, "queue", job_ids=[job.job_id], fields=["steps"])["jobs"]
    return list(rows[0]["steps"])


def states(service: ClientService, job: Job) -> list[str]:
    return [s["state"] for s in steps_of(service, job)]


@pytest.fixture
def state() -> ClusterState:
    s = make_state()
    s.node_join(node_info("n1", 2), now=0.0)
    return s


@pytest.fixture
def service(state: ClusterState) -> ClientService:
    return make_service(state)[0]


def test_steps_get_ids_in_order_and_end_as_their_srun_reports(
    state: ClusterState, service: ClientService
) -> None:
    job = running(state)
    assert [start(service, job, f"s{i}") for i in range(4)] == [0, 1, 2, 3]
    assert end(service, job, 0, 0) == {}
    end(service, job, 1, 3)
    end(service, job, 2, None, 9)
    [first, *_] = steps_of(service, job)
    assert set(first) == {
        "step_id",
        "name",
        "ntasks",
        "state",
        "start_time",
        "end_time",
        "exit_code",
        "signal",
    }
    assert (first["name"], first["ntasks"], first["exit_code"]) == ("s0", 2, 0)
    assert first["start_time"] > 0 and first["end_time"] >= first["start_time"]
    assert states(service, job) == ["COMPLETED", "FAILED", "FAILED", "RUNNING"]
    assert steps_of(service, job)[2]["signal"] == 9
    # A second report of an ended step changes nothing.
    end(service, job, 0, 5)
    assert steps_of(service, job)[0]["exit_code"] == 0


def test_a_step_starts_only_in_a_running_job_that_is_not_ending(
    state: ClusterState, service: ClientService
) -> None:
    job = running(state, gpus=2)
    waiting = state.submit("alice", JobSpec(argv=["x"], gpus=2), now=2.0)
    with pytest.raises(InvalidJobState, match="PENDING"):
        start(service, waiting)
    with pytest.raises(JobNotFound):
        request(service, ALICE, "step", action="start", job_id=999)
    request(service, ALICE, "cancel", job_ids=[job.job_id])  # cancel asked: the job is ending
    with pytest.raises(InvalidJobState, match="ending"):
        start(service, job)
    state.job_exited("n1", exited(job.job_id, None, 15), now=3.0)
    with pytest.raises(InvalidJobState, match="CANCELLED"):
        start(service, job)


def test_only_the_owner_or_an_admin_registers_steps(
    state: ClusterState, service: ClientService
) -> None:
    job = running(state)
    with pytest.raises(PermissionDenied, match="belongs to alice"):
        start(service, job, who=BOB)
    assert start(service, job, who=ADMIN) == 0
    with pytest.raises(PermissionDenied):
        request(service, BOB, "step", action="end", job_id=job.job_id, step_id=0, exit_code=0)
    assert states(service, job) == ["RUNNING"]


def test_an_end_names_a_step_the_job_has(state: ClusterState, service: ClientService) -> None:
    job = running(state)
    start(service, job)
    with pytest.raises(InvalidRequest, match="no step 1"):
        end(service, job, 1)
    with pytest.raises(InvalidRequest, match="step_id is required"):
        request(service, ALICE, "step", action="end", job_id=job.job_id, exit_code=0)


def test_a_job_starts_at_most_the_limit_of_steps(
    state: ClusterState, service: ClientService
) -> None:
    job = running(state)
    for _ in range(MAX_STEPS_PER_JOB - 1):
        state.steps.start(job, name="s", ntasks=1, now=2.0)
    assert start(service, job) == MAX_STEPS_PER_JOB - 1
    with pytest.raises(LimitExceeded, match=f"{MAX_STEPS_PER_JOB} steps"):
        start(service, job)
    assert len(state.steps.by_job[job.job_id]) == MAX_STEPS_PER_JOB


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        (JobExited(job_id=1, exit_code=0), "CANCELLED"),  # the job ended around it
        (JobExited(job_id=1, exit_code=2), "FAILED"),
        (JobExited(job_id=1, signal=9, oom_killed=True), "OUT_OF_MEMORY"),
        (JobExited(job_id=1, signal=15, timed_out=True), "TIMEOUT"),
    ],
)
def test_a_jobs_end_ends_its_running_steps_with_it(
    state: ClusterState, service: ClientService, report: JobExited, expected: str
) -> None:
    job = running(state)
    assert job.job_id == 1
    start(service, job)
    start(service, job)
    end(service, job, 0)
    state.job_exited("n1", report, now=5.0)
    assert states(service, job) == ["COMPLETED", expected]
    assert steps_of(service, job)[1]["end_time"] == 5.0
    assert not state.steps.running


def test_steps_of_a_cancelled_job_end_cancelled(
    state: ClusterState, service: ClientService
) -> None:
    job = running(state)
    start(service, job)
    start(service, job)
    request(service, ALICE, "cancel", job_ids=[job.job_id])
    end(service, job, 0, None, 15)  # its srun saw the SIGTERM of the cancel
    state.job_exited("n1", exited(job.job_id, None, 15), now=5.0)
    assert states(service, job) == ["CANCELLED", "CANCELLED"]
    assert steps_of(service, job)[0]["signal"] == 15


def test_a_requeued_jobs_steps_are_kept_and_ids_go_on(
    state: ClusterState, service: ClientService
) -> None:
    job = running(state, requeue=True)
    start(service, job)
    start(service, job)
    end(service, job, 0)
    state.node_leave("n1", now=50.0)
    state.node_join(node_info("n1", 2), now=100.0)  # back without the job: it is requeued
    assert job.state is JobState.PENDING and job.restart_count == 1
    assert states(service, job) == ["COMPLETED", "NODE_FAIL"]
    state.schedule(now=101.0)
    assert state_of(job) is JobState.RUNNING
    assert start(service, job) == 2
    request(service, ALICE, "requeue", job_ids=[job.job_id])
    state.job_exited("n1", exited(job.job_id, None, 15, run=1), now=102.0)
    assert state_of(job) is JobState.PENDING
    assert states(service, job) == ["COMPLETED", "NODE_FAIL", "CANCELLED"]


def test_queue_rows_carry_steps_only_when_asked(
    state: ClusterState, service: ClientService
) -> None:
    job = running(state)
    start(service, job, "train")
    default = request(service, ALICE, "queue")["jobs"][0]
    assert "steps" not in default and default["job_id"] == job.job_id
    flagged = request(service, ALICE, "queue", steps=True)["jobs"][0]
    assert set(flagged) == set(default) | {"steps"}
    assert [s["name"] for s in flagged["steps"]] == ["train"]
    only = request(service, ALICE, "queue", fields=["state", "steps"])["jobs"][0]
    assert set(only) == {"state", "steps"} and only["steps"] == flagged["steps"]
    other = state.submit("alice", JobSpec(argv=["x"], gpus=1), now=2.0)
    rows = request(service, ALICE, "queue", fields=["job_id", "steps"])["jobs"]
    assert {r["job_id"]: len(r["steps"]) for r in rows} == {job.job_id: 1, other.job_id: 0}


def test_steps_are_stored_and_survive_a_restart(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    state = make_state(store=store)
    state.node_join(node_info("n1", 2), now=0.0)
    service = make_service(state)[0]
    job = running(state)
    start(service, job, "prep")
    start(service, job, "train")
    end(service, job, 0, 0)
    store.commit()
    rows = steps_of(service, job)
    start(service, job, "lost")  # not committed: gone with the process
    store.close()

    again = SqliteStore(tmp_path)
    state = make_state(store=again)
    service = make_service(state)[0]
    job = state.get(job.job_id)
    assert steps_of(service, job) == rows
    assert start(service, job, "next") == 2  # ids go on from what was stored
    state.node_join(node_info("n1", 2, running=[job.job_id]), now=10.0)
    state.job_exited("n1", exited(job.job_id, 1), now=11.0)
    assert states(service, job) == ["COMPLETED", "FAILED", "FAILED"]
    again.commit()
    again.close()
    stored = SqliteStore(tmp_path)  # the job ended at t=11: history, with its steps
    assert [(s.step_id, s.state) for s in stored.history.steps_of([job.job_id])[job.job_id]] == [
        (0, JobState.COMPLETED),
        (1, JobState.FAILED),
        (2, JobState.FAILED),
    ]
    stored.close()
