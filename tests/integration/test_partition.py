"""A network partition without signals: a proxy between one agent and the master blackholes
their traffic. The agent's fence must kill the job before the master starts it elsewhere, and
when the network heals nothing runs twice."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from tests.helpers import ledger
from tests.helpers.cluster import FAST_FENCE, PY, Cluster, running_cluster, wait_for
from tests.helpers.proxy import BlackholeProxy

pytestmark = pytest.mark.timeout(120)


def copies(cluster: Cluster, job_id: int) -> int:
    """Live processes of this job (its ledger script), wherever they run."""
    found = 0
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
            if env.get("MGPU_JOB_ID") == str(job_id) and "ledger_job.py" in " ".join(
                proc.cmdline()
            ):
                found += 1
        except (psutil.Error, OSError):
            continue
    return found


def test_a_partitioned_nodes_job_is_fenced_before_it_runs_elsewhere(tmp_path: Path) -> None:
    with running_cluster(tmp_path, *FAST_FENCE) as c, BlackholeProxy(c.port) as proxy:
        book = tmp_path / "book"
        script = ledger.install(book)
        c.start_node("n1", 1, master_port=proxy.port)
        job_id = c.sbatch("--gpus", "1", "--wrap", f"{PY} {script} {book} 120 0")
        c.wait_state(job_id, "RUNNING")
        assert c.job(job_id)["node"] == "n1"
        c.start_node("n2", 1)
        proxy.blackhole()
        # n1 is silent: not responding at once, and its job requeued only after the fence.
        row = c.wait_state(job_id, "RUNNING", "PENDING", timeout_s=5)
        assert row["node"] in ("n1", "")
        moved = wait_for(
            lambda: (r := c.job(job_id))["node"] == "n2" and r["state"] == "RUNNING" and r,
            30,
            "the job to be requeued onto n2",
        )
        assert moved["restart_count"] == 1
        wait_for(lambda: any("run=1" in x for x in ledger.lines(book)), 15, "the second run")
        assert ledger.clashes(book) == [], "two copies of the job ran at once"
        proxy.heal()
        # n1's agent finds its way back (its fenced copy is long dead): one copy, on n2.
        wait_for(lambda: c.node_up("n1"), 30, "n1 to register again")
        assert copies(c, job_id) == 1
        assert c.job(job_id)["node"] == "n2" and ledger.clashes(book) == []
