"""Which pending jobs wait on what: the reverse of the dependency graph, kept as jobs come and
go, so a job's dependencies are evaluated when something they name changes instead of by
every scheduling pass.

A dependency is parsed once, at submit (or at load), and kept on the job. ``waiters``
maps a job id to the pending jobs whose dependency names it; ``singletons`` maps a (user,
name) to the pending jobs that use ``singleton`` there, and ``live`` to that user's pending
and running jobs of that name (what a singleton waits for). When a job changes state the
lifecycle asks :meth:`affected` which dependents to evaluate again: O(dependents of the
job), whatever the length of the queue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from mgpu_core.deps import DepStatus, evaluate
from mgpu_core.states import JobState
from mgpu_server.records.jobs import Job

NameKey = tuple[str, str]  # (user, job name)


def name_key(job: Job) -> NameKey:
    return job.user, job.spec.display_name()


class DependencyIndex:
    def __init__(self, stored_state: Callable[[int], str | None] = lambda job_id: None) -> None:
        """``stored_state``: a job's state from the history, for one no longer in memory."""
        self.stored_state = stored_state
        self.waiters: dict[int, set[int]] = {}
        self.singletons: dict[NameKey, set[int]] = {}
        self.live: dict[NameKey, set[int]] = {}

    def add(self, job: Job) -> None:
        """A pending job joins (or a running one, at load)."""
        self.live.setdefault(name_key(job), set()).add(job.job_id)
        dep = job.dependency
        if dep is None or job.state is not JobState.PENDING:
            return
        for target in dep.job_ids():
            self.waiters.setdefault(target, set()).add(job.job_id)
        if dep.singleton:
            self.singletons.setdefault(name_key(job), set()).add(job.job_id)

    def started(self, job: Job) -> None:
        """A pending job started: it no longer waits, but still blocks its singletons."""
        self._drop_dependency(job)

    def left(self, job: Job) -> None:
        """A job ended or was forgotten: it waits for nothing and blocks nobody."""
        self._drop_dependency(job)
        _discard(self.live, name_key(job), job.job_id)

    def requeued(self, job: Job) -> None:
        """A running job is pending again: it waits on its dependency once more."""
        self.left(job)
        self.add(job)

    def affected(self, job: Job) -> list[int]:
        """The pending jobs whose dependency may have changed with ``job``'s state."""
        found = set(self.waiters.get(job.job_id, ()))
        found |= self.singletons.get(name_key(job), set())
        found.discard(job.job_id)
        return sorted(found)

    def status(self, job: Job, state_of: dict[int, Job]) -> DepStatus:
        """Where a pending job's dependency stands now (OK if it has none)."""
        dep = job.dependency
        if dep is None:
            return DepStatus.OK

        def lookup(job_id: int) -> str | None:
            other = state_of.get(job_id)
            return self.stored_state(job_id) if other is None else other.state.value

        clear = not dep.singleton or self._singleton_clear(job, state_of)
        return evaluate(dep, lookup, singleton_clear=clear)

    def _singleton_clear(self, job: Job, jobs: dict[int, Job]) -> bool:
        """No other job of this user and name runs, or waits ahead of it (a lower id)."""
        for other_id in self.live.get(name_key(job), ()):
            if other_id == job.job_id:
                continue
            if other_id < job.job_id or jobs[other_id].state is JobState.RUNNING:
                return False
        return True

    def _drop_dependency(self, job: Job) -> None:
        dep = job.dependency
        if dep is None:
            return
        for target in dep.job_ids():
            _discard(self.waiters, target, job.job_id)
        if dep.singleton:
            _discard(self.singletons, name_key(job), job.job_id)


K = TypeVar("K")


def _discard(index: dict[K, set[int]], key: K, job_id: int) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(job_id)
        if not members:
            del index[key]
