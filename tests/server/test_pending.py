"""The pending queue (mgpu_server.state.pending): its order is the multifactor priority order of
mgpu_server.scheduling.policy at every moment, whatever came and went, and a walk reads only
what it needs."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgpu_core.models import JobSpec
from mgpu_server.records.jobs import Job
from mgpu_server.scheduling.policy import PolicyConfig, Priorities, Qos, Usage
from mgpu_server.state.pending import PendingQueue

MAX_AGE = 1024.0  # with weight_age 1024 the age term is whole seconds: exact arithmetic
QOS = {"normal": Qos("normal"), "low": Qos("low", 1), "mid": Qos("mid", 2), "high": Qos("high", 4)}


def policy(weight_fairshare: float) -> PolicyConfig:
    return PolicyConfig(
        weight_age=1024.0,
        weight_fairshare=weight_fairshare,
        weight_qos=1000.0,
        max_age_s=MAX_AGE,
        half_life_s=4096.0,
        qos=QOS,
    )


def job(job_id: int, user: str, submit: float, **spec: object) -> Job:
    override = spec.pop("override", None)
    return Job(job_id, user, JobSpec(argv=["x"], **spec), submit, priority_override=override)  # type: ignore[arg-type]


def calc(queue: PendingQueue, usage: Usage, now: float) -> Priorities:
    return Priorities(queue.policy, usage, now, live={}, users=queue.users())


def formula_order(queue: PendingQueue, usage: Usage, now: float) -> list[tuple[float, int]]:
    c = calc(queue, usage, now)
    return sorted((-c.of(j), j.job_id) for j in queue.values())


OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.integers(0, 3),  # user
            st.sampled_from(list(QOS)),
            st.sampled_from([0, 0, 5, 100, -20]),  # nice
            st.one_of(st.none(), st.none(), st.none(), st.integers(-50, 12000)),  # admin's
            st.sampled_from([0, 0, 0, 300, 2000]),  # submitted that long ago (a restart)
        ),
        st.tuples(st.just("remove"), st.integers(0, 1000)),
        st.tuples(st.just("refresh"), st.integers(0, 1000), st.sampled_from([0, 7, 300])),
        st.tuples(st.just("tick"), st.sampled_from([0, 1, 37, 512, 1024, 1500, 3000])),
        st.tuples(st.just("usage"), st.integers(0, 3), st.integers(1, 5000)),
        st.tuples(st.just("walk"), st.integers(0, 12), st.integers(0, 12)),
    ),
    max_size=60,
)


def run(ops: list[tuple[object, ...]], weight_fairshare: float) -> None:
    queue = PendingQueue(policy(weight_fairshare))
    usage = Usage(4096.0)
    now = 10_000.0
    ids = itertools.count(1)
    for op in ops:
        kind = op[0]
        live = sorted(queue)
        if kind == "add":
            _, user, qos, nice, override, ago = op
            submit = now - float(ago)  # type: ignore[arg-type]
            queue.add(job(next(ids), f"u{user}", submit, qos=qos, nice=nice, override=override))
        elif kind == "remove" and live:
            assert queue.remove(live[int(op[1]) % len(live)]) is not None  # type: ignore[call-overload]
        elif kind == "refresh" and live:
            target = queue[live[int(op[1]) % len(live)]]  # type: ignore[call-overload]
            target.spec.nice = int(op[2])  # type: ignore[call-overload]
            target.priority_override = None
            queue.refresh(target)
        elif kind == "tick":
            now += float(op[1])  # type: ignore[arg-type]
        elif kind == "usage":
            usage.add(f"u{op[1]}", float(op[2]), now, now)  # type: ignore[arg-type]
        elif kind == "walk":
            # A pass: reads the top few, and starts one of them on the way.
            fair = calc(queue, usage, now).fairshare
            for i, seen in enumerate(itertools.islice(queue.ordered(now, fair), int(op[1]))):  # type: ignore[call-overload]
                if i == op[2]:
                    queue.remove(seen.job_id)
        check(queue, usage, now, exact=weight_fairshare == 0)
    assert len(queue) == len(list(queue.values()))


def check(queue: PendingQueue, usage: Usage, now: float, *, exact: bool) -> None:
    c = calc(queue, usage, now)
    walked = list(queue.ordered(now, c.fairshare))
    assert sorted(j.job_id for j in walked) == sorted(queue)
    expected = formula_order(queue, usage, now)
    if exact:
        assert [(-j.priority, j.job_id) for j in walked] == expected
        return
    for a, b in itertools.pairwise(walked):
        assert c.of(a) >= c.of(b) - 1e-6
    for j in walked:
        assert j.priority == pytest.approx(c.of(j), abs=1e-6)
        assert queue.priority(j, now, c.fairshare) == pytest.approx(c.of(j), abs=1e-6)


@settings(max_examples=300, deadline=None)
@given(ops=OPS)
def test_order_is_the_formulas_without_fairshare_exactly(ops: list[tuple[object, ...]]) -> None:
    run(ops, weight_fairshare=0.0)


@settings(max_examples=300, deadline=None)
@given(ops=OPS)
def test_order_is_the_formulas_with_fairshare(ops: list[tuple[object, ...]]) -> None:
    run(ops, weight_fairshare=10000.0)


def test_age_cap_reorders_and_moves_whole_prefixes() -> None:
    queue = PendingQueue(policy(0.0))
    usage = Usage(4096.0)
    queue.add(job(5, "a", 0.0, nice=10))  # the oldest: first in, first at the cap
    for i in range(6, 10):
        queue.add(job(i, "a", 100.0 * i))
    queue.add(job(1, "b", 900.0, qos="high"))
    queue.add(job(3, "a", 650.0))  # submitted after 6 with a lower id (restored, say)
    fair = calc(queue, usage, 1000.0).fairshare
    assert [(j.job_id, j.priority) for j in queue.ordered(1000.0, fair)] == [
        (1, 1100.0),
        (5, 990.0),
        (6, 400.0),
        (3, 350.0),
        (7, 300.0),
        (8, 200.0),
        (9, 100.0),
    ]
    # Past the cap for everyone in class "a/0": 3, 6..9 tie at 1024 and go by id; 5 has nice 10.
    assert [(j.job_id, j.priority) for j in queue.ordered(5000.0, fair)] == [
        (1, 2024.0),
        (3, 1024.0),
        (6, 1024.0),
        (7, 1024.0),
        (8, 1024.0),
        (9, 1024.0),
        (5, 1014.0),
    ]
    # A job that comes back after the move goes straight to its capped list, in id order.
    queue.remove(7)
    queue.add(job(7, "a", 700.0))
    queue.add(job(4, "a", 400.0))
    assert [j.job_id for j in queue.ordered(5000.0, fair)] == [1, 3, 4, 6, 7, 8, 9, 5]
    assert formula_order(queue, usage, 5000.0) == [
        (-j.priority, j.job_id) for j in queue.ordered(5000.0, fair)
    ]


def test_admin_priority_and_refresh() -> None:
    queue = PendingQueue(policy(0.0))
    fair = calc(queue, Usage(4096.0), 0.0).fairshare
    plain, boosted = job(1, "a", 0.0), job(2, "a", 0.0, nice=50)
    queue.add(plain)
    queue.add(boosted)
    assert [j.job_id for j in queue.ordered(0.0, fair)] == [1, 2]
    boosted.priority_override = 7
    queue.refresh(boosted)
    assert [(j.job_id, j.priority) for j in queue.ordered(0.0, fair)] == [(2, 7.0), (1, 0.0)]
    boosted.priority_override = None
    queue.refresh(boosted)
    assert [j.job_id for j in queue.ordered(0.0, fair)] == [1, 2]
    # The admin's value and the computed one the same: the old entry, dead (and not yet
    # compacted away, with two live ones beside it), ties with the new and is skipped.
    queue.add(job(3, "a", 0.0, override=9000))
    queue.add(job(4, "a", 0.0, override=1))
    plain.priority_override = 500
    queue.refresh(plain)
    plain.priority_override = None
    queue.refresh(plain)
    assert [(j.job_id, j.priority) for j in queue.ordered(500.0, fair)] == [
        (3, 9000.0),
        (1, 500.0),
        (2, 450.0),
        (4, 1.0),
    ]


def test_a_walk_is_lazy_and_skips_what_left_during_it() -> None:
    queue = PendingQueue(policy(0.0))
    fair = calc(queue, Usage(4096.0), 0.0).fairshare
    for i in range(1, 2001):
        queue.add(job(i, f"u{i % 7}", 0.0, nice=i % 3))
    walk = queue.ordered(10.0, fair)
    first = next(walk)
    queue.remove(first.job_id + 7)  # removed while the walk is under way
    rest = [j.job_id for j in itertools.islice(walk, 20)]
    assert first.job_id + 7 not in rest and len(rest) == 20
    assert len(queue) == 1999


def test_bookkeeping_for_a_pass() -> None:
    queue = PendingQueue(policy(0.0))
    assert queue.min_request() == (0, 0, 0)
    queue.add(job(1, "a", 0.0, gpus=2, cpus=4, mem_bytes=100, begin_time=50.0))
    queue.add(job(2, "b", 0.0, gpus=1, cpus=8, mem_bytes=10))
    queue.add(job(3, "a", 0.0, gpus=4, cpus=2, mem_bytes=1000, begin_time=20.0))
    queue.add(job(4, "c", 0.0, gpus=0, cpus=1, mem_bytes=1), parked=True)
    assert queue.min_request() == (1, 2, 10)  # a parked job bounds nothing
    assert queue.users() == {"a", "b", "c"}
    assert queue.next_begin() == 20.0
    assert queue.due(20.0) == [3] and queue.due(20.0) == []
    assert queue.next_begin() == 50.0
    queue.remove(2)
    assert queue.min_request() == (2, 2, 100)
    queue.remove(1)
    assert queue.next_begin() is None and queue.users() == {"a", "c"}
    assert queue.remove(1) is None


def test_parked_jobs_are_out_of_the_walk_and_come_back_in_place() -> None:
    """A pass never steps over parked (held, dependent, not yet begun) jobs; unparking puts
    the job back where its priority says; its priority is computed all the while."""
    queue = PendingQueue(policy(0.0))
    usage = Usage(4096.0)
    for job_id in range(1, 6):
        queue.add(job(job_id, "alice", float(job_id)))
    parked = queue[2]
    queue.park(parked.job_id)
    assert queue.is_parked(parked.job_id)
    now = 100.0
    fair = calc(queue, usage, now).fairshare
    walked = [j.job_id for j in queue.ordered(now, fair)]
    assert walked == [1, 3, 4, 5] and 2 in queue and len(queue) == 5
    expected = calc(queue, usage, now).of(parked)
    assert queue.priority(parked, now, fair) == pytest.approx(expected)
    queue.refresh(parked)  # a parked job stays parked when its request changes
    assert [j.job_id for j in queue.ordered(now, fair)] == [1, 3, 4, 5]
    queue.unpark(parked)
    assert [j.job_id for j in queue.ordered(now, fair)] == [1, 2, 3, 4, 5]
    assert queue.remove(2) is parked and 2 not in queue
