"""The SLURM_* variables a job sees (slurmenv.py), built from its launch."""

from __future__ import annotations

from typing import Any

from mgpu_core.messages import MASTER_TO_NODE, validate
from mgpu_core.models import Launch
from mgpu_node.slurmenv import OWNED, array_task, slurm_environment


def make_launch(
    *, restart_count: int = 0, gpu_indices: list[int] | None = None, **spec: Any
) -> Launch:
    """The launch a master sends, through the node's own check."""
    launch: dict[str, Any] = {
        "job_id": 42,
        "user": "alice",
        "gpu_indices": gpu_indices or [],
        "restart_count": restart_count,
        "spec": {"argv": ["train.py"], "cwd": "/home/alice/run", **spec},
    }
    return Launch.from_checked(
        validate({"t": "launch", "launch": launch}, MASTER_TO_NODE)["launch"]
    )


def env_of(launch: Launch) -> dict[str, str]:
    return slurm_environment(launch, node="gpu7", uid=1000, gid=100)


def test_a_batch_job_sees_slurms_variables() -> None:
    launch = make_launch(
        name="train",
        script="#!/bin/sh\ntrue\n",
        ntasks=2,
        cpus=8,
        gpus=2,
        mem_bytes=3 * 2**30 + 1,  # rounded up to whole MB
        qos="normal",
        account="vision",
        submit_host="login1",
        restart_count=2,
        gpu_indices=[1, 3],
    )
    launch = Launch.from_checked({**launch.to_wire(), "partition": "gpu", "cluster_name": "lab"})
    assert env_of(launch) == {
        "SLURM_JOB_ID": "42",
        "SLURM_JOBID": "42",
        "SLURM_JOB_NAME": "train",
        "SLURM_JOB_NODELIST": "gpu7",
        "SLURM_NODELIST": "gpu7",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NNODES": "1",
        "SLURMD_NODENAME": "gpu7",
        "SLURM_SUBMIT_DIR": "/home/alice/run",
        "SLURM_SUBMIT_HOST": "login1",
        "SLURM_NTASKS": "2",
        "SLURM_NPROCS": "2",
        "SLURM_TASKS_PER_NODE": "2",
        "SLURM_CPUS_PER_TASK": "4",
        "SLURM_CPUS_ON_NODE": "8",
        "SLURM_JOB_CPUS_PER_NODE": "8",
        "SLURM_GPUS": "2",
        "SLURM_GPUS_ON_NODE": "2",
        "SLURM_JOB_GPUS": "1,3",
        "SLURM_MEM_PER_NODE": "3073",
        "SLURM_RESTART_COUNT": "2",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_CLUSTER_NAME": "lab",
        "SLURM_JOB_PARTITION": "gpu",
        "SLURM_JOB_ACCOUNT": "vision",
        "SLURM_JOB_QOS": "normal",
        "SLURM_JOB_USER": "alice",
        "SLURM_JOB_UID": "1000",
        "SLURM_JOB_GID": "100",
    }


def test_what_a_job_did_not_ask_for_is_not_set() -> None:
    env = env_of(make_launch())
    for name in (
        "SLURM_GPUS",
        "SLURM_GPUS_ON_NODE",
        "SLURM_JOB_GPUS",
        "SLURM_MEM_PER_NODE",
        "SLURM_JOB_PARTITION",
        "SLURM_JOB_ACCOUNT",
        "SLURM_STEP_ID",  # a batch script's step has no id
        "SLURM_ARRAY_TASK_ID",
    ):
        assert name not in env, name
    assert env["SLURM_CLUSTER_NAME"] == "mgpu"  # a master that names none
    assert env["SLURM_SUBMIT_HOST"] == ""
    assert env["SLURM_JOB_NAME"] == "train.py"  # the program's, as in the queue
    assert (env["SLURM_NTASKS"], env["SLURM_CPUS_PER_TASK"]) == ("1", "1")
    assert set(env) <= OWNED


def test_an_interactive_job_is_step_0() -> None:
    env = env_of(make_launch(interactive=True, ntasks=3, cpus=3))
    assert {k: v for k, v in env.items() if k.startswith("SLURM_STEP")} == {
        "SLURM_STEP_ID": "0",
        "SLURM_STEPID": "0",
        "SLURM_STEP_NODELIST": "gpu7",
        "SLURM_STEP_NUM_NODES": "1",
        "SLURM_STEP_NUM_TASKS": "3",
        "SLURM_STEP_TASKS_PER_NODE": "3",
    }
    assert set(env) <= OWNED


def array_env(**extra: str) -> dict[str, str]:
    return {
        "MGPU_ARRAY_JOB_ID": "40",
        "MGPU_ARRAY_TASK_ID": "6",
        "MGPU_ARRAY_TASK_COUNT": "4",
        **extra,
    }


def test_an_array_task_sees_its_array() -> None:
    launch = make_launch(array="0-6:2%2", env=array_env())
    assert array_task(launch) == (40, 6)
    env = env_of(launch)
    assert {k: v for k, v in env.items() if k.startswith("SLURM_ARRAY")} == {
        "SLURM_ARRAY_JOB_ID": "40",
        "SLURM_ARRAY_TASK_ID": "6",
        "SLURM_ARRAY_TASK_COUNT": "4",
        "SLURM_ARRAY_TASK_MIN": "0",
        "SLURM_ARRAY_TASK_MAX": "6",
        "SLURM_ARRAY_TASK_STEP": "2",
    }


def test_array_variables_count_only_for_an_array_task() -> None:
    # A job submitted from inside an array task inherits the task's MGPU_ARRAY_* variables.
    inherited = make_launch(env=array_env())
    assert array_task(inherited) is None
    assert not [k for k in env_of(inherited) if k.startswith("SLURM_ARRAY")]
    # Variables that are not numbers are ignored rather than passed on.
    odd = make_launch(array="0-3", env=array_env(MGPU_ARRAY_TASK_ID="x"))
    assert array_task(odd) is None
