"""The master's job record. State changes go through :meth:`Job.transition`, which checks the
one transition table in :mod:`mgpu_core.states`; only :mod:`mgpu_server.state.lifecycle`
calls it."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from mgpu_core.arrays import expand_array_patterns, format_job_ref, parse_array
from mgpu_core.constants import DEFAULT_BATCH_OUTPUT
from mgpu_core.deps import Dependency
from mgpu_core.models import JobSpec, printable
from mgpu_core.patterns import expand_path_template
from mgpu_core.states import COMPLETING, Hold, JobState, check_transition

# Queue rows carry a command preview, not the whole command line: a listing of 100,000 jobs
# must fit in one frame.
MAX_COMMAND_DISPLAY = 200


@dataclass(slots=True)
class Job:
    job_id: int
    user: str
    spec: JobSpec
    submit_time: float
    state: JobState = JobState.PENDING
    reason: str = ""
    node_id: str = ""
    gpu_indices: tuple[int, ...] = ()
    start_time: float = 0.0
    end_time: float = 0.0
    exit_code: int | None = None
    signal: int | None = None
    cancel_requested: bool = False
    requeue_requested: bool = False  # an admin's requeue: the exit sends it back to the queue
    pid: int = 0
    restart_count: int = 0  # times requeued; the job sees it as MGPU_RESTART_COUNT
    hold: Hold = Hold.NONE  # a held job stays pending
    priority_override: int | None = None  # set by an admin; replaces the computed priority
    priority: float = 0.0  # set when a pass or a listing reaches the job; not stored
    array_job_id: int | None = None  # a task of a job array: the array's id (its first task's)
    array_task_id: int | None = None
    array_throttle: int = 0  # the array's %N: at most this many of its tasks run at once
    # An interactive job's output in bytes, from its node's exit report (None: not known):
    # a client that re-attaches after the end and printed less says what it missed.
    output_bytes: int | None = None
    # Who asked for the cancel that ended (or is ending) the job; "" if nobody did (sacct's
    # "CANCELLED by ...": the master cancelled it, a dependency that can never be met).
    cancelled_by: str = ""
    # The partition it runs or ran in (the scheduler's choice among spec.partition's).
    partition: str = ""
    # Its GPUs as its node's heartbeats measured them while it ran: mean utilisation (%) over
    # ``gpu_samples`` samples (one per GPU per heartbeat) and the highest memory any one of its
    # GPUs used. None: nothing measured (no GPUs, fake GPUs, or a node without NVML).
    gpu_util_pct: float | None = None
    gpu_samples: int = 0
    gpu_mem_peak_bytes: int | None = None
    # The TCP ports of its node's range it was given (--ports): MGPU_PORTS.
    ports: tuple[int, ...] = ()
    # Since when its GPUs have been idle, once that has lasted the cluster's idle_after (0:
    # not idle). Set by state/idle.py; not stored.
    idle_since: float = 0.0
    # A pending job's reserved start, as of the last pass that reached it (0: none). Not stored.
    expected_start: float = 0.0
    # An array task whose spec is its array's, the one object every task shares (and the store
    # keeps once): what differs per task is made when it is launched (launch_spec).
    spec_shared: bool = False
    # spec.dependency parsed once (at submit, or at load); None without one. Not stored.
    dependency: Dependency | None = None
    # The launch's number on its node's link (heartbeats echo the highest they saw). Not stored.
    launch_seq: int = 0
    # Past its time limit while its node was unreachable: ends TIMEOUT once the node confirms
    # or is fenced. Not stored (the master's liveness check sets it again after a restart).
    timed_out: bool = False

    def transition(self, new: JobState, now: float, reason: str = "") -> None:
        check_transition(self.state, new)
        self.state = new
        self.reason = reason
        if new is JobState.RUNNING:
            self.start_time = now
        elif new.terminal:
            self.end_time = now

    def launch_spec(self) -> JobSpec:
        """The spec the node runs: for a task sharing its array's spec, a copy with the
        task's MGPU_ARRAY_* variables and %A/%a in its output paths expanded."""
        if not self.spec_shared or self.array_job_id is None or self.array_task_id is None:
            return self.spec
        spec, array_id, task = self.spec, self.array_job_id, self.array_task_id
        env = {
            **spec.env,
            "MGPU_ARRAY_JOB_ID": str(array_id),
            "MGPU_ARRAY_TASK_ID": str(task),
            "MGPU_ARRAY_TASK_COUNT": str(_task_count(spec.array)),
        }
        return replace(
            spec,
            env=env,
            stdout_path=self.output_path(spec.stdout_path),
            stderr_path=self.output_path(spec.stderr_path),
        )

    def output_path(self, template: str | None) -> str | None:
        """An output path as this job writes it, as far as the master expands it (%A, %a)."""
        if not self.spec_shared or not template:
            return template
        assert self.array_job_id is not None and self.array_task_id is not None
        return expand_array_patterns(template, self.array_job_id, self.array_task_id)

    def named_by(self, job_id: int, task: int | None) -> bool:
        """Whether the reference ``job_id`` (``job_id_task``) names this job, as the job
        table reads references: an array's id names every task of it."""
        if task is not None:
            return self.array_job_id == job_id and self.array_task_id == task
        return job_id in (self.job_id, self.array_job_id)

    def output_file(self, stream: str) -> str | None:
        """The file a batch job's ``stream`` ("stdout", "stderr") goes to, as its node names
        it when it starts the job (None for an interactive job: its output goes to srun)."""
        spec = self.spec
        if spec.interactive:
            return None
        out = spec.stdout_path or DEFAULT_BATCH_OUTPUT
        template = self.output_path(out if stream == "stdout" else (spec.stderr_path or out))
        assert template is not None
        array = None
        if self.array_job_id is not None and self.array_task_id is not None:
            array = (self.array_job_id, self.array_task_id)
        path = expand_path_template(
            template,
            job_id=self.job_id,
            name=spec.display_name(),
            user=self.user,
            node=self.node_id,
            array=array,
        )
        return os.path.join(spec.cwd, path)

    def add_gpu_sample(self, utilization_pct: int, memory_used_bytes: int) -> None:
        """One heartbeat's sample of one of its GPUs (negative: not measured)."""
        if utilization_pct >= 0:
            n = self.gpu_samples
            self.gpu_util_pct = ((self.gpu_util_pct or 0.0) * n + utilization_pct) / (n + 1)
            self.gpu_samples = n + 1
        if memory_used_bytes >= 0:
            self.gpu_mem_peak_bytes = max(self.gpu_mem_peak_bytes or 0, memory_used_bytes)

    def usage_gpu_s(self) -> float:
        """GPU-seconds of a finished run (what fair-share charges)."""
        if self.start_time and self.end_time:
            return self.spec.gpus * max(0.0, self.end_time - self.start_time)
        return 0.0

    @property
    def ending(self) -> bool:
        """Running, but cancelled, requeued or timed out: waiting for its node to confirm."""
        return self.state is JobState.RUNNING and (
            self.cancel_requested or self.requeue_requested or self.timed_out
        )

    def display_state(self) -> str:
        return COMPLETING if self.ending else self.state.value

    def elapsed_s(self, now: float) -> float:
        if self.state is JobState.RUNNING:
            return max(0.0, now - self.start_time)
        if self.start_time and self.end_time:
            return max(0.0, self.end_time - self.start_time)
        return 0.0

    def to_wire(self, now: float, fields: list[str] | None = None) -> dict[str, Any]:
        """A queue row: everything squeue-like listings show, or only ``fields`` (each
        computed only when asked for: the command preview alone is a third of a row's cost).
        """
        return row_builder(_ALL_FIELDS if fields is None else tuple(fields))(self, now)


