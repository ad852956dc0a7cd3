"""The executor with real job processes: the exit spool, job records, and re-adoption.

A "restart" here is a second Executor on the same state directory after the first detached:
the jobs are then not the second one's children, exactly as after an agent restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from mgpu_core.daemons import JobUser
from mgpu_core.limits import MAX_REASON_LEN
from mgpu_core.messages import MASTER_TO_NODE, NODE_MESSAGES, validate
from mgpu_core.models import JobExited, Launch
from mgpu_node import procs
from mgpu_node.executor import LOST_WHILE_DOWN, Executor
from mgpu_node.jobuser import JobUserPolicy
from mgpu_node.spool import ExitSpool

pytestmark = pytest.mark.timeout(60)


class Node:
    """An executor plus everything it emitted, with event-driven waiting."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.exits = ExitSpool(state / "exits")
        self.executor = Executor(
            node_name="n1",
            devices=[],
            state_dir=state,
            exits=self.exits,
            emit=self.emit,
            # Whoever runs the tests runs the jobs (root included), as with a local cluster.
            job_users=JobUserPolicy(JobUser.AGENT, allow_root=True),
        )
        self.on_emit: Callable[[dict[str, Any]], None] = lambda msg: None

    def emit(self, msg: dict[str, Any]) -> None:
        self.on_emit(msg)
        self.events.append(msg)
        self.changed.set()

    def exit_of(self, job_id: int) -> dict[str, Any] | None:
        found = [m for m in self.events if m["t"] == "job_exited" and m["job_id"] == job_id]
        assert len(found) <= 1, found
        return found[0] if found else None

    async def wait_exit(self, job_id: int, timeout_s: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while (msg := self.exit_of(job_id)) is None:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), deadline - time.monotonic())
        return msg


def launch(job_id: int, cwd: Path, script: str, *, restart_count: int = 0, **spec: Any) -> Launch:
    """The launch the master would send, through the node's own check and build."""
    msg = {
        "t": "launch",
        "launch": {
            "job_id": job_id,
            "user": "u",
            "kill_grace_s": 1.0,
            "restart_count": restart_count,
            "spec": {"argv": ["sh", "-c", script], "cwd": str(cwd), **spec},
        },
    }
    return Launch.from_checked(validate(msg, MASTER_TO_NODE)["launch"])


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The first executor's processes: reaped (and killed if need be) at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def detach(node: Node, children: list[subprocess.Popen[bytes]]) -> None:
    children.extend(j.proc for j in node.executor.jobs.values() if j.proc is not None)
    node.executor.detach()


def test_exit_is_spooled_before_it_is_emitted(tmp_path: Path) -> None:
    async def main() -> None:
        node = Node(tmp_path / "state")
        seen: dict[str, Any] = {}

        def check(msg: dict[str, Any]) -> None:
            jobs = tmp_path / "state" / "jobs"
            if msg["t"] == "job_started":
                seen["record"] = json.loads((jobs / "1.json").read_text())
            if msg["t"] == "job_exited":
                journal = (tmp_path / "state/exits/journal").read_text().splitlines()
                seen["spooled"] = json.loads(journal[-1])["exit"]
                seen["record_left"] = (jobs / "1.json").exists()

        node.on_emit = check
        node.executor.launch(launch(1, tmp_path, "echo $MGPU_RESTART_COUNT; exit 3"))
        msg = await node.wait_exit(1)
        assert msg["exit_code"] == 3 and msg["signal"] is None
        assert seen["spooled"] == msg
        assert seen["record_left"] is False
        record = seen["record"]
        assert record["pid"] == node.events[0]["pid"] and record["create_time"] > 0
        assert (tmp_path / "mgpu-1.out").read_text() == "0\n"

    asyncio.run(main())


def test_restart_count_reaches_the_job(tmp_path: Path) -> None:
    async def main() -> None:
        node = Node(tmp_path / "state")
        node.executor.launch(launch(1, tmp_path, "echo $MGPU_RESTART_COUNT", restart_count=4))
        await node.wait_exit(1)
        assert (tmp_path / "mgpu-1.out").read_text() == "4\n"

    asyncio.run(main())


