"""Persistence behind a small interface.

The master's event loop calls :meth:`Store.put_job` for every change it makes during one
turn, then :meth:`Store.commit` once before any reply or command leaves the process: an
acknowledged change is stored (group commit). :class:`MemoryStore` keeps everything in
process memory (tests); :class:`mgpu_server.storage.sqlite_store.SqliteStore` is the durable one.
Node registrations are stored too, so that after a restart the master knows which nodes ran
which jobs before those nodes reconnect.
"""

from __future__ import annotations

from typing import Any, Protocol

from mgpu_server.records.jobs import Job
from mgpu_server.records.steps import Step
from mgpu_server.storage.history import History, MemoryHistory


class Store(Protocol):
    @property
    def history(self) -> History:
        """Finished jobs the master no longer holds in memory, until purged (history.py)."""
        ...

    def load_jobs(self) -> list[Job]:
        """The jobs for the master's memory at start-up, in id order: every unfinished one
        and those finished recently (older ones are in :attr:`history`)."""
        ...

    def purge_finished(self, before_s: float) -> int:
        """Delete a batch of jobs that ended before ``before_s``; how many (0: none left).
        Job ids stay unique: :meth:`next_job_id` never goes back."""
        ...

    def next_job_id(self) -> int:
        """The first id not yet used by any stored job."""
        ...

    def put_job(self, job: Job) -> None:
        """Record the job's current state; visible to :meth:`load_jobs` after :meth:`commit`."""
        ...

    def discard_job(self, job_id: int) -> None:
        """Drop a not-yet-committed job (its submission is being refused)."""
        ...

    def load_steps(self) -> list[Step]:
        """Every stored job step, in (job id, step id) order."""
        ...

    def put_step(self, step: Step) -> None:
        """Record a step's current state; written with the next :meth:`commit`."""
        ...

    def load_nodes(self) -> list[dict[str, Any]]:
        """Every stored node registration (the node part of its hello), in node id order."""
        ...

    def put_node(self, info: dict[str, Any]) -> None:
        """Record a node's registration; written with the next :meth:`commit`."""
        ...

    def delete_node(self, node_id: str) -> None:
        """Forget a node's registration; written with the next :meth:`commit`."""
        ...

    def get_setting(self, key: str) -> Any:
        """A stored setting (JSON-compatible value), or None."""
        ...

    def put_setting(self, key: str, value: Any) -> None:
        """Store a setting; written with the next :meth:`commit`."""
        ...

    def commit(self) -> None:
        """Make every ``put_*`` since the last commit durable, all or nothing.

        Raises :class:`~mgpu_core.errors.StorageError` if that is impossible (disk full): the
        writes stay pending (retried at the next commit) and the caller must not acknowledge
        what they contain.
        """
        ...

    def close(self) -> None: ...


class MemoryStore:
    """A Store that forgets on exit: for tests and for the first milestone of the master."""

    def __init__(self) -> None:
        self._jobs: dict[int, Job] = {}
        self._dirty: dict[int, Job] = {}
        self._nodes: dict[str, dict[str, Any]] = {}
        self._dirty_nodes: dict[str, dict[str, Any] | None] = {}
        self.commits = 0
        self._settings: dict[str, Any] = {}
        self._dirty_settings: dict[str, Any] = {}
        self._steps: dict[tuple[int, int], Step] = {}
        self._dirty_steps: dict[tuple[int, int], Step] = {}
        self.history = MemoryHistory(self._jobs, self._steps)
        self._id_floor = 1

    def load_jobs(self) -> list[Job]:
        return [self._jobs[k] for k in sorted(self._jobs)]

    def next_job_id(self) -> int:
        return max(max(self._jobs, default=0) + 1, self._id_floor)

    def purge_finished(self, before_s: float) -> int:
        floor = self.next_job_id()
        purged = self.history.purge(before_s)
        if purged:
            self._id_floor = floor
        return purged

    def put_job(self, job: Job) -> None:
        self._dirty[job.job_id] = job

    def discard_job(self, job_id: int) -> None:
        self._dirty.pop(job_id, None)

    def load_steps(self) -> list[Step]:
        return [self._steps[k] for k in sorted(self._steps)]

    def put_step(self, step: Step) -> None:
        self._dirty_steps[step.job_id, step.step_id] = step

    def load_nodes(self) -> list[dict[str, Any]]:
        return [self._nodes[k] for k in sorted(self._nodes)]

    def put_node(self, info: dict[str, Any]) -> None:
        self._dirty_nodes[info["node_id"]] = info

    def delete_node(self, node_id: str) -> None:
        self._dirty_nodes[node_id] = None

    def get_setting(self, key: str) -> Any:
        return self._settings.get(key)

    def put_setting(self, key: str, value: Any) -> None:
        self._dirty_settings[key] = value

    def commit(self) -> None:
        self._settings.update(self._dirty_settings)
        self._dirty_settings.clear()
        self._steps.update(self._dirty_steps)
        self._dirty_steps.clear()
        if self._dirty or self._dirty_nodes:
            self._jobs.update(self._dirty)
            for node_id, info in self._dirty_nodes.items():
                if info is None:
                    self._nodes.pop(node_id, None)
                else:
                    self._nodes[node_id] = info
            self._dirty.clear()
            self._dirty_nodes.clear()
            self.commits += 1

    def close(self) -> None:
        self._dirty.clear()
        self._dirty_nodes.clear()
        self._dirty_steps.clear()
