"""The running jobs, with what a scheduling pass needs of them kept up to date as jobs start
and end, instead of recomputed from every running job at every pass: per user the GPUs and
jobs they hold (QoS limits) and the GPU-seconds used so far (fair-share); per node what each
job frees and when (backfill) and whether an --exclusive job holds it; per throttled array its
running tasks (``%N``).
"""

from __future__ import annotations

from collections.abc import Iterator, ValuesView

from mgpu_server.records.jobs import Job
from mgpu_server.scheduling.planner import INF, Release, UserLoad
from mgpu_server.scheduling.policy import PolicyConfig


class _UserTotals:
    __slots__ = ("gpu_start_s", "gpus", "jobs")

    def __init__(self) -> None:
        self.gpus = 0
        self.jobs = 0
        self.gpu_start_s = 0.0  # sum of gpus * start time: usage at t is gpus * t - this


class RunningJobs:
    """The running jobs by id (insertion order, like a dict), plus their totals."""

    def __init__(self, policy: PolicyConfig) -> None:
        self.policy = policy
        self._jobs: dict[int, Job] = {}
        self._users: dict[str, _UserTotals] = {}
        self._releases: dict[str, dict[int, Release]] = {}
        self._arrays: dict[int, int] = {}
        self._exclusive: dict[str, float] = {}  # node -> when its --exclusive job ends

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def __iter__(self) -> Iterator[int]:
        return iter(self._jobs)

    def get(self, job_id: int) -> Job | None:
        return self._jobs.get(job_id)

    def values(self) -> ValuesView[Job]:
        return self._jobs.values()

    def add(self, job: Job) -> None:
        """A job started (or is running at a restart): its node, start time and spec are set
        and stay so while it runs."""
        if job.job_id in self._jobs:
            self.remove(job.job_id)
        self._jobs[job.job_id] = job
        spec = job.spec
        totals = self._users.get(job.user)
        if totals is None:
            totals = self._users[job.user] = _UserTotals()
        totals.gpus += spec.gpus
        totals.jobs += 1
        totals.gpu_start_s += spec.gpus * job.start_time
        # Planned with the QoS grace: the job may run that long past its limit (a session,
        # its session grace too).
        grace_s = self.policy.qos_of(spec.qos).grace_s + self.policy.session_grace_of(spec)
        end = job.start_time + (spec.time_limit_s + grace_s) if spec.time_limit_s else INF
        release = Release(end, spec.gpus, spec.cpus, spec.mem_bytes)
        self._releases.setdefault(job.node_id, {})[job.job_id] = release
        if spec.exclusive:
            self._exclusive[job.node_id] = end
        if job.array_throttle and job.array_job_id is not None:
            self._arrays[job.array_job_id] = self._arrays.get(job.array_job_id, 0) + 1

    def remove(self, job_id: int) -> Job | None:
        """A job stopped running; None if it was not running."""
        job = self._jobs.pop(job_id, None)
        if job is None:
            return None
        spec = job.spec
        totals = self._users[job.user]
        totals.gpus -= spec.gpus
        totals.jobs -= 1
        totals.gpu_start_s -= spec.gpus * job.start_time
        if not totals.jobs:
            del self._users[job.user]  # and with it any rounding left in the sum
        on_node = self._releases[job.node_id]
        del on_node[job_id]
        if not on_node:
            del self._releases[job.node_id]
        if spec.exclusive:
            self._exclusive.pop(job.node_id, None)
        if job.array_throttle and job.array_job_id is not None:
            self._arrays[job.array_job_id] -= 1
            if not self._arrays[job.array_job_id]:
                del self._arrays[job.array_job_id]
        return job

    def users(self) -> set[str]:
        return set(self._users)

    def loads(self) -> dict[str, UserLoad]:
        """GPUs and jobs each user runs (for the QoS per-user limits)."""
        return {user: UserLoad(t.gpus, t.jobs) for user, t in self._users.items()}

    def live_usage(self, now: float) -> dict[str, float]:
        """GPU-seconds each user's running jobs have used by ``now``."""
        return {user: max(0.0, t.gpus * now - t.gpu_start_s) for user, t in self._users.items()}

    def on_node(self, node_id: str) -> list[Job]:
        """The jobs running on a node (a copy: the caller may end them while it walks)."""
        on_node = self._releases.get(node_id)
        return [self._jobs[job_id] for job_id in on_node] if on_node else []

    def releases(self, node_id: str) -> list[Release]:
        """What the jobs running on a node free, and when (INF: no time limit)."""
        on_node = self._releases.get(node_id)
        return list(on_node.values()) if on_node else []

    def exclusive_end(self, node_id: str) -> float | None:
        """When the --exclusive job running on a node ends (INF: no limit); None if none."""
        return self._exclusive.get(node_id)

    def array_tasks(self) -> dict[int, int]:
        """Running tasks of each throttled (``%N``) array."""
        return dict(self._arrays)
