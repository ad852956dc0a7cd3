"""What the master's state asks the server to send once the turn is committed, and whether
the next flush needs a scheduling pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mgpu_core.models import Launch
from mgpu_server.records.jobs import Job

# What a notice says of its job.
NOTIFY_FIELDS = [
    "job_id", "job_ref", "name", "user", "state", "reason", "node", "partition", "exit_code",
    "signal", "submit_time", "start_time", "end_time", "elapsed_s", "restart_count", "gpus",
]  # fmt: skip


@dataclass(slots=True, frozen=True)
class ToNode:
    node_id: str
    msg: dict[str, Any]


@dataclass(slots=True, frozen=True)
class ToWatchers:
    job_id: int
    msg: dict[str, Any]


@dataclass(slots=True, frozen=True)
class Notify:
    """Tell of ``event`` (BEGIN, END, FAIL, ...: mgpu_core.models.NOTIFY_EVENTS) about the job:
    its owner's mail and --notify URL if it asked, and the cluster's webhooks. ``job``: the
    job's row as of the event."""

    event: str
    job: dict[str, Any]
    mail_types: tuple[str, ...]
    mail_user: str
    notify_url: str


Effect = ToNode | ToWatchers | Notify


@dataclass(slots=True)
class Outbox:
    """The effects of one loop turn, in order. ``changed`` is set by every change that can
    alter the scheduler's answer (a submit, freed or new resources, a drain, a health change,
    a job that may now run): a turn with only heartbeats, queries and job_started events
    skips the pass over the pending queue."""

    effects: list[Effect] = field(default_factory=list)
    changed: bool = True
    # Set by the server when the cluster has webhooks: then every job's events are told,
    # else only those of jobs that asked (--mail-type, --notify).
    notify_all: bool = False

    def to_node(self, node_id: str, msg: dict[str, Any]) -> None:
        self.effects.append(ToNode(node_id, msg))

    def to_watchers(self, job_id: int, msg: dict[str, Any]) -> None:
        self.effects.append(ToWatchers(job_id, msg))

    def notify(self, event: str, job: Job, now: float) -> None:
        spec = job.spec
        if not (self.notify_all or spec.mail_types or spec.notify_url):
            return
        row = job.to_wire(now, NOTIFY_FIELDS)
        self.effects.append(
            Notify(event, row, tuple(spec.mail_types), spec.mail_user, spec.notify_url)
        )

    def take(self) -> list[Effect]:
        effects, self.effects = self.effects, []
        return effects

    def drop_jobs(self, job_ids: set[int]) -> None:
        """Forget what was to be sent about these jobs (their submission was undone)."""
        self.effects = [e for e in self.effects if _job_id(e) not in job_ids]


def launch_order(
    job: Job, *, kill_grace_s: float, cluster_name: str, grace_s: int = 0
) -> dict[str, Any]:
    """The ``launch`` that starts a job just placed (node, GPUs, ports, partition set) on its
    node; ``grace_s``: its QoS's time past the limit before it is ended."""
    launch = Launch(
        job_id=job.job_id,
        user=job.user,
        spec=job.launch_spec(),
        gpu_indices=list(job.gpu_indices),
        kill_grace_s=kill_grace_s,
        restart_count=job.restart_count,
        launch_seq=job.launch_seq,
        partition=job.partition,
        cluster_name=cluster_name,
        ports=list(job.ports),
        grace_s=grace_s,
    )
    return {"t": "launch", "launch": launch.to_wire()}


def _job_id(effect: Effect) -> int | None:
    if isinstance(effect, ToWatchers):
        return effect.job_id
    if isinstance(effect, Notify):
        return int(effect.job["job_id"])
    msg = effect.msg
    if "launch" in msg:
        return int(msg["launch"]["job_id"])
    job_id = msg.get("job_id")
    return job_id if isinstance(job_id, int) else None
