"""A real Slurm-driving tool, unchanged, on mgpu: submitit (a test dependency) submits through
the Slurm-named commands of ``mgpu_client slurm-commands`` (sbatch --parsable, sacct
--parsable2, scancel, srun steps inside the job) to a real local master and node.

What it exercises is what submitit users do: a function's return value, the job environment
submitit reads from SLURM_* variables, ``map_array`` of 4, a job that raises, cancelling a
running job, and 2 tasks of one job through an ``srun`` step.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cluster import Cluster, wait_for

submitit = pytest.importorskip("submitit")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def slurm_cluster(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A node with 2 CPUs, the Slurm-named commands first on PATH, and a submitit folder."""
    cluster.start_node("n1", 2)
    bin_dir = cluster.tmp / "slurm-bin"
    cluster.cli("mgpu_client", "slurm-commands", str(bin_dir), check=True)
    for key, value in cluster.env.items():
        if key in ("MGPU_MASTER", "MGPU_TLS_CA"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    folder = cluster.tmp / "submitit"
    folder.mkdir()
    yield folder


def _executor(folder: Path, **params: object) -> Any:
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=0)
    executor.update_parameters(time=5, cpus_per_task=1, **params)
    return executor


def _environment() -> dict[str, object]:
    env = submitit.JobEnvironment()
    return {
        "job_id": env.job_id,
        "global_rank": env.global_rank,
        "num_tasks": env.num_tasks,
        "hostnames": env.hostnames,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }


def _square(x: int) -> int:
    return x * x


def _fail() -> None:
    raise ValueError("deliberate failure")


def _rank() -> int:
    return int(submitit.JobEnvironment().global_rank)


def _sleep() -> None:
    time.sleep(120)


def test_a_function_returns_its_value_and_sees_slurms_environment(slurm_cluster: Path) -> None:
    executor = _executor(slurm_cluster)
    job = executor.submit(_square, 7)
    assert job.job_id.isdigit()
    assert job.result() == 49
    env = executor.submit(_environment).result()
    assert env["slurm_job_id"] == env["job_id"]
    assert env["global_rank"] == 0
    assert env["num_tasks"] == 1
    assert env["hostnames"] == ["n1"]


def test_map_array_of_four(slurm_cluster: Path) -> None:
    jobs = _executor(slurm_cluster).map_array(_square, [1, 2, 3, 4])
    assert [j.result() for j in jobs] == [1, 4, 9, 16]
    assert len({j.job_id.split("_")[0] for j in jobs}) == 1  # one array


def test_a_raising_job_fails_with_its_exception(slurm_cluster: Path) -> None:
    job = _executor(slurm_cluster).submit(_fail)
    with pytest.raises(submitit.core.utils.FailedJobError, match="deliberate failure"):
        job.result()
    # The result file is written before the job's process ends; sacct then says FAILED.
    wait_for(lambda: job.state == "FAILED", timeout_s=60, what="sacct's FAILED")


def test_cancelling_a_running_job(slurm_cluster: Path, cluster: Cluster) -> None:
    job = _executor(slurm_cluster).submit(_sleep)
    cluster.wait_state(int(job.job_id), "RUNNING", timeout_s=60)
    job.cancel(check=True)
    wait_for(lambda: job.state.startswith("CANCELLED"), timeout_s=60)
    assert job.done(force_check=True)


def test_two_tasks_through_an_srun_step(slurm_cluster: Path, cluster: Cluster) -> None:
    job = _executor(slurm_cluster, ntasks_per_node=2).submit(_rank)
    assert job.results() == [0, 1]
    sacct = ["sacct", "-j", job.job_id, "-P", "-n", "-o", "JobID,State"]
    steps = subprocess.run(sacct, capture_output=True, text=True, timeout=60, check=True)
    ids = [line.split("|")[0] for line in steps.stdout.splitlines()]
    assert f"{job.job_id}.batch" in ids and f"{job.job_id}.0" in ids
