"""Hostile input: the master answers with an error or closes that one connection, and keeps
serving everyone else."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mgpu_core import auth
from mgpu_core.handshake import Initiator
from mgpu_core.limits import MAX_MESSAGE_LEN, MAX_NAME_LEN, shorten
from mgpu_core.protocol import Message
from tests.helpers.cluster import Cluster, running_cluster
from tests.helpers.wire import (
    client_hello,
    closed_after_error,
    connect_unix,
    frame,
    header,
    node_hello,
    read_frame,
)

pytestmark = pytest.mark.timeout(60)


def connect(cluster: Cluster, *, tcp: bool = False) -> socket.socket:
    """The master's Unix socket (a hello there is enough to reach the request handlers), or
    its TCP port (where only a hello with a token would be)."""
    if tcp:
        return cluster.connect_tcp()
    return connect_unix(cluster.socket_address)


def hello(sock: socket.socket) -> None:
    sock.sendall(frame(client_hello(user="eve")))
    reply = read_frame(sock)
    assert reply is not None and reply["t"] == "ok"


def still_serving(cluster: Cluster) -> None:
    result = cluster.cli("mgpu_queue", "--json")
    assert result.returncode == 0, result.stderr


def test_four_gib_length_prefix_closes_only_that_connection(cluster: Cluster) -> None:
    bystander = connect(cluster)
    hello(bystander)
    with connect(cluster) as sock:
        sock.sendall(header(0xFFFFFFFF) + b"x" * 100)
        assert closed_after_error(sock) == "frame_too_large"
    still_serving(cluster)
    bystander.sendall(frame({"t": "queue", "id": 2}))
    reply = read_frame(bystander)
    assert reply is not None and reply["t"] == "ok"
    bystander.close()


@pytest.mark.parametrize(
    "payload",
    [
        header(5) + b"\xc1\xc1\xc1\xc1\xc1",  # never-used msgpack byte
        header(3) + b"\x93\x01\x02",  # truncated array
        frame([1, 2, 3]),  # not a map
        frame({"no_type": 1}),  # no 't'
        header(0),  # empty frame
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # a confused HTTP client
    ],
    ids=["garbage", "truncated", "not-a-map", "no-type", "empty", "http"],
)
def test_malformed_frames_before_hello(cluster: Cluster, payload: bytes) -> None:
    for tcp in (True, False):
        with connect(cluster, tcp=tcp) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            closed_after_error(sock)
    still_serving(cluster)


def test_malformed_frame_after_hello(cluster: Cluster) -> None:
    with connect(cluster) as sock:
        hello(sock)
        sock.sendall(header(4) + b"\xc1\xc1\xc1\xc1")
        assert closed_after_error(sock) == "bad_message"
    still_serving(cluster)


def test_first_message_must_be_hello(cluster: Cluster) -> None:
    with connect(cluster) as sock:
        sock.sendall(frame({"t": "queue", "id": 1}))
        assert closed_after_error(sock) == "protocol_error"
    with connect(cluster) as sock:
        sock.sendall(frame(client_hello(version=999)))
        assert closed_after_error(sock) == "version_mismatch"
    still_serving(cluster)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"t": "submit", "id": 5, "job": {"argv": "not-a-list"}}, "bad_message"),
        ({"t": "submit", "id": 5, "job": {"argv": ["true"], "gpus": "two"}}, "bad_message"),
        ({"t": "submit", "id": 5, "job": {"argv": ["true"], "gpus": -1}}, "bad_message"),
        ({"t": "submit", "id": 5, "job": {"argv": ["true"], "cpus": True}}, "bad_message"),
        ({"t": "submit", "id": 5}, "bad_message"),
        ({"t": "cancel", "id": 5, "job_ids": [1, "x"]}, "bad_message"),
        ({"t": "queue", "id": 5, "states": ["BOGUS"]}, "bad_message"),
        ({"t": "launch", "id": 5, "launch": {}}, "unknown_message_type"),
        ({"t": "make_coffee", "id": 5}, "unknown_message_type"),
        ({"t": "submit", "id": 5, "job": {"argv": []}}, "invalid_request"),
    ],
)
def test_wrong_fields_and_unknown_types_get_error_replies(
    cluster: Cluster, message: dict[str, object], code: str
) -> None:
    with connect(cluster) as sock:
        hello(sock)
        sock.sendall(frame(message))
        reply = read_frame(sock)
        assert reply is not None and reply["t"] == "error"
        assert reply["code"] == code and reply["id"] == 5 and reply["message"]
        # The connection stays usable after a schema error.
        sock.sendall(frame({"t": "queue", "id": 6}))
        ok = read_frame(sock)
        assert ok is not None and ok["t"] == "ok" and ok["id"] == 6
    still_serving(cluster)


def test_node_hello_with_bad_registration_is_refused(cluster: Cluster) -> None:
    with connect(cluster, tcp=True) as sock:
        sock.sendall(frame(node_hello("x", gpus=[{"index": 70, "visible_id": "0"}])))
        assert closed_after_error(sock) == "bad_message"
    with connect(cluster, tcp=True) as sock:
        sock.sendall(frame(node_hello("x", gpus=[{"index": 1, "visible_id": "1"}])))
        # A peer without the cluster key gets no further than its hello.
        assert closed_after_error(sock) == "authentication_failed"
    still_serving(cluster)
    assert cluster.nodes_json() == []


def registered_node(cluster: Cluster, node_id: str) -> socket.socket:
    """A node's link, played by hand: hello, proof of the cluster key, registration."""
    handshake = Initiator(auth.load_key(cluster.key_file), "node", node_id, binding=cluster.binding)
    sock = cluster.connect_tcp()
    sock.sendall(frame({**node_hello(node_id), **handshake.hello_fields()}))
    challenge = read_frame(sock)
    assert challenge is not None
    sock.sendall(frame(handshake.on_challenge(challenge)))
    reply = read_frame(sock)
    assert reply is not None and reply["t"] == "ok", reply
    return sock


