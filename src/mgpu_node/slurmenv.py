"""Slurm's job environment: the ``SLURM_*`` variables a job sees beside our ``MGPU_*`` ones.

Why: tools written for Slurm find their job through these. submitit reads SLURM_JOB_ID,
SLURM_ARRAY_JOB_ID/TASK_ID and SLURM_PROCID/LOCALID/NTASKS/NODEID to know which job and rank
it is; PyTorch Lightning's and Accelerate's Slurm detection read SLURM_NTASKS, SLURM_JOB_NAME,
SLURM_NODELIST and SLURM_PROCID; scripts log SLURM_JOB_ID and SLURMD_NODENAME, name files after
SLURM_ARRAY_TASK_ID, size thread pools by SLURM_CPUS_PER_TASK and resume on
SLURM_RESTART_COUNT. With them a job written for a Slurm cluster runs here unchanged.

The values follow Slurm's for a one-node job (every mgpu job is one): one node, the batch
script (or srun's command) is task 0 on node 0. As in Slurm, a batch job has no step id (its
step is "batch") and an interactive (srun) job is step 0; GPU variables are set only for a job
that has GPUs and SLURM_MEM_PER_NODE only for one that asked for memory. SLURM_TASK_PID, the
pid of the job's command, is known only once it runs: the wrapper sets it (wrapper.py).

A job submitted from inside another job inherits that job's values in its environment (a
follow-up submitted by array task 3 carries SLURM_ARRAY_TASK_ID=3): every variable this module
owns (:data:`OWNED`) is dropped from the submitted environment first, so a job sees its own
value or none, never a stale one.
"""

from __future__ import annotations

from mgpu_core.arrays import array_bounds
from mgpu_core.models import Launch

DEFAULT_CLUSTER_NAME = "mgpu"
MIB = 1024 * 1024

# Every variable slurm_environment may set (and the wrapper's SLURM_TASK_PID).
OWNED = frozenset(
    {
        "SLURM_JOB_ID",
        "SLURM_JOBID",
        "SLURM_JOB_NAME",
        "SLURM_JOB_NODELIST",
        "SLURM_NODELIST",
        "SLURM_JOB_NUM_NODES",
        "SLURM_NNODES",
        "SLURMD_NODENAME",
        "SLURM_SUBMIT_DIR",
        "SLURM_SUBMIT_HOST",
        "SLURM_NTASKS",
        "SLURM_NPROCS",
        "SLURM_CPUS_PER_TASK",
        "SLURM_CPUS_ON_NODE",
        "SLURM_JOB_CPUS_PER_NODE",
        "SLURM_TASKS_PER_NODE",
        "SLURM_GPUS",
        "SLURM_GPUS_ON_NODE",
        "SLURM_JOB_GPUS",
        "SLURM_MEM_PER_NODE",
        "SLURM_RESTART_COUNT",
        "SLURM_ARRAY_JOB_ID",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_COUNT",
        "SLURM_ARRAY_TASK_MIN",
        "SLURM_ARRAY_TASK_MAX",
        "SLURM_ARRAY_TASK_STEP",
        "SLURM_PROCID",
        "SLURM_LOCALID",
        "SLURM_NODEID",
        "SLURM_TASK_PID",
        "SLURM_CLUSTER_NAME",
        "SLURM_JOB_PARTITION",
        "SLURM_JOB_ACCOUNT",
        "SLURM_JOB_USER",
        "SLURM_JOB_UID",
        "SLURM_JOB_GID",
        "SLURM_JOB_QOS",
        "SLURM_STEP_ID",
        "SLURM_STEPID",
        "SLURM_STEP_NODELIST",
        "SLURM_STEP_NUM_NODES",
        "SLURM_STEP_NUM_TASKS",
        "SLURM_STEP_TASKS_PER_NODE",
    }
)


