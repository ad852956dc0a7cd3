"""Backfill reservations and QoS per-user limits of the pure scheduler
(mgpu_server.scheduling.planner)."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from mgpu_core.models import JobSpec
from mgpu_core.reasons import Reason
from mgpu_core.states import JobState
from mgpu_server.scheduling.planner import (
    INF,
    NodeView,
    PendingJob,
    Plan,
    Release,
    Reservation,
    Start,
    UserLoad,
    earliest_start,
    fits_ever,
    fits_now,
)
from mgpu_server.scheduling.policy import PolicyConfig, Qos
from tests.helpers.nodes import node_info
from tests.helpers.planning import GRID_ENDS, NOW, Case, cases, plan
from tests.helpers.state import make_state

GIB = 1 << 30


def node(
    name: str,
    total: int,
    free: list[int],
    releases: list[Release] | None = None,
    *,
    cpus: int = 64,
    free_cpus: int | None = None,
) -> NodeView:
    return NodeView(
        name,
        True,
        free,
        total,
        cpus if free_cpus is None else free_cpus,
        cpus,
        64 * GIB,
        64 * GIB,
        list(releases or []),
    )


def rel(end: float, gpus: int, cpus: int = 0) -> Release:
    return Release(end, gpus, cpus, 0)


def job(
    job_id: int,
    gpus: int,
    *,
    limit: int = 0,
    cpus: int = 0,
    user: str = "",
    max_gpus: int = 0,
    max_jobs: int = 0,
    nodelist: frozenset[str] = frozenset(),
) -> PendingJob:
    return PendingJob(
        job_id,
        gpus,
        cpus,
        0,
        nodelist,
        user=user,
        time_limit_s=limit,
        max_user_gpus=max_gpus,
        max_user_jobs=max_jobs,
    )


def started(result: Plan) -> dict[int, tuple[str, tuple[int, ...]]]:
    return {s.job_id: (s.node_id, s.gpu_indices) for s in result.starts}


# ---- backfill examples --------------------------------------------------------------------


def test_short_job_backfills_before_the_reserved_start() -> None:
    # 4 GPUs, 2 busy until t=100. The 4-GPU top job reserves t=100.
    a = node("a", 4, [2, 3], [rel(100.0, 2)])
    result = plan([job(1, 4), job(2, 2, limit=60)], [a], now=40.0)
    assert result.reservations == {"a": Reservation(1, "a", 100.0, 4, 0, 0)}
    assert started(result) == {2: ("a", (2, 3))}  # ends at exactly t=100: allowed
    assert result.reasons == {1: Reason.RESOURCES}


def test_job_ending_after_the_reserved_start_does_not_backfill() -> None:
    a = node("a", 4, [2, 3], [rel(100.0, 2)])
    for limit in (61, 10_000, 0):  # one second too long, long, no limit at all
        result = plan([job(1, 4), job(2, 1, limit=limit)], [a], now=40.0)
        assert result.starts == [], limit
        assert result.reasons == {1: Reason.RESOURCES, 2: Reason.PRIORITY}
        assert result.reservations["a"].start_s == 100.0


def test_job_that_leaves_enough_for_the_reservation_starts() -> None:
    # 8 GPUs: 4 free, 4 busy until t=100. The top job needs 6: at t=100 all 8 are free, so
    # two GPUs can go to a job of any length, not three.
    a = node("a", 8, [4, 5, 6, 7], [rel(100.0, 4)])
    result = plan([job(1, 6), job(2, 2), job(3, 1), job(4, 1, limit=100)], [a], now=0.0)
    assert result.reservations["a"].start_s == 100.0
    assert started(result) == {2: ("a", (4, 5)), 4: ("a", (6,))}
    assert result.reasons == {1: Reason.RESOURCES, 3: Reason.PRIORITY}


def test_cpus_count_for_the_reservation_too() -> None:
    # GPUs are no obstacle but CPUs are: 8 CPUs, 6 busy until t=50; the top job needs 8.
    a = node("a", 2, [0, 1], [rel(50.0, 0, cpus=6)], cpus=8, free_cpus=2)
    result = plan([job(1, 0, cpus=8), job(2, 1, cpus=2), job(3, 1, cpus=2, limit=50)], [a])
    assert result.reservations["a"] == Reservation(1, "a", 50.0, 0, 8, 0)
    assert started(result) == {3: ("a", (0,))}
    assert result.reasons == {1: Reason.RESOURCES, 2: Reason.PRIORITY}


def test_releases_are_summed_in_end_order() -> None:
    releases = [rel(300.0, 1), rel(100.0, 1), rel(200.0, 1), rel(INF, 1)]
    a = node("a", 4, [], releases)
    assert earliest_start(job(1, 0), a, 7.0) == 7.0
    assert earliest_start(job(1, 1), a, 7.0) == 100.0
    assert earliest_start(job(1, 2), a, 7.0) == 200.0
    assert earliest_start(job(1, 3), a, 7.0) == 300.0
    assert earliest_start(job(1, 4), a, 7.0) == INF
    assert earliest_start(job(1, 5), a, 7.0) == INF
    result = plan([job(1, 3)], [a], now=7.0)
    assert result.reservations == {"a": Reservation(1, "a", 300.0, 3, 0, 0)}


def test_unknown_reserved_start_makes_the_node_first_come() -> None:
    # The busy GPUs have no time limit: the top job's start is unknown, and nothing else may
    # take the node, however short - not even a job that takes no GPU at all.
    a = node("a", 4, [2, 3], [rel(INF, 2, cpus=1)])
    pending = [job(1, 4), job(2, 1, limit=1), job(3, 0, cpus=1, limit=1), job(4, 2)]
    result = plan(pending, [a], now=0.0)
    assert result.reservations == {"a": Reservation(1, "a", INF, 4, 0, 0)}
    assert result.starts == []
    assert result.reasons == {
        1: Reason.RESOURCES,
        2: Reason.PRIORITY,
        3: Reason.PRIORITY,
        4: Reason.PRIORITY,
    }


def test_unknown_start_on_one_node_leaves_the_others_open() -> None:
    a = node("a", 4, [2, 3], [rel(INF, 2)])
    b = node("b", 2, [0, 1])
    result = plan([job(1, 4), job(2, 1), job(3, 1)], [a, b])
    assert result.reservations == {"a": Reservation(1, "a", INF, 4, 0, 0)}
    assert started(result) == {2: ("b", (0,)), 3: ("b", (1,))}


def test_reserved_node_is_the_earliest_one() -> None:
    late = node("late", 4, [], [rel(500.0, 4)])
    early = node("early", 4, [0], [rel(200.0, 3)])
    never = node("never", 4, [], [rel(INF, 4)])
    small = node("small", 2, [], [rel(10.0, 2)])  # earliest, but can never hold 4 GPUs
    result = plan([job(1, 4), job(2, 4), job(3, 4), job(4, 4)], [late, never, small, early])
    # One reservation per node, in priority order, each on its earliest open node.
    assert result.reservations == {
        "early": Reservation(1, "early", 200.0, 4, 0, 0),
        "late": Reservation(2, "late", 500.0, 4, 0, 0),
        "never": Reservation(3, "never", INF, 4, 0, 0),
    }
    assert result.reasons == {i: Reason.RESOURCES for i in (1, 2, 3, 4)}


def test_reservation_ties_go_to_the_lowest_node_id() -> None:
    nodes = [node(n, 2, [], [rel(50.0, 2)]) for n in ("c", "a", "b")]
    result = plan([job(1, 2)], nodes)
    assert list(result.reservations) == ["a"]


def test_reservation_on_a_node_blocks_a_lower_job_that_fits_elsewhere_later() -> None:
    # Job 2 fits node "a" now, but "a" is reserved for job 1 and job 2 would run past t=100:
    # it waits for Priority and reserves the other node, where it never fits now.
    a = node("a", 4, [2, 3], [rel(100.0, 2)])
    b = node("b", 2, [], [rel(400.0, 2)])
    result = plan([job(1, 4), job(2, 2)], [a, b])
    assert result.reasons == {1: Reason.RESOURCES, 2: Reason.PRIORITY}
    assert result.reservations == {
        "a": Reservation(1, "a", 100.0, 4, 0, 0),
        "b": Reservation(2, "b", 400.0, 2, 0, 0),
    }


def test_job_started_in_the_pass_counts_for_a_later_reservation() -> None:
    # Job 1 takes the free GPUs with a 50 s limit; job 2's reservation then waits for it.
    a = node("a", 2, [0], [rel(1300.0, 1)])
    result = plan([job(1, 1, limit=50), job(2, 2)], [a], now=1000.0)
    assert started(result) == {1: ("a", (0,))}
    assert result.reservations == {"a": Reservation(2, "a", 1300.0, 2, 0, 0)}
    result = plan([job(1, 1), job(2, 2)], [a], now=1000.0)  # no limit: unknown
    assert result.reservations == {"a": Reservation(2, "a", INF, 2, 0, 0)}


def test_impossible_and_node_not_available_jobs_reserve_nothing() -> None:
    a = node("a", 2, [], [rel(10.0, 2)])
    down = NodeView("d", False, [0, 1], 2, 64, 64, GIB, GIB)
    pending = [job(1, 3), job(2, 1, nodelist=frozenset({"d"})), job(3, 1, limit=5)]
    result = plan(pending, [a, down])
    assert result.reasons == {
        1: Reason.RESOURCES,
        2: Reason.NODE_NOT_AVAIL,
        3: Reason.RESOURCES,
    }
    assert result.reservations == {"a": Reservation(3, "a", 10.0, 1, 0, 0)}


# ---- QoS per-user limits ------------------------------------------------------------------


def test_qos_max_gpus_per_user_counts_running_load() -> None:
    a = node("a", 8, list(range(8)))
    loads = {"alice": UserLoad(gpus=3, jobs=1)}
    pending = [
        job(1, 2, user="alice", max_gpus=4),  # 3 + 2 > 4
        job(2, 1, user="alice", max_gpus=4),  # 3 + 1 = 4: fine
        job(3, 1, user="alice", max_gpus=4),  # 4 + 1 > 4
        job(4, 0, user="alice", max_gpus=4),  # no GPU: fine
        job(5, 3, user="bob", max_gpus=4),  # bob's own load
        job(6, 2, user="bob", max_gpus=4),
        job(7, 2, user="alice"),  # this job's QoS has no limit
    ]
    result = plan(pending, [a], loads=loads)
    assert set(started(result)) == {2, 4, 5, 7}
    assert result.reasons == {1: Reason.QOS_GPUS, 3: Reason.QOS_GPUS, 6: Reason.QOS_GPUS}
    assert result.reservations == {}  # a QoS-held job reserves nothing
    assert loads == {"alice": UserLoad(gpus=3, jobs=1)}  # not modified


def test_qos_max_jobs_per_user_counts_running_load() -> None:
    a = node("a", 8, list(range(8)))
    loads = {"alice": UserLoad(gpus=0, jobs=1), "bob": UserLoad(gpus=0, jobs=2)}
    pending = [
        job(1, 1, user="alice", max_jobs=2),
        job(2, 1, user="alice", max_jobs=2),
        job(3, 0, user="bob", max_jobs=2),
        job(4, 0, user="bob", max_jobs=3),
        job(5, 0, user="bob", max_jobs=3),
    ]
    result = plan(pending, [a], loads=loads)
    assert set(started(result)) == {1, 4}
    assert result.reasons == {2: Reason.QOS_JOBS, 3: Reason.QOS_JOBS, 5: Reason.QOS_JOBS}


def test_qos_gpu_reason_comes_first_and_held_top_job_blocks_nobody() -> None:
    a = node("a", 4, [0, 1, 2, 3])
    loads = {"alice": UserLoad(gpus=2, jobs=2)}
    pending = [job(1, 4, user="alice", max_gpus=4, max_jobs=2), job(2, 4, user="bob")]
    result = plan(pending, [a], loads=loads)
    assert result.reasons == {1: Reason.QOS_GPUS}
    assert started(result) == {2: ("a", (0, 1, 2, 3))}


def test_qos_limit_counts_a_job_that_fails_to_start_as_nothing() -> None:
    a = node("a", 2, [0, 1], [])
    pending = [
        job(1, 4, user="alice", max_gpus=4),  # fits the limit, not the node
        job(2, 2, user="alice", max_gpus=2),
    ]
    result = plan(pending, [a])
    assert result.reasons == {1: Reason.RESOURCES}
    assert started(result) == {2: ("a", (0, 1))}


def test_backfill_through_the_cluster_honours_qos_grace() -> None:
    qos = {"normal": Qos("normal"), "short": Qos("short", grace_s=100)}
    info = node_info("n1", 2, mem_bytes=GIB)
    cluster = make_state(node_timeout_s=10.0, policy=PolicyConfig(qos=qos))
    cluster.node_join(info, now=0.0)
    a = cluster.submit("u", JobSpec(argv=["a"], gpus=1, time_limit_s=100), now=0.0)
    assert cluster.schedule(now=0.0) == 1 and a.state is JobState.RUNNING
    b = cluster.submit("u", JobSpec(argv=["b"], gpus=2, time_limit_s=10), now=0.0)
    c = cluster.submit("u", JobSpec(argv=["c"], gpus=1, time_limit_s=50, qos="short"), now=0.0)
    cluster.schedule(now=0.0)
    assert b.state is JobState.PENDING and b.reason == Reason.RESOURCES
    # C may run until 0 + 50 + 100 = 150 > 100, B's reserved start: it must not backfill.
    assert c.state is JobState.PENDING and c.reason == Reason.PRIORITY


# ---- properties ---------------------------------------------------------------------------


def _after_starts(view: NodeView, starts: list[tuple[PendingJob, Start]], now: float) -> NodeView:
    """``view`` with the given starts applied, as the scheduler's model of it."""
    out = copy.deepcopy(view)
    for pj, s in starts:
        if s.node_id != view.node_id:
            continue
        out.free_gpus = [g for g in out.free_gpus if g not in s.gpu_indices]
        out.free_cpus -= pj.cpus
        out.free_mem_bytes -= pj.mem_bytes
        end = now + pj.time_limit_s if pj.time_limit_s else INF
        out.releases.append(Release(end, pj.gpus, pj.cpus, pj.mem_bytes))
    return out


