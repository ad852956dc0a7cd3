"""A job's row in the SQLite store, and back: the columns of the ``jobs`` table in one order,
the spec as compact JSON. An array task that shares its array's spec (``Job.spec_shared``) has
an empty spec in its row: the spec is in ``array_specs`` once, and every task read back gets
the same object. A job step's row in ``steps`` likewise.
"""

from __future__ import annotations

import json
from typing import Any

from mgpu_core.models import JobSpec
from mgpu_core.states import Hold, JobState
from mgpu_server.records.jobs import Job
from mgpu_server.records.steps import Step

JOB_COLUMNS = (
    "job_id, user, state, reason, node_id, gpu_indices, submit_time, start_time, end_time, "
    "exit_code, signal, cancel_requested, pid, spec, restart_count, hold, priority_override, "
    "array_job_id, array_task_id, array_throttle, output_bytes, cancelled_by, partition, "
    "gpu_util_pct, gpu_samples, gpu_mem_peak_bytes, ports"
)
# Written with every row, never read back into a Job (they are its spec's): columns for
# history queries and reports, which must not decode every spec.
DERIVED_COLUMNS = "name, gpus, account"
ROW_COLUMNS = f"{JOB_COLUMNS}, {DERIVED_COLUMNS}"
ROW_PLACEHOLDERS = ", ".join("?" * len(ROW_COLUMNS.split(",")))
STEP_COLUMNS = "job_id, step_id, name, ntasks, state, start_time, end_time, exit_code, signal"
STEP_PLACEHOLDERS = ", ".join("?" * len(STEP_COLUMNS.split(",")))


def job_row(job: Job) -> tuple[Any, ...]:
    spec = "" if job.spec_shared else spec_text(job.spec)
    return (
        job.job_id,
        job.user,
        job.state.value,
        job.reason,
        job.node_id,
        json.dumps(list(job.gpu_indices)),
        job.submit_time,
        job.start_time,
        job.end_time,
        job.exit_code,
        job.signal,
        int(job.cancel_requested),
        job.pid,
        spec,
        job.restart_count,
        job.hold.value,
        job.priority_override,
        job.array_job_id,
        job.array_task_id,
        job.array_throttle,
        job.output_bytes,
        job.cancelled_by,
        job.partition,
        job.gpu_util_pct,
        job.gpu_samples,
        job.gpu_mem_peak_bytes,
        json.dumps(list(job.ports)),
        job.spec.display_name(),
        job.spec.gpus,
        job.spec.account,
    )


def spec_text(spec: JobSpec) -> str:
    return json.dumps(spec.to_wire(), separators=(",", ":"))


def job_from_row(row: tuple[Any, ...], arrays: dict[int, JobSpec]) -> Job:
    """A job from its row; a task whose row has no spec shares its array's (``arrays``, the
    same object for every task: in memory too, the spec is there once)."""
    shared = row[13] == ""
    return Job(
        job_id=row[0],
        user=row[1],
        state=JobState(row[2]),
        reason=row[3],
        node_id=row[4],
        gpu_indices=tuple(json.loads(row[5])),
        submit_time=row[6],
        start_time=row[7],
        end_time=row[8],
        exit_code=row[9],
        signal=row[10],
        cancel_requested=bool(row[11]),
        pid=row[12],
        # Checked when it was submitted. A shared spec's array must be there (KeyError: the
        # database does not decode).
        spec=arrays[row[17]] if shared else JobSpec.from_checked(json.loads(row[13])),
        spec_shared=shared,
        restart_count=row[14],
        hold=Hold(row[15]),
        priority_override=row[16],
        array_job_id=row[17],
        array_task_id=row[18],
        array_throttle=row[19],
        output_bytes=row[20],
        cancelled_by=row[21],
        partition=row[22],
        gpu_util_pct=row[23],
        gpu_samples=row[24],
        gpu_mem_peak_bytes=row[25],
        ports=tuple(json.loads(row[26])),
    )


def step_row(step: Step) -> tuple[Any, ...]:
    return (
        step.job_id,
        step.step_id,
        step.name,
        step.ntasks,
        step.state.value,
        step.start_time,
        step.end_time,
        step.exit_code,
        step.signal,
    )


def step_from_row(row: tuple[Any, ...]) -> Step:
    return Step(
        job_id=row[0],
        step_id=row[1],
        name=row[2],
        ntasks=row[3],
        state=JobState(row[4]),
        start_time=row[5],
        end_time=row[6],
        exit_code=row[7],
        signal=row[8],
    )
