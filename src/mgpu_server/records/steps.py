"""A job step: one ``srun`` inside a running job, as the master records it for sacct.

A step is not a job: it has no place in the queue and no transition table of its own. It is
RUNNING from its start until its srun reports its end (COMPLETED, or FAILED for a nonzero
exit or a signal; CANCELLED while the job is being cancelled), or until its job's run ends
first: then it takes the state of that end (:func:`run_end_state`). Step ids count 0, 1, 2 ...
per job, across requeues (the steps of earlier runs are kept), so they never collide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mgpu_core.reasons import Reason
from mgpu_core.states import JobState


@dataclass(slots=True)
class Step:
    job_id: int
    step_id: int
    name: str
    ntasks: int
    start_time: float
    state: JobState = JobState.RUNNING
    end_time: float = 0.0
    exit_code: int | None = None
    signal: int | None = None

    def to_wire(self) -> dict[str, Any]:
        """The step as queue rows carry it (in the row's ``steps``)."""
        return {
            "step_id": self.step_id,
            "name": self.name,
            "ntasks": self.ntasks,
            "state": self.state.value,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "exit_code": self.exit_code,
            "signal": self.signal,
        }


def reported_state(*, exit_code: int | None, signal: int | None, cancelling: bool) -> JobState:
    """A step whose srun reported its end: a cancel of the job wins (the step was killed by
    it), then exit 0 without a signal is COMPLETED, anything else FAILED."""
    if cancelling:
        return JobState.CANCELLED
    if signal is None and exit_code == 0:
        return JobState.COMPLETED
    return JobState.FAILED


def run_end_state(job_state: JobState, reason: str) -> JobState:
    """The state a still-running step ends with when its job's run ends: the job's own end
    state (CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, FAILED), except that a step cannot
    have COMPLETED without saying so (the job ended around it: CANCELLED); a run that went
    back to the queue ended NODE_FAIL if its node failed, else it was stopped (CANCELLED)."""
    if job_state.terminal and job_state is not JobState.COMPLETED:
        return job_state
    if not job_state.terminal and reason == Reason.NODE_FAIL:
        return JobState.NODE_FAIL
    return JobState.CANCELLED
