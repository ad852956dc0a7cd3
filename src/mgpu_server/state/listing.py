"""Which jobs a ``queue`` request lists (squeue's and sacct's filters): a test per job, O(1)
each, so a listing is one walk over the jobs it may show."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from mgpu_core.models import printable
from mgpu_server.records.jobs import Job


@dataclass(frozen=True, slots=True)
class Selection:
    """Empty sets select everything. Finished jobs are listed when asked for (``finished``),
    when ``states`` names the states wanted, or for a time window (sacct's)."""

    users: frozenset[str] = frozenset()
    states: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()
    finished: bool = False
    window_start_s: float | None = None
    window_end_s: float | None = None

    @classmethod
    def of(
        cls,
        *,
        users: Collection[str] = (),
        states: Collection[str] = (),
        names: Collection[str] = (),
        finished: bool = False,
        window: tuple[float | None, float | None] = (None, None),
    ) -> Selection:
        return cls(frozenset(users), frozenset(states), frozenset(names), finished, *window)

    @property
    def windowed(self) -> bool:
        return self.window_start_s is not None or self.window_end_s is not None

    def admits(self, job: Job) -> bool:
        if self.states:
            if job.display_state() not in self.states:
                return False
        elif job.state.terminal and not (self.finished or self.windowed):
            return False
        if self.users and job.user not in self.users:
            return False
        if self.names and printable(job.spec.display_name()) not in self.names:
            return False
        return in_window(job, self.window_start_s, self.window_end_s)


def in_window(job: Job, start_s: float | None, end_s: float | None) -> bool:
    """sacct -S/-E: the job was in the system at some time of the window: submitted before
    its end, and not ended before its start (or not ended at all). ``None``: open."""
    if end_s is not None and job.submit_time > end_s:
        return False
    return start_s is None or not job.end_time or job.end_time >= start_s
