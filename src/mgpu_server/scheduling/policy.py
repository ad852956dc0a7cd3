"""Scheduling policy: job priority (Slurm's multifactor plugin, simplified) and fair-share usage.

priority = w_age * age + w_fairshare * fairshare + w_qos * qos - nice, each factor in 0..1:

- age: time pending over ``max_age_s`` (capped at 1), so old jobs rise;
- fairshare: 2 ** (-usage_share / user_share), Slurm's classic formula, where usage_share is the
  user's part of all recent GPU-seconds (decayed with ``half_life_s``) and user_share is an equal
  split among users with usage or pending work; a user who used nothing lately gets 1;
- qos: the job's QoS priority over the highest QoS priority.

An admin-set priority replaces the computed value (as ``scontrol update priority=`` does).
Everything here is pure: the caller passes ``now`` and the jobs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mgpu_core.states import JobState
from mgpu_server.records.jobs import Job

DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Qos:
    name: str
    priority: int = 0
    max_gpus_per_user: int = 0  # 0 = no limit
    max_jobs_per_user: int = 0  # running jobs; 0 = no limit
    max_wall_s: int = 0  # 0 = no limit
    grace_s: int = 0  # extra time past the limit before the job is killed


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    weight_age: float = 1000.0
    weight_fairshare: float = 10000.0
    weight_qos: float = 1000.0
    max_age_s: float = 7 * DAY_S
    half_life_s: float = 7 * DAY_S
    default_qos: str = "normal"
    qos: dict[str, Qos] = field(default_factory=lambda: {"normal": Qos("normal")})
    # Eligible jobs one scheduling pass examines at most (Slurm's default_queue_depth): the
    # ones further down keep their last reason until a pass reaches them.
    queue_depth: int = 1000

    def qos_of(self, name: str) -> Qos:
        return self.qos.get(name or self.default_qos) or self.qos[self.default_qos]

    def top_qos_priority(self) -> int:
        return max((q.priority for q in self.qos.values()), default=0)

    def qos_factor(self, name: str, top: int) -> float:
        """The QoS factor (0..1) of a job in QoS ``name``; ``top``: :meth:`top_qos_priority`."""
        return self.qos_of(name).priority / top if top > 0 else 0.0


@dataclass(slots=True)
class Breakdown:
    """sprio's columns for one job."""

    job_id: int
    priority: float
    age: float
    fairshare: float
    qos: float
    nice: int
    admin: int | None


class Usage:
    """Decayed GPU-seconds per user. Finished jobs are added once; running jobs count live."""

    def __init__(self, half_life_s: float) -> None:
        self.half_life_s = half_life_s
        self._value: dict[str, float] = {}
        self._at: dict[str, float] = {}

    def _decayed(self, user: str, now: float) -> float:
        value = self._value.get(user, 0.0)
        if not value:
            return 0.0
        return value * math.pow(2.0, -(now - self._at[user]) / self.half_life_s)

    def add(self, user: str, gpu_seconds: float, at: float, now: float) -> None:
        """Record usage that happened at ``at`` (a job's end), seen at ``now``."""
        aged = gpu_seconds * math.pow(2.0, -max(0.0, now - at) / self.half_life_s)
        self._value[user] = self._decayed(user, now) + aged
        self._at[user] = now

    def of(self, user: str, now: float, running: Iterable[Job] = ()) -> float:
        live = sum(j.spec.gpus * max(0.0, now - j.start_time) for j in running if j.user == user)
        return self._decayed(user, now) + live

    def users(self) -> set[str]:
        return set(self._value)


def job_usage_gpu_s(job: Job) -> float:
    if job.start_time and job.end_time:
        return job.spec.gpus * max(0.0, job.end_time - job.start_time)
    return 0.0


class Priorities:
    """The priority factors as of ``now``: fair-share computed once, in one walk over the jobs
    (O(running jobs + users), whatever the length of the queue)."""

    def __init__(
        self,
        config: PolicyConfig,
        usage: Usage,
        jobs: Iterable[Job],
        now: float,
        *,
        live: Mapping[str, float] | None = None,
        users: Iterable[str] = (),
    ) -> None:
        """``jobs``: the running (and pending) jobs, whose users share the GPUs equally. Or,
        kept up to date by the caller: ``live``, the GPU-seconds of each user's running jobs
        so far, and ``users``, everyone with running or pending jobs."""
        self.config = config
        self.now = now
        everyone = usage.users()
        everyone.update(users)
        used = dict(live or {})
        for job in jobs:
            if job.state.terminal:
                continue
            everyone.add(job.user)
            if job.state is JobState.RUNNING:
                gpu_s = job.spec.gpus * max(0.0, now - job.start_time)
                used[job.user] = used.get(job.user, 0.0) + gpu_s
        self._usage = {u: usage.of(u, now) + used.get(u, 0.0) for u in everyone}
        self._total = sum(self._usage.values())
        self._top_qos = config.top_qos_priority()

    def fairshare(self, user: str) -> float:
        if self._total <= 0:
            return 1.0
        share = 1.0 / max(1, len(self._usage) + (user not in self._usage))  # equal split
        return math.pow(2.0, -(self._usage.get(user, 0.0) / self._total) / share)

    def breakdown(self, job: Job) -> Breakdown:
        cfg = self.config
        age = _age(self.now - job.submit_time, cfg.max_age_s)
        fair = self.fairshare(job.user)
        qos = cfg.qos_factor(job.spec.qos, self._top_qos)
        value = cfg.weight_age * age + cfg.weight_fairshare * fair + cfg.weight_qos * qos
        value -= job.spec.nice
        if job.priority_override is not None:
            value = float(job.priority_override)
        return Breakdown(job.job_id, value, age, fair, qos, job.spec.nice, job.priority_override)

    def of(self, job: Job) -> float:
        return self.breakdown(job).priority


def _age(pending_s: float, max_age_s: float) -> float:
    if max_age_s <= 0:
        return 1.0
    return min(1.0, max(0.0, pending_s) / max_age_s)