def _check_allocations(case: Case, result: Plan) -> None:
    """(a) every started GPU was free on an up node in the job's nodelist, none given twice,
    and no node gives more CPUs or memory than it had free."""
    by_id = {j.job_id: j for j in case.pending}
    views = {n.node_id: n for n in case.nodes}
    given: set[tuple[str, int]] = set()
    cpus: dict[str, int] = {}
    mem: dict[str, int] = {}
    for s in result.starts:
        pj, view = by_id[s.job_id], views[s.node_id]
        assert view.up
        assert not pj.nodelist or s.node_id in pj.nodelist
        assert len(s.gpu_indices) == pj.gpus == len(set(s.gpu_indices))
        for g in s.gpu_indices:
            assert g in view.free_gpus
            assert (s.node_id, g) not in given
            given.add((s.node_id, g))
        cpus[s.node_id] = cpus.get(s.node_id, 0) + pj.cpus
        mem[s.node_id] = mem.get(s.node_id, 0) + pj.mem_bytes
        assert cpus[s.node_id] <= view.free_cpus
        assert mem[s.node_id] <= view.free_mem_bytes


def _check_partition(case: Case, result: Plan) -> None:
    """(b) every pending job is started or has a reason, never both; one start per job."""
    ids = [s.job_id for s in result.starts]
    assert len(ids) == len(set(ids))
    assert set(ids) | set(result.reasons) == {j.job_id for j in case.pending}
    assert not set(ids) & set(result.reasons)
    # Starts come in priority order.
    order = {j.job_id: i for i, j in enumerate(case.pending)}
    assert ids == sorted(ids, key=order.__getitem__)


