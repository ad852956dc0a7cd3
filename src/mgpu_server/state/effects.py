"""What the master's state asks the server to send once the turn is committed, and whether
the next flush needs a scheduling pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mgpu_core.models import Launch
from mgpu_server.records.jobs import Job


@dataclass(slots=True, frozen=True)
class ToNode:
    node_id: str
    msg: dict[str, Any]


@dataclass(slots=True, frozen=True)
class ToWatchers:
    job_id: int
    msg: dict[str, Any]


Effect = ToNode | ToWatchers


@dataclass(slots=True)
class Outbox:
    """The effects of one loop turn, in order. ``changed`` is set by every change that can
    alter the scheduler's answer (a submit, freed or new resources, a drain, a health change,
    a job that may now run): a turn with only heartbeats, queries and job_started events
    skips the pass over the pending queue."""

    effects: list[Effect] = field(default_factory=list)
    changed: bool = True

    def to_node(self, node_id: str, msg: dict[str, Any]) -> None:
        self.effects.append(ToNode(node_id, msg))

    def to_watchers(self, job_id: int, msg: dict[str, Any]) -> None:
        self.effects.append(ToWatchers(job_id, msg))

    def take(self) -> list[Effect]:
        effects, self.effects = self.effects, []
        return effects

    def drop_jobs(self, job_ids: set[int]) -> None:
        """Forget what was to be sent about these jobs (their submission was undone)."""
        self.effects = [e for e in self.effects if _job_id(e) not in job_ids]


def launch_order(job: Job, *, kill_grace_s: float, cluster_name: str) -> dict[str, Any]:
    """The ``launch`` that starts a job just placed (node, GPUs, partition set) on its node."""
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
    )
    return {"t": "launch", "launch": launch.to_wire()}


def _job_id(effect: Effect) -> int | None:
    if isinstance(effect, ToWatchers):
        return effect.job_id
    msg = effect.msg
    if "launch" in msg:
        return int(msg["launch"]["job_id"])
    job_id = msg.get("job_id")
    return job_id if isinstance(job_id, int) else None