def array_task(launch: Launch) -> tuple[int, int] | None:
    """(array job id, task id) of an array task, else None.

    The master puts them in the task's environment as MGPU_ARRAY_JOB_ID/TASK_ID (it knows
    them; Job.launch_spec). They count only for a job that is an array's (``spec.array``): a
    job submitted from inside an array task inherits the task's variables.
    """
    spec = launch.spec
    if not spec.array:
        return None
    ids = (spec.env.get("MGPU_ARRAY_JOB_ID", ""), spec.env.get("MGPU_ARRAY_TASK_ID", ""))
    if not all(text.isascii() and text.isdigit() and len(text) <= 16 for text in ids):
        return None
    return int(ids[0]), int(ids[1])


def slurm_environment(launch: Launch, *, node: str, uid: int, gid: int) -> dict[str, str]:
    """The SLURM_* variables of ``launch``'s job on ``node``, run as ``uid``/``gid``."""
    spec = launch.spec
    job_id = str(launch.job_id)
    ntasks = str(spec.ntasks)
    cpus = str(spec.cpus)
    env = {
        "SLURM_JOB_ID": job_id,
        "SLURM_JOBID": job_id,
        "SLURM_JOB_NAME": spec.display_name(),
        "SLURM_JOB_NODELIST": node,
        "SLURM_NODELIST": node,
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NNODES": "1",
        "SLURMD_NODENAME": node,
        "SLURM_SUBMIT_DIR": spec.cwd,
        "SLURM_SUBMIT_HOST": spec.submit_host,
        "SLURM_NTASKS": ntasks,
        "SLURM_NPROCS": ntasks,
        "SLURM_TASKS_PER_NODE": ntasks,
        "SLURM_CPUS_PER_TASK": str(max(1, spec.cpus // spec.ntasks)),
        "SLURM_CPUS_ON_NODE": cpus,
        "SLURM_JOB_CPUS_PER_NODE": cpus,
        "SLURM_RESTART_COUNT": str(launch.restart_count),
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_CLUSTER_NAME": launch.cluster_name or DEFAULT_CLUSTER_NAME,
        "SLURM_JOB_USER": launch.user,
        "SLURM_JOB_UID": str(uid),
        "SLURM_JOB_GID": str(gid),
    }
    optional = {
        "SLURM_JOB_PARTITION": launch.partition,
        "SLURM_JOB_ACCOUNT": spec.account,
        "SLURM_JOB_QOS": spec.qos,
    }
    env.update({name: value for name, value in optional.items() if value})
    if launch.gpu_indices:
        env["SLURM_GPUS"] = env["SLURM_GPUS_ON_NODE"] = str(len(launch.gpu_indices))
        env["SLURM_JOB_GPUS"] = ",".join(str(i) for i in launch.gpu_indices)
    if spec.mem_bytes:
        env["SLURM_MEM_PER_NODE"] = str(-(-spec.mem_bytes // MIB))  # MB, rounded up
    if spec.interactive:  # srun's job is its one step, 0; a batch script's step has no id
        env.update(
            {
                "SLURM_STEP_ID": "0",
                "SLURM_STEPID": "0",
                "SLURM_STEP_NODELIST": node,
                "SLURM_STEP_NUM_NODES": "1",
                "SLURM_STEP_NUM_TASKS": ntasks,
                "SLURM_STEP_TASKS_PER_NODE": ntasks,
            }
        )
    env.update(_array_environment(launch))
    return env


def _array_environment(launch: Launch) -> dict[str, str]:
    task = array_task(launch)
    if task is None:
        return {}
    try:
        first, last, step = array_bounds(launch.spec.array)
    except ValueError:  # checked at submit; an odd one only loses these three
        bounds = {}
    else:
        bounds = {
            "SLURM_ARRAY_TASK_MIN": str(first),
            "SLURM_ARRAY_TASK_MAX": str(last),
            "SLURM_ARRAY_TASK_STEP": str(step),
        }
    count = launch.spec.env.get("MGPU_ARRAY_TASK_COUNT", "")
    return {
        "SLURM_ARRAY_JOB_ID": str(task[0]),
        "SLURM_ARRAY_TASK_ID": str(task[1]),
        **({"SLURM_ARRAY_TASK_COUNT": count} if count.isascii() and count.isdigit() else {}),
        **bounds,
    }
