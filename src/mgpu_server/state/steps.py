"""The job steps the master knows: every step of every job (kept with the job, as sacct shows
them), and which are still running.

srun inside a running job registers each step (``step start``) and reports its end (``step
end``); when the job's run ends first, :meth:`StepTable.run_ended` (called by the lifecycle,
which owns every index around a job) ends the steps still running with the run's end. Each
change is put into the store with the turn's commit. Costs: a start or an end is O(1); a run's
end is O(its running steps); a queue row's steps O(the job's steps).
"""

from __future__ import annotations

import logging
from typing import Any

from mgpu_core.errors import InvalidJobState, InvalidRequest, LimitExceeded
from mgpu_core.states import JobState
from mgpu_server.records.jobs import Job
from mgpu_server.records.steps import Step, reported_state, run_end_state
from mgpu_server.storage.store import Store

log = logging.getLogger(__name__)

# Steps one job may register over its whole life (requeued runs together): srun in a loop
# must not grow the master's memory and database without bound.
MAX_STEPS_PER_JOB = 10_000


class StepTable:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.by_job: dict[int, list[Step]] = {}  # job id -> its steps, step id = index
        self.running: dict[int, dict[int, Step]] = {}  # job id -> its running steps by id

    def load(self, steps: list[Step]) -> None:
        """The stored steps at start-up, in (job id, step id) order."""
        for step in steps:
            self._add(step)

    def forget(self, job_id: int) -> None:
        """A finished job let go from memory: its steps are history too."""
        self.by_job.pop(job_id, None)
        self.running.pop(job_id, None)

    def start(self, job: Job, *, name: str, ntasks: int, now: float) -> Step:
        """A new step of a running job: the next id of the job's (0, 1, 2 ...)."""
        if job.state is not JobState.RUNNING:
            raise InvalidJobState(
                f"cannot start a step of job {job.job_id}: it is {job.state.value}"
            )
        if job.ending:
            raise InvalidJobState(f"cannot start a step of job {job.job_id}: it is ending")
        steps = self.by_job.get(job.job_id, [])
        if len(steps) >= MAX_STEPS_PER_JOB:
            raise LimitExceeded(
                f"job {job.job_id} has started {MAX_STEPS_PER_JOB} steps, the most a job may "
                "start: no more steps can start in it"
            )
        step = Step(job.job_id, len(steps), name, ntasks, start_time=now)
        self._add(step)
        self.store.put_step(step)
        log.info("job=%d step=%d state=RUNNING name=%s", job.job_id, step.step_id, name)
        return step

    def end(
        self, job: Job, step_id: int, *, exit_code: int | None, signal: int | None, now: float
    ) -> None:
        """A step's srun reports its end. A step already ended (with its job's run, before
        the report came) keeps the state it has."""
        steps = self.by_job.get(job.job_id, [])
        if not 0 <= step_id < len(steps):
            raise InvalidRequest(f"job {job.job_id} has no step {step_id}")
        step = steps[step_id]
        if step.state is not JobState.RUNNING:
            return
        state = reported_state(exit_code=exit_code, signal=signal, cancelling=job.cancel_requested)
        step.exit_code, step.signal = exit_code, signal
        self._finish(step, state, now)

    def run_ended(self, job: Job, now: float) -> None:
        """The job's run ended (``job.state`` is its end, or PENDING again for a requeue, with
        its reason): its running steps end with it."""
        running = self.running.get(job.job_id)
        if not running:
            return
        state = run_end_state(job.state, job.reason)
        for step in list(running.values()):
            self._finish(step, state, now)

    def rows(self, job_id: int) -> list[dict[str, Any]]:
        return [step.to_wire() for step in self.by_job.get(job_id, ())]

    def _add(self, step: Step) -> None:
        self.by_job.setdefault(step.job_id, []).append(step)
        if step.state is JobState.RUNNING:
            self.running.setdefault(step.job_id, {})[step.step_id] = step

    def _finish(self, step: Step, state: JobState, now: float) -> None:
        step.state, step.end_time = state, now
        running = self.running[step.job_id]
        del running[step.step_id]
        if not running:
            del self.running[step.job_id]
        self.store.put_step(step)
        log.info(
            "job=%d step=%d state=%s exit=%s signal=%s",
            step.job_id,
            step.step_id,
            state.value,
            step.exit_code,
            step.signal,
        )
