"""The planner over a whole list of jobs at once, for tests that compare plans."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mgpu_server.scheduling.planner import NodeView, PendingJob, Plan, Planner, UserLoad


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