def next_reply(sock: socket.socket, kind: str) -> Message:
    """The master's next message of type ``kind`` to this node (others are skipped)."""
    while True:
        msg = read_frame(sock)
        assert msg is not None, f"link closed while waiting for {kind!r}"
        if msg["t"] == kind:
            return msg


@pytest.mark.parametrize(
    ("event", "code", "job_id", "run"),
    [
        # The exit that cut nodes off: a reason over the limit (the node now shortens it).
        (
            {
                "t": "job_exited",
                "job_id": 7,
                "exit_code": 1,
                "reason": "x" * 5000,
                "restart_count": 2,
            },
            "bad_message",
            7,
            2,
        ),
        ({"t": "job_exited", "job_id": -1, "restart_count": "x"}, "bad_message", None, None),
        ({"t": "job_started", "job_id": 8, "pid": "x"}, "bad_message", 8, None),
        ({"t": "job_output", "job_id": 9, "stream": 3, "data": b"x"}, "bad_message", 9, None),
        ({"t": "heartbeat", "gpus": "all"}, "bad_message", None, None),
        ({"t": "x" * 100_000, "job_id": 10}, "unknown_message_type", 10, None),
        ({"t": "submit", "id": 3, "job": {"argv": ["true"]}}, "unknown_message_type", None, None),
    ],
    ids=[
        "long-reason",
        "bad-job-id",
        "bad-pid",
        "bad-stream",
        "bad-heartbeat",
        "huge-type",
        "submit",
    ],
)
def test_a_bad_node_event_gets_an_error_naming_it_and_the_link_stays(
    cluster: Cluster, event: Message, code: str, job_id: int | None, run: int | None
) -> None:
    with registered_node(cluster, "raw1") as sock:
        sock.sendall(frame(event))
        error = next_reply(sock, "error")
        assert (error["code"], error["id"], error["job_id"], error["restart_count"]) == (
            code,
            None,
            job_id,
            run,
        )
        assert error["event"] == shorten(event["t"], MAX_NAME_LEN)
        assert 0 < len(error["message"]) <= MAX_MESSAGE_LEN
        # Still registered, and still heard: a heartbeat is acknowledged on the same link.
        sock.sendall(frame({"t": "heartbeat", "gpus": [{"index": 0}], "seq": 1}))
        assert next_reply(sock, "heartbeat_ack")["seq"] == 1
        assert cluster.node_up("raw1")
    still_serving(cluster)


def test_silent_peer_is_dropped_after_hello_timeout(tmp_path: Path) -> None:
    with running_cluster(tmp_path, "--hello-timeout", "0.5") as c:
        with connect(c) as sock:
            sock.settimeout(10)
            assert read_frame(sock) is None  # closed by the master, not by our timeout
        still_serving(c)