# Every queue row field, as an expression of the job ``j`` and the time ``now``. A field list
# is compiled once into one function that builds the whole row (row_builder): a listing of
# 10,000 jobs runs it for each, and one dict display of inline expressions costs a third of a
# call per field.
ROW_FIELDS: dict[str, str] = {
    "job_id": "j.job_id",
    "job_ref": "format_job_ref(j.job_id, j.array_job_id, j.array_task_id)",
    "array_job_id": "j.array_job_id",
    "array_task_id": "j.array_task_id",
    "name": "printable(j.spec.display_name())",  # argv[0] may not be UTF-8
    "user": "j.user",
    "state": "COMPLETING if j.state is RUNNING and (j.cancel_requested or j.requeue_requested"
    " or j.timed_out) else j.state._value_",  # display_state(), inline
    "reason": "j.reason",
    "node": "j.node_id",
    "gpus": "j.spec.gpus",
    "gpu_indices": "list(j.gpu_indices)",
    "cpus": "j.spec.cpus",
    "mem_bytes": "j.spec.mem_bytes",
    "time_limit_s": "j.spec.time_limit_s",
    "submit_time": "j.submit_time",
    "start_time": "j.start_time",
    "end_time": "j.end_time",
    "elapsed_s": "max(0.0, now - j.start_time) if j.state is RUNNING else j.elapsed_s(now)",
    "exit_code": "j.exit_code",
    "signal": "j.signal",
    "restart_count": "j.restart_count",
    "priority": "round(j.priority, 3)",
    "qos": "j.spec.qos",
    "nice": "j.spec.nice",
    "dependency": "j.spec.dependency",
    "hold": "j.hold",
    "interactive": "j.spec.interactive",
    "command": "j.spec.command_display()[:MAX_COMMAND_DISPLAY]",
    "cwd": "j.spec.cwd",
    "stdout_path": "j.output_path(j.spec.stdout_path)",
    "output_bytes": "j.output_bytes",
    "eligible_time": "max(j.submit_time, j.spec.begin_time)",
    "cancelled_by": "j.cancelled_by",
    # squeue's PARTITION: where it runs or ran; else the partitions it asked for ("a,b").
    "partition": "j.partition if j.partition and j.state is not PENDING else j.spec.partition",
    "account": "j.spec.account",
    "ntasks": "j.spec.ntasks",
    "gpu_type": "j.spec.gpu_type",
    "exclusive": "j.spec.exclusive",
    "submit_host": "j.spec.submit_host",
    "stderr_path": "j.output_path(j.spec.stderr_path)",
    "gpu_util_pct": "None if j.gpu_util_pct is None else round(j.gpu_util_pct, 1)",
    "gpu_mem_peak_bytes": "j.gpu_mem_peak_bytes",
    # squeue --start: a pending job's reserved start (0: none known).
    "expected_start": "j.expected_start if j.state is PENDING else 0.0",
    "ports": "list(j.ports)",
    "session": "j.spec.session",
    "idle_s": "round(now - j.idle_since) if j.idle_since and j.state is RUNNING else 0",
}
_ALL_FIELDS = tuple(ROW_FIELDS)
_NAMES = {
    "format_job_ref": format_job_ref,
    "printable": printable,
    "MAX_COMMAND_DISPLAY": MAX_COMMAND_DISPLAY,
    "PENDING": JobState.PENDING,
    "RUNNING": JobState.RUNNING,
    "COMPLETING": COMPLETING,
}


