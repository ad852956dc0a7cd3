"""The Store contract (mgpu_server.storage.store), one test class run against every store:
the memory store the unit tests use and the SQLite store the master uses. What is put is
visible only after a commit; a discarded job never is; ids continue after the highest stored;
a job, a node and a setting come back as they went in. The durable store also keeps it all
across a reopen."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mgpu_core.models import JobSpec
from mgpu_core.states import Hold, JobState
from mgpu_server.records.jobs import Job
from mgpu_server.records.steps import Step
from mgpu_server.storage.history import Query
from mgpu_server.storage.schema import MIGRATIONS, SCHEMA_VERSION
from mgpu_server.storage.sqlite_store import SqliteStore
from mgpu_server.storage.store import MemoryStore, Store
from tests.helpers.nodes import node_info


def full_job(job_id: int) -> Job:
    """A job with every stored field away from its default."""
    spec = JobSpec(
        name="train",
        argv=["python", "train.py"],
        gpus=2,
        cpus=4,
        mem_bytes=1 << 30,
        time_limit_s=600,
        env={"A": "1"},
        cwd="/tmp",
        stdout_path="out-%j",
        nice=5,
        dependency="afterok:1",
    )
    job = Job(job_id, "alice", spec, submit_time=10.5)
    job.state = JobState.RUNNING
    job.reason = "Resources"
    job.node_id = "n1"
    job.gpu_indices = (0, 3)
    job.start_time = 11.0
    job.pid = 4242
    job.restart_count = 2
    job.hold = Hold.ADMIN
    job.priority_override = 77
    job.array_job_id, job.array_task_id, job.array_throttle = job_id, 0, 2
    job.cancel_requested = True
    job.output_bytes = 12345
    job.cancelled_by = "carol"
    job.partition = "long"
    return job


def stored(job: Job) -> dict[str, Any]:
    """What must survive a store: the queue row plus the fields a row does not show."""
    return {
        **job.to_wire(0.0),
        "spec": job.spec.to_wire(),
        "cancel_requested": job.cancel_requested,
        "priority_override": job.priority_override,
        "array_throttle": job.array_throttle,
        "pid": job.pid,
    }


class StoreContract:
    """Subclasses provide the ``store`` fixture: a fresh, empty store."""

    def test_empty(self, store: Store) -> None:
        assert store.load_jobs() == [] and store.load_nodes() == []
        assert store.next_job_id() == 1 and store.get_setting("x") is None

    def test_a_put_is_visible_after_commit_only(self, store: Store) -> None:
        store.put_job(full_job(3))
        store.put_node(node_info("n1", 2).to_wire())
        store.put_setting("k", {"a": [1, 2]})
        assert store.load_jobs() == [] and store.load_nodes() == []
        store.commit()
        [job] = store.load_jobs()
        assert stored(job) == stored(full_job(3))
        assert job.hold is Hold.ADMIN and job.state is JobState.RUNNING
        assert store.load_nodes()[0]["node_id"] == "n1"
        assert store.get_setting("k") == {"a": [1, 2]}
        assert store.next_job_id() == 4

    def test_latest_put_wins_and_jobs_load_in_id_order(self, store: Store) -> None:
        for job_id in (5, 2, 9):
            store.put_job(full_job(job_id))
        job = full_job(2)
        job.state, job.exit_code, job.end_time = JobState.COMPLETED, 0, time.time()
        store.put_job(job)
        store.commit()
        loaded = store.load_jobs()
        assert [j.job_id for j in loaded] == [2, 5, 9]
        assert loaded[0].state is JobState.COMPLETED and loaded[0].exit_code == 0

    def test_a_discarded_job_is_never_stored(self, store: Store) -> None:
        store.put_job(full_job(1))
        store.put_job(full_job(2))
        store.discard_job(2)
        store.commit()
        assert [j.job_id for j in store.load_jobs()] == [1]
        assert store.next_job_id() == 2

    def test_steps_come_back_as_put_in_job_and_step_order(self, store: Store) -> None:
        ended = Step(2, 0, "prep", 4, start_time=1.5)
        for step in (Step(2, 1, "train", 1, start_time=2.0), ended, Step(1, 0, "x", 1, 3.0)):
            store.put_step(step)
        store.put_job(full_job(1))  # running jobs: their steps are the master's to hold
        store.put_job(full_job(2))
        assert store.load_steps() == []
        store.commit()
        ended.state, ended.end_time, ended.exit_code, ended.signal = JobState.FAILED, 9.0, 1, 6
        store.put_step(ended)
        store.commit()
        steps = store.load_steps()
        assert [(s.job_id, s.step_id) for s in steps] == [(1, 0), (2, 0), (2, 1)]
        assert steps[1].to_wire() == {
            "step_id": 0,
            "name": "prep",
            "ntasks": 4,
            "state": "FAILED",
            "start_time": 1.5,
            "end_time": 9.0,
            "exit_code": 1,
            "signal": 6,
        }
        assert steps[2].state is JobState.RUNNING and steps[2].exit_code is None

    def test_nodes_are_replaced_and_deleted(self, store: Store) -> None:
        store.put_node(node_info("n1", 2).to_wire())
        store.put_node(node_info("n2", 1).to_wire())
        store.commit()
        store.put_node(node_info("n1", 4).to_wire())
        store.delete_node("n2")
        store.commit()
        [node] = store.load_nodes()
        assert node["node_id"] == "n1" and len(node["gpus"]) == 4


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> MemoryStore:
        return MemoryStore()


class TestSqliteStore(StoreContract):
    """The durable store also keeps everything committed across a reopen."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SqliteStore]:
        self.state_dir = tmp_path / "state"
        store = SqliteStore(self.state_dir)
        yield store
        store.close()

    def reopen(self, store: Store) -> Store:
        store.close()
        return SqliteStore(self.state_dir)

    def test_everything_survives_a_reopen(self, store: SqliteStore) -> None:
        store.put_job(full_job(7))
        store.put_node(node_info("n1", 2).to_wire())
        store.put_setting("k", 1)
        store.put_step(Step(7, 0, "prep", 2, start_time=1.0))
        store.commit()
        store.put_job(full_job(8))  # not committed: lost with the process
        store.put_step(Step(7, 1, "lost", 1, start_time=2.0))
        again = self.reopen(store)
        assert [stored(j) for j in again.load_jobs()] == [stored(full_job(7))]
        assert [s.name for s in again.load_steps()] == ["prep"]
        assert again.load_nodes()[0]["node_id"] == "n1" and again.get_setting("k") == 1
        again.close()

    def test_an_arrays_spec_is_stored_once(self, store: SqliteStore) -> None:
        spec = JobSpec(argv=["train"], env={"BIG": "x" * 256 * 1024}, stdout_path="o-%a")
        spec.array = "0-999"
        tasks = []
        for task in range(1000):
            job = Job(task + 1, "alice", spec, submit_time=1.0)
            job.array_job_id, job.array_task_id, job.spec_shared = 1, task, True
            tasks.append(job)
            store.put_job(job)
        store.commit()
        own = Job(1001, "alice", tasks[5].launch_spec(), submit_time=1.0)  # updated: its own
        own.array_job_id, own.array_task_id = 1, 5
        store.put_job(own)
        for job in tasks[:10]:
            store.put_job(job)  # later turns write the tasks again, never the spec
        store.commit()
        size = sum(f.stat().st_size for f in self.state_dir.glob("mgpu.db*"))
        assert size < 3 * 1024 * 1024, size  # one spec and 1,001 rows, not 256 MB
        again = self.reopen(store)
        loaded = again.load_jobs()
        assert all(j.spec is loaded[0].spec and j.spec_shared for j in loaded[:1000])
        assert loaded[0].spec.to_wire() == spec.to_wire()
        assert loaded[7].launch_spec().stdout_path == "o-7"
        assert not loaded[1000].spec_shared and loaded[1000].spec.stdout_path == "o-5"
        again.close()


