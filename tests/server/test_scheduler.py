from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mgpu_core.reasons import Reason
from mgpu_server.scheduling.planner import (
    NodeView,
    PendingJob,
)
from tests.helpers.planning import plan


def node(name: str, free: list[int], total: int | None = None, cpus: int = 64) -> NodeView:
    total = len(free) if total is None else total
    return NodeView(name, True, free, total, cpus, cpus, 1 << 40, 1 << 40)


def job(job_id: int, gpus: int, nodelist: frozenset[str] = frozenset()) -> PendingJob:
    return PendingJob(job_id, gpus, 1, 0, nodelist)


def test_lowest_free_gpus_and_best_fit() -> None:
    result = plan([job(1, 1), job(2, 2)], [node("big", [0, 1, 2, 3]), node("small", [1])])
    starts = {s.job_id: (s.node_id, s.gpu_indices) for s in result.starts}
    assert starts == {1: ("small", (1,)), 2: ("big", (0, 1))}


def test_blocked_top_job_reserves_its_nodes() -> None:
    result = plan([job(1, 4), job(2, 1)], [node("a", [0, 1], total=4)])
    assert result.starts == []
    assert result.reasons == {1: Reason.RESOURCES, 2: Reason.PRIORITY}


def test_impossible_job_does_not_block_others() -> None:
    result = plan([job(1, 16), job(2, 1)], [node("a", [0, 1], total=2)])
    assert [s.job_id for s in result.starts] == [2]
    assert result.reasons == {1: Reason.RESOURCES}


def test_nodelist_and_down_nodes() -> None:
    down = NodeView("d", False, [0], 1, 4, 4, 0, 0)
    result = plan(
        [job(1, 1, frozenset({"d"})), job(2, 1, frozenset({"a"}))], [down, node("a", [0])]
    )
    assert result.reasons == {1: Reason.NODE_NOT_AVAIL}
    assert [(s.job_id, s.node_id) for s in result.starts] == [(2, "a")]


def test_cpus_and_memory_are_consumed() -> None:
    n = NodeView("a", True, [0, 1, 2], 3, 2, 2, 100, 100)
    result = plan([PendingJob(1, 1, 2, 0), PendingJob(2, 1, 1, 0)], [n])
    assert [s.job_id for s in result.starts] == [1]
    n = NodeView("a", True, [0, 1, 2], 3, 8, 8, 100, 100)
    result = plan([PendingJob(1, 0, 1, 60), PendingJob(2, 0, 1, 60)], [n])
    assert [s.job_id for s in result.starts] == [1]


@settings(max_examples=300, deadline=None)
@given(
    nodes=st.lists(
        st.integers(0, 8).flatmap(
            lambda n: st.tuples(st.just(n), st.sets(st.integers(0, max(n - 1, 0)), max_size=n))
        ),
        min_size=1,
        max_size=6,
    ),
    jobs=st.lists(st.integers(0, 9), max_size=40),
)
def test_no_gpu_given_twice_and_free_gpus_not_idle_when_head_fits(
    nodes: list[tuple[int, set[int]]], jobs: list[int]
) -> None:
    views = [
        NodeView(f"n{i}", True, sorted(free), total, 64, 64, 0, 0)
        for i, (total, free) in enumerate(nodes)
    ]
    pending = [job(i + 1, g) for i, g in enumerate(jobs)]
    result = plan(pending, views)
    given_out: set[tuple[str, int]] = set()
    for s in result.starts:
        free = set(next(v.free_gpus for v in views if v.node_id == s.node_id))
        assert len(s.gpu_indices) == pending[s.job_id - 1].gpus
        for g in s.gpu_indices:
            assert g in free and (s.node_id, g) not in given_out
            given_out.add((s.node_id, g))
    started = {s.job_id for s in result.starts}
    assert started | set(result.reasons) == {j.job_id for j in pending}
    assert not started & set(result.reasons)
    # The input is not modified.
    assert [sorted(v.free_gpus) for v in views] == [sorted(f) for _, f in nodes]
    # If the first job fits somewhere right now, it starts.
    if pending and any(len(f) >= pending[0].gpus for _, f in nodes):
        assert 1 in started
