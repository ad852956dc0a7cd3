"""Scheduling policy (mgpu_server.scheduling.policy): decayed usage, multifactor priority, QoS."""

from __future__ import annotations

import math

import pytest

from mgpu_core.models import JobSpec
from mgpu_core.states import JobState
from mgpu_server.records.jobs import Job
from mgpu_server.scheduling.policy import (
    Breakdown,
    PolicyConfig,
    Priorities,
    Qos,
    Usage,
)

HL = 1000.0  # half-life used throughout


def approx(value: float) -> object:
    return pytest.approx(value, rel=1e-12, abs=1e-12)


def pending(
    job_id: int,
    user: str,
    *,
    submit: float = 0.0,
    gpus: int = 1,
    nice: int = 0,
    qos: str = "",
    override: int | None = None,
) -> Job:
    spec = JobSpec(argv=["x"], gpus=gpus, nice=nice, qos=qos)
    return Job(job_id, user, spec, submit_time=submit, priority_override=override)


def running(job_id: int, user: str, *, gpus: int, start: float) -> Job:
    job = Job(job_id, user, JobSpec(argv=["x"], gpus=gpus), submit_time=0.0)
    job.state = JobState.RUNNING
    job.start_time = start
    return job


def priorities(cfg: PolicyConfig, usage: Usage, jobs: list[Job], now: float) -> Priorities:
    """The reference: the priority factors from a plain list of jobs (the master keeps the
    running totals incrementally instead; tests/server/test_schedpass checks those)."""
    live: dict[str, float] = {}
    users: set[str] = set()
    for job in jobs:
        if job.state.terminal:
            continue
        users.add(job.user)
        if job.state is JobState.RUNNING:
            gpu_s = job.spec.gpus * max(0.0, now - job.start_time)
            live[job.user] = live.get(job.user, 0.0) + gpu_s
    return Priorities(cfg, usage, now, live=live, users=users)


def live_usage(usage: Usage, user: str, now: float, jobs: list[Job]) -> float:
    running_s = sum(j.spec.gpus * max(0.0, now - j.start_time) for j in jobs if j.user == user)
    return usage.of(user, now) + running_s


# ---- Usage --------------------------------------------------------------------------------


def test_usage_halves_every_half_life() -> None:
    usage = Usage(HL)
    usage.add("alice", 800.0, at=0.0, now=0.0)
    assert usage.of("alice", 0.0) == 800.0
    assert usage.of("alice", HL) == approx(400.0)
    assert usage.of("alice", 2 * HL) == approx(200.0)
    assert usage.of("alice", 3 * HL) == approx(100.0)
    assert usage.of("alice", HL / 2) == approx(800.0 / math.sqrt(2.0))
    assert usage.of("bob", HL) == 0.0
    assert usage.users() == {"alice"}


def test_usage_add_ages_usage_that_happened_earlier() -> None:
    usage = Usage(HL)
    # A job that ended one half-life before the master saw it counts half.
    usage.add("alice", 100.0, at=0.0, now=HL)
    assert usage.of("alice", HL) == approx(50.0)
    assert usage.of("alice", 2 * HL) == approx(25.0)
    # An end "in the future" (clock skew) does not grow the value.
    usage.add("bob", 100.0, at=HL + 50.0, now=HL)
    assert usage.of("bob", HL) == 100.0


def test_usage_add_accumulates_decayed() -> None:
    usage = Usage(HL)
    usage.add("alice", 100.0, at=0.0, now=0.0)
    usage.add("alice", 100.0, at=HL, now=HL)
    assert usage.of("alice", HL) == approx(150.0)
    assert usage.of("alice", 2 * HL) == approx(75.0)
    usage.add("alice", 40.0, at=HL, now=2 * HL)  # seen late: 20 now
    assert usage.of("alice", 2 * HL) == approx(95.0)


def test_usage_counts_running_jobs_live() -> None:
    usage = Usage(HL)
    usage.add("alice", 100.0, at=0.0, now=0.0)
    jobs = [
        running(1, "alice", gpus=2, start=HL - 30.0),
        running(2, "alice", gpus=0, start=0.0),
        running(3, "bob", gpus=4, start=0.0),
        running(4, "alice", gpus=1, start=HL + 10.0),  # starts after now: counts 0
    ]
    # 100 decayed to 50, plus 2 GPUs x 30 s live (undecayed).
    assert live_usage(usage, "alice", HL, jobs) == approx(110.0)
    assert live_usage(usage, "bob", HL, jobs) == approx(4 * HL)
    assert live_usage(usage, "carol", HL, jobs) == 0.0
    assert usage.users() == {"alice"}  # running jobs are not recorded


