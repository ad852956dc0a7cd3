"""Why a pending job may not be considered by a scheduling pass at all: the one place that
decides it (holds, an admin's rule, its partitions, ``--begin``, dependencies). The lifecycle
asks it whenever what a job waits on may have changed, and parks the job with the reason it
gives.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from mgpu_core.deps import DepStatus
from mgpu_core.reasons import Reason
from mgpu_core.states import Hold
from mgpu_server.records.jobs import Job
from mgpu_server.scheduling.partitions import Partition
from mgpu_server.scheduling.policy import PolicyConfig
from mgpu_server.scheduling.turns import TurnQueue
from mgpu_server.scheduling.views import Choice
from mgpu_server.state.depwait import DependencyIndex
from mgpu_server.state.table import JobTable

# Reasons a parked job shows; once it may run it shows Priority until a pass examines it.
PARKED = frozenset(
    {
        Reason.HELD_USER,
        Reason.HELD_ADMIN,
        Reason.BEGIN_TIME,
        Reason.DEPENDENCY,
        Reason.DEPENDENCY_NEVER,
        Reason.GPU_ACCESS_REVOKED,
        Reason.QOS_NOT_ALLOWED,
        Reason.PARTITION_DOWN,
        Reason.PARTITION_INACTIVE,
        Reason.PARTITION_TIME_LIMIT,
        Reason.PARTITION_CONFIG,
    }
)


class StartRule(Protocol):
    """Why an admin's rule keeps a pending job from starting, whoever asks (given the policy
    and the users whose GPU access is revoked), or None; with ``partition``, whether that
    partition admits the job's user: api.permissions.start_refusal, handed in."""

    def __call__(
        self,
        job: Job,
        policy: PolicyConfig,
        gpu_revoked: Collection[str],
        partition: Partition | None = None,
    ) -> Reason | None: ...


class WaitRules:
    def __init__(
        self,
        *,
        table: JobTable,
        deps: DependencyIndex,
        turns: TurnQueue,
        policy: PolicyConfig,
        start_rule: StartRule,
    ) -> None:
        self.table = table
        self.deps = deps
        self.turns = turns
        self.policy = policy
        self.start_rule = start_rule

    def refusal(self, job: Job) -> Reason | None:
        """Why an admin's rule keeps the job from starting now, or None."""
        return self.start_rule(job, self.policy, self.turns.revoked)

    def partitions(self, job: Job) -> tuple[tuple[Choice, ...], Reason]:
        """The partitions that may run ``job`` now, in its order, as the planner sees them,
        and why none may if so: the config's rules (state, MaxTime, QoS: they change only
        with a restart, which places every job again), then the access lists."""
        spec = job.spec
        offer = self.policy.partitions.offer(
            spec.partition, spec.time_limit_s, spec.qos or self.policy.default_qos
        )
        if not offer.restricted:
            return offer.choices, offer.reason
        rule, revoked = self.start_rule, self.turns.revoked
        admitted = tuple(
            (p.name, p.nodes)
            for p in offer.partitions
            if not p.restricted or rule(job, self.policy, revoked, p) is None
        )
        return admitted, offer.reason if not offer.partitions else Reason.PARTITION_CONFIG

    def reason(self, job: Job, now: float) -> Reason | None:
        """Why the pending ``job`` may not be considered by a pass, or None."""
        if job.hold:
            return Reason.HELD_ADMIN if job.hold is Hold.ADMIN else Reason.HELD_USER
        refused = self.refusal(job)
        if refused is not None:
            return refused
        usable, why = self.partitions(job)
        if not usable:
            return why
        if job.spec.begin_time > now:
            return Reason.BEGIN_TIME  # due() brings it back at that time
        status = self.deps.status(job, self.table.jobs)
        if status is DepStatus.OK:
            return None
        return Reason.DEPENDENCY if status is DepStatus.WAIT else Reason.DEPENDENCY_NEVER