def test_a_database_of_every_earlier_schema_is_migrated_with_its_jobs(tmp_path: Path) -> None:
    for version in range(1, SCHEMA_VERSION):
        state_dir = tmp_path / f"v{version}"
        state_dir.mkdir()
        db = sqlite3.connect(state_dir / "mgpu.db")
        for step in range(version):
            for statement in MIGRATIONS[step]:
                db.execute(statement)
        db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(version),))
        spec = '{"argv":["true"]}'
        db.execute(
            "INSERT INTO jobs (job_id, user, state, reason, node_id, gpu_indices, submit_time,"
            " start_time, end_time, exit_code, signal, cancel_requested, pid, spec)"
            " VALUES (4, 'bob', 'COMPLETED', '', 'n1', '[0]', 1.0, 2.0, 3.0, 0, NULL, 0, 9, ?)",
            (spec,),
        )
        if version >= 10:  # a master of schema 10 writes the derived columns itself
            db.execute("UPDATE jobs SET name = 'true' WHERE job_id = 4")
        db.commit()
        db.close()
        store = SqliteStore(state_dir)
        assert store.load_jobs() == []  # finished long ago: history, not memory
        job = store.history.get(4)
        assert job is not None and store.history.find(Query(names=("true",))) == [job]
        assert (job.job_id, job.user, job.state, job.exit_code) == (4, "bob", JobState.COMPLETED, 0)
        assert job.output_bytes is None and job.restart_count == 0 and job.hold is Hold.NONE
        assert job.cancelled_by == "" and store.load_steps() == []
        assert job.partition == ""
        store.put_job(job)
        store.put_step(Step(4, 0, "s", 1, start_time=2.5))
        store.commit()  # the migrated tables take every current column
        store.close()
        again = SqliteStore(state_dir)
        again_job = again.history.get(4)
        assert again_job is not None and again.history.steps_of([4])[4][0].start_time == 2.5
        again.close()
