"""Persistence behind a small interface.

The master's event loop calls :meth:`Store.put_job` for every change it makes during one
turn, then :meth:`Store.commit` once before any reply or command leaves the process: an
acknowledged change is stored (group commit). :class:`MemoryStore` keeps everything in
process memory; the durable SQLite store (issue #3) implements the same contract.
"""

from __future__ import annotations

from typing import Protocol

from mgpu_server.jobs import Job


class Store(Protocol):
    def load_jobs(self) -> list[Job]:
        """Every job known at start-up, in id order."""
        ...

    def next_job_id(self) -> int:
        """The first id not yet used by any stored job."""
        ...

    def put_job(self, job: Job) -> None:
        """Record the job's current state; visible to :meth:`load_jobs` after :meth:`commit`."""
        ...

    def commit(self) -> None:
        """Make every ``put_job`` since the last commit durable, all or nothing."""
        ...

    def close(self) -> None: ...


class MemoryStore:
    """A Store that forgets on exit: for tests and for the first milestone of the master."""

    def __init__(self) -> None:
        self._jobs: dict[int, Job] = {}
        self._dirty: dict[int, Job] = {}
        self.commits = 0

    def load_jobs(self) -> list[Job]:
        return [self._jobs[k] for k in sorted(self._jobs)]

    def next_job_id(self) -> int:
        return max(self._jobs, default=0) + 1

    def put_job(self, job: Job) -> None:
        self._dirty[job.job_id] = job

    def commit(self) -> None:
        if self._dirty:
            self._jobs.update(self._dirty)
            self._dirty.clear()
            self.commits += 1

    def close(self) -> None:
        self._dirty.clear()
