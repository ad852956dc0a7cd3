"""The job table: every job the master knows, by id, with its arrays and the references users
write (``ID``, an array's id for all its tasks, ``ARRAYID_TASK``). It owns the next job id.

Only the lifecycle adds or removes jobs here; everyone reads.
"""

from __future__ import annotations

from mgpu_core.arrays import parse_job_ref
from mgpu_core.errors import JobNotFound
from mgpu_core.models import JobResult
from mgpu_server.records.jobs import Job
from mgpu_server.storage.history import History, Query


class JobTable:
    def __init__(self, next_id: int, history: History | None = None) -> None:
        """``history``: the finished jobs the master let go from memory (:meth:`find`)."""
        self.history = history
        self.jobs: dict[int, Job] = {}
        self.arrays: dict[int, list[int]] = {}  # array id -> its tasks' job ids
        self.next_id = next_id

    def __len__(self) -> int:
        return len(self.jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.jobs

    def add(self, job: Job) -> None:
        self.jobs[job.job_id] = job
        if job.array_job_id is not None:
            self.arrays.setdefault(job.array_job_id, []).append(job.job_id)
        self.next_id = max(self.next_id, job.job_id + 1)

    def remove(self, job: Job) -> None:
        del self.jobs[job.job_id]
        if job.array_job_id is not None:
            tasks = self.arrays.get(job.array_job_id, [])
            if job.job_id in tasks:
                tasks.remove(job.job_id)
            if not tasks:
                self.arrays.pop(job.array_job_id, None)

    def take_id(self) -> int:
        job_id = self.next_id
        self.next_id += 1
        return job_id

    def get(self, job_id: int) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobNotFound(f"invalid job id specified: {job_id}")
        return job

    def resolve(self, ref: int | str) -> list[int]:
        """A job reference -> job ids: ``ID`` (a job, or every task of array ID) or
        ``ARRAYID_TASK``. JobNotFound for anything else."""
        try:
            job_id, task = parse_job_ref(str(ref))
        except ValueError as exc:
            raise JobNotFound(str(exc)) from None
        if task is not None:
            for member in self.arrays.get(job_id, ()):
                if self.jobs[member].array_task_id == task:
                    return [member]
        elif job_id in self.arrays:
            return list(self.arrays[job_id])
        elif job_id in self.jobs:
            return [job_id]
        raise JobNotFound(f"invalid job id specified: {ref}")

    def resolve_all(
        self, refs: list[int | str], *, live: bool = False
    ) -> tuple[list[int], list[JobResult]]:
        """(job ids, error results for the references that name nothing). With ``live``, a
        whole array stands for its unfinished tasks (cancelling an array whose first tasks
        are done is not an error), as long as it has any."""
        ids: list[int] = []
        seen: set[int] = set()
        errors: list[JobResult] = []
        for ref in refs:
            try:
                found = self.resolve(ref)
            except JobNotFound as err:
                errors.append(JobResult.from_error(ref, err))
                continue
            if live and len(found) > 1:
                found = [i for i in found if not self.jobs[i].state.terminal] or found
            for job_id in found:
                if job_id not in seen:
                    seen.add(job_id)
                    ids.append(job_id)
        return ids, errors

    def find(self, refs: list[int | str]) -> list[Job]:
        """Jobs by reference, for reading (show, log, a dependency's references): those in
        memory, and those let go that the history still has (an array's id names its tasks in
        both; the live record wins). JobNotFound for the first reference that names nothing
        anywhere."""
        found: dict[int, Job] = {}
        for ref in refs:
            try:
                job_id, task = parse_job_ref(str(ref))
            except ValueError as exc:
                raise JobNotFound(str(exc)) from None
            in_memory = [self.jobs[i] for i in self.resolve_all([ref])[0]]
            whole = in_memory and (task is not None or job_id not in self.arrays)
            stored: list[Job] = []
            if not whole and self.history is not None:  # an array may be partly let go
                stored = [
                    j for j in self.history.find(Query(ids=(job_id,))) if j.named_by(job_id, task)
                ]
            if not stored and not in_memory:
                raise JobNotFound(f"invalid job id specified: {ref}")
            found.update((j.job_id, j) for j in stored)
            found.update((j.job_id, j) for j in in_memory)
        return [found[i] for i in sorted(found)]
