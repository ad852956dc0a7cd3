"""The master's relay of interactive output to watchers: a slow reader is told why it stops
getting events (and re-attaches), and the node is asked to replay what a link lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mgpu_core.daemons import ServerConfig
from mgpu_server.net.server import Server
from mgpu_server.scheduling.policy import PolicyConfig
from mgpu_server.state.effects import ToWatchers
from mgpu_server.storage.store import MemoryStore


class Conn:
    def __init__(self, backlog: int) -> None:
        self.backlog, self.closed, self.peer = backlog, False, "peer"
        self.sent: list[dict[str, Any]] = []

    def send(self, msg: dict[str, Any]) -> None:
        self.sent.append(msg)

    def backlog_bytes(self) -> int:
        return self.backlog

    def close(self) -> None:
        self.closed = True


def make_server(tmp_path: Path) -> Server:
    config = ServerConfig(state_dir=tmp_path, max_client_backlog_bytes=1000)
    return Server(config, MemoryStore(), PolicyConfig(), cluster_key=b"k" * 32)


def output(offset: int) -> dict[str, Any]:
    return {"t": "job_output", "job_id": 1, "stream": 1, "data": b"x", "offset": offset}


def test_a_slow_reader_is_told_and_unsubscribed_not_cut_off(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    fast, slow = Conn(0), Conn(5000)
    server.watchers.by_job[1] = {fast, slow}  # type: ignore[arg-type]
    server.watchers.send(ToWatchers(1, output(0)))
    assert slow.sent == [output(0), {"t": "watch_dropped", "job_id": 1, "behind_bytes": 5000}]
    assert not slow.closed
    server.watchers.send(ToWatchers(1, output(1)))
    assert fast.sent == [output(0), output(1)] and len(slow.sent) == 2
    ended = {"t": "job_ended", "job_id": 1, "state": "COMPLETED"}
    server.watchers.send(ToWatchers(1, ended))
    assert fast.sent[-1] == ended and 1 not in server.watchers.by_job


def test_attach_replays_are_remembered_for_a_node_that_is_away(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    nodes = server.nodes
    nodes.send("n1", {"t": "replay", "job_id": 3, "offset": 40})  # n1 has no link now
    nodes.send("n1", {"t": "replay", "job_id": 3, "offset": 10})
    assert nodes.relayed == {3: 10}
    nodes.forget(3)
    assert nodes.relayed == {}
