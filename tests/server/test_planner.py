"""The Planner (mgpu_server.scheduling.planner) decides exactly what the straightforward pass
decides —
every job against every node, every reservation against every node — on random clusters; and
it stops early only when nothing more can start."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from mgpu_core.reasons import Reason
from mgpu_server.scheduling import planner as planner_module
from mgpu_server.scheduling.planner import (
    MAX_RESERVATIONS,
    NodeView,
    PendingJob,
    Plan,
    Planner,
    Release,
    Reservation,
    Start,
    UserLoad,
    _over_limit,
    earliest_start,
    fits_ever,
    fits_now,
)
from mgpu_server.scheduling.views import compatible, usable_gpus
from tests.helpers.planning import NOW, Case, cases, node_views, plan


def reference_plan(
    pending: Sequence[PendingJob],
    nodes: Sequence[NodeView],
    *,
    now: float,
    loads: dict[str, UserLoad],
    reserve: bool = True,
) -> Plan:
    """The pass as it was written before the Planner: O(jobs x nodes), obviously right. A job
    in partitions starts in the first (in its order) where it fits now, else reserves where
    it starts soonest (the first partition, then the lowest name, among equals)."""
    result = Plan()
    free = {n.node_id: copy.deepcopy(n) for n in nodes if n.up}
    for n in free.values():
        n.free_gpus.sort()
    users = {u: UserLoad(v.gpus, v.jobs) for u, v in loads.items()}
    for job in pending:
        load = users.setdefault(job.user, UserLoad())
        limited = _over_limit(job, load)
        if limited:
            result.reasons[job.job_id] = limited
            continue
        res = result.reservations
        places: list[tuple[str, list[NodeView]]] = []
        fits = started = False
        for name, part in job.partitions or (("", None),):
            candidates = [
                n
                for n in free.values()
                if (part is None or n.node_id in part)
                and (not job.nodelist or n.node_id in job.nodelist)
                and n.node_id not in job.exclude
            ]
            if not candidates:
                continue
            places.append((name, candidates))
            now_ok = [n for n in candidates if fits_ever(job, n) and fits_now(job, n)]
            open_now = [n for n in now_ok if compatible(job, n, res.get(n.node_id), now)]
            if open_now:
                node = min(open_now, key=lambda n: (len(n.free_gpus), n.free_cpus, n.node_id))
                gpus = tuple(usable_gpus(job, node)[: job.gpus])
                node.free_gpus = [g for g in node.free_gpus if g not in gpus]
                node.free_cpus -= job.cpus
                node.free_mem_bytes -= job.mem_bytes
                node.free_ports -= job.ports
                end = now + job.time_limit_s if job.time_limit_s else float("inf")
                node.releases.append(Release(end, job.gpus, job.cpus, job.mem_bytes))
                if job.exclusive:
                    node.exclusive_end = end
                result.starts.append(Start(job.job_id, node.node_id, gpus, name))
                load.gpus += job.gpus
                load.jobs += 1
                started = True
                break
            fits = fits or bool(now_ok)
        if started:
            continue
        if not places:
            result.reasons[job.job_id] = Reason.NODE_NOT_AVAIL
            continue
        if job.container and not any(n.containers for _, nodes in places for n in nodes):
            result.reasons[job.job_id] = Reason.NO_CONTAINER_RUNTIME
            continue
        result.reasons[job.job_id] = Reason.PRIORITY if fits else Reason.RESOURCES
        options = [
            (earliest_start(job, n, now), rank, n.node_id, name)
            for rank, (name, candidates) in enumerate(places)
            for n in candidates
            if fits_ever(job, n) and n.node_id not in res
        ]
        if reserve and len(res) < MAX_RESERVATIONS and options:
            start, _, node_id, name = min(options)
            res[node_id] = Reservation(
                job.job_id,
                node_id,
                start,
                job.gpus,
                job.cpus,
                job.mem_bytes,
                name,
                job.exclusive,
                job.gpu_type if job.gpus else "",
            )
    return result


@st.composite
def big_cases(draw: st.DrawFn) -> Case:
    """More nodes and jobs than ``cases``, with repeated job shapes (as arrays make them)."""
    nodes = [draw(node_views(i)) for i in range(draw(st.integers(1, 14)))]
    shapes = draw(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), min_size=1))
    pending = []
    for job_id in range(1, draw(st.integers(0, 90)) + 1):
        gpus, cpus = draw(st.sampled_from(shapes))
        limit = draw(st.sampled_from([0, 60, 100, 200, 5000]))
        pending.append(PendingJob(job_id, gpus, cpus, 0, time_limit_s=limit))
    return Case(nodes, pending, {})


@settings(max_examples=400, deadline=None)
@given(case=st.one_of(cases(), big_cases()), reserve=st.booleans())
def test_planner_decides_as_the_reference(case: Case, reserve: bool) -> None:
    before = copy.deepcopy(case.nodes)
    got = plan(case.pending, case.nodes, now=NOW, loads=case.loads, reserve=reserve)
    assert case.nodes == before
    want = reference_plan(case.pending, case.nodes, now=NOW, loads=case.loads, reserve=reserve)
    assert got == want


@settings(max_examples=400, deadline=None)
@given(case=cases(constrained=True), reserve=st.booleans(), few=st.sampled_from([0, 2, 32]))
def test_planner_decides_as_the_reference_with_partitions_types_and_exclusive(
    case: Case, reserve: bool, few: int
) -> None:
    """GPU types (mixed nodes too), --exclusive jobs and nodes an exclusive job holds,
    images (nodes with and without a container runtime), excluded nodes and partitions
    (-p a,b): the same plan as the reference, whether a
    partition's nodes are tried one by one or through the best-fit order (``few``)."""
    before = copy.deepcopy(case.nodes)
    saved = planner_module.FEW_NODES
    planner_module.FEW_NODES = few
    try:
        got = plan(case.pending, case.nodes, now=NOW, loads=case.loads, reserve=reserve)
    finally:
        planner_module.FEW_NODES = saved
    assert case.nodes == before
    want = reference_plan(case.pending, case.nodes, now=NOW, loads=case.loads, reserve=reserve)
    assert got == want


