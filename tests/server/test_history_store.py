"""The history behind ``mgpu_client history``, sacct and ``report``: the SQLite store's
queries answer as the plain Python reading of the same jobs does (for any jobs and filters);
the purge deletes only what is past retention, with its steps and array specs, and job ids are
never given twice; the master lets finished jobs go from memory and still finds them."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mgpu_core.models import GpuSample, JobSpec
from mgpu_core.states import JobState
from mgpu_server.records.jobs import Job
from mgpu_server.records.steps import Step
from mgpu_server.storage.history import Query, report_rows
from mgpu_server.storage.sqlite_store import SqliteStore
from mgpu_server.storage.store import MemoryStore
from tests.helpers.nodes import node_info
from tests.helpers.state import exited, make_state

pytestmark = pytest.mark.timeout(120)
USERS = ("alice", "bob", "carol")
ENDS = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT)


@st.composite
def jobs(draw: st.DrawFn) -> list[Job]:
    found = []
    for job_id in range(1, draw(st.integers(0, 25)) + 1):
        spec = JobSpec(
            argv=[draw(st.sampled_from(["train", "eval"]))],
            gpus=draw(st.integers(0, 4)),
            account=draw(st.sampled_from(["", "lab1", "lab2"])),
        )
        job = Job(job_id, draw(st.sampled_from(USERS)), spec, submit_time=draw(st.integers(0, 90)))
        job.partition = draw(st.sampled_from(["gpu", "long"]))
        if draw(st.booleans()):  # started
            job.start_time = job.submit_time + draw(st.integers(0, 20))
            job.state = JobState.RUNNING
            if draw(st.booleans()):
                job.end_time = job.start_time + draw(st.integers(1, 30))
                job.state = draw(st.sampled_from(ENDS))
        elif draw(st.booleans()):  # cancelled while pending
            job.state, job.end_time = JobState.CANCELLED, job.submit_time + 1.0
        found.append(job)
    return found


@st.composite
def queries(draw: st.DrawFn) -> Query:
    maybe = st.none() | st.integers(0, 130).map(float)
    return Query(
        users=tuple(draw(st.lists(st.sampled_from(USERS), max_size=2))),
        states=tuple(draw(st.lists(st.sampled_from([s.value for s in ENDS]), max_size=2))),
        names=tuple(draw(st.lists(st.sampled_from(["train", "eval"]), max_size=1))),
        ids=tuple(draw(st.lists(st.integers(1, 30), max_size=3))),
        window_start_s=draw(maybe),
        window_end_s=draw(maybe),
        limit=draw(st.integers(1, 30)),
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stored=jobs(), query=queries(), group=st.sampled_from(["user", "account", "partition"]))
def test_sqlite_answers_as_the_plain_reading_does(
    tmp_path_factory: pytest.TempPathFactory, stored: list[Job], query: Query, group: str
) -> None:
    sqlite = SqliteStore(tmp_path_factory.mktemp("db"))
    memory = MemoryStore()
    for store in (sqlite, memory):
        for job in stored:
            store.put_job(job)
        store.commit()
    try:
        found = [j.job_id for j in sqlite.history.find(query)]
        assert found == [j.job_id for j in memory.history.find(query)]
        window = (10.0, 100.0)
        by_sql = sqlite.history.report(group, *window)
        by_python = report_rows(stored, group, *window)
        assert [r["key"] for r in by_sql] == [r["key"] for r in by_python]
        for a, b in zip(by_sql, by_python, strict=True):
            assert a["gpu_hours"] == pytest.approx(b["gpu_hours"], abs=1e-6)
            assert {k: v for k, v in a.items() if k != "gpu_hours"} == {
                k: v for k, v in b.items() if k != "gpu_hours"
            }
    finally:
        sqlite.close()


def test_the_purge_takes_only_what_is_past_retention_and_ids_never_go_back(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path)
    spec = JobSpec(argv=["t"])
    old, recent, running = Job(1, "a", spec, 1.0), Job(2, "a", spec, 1.0), Job(3, "a", spec, 1.0)
    old.state, old.end_time = JobState.COMPLETED, 100.0
    recent.state, recent.end_time = JobState.FAILED, 5000.0
    running.state, running.start_time = JobState.RUNNING, 2.0
    array_spec = JobSpec(argv=["a"], array="0-1")
    tasks = []
    for task in range(2):
        job = Job(10 + task, "a", array_spec, 1.0, spec_shared=True)
        job.array_job_id, job.array_task_id = 10, task
        job.state, job.end_time = JobState.COMPLETED, 50.0
        tasks.append(job)
    for job in (old, recent, running, *tasks):
        store.put_job(job)
    store.put_step(Step(1, 0, "s", 1, start_time=50.0))
    store.commit()
    assert store.purge_finished(before_s=1000.0) == 3  # job 1 and the array's two tasks
    assert store.purge_finished(before_s=1000.0) == 0
    assert store.history.get(1) is None and store.history.steps_of([1]) == {}
    assert store.history.get(2) is not None and store.history.get(3) is not None
    assert store._db.execute("SELECT count(*) FROM array_specs").fetchone()[0] == 0
    store.close()
    again = SqliteStore(tmp_path)
    assert again.next_job_id() == 12  # the purged array's ids are not given again
    again.close()


def test_the_master_lets_finished_jobs_go_and_still_finds_them() -> None:
    store = MemoryStore()
    state = make_state(store=store)
    state.keep_finished_s = 60.0
    state.node_join(node_info("n1", 2), now=0.0)
    job = state.submit("alice", JobSpec(argv=["x"], gpus=2), now=0.0)
    state.schedule(now=1.0)
    samples = [GpuSample(index=0, utilization_pct=90, memory_used_bytes=5 << 30),
               GpuSample(index=1, utilization_pct=30, memory_used_bytes=7 << 30)]  # fmt: skip
    state.heartbeat("n1", samples, now=2.0)
    state.heartbeat("n1", [GpuSample(index=0, utilization_pct=60)], now=3.0)
    assert job.gpu_util_pct == pytest.approx(60.0) and job.gpu_mem_peak_bytes == 7 << 30
    state.job_exited("n1", exited(job.job_id, 0), now=10.0)
    store.commit()
    state.end_turn()  # as the server's flush: this turn's submissions are stored
    assert state.evict_finished(now=69.0) == 0  # not yet
    assert state.evict_finished(now=71.0) == 1 and job.job_id not in state.table
    [found] = state.find([job.job_id])
    assert found.state is JobState.COMPLETED and found.gpu_util_pct == pytest.approx(60.0)
    after = state.submit("alice", JobSpec(argv=["y"], dependency=f"afterok:{job.job_id}"), 72.0)
    state.schedule(now=73.0)
    assert after.state is JobState.RUNNING  # the dependency was read from the history


def test_usage_buckets_split_each_run_by_its_overlap() -> None:
    from mgpu_server.storage.history import bucket_usage

    runs = [(2, 50.0, 250.0), (1, 0.0, 10.0), (4, 390.0, 0.0)]  # the last one still runs
    buckets = bucket_usage(runs, 0.0, 400.0, 100.0)
    assert buckets[:3] == [2 * 50 + 1 * 10, 2 * 100, 2 * 50] and buckets[3] == 4 * 10
    with pytest.raises(ValueError):
        bucket_usage(runs, 10.0, 0.0, 100.0)
