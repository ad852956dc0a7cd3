"""What sacct needs of the master: the OUT_OF_MEMORY end (and what depends on it), who
cancelled a job, and the queue verb's filters over finished jobs: users, names, job ids
(array tasks too), states and a time window (sacct -S/-E)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mgpu_core.models import JobExited, JobSpec
from mgpu_core.reasons import Reason
from mgpu_core.states import JobState
from mgpu_server.api.handlers import ClientService
from mgpu_server.records.jobs import Job
from mgpu_server.state.cluster import ClusterState
from mgpu_server.state.effects import Notify
from mgpu_server.storage.sqlite_store import SqliteStore
from tests.helpers.nodes import node_info
from tests.helpers.state import ctx, exited, make_service, make_state, request

ALICE = ctx("alice")
ADMIN = ctx("root", admin=True)


@pytest.fixture
def state() -> ClusterState:
    s = make_state()
    s.node_join(node_info("n1", 4), now=0.0)
    return s


@pytest.fixture
def service(state: ClusterState) -> ClientService:
    return make_service(state)[0]


def oom(job: Job, run: int = 0) -> JobExited:
    return JobExited(job_id=job.job_id, signal=9, oom_killed=True, restart_count=run)


def state_of(job: Job) -> JobState:
    return job.state


# ---- OUT_OF_MEMORY ----------------------------------------------------------------------


def test_an_oom_killed_job_ends_out_of_memory_and_is_charged(state: ClusterState) -> None:
    job = state.submit("alice", JobSpec(argv=["x"], gpus=2), now=1.0)
    state.schedule(now=1.0)
    state.job_exited("n1", oom(job), now=11.0)
    assert state_of(job) is JobState.OUT_OF_MEMORY and job.signal == 9
    assert not state.running and state.nodes["n1"].gpus[0].job_id is None
    assert state.usage.of("alice", 11.0) == pytest.approx(20.0)  # 2 GPUs x 10 s
    sent = [e.msg for e in state.take_effects() if not isinstance(e, Notify)]
    ended = [m for m in sent if m["t"] == "job_ended"]
    assert [m["state"] for m in ended] == ["OUT_OF_MEMORY"]


def test_a_cancel_or_time_limit_wins_over_an_oom_kill(state: ClusterState) -> None:
    cancelled = state.submit("alice", JobSpec(argv=["x"], gpus=1), now=0.0)
    timed = state.submit("alice", JobSpec(argv=["x"], gpus=1), now=0.0)
    state.schedule(now=0.0)
    state.control.cancel(cancelled, now=1.0)
    state.job_exited("n1", oom(cancelled), now=2.0)
    report = JobExited(job_id=timed.job_id, signal=9, oom_killed=True, timed_out=True)
    state.job_exited("n1", report, now=2.0)
    assert state_of(cancelled) is JobState.CANCELLED and state_of(timed) is JobState.TIMEOUT


def test_dependencies_count_out_of_memory_as_not_ok(state: ClusterState) -> None:
    first = state.submit("alice", JobSpec(argv=["x"], gpus=1), now=0.0)
    state.schedule(now=0.0)
    ok, not_ok, any_end = (
        state.submit("alice", JobSpec(argv=["x"], gpus=1, dependency=f"{kind}:{first.job_id}"), 1.0)
        for kind in ("afterok", "afternotok", "afterany")
    )
    assert {ok.reason, not_ok.reason, any_end.reason} == {Reason.DEPENDENCY}
    state.job_exited("n1", oom(first), now=5.0)
    state.schedule(now=5.0)
    assert state_of(ok) is JobState.PENDING and ok.reason == Reason.DEPENDENCY_NEVER
    assert state_of(not_ok) is JobState.RUNNING and state_of(any_end) is JobState.RUNNING


def test_the_queue_lists_and_filters_out_of_memory(
    state: ClusterState, service: ClientService
) -> None:
    job = state.submit("alice", JobSpec(argv=["x"], gpus=1), now=0.0)
    state.schedule(now=0.0)
    state.job_exited("n1", oom(job), now=1.0)
    rows = request(service, ALICE, "queue", states=["OUT_OF_MEMORY"])["jobs"]
    assert [(r["job_id"], r["state"]) for r in rows] == [(job.job_id, "OUT_OF_MEMORY")]
    assert request(service, ALICE, "queue")["jobs"] == []  # finished: not by default


# ---- who cancelled ------------------------------------------------------------------------


def cancelled_by(service: ClientService, job: Job) -> Any:
    rows = request(service, ALICE, "queue", job_ids=[job.job_id], fields=["cancelled_by"])
    return rows["jobs"][0]["cancelled_by"]


def test_a_cancelled_job_records_who_cancelled_it(
    state: ClusterState, service: ClientService
) -> None:
    pending = state.submit("alice", JobSpec(argv=["x"], gpus=1, hold=True), now=0.0)
    running = state.submit("alice", JobSpec(argv=["x"], gpus=1), now=0.0)
    state.schedule(now=0.0)
    assert running.state is JobState.RUNNING and cancelled_by(service, running) == ""
    request(service, ALICE, "cancel", job_ids=[pending.job_id])
    request(service, ADMIN, "cancel", job_ids=[running.job_id])
    request(service, ALICE, "cancel", job_ids=[running.job_id])  # a repeat: the first counts
    state.job_exited("n1", exited(running.job_id, None, 15), now=2.0)
    assert cancelled_by(service, pending) == "alice"
    assert (running.state, cancelled_by(service, running)) == (JobState.CANCELLED, "root")


def test_a_cancel_nobody_asked_for_names_nobody(state: ClusterState) -> None:
    first = state.submit("alice", JobSpec(argv=["x"], gpus=1), now=0.0)
    spec = JobSpec(argv=["x"], dependency=f"afterok:{first.job_id}", kill_on_invalid_dep=True)
    chained = state.submit("alice", spec, now=0.0)
    state.schedule(now=0.0)
    state.job_exited("n1", exited(first.job_id, 1), now=1.0)
    assert chained.state is JobState.CANCELLED and chained.cancelled_by == ""


def test_who_cancelled_is_stored(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    state = make_state(store=store)
    job = state.submit("alice", JobSpec(argv=["x"]), now=0.0)
    state.control.cancel(job, now=1.0, by="bob")
    store.commit()
    store.close()
    again = SqliteStore(tmp_path)
    loaded = again.history.get(job.job_id)  # ended long ago (at t=1): history
    assert loaded is not None
    assert (loaded.state, loaded.cancelled_by) == (JobState.CANCELLED, "bob")
    again.close()


# ---- the queue's filters ------------------------------------------------------------------


def ids(service: ClientService, **filters: Any) -> list[int]:
    return [r["job_id"] for r in request(service, ALICE, "queue", **filters)["jobs"]]


def finished(state: ClusterState, user: str, name: str, *, submit: float, end: float) -> Job:
    job = state.submit(user, JobSpec(argv=["x"], name=name), now=submit)
    state.control.cancel(job, now=end)
    return job


def test_filters_by_user_name_and_state(state: ClusterState, service: ClientService) -> None:
    a = finished(state, "alice", "train", submit=1.0, end=2.0)
    b = finished(state, "bob", "train", submit=1.0, end=2.0)
    c = state.submit("alice", JobSpec(argv=["/bin/eval"], gpus=1), now=3.0)  # named "eval"
    state.schedule(now=3.0)
    assert ids(service, names=["train"]) == []  # finished ones only when asked
    assert ids(service, names=["train"], include_finished=True) == [a.job_id, b.job_id]
    assert ids(service, names=["train", "eval"], users=["alice"], include_finished=True) == [
        a.job_id,
        c.job_id,
    ]
    assert ids(service, names=["eval"]) == [c.job_id]
    assert ids(service, states=["CANCELLED"], users=["bob"]) == [b.job_id]
    assert ids(service, states=["RUNNING", "CANCELLED"], names=["eval"]) == [c.job_id]


def test_job_ids_name_jobs_arrays_and_array_tasks(
    state: ClusterState, service: ClientService
) -> None:
    single = finished(state, "alice", "one", submit=1.0, end=2.0)
    first = state.submit("alice", JobSpec(argv=["x"], array="0-2", hold=True), now=3.0)
    array = first.array_job_id
    assert array is not None
    tasks = sorted(state.table.arrays[array])
    assert ids(service, job_ids=[f"{array}_2", single.job_id]) == [tasks[2], single.job_id]
    assert ids(service, job_ids=[array]) == tasks
    assert ids(service, job_ids=[f"{array}_7"]) == []  # names nothing: skipped


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        ((None, None), ["early", "late", "running", "pending"]),
        # Ended before the window: left out; not yet submitted by its end: left out too.
        ((15.0, 35.0), ["late", "running", "pending"]),
        ((15.0, None), ["late", "running", "pending"]),
        ((None, 25.0), ["early", "late", "running"]),
        ((31.0, 39.0), ["running", "pending"]),
        ((20.0, 20.0), ["late", "running"]),  # an end at the window's start still counts
        ((100.0, 200.0), ["running", "pending"]),  # never ended: in every later window
    ],
)
def test_a_time_window_selects_jobs_in_the_system_during_it(
    state: ClusterState,
    service: ClientService,
    window: tuple[float | None, float | None],
    expected: list[str],
) -> None:
    """sacct -S/-E: submitted before the window's end, and ended at or after its start (or
    not ended). Finished jobs are included without include_finished."""
    by_name = {
        "early": finished(state, "alice", "early", submit=1.0, end=10.0),
        "late": finished(state, "alice", "late", submit=5.0, end=20.0),
    }
    by_name["running"] = state.submit("alice", JobSpec(argv=["x"], name="running"), now=12.0)
    state.schedule(now=12.0)
    assert by_name["running"].state is JobState.RUNNING
    by_name["pending"] = state.submit("alice", JobSpec(argv=["x"], hold=True), now=30.0)
    name_of = {job.job_id: name for name, job in by_name.items()}
    start, end = window
    if start is None and end is None:
        got = ids(service, include_finished=True)
    else:
        got = ids(service, window_start_s=start, window_end_s=end)
    assert [name_of[i] for i in got] == expected


def test_rows_show_when_a_job_became_eligible(state: ClusterState, service: ClientService) -> None:
    now = state.submit("alice", JobSpec(argv=["x"], hold=True), now=5.0)
    later = state.submit("alice", JobSpec(argv=["x"], begin_time=50.0), now=6.0)
    rows = request(service, ALICE, "queue", fields=["job_id", "eligible_time", "submit_time"])
    assert [(r["job_id"], r["eligible_time"]) for r in rows["jobs"]] == [
        (now.job_id, 5.0),
        (later.job_id, 50.0),
    ]
