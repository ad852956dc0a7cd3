"""GPU sessions end to end (issue 15): ``mgpu_client session start|list|show|extend|stop|enter``
against a real master and agent. A session holds its allocation until its TTL and a grace,
warns its terminals, can be extended and stopped; ``enter`` (and ``srun --jobid ID --pty``) is a
real shell through a real pty on the job's node, with the job's GPUs, resizes and Ctrl-C; idle
GPUs are flagged, warned and ended by a QoS's policy; QoS session limits are enforced."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from mgpu_core.errors import PermissionDenied
from tests.helpers.cluster import PY, Cluster, running_cluster, wait_for

pytestmark = pytest.mark.timeout(120)

CONFIG = """
[scheduler]
idle_after = 1
[qos.normal]
max_sessions_per_user = 2
session_grace = 2
max_wall = 600
[qos.watched]
session_grace = 2
idle_warn = 2
idle_end = 5
"""
PROMPT = r"[#$] "


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    config = tmp_path / "master.toml"
    config.write_text(CONFIG)
    with running_cluster(tmp_path, "--config", str(config)) as c:
        c.start_node("n1", 2)
        yield c


def start(c: Cluster, *args: str) -> int:
    result = c.cli("mgpu_client", "session", "start", *args)
    assert result.returncode == 0, result.stderr
    assert "mgpu_client session enter" in result.stdout
    return int(result.stdout.split()[1])


def terminal(c: Cluster, *argv: str) -> pexpect.spawn[str]:
    child = pexpect.spawn(PY, list(argv), env=c.env, cwd=str(c.tmp), timeout=20, encoding="utf-8")
    child.setwinsize(30, 100)
    return child


def test_enter_is_a_real_shell_in_the_allocation(cluster: Cluster) -> None:
    c = cluster
    env = {**c.env, "LD_LIBRARY_PATH": "/tmp/mgpu-no-such-lib"}  # the session's, past the gate
    started = subprocess.run(
        [PY, "-m", "mgpu_client", "session", "start", "-G", "1", "--ttl", "10m", "--name", "nb"],
        env=env, cwd=c.tmp, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    job_id = int(started.stdout.split()[1])
    shell = terminal(c, "-m", "mgpu_client", "session", "enter", str(job_id))
    shell.sendline("echo typed''ahead")  # before the remote shell is there: kept, not lost
    shell.expect("typedahead")
    shell.expect(PROMPT)
    shell.sendline('echo "in=$MGPU_JOB_ID gpus=$CUDA_VISIBLE_DEVICES term=$MGPU_TERMINAL"')
    shell.expect(rf"in={job_id} gpus=\d term=1")
    shell.sendline('echo "ld=$LD_LIBRARY_PATH at=$(pwd)"')
    shell.expect(r"ld=/tmp/mgpu-no-such-lib at=\S+/workspaces/root")  # its workspace
    shell.sendline("stty size")
    shell.expect(r"30 100")
    shell.setwinsize(40, 120)  # SIGWINCH here: the new size reaches the remote pty
    shell.sendline("stty size")
    shell.expect(r"40 120")
    # In the foreground once it has printed (the same process execs sleep): then Ctrl-C.
    shell.sendline("sh -c 'echo run''ning; exec sleep 60'")
    shell.expect("running")
    shell.sendcontrol("c")  # a byte to the remote pty, which makes it SIGINT there
    shell.expect(PROMPT)
    shell.sendline("echo status-$?")
    shell.expect(r"status-130")
    shell.sendline("exit 3")
    shell.expect(pexpect.EOF)
    shell.close()
    assert shell.exitstatus == 3  # the remote shell's status, as ssh gives it

    # Slurm's habit: srun --jobid ID --pty COMMAND, here from outside the job.
    srun = terminal(c, "-m", "mgpu_client.srun", "--jobid", str(job_id), "--pty", "sh", "-c",
                    'echo "via-srun $MGPU_JOB_ID"; exit 5')  # fmt: skip
    srun.expect(rf"via-srun {job_id}")
    srun.expect(pexpect.EOF)
    srun.close()
    assert srun.exitstatus == 5

    listing = c.cli("mgpu_client", "session", "list", check=True).stdout
    assert f"{job_id}" in listing and "nb" in listing and "RUNNING" in listing
    c.cli("mgpu_client", "session", "stop", str(job_id), check=True)
    assert c.wait_state(job_id, "CANCELLED")["state"] == "CANCELLED"


def test_a_session_warns_then_ends_after_its_ttl_and_grace(cluster: Cluster) -> None:
    c = cluster
    job_id = start(c, "--ttl", "3s")
    shell = terminal(c, "-m", "mgpu_client", "session", "enter", str(job_id))
    shell.expect(PROMPT)
    # At the TTL: the grace (2 s, the QoS's session_grace) begins, and the terminal is told.
    shell.expect(rf"\[mgpu\] job {job_id} reached its time limit: it ends in 2 s \(grace\)")
    shell.expect(rf"job {job_id} ended")
    shell.expect(pexpect.EOF)
    shell.close()
    assert shell.exitstatus == 1  # cut off: not the shell's own exit
    row = c.wait_state(job_id, "TIMEOUT")
    assert row["end_time"] - row["start_time"] >= 5 - 0.5  # the TTL and the grace


def test_extend_moves_the_end_and_stop_ends_it(cluster: Cluster) -> None:
    c = cluster
    job_id = start(c, "--ttl", "3s")
    extended = c.cli("mgpu_client", "session", "extend", str(job_id), "1m", check=True).stdout
    assert "time limit now 1:03" in extended
    started = c.job(job_id)["start_time"]

    # Past the first TTL and its grace (3 + 2 s) with a margin, it still runs.
    def well_past() -> bool:
        assert c.job(job_id)["state"] == "RUNNING"
        return time.time() > float(started) + 7

    wait_for(well_past, 20, "the first TTL and grace to pass")
    shown = c.cli("mgpu_client", "session", "show", str(job_id), check=True).stdout
    assert f"session {job_id}" in shown and "of 1:03" in shown
    c.cli("mgpu_client", "session", "stop", str(job_id), check=True)
    c.wait_state(job_id, "CANCELLED")


def test_qos_limits_apply_to_sessions(cluster: Cluster) -> None:
    c = cluster
    first, second = start(c, "--ttl", "5m"), start(c, "--ttl", "5m")
    third = c.cli("mgpu_client", "session", "start", "--ttl", "5m")
    assert third.returncode != 0 and third.stderr.count("\n") == 1
    assert "holds 2 session(s), QOS normal allows 2" in third.stderr
    too_long = c.cli("mgpu_client", "session", "extend", str(first), "10m")
    assert too_long.returncode != 0 and "MaxWall" in too_long.stderr
    bad = c.cli("mgpu_client", "session", "start", "--ttl", "soon")
    assert bad.returncode != 0 and "invalid TTL 'soon'" in bad.stderr
    with c.client("bob") as bob, pytest.raises(PermissionDenied, match="only its owner"):
        bob.request("pty_open", job_id=first, rows=24, cols=80, term="xterm", command=[])
    for job_id in (first, second):
        c.cli("mgpu_client", "session", "stop", str(job_id), check=True)


def test_idle_gpus_are_flagged_warned_then_ended(cluster: Cluster) -> None:
    c = cluster
    busy = start(c, "-G", "1", "--ttl", "5m", "-q", "watched", "--name", "busy")
    gpu = c.job(busy)["gpu_indices"][0]
    load = c.root / "node-n1" / "fake-gpu-load"
    load.write_text(f"{gpu} 55 1000000000\n")  # this one computes
    idle = start(c, "-G", "1", "--ttl", "5m", "-q", "watched", "--name", "idle")
    shell = terminal(c, "-m", "mgpu_client", "session", "enter", str(idle))
    shell.expect(PROMPT)
    flagged = wait_for(lambda: c.job(idle)["idle_s"] or None, 20, "the idle session flagged")
    assert flagged >= 1
    assert "(idle " in c.cli("mgpu_queue", check=True).stdout
    shell.expect(rf"\[mgpu\] job {idle}'s GPUs have been idle for \d+ min: it will be ended")
    shell.expect(pexpect.EOF)
    shell.close()
    row = c.wait_state(idle, "CANCELLED")
    assert row["cancelled_by"] == "idle policy"
    assert c.job(busy)["state"] == "RUNNING" and c.job(busy)["idle_s"] == 0
    c.cli("mgpu_client", "session", "stop", str(busy), check=True)


def test_a_master_crash_ends_the_terminal_and_its_shell_not_the_session(cluster: Cluster) -> None:
    """The terminal is a route through the master: killed with SIGKILL, the master takes it
    along. The client says so in one line and exits; the node hangs the shell up (no shell is
    left behind); the session itself goes on and is entered again once the master is back."""
    c = cluster
    job_id = start(c, "--ttl", "10m")
    shell = terminal(c, "-m", "mgpu_client", "session", "enter", str(job_id))
    shell.expect(PROMPT)
    shell.sendline("echo pid=$$")
    shell.expect(r"pid=(\d+)")
    assert isinstance(shell.match, re.Match)
    remote_pid = int(shell.match.group(1))
    c.kill_master()
    shell.expect(pexpect.EOF)
    shell.close()
    assert shell.exitstatus not in (0, None)
    assert "master" in (shell.before or "")  # one line: it lost the master

    def gone() -> bool:
        try:
            os.kill(remote_pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, 20, "the terminal's shell hung up on the node")
    c.start_master(*c.last_master_args, port=c.port)
    c.wait_for(lambda: c.node_up("n1"), 20, "n1 back")
    assert c.job(job_id)["state"] == "RUNNING"
    again = terminal(c, "-m", "mgpu_client", "session", "enter", str(job_id), "sh", "-c", "exit 7")
    again.expect(pexpect.EOF)
    again.close()
    assert again.exitstatus == 7