@lru_cache(maxsize=128)
def row_builder(fields: tuple[str, ...]) -> Callable[[Job, float], dict[str, Any]]:
    """One function that builds a row of ``fields`` (names of ROW_FIELDS, checked by the
    caller) from a job and the time. Compiled from our own expressions, never from input."""
    body = ", ".join(f"{name!r}: ({ROW_FIELDS[name]})" for name in fields)
    built: Callable[[Job, float], dict[str, Any]] = eval(f"lambda j, now: {{{body}}}", dict(_NAMES))
    return built


@lru_cache(maxsize=256)
def _task_count(array: str) -> int:
    """The number of tasks of an array (its text was checked at submit)."""
    return len(parse_array(array).task_ids)


def state_event(job: Job) -> dict[str, Any]:
    return {
        "t": "job_state",
        "job_id": job.job_id,
        "state": job.state.value,
        "reason": job.reason,
        "node": job.node_id,
        "gpu_indices": list(job.gpu_indices),
        "expected_start": job.expected_start if job.state is JobState.PENDING else 0.0,
    }


def ended_event(job: Job) -> dict[str, Any]:
    return {
        "t": "job_ended",
        "job_id": job.job_id,
        "state": job.state.value,
        "exit_code": job.exit_code,
        "signal": job.signal,
        "reason": job.reason,
        "output_bytes": job.output_bytes,
    }