def test_job_usage_gpu_s() -> None:
    job = running(1, "alice", gpus=3, start=100.0)
    assert job.usage_gpu_s() == 0.0  # still running: no end yet
    job.end_time = 150.0
    assert job.usage_gpu_s() == 150.0
    job.end_time = 90.0  # clock went backwards
    assert job.usage_gpu_s() == 0.0
    never = Job(2, "bob", JobSpec(argv=["x"], gpus=2), submit_time=5.0)
    assert never.usage_gpu_s() == 0.0


# ---- priority factors ---------------------------------------------------------------------


def config(**kw: object) -> PolicyConfig:
    base: dict[str, object] = {
        "weight_age": 1000.0,
        "weight_fairshare": 10000.0,
        "weight_qos": 100.0,
        "max_age_s": 100.0,
        "half_life_s": HL,
    }
    base.update(kw)
    return PolicyConfig(**base)  # type: ignore[arg-type]


def test_age_grows_and_caps_at_one() -> None:
    cfg = config()
    usage = Usage(HL)
    job = pending(1, "alice", submit=1000.0)
    ages = [
        priorities(cfg, usage, [], now).breakdown(job).age for now in (1e3, 1025.0, 1050.0, 1100.0)
    ]
    assert ages == [0.0, 0.25, 0.5, 1.0]
    assert priorities(cfg, usage, [], 5000.0).breakdown(job).age == 1.0
    assert priorities(cfg, usage, [], 900.0).breakdown(job).age == 0.0  # clock skew
    # No usage anywhere: fair-share 1, default QoS with priority 0: factor 0.
    b = priorities(cfg, usage, [], 1050.0).breakdown(job)
    assert (b.fairshare, b.qos) == (1.0, 0.0)
    assert b.priority == 1000.0 * 0.5 + 10000.0


def test_priority_sum_and_nice() -> None:
    cfg = config(qos={"normal": Qos("normal", priority=10), "high": Qos("high", priority=40)})
    usage = Usage(HL)
    calc = priorities(cfg, usage, [], 75.0)
    job = pending(7, "alice", submit=0.0, qos="normal", nice=120)
    b = calc.breakdown(job)
    assert b == Breakdown(7, 750.0 + 10000.0 + 25.0 - 120, 0.75, 1.0, 0.25, 120, None)
    assert calc.of(job) == b.priority == 10655.0
    # A negative nice (an admin's) raises it.
    assert calc.of(pending(8, "alice", qos="normal", nice=-45)) == 10820.0


def test_admin_override_replaces_everything() -> None:
    cfg = config()
    calc = priorities(cfg, Usage(HL), [], 50.0)
    job = pending(3, "alice", nice=500, override=7)
    b = calc.breakdown(job)
    assert b.priority == 7.0
    assert (b.age, b.fairshare, b.nice, b.admin) == (0.5, 1.0, 500, 7)
    assert calc.of(pending(4, "alice", override=0)) == 0.0  # 0 is an override, not "none"
    assert calc.of(pending(5, "alice", override=-3)) == -3.0


def test_qos_factor_is_normalised_by_the_top_qos() -> None:
    qos = {
        "normal": Qos("normal", priority=0),
        "low": Qos("low", priority=50),
        "high": Qos("high", priority=200),
    }
    calc = priorities(config(qos=qos), Usage(HL), [], 0.0)
    factors = {q: calc.breakdown(pending(1, "a", qos=q)).qos for q in ("normal", "low", "high")}
    assert factors == {"normal": 0.0, "low": 0.25, "high": 1.0}
    # An empty name means the default QoS; an unknown name falls back to it too.
    assert calc.breakdown(pending(2, "a", qos="")).qos == 0.0
    assert calc.breakdown(pending(3, "a", qos="nope")).qos == 0.0
    cfg = config(qos=qos, default_qos="low")
    assert priorities(cfg, Usage(HL), [], 0.0).breakdown(pending(4, "a")).qos == 0.25
    assert priorities(cfg, Usage(HL), [], 0.0).of(pending(4, "a")) == 10000.0 + 25.0


