"""Removing the cgroups an agent could not (one a test killed with SIGKILL), so that no test
leaves groups behind in the host's hierarchies."""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import partial
from pathlib import Path

from mgpu_client.launch import wait_for
from mgpu_node.cgroupfs import find_hierarchies
from mgpu_node.cgroups import JobCgroups, agent_group

PROC_SELF = Path("/proc/self")
REMOVE_TIMEOUT_S = 10.0


def remove_agent_cgroups(state_dirs: Iterable[tuple[str, Path]]) -> None:
    """Kill what is left in the job groups of the agents (node id, state directory) and remove
    their groups, as a stopped agent would have. Agents are this process's children: their
    groups are under this process's own."""
    if os.geteuid() != 0:
        return  # an agent that is not root makes none
    hierarchies = find_hierarchies(
        (PROC_SELF / "mountinfo").read_text(), (PROC_SELF / "cgroup").read_text()
    )
    for node_id, state_dir in state_dirs:
        cgroups = JobCgroups(hierarchies, agent_group(node_id, state_dir), [])
        for job_id in sorted(cgroups.job_ids()):
            wait_for(partial(cgroups.remove_now, job_id), REMOVE_TIMEOUT_S, "job cgroups gone")
        cgroups.close()
