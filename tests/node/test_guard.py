"""The fence guard with real job processes: started by an executor that then went away, as
after an agent's death. One look (``Guard.tick``) takes its clocks as arguments, so what is due
when is tested without waiting; the process itself is tested for what only it does (one per
state directory, exiting when nothing is left to guard)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mgpu_core.constants import GUARD_LOG_FILE, JOBS_DIR
from mgpu_core.daemons import JobUser
from mgpu_core.messages import MASTER_TO_NODE, validate
from mgpu_core.models import Launch
from mgpu_node.executor import Executor
from mgpu_node.guard import LIMIT_MARGIN_S, Guard, GuardHandle, agent_running, running_guard
from mgpu_node.jobuser import JobUserPolicy
from mgpu_node.lease import Lease, boot_id, write_lease
from mgpu_node.spool import ExitSpool, JobRecords, lock_state_dir
from tests.helpers.cluster import wait_for

pytestmark = pytest.mark.timeout(60)

GRACE_S = 5.0


def ignoring_term(ready: Path) -> str:
    """A job that ignores SIGTERM (sleep inherits it), once ``ready`` exists."""
    return f"trap '' TERM; touch {ready}; exec sleep 300"


def wait_ready(ready: Path) -> None:
    wait_for(ready.exists, 20, f"{ready.name}: the job ignores SIGTERM")


def executor(state: Path, events: list[dict[str, Any]]) -> Executor:
    return Executor(
        node_name="n1",
        devices=[],
        state_dir=state,
        exits=ExitSpool(state / "exits"),
        emit=events.append,
        job_users=JobUserPolicy(JobUser.AGENT, allow_root=True),
    )


def launch(job_id: int, cwd: Path, script: str, **spec: Any) -> Launch:
    msg = {
        "t": "launch",
        "launch": {
            "job_id": job_id,
            "kill_grace_s": GRACE_S,
            "spec": {"argv": ["sh", "-c", script], "cwd": str(cwd), **spec},
        },
    }
    return Launch.from_checked(validate(msg, MASTER_TO_NODE)["launch"])


@pytest.fixture
def jobs() -> Iterator[dict[int, subprocess.Popen[bytes]]]:
    """Job processes (wrappers) by job id: reaped, and killed if need be, at the end."""
    procs: dict[int, subprocess.Popen[bytes]] = {}
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def start_and_leave(
    state: Path, jobs: dict[int, subprocess.Popen[bytes]], *launches: Launch
) -> None:
    """Start the jobs through an executor that then leaves them running (no agent left)."""

    async def main() -> None:
        ex = executor(state, [])
        for each in launches:
            ex.launch(each)
        jobs.update({i: j.proc for i, j in ex.jobs.items() if j.proc is not None})
        ex.detach()

    asyncio.run(main())
    assert {each.job_id for each in launches} <= set(jobs)


def readopt(state: Path) -> dict[int, dict[str, Any]]:
    """What the next agent reports: the exits, by job id, of the jobs that ended."""

    async def main() -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        ex = executor(state, events)
        ex.adopt_all()
        await asyncio.sleep(0)  # exits are flushed and sent at the end of the loop turn
        ex.detach()
        return events

    return {m["job_id"]: m for m in asyncio.run(main()) if m["t"] == "job_exited"}


def ended(proc: subprocess.Popen[bytes]) -> int:
    return proc.wait(timeout=10)


def test_guard_fences_the_jobs_of_an_expired_lease_and_not_before(
    tmp_path: Path, jobs: dict[int, subprocess.Popen[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    start_and_leave(state, jobs, launch(1, tmp_path, "exec sleep 300"))
    start_and_leave(state, jobs, launch(2, tmp_path, ignoring_term(tmp_path / "ready")))
    wait_ready(tmp_path / "ready")
    write_lease(state, Lease(1000.0, 300.0, 2.0, boot_id()))
    guard, now = Guard(state), time.time()

    assert guard.tick(1000.0, now)  # the lease runs until 1000: nothing yet
    assert all(p.poll() is None for p in jobs.values())
    assert guard.tick(1000.5, now)  # run out: SIGTERM to both
    assert ended(jobs[1]) == -signal.SIGTERM
    assert jobs[2].poll() is None  # it ignores SIGTERM ...
    assert guard.tick(1001.9, now)
    assert jobs[2].poll() is None
    assert guard.tick(1002.1, now)  # ... until the lease's kill grace (not the job's) is over
    assert ended(jobs[2]) == -signal.SIGKILL
    marks = JobRecords(state / JOBS_DIR)
    for record in marks.load(clean=False):
        mark = marks.read_mark(record)
        assert mark is not None and mark.fenced_s == 300 and mark.terminate_wall == now

    exits = readopt(state)
    assert {m["reason"] for m in exits.values()} == {"fenced: no word from the master for 300 s"}
    assert exits[1]["signal"] == signal.SIGTERM and exits[1]["timed_out"] is False
    log = caplog.text  # one line per action
    assert log.count("fenced: no word from the master for 300 s: SIGTERM") == 2
    assert log.count("SIGKILL") == 1


def test_guard_enforces_a_time_limit_while_no_agent_runs(
    tmp_path: Path, jobs: dict[int, subprocess.Popen[bytes]]
) -> None:
    state = tmp_path / "state"
    start_and_leave(state, jobs, launch(1, tmp_path, "exec sleep 300", time_limit_s=60))
    slow = launch(2, tmp_path, ignoring_term(tmp_path / "ready"), time_limit_s=60)
    start_and_leave(state, jobs, slow)
    wait_ready(tmp_path / "ready")
    write_lease(state, Lease(1e9, 300.0, 2.0, boot_id()))  # the master is there
    guard = Guard(state)
    records = {r.job_id: r for r in JobRecords(state / JOBS_DIR).load(clean=False)}
    due = max(r.start_boot for r in records.values()) + 60 + LIMIT_MARGIN_S
    wall = time.time()

    assert guard.tick(due - 0.1, wall)  # a live agent would act first: the guard waits
    assert all(p.poll() is None for p in jobs.values())
    assert guard.tick(due + 0.1, wall)
    assert ended(jobs[1]) == -signal.SIGTERM
    assert guard.tick(due + 0.2, wall + GRACE_S + LIMIT_MARGIN_S - 0.1)
    assert jobs[2].poll() is None
    assert guard.tick(due + 0.3, wall + GRACE_S + LIMIT_MARGIN_S + 0.1)
    assert ended(jobs[2]) == -signal.SIGKILL

    exits = readopt(state)
    assert exits[1]["timed_out"] is True and exits[1]["reason"] == "time limit reached"
    assert exits[2]["timed_out"] is True and exits[2]["reason"] == "time limit reached"


def test_guard_finishes_off_what_a_dead_agent_began_to_stop(
    tmp_path: Path, jobs: dict[int, subprocess.Popen[bytes]]
) -> None:
    """A cancel's SIGTERM sent, then the agent died before its SIGKILL: the guard sends it."""
    state = tmp_path / "state"

    async def main() -> None:
        ex = executor(state, [])
        ex.launch(launch(1, tmp_path, ignoring_term(tmp_path / "ready")))
        proc = ex.jobs[1].proc
        assert proc is not None
        jobs[1] = proc
        await asyncio.to_thread(wait_ready, tmp_path / "ready")
        ex.kill(1, "cancelled")
        ex.detach()

    asyncio.run(main())
    (record,) = JobRecords(state / JOBS_DIR).load(clean=False)
    assert record.terminate_wall > 0
    guard = Guard(state)
    assert guard.tick(0.0, record.terminate_wall + GRACE_S + LIMIT_MARGIN_S - 0.1)
    assert jobs[1].poll() is None
    assert guard.tick(0.0, record.terminate_wall + GRACE_S + LIMIT_MARGIN_S + 0.1)
    assert ended(jobs[1]) == -signal.SIGKILL
    assert readopt(state)[1]["reason"] == "cancelled"