def test_readopted_jobs_report_their_real_exit(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    release = tmp_path / "release"
    wait = f"while [ ! -e {release} ]; do sleep 0.02; done"
    endings = {1: "exit 0", 2: "exit 5", 3: "kill -USR1 $$"}

    async def main() -> None:
        first = Node(tmp_path / "state")
        for job_id, ending in endings.items():
            first.executor.launch(launch(job_id, tmp_path, f"{wait}; {ending}"))
        detach(first, children)
        assert first.events and not [m for m in first.events if m["t"] == "job_exited"]

        second = Node(tmp_path / "state")
        second.executor.adopt_all()
        assert second.executor.running_ids() == [1, 2, 3]
        assert all(j.proc is None for j in second.executor.jobs.values())
        release.touch()
        results = {i: await second.wait_exit(i) for i in endings}
        assert [(m["exit_code"], m["signal"]) for m in results.values()] == [
            (0, None),
            (5, None),
            (None, signal.SIGUSR1),
        ]
        assert results[3]["reason"] == "killed by signal SIGUSR1"
        assert second.executor.running_ids() == []
        assert sorted(second.exits.ids()) == [1, 2, 3]
        assert list((tmp_path / "state" / "jobs").iterdir()) == []

    asyncio.run(main())


def test_kill_of_readopted_job_reaches_its_whole_group(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    pid_file = tmp_path / "bg.pid"

    async def main() -> None:
        first = Node(tmp_path / "state")
        first.executor.launch(launch(1, tmp_path, f"sleep 300 & echo $! > {pid_file}; wait"))
        detach(first, children)
        second = Node(tmp_path / "state")
        second.executor.adopt_all()
        deadline = time.monotonic() + 20
        while not (pid_file.exists() and pid_file.read_text().strip()):
            assert time.monotonic() < deadline, "job did not start"
            await asyncio.sleep(0.01)  # polling a file the job writes: no event to wait on
        background = psutil.Process(int(pid_file.read_text()))
        second.executor.kill(1, "cancelled")
        msg = await second.wait_exit(1)
        assert msg["reason"] == "cancelled" and msg["signal"] == signal.SIGTERM
        background.wait(timeout=10)  # raises TimeoutExpired if it survived

    asyncio.run(main())


def test_time_limit_of_readopted_job_counts_from_its_start(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    async def main() -> None:
        first = Node(tmp_path / "state")
        first.executor.launch(launch(1, tmp_path, "sleep 300", time_limit_s=3600))
        detach(first, children)
        # Pretend the job started an hour ago: only the remaining (none) may be granted.
        path = tmp_path / "state" / "jobs" / "1.json"
        record = json.loads(path.read_text())
        path.write_text(json.dumps(record | {"start_wall": record["start_wall"] - 3600}))
        second = Node(tmp_path / "state")
        second.executor.adopt_all()
        msg = await second.wait_exit(1, timeout_s=20)
        assert msg["timed_out"] is True and msg["reason"] == "time limit reached"

    asyncio.run(main())


async def running(wrappers: list[subprocess.Popen[bytes]], argv: list[str]) -> None:
    """Wait until each wrapper's command (its child) runs ``argv``. Polled: /proc is the only
    place that shows it."""
    deadline = time.monotonic() + 20

    def runs(wrapper: subprocess.Popen[bytes]) -> bool:
        with contextlib.suppress(psutil.Error):
            return any(c.cmdline() == argv for c in psutil.Process(wrapper.pid).children())
        return False

    while not all(runs(w) for w in wrappers):
        assert time.monotonic() < deadline, f"{argv} not started"
        await asyncio.sleep(0.01)


def test_jobs_that_ended_while_no_agent_watched(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    async def main() -> None:
        first = Node(tmp_path / "state")
        first.executor.launch(launch(1, tmp_path, "exec sleep 300"))
        first.executor.launch(launch(2, tmp_path, "exec sleep 300"))
        first.executor.launch(launch(3, tmp_path, "exec sleep 300"))
        detach(first, children)
        wrapper_1, wrapper_2, _ = children
        # Not before the commands run: a signal to the group before the wrapper has set its
        # traps kills the wrapper with nothing recorded, and one during its fork is lost
        # (wrapper.py); and a group without its command has no one left to SIGKILL below.
        await running(children, ["sleep", "300"])
        os.kill(wrapper_1.pid, signal.SIGKILL)  # the wrapper itself dies: nothing recorded
        os.killpg(wrapper_2.pid, signal.SIGTERM)  # the job dies while no agent runs
        os.killpg(wrapper_1.pid, signal.SIGKILL)
        assert wrapper_1.wait(timeout=10) == -signal.SIGKILL
        assert wrapper_2.wait(timeout=10) == -signal.SIGTERM
        # An exit already in the spool (saved just before a crash) is not reported twice.
        second = Node(tmp_path / "state")
        second.exits.put({"t": "job_exited", "job_id": 3, "exit_code": 0, "signal": None})
        second.executor.adopt_all()
        # Exits are flushed to disk and sent together at the end of the loop turn.
        lost, known = await second.wait_exit(1), await second.wait_exit(2)
        assert (lost["exit_code"], lost["signal"]) == (None, None)
        assert lost["reason"] == LOST_WHILE_DOWN
        assert known["signal"] == signal.SIGTERM
        assert second.exit_of(3) is None and second.executor.running_ids() == []
        assert list((tmp_path / "state" / "jobs").iterdir()) == []

    asyncio.run(main())


def test_stop_all_kills_and_reports(tmp_path: Path) -> None:
    async def main() -> None:
        node = Node(tmp_path / "state")
        node.executor.launch(launch(1, tmp_path, "sleep 300"))
        pid = node.executor.jobs[1].pid
        await node.executor.stop_all()
        msg = node.exit_of(1)
        assert msg is not None and msg["signal"] == signal.SIGKILL
        assert msg["reason"] == "cancelled"
        assert not psutil.pid_exists(pid)

    asyncio.run(main())


def test_missing_program_is_a_launch_failure(tmp_path: Path) -> None:
    async def main() -> None:
        node = Node(tmp_path / "state")
        node.executor.launch(launch(1, tmp_path, "", argv=["/no/such/program"]))
        exited = await node.wait_exit(1)
        assert exited["exit_code"] == 127
        assert exited["reason"] == "execve(): /no/such/program: No such file or directory"
        assert node.exits.ids() == [1]

    asyncio.run(main())


def test_every_exit_passes_the_masters_check(tmp_path: Path) -> None:
    """A spawn error quotes the program, up to 128 KiB of it: the exit's reason is cut to the
    wire's limit, or the master would refuse the message (and the node resend it forever)."""

    async def main() -> None:
        node = Node(tmp_path / "state")
        program = "/no/such" + "/dir" * 500
        node.executor.launch(launch(1, tmp_path, "", argv=[program]))
        exited = await node.wait_exit(1)
        record = JobExited.from_wire(validate(exited, NODE_MESSAGES))
        assert record.exit_code == 127 and record.restart_count == 0
        assert len(record.reason) == MAX_REASON_LEN and record.reason.startswith("execve(): ")
        assert re.search(r"…\[truncated \d+ chars\]$", record.reason)  # says it was cut

    asyncio.run(main())


def test_a_sigterm_lost_before_the_command_ran_is_sent_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM that lands while the wrapper forks its command is lost: the new child still
    has the shell's handler (wrapper.py). Only timing makes that happen, so here the loss is
    made: the executor sees the command not yet started and its SIGTERM goes nowhere. It sends
    SIGTERM again once the command runs, and the job ends of it at once -- not of the SIGKILL
    a minute later."""

    async def main() -> None:
        node = Node(tmp_path / "state")
        start = launch(1, tmp_path, "exec sleep 300")
        node.executor.launch(dataclasses.replace(start, kill_grace_s=60.0))
        job = node.executor.jobs[1]
        assert job.proc is not None
        await running([job.proc], ["sleep", "300"])
        signal_tree, command_started = procs.signal_tree, procs.command_started
        lost: list[int] = []

        def lose_the_first_sigterm(pid: int, sig: int) -> None:
            if sig == signal.SIGTERM and not lost:
                lost.append(pid)
            else:
                signal_tree(pid, sig)

        looks: list[int] = []

        def too_early_at_first(pid: int) -> bool:
            looks.append(pid)  # the first is the executor's look before its first SIGTERM
            return len(looks) > 1 and command_started(pid)

        monkeypatch.setattr(procs, "signal_tree", lose_the_first_sigterm)
        monkeypatch.setattr(procs, "command_started", too_early_at_first)
        node.executor.kill(1, "cancelled")
        msg = await node.wait_exit(1, timeout_s=30)
        assert lost == [job.pid]
        assert (msg["signal"], msg["reason"]) == (signal.SIGTERM, "cancelled"), msg

    asyncio.run(main())
