"""The master's terminal routes (net/terminals.py): only a running job's owner (or an admin)
opens one, only the connection that opened it types into it, its output goes to that
connection alone, and a client that goes, a node that goes, or a client too slow to read ends
it cleanly on both sides."""

from __future__ import annotations

from typing import Any, cast

import pytest

from mgpu_core.aio import AsyncConnection
from mgpu_core.errors import InvalidJobState, PermissionDenied
from mgpu_core.models import JobSpec
from mgpu_server.net.terminals import Terminals
from mgpu_server.state.cluster import ClusterState
from tests.helpers.nodes import node_info
from tests.helpers.state import ctx, make_state


class Conn:
    """What the routes use of a client's connection."""

    def __init__(self, peer: str, backlog: int = 0) -> None:
        self.peer, self.backlog = peer, backlog
        self.sent: list[dict[str, Any]] = []

    def send(self, msg: dict[str, Any]) -> None:
        self.sent.append(msg)

    def backlog_bytes(self) -> int:
        return self.backlog


def client(peer: str, backlog: int = 0) -> Any:
    """A stand-in client connection (typed as the real one's where it is passed)."""
    return cast(AsyncConnection, Conn(peer, backlog))


@pytest.fixture
def state() -> ClusterState:
    c = make_state()
    c.node_join(node_info("n1", 2), now=0.0)
    return c


def relay(linked: bool = True) -> tuple[Terminals, list[tuple[str, dict[str, Any]]]]:
    to_node: list[tuple[str, dict[str, Any]]] = []

    def send(node_id: str, msg: dict[str, Any]) -> bool:
        to_node.append((node_id, msg))
        return linked

    return Terminals(send_to_node=send, max_backlog_bytes=1000), to_node


def opening(job_id: int) -> dict[str, Any]:
    return {"t": "pty_open", "id": 1, "job_id": job_id, "rows": 24, "cols": 80,
            "term": "xterm", "command": []}  # fmt: skip


def test_only_the_owner_opens_and_only_its_connection_types(state: ClusterState) -> None:
    job = state.submit("alice", JobSpec(argv=["sleep"], gpus=1), now=1.0)
    terms, to_node = relay()
    alice, mallory = client("a"), client("m")
    with pytest.raises(InvalidJobState, match="only a running job"):
        terms.open(state, ctx("alice"), alice, opening(job.job_id))
    state.schedule(now=2.0)
    with pytest.raises(PermissionDenied, match="only its owner or an admin"):
        terms.open(state, ctx("mallory"), mallory, opening(job.job_id))
    opened = terms.open(state, ctx("alice"), alice, opening(job.job_id))
    term_id = opened["term_id"]
    assert opened["node"] == "n1" and to_node[-1][1]["user"] == "alice"
    sent = len(to_node)
    terms.from_client(mallory, {"t": "pty_input", "term_id": term_id, "data": b"rm -rf ~\n"})
    assert len(to_node) == sent  # not mallory's terminal: nothing reaches the node
    terms.from_client(alice, {"t": "pty_input", "id": 0, "term_id": term_id, "data": b"ls\n"})
    assert to_node[-1] == ("n1", {"t": "pty_input", "term_id": term_id, "data": b"ls\n"})
    terms.from_node("n1", {"t": "pty_output", "term_id": term_id, "data": b"x"})
    terms.from_node("n2", {"t": "pty_output", "term_id": term_id, "data": b"forged"})
    assert [m["data"] for m in alice.sent] == [b"x"] and mallory.sent == []


def test_the_routes_end_with_either_side(state: ClusterState) -> None:
    job = state.submit("alice", JobSpec(argv=["sleep"]), now=1.0)
    state.schedule(now=2.0)
    terms, to_node = relay()
    conn = client("a")
    first = terms.open(state, ctx("alice"), conn, opening(job.job_id))["term_id"]
    second = terms.open(state, ctx("alice"), conn, opening(job.job_id))["term_id"]
    terms.node_gone("n1")
    ended = {m["term_id"]: m["error"] for m in conn.sent if m["t"] == "pty_exit"}
    assert ended == {first: "lost node n1", second: "lost node n1"}
    third = terms.open(state, ctx("alice"), conn, opening(job.job_id))["term_id"]
    terms.client_gone(conn)
    assert to_node[-1] == ("n1", {"t": "pty_close", "term_id": third})
    terms.from_node("n1", {"t": "pty_output", "term_id": third, "data": b"late"})
    assert to_node[-1] == ("n1", {"t": "pty_close", "term_id": third})  # nobody reads it


def test_a_client_too_slow_to_read_is_cut_off(state: ClusterState) -> None:
    job = state.submit("alice", JobSpec(argv=["sleep"]), now=1.0)
    state.schedule(now=2.0)
    terms, to_node = relay()
    slow = client("s", backlog=5000)
    term_id = terms.open(state, ctx("alice"), slow, opening(job.job_id))["term_id"]
    terms.from_node("n1", {"t": "pty_output", "term_id": term_id, "data": b"y" * 100})
    assert to_node[-1] == ("n1", {"t": "pty_close", "term_id": term_id})
    assert slow.sent[-1]["t"] == "pty_exit" and "too slowly" in slow.sent[-1]["error"]


def test_a_node_without_a_link_refuses_at_once(state: ClusterState) -> None:
    job = state.submit("alice", JobSpec(argv=["sleep"]), now=1.0)
    state.schedule(now=2.0)
    terms, _ = relay(linked=False)
    with pytest.raises(InvalidJobState, match="its node n1 is not connected"):
        terms.open(state, ctx("alice"), client("a"), opening(job.job_id))
