"""Nothing lost: the master's state survives kill -9 and restarts."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mgpu_client.client import Client
from mgpu_core.config import parse_address
from mgpu_core.errors import MgpuError
from mgpu_core.models import JobSpec
from tests.integration.conftest import Cluster, wait_for

pytestmark = pytest.mark.timeout(180)


def test_restart_keeps_pending_running_and_finished_jobs(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    done = cluster.sbatch("--wrap", "echo finished-before")
    cluster.wait_state(done, "COMPLETED")
    release = cluster.tmp / "release"
    running = cluster.sbatch(
        "--gpus", "1", "--wrap", f"while [ ! -e {release} ]; do sleep 0.02; done; exit 3"
    )
    cluster.wait_state(running, "RUNNING")
    pending = [
        cluster.sbatch("--gpus", "1", "-J", f"p{i}", "--wrap", "echo $MGPU_JOB_ID")
        for i in range(3)
    ]
    before = cluster.jobs()

    cluster.kill_master()
    cluster.start_master("--kill-grace", "2", port=cluster.port)
    after = cluster.jobs()
    assert sorted(after) == sorted(before)
    assert after[done]["state"] == "COMPLETED" and after[running]["state"] == "RUNNING"
    assert all(after[p]["state"] == "PENDING" for p in pending)
    # The node reconnects and reports the job it still runs; the GPU stays allocated to it.
    wait_for(lambda: cluster.node_state("n1") not in (None, "down"), 20, "node to reconnect")
    assert cluster.job(running)["state"] == "RUNNING"
    assert all(cluster.job(p)["state"] == "PENDING" for p in pending)
    release.touch()
    finished = cluster.wait_state(running, "FAILED", "COMPLETED")
    assert finished["state"] == "FAILED" and finished["exit_code"] == 3
    for p in pending:
        cluster.wait_state(p, "COMPLETED")
    # New ids continue after the old ones.
    assert cluster.sbatch("--wrap", "true") > max(pending)


def test_kill_9_during_concurrent_submits_loses_no_acknowledged_job(cluster: Cluster) -> None:
    address = parse_address(cluster.address)
    acked: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def submitter() -> None:
        try:
            with Client(address, timeout_s=10) as client:
                while not stop.is_set():
                    job_id = client.submit(JobSpec(argv=["true"], cwd="/"))
                    with lock:
                        acked.append(job_id)
        except (MgpuError, OSError, TimeoutError):
            return  # the master died under us: expected

    threads = [threading.Thread(target=submitter) for _ in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 1000, 60, "1000 acknowledged submissions")
    cluster.kill_master()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    cluster.start_master(port=cluster.port)
    stored = cluster.jobs()
    assert len(acked) == len(set(acked)) >= 1000
    missing = set(acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged jobs lost"
    db = sqlite3.connect(cluster.tmp / "master" / "mgpu.db")
    dupes = db.execute("SELECT count(*) - count(DISTINCT job_id) FROM jobs").fetchone()[0]
    assert dupes == 0


def test_bad_state_dir_and_corrupt_database_stop_the_master(tmp_path: Path) -> None:
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("x")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "mgpu.db").write_bytes(b"this is not a database" * 100)
    for state, fragment in ((blocked, str(blocked)), (corrupt, str(corrupt / "mgpu.db"))):
        result = subprocess.run(
            [sys.executable, "-m", "mgpu_server", "--port", "0", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode != 0
        assert fragment in result.stderr and "Traceback" not in result.stderr
