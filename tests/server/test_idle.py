"""Idle detection (state/idle.py): a job whose GPUs report ~0 % utilisation and unchanged
memory for idle_after is flagged; utilisation or a memory change resets it; a MIG instance
(no utilisation) counts by its memory; a QoS warns once, then ends the job."""

from __future__ import annotations

from mgpu_core.models import GpuSample, JobSpec
from mgpu_core.states import JobState
from mgpu_server.records.jobs import Job
from mgpu_server.scheduling.policy import PolicyConfig, Qos
from mgpu_server.state.effects import Notify, Outbox, ToNode
from mgpu_server.state.idle import MEM_TOLERANCE_BYTES, IdleWatch

GIB = 1 << 30


def watch(idle_warn_s: int = 0, idle_end_s: int = 0) -> tuple[IdleWatch, Outbox, list[int]]:
    qos = Qos("normal", idle_warn_s=idle_warn_s, idle_end_s=idle_end_s)
    policy = PolicyConfig(idle_after_s=60, qos={"normal": qos})
    outbox, ended = Outbox(), list[int]()
    outbox.notify_all = True
    return IdleWatch(policy, outbox, lambda job, now: ended.append(job.job_id)), outbox, ended


def running() -> Job:
    spec = JobSpec(argv=["x"], gpus=1)
    return Job(job_id=1, user="u", spec=spec, submit_time=0.0, state=JobState.RUNNING)


def sample(util: int, mem: int) -> GpuSample:
    return GpuSample(index=0, utilization_pct=util, memory_used_bytes=mem)


T0 = 1_000_000.0  # a Unix time (a Job's idle_since of 0 means "not idle")


def idle_s(job: Job, now: float) -> int:
    return int(job.to_wire(now, ["idle_s"])["idle_s"])


def test_flagged_after_idle_after_and_reset_by_use() -> None:
    idle, _, _ = watch()
    job = running()
    for t in range(0, 61, 5):
        idle.observe(job, [sample(0, GIB)], now=T0 + float(t))
    idle.tick([job], now=T0 + 59.0)
    assert idle_s(job, T0 + 59.0) == 0  # idle, but not for a minute yet
    idle.tick([job], now=T0 + 60.0)
    assert idle_s(job, T0 + 70.0) == 70  # flagged: idle since its first sample
    idle.observe(job, [sample(40, GIB)], now=T0 + 75.0)  # it computes again
    idle.tick([job], now=T0 + 76.0)
    assert idle_s(job, T0 + 76.0) == 0


def test_memory_that_moves_is_use_and_noise_is_not() -> None:
    idle, _, _ = watch()
    job = running()
    idle.observe(job, [sample(-1, GIB)], now=T0 + 0.0)  # a MIG instance: no utilisation
    idle.observe(job, [sample(-1, GIB + MEM_TOLERANCE_BYTES // 2)], now=T0 + 30.0)  # noise
    idle.tick([job], now=T0 + 61.0)
    assert idle_s(job, T0 + 61.0) == 61
    idle.observe(job, [sample(-1, 2 * GIB)], now=T0 + 62.0)  # a real allocation: use
    idle.tick([job], now=T0 + 100.0)
    assert idle_s(job, T0 + 100.0) == 0


def test_warned_once_then_ended_by_the_qos() -> None:
    idle, outbox, ended = watch(idle_warn_s=120, idle_end_s=300)
    job = running()
    idle.observe(job, [sample(0, 0)], now=T0 + 0.0)
    for t in (119.0, 120.0, 200.0):
        idle.tick([job], now=T0 + t)
    notices = [e for e in outbox.take() if isinstance(e, ToNode)]
    assert [n.msg["t"] for n in notices] == ["notice"]  # once
    assert "will be ended in 3 min" in notices[0].msg["text"]
    assert ended == []
    idle.tick([job], now=T0 + 300.0)
    assert ended == [1]


def test_the_webhooks_hear_of_it() -> None:
    idle, outbox, _ = watch(idle_warn_s=1)
    job = running()
    idle.observe(job, [sample(0, 0)], now=T0 + 0.0)
    idle.tick([job], now=T0 + 61.0)
    assert [e.event for e in outbox.take() if isinstance(e, Notify)] == ["IDLE"]


def test_a_requeued_jobs_new_run_starts_its_idle_clock_afresh() -> None:
    idle, _, ended = watch(idle_end_s=120)
    job = running()
    idle.observe(job, [sample(0, 0)], now=T0)
    idle.tick([job], now=T0 + 100.0)
    job.restart_count = 1  # requeued, running again
    idle.observe(job, [sample(0, 0)], now=T0 + 110.0)
    idle.tick([job], now=T0 + 121.0)
    assert ended == [] and idle_s(job, T0 + 121.0) == 0  # 11 s into its new run