def test_guard_stops_when_nothing_is_left_to_guard(tmp_path: Path) -> None:
    state = tmp_path / "state"
    lock = lock_state_dir(state)  # an agent
    guard = Guard(state)
    try:
        assert agent_running(state) and guard.tick(0.0, 0.0)
    finally:
        os.close(lock)
    assert not agent_running(state)
    assert not guard.tick(0.0, 0.0) and guard.why == "no agent and no job to watch"
    lock = lock_state_dir(state)
    try:
        shutil.rmtree(state)
        assert not guard.tick(0.0, 0.0) and guard.why == "its state directory is gone"
    finally:
        os.close(lock)


def guard_process(state: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "mgpu_node.guard", "--state-dir", str(state)]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)


def test_one_guard_per_state_directory_exiting_with_its_agent(tmp_path: Path) -> None:
    state = tmp_path / "state"
    lock = lock_state_dir(state)  # an agent: the guard stays while it runs
    started: list[subprocess.Popen[bytes]] = []
    try:
        started.append(first := guard_process(state))
        wait_for(lambda: running_guard(state) == first.pid, 20, "the guard to run")
        started.append(second := guard_process(state))
        assert second.wait(timeout=20) == 0  # another guard runs: it leaves at once
        assert first.poll() is None and running_guard(state) == first.pid
        os.close(lock)  # the agent is gone, and no job runs
        lock = -1
        assert first.wait(timeout=20) == 0
    finally:
        if lock >= 0:
            os.close(lock)
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    log = (state / GUARD_LOG_FILE).read_text()
    assert f"pid={second.pid}: another guard watches" in log
    assert f"pid={first.pid} exits: no agent and no job to watch" in log
    assert running_guard(state) is None


def test_the_agents_handle_starts_one_guard_and_stops_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    lock = lock_state_dir(state)
    handle = GuardHandle(state)
    try:
        handle.ensure()
        assert handle.proc is not None
        pid = handle.proc.pid
        wait_for(lambda: running_guard(state) == pid, 20, "the guard to run")
        handle.ensure()  # it runs: no second one
        assert handle.proc.pid == pid and running_guard(state) == pid
        handle.stop()
        assert handle.proc is None and running_guard(state) is None
        assert f"pid={pid} exits: asked to stop" in (state / GUARD_LOG_FILE).read_text()
    finally:
        if handle.proc is not None:
            handle.proc.kill()
            handle.proc.wait()
        os.close(lock)