def test_qos_factor_zero_when_no_qos_has_priority() -> None:
    qos = {"normal": Qos("normal"), "other": Qos("other", priority=-5)}
    calc = priorities(config(qos=qos), Usage(HL), [], 0.0)
    assert calc.breakdown(pending(1, "a", qos="other")).qos == 0.0
    assert calc.breakdown(pending(2, "a", qos="normal")).qos == 0.0


# ---- fair-share ---------------------------------------------------------------------------


def test_fairshare_is_one_without_any_usage() -> None:
    usage = Usage(HL)
    calc = priorities(config(), usage, [running(1, "bob", gpus=2, start=10.0)], 10.0)
    # bob runs, but for 0 s: total usage is 0.
    assert calc.breakdown(pending(2, "alice")).fairshare == 1.0
    assert calc.breakdown(pending(3, "bob")).fairshare == 1.0


def test_fairshare_two_users_exact() -> None:
    usage = Usage(HL)
    usage.add("alice", 300.0, at=0.0, now=0.0)
    usage.add("bob", 100.0, at=0.0, now=0.0)
    calc = priorities(config(), usage, [], 0.0)
    # Equal split between 2 users: share 1/2; alice used 3/4, bob 1/4.
    alice = calc.breakdown(pending(1, "alice")).fairshare
    bob = calc.breakdown(pending(2, "bob")).fairshare
    assert alice == approx(2.0 ** (-0.75 / 0.5))
    assert bob == approx(2.0 ** (-0.25 / 0.5))
    assert alice < bob < 1.0
    # A user with no usage gets 1, whatever the others used.
    assert calc.breakdown(pending(3, "carol")).fairshare == 1.0
    assert calc.of(pending(1, "alice")) == approx(10000.0 * 2.0**-1.5)


def test_fairshare_decay_is_applied_before_the_shares() -> None:
    usage = Usage(HL)
    usage.add("alice", 400.0, at=0.0, now=0.0)  # 100 left after two half-lives
    usage.add("bob", 100.0, at=2 * HL, now=2 * HL)
    calc = priorities(config(), usage, [], 2 * HL)
    a = calc.breakdown(pending(1, "alice")).fairshare
    b = calc.breakdown(pending(2, "bob")).fairshare
    assert a == approx(0.5) and b == approx(0.5)


def test_fairshare_counts_running_jobs() -> None:
    usage = Usage(HL)
    usage.add("bob", 200.0, at=100.0, now=100.0)
    jobs = [
        running(1, "alice", gpus=2, start=0.0),  # 200 GPU-s at now=100
        pending(2, "carol"),  # no usage, but pending: one of three equal shares
    ]
    calc = priorities(config(), usage, jobs, 100.0)
    assert calc.breakdown(pending(3, "alice")).fairshare == approx(2**-1.5)
    assert calc.breakdown(pending(4, "bob")).fairshare == approx(2**-1.5)
    assert calc.breakdown(pending(5, "carol")).fairshare == 1.0


def test_more_usage_lowers_priority() -> None:
    usage = Usage(HL)
    usage.add("heavy", 900.0, at=0.0, now=0.0)
    usage.add("light", 100.0, at=0.0, now=0.0)
    calc = priorities(config(), usage, [], 10.0)
    heavy = calc.of(pending(1, "heavy", submit=0.0))
    light = calc.of(pending(2, "light", submit=0.0))
    fresh = calc.of(pending(3, "fresh", submit=0.0))
    assert heavy < light < fresh
    assert fresh == 1000.0 * 0.1 + 10000.0


def test_single_user_with_usage() -> None:
    usage = Usage(HL)
    usage.add("alice", 5.0, at=0.0, now=0.0)
    calc = priorities(config(), usage, [], 0.0)
    # All the usage is hers and the split is hers alone: 2 ** (-1 / 1).
    assert calc.breakdown(pending(1, "alice")).fairshare == 0.5


def test_fairshare_split_counts_users_with_pending_work() -> None:
    usage = Usage(HL)
    usage.add("alice", 100.0, at=0.0, now=0.0)
    jobs = [pending(1, "alice"), pending(2, "bob")]
    calc = priorities(config(), usage, jobs, 0.0)
    assert calc.breakdown(jobs[0]).fairshare == approx(0.25)
