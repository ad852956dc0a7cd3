"""TIME_LIMIT notices (Slurm's mail types TIME_LIMIT_50, _80, _90 and TIME_LIMIT): a running
job that asked for them, or every running job when the cluster's webhooks take every event, is
told once per run as it passes half, 80 % and 90 % of its time limit, and the limit itself.
Checked on the master's once-a-second tick, not on the scheduling path."""

from __future__ import annotations

from collections.abc import Iterable

from mgpu_core.reasons import Reason
from mgpu_core.states import FAILURE_STATES
from mgpu_server.records.jobs import Job
from mgpu_server.state.effects import Outbox

THRESHOLDS = (
    (0.5, "TIME_LIMIT_50"),
    (0.8, "TIME_LIMIT_80"),
    (0.9, "TIME_LIMIT_90"),
    (1.0, "TIME_LIMIT"),
)


class TimeLimitNotices:
    def __init__(self) -> None:
        self.sent: dict[int, set[str]] = {}  # per running job: the notices of this run sent

    def tick(self, running: Iterable[Job], outbox: Outbox, now: float) -> None:
        """O(running jobs with a time limit that want the notices)."""
        live: set[int] = set()
        for job in running:
            limit = job.spec.time_limit_s
            asked = outbox.notify_all or any(
                t.startswith("TIME_LIMIT") for t in job.spec.mail_types
            )
            if not limit or not asked or not job.start_time:
                continue
            live.add(job.job_id)
            used = (now - job.start_time) / limit
            sent = self.sent.setdefault(job.job_id, set())
            for fraction, event in THRESHOLDS:
                if used >= fraction and event not in sent:
                    sent.add(event)
                    outbox.notify(event, job, now)
        for gone in set(self.sent) - live:  # ended or requeued: a new run starts afresh
            del self.sent[gone]


def ended_notice(job: Job) -> str:
    """The notice of a job's end: FAIL for a failure, INVALID_DEPEND for a dependency that can
    never be met, else END (Slurm's mail types)."""
    if job.state in FAILURE_STATES:
        return "FAIL"
    if job.reason == Reason.DEPENDENCY_NEVER:
        return "INVALID_DEPEND"
    return "END"