def _qos_reason(pj: PendingJob, load: UserLoad) -> str:
    if pj.max_user_gpus and load.gpus + pj.gpus > pj.max_user_gpus:
        return Reason.QOS_GPUS
    if pj.max_user_jobs and load.jobs + 1 > pj.max_user_jobs:
        return Reason.QOS_JOBS
    return ""


def _check_qos(case: Case, result: Plan) -> None:
    """(c) counting ``loads`` plus the starts before it, no started job exceeds its QoS's
    per-user limits, and a job is held for QoS exactly when it would."""
    started_ids = {s.job_id for s in result.starts}
    load = {u: UserLoad(v.gpus, v.jobs) for u, v in case.loads.items()}
    for pj in case.pending:
        mine = load.setdefault(pj.user, UserLoad())
        why = _qos_reason(pj, mine)
        if pj.job_id in started_ids:
            assert why == ""
            assert not pj.max_user_gpus or mine.gpus + pj.gpus <= pj.max_user_gpus
            assert not pj.max_user_jobs or mine.jobs + 1 <= pj.max_user_jobs
            mine.gpus += pj.gpus
            mine.jobs += 1
        elif why:
            assert result.reasons[pj.job_id] == why
        else:
            assert result.reasons[pj.job_id] not in (Reason.QOS_GPUS, Reason.QOS_JOBS)


