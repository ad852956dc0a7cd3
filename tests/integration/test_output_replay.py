"""Interactive output is not lost: the node keeps it and replays it in order when the master
comes back and when a node's link is restored (attach's replay: test_durability.py)."""

from __future__ import annotations

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


@pytest.mark.parametrize("ends_while_away", [False, True])
def test_srun_prints_every_line_once_across_a_master_kill(
    cluster: Cluster, ends_while_away: bool
) -> None:
    cluster.start_node("n1", gpus=1)
    t = cluster.tmp
    # Lines 1-20, then (master killed) 21-35 printed while it is away, then 36-50; the job
    # ends after srun has re-attached, or before the master is back.
    script = "; ".join(
        [
            lines(1, 20),
            f"touch {t / 'half'}",
            gate(t / "dead"),
            lines(21, 35),
            f"touch {t / 'more'}",
            lines(36, 50),
            "true" if ends_while_away else gate(t / "end"),
            f"touch {t / 'done'}",
        ]
    )
    proc = srun(cluster, script)
    try:
        wait_for((t / "half").exists, 20, "the first 20 lines")
        cluster.kill_master()
        (t / "dead").touch()
        wait_for((t / ("done" if ends_while_away else "more")).exists, 20, "lines while away")
        cluster.start_master(port=cluster.port)
        if not ends_while_away:
            job_id = next(iter(cluster.jobs()))
            wait_for(lambda: cluster.job(job_id)["attached"] == 1, 20, "srun to re-attach")
            (t / "end").touch()
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out == LINES, err
    assert b"reconnecting" in err


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
