"""Launches held back until an earlier run of the same job has ended here.

The master may relaunch a job after taking its run for dead (fenced) while that run is still
ending on this node. The new run waits until the old one has exited and its exit is sent, then
starts: never dropped, never beside the old one. Held launches live only in memory: the master
finds a job gone from the next agent's reports when an agent stops with one held.
"""

from __future__ import annotations

import logging

from mgpu_core.models import Launch
from mgpu_node.running import RunningJob

log = logging.getLogger(__name__)

HELD_CANCELLED = "cancelled before it started (its previous run was still ending)"


class HeldLaunches:
    def __init__(self) -> None:
        self._launches: dict[int, Launch] = {}
        self._cancelled: set[int] = set()

    def hold(self, job: RunningJob, launch: Launch) -> None:
        """A launch for a job that runs here (``job``). The same run again is a duplicate:
        ignored. Another run waits until :meth:`release` (the last one received wins)."""
        job_id, run = launch.job_id, launch.restart_count
        held = self._launches.get(job_id)
        if run == job.record.restart_count or (held is not None and run == held.restart_count):
            if not job.duplicate_logged:
                job.duplicate_logged = True
                log.warning("job=%d run %d already here; duplicate launch ignored", job_id, run)
            return
        if held is not None:
            log.warning("job=%d run %d replaces held run %d", job_id, run, held.restart_count)
        self._launches[job_id] = launch
        self._cancelled.discard(job_id)
        log.info(
            "job=%d run %d held until run %d has exited", job_id, run, job.record.restart_count
        )

    def cancel(self, job_id: int) -> None:
        """The master cancelled the job: its held run (the master's current one) never starts."""
        if job_id in self._launches:
            self._cancelled.add(job_id)

    def release(self, job_id: int, *, stopping: bool) -> tuple[Launch, bool] | None:
        """The run a held launch waited for has exited and its exit is out: the held launch,
        if any, and whether to start it (not if it was cancelled meanwhile, or the agent is
        stopping: then it is reported as never run)."""
        launch = self._launches.pop(job_id, None)
        if launch is None:
            return None
        start = job_id not in self._cancelled and not stopping
        self._cancelled.discard(job_id)
        if start:
            log.info("job=%d run %d released", job_id, launch.restart_count)
        else:
            log.info("job=%d run %d cancelled before it started", job_id, launch.restart_count)
        return launch, start

    def log_dropped(self) -> None:
        """The agent stops and leaves its jobs running: say which held launches it drops."""
        for job_id, launch in self._launches.items():
            log.warning(
                "job=%d run %d held launch dropped: the agent stops", job_id, launch.restart_count
            )
