"""Idle jobs: a running job whose GPUs stay at ~0 % utilisation with unchanged memory for the
cluster's ``idle_after`` is flagged idle (``idle_s`` in its queue row: how long; mgpu_queue's
listing, ``show``, the API, ``session list``). Its QoS may then warn it (``idle_warn``: its
terminals are told, and webhooks get an IDLE notice) and end it (``idle_end``: cancelled, by
"idle policy"). Off by default: flagging only.

The evidence is the node's heartbeat samples of the job's GPUs. A sample with no utilisation
(MIG instances: NVML has none) counts by its memory alone; a job without GPUs is never idle.
Not stored: after a master restart a job's idle time counts again from its first samples.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from mgpu_core.models import GpuSample
from mgpu_server.records.jobs import Job
from mgpu_server.scheduling.policy import PolicyConfig
from mgpu_server.state.effects import Outbox

log = logging.getLogger(__name__)

# Memory that moves by less than this (allocator noise, a monitoring probe) is "unchanged".
MEM_TOLERANCE_BYTES = 64 * 1024 * 1024


@dataclass(slots=True)
class _Watch:
    since: float | None  # idle from then on (None: busy)
    memory: dict[int, int] = field(default_factory=dict)  # each GPU's memory when idle began
    run: int = 0  # the job's restart_count: a requeued job's new run starts afresh
    warned: bool = False


class IdleWatch:
    def __init__(
        self,
        policy: PolicyConfig,
        outbox: Outbox,
        end: Callable[[Job, float], None],
    ) -> None:
        """``end(job, now)``: cancel a job its QoS's idle_end ends."""
        self.policy = policy
        self.outbox = outbox
        self.end = end
        self._jobs: dict[int, _Watch] = {}

    def observe(self, job: Job, samples: Iterable[GpuSample], now: float) -> None:
        """One heartbeat's samples of the job's GPUs."""
        threshold = self.policy.idle_util_pct
        memory = {}
        busy = False
        for sample in samples:
            if not sample.healthy:
                return  # no evidence either way
            memory[sample.index] = sample.memory_used_bytes
            busy = busy or sample.utilization_pct > threshold
        if not memory:
            return
        watch = self._jobs.get(job.job_id)
        if watch is None or watch.run != job.restart_count or busy or _moved(watch.memory, memory):
            self._jobs[job.job_id] = _Watch(None if busy else now, memory, run=job.restart_count)
            job.idle_since = 0.0
        elif watch.since is None:
            watch.since, watch.memory = now, memory

    def tick(self, running: Iterable[Job], now: float) -> None:
        """Once a second: flag the jobs idle for idle_after (``Job.idle_since``, which their
        rows show), then their QoS's idle policies (warn, then end)."""
        jobs = list(running)
        if len(self._jobs) > len(jobs):  # ended jobs' watches
            live = {job.job_id for job in jobs}
            self._jobs = {k: w for k, w in self._jobs.items() if k in live}
        for job in jobs:
            watch = self._jobs.get(job.job_id)
            if watch is None or watch.since is None or now - watch.since < self.policy.idle_after_s:
                job.idle_since = 0.0
                continue
            idle, job.idle_since = now - watch.since, watch.since
            qos = self.policy.qos_of(job.spec.qos)
            if qos.idle_end_s and idle >= qos.idle_end_s:
                log.info("job=%d idle %.0f s: ended by QOS %s idle_end", job.job_id, idle, qos.name)
                self._jobs.pop(job.job_id, None)
                self.end(job, now)
            elif qos.idle_warn_s and idle >= qos.idle_warn_s and not watch.warned:
                watch.warned = True
                text = f"job {job.job_id}'s GPUs have been idle for {int(idle // 60)} min"
                if qos.idle_end_s:
                    left = int((qos.idle_end_s - idle) // 60)
                    text += f": it will be ended in {left} min unless they are used"
                log.info("job=%d idle %.0f s: warned", job.job_id, idle)
                notice = {"t": "notice", "job_id": job.job_id, "text": text}
                self.outbox.to_node(job.node_id, notice)
                self.outbox.notify("IDLE", job, now)


def _moved(before: dict[int, int], now: dict[int, int]) -> bool:
    if before.keys() != now.keys():
        return True
    return any(abs(now[i] - before[i]) > MEM_TOLERANCE_BYTES for i in now)
