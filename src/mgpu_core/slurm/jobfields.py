"""What Slurm prints for one job, field by field, read from mgpu's job rows.

squeue (src/squeue/print.c) and scontrol (src/api/job_info.c) print the same job record, so
their common readings live here: the job id forms, the time used, the expected end, the
reason shown for a job. ``now`` is the master's clock (the response's ``now``), so times
agree with the states the master reported.
"""

from __future__ import annotations

from mgpu_core.slurm.common import (
    integer,
    job_state,
    number,
    text,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from mgpu_core.slurm.common import Row

# Slurm's job_state_reason_string for an ended job whose row carries no reason text.
_END_REASONS = {
    "FAILED": "NonZeroExitCode",
    "TIMEOUT": "TimeLimit",
    "OUT_OF_MEMORY": "OutOfMemory",
}
# squeue's %R shows "(reason)" instead of nodes for these states (print.c
# _print_job_reason_list); mgpu has no STAGE_OUT or DEADLINE jobs.
REASON_STATES = frozenset({"PENDING", "TIMEOUT", "OUT_OF_MEMORY", "FAILED"})
ACTIVE_STATES = frozenset({"RUNNING", "COMPLETING", "SUSPENDED"})


def is_array_task(job: Row) -> bool:
    return job.get("array_task_id") is not None


def job_id(job: Row) -> str:
    """squeue %i: ``ARRAYID_TASK`` for an array task, else the job id.

    Slurm shows pending tasks it has not split yet as ``ID_[1-5]``; mgpu makes each task
    its own job at submit, so every task is its own row and prints ``ID_TASK``."""
    if is_array_task(job):
        array_id = job.get("array_job_id") or job.get("job_id")
        return f"{array_id}_{job['array_task_id']}"
    if job.get("job_id") is None:
        return text(job, "job_ref")
    return str(job["job_id"])


def array_job_id(job: Row) -> str:
    """squeue %F: the array's id for a task, else the job id."""
    if is_array_task(job):
        return str(job.get("array_job_id") or job.get("job_id"))
    return text(job, "job_id")


def time_used(job: Row, now: float) -> int:
    """squeue's ``job_time_used``: 0 before the start; until the end (or while there is
    none), ``now`` minus the start; after it, the end minus the start."""
    start = number(job, "start_time")
    state = job_state(job)
    if not start or state == "PENDING":
        return 0
    end = number(job, "end_time")
    if state in ACTIVE_STATES or not end:
        end = now
    return max(0, int(end) - int(start))


def start_time(job: Row) -> float:
    """The start as Slurm keeps its ``start_time``: for a pending job the expected start
    (0: unknown); for a job that ended without starting (cancelled while pending), its end,
    as slurmctld's job_signal sets both to the cancel time."""
    if job_state(job) == "PENDING":
        return number(job, "expected_start")
    start = number(job, "start_time")
    if not start and job_state(job) not in ACTIVE_STATES:
        return number(job, "end_time")
    return start


def end_time(job: Row) -> float | None:
    """When Slurm's ``end_time`` would be: the end of an ended job; for a running or pending
    one its start plus its limit (0: unknown). None means "no end": an unlimited job that
    started or has an expected start (squeue prints ``NONE``, scontrol ``Unknown``)."""
    state = job_state(job)
    if state != "PENDING" and state not in ACTIVE_STATES:
        return number(job, "end_time")
    start = start_time(job)
    if not start:
        return 0.0
    limit_s = number(job, "time_limit_s")
    return start + limit_s if limit_s else None


def reason(job: Row) -> str:
    """squeue %r and scontrol's Reason: the row's reason, else Slurm's word for the state
    (``None`` for pending and running jobs)."""
    return text(job, "reason") or _END_REASONS.get(job_state(job), "None")


def reason_list(job: Row) -> tuple[str, bool]:
    """squeue %R: ``(reason)`` for a pending, failed, timed-out or out-of-memory job, else
    the node list; with whether Slurm cuts it to the column (the reason) or not (nodes)."""
    if job_state(job) in REASON_STATES:
        return f"({reason(job)})", True
    return text(job, "node"), False


def batch_host(job: Row) -> str:
    """squeue %B: a batch job's node once it started, an interactive job's submit host."""
    if job.get("interactive"):
        return text(job, "submit_host") or "n/a"
    return text(job, "node") if number(job, "start_time") else "n/a"


def cpus_per_task(job: Row) -> int:
    """CPUs per task: mgpu keeps the total and the task count."""
    return integer(job, "cpus") // max(1, integer(job, "ntasks"))


def stdout_path(job: Row) -> str:
    """A batch job's output file, Slurm's default pattern when the row has none."""
    path = text(job, "stdout_path")
    if path or job.get("interactive"):
        return path
    pattern = "slurm-%A_%a.out" if is_array_task(job) else "slurm-%j.out"
    return f"{text(job, 'cwd')}/{pattern}"


def priority(job: Row) -> int:
    """Slurm's priority is a uint32; mgpu's a float."""
    return min(max(int(number(job, "priority")), 0), 0xFFFFFFFF)