def _check_reasons(case: Case, result: Plan) -> None:
    """A job that fits an unreserved candidate node at its turn starts; a job that waits says
    Priority only when it fits some candidate now (all of them reserved), Resources when it
    fits none; ReqNodeNotAvail exactly when no up node is a candidate."""
    starts = {s.job_id: s for s in result.starts}
    owner = {r.job_id: r.node_id for r in result.reservations.values()}
    done: list[tuple[PendingJob, Start]] = []
    reserved: set[str] = set()
    for pj in case.pending:
        why = result.reasons.get(pj.job_id, "")
        if why in (Reason.QOS_GPUS, Reason.QOS_JOBS):
            assert pj.job_id not in owner
            continue
        candidates = [
            _after_starts(n, done, NOW)
            for n in case.nodes
            if n.up and (not pj.nodelist or n.node_id in pj.nodelist)
        ]
        assert (why == Reason.NODE_NOT_AVAIL) == (not candidates)
        fit = [n.node_id for n in candidates if fits_ever(pj, n) and fits_now(pj, n)]
        if pj.job_id in starts:
            assert starts[pj.job_id].node_id in fit
            done.append((pj, starts[pj.job_id]))
        elif candidates:
            assert not [n for n in fit if n not in reserved]
            assert why == (Reason.PRIORITY if fit else Reason.RESOURCES)
        if pj.job_id in owner:
            assert why in (Reason.PRIORITY, Reason.RESOURCES)
            reserved.add(owner[pj.job_id])


