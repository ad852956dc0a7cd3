"""What a batch job finds on a real master and node, as tools written for Slurm expect it:
Slurm's variables, output paths in directories not made yet, a requeued job's log kept."""

from __future__ import annotations

import contextlib
import getpass
import os

import psutil
import pytest

from tests.helpers.cluster import Cluster, wait_for, wait_for_text

pytestmark = pytest.mark.timeout(60)


def variables(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_a_batch_job_sees_slurms_variables(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=2)
    script = "env | grep -e ^SLURM -e ^CUDA_VISIBLE_DEVICES= | sort"
    job_id = cluster.sbatch("-J", "probe", "--gpus", "1", "-c", "2", "--wrap", script)
    assert cluster.wait_state(job_id, "COMPLETED", "FAILED")["state"] == "COMPLETED"
    env = variables((cluster.tmp / f"mgpu-{job_id}.out").read_text())
    assert env["SLURM_JOB_ID"] == env["SLURM_JOBID"] == str(job_id)
    assert env["SLURM_JOB_NAME"] == "probe"
    assert env["SLURM_JOB_NODELIST"] == env["SLURM_NODELIST"] == env["SLURMD_NODENAME"] == "n1"
    assert env["SLURM_JOB_NUM_NODES"] == env["SLURM_NNODES"] == "1"
    assert env["SLURM_SUBMIT_DIR"] == str(cluster.tmp)
    assert env["SLURM_GPUS_ON_NODE"] == "1"
    assert env["SLURM_JOB_GPUS"] == env["CUDA_VISIBLE_DEVICES"]  # fake GPUs: index = id
    assert env["SLURM_CPUS_ON_NODE"] == "2"
    assert env["SLURM_NTASKS"] == "1" and env["SLURM_PROCID"] == "0"
    assert env["SLURM_RESTART_COUNT"] == "0"
    assert env["SLURM_JOB_USER"] == getpass.getuser()
    assert env["SLURM_JOB_UID"] == str(os.geteuid())
    assert env["SLURM_CLUSTER_NAME"]
    assert env["SLURM_TASK_PID"].isdigit()
    assert "SLURM_STEP_ID" not in env and "SLURM_ARRAY_TASK_ID" not in env


def test_an_array_task_sees_its_array_and_names_its_output_after_it(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=2)
    script = (
        "echo $SLURM_ARRAY_JOB_ID $SLURM_ARRAY_TASK_ID $SLURM_ARRAY_TASK_COUNT "
        "$SLURM_ARRAY_TASK_MIN $SLURM_ARRAY_TASK_MAX $SLURM_ARRAY_TASK_STEP"
    )
    first = cluster.sbatch("--array", "1,3", "-o", "arr/%A_%3a.out", "--wrap", script)
    for task in (1, 3):
        text = wait_for_text(cluster.tmp / "arr" / f"{first}_{task:03d}.out")
        assert text.split() == [str(first), str(task), "2", "1", "3", "2"]


def test_output_goes_into_a_directory_not_made_yet(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    job_id = cluster.sbatch("-J", "mk", "-o", "logs/%x/%j.out", "--wrap", "echo hi")
    assert cluster.wait_state(job_id, "COMPLETED", "FAILED")["state"] == "COMPLETED"
    assert (cluster.tmp / "logs" / "mk" / f"{job_id}.out").read_text() == "hi\n"


def test_a_requeued_job_appends_to_its_log(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    log = cluster.tmp / "run.log"
    # The first run waits to be requeued; the second one ends at once.
    script = 'echo "run $SLURM_RESTART_COUNT"; [ "$SLURM_RESTART_COUNT" -gt 0 ] || exec sleep 60'
    job_id = cluster.sbatch("-o", str(log), "--wrap", script)
    wait_for(lambda: log.exists() and log.read_text() == "run 0\n", 15, "the first run")
    cluster.cli("mgpu_client", "requeue", str(job_id), check=True)
    assert cluster.wait_state(job_id, "COMPLETED", "FAILED")["state"] == "COMPLETED"
    assert log.read_text() == "run 0\nrun 1\n"  # the first run's line kept


def test_an_srun_job_is_its_step_0(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    script = 'echo "$SLURM_JOB_ID $SLURM_STEP_ID $SLURM_STEPID $SLURM_STEP_NUM_TASKS"'
    result = cluster.cli("mgpu_srun", "sh", "-c", script, check=True)
    job_id, *step = result.stdout.split()
    assert job_id.isdigit() and step == ["0", "0", "1"]


def test_the_loaders_variables_wait_for_the_cgroup_gate(cluster: Cluster) -> None:
    """A job's LD_PRELOAD / LD_LIBRARY_PATH reach its command, but not the gate's shell that
    runs before the job is in its cgroups (a preloaded library's code would run there, outside
    them): the wrapper was started with them held aside (its /proc environ shows it)."""
    cluster.start_node("n1", gpus=1)
    isolation = cluster.nodes_json()[0]["isolation"]
    if isolation.startswith("none"):
        pytest.skip(f"no cgroups on this node ({isolation}): no gate to hold them for")
    script = 'echo "ld=$LD_LIBRARY_PATH"; exec sleep 30'
    job_id = cluster.sbatch("--export=ALL,LD_LIBRARY_PATH=/tmp/mgpu-no-such-lib", "--wrap", script)
    out = wait_for_text(cluster.tmp / f"mgpu-{job_id}.out", timeout_s=20)
    assert out == "ld=/tmp/mgpu-no-such-lib"  # the command has it

    def environs() -> list[dict[str, str]] | None:
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                env = proc.environ()
                if env.get("MGPU_JOB_ID") == str(job_id):
                    found.append(env)
        return found or None

    envs = wait_for(environs, 20, f"job {job_id}'s processes")
    held = [e for e in envs if "MGPU_HELD_LD_LIBRARY_PATH" in e]  # the gate's (the wrapper)
    assert held and all("LD_LIBRARY_PATH" not in e for e in held)
    assert held[0]["MGPU_HELD_LD_LIBRARY_PATH"] == "/tmp/mgpu-no-such-lib"
    cluster.cli("mgpu_cancel", str(job_id), check=True)
