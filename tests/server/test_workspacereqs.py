"""The master's side of ``mgpu_client workspace``: who may name whose workspaces, one order per
root (a shared root asked once), a removal refused while a job of its user runs on a node that
shares the root, and one entry per root in the answer, an error where its node is away, leaves
or is slow, never a failure of the whole listing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mgpu_core.errors import NodeNotFound, PermissionDenied
from mgpu_core.messages import CLIENT_REQUESTS, NODE_MESSAGES, validate
from mgpu_core.models import NodeHello
from mgpu_server.net.workspacereqs import WorkspaceRequests
from mgpu_server.state.cluster import ClusterState
from tests.helpers.state import ctx, make_service, make_state, submit_job

pytestmark = pytest.mark.timeout(30)

SHARED_ID = "a" * 32


class Harness:
    """Nodes n1, n2 (sharing /shared/ws) and n3 (its own /scratch/ws), all linked unless
    ``linked`` says otherwise; what the master sends and answers, recorded."""

    def __init__(self, *, linked: set[str] | None = None, timeout_s: float = 5.0) -> None:
        self.state: ClusterState = make_state()
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.replies: list[tuple[object, dict[str, Any]]] = []
        self.linked = {"n1", "n2", "n3"} if linked is None else linked
        self.reqs = WorkspaceRequests(
            send_to_node=self._send,
            reply=lambda conn, msg: self.replies.append((conn, msg)),
            kick=lambda: None,
            timeout_s=timeout_s,
        )
        for node_id, root, root_id in (
            ("n1", "/shared/ws", SHARED_ID),
            ("n2", "/shared/ws", SHARED_ID),
            ("n3", "/scratch/ws", "b" * 32),
        ):
            self.state.node_join(NodeHello(node_id=node_id, cpus=4), now=0.0)
            self.reqs.node_joined(node_id, root, root_id)

    def _send(self, node_id: str, msg: dict[str, Any]) -> bool:
        if node_id in self.linked:
            self.sent.append((node_id, msg))
        return node_id in self.linked

    def ask(self, who: str, *, admin: bool = False, conn: object = None, **fields: Any) -> None:
        msg = validate({"t": "workspace", "id": 9, **fields}, CLIENT_REQUESTS)
        self.reqs.request(self.state, ctx(who, admin=admin), conn or object(), msg)  # type: ignore[arg-type]

    def answer(self, node_id: str, order: dict[str, Any], **fields: Any) -> None:
        msg = validate({"t": "workspace_data", "req": order["req"], **fields}, NODE_MESSAGES)
        self.reqs.answered(node_id, msg)

    def entries(self) -> list[dict[str, Any]]:
        [(_, reply)] = self.replies
        assert reply["t"] == "ok" and reply["id"] == 9, reply
        return list(reply["data"]["nodes"])


def row(user: str, used: int = 4096) -> dict[str, Any]:
    return {"user": user, "path": f"/x/{user}", "used_bytes": used}


def test_a_shared_root_is_asked_once_and_each_answer_lands_in_its_entry() -> None:
    async def run() -> None:
        h = Harness()
        h.ask("alice", action="list")
        assert [(n, m["user"], m["action"]) for n, m in h.sent] == [
            ("n1", "alice", "list"),  # n1 and n2 share one root: asked once
            ("n3", "alice", "list"),
        ]
        (_, first), (_, third) = h.sent
        h.answer("n3", third, root="/scratch/ws", free_bytes=10, workspaces=[row("alice")])
        h.answer("n2", first, workspaces=[row("forged")])  # not the node asked: dropped
        assert h.replies == []
        h.answer("n1", first, root="/shared/ws", free_bytes=99, quota_bytes=5)
        h.answer("n1", first, workspaces=[row("late")])  # a second answer: dropped
        shared, scratch = h.entries()
        assert shared["nodes"] == ["n1", "n2"] and shared["node"] == "n1"
        assert (shared["free_bytes"], shared["quota_bytes"], shared["error"]) == (99, 5, "")
        assert scratch["workspaces"][0]["user"] == "alice" and scratch["nodes"] == ["n3"]

    asyncio.run(run())


def test_users_name_their_own_workspaces_and_admins_anyones() -> None:
    async def run() -> None:
        h = Harness()
        with pytest.raises(PermissionDenied, match="only bob or an admin can remove bob's"):
            h.ask("alice", action="rm", user="bob")
        with pytest.raises(PermissionDenied, match="only bob or an admin can list bob's"):
            h.ask("alice", action="list", user="bob")
        assert h.sent == []
        h.ask("root", admin=True, action="list")
        assert {m["user"] for _, m in h.sent} == {""}  # an admin's listing: everyone's
        h.sent.clear()
        h.ask("root", admin=True, action="rm", user="bob", node="n3")
        assert [(n, m["user"], m["action"]) for n, m in h.sent] == [("n3", "bob", "rm")]
        with pytest.raises(NodeNotFound, match="no node n9"):
            h.ask("alice", action="list", node="n9")

    asyncio.run(run())


def test_a_removal_is_refused_where_a_job_of_its_user_runs_on_a_sharing_node() -> None:
    async def run() -> None:
        h = Harness()
        service, _ = make_service(h.state)
        job = submit_job(service, ctx("alice"), nodelist=["n2"])
        h.state.schedule(now=1.0)
        assert job.node_id == "n2"
        other = submit_job(service, ctx("bob"), nodelist=["n3"])  # another user's: no matter
        h.state.schedule(now=1.0)
        assert other.node_id == "n3"
        h.ask("alice", action="rm", node="n1")  # n1 shares n2's root, where the job runs
        [entry] = h.entries()
        assert h.sent == []
        assert entry["error"] == (
            f"alice's workspace on node n2 is in use by running job {job.job_id}: not removed "
            "(wait for the job to end, or cancel it)"
        )
        h.replies.clear()
        h.ask("alice", action="rm", node="n3")  # its own root: removed
        [(node_id, order)] = h.sent
        assert node_id == "n3"
        h.answer("n3", order, root="/scratch/ws", removed="/scratch/ws/alice")
        [entry] = h.entries()
        assert entry["removed"] == "/scratch/ws/alice" and entry["error"] == ""

    asyncio.run(run())


def test_an_away_a_lost_and_a_slow_node_each_get_an_error_line_of_their_own() -> None:
    async def run() -> None:
        h = Harness(linked={"n3"}, timeout_s=0.05)
        h.reqs.node_gone("n1")
        h.ask("alice", action="list")
        # n1 is gone, n2 (sharing its root) has no link now: the shared root's entry fails.
        [(node_id, _)] = h.sent
        assert node_id == "n3"
        deadline = asyncio.get_running_loop().time() + 5
        while not h.replies and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        shared, scratch = h.entries()
        assert shared["error"] == "node n2 is not connected"
        assert scratch["error"] == "node n3 did not answer in time"

        lost = Harness()
        lost.ask("alice", action="list", node="n3")
        lost.reqs.node_gone("n3")
        [entry] = lost.entries()
        assert entry["error"] == "lost node n3 while asking it"

        # A node that refuses says why in its own entry; the other entries stand.
        refused = Harness()
        refused.ask("alice", action="list")
        (_, first), (_, third) = refused.sent
        refused.answer("n1", first, error="cannot list workspace root /shared/ws: I/O error")
        refused.answer("n3", third, workspaces=[row("alice")])
        shared, scratch = refused.entries()
        assert shared["error"].startswith("cannot list") and scratch["error"] == ""

    asyncio.run(run())


def test_a_node_without_workspaces_is_left_out_unless_named() -> None:
    async def run() -> None:
        h = Harness()
        h.state.node_join(NodeHello(node_id="n4", cpus=4), now=0.0)
        h.reqs.node_joined("n4", "", "")
        h.ask("alice", action="list")
        assert [n for n, _ in h.sent] == ["n1", "n3"]
        h.sent.clear()
        h.replies.clear()
        h.ask("alice", action="list", node="n4")
        assert h.sent == []
        [entry] = h.entries()
        assert entry["error"] == "node n4 keeps no workspaces"

    asyncio.run(run())


def test_a_client_gone_is_forgotten() -> None:
    async def run() -> None:
        h = Harness()
        conn = object()
        h.ask("alice", conn=conn, action="list")
        h.reqs.client_gone(conn)  # type: ignore[arg-type]
        for node_id, order in h.sent:
            h.answer(node_id, order, workspaces=[])
        assert h.replies == []

    asyncio.run(run())
