"""The node's half of the fence, with a real agent and its guard against a fake master
(tests/helpers/fake_master.py, which answers as the real master does: fence settings in the
registration reply, heartbeat_ack for each heartbeat): the lease is renewed by acks only,
heartbeats list the jobs, a relaunch waits for the old run, and a frozen or killed agent's jobs
die within the fence timeout plus the kill grace."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from mgpu_core.constants import GUARD_LOG_FILE
from mgpu_node.guard import running_guard
from mgpu_node.lease import Lease, read_lease
from tests.helpers.cluster import stop_process, wait_for, wait_for_text
from tests.helpers.fake_master import FakeMaster
from tests.helpers.wire import frame

pytestmark = pytest.mark.timeout(60)

FENCE_S = 2.0
GRACE_S = 1.0
HEARTBEAT_S = 0.1
USER = pwd.getpwuid(os.getuid()).pw_name  # jobs run as their submitter: the test's user


@dataclass
class Node:
    master: FakeMaster
    agent: subprocess.Popen[bytes]
    work: Path

    def launch(self, job_id: int, script: str, **fields: Any) -> dict[str, Any]:
        spec = {"argv": ["sh", "-c", script], "cwd": str(self.work)}
        launch = {"job_id": job_id, "user": USER, "spec": spec, "kill_grace_s": 60.0, **fields}
        return {"t": "launch", "launch": launch}

    def lease(self) -> Lease:
        lease = read_lease(self.master.state_dir)
        assert lease is not None
        return lease

    def beats_after(self, count: int) -> None:
        """Wait until the master has had ``count`` more heartbeats."""
        master, n = self.master, len(self.master.beats)
        master.wait(lambda: len(master.beats) >= n + count, 10, f"{count} heartbeats")


@pytest.fixture
def node(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Node]:
    """An agent and its fake master, whose fence is FENCE_S unless the test parametrizes it."""
    fence_s = getattr(request, "param", FENCE_S)
    master = FakeMaster(tmp_path, fence_timeout_s=fence_s, kill_grace_s=GRACE_S)
    work = tmp_path / "work"
    work.mkdir()
    agent = master.start_agent("--heartbeat-interval", str(HEARTBEAT_S), "--allow-root-jobs")
    n = Node(master, agent, work)
    try:
        yield n
    finally:
        for proc in {agent, n.agent}:  # a test may have started another
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a frozen agent cannot act on SIGTERM
            stop_process(proc)
        master.close()


def dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("node", [60.0], indirect=True)  # the link outlives missing acks
def test_the_lease_is_renewed_by_heartbeat_acks_only(node: Node) -> None:
    master = node.master
    master.connect()
    registered = wait_for(lambda: read_lease(master.state_dir), 10, "the lease")
    wait_for(lambda: node.lease().deadline > registered.deadline, 10, "a renewal")
    assert node.lease().fence_timeout_s == 60.0 and node.lease().kill_grace_s == GRACE_S

    master.ack_heartbeats = False
    node.beats_after(3)  # an ack sent before has arrived by now
    stalled = node.lease()
    node.beats_after(5)
    assert node.lease() == stalled, "renewed without an ack"

    master.ack_heartbeats = True
    wait_for(lambda: node.lease().deadline > stalled.deadline, 10, "a renewal")
    assert "fence: jobs are killed 60.0 s after the last acknowledged heartbeat" in (
        master.log_text()
    )


def test_a_silent_link_is_given_up_in_time_to_renew_the_lease(node: Node) -> None:
    """A master that stops answering (a partition the TCP connection does not see): the agent
    connects anew well within the fence, and registering renews the lease."""
    master = node.master
    link = master.connect()
    master.ack_heartbeats = False
    started = time.monotonic()
    assert link.eof.wait(10), "the agent kept a silent link"
    assert time.monotonic() - started < FENCE_S
    before = node.lease()
    master.ack_heartbeats = True
    master.connect()
    wait_for(lambda: node.lease().deadline > before.deadline, 10, "a renewal on the new link")
    assert "no word from the master for 1.0 s" in master.log_text()


def test_heartbeats_list_the_jobs_and_the_launches_seen(node: Node) -> None:
    master = node.master
    link = master.connect()
    link.send(frame(node.launch(3, "exec sleep 300", launch_seq=7)))

    def listed(job_ids: list[int], launch_seq: int) -> bool:
        return any(
            b["running_job_ids"] == job_ids and b["launch_seq"] == launch_seq
            for b in master.beats[-3:]
        )

    master.wait(lambda: listed([3], 7), 10, "a heartbeat listing job 3 after launch 7")
    link.send(frame({"t": "kill", "job_id": 3, "reason": "cancelled"}))
    master.wait(lambda: 3 in master.exited, 10, "job 3's exit")
    master.wait(lambda: listed([], 7), 10, "a heartbeat without job 3 once its exit is acked")
    seqs = [b["seq"] for b in master.beats]
    assert seqs == list(range(1, len(seqs) + 1))  # numbered on the link, for the acks


def test_a_relaunch_waits_for_the_previous_run_to_exit(node: Node) -> None:
    master, work = node.master, node.work
    link = master.connect()
    old_run = (
        f"trap '' TERM; echo $MGPU_RESTART_COUNT > {work}/old; "
        f"while [ ! -e {work}/release ]; do sleep 0.02; done"
    )
    link.send(frame(node.launch(5, old_run)))
    wait_for_text(work / "old")
    # The master took the run for lost and relaunched the job while the run is still ending.
    link.send(frame({"t": "kill", "job_id": 5, "reason": "node failed"}))
    new_run = node.launch(5, f"echo $MGPU_RESTART_COUNT > {work}/new", restart_count=1)
    for msg in (new_run, new_run, node.launch(5, old_run)):  # then duplicates of each run
        link.send(frame(msg))
    wait_for(lambda: "job=5 run 1 held until run 0 has exited" in master.log_text(), 10, "hold")
    node.beats_after(2)  # the duplicates are handled too
    assert [m["t"] for m in master.events] == ["job_started"]

    (work / "release").touch()
    master.wait(lambda: master.exit_counts[5] == 2, 10, "both runs' exits")
    assert [(m["t"], m.get("restart_count")) for m in master.events] == [
        ("job_started", None),
        ("job_exited", 0),
        ("job_started", None),
        ("job_exited", 1),
    ]
    assert master.exited[5]["exit_code"] == 0 and (work / "new").read_text() == "1\n"
    assert master.log_text().count("duplicate launch ignored") == 1


def start_job(node: Node, job_id: int) -> int:
    """A job that records its pid; returns it once the agent's lease counts it in."""
    pid_file = node.work / f"{job_id}.pid"
    link = node.master.connect()
    link.send(frame(node.launch(job_id, f"echo $$ > {pid_file}; exec sleep 300")))
    pid = int(wait_for_text(pid_file))
    node.beats_after(2)  # acknowledged since: the lease was renewed with the job running
    wait_for(lambda: running_guard(node.master.state_dir), 20, "the agent's guard")
    return pid


