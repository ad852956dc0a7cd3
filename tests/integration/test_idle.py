"""An idle cluster costs (almost) nothing: no busy loop in the master or the agent."""

from __future__ import annotations

import time

import psutil
import pytest

from tests.helpers.cluster import Cluster

pytestmark = pytest.mark.timeout(60)


def cpu_seconds(pid: int, over_s: float) -> float:
    proc = psutil.Process(pid)
    before = proc.cpu_times()
    time.sleep(over_s)  # the measurement window itself, not synchronisation
    after = proc.cpu_times()
    return (after.user - before.user) + (after.system - before.system)


def test_master_and_agent_are_quiet_when_idle(cluster: Cluster) -> None:
    cluster.start_node("n1", 2)
    job_id = cluster.sbatch("--wrap", "true")  # a change, then an empty queue
    cluster.wait_state(job_id, "COMPLETED")
    assert cluster.master is not None
    # A busy loop burns ~1 s per second; an idle master a few ms (heartbeats every 0.5 s).
    assert cpu_seconds(cluster.master.pid, 1.0) < 0.2
    assert cpu_seconds(cluster.nodes["n1"].pid, 1.0) < 0.2
