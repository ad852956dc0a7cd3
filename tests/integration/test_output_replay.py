"""Interactive output is not lost: the node keeps it and replays it in order when the master
comes back and when a node's link is restored (attach's replay: test_durability.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.cluster import Cluster, running_cluster, wait_for
from tests.helpers.proxy import BlackholeProxy

pytestmark = pytest.mark.timeout(120)

LINES = b"".join(b"line %d\n" % i for i in range(1, 51))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path) as c:
        yield c


def srun(cluster: Cluster, script: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "mgpu_client.srun", "--", "sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cluster.env,
        cwd=cluster.tmp,
    )


def gate(path: Path) -> str:
    return f"while [ ! -e {path} ]; do sleep 0.02; done"


def lines(first: int, last: int) -> str:
    return f"for i in $(seq {first} {last}); do echo line $i; sleep 0.05; done"


@pytest.mark.parametrize("case", ["srun back first", "ends while away", "srun back late"])
def test_srun_output_across_a_master_kill(cluster: Cluster, case: str) -> None:
    """Lines 1-20, then (master killed) 21-35 printed while it is away, then 36-50. The job
    ends after srun has re-attached, or before the master is back (the node holds the exit
    for a follower): every line once. Or srun, stopped, comes back only after the node has
    delivered the exit (and dropped the output log): it names the bytes it never got."""
    late = case == "srun back late"
    cluster.start_node("n1", gpus=1)
    t = cluster.tmp
    script = "; ".join(
        [
            lines(1, 20),
            f"touch {t / 'half'}",
            gate(t / "dead"),
            lines(21, 35),
            f"touch {t / 'more'}",
            lines(36, 50),
            gate(t / "end") if case == "srun back first" else "true",
            f"touch {t / 'done'}",
        ]
    )
    proc = srun(cluster, script)
    try:
        wait_for((t / "half").exists, 20, "the first 20 lines")
        job_id = next(iter(cluster.jobs()))
        cluster.kill_master()
        (t / "dead").touch()
        ends = case != "srun back first"
        wait_for((t / ("done" if ends else "more")).exists, 20, "lines while away")
        if late:
            os.kill(proc.pid, signal.SIGSTOP)
        try:
            cluster.start_master(port=cluster.port)
            if late:
                cluster.wait_state(job_id, "COMPLETED", timeout_s=30)  # the exit, held ~5 s
            elif not ends:
                wait_for(lambda: cluster.job(job_id)["attached"] == 1, 20, "srun to re-attach")
                (t / "end").touch()
        finally:
            if late:
                os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert b"reconnecting" in err
    if late:
        printed = LINES.index(b"line 21\n")
        assert out == LINES[:printed], err
        missed = f"the last {len(LINES) - printed} bytes of job {job_id}'s output were not received"
        assert missed.encode() in err
    else:
        assert out == LINES, err


def test_a_node_link_lost_and_restored_loses_no_output(tmp_path: Path) -> None:
    # A fence of 10 s: the agent takes a silent link for dead after 5 s and registers again
    # well before its lease runs out.
    with running_cluster(tmp_path, "--fence-timeout", "10") as c, BlackholeProxy(c.port) as proxy:
        c.start_node("n1", 1, master_port=proxy.port)
        t = c.tmp
        script = "; ".join(
            [
                lines(1, 20),
                f"touch {t / 'half'}",
                gate(t / "cut"),
                lines(21, 35),
                f"touch {t / 'more'}",
                gate(t / "end"),
                lines(36, 50),
            ]
        )
        proc = srun(c, script)
        try:
            wait_for((t / "half").exists, 20, "the first 20 lines")
            proxy.blackhole()
            (t / "cut").touch()
            wait_for((t / "more").exists, 20, "lines printed into the cut link")
            proxy.heal()  # the agent finds the old link dead after 5 s, then registers again
            (t / "end").touch()  # 36-50 go into the dead link too; the job ends meanwhile
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
        assert proc.returncode == 0, err
        assert out == LINES, err


def test_a_slow_srun_is_told_why_and_catches_up_byte_exact(tmp_path: Path) -> None:
    # srun is stopped while its job prints ~15 MB: past the master's 256 KiB backlog bound it
    # is dropped as a watcher (the master does not buffer the rest); resumed, it says it read
    # too slowly (not that the master was lost), re-attaches from its offset and gets the rest
    # from the node's output log, each byte once.
    count = 2_000_000
    expected = b"".join(b"%d\n" % i for i in range(1, count + 1))
    with running_cluster(tmp_path, "--max-client-backlog", "256K") as c:
        c.start_node("n1", 1)
        t = c.tmp
        script = "; ".join(
            [f"touch {t / 'started'}", gate(t / "go"), f"seq 1 {count}", gate(t / "end")]
        )
        out_path = t / "srun.out"
        with open(out_path, "wb") as out_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mgpu_client.srun", "--", "sh", "-c", script],
                stdout=out_file,
                stderr=subprocess.PIPE,
                env=c.env,
                cwd=t,
            )
        try:
            wait_for((t / "started").exists, 20, "the job to start")
            job_id = next(iter(c.jobs()))
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                (t / "go").touch()
                wait_for(lambda: c.job(job_id)["attached"] == 0, 30, "the slow srun dropped")
            finally:
                os.kill(proc.pid, signal.SIGCONT)
            wait_for(lambda: out_path.stat().st_size >= len(expected), 60, "srun to catch up")
            (t / "end").touch()
            _, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
        assert proc.returncode == 0, err
        assert out_path.read_bytes() == expected, err
        assert b"you read too slowly" in err and b"lost the master" not in err, err