def _check_reservations(case: Case, result: Plan) -> None:
    """(d) backfill never delays a reserved start: with every start of the plan applied, each
    reservation's job could still start on its node by the reserved time. The first job to
    reserve gets its earliest node; a node with an unknown start takes no later job."""
    by_id = {j.job_id: j for j in case.pending}
    order = {j.job_id: i for i, j in enumerate(case.pending)}
    views = {n.node_id: n for n in case.nodes}
    all_starts = [(by_id[s.job_id], s) for s in result.starts]
    assert len({r.job_id for r in result.reservations.values()}) == len(result.reservations)
    for node_id, res in result.reservations.items():
        pj = by_id[res.job_id]
        assert res.node_id == node_id
        assert (res.gpus, res.cpus, res.mem_bytes) == (pj.gpus, pj.cpus, pj.mem_bytes)
        before = [(p, s) for p, s in all_starts if order[p.job_id] < order[pj.job_id]]
        at_reservation = _after_starts(views[node_id], before, NOW)
        assert res.start_s == earliest_start(pj, at_reservation, NOW)
        final = _after_starts(views[node_id], all_starts, NOW)
        assert earliest_start(pj, final, NOW) <= res.start_s
        if res.start_s == INF:
            later = [s for p, s in all_starts if order[p.job_id] > order[pj.job_id]]
            assert all(s.node_id != node_id for s in later)
    # The highest-priority job that did not start and could ever run somewhere reserves the
    # node where it can start earliest.
    started_ids = {s.job_id for s in result.starts}
    for pj in case.pending:
        why = result.reasons.get(pj.job_id)
        if pj.job_id in started_ids or why not in (Reason.PRIORITY, Reason.RESOURCES):
            continue
        before = [(p, s) for p, s in all_starts if order[p.job_id] < order[pj.job_id]]
        eligible = [
            _after_starts(n, before, NOW)
            for n in case.nodes
            if n.up and (not pj.nodelist or n.node_id in pj.nodelist) and fits_ever(pj, n)
        ]
        if eligible:
            best = min(eligible, key=lambda n: (earliest_start(pj, n, NOW), n.node_id))
            assert result.reservations[best.node_id] == Reservation(
                pj.job_id,
                best.node_id,
                earliest_start(pj, best, NOW),
                pj.gpus,
                pj.cpus,
                pj.mem_bytes,
            )
        else:
            assert pj.job_id not in {r.job_id for r in result.reservations.values()}
        break