@settings(max_examples=300, deadline=None)
@given(case=cases(constrained=True), reserve=st.booleans())
def test_no_gpu_or_slice_is_given_twice_and_whole_gpu_jobs_never_get_slices(
    case: Case, reserve: bool
) -> None:
    """MIG placement: every started job's GPUs were free, are given once, and are of its type;
    a job without a type gets whole GPUs only, never MIG slices."""
    got = plan(case.pending, case.nodes, now=NOW, loads=case.loads, reserve=reserve)
    nodes = {n.node_id: n for n in case.nodes}
    jobs = {j.job_id: j for j in case.pending}
    given: set[tuple[str, int]] = set()
    for start in got.starts:
        node, job = nodes[start.node_id], jobs[start.job_id]
        assert len(start.gpu_indices) == job.gpus
        ports_given = sum(jobs[s.job_id].ports for s in got.starts if s.node_id == node.node_id)
        assert ports_given <= node.free_ports  # --ports: never more than the range has free
        for index in start.gpu_indices:
            assert index in node.free_gpus and (node.node_id, index) not in given
            given.add((node.node_id, index))
            if job.gpu_type:
                assert node.gpu_models[index] == job.gpu_type
            else:
                assert index not in node.slices, (job, node)


@settings(max_examples=300, deadline=None)
@given(case=cases(constrained=True), reserve=st.booleans())
def test_a_job_with_an_image_starts_or_reserves_only_where_a_runtime_is(
    case: Case, reserve: bool
) -> None:
    """Containers: a job with --container-image starts and reserves only on a node with a
    container runtime, and waits with NoContainerRuntime exactly when none of the up nodes it
    may use has one."""
    got = plan(case.pending, case.nodes, now=NOW, loads=case.loads, reserve=reserve)
    nodes = {n.node_id: n for n in case.nodes}
    jobs = {j.job_id: j for j in case.pending}
    for start in got.starts:
        assert nodes[start.node_id].containers or not jobs[start.job_id].container
    for res in got.reservations.values():
        assert nodes[res.node_id].containers or not jobs[res.job_id].container
    for job_id, why in got.reasons.items():
        if why is Reason.NO_CONTAINER_RUNTIME:
            job = jobs[job_id]
            usable = [
                n
                for n in case.nodes
                if n.up
                and n.node_id not in job.exclude
                and (not job.nodelist or n.node_id in job.nodelist)
                and any(p is None or n.node_id in p for _, p in job.partitions or (("", None),))
            ]
            assert job.container and usable and not any(n.containers for n in usable)


@settings(max_examples=300, deadline=None)
@given(case=st.one_of(cases(), big_cases()))
def test_could_start_is_false_only_when_nothing_more_can_start(case: Case) -> None:
    planner = Planner(case.nodes, now=NOW, loads=case.loads)
    for i, job in enumerate(case.pending):
        smallest = (
            min(j.gpus for j in case.pending[i:]),
            min(j.cpus for j in case.pending[i:]),
            min(j.mem_bytes for j in case.pending[i:]),
        )
        if not planner.could_start(*smallest):
            # Nothing after this point may start: the rest of the plan adds no start.
            starts = len(planner.result.starts)
            for rest in case.pending[i:]:
                planner.consider(rest)
            assert len(planner.result.starts) == starts
            return
        planner.consider(job)
