"""A root node agent runs each job in cgroups of its own: the other GPUs' device nodes denied,
its memory and CPU limits applied, the groups removed when the job ends.

Root and cgroup v1 (devices, memory, cpu at /sys/fs/cgroup/<controller>) only: the jobs read
their limits there, through /proc/self/cgroup.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from mgpu_core.units import parse_size
from tests.helpers.cluster import Cluster, wait_for

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1 = all((CGROUP_ROOT / c / "cgroup.procs").exists() for c in ("devices", "memory", "cpu"))

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        os.geteuid() != 0 or not V1,
        reason="needs root and cgroup v1 devices, memory and cpu under /sys/fs/cgroup",
    ),
]

# What a job finds out about itself: which fake GPU device nodes it may open, and its groups.
PROBE = """\
import errno, json, os, sys
dev = sys.argv[1]
opened = {}
for i in (0, 1):
    try:
        os.close(os.open(f"{dev}/nvidia{i}", os.O_RDWR))
        opened[i] = "ok"
    except OSError as exc:
        opened[i] = errno.errorcode[exc.errno]
lines = open("/proc/self/cgroup").read().splitlines()
groups = {c: p for _, cs, p in (line.split(":", 2) for line in lines) for c in cs.split(",")}
def read(controller, name):
    return open(f"/sys/fs/cgroup/{controller}{groups[controller]}/{name}").read().strip()
print(json.dumps({
    "gpus": os.environ["MGPU_GPUS"],
    "opened": opened,
    "groups": {c: groups[c] for c in ("devices", "memory", "cpu")},
    "memory_limit": int(read("memory", "memory.limit_in_bytes")),
    "cpu_quota_us": int(read("cpu", "cpu.cfs_quota_us")),
    "cpu_period_us": int(read("cpu", "cpu.cfs_period_us")),
}))
"""


def probe(cluster: Cluster, *options: str) -> dict[str, Any]:
    """Run the probe as a job with ``options``; what it found, once the job completed."""
    script = cluster.tmp / "probe.py"
    script.write_text(PROBE)
    dev = cluster.tmp / "node-n1" / "dev"
    job_id = cluster.sbatch(*options, "--wrap", f"{sys.executable} {script} {dev}")
    job = cluster.wait_state(job_id, "COMPLETED", "FAILED", "CANCELLED")
    out = (cluster.tmp / f"mgpu-{job_id}.out").read_text()
    assert job["state"] == "COMPLETED", out
    found: dict[str, Any] = json.loads(out)
    return found


def removed(found: dict[str, Any]) -> bool:
    """Whether the job's groups (as it saw them) are gone."""
    return not any((CGROUP_ROOT / c / p.lstrip("/")).exists() for c, p in found["groups"].items())


def test_a_job_gets_its_own_gpu_and_limits_and_its_groups_go_with_it(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=2)
    (node,) = cluster.nodes_json()
    assert node["isolation"] == "cgroup v1 (devices, memory, cpu)"
    assert "cgroup v1 (devices, memory, cpu)" in cluster.cli("mgpu_client", "nodes").stdout

    found = probe(cluster, "--gpus", "1", "--mem", "256M", "--cpus", "2")
    mine = int(found["gpus"])
    other = 1 - mine
    # The devices cgroup lets the job reach its own GPU's node (ENXIO: no driver serves
    # major 195 on this host, which only says the cgroup's check passed) and not the other's.
    assert found["opened"][str(mine)] in ("ok", "ENXIO")
    assert found["opened"][str(other)] == "EPERM"
    assert found["memory_limit"] == parse_size("256M")
    assert found["cpu_quota_us"] == 2 * found["cpu_period_us"]
    for controller, path in found["groups"].items():
        assert path.endswith("/job1"), (controller, path)
    wait_for(lambda: removed(found), 10, "the job's cgroups to be removed")


def test_a_job_without_gpus_can_open_none(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=2)
    found = probe(cluster, "--gpus", "0")
    assert found["opened"] == {"0": "EPERM", "1": "EPERM"}
    assert found["memory_limit"] > 2**60  # asked for none: not limited
    wait_for(lambda: removed(found), 10, "the job's cgroups to be removed")