def wait_dead(pid: int, since: float) -> float:
    """Seconds from ``since`` until ``pid`` died; fails past fence timeout + kill grace + 1 s."""
    limit_s = FENCE_S + GRACE_S + 1.0
    wait_for(lambda: dead(pid), limit_s + 5, f"job pid {pid} to die")
    took = time.monotonic() - since
    assert took <= limit_s, f"the job lived {took:.2f} s after its agent went silent"
    return took


def _accept_one(master: FakeMaster) -> None:
    with contextlib.suppress(OSError):
        master.connect(timeout_s=10)


def test_a_frozen_agents_jobs_are_fenced(node: Node) -> None:
    master = node.master
    pid = start_job(node, 9)
    node.agent.send_signal(signal.SIGSTOP)  # as frozen as a partitioned node's agent looks
    frozen_at = time.monotonic()
    took = wait_dead(pid, frozen_at)
    assert master.exited == {}  # nobody told the master: it learns when the agent wakes

    node.agent.send_signal(signal.SIGCONT)
    # Awake, the agent may find its link silent for too long and connect again (how soon
    # depends on the load): take that connection if it comes.
    threading.Thread(target=_accept_one, args=(master,), daemon=True).start()
    master.wait(lambda: 9 in master.exited, 10, "the fenced job's exit")
    exited = master.exited[9]
    assert exited["reason"].startswith("fenced: no word from the master for ")
    assert exited["signal"] == signal.SIGTERM and exited["timed_out"] is False
    guard_log = (master.state_dir / GUARD_LOG_FILE).read_text()
    assert "job=9" in guard_log and "fenced" in guard_log
    print(f"\njob killed {took:.2f} s after its agent froze (fence {FENCE_S} s)")


def test_a_killed_agents_guard_fences_its_jobs_then_leaves(node: Node) -> None:
    master = node.master
    pid = start_job(node, 11)
    guard = wait_for(lambda: running_guard(master.state_dir), 20, "the agent's guard")
    node.agent.kill()
    node.agent.wait(timeout=10)
    wait_dead(pid, time.monotonic())
    # No agent, no job left: the guard leaves.
    wait_for(lambda: running_guard(master.state_dir) is None, 10, "the guard to leave")
    assert dead(guard)

    # The next agent reports the exit, fenced, and starts a guard of its own.
    node.agent = master.start_agent("--heartbeat-interval", str(HEARTBEAT_S), "--allow-root-jobs")
    master.connect()
    master.wait(lambda: 11 in master.exited, 10, "the fenced job's exit")
    assert master.exited[11]["reason"].startswith("fenced: no word from the master for ")
    wait_for(lambda: running_guard(master.state_dir), 10, "a new guard")


def test_time_limits_hold_while_the_master_is_away(node: Node) -> None:
    """The agent's own timer ends the job; the exit waits in the journal for the next link."""
    master = node.master
    link = master.connect()
    pid_file = node.work / "limited.pid"
    job = node.launch(13, f"echo $$ > {pid_file}; exec sleep 300")
    job["launch"]["spec"]["time_limit_s"] = 1
    link.send(frame(job))
    pid = int(wait_for_text(pid_file))
    link.close()  # the master is gone; the agent's next hellos go unanswered
    wait_for(lambda: dead(pid), 10, "the job to end at its time limit")
    assert 13 not in master.exited

    master.connect()
    master.wait(lambda: 13 in master.exited, 10, "the exit, sent on the next link")
    exited = master.exited[13]
    assert exited["timed_out"] is True and exited["reason"] == "time limit reached"
