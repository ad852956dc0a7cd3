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
from typing import Protocol

from mgpu_core.models import JobSpec
from mgpu_server.scheduling.partitions import Partitions

DAY_S = 86_400.0
DEFAULT_SESSION_GRACE_S = 300


@dataclass(frozen=True, slots=True)
class Qos:
    name: str
    priority: int = 0
    max_gpus_per_user: int = 0  # 0 = no limit
    max_jobs_per_user: int = 0  # running jobs; 0 = no limit
    max_wall_s: int = 0  # 0 = no limit
    grace_s: int = 0  # extra time past the limit before the job is killed
    # Sessions (mgpu_client session): how many one user may hold (0 = no limit), and how long
    # one goes on past its TTL, warned, before it is ended.
    max_sessions_per_user: int = 0
    session_grace_s: int = DEFAULT_SESSION_GRACE_S
    # Idle jobs (GPUs at ~0 % and memory unchanged): warn after, end after (0 = never).
    idle_warn_s: int = 0
    idle_end_s: int = 0
    # Who may use it (the master's config: allowed_users, allowed_groups). Neither set: everyone;
    # either set: only the users named or in a group named (an empty list names nobody).
    allowed_users: frozenset[str] | None = None
    allowed_groups: frozenset[str] | None = None

    @property
    def restricted(self) -> bool:
        return self.allowed_users is not None or self.allowed_groups is not None


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    weight_age: float = 1000.0
    weight_fairshare: float = 10000.0
    weight_qos: float = 1000.0
    max_age_s: float = 7 * DAY_S
    half_life_s: float = 7 * DAY_S
    default_qos: str = "normal"
    qos: dict[str, Qos] = field(default_factory=lambda: {"normal": Qos("normal")})
    # A running job's GPUs at or under this utilisation (%), their memory unchanged, for
    # idle_after_s: it is flagged idle (state/idle.py); its QoS may warn, then end it.
    idle_util_pct: float = 1.0
    idle_after_s: int = 600
    # Eligible jobs one scheduling pass examines at most (Slurm's default_queue_depth): the
    # ones further down keep their last reason until a pass reaches them.
    queue_depth: int = 1000
    # [partition.NAME] tables (none: one partition, "gpu", with every node and no limits).
    partitions: Partitions = field(default_factory=Partitions.implicit)
    # What jobs see as SLURM_CLUSTER_NAME (the config's top-level cluster_name).
    cluster_name: str = "mgpu"
    # [notify] job_url_prefixes: where a job's --notify URL may point (none: nowhere; the
    # master would POST to any address a user names, inside the site's network too).
    notify_url_prefixes: tuple[str, ...] = ()

    def qos_of(self, name: str) -> Qos:
        return self.qos.get(name or self.default_qos) or self.qos[self.default_qos]

    def session_grace_of(self, spec: JobSpec) -> int:
        """How long a session goes on past its TTL (its time limit), warned, before it ends
        (0 for any other job)."""
        if not spec.session or not spec.time_limit_s:
            return 0
        return self.qos_of(spec.qos).session_grace_s

    def top_qos_priority(self) -> int:
        return max((q.priority for q in self.qos.values()), default=0)

    def qos_factor(self, name: str, top: int) -> float:
        """The QoS factor (0..1) of a job in QoS ``name``; ``top``: :meth:`top_qos_priority`."""
        return self.qos_of(name).priority / top if top > 0 else 0.0


class PricedJob(Protocol):
    """What the priority of a job depends on (the master's Job record has it)."""

    @property
    def job_id(self) -> int: ...
    @property
    def user(self) -> str: ...
    @property
    def spec(self) -> JobSpec: ...
    @property
    def submit_time(self) -> float: ...
    @property
    def priority_override(self) -> int | None: ...


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
    """Decayed GPU-seconds per user of finished jobs (each added once, at its end); the
    running jobs' share is kept live by the running totals."""

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

    def of(self, user: str, now: float) -> float:
        return self._decayed(user, now)

    def users(self) -> set[str]:
        return set(self._value)


class Priorities:
    """The priority factors as of ``now``: fair-share computed once (O(users), whatever the
    length of the queue)."""

    def __init__(
        self,
        config: PolicyConfig,
        usage: Usage,
        now: float,
        *,
        live: Mapping[str, float],
        users: Iterable[str],
    ) -> None:
        """``live``: the GPU-seconds each user's running jobs have used so far; ``users``:
        everyone with running or pending jobs (the GPUs are shared equally among them and
        those with recent usage)."""
        self.config = config
        self.now = now
        everyone = usage.users()
        everyone.update(users)
        used = live
        self._usage = {u: usage.of(u, now) + used.get(u, 0.0) for u in everyone}
        self._total = sum(self._usage.values())
        self._top_qos = config.top_qos_priority()

    def fairshare(self, user: str) -> float:
        if self._total <= 0:
            return 1.0
        share = 1.0 / max(1, len(self._usage) + (user not in self._usage))  # equal split
        return math.pow(2.0, -(self._usage.get(user, 0.0) / self._total) / share)

    def breakdown(self, job: PricedJob) -> Breakdown:
        cfg = self.config
        age = _age(self.now - job.submit_time, cfg.max_age_s)
        fair = self.fairshare(job.user)
        qos = cfg.qos_factor(job.spec.qos, self._top_qos)
        value = cfg.weight_age * age + cfg.weight_fairshare * fair + cfg.weight_qos * qos
        value -= job.spec.nice
        if job.priority_override is not None:
            value = float(job.priority_override)
        return Breakdown(job.job_id, value, age, fair, qos, job.spec.nice, job.priority_override)

    def of(self, job: PricedJob) -> float:
        return self.breakdown(job).priority


def _age(pending_s: float, max_age_s: float) -> float:
    if max_age_s <= 0:
        return 1.0
    return min(1.0, max(0.0, pending_s) / max_age_s)
