"""``mgpu_client workspace list|rm``: whose workspaces a request may name, which nodes to ask,
and which removals to refuse. Pure reads of the state; the asking is net/workspacereqs.py's.

Nodes that report the same workspace root id share one directory (a shared filesystem,
mgpu_node/workspaces.py): such a root is asked once, through one of its connected nodes, and
listed with all of them. A workspace is not removed while a job of its user runs on any node
that shares its root, since that job may be writing to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mgpu_core.errors import NodeNotFound, PermissionDenied
from mgpu_core.states import JobState
from mgpu_server.api import audit
from mgpu_server.api import permissions as perm
from mgpu_server.api.permissions import RequestContext
from mgpu_server.state.cluster import ClusterState


@dataclass(frozen=True, slots=True)
class Root:
    """A node's workspace root, as its hello said."""

    path: str  # "": the node keeps no workspaces
    root_id: str = ""  # "": not known to be shared


@dataclass(slots=True)
class Target:
    """One root to ask: the nodes that share it, the one to ask (None: answered here, with
    ``error``)."""

    nodes: list[str]
    path: str
    ask: str | None = None
    error: str = ""
    answer: dict[str, Any] = field(default_factory=dict)


def plan(
    state: ClusterState,
    ctx: RequestContext,
    msg: dict[str, Any],
    *,
    roots: Mapping[str, Root],
    connected: set[str],
) -> tuple[str, list[Target]]:
    """(the user whose workspaces are meant, "" for everyone's; the roots to ask) for a
    client's ``workspace`` request. PermissionDenied, NodeNotFound."""
    action = msg["action"]
    user = msg["user"] or ("" if action == "list" and ctx.admin else ctx.user)
    try:
        perm.check_workspace(ctx, action, user)
    except PermissionDenied as err:
        audit.log_refused("workspace", err.message, user=ctx.user, peer=ctx.peer, target_user=user)
        raise
    named = msg["node"]
    if named and named not in state.nodes:
        raise NodeNotFound(f"no node {named}")
    targets: list[Target] = []
    done: set[str] = set()
    for node_id in [named] if named else sorted(state.nodes):
        if node_id in done:
            continue
        root = roots.get(node_id)
        if root is None:  # not connected since the master started
            targets.append(Target([node_id], "", error=f"node {node_id} is not connected"))
            continue
        if not root.path:
            if named:  # a listing of every node leaves such nodes out
                targets.append(Target([node_id], "", error=f"node {node_id} keeps no workspaces"))
            continue
        sharing = [n for n in sorted(roots) if n in state.nodes and _shares(roots[n], root)]
        sharing = sharing or [node_id]
        done.update(sharing)
        target = Target(sharing, root.path)
        # The node named first, else any that shares the root and is connected now.
        live = [n for n in (node_id, *sharing) if n in connected]
        if not live:
            target.error = f"node {node_id} is not connected"
        elif action == "rm":
            target.error = _in_use(state, user, sharing)
        if not target.error:
            target.ask = live[0]
        targets.append(target)
    if action == "rm":
        asked = [n for t in targets if t.ask for n in t.nodes]
        audit.log_event("workspace_rm", user=ctx.user, peer=ctx.peer, target_user=user, nodes=asked)
    return user, targets


def _shares(other: Root, root: Root) -> bool:
    return bool(root.root_id) and other.root_id == root.root_id


def _in_use(state: ClusterState, user: str, nodes: list[str]) -> str:
    """Why ``user``'s workspace on these nodes must not be removed now ("": it may)."""
    for node_id in nodes:
        node = state.nodes.get(node_id)
        for job_id in sorted(node.jobs) if node is not None else ():
            job = state.table.jobs.get(job_id)
            if job is not None and job.user == user and job.state is JobState.RUNNING:
                return (
                    f"{user}'s workspace on node {node_id} is in use by running job {job_id}: "
                    "not removed (wait for the job to end, or cancel it)"
                )
    return ""
