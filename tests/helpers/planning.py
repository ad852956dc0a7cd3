"""The planner over a whole list of jobs at once, and random clusters to plan for (hypothesis
strategies), for the tests that compare or check plans."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from mgpu_server.scheduling.planner import (
    INF,
    Choice,
    NodeView,
    PendingJob,
    Plan,
    Planner,
    Release,
    UserLoad,
)


def plan(
    pending: Iterable[PendingJob],
    nodes: Sequence[NodeView],
    *,
    now: float = 0.0,
    loads: dict[str, UserLoad] | None = None,
    reserve: bool = True,
) -> Plan:
    """One scheduling pass over ``pending`` (in priority order, eligible jobs only); ``nodes``
    and ``loads`` are not modified."""
    planner = Planner(nodes, now=now, loads=loads, reserve=reserve)
    for job in pending:
        planner.consider(job)
    return planner.result


USERS = ("u0", "u1", "u2")
NOW = 1000.0


@dataclass
class Case:
    nodes: list[NodeView]
    pending: list[PendingJob]
    loads: dict[str, UserLoad]


# Release ends and time limits often on a shared grid, so that a job's end lands exactly on,
# just before or just after a reserved start.
ENDS = st.integers(int(NOW) - 50, int(NOW) + 10_000)
GRID_ENDS = [NOW + 100.0 * k for k in range(1, 4)]
LIMITS = st.one_of(
    st.sampled_from([100 * k + d for k in range(1, 4) for d in (-1, 0, 1)]),
    st.just(0),
    st.integers(1, 10_000),
)


MODELS = ("a100", "h100")
PROFILES = ("1g.10gb", "3g.40gb")  # MIG slices: a type, and never a GPU for an untyped job


@st.composite
def node_views(draw: st.DrawFn, index: int, *, typed: bool = False) -> NodeView:
    """A node; ``typed``: its GPUs of random types, and now and then held by an --exclusive
    job."""
    total = draw(st.integers(0, 8))
    free = sorted(draw(st.sets(st.integers(0, max(total - 1, 0)), max_size=total)))
    busy = total - len(free)
    total_cpus = draw(st.sampled_from([4, 16, 64]))
    total_mem = draw(st.sampled_from([0, 8, 64]))
    releases: list[Release] = []
    used_cpus = used_mem = 0
    while busy > 0 or (draw(st.booleans()) and len(releases) < 4):
        gpus = draw(st.integers(0 if busy == 0 else 1, busy))
        busy -= gpus
        cpus = draw(st.integers(0, min(8, total_cpus - used_cpus)))
        mem = draw(st.integers(0, min(16, total_mem - used_mem)))
        used_cpus, used_mem = used_cpus + cpus, used_mem + mem
        end = draw(st.one_of(st.sampled_from(GRID_ENDS), st.just(INF), ENDS))
        releases.append(Release(float(end), gpus, cpus, mem))
    up = draw(st.integers(0, 9)) > 0
    view = NodeView(
        f"n{index}",
        up,
        free,
        total,
        total_cpus - used_cpus,
        total_cpus,
        total_mem - used_mem,
        total_mem,
        releases,
    )
    if typed:
        view.gpu_models = tuple(draw(st.sampled_from(MODELS + PROFILES)) for _ in range(total))
        view.healthy_models = dict(Counter(view.gpu_models))
        view.slices = frozenset(i for i, m in enumerate(view.gpu_models) if m in PROFILES)
        view.healthy_slices = len(view.slices)
        view.total_ports = draw(st.sampled_from([0, 0, 2, 4]))
        view.free_ports = draw(st.integers(0, view.total_ports))
        view.containers = draw(st.integers(0, 2)) == 0  # a container runtime, on a third
        if releases and draw(st.integers(0, 4)) == 0:
            view.exclusive_end = max(r.end_s for r in releases)
    return view


SMALL = st.one_of(st.integers(0, 2), st.integers(0, 8))  # mostly small requests
QOS_LIMITS = [(0, 0)] * 6 + [(2, 0), (4, 0), (0, 1), (0, 2), (6, 2), (1, 1)]


@st.composite
def constraints(draw: st.DrawFn, names: list[str]) -> dict[str, Any]:
    """A job's GPU type, --exclusive, ports, an image, excluded nodes and partitions (-p),
    each now and then."""
    partitions: list[Choice] = [
        ("p0", frozenset(names[:2])),
        ("p1", None),
        ("p2", frozenset(names[1:])),
        ("p3", frozenset(names[-1:])),  # a node that never exists
    ]
    return {
        "gpu_type": draw(st.sampled_from(["", "", *MODELS, "v100", PROFILES[0]])),
        "exclusive": draw(st.integers(0, 5)) == 0,
        "ports": draw(st.sampled_from([0, 0, 0, 1, 2, 5])),
        "container": draw(st.integers(0, 3)) == 0,  # --container-image
        "exclude": draw(st.frozensets(st.sampled_from(names), max_size=2))
        if draw(st.integers(0, 3)) == 0
        else frozenset(),
        "partitions": tuple(
            draw(st.lists(st.sampled_from(partitions), max_size=3, unique_by=lambda p: p[0]))
        ),
    }


@st.composite
def cases(draw: st.DrawFn, *, constrained: bool = False) -> Case:
    """A cluster and a queue; ``constrained``: typed GPUs, exclusive jobs and nodes, excluded
    nodes and partitions too."""
    count = draw(st.integers(1, 6))
    nodes = [draw(node_views(i, typed=constrained)) for i in range(count)]
    names = [f"n{i}" for i in range(count + 1)]  # n{count} never exists
    pending = []
    for job_id in range(1, draw(st.integers(0, 25)) + 1):
        max_gpus, max_jobs = draw(st.sampled_from(QOS_LIMITS))
        nodelist: frozenset[str] = frozenset()
        if draw(st.integers(0, 4)) == 0:
            nodelist = draw(st.frozensets(st.sampled_from(names)))
        pending.append(
            PendingJob(
                job_id,
                draw(SMALL),
                draw(SMALL),
                draw(st.sampled_from([0, 0, 0, 4, 16])),
                nodelist,
                user=draw(st.sampled_from(USERS)),
                time_limit_s=draw(LIMITS),
                max_user_gpus=max_gpus,
                max_user_jobs=max_jobs,
                **(draw(constraints(names)) if constrained else {}),
            )
        )
    loads = {
        u: UserLoad(draw(st.integers(0, 4)), draw(st.integers(0, 2)))
        for u in draw(st.sets(st.sampled_from(USERS)))
    }
    return Case(nodes, pending, loads)