@settings(max_examples=300, deadline=None)
@given(case=cases())
def test_plan_properties(case: Case) -> None:
    nodes_before = copy.deepcopy(case.nodes)
    pending_before = list(case.pending)
    loads_before = copy.deepcopy(case.loads)
    result = plan(case.pending, case.nodes, now=NOW, loads=case.loads)
    # (e) the inputs are not modified.
    assert case.nodes == nodes_before
    assert case.pending == pending_before
    assert case.loads == loads_before
    _check_allocations(case, result)
    _check_partition(case, result)
    _check_qos(case, result)
    _check_reasons(case, result)
    _check_reservations(case, result)


@settings(max_examples=300, deadline=None)
@given(case=cases())
def test_plan_is_deterministic(case: Case) -> None:
    first = plan(case.pending, case.nodes, now=NOW, loads=case.loads)
    second = plan(case.pending, case.nodes, now=NOW, loads=case.loads)
    assert first == second


@st.composite
def tight_cases(draw: st.DrawFn) -> Case:
    """One busy node, a top job that needs all of it, and lower jobs whose limits end just
    before, at or just after one of the running jobs' ends: backfill's boundary cases."""
    total = draw(st.integers(2, 8))
    busy = draw(st.integers(1, total))
    releases = []
    while busy > 0:
        gpus = draw(st.integers(1, busy))
        busy -= gpus
        releases.append(Release(draw(st.sampled_from([*GRID_ENDS, INF])), gpus, gpus, 0))
    free_gpus = list(range(total - sum(r.gpus for r in releases)))
    view = NodeView("n0", True, free_gpus, total, len(free_gpus), total, 0, 0, releases)
    pending = [PendingJob(1, total, draw(st.integers(0, total)), 0)]
    for job_id in range(2, draw(st.integers(2, 8))):
        k, d = draw(st.integers(1, 3)), draw(st.sampled_from([-1, 0, 1]))
        limit = draw(st.one_of(st.just(100 * k + d), st.just(0)))
        gpus, cpus = draw(st.integers(0, 2)), draw(st.integers(0, 2))
        pending.append(PendingJob(job_id, gpus, cpus, 0, time_limit_s=limit))
    return Case([view], pending, {})


@settings(max_examples=300, deadline=None)
@given(case=tight_cases())
def test_backfill_boundaries(case: Case) -> None:
    result = plan(case.pending, case.nodes, now=NOW)
    _check_allocations(case, result)
    _check_partition(case, result)
    _check_reasons(case, result)
    _check_reservations(case, result)


def test_without_reservations_a_blocked_job_holds_nothing_back() -> None:
    a = node("a", 4, [2, 3], [rel(100.0, 2)])
    pending = [job(1, 4), job(2, 2), job(3, 1)]
    result = plan(pending, [a], reserve=False)
    assert result.reservations == {}
    assert started(result) == {2: ("a", (2, 3))}
    assert result.reasons == {1: Reason.RESOURCES, 3: Reason.RESOURCES}
    # The same pass with reservations: job 1 holds the node, so 2 and 3 wait for it.
    result = plan(pending, [a])
    assert result.starts == []
    assert result.reasons == {1: Reason.RESOURCES, 2: Reason.PRIORITY, 3: Reason.PRIORITY}


@settings(max_examples=300, deadline=None)
@given(case=cases())
def test_plan_without_reservations(case: Case) -> None:
    nodes_before = copy.deepcopy(case.nodes)
    result = plan(case.pending, case.nodes, now=NOW, loads=case.loads, reserve=False)
    assert case.nodes == nodes_before
    assert result.reservations == {}
    _check_allocations(case, result)
    _check_partition(case, result)
    _check_qos(case, result)
    _check_reasons(case, result)  # with nothing reserved: whatever fits now starts
